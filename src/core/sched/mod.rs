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

mod lc;
mod mh;
mod rr;
mod sed;
mod sh;
mod wrr;

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

impl ServerLoad {
    /// IPVS's `ip_vs_dest_conn_overhead`: `active × 256 + inactive`. At most
    /// about 2^40, so it never overflows a `u64`.
    pub fn overhead(&self) -> u64 {
        u64::from(self.active) * 256 + u64::from(self.inactive)
    }
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
///
/// All the work that needs memory (wrr's state, the sh and mh tables) is
/// done here; [`Scheduler::schedule`] never allocates.
pub fn build(kind: SchedulerKind, slots: &[ServerSlot], seed: u64) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::Rr => Box::new(rr::Rr::new()),
        SchedulerKind::Wrr => Box::new(wrr::Wrr::new(slots)),
        SchedulerKind::Lc => Box::new(lc::Lc),
        SchedulerKind::Wlc => Box::new(lc::Wlc),
        SchedulerKind::Sed => Box::new(sed::Sed),
        SchedulerKind::Nq => Box::new(sed::Nq),
        SchedulerKind::Sh => Box::new(sh::Sh::new(slots, seed)),
        SchedulerKind::Mh => Box::new(mh::Mh::new(slots, seed)),
    }
}

/// The first server with weight > 0 that no later one is `better` than:
/// the least by `better`, ties kept in table order (IPVS's lc/wlc/sed loops
/// replace the candidate only on a strict improvement).
fn least_by(
    servers: &[ServerLoad],
    better: impl Fn(&ServerLoad, &ServerLoad) -> bool,
) -> Option<usize> {
    let mut best: Option<(usize, &ServerLoad)> = None;
    for (i, s) in servers.iter().enumerate() {
        if s.weight == 0 {
            continue;
        }
        match best {
            Some((_, b)) if !better(s, b) => {}
            _ => best = Some((i, s)),
        }
    }
    best.map(|(i, _)| i)
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// 2^64 / φ, the increment of splitmix64 (Steele, Lea, Flood, "Fast
/// splittable pseudorandom number generators", OOPSLA 2014).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The splitmix64 finalizer (Stafford's "Mix13" constants). A fixed
/// function of its input: the same on every machine, build and Rust version,
/// unlike std's `DefaultHasher`, so every director computes the same
/// placement from the same table and seed.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded hash of a few words (the first is a domain tag, so the
/// hashes of different uses are independent).
fn hash(seed: u64, words: &[u64]) -> u64 {
    let mut h = mix64(seed.wrapping_add(GOLDEN));
    for &w in words {
        h = mix64(h.wrapping_add(GOLDEN) ^ w);
    }
    h
}

/// `hash(..) mod m` as an index.
fn reduce(h: u64, m: u32) -> usize {
    // `h % m < m ≤ u32::MAX`, so the cast cannot truncate.
    (h % u64::from(m)) as usize
}

/// Domain tags for [`hash`].
const DOMAIN_SH_CLIENT: u64 = 0x7368_2d63_6c69_656e; // "sh-clien"
const DOMAIN_MH_CLIENT: u64 = 0x6d68_2d63_6c69_656e; // "mh-clien"
const DOMAIN_MH_OFFSET: u64 = 0x6d68_2d6f_6666_7365; // "mh-offse"
const DOMAIN_MH_SKIP: u64 = 0x6d68_2d73_6b69_7020; // "mh-skip "

#[cfg(test)]
mod testutil {
    use super::*;

    /// Slots 10.0.0.1:80, 10.0.0.2:80, … with the given weights.
    pub fn slots(weights: &[u32]) -> Vec<ServerSlot> {
        weights
            .iter()
            .zip(1u32..)
            .map(|(&weight, i)| ServerSlot {
                address: SocketAddrV4::new(Ipv4Addr::from(0x0a00_0000 + i), 80),
                weight,
            })
            .collect()
    }

    /// Idle servers with the given live weights.
    pub fn idle(weights: &[u32]) -> Vec<ServerLoad> {
        weights
            .iter()
            .map(|&weight| ServerLoad {
                weight,
                ..ServerLoad::default()
            })
            .collect()
    }

    pub fn load(weight: u32, active: u32, inactive: u32) -> ServerLoad {
        ServerLoad {
            weight,
            active,
            inactive,
        }
    }

    pub fn client(i: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xc0a8_0000_u32.wrapping_add(i.wrapping_mul(7919)))
    }

    /// The properties every scheduler has (Katran `MaglevHashTest`): no
    /// servers or only weight 0 → nothing; one server → always it; weight 0
    /// never chosen; two builds with one seed choose alike.
    pub fn common_properties(kind: SchedulerKind) {
        for weights in [&[][..], &[0], &[0, 0, 0]] {
            let s = build(kind, &slots(weights), 1);
            assert_eq!(s.kind(), kind);
            for c in 0..50 {
                assert_eq!(
                    s.schedule(&idle(weights), client(c)),
                    None,
                    "{kind:?} {weights:?}"
                );
            }
        }
        let one = build(kind, &slots(&[5]), 1);
        for c in 0..200 {
            assert_eq!(one.schedule(&idle(&[5]), client(c)), Some(0), "{kind:?}");
        }
        // Built with weights > 0, then two go to live weight 0.
        let s = build(kind, &slots(&[1, 2, 3, 4]), 1);
        let live = idle(&[1, 0, 3, 0]);
        for c in 0..500 {
            let i = s.schedule(&live, client(c));
            assert!(matches!(i, Some(0 | 2)), "{kind:?} chose {i:?}");
        }
        // Built with a weight 0 server.
        let s = build(kind, &slots(&[2, 0, 1]), 1);
        for c in 0..500 {
            assert_ne!(
                s.schedule(&idle(&[2, 0, 1]), client(c)),
                Some(1),
                "{kind:?}"
            );
        }
        let a = build(kind, &slots(&[1, 2, 3]), 7);
        let b = build(kind, &slots(&[1, 2, 3]), 7);
        let live = idle(&[1, 2, 3]);
        for c in 0..500 {
            assert_eq!(a.schedule(&live, client(c)), b.schedule(&live, client(c)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // splitmix64 seeded with 0: its first output (reference value).
        assert_eq!(mix64(GOLDEN), 0xe220_a839_7b1d_cdaf);
        // Placement depends on these values; a change here moves flows
        // between directors running different versions.
        assert_eq!(hash(0, &[]), mix64(GOLDEN));
        assert_eq!(hash(1, &[2, 3]), hash(1, &[2, 3]));
        assert_ne!(hash(1, &[2, 3]), hash(1, &[3, 2]));
        assert_ne!(hash(1, &[2]), hash(2, &[2]));
    }

    #[test]
    fn overhead_is_ipvs() {
        let l = testutil::load(1, 3, 5);
        assert_eq!(l.overhead(), 3 * 256 + 5);
        let max = testutil::load(1, u32::MAX, u32::MAX);
        assert_eq!(max.overhead(), u64::from(u32::MAX) * 257);
    }

    #[test]
    fn gcd_works() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 5), 5);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(1, 1_000_000), 1);
    }

    #[test]
    fn every_kind_builds() {
        for kind in SchedulerKind::ALL {
            testutil::common_properties(kind);
        }
    }
}
