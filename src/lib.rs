//! rvs — Rust Virtual Server: a user-space layer-4 load balancer in the
//! tradition of LVS/IPVS.
//!
//! Layers, with dependencies pointing one way (wire ← core ← datapath /
//! control ← main):
//!
//! - [`wire`]: typed zero-copy views over packet bytes, checksums.
//! - [`core`]: the sans-IO director: services, schedulers, connection table,
//!   NAT/TUN/DR rewrites. No sockets, clocks or threads.
//! - [`datapath`]: AF_PACKET sockets, workers, neighbours, nftables steering.
//! - [`control`]: config, reload, control socket, health checks, metrics.
//! - [`cli`]: the client side of the control socket.

pub mod cli;
pub mod control;
pub mod core;
pub mod datapath;
pub mod wire;
