//! The sans-IO director: virtual-service table, schedulers, connection
//! table and the NAT/TUN/DR rewrites.
//!
//! Rules of this layer: no sockets, no clock, no threads, no tokio. Time is
//! an argument; configuration arrives as `Arc` snapshots. A packet gets a
//! verdict and, when dropped, a counted reason — never a panic.

pub mod announce;
pub mod config;
pub mod conntrack;
pub mod counters;
pub mod director;
pub mod hash;
pub mod host;
pub mod lock;
pub mod ratelimit;
pub mod sched;
pub mod service;
pub mod tcp_state;

#[cfg(test)]
mod director_tests;

pub use director::{Director, Frame, Offload, Transmit, Verdict};
