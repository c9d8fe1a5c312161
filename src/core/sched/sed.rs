//! Shortest expected delay (IPVS `ip_vs_sed.c`) and never queue
//! (`ip_vs_nq.c`). Both count only active connections: the expected delay
//! of a server is `(active + 1) / weight`. Servers of live weight 0 are
//! skipped; ties keep table order.

use std::net::Ipv4Addr;

use super::{least_by, Scheduler, ServerLoad};
use crate::core::config::SchedulerKind;

/// Shortest expected delay: the least `(active + 1) / weight`.
#[derive(Debug, Clone, Copy)]
pub struct Sed;

/// Never queue: the first idle server (active == 0) with weight > 0;
/// if none, as [`Sed`].
#[derive(Debug, Clone, Copy)]
pub struct Nq;

/// `a` has a strictly shorter expected delay than `b`, by
/// cross-multiplication. `active + 1 ≤ 2^32` and `weight < 2^32`, so the
/// products are below 2^64: a `u64` holds them.
fn sed_better(a: &ServerLoad, b: &ServerLoad) -> bool {
    (u64::from(a.active) + 1) * u64::from(b.weight)
        < (u64::from(b.active) + 1) * u64::from(a.weight)
}

impl Scheduler for Sed {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sed
    }

    fn schedule(&self, servers: &[ServerLoad], _client: Ipv4Addr) -> Option<usize> {
        least_by(servers, sed_better)
    }
}

impl Scheduler for Nq {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Nq
    }

    fn schedule(&self, servers: &[ServerLoad], _client: Ipv4Addr) -> Option<usize> {
        servers
            .iter()
            .position(|s| s.weight > 0 && s.active == 0)
            .or_else(|| least_by(servers, sed_better))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{client, common_properties, load};
    use super::*;

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Sed);
        common_properties(SchedulerKind::Nq);
    }

    #[test]
    fn sed_crafted() {
        let c = client(0);
        // (0+1)/1 = 1 vs (1+1)/3 ≈ 0.67 → the second, though it is busier.
        let live = [load(1, 0, 0), load(3, 1, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(1));
        // Inactive connections do not count.
        let live = [load(1, 0, 1000), load(1, 1, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(0));
        // Tie 2/2 = 1/1 keeps table order.
        let live = [load(2, 1, 0), load(1, 0, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(0));
        let live = [load(1, 0, 0), load(2, 1, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(0));
        // Weight 0 skipped.
        let live = [load(0, 0, 0), load(1, 7, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(1));
        // Extremes stay exact: 2^32 / (2^32 − 2) vs 2^32 / (2^32 − 1).
        let m = u32::MAX;
        let live = [load(m - 1, m, 0), load(m, m, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(1));
    }

    #[test]
    fn nq_prefers_an_idle_server() {
        let c = client(0);
        // sed would choose the second ((1+1)/10); nq takes the idle first.
        let live = [load(1, 0, 50), load(10, 1, 0)];
        assert_eq!(Sed.schedule(&live, c), Some(1));
        assert_eq!(Nq.schedule(&live, c), Some(0));
        // The first idle one in table order, skipping weight 0.
        let live = [load(5, 3, 0), load(0, 0, 0), load(1, 0, 0), load(9, 0, 0)];
        assert_eq!(Nq.schedule(&live, c), Some(2));
        // None idle: as sed. (3+1)/4 = 1 vs (1+1)/1 = 2 vs (2+1)/6 = 0.5.
        let live = [load(4, 3, 0), load(1, 1, 0), load(6, 2, 0)];
        assert_eq!(Nq.schedule(&live, c), Some(2));
        assert_eq!(Sed.schedule(&live, c), Some(2));
    }

    #[test]
    fn sed_simulation_fills_by_weight() {
        let mut live = [load(1, 0, 0), load(2, 0, 0), load(3, 0, 0)];
        for k in 0..600 {
            let i = Sed.schedule(&live, client(k)).unwrap();
            live[i].active += 1;
        }
        for (s, want) in live.iter().zip([100u32, 200, 300]) {
            assert!(s.active.abs_diff(want) <= 1, "{live:?}");
        }
    }
}
