//! Schedulers: given the live load of each real server, choose one for a
//! new flow. IPVS semantics (`net/netfilter/ipvs/ip_vs_*.c`).
//!
//! A scheduler is built from the server list of one service snapshot and
//! rebuilt when the list or a weight changes; it never holds a reference to
//! the connection table. Weight 0 (quiescent, down, over its threshold) is
//! never chosen.

use std::fmt::Debug;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::core::config::SchedulerKind;

/// What a scheduler sees of one real server at decision time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerLoad {
    /// Effective weight: 0 when quiescent, down or over `max_connections`.
    pub weight: u32,
    /// ESTABLISHED connections.
    pub active: u32,
    /// Connections in every other state (and UDP).
    pub inactive: u32,
}

/// The identity of one real server when a scheduler is built (hashing
/// schedulers place servers by address, so the same table gives the same
/// placement on every director).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSlot {
    pub address: SocketAddrV4,
    pub weight: u32,
}

/// One scheduling algorithm.
pub trait Scheduler: Send + Sync + Debug {
    fn kind(&self) -> SchedulerKind;
    /// The index (into `servers`, same order as at build time) of the real
    /// server for a new flow from `client`, or `None` if no server may take
    /// it. `servers.len()` equals the slot count given to [`build`].
    fn schedule(&self, servers: &[ServerLoad], client: Ipv4Addr) -> Option<usize>;
}

/// Builds the scheduler `kind` for `slots` (in table order), seeded by `seed`.
pub fn build(kind: SchedulerKind, slots: &[ServerSlot], seed: u64) -> Box<dyn Scheduler> {
    let _ = (kind, slots, seed);
    todo!("schedulers")
}
