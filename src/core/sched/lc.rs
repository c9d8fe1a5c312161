//! Least connection (IPVS `ip_vs_lc.c`) and weighted least connection
//! (`ip_vs_wlc.c`), on IPVS's overhead `active × 256 + inactive`.
//! Servers of live weight 0 are skipped; ties keep table order.

use std::net::Ipv4Addr;

use super::{least_by, Scheduler, ServerLoad};
use crate::core::config::SchedulerKind;

/// Least connection: the least overhead.
#[derive(Debug, Clone, Copy)]
pub struct Lc;

/// Weighted least connection: the least overhead / weight.
#[derive(Debug, Clone, Copy)]
pub struct Wlc;

/// `a` has a strictly smaller overhead / weight than `b`:
/// `oh_a × w_b < oh_b × w_a`, by cross-multiplication (no division, no
/// floats). The products are taken in `u128`: an overhead reaches about
/// 2^40 and a weight 2^32, so a `u64` product could overflow.
fn wlc_better(a: &ServerLoad, b: &ServerLoad) -> bool {
    u128::from(a.overhead()) * u128::from(b.weight)
        < u128::from(b.overhead()) * u128::from(a.weight)
}

impl Scheduler for Lc {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lc
    }

    fn schedule(&self, servers: &[ServerLoad], _client: Ipv4Addr) -> Option<usize> {
        least_by(servers, |a, b| a.overhead() < b.overhead())
    }
}

impl Scheduler for Wlc {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wlc
    }

    fn schedule(&self, servers: &[ServerLoad], _client: Ipv4Addr) -> Option<usize> {
        least_by(servers, wlc_better)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{client, common_properties, load};
    use super::*;

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Lc);
        common_properties(SchedulerKind::Wlc);
    }

    #[test]
    fn lc_picks_least_overhead() {
        let c = client(0);
        // 1 active (256) outweighs 255 inactive.
        let live = [load(1, 1, 0), load(1, 0, 255), load(1, 0, 300)];
        assert_eq!(Lc.schedule(&live, c), Some(1));
        // Weight does not matter to lc, except 0.
        let live = [load(100, 2, 0), load(1, 1, 0), load(0, 0, 0)];
        assert_eq!(Lc.schedule(&live, c), Some(1));
        // Ties keep table order.
        let live = [load(0, 0, 0), load(1, 1, 1), load(5, 1, 1), load(1, 1, 1)];
        assert_eq!(Lc.schedule(&live, c), Some(1));
    }

    #[test]
    fn wlc_cross_multiplication() {
        let c = client(0);
        // 256/1 vs 256·3/2 = 384 → the first.
        let live = [load(1, 1, 0), load(2, 3, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(0));
        // 512/1 vs 768/2 = 384 → the second.
        let live = [load(1, 2, 0), load(2, 3, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(1));
        // Exact tie 512/2 = 256/1 keeps table order, both ways.
        let live = [load(2, 2, 0), load(1, 1, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(0));
        let live = [load(1, 1, 0), load(2, 2, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(0));
        // All idle: the first with weight > 0, whatever the weights.
        let live = [load(0, 0, 0), load(1, 0, 0), load(9, 0, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(1));
        // Weight 0 is never chosen, even when idle.
        let live = [load(1, 5, 0), load(0, 0, 0)];
        assert_eq!(Wlc.schedule(&live, c), Some(0));
    }

    #[test]
    fn wlc_large_values_do_not_overflow() {
        let c = client(0);
        let m = u32::MAX;
        // oh ≈ 2^40, w ≈ 2^32: the products need 72 bits.
        // (m·257)/m = 257 vs (m·257 − 1)/m < 257 → the second.
        let live = [load(m, m, m), load(m, m, m - 1)];
        assert_eq!(Wlc.schedule(&live, c), Some(1));
        // Same overhead, weight m vs m − 1 → the heavier.
        let live = [load(m - 1, m, m), load(m, m, m)];
        assert_eq!(Wlc.schedule(&live, c), Some(1));
        // A full server of the greatest weight vs one connection at weight 1.
        let live = [load(1, 1, 0), load(m, m, m)];
        assert_eq!(Wlc.schedule(&live, c), Some(0));
        let live = [load(1, 1, 0), load(m, 0, 255)];
        assert_eq!(Wlc.schedule(&live, c), Some(1));
    }

    /// Each decision adds an active connection to the chosen server: the
    /// active counts end proportional to the weights (T_i / W_i equal).
    fn simulate(weights: &[u32], conns: u32) -> Vec<u32> {
        let mut live: Vec<ServerLoad> = weights.iter().map(|&w| load(w, 0, 0)).collect();
        for k in 0..conns {
            let i = Wlc.schedule(&live, client(k)).unwrap();
            live[i].active += 1;
        }
        live.iter().map(|s| s.active).collect()
    }

    #[test]
    fn wlc_converges_to_weight_ratio() {
        let got = simulate(&[1, 2, 3], 600);
        for (g, want) in got.iter().zip([100, 200, 300]) {
            assert!(g.abs_diff(want) <= 1, "{got:?}");
        }
        let got = simulate(&[5, 0, 1, 4], 1000);
        for (g, want) in got.iter().zip([500, 0, 100, 400]) {
            assert!(g.abs_diff(want) <= 1, "{got:?}");
        }
        // After every decision each count stays within two connections of its
        // weight share (idle servers tie at 0 and go in table order first).
        let weights = [3u32, 7, 11];
        let mut live: Vec<ServerLoad> = weights.iter().map(|&w| load(w, 0, 0)).collect();
        for k in 0..2100 {
            let i = Wlc.schedule(&live, client(k)).unwrap();
            live[i].active += 1;
            let total: u32 = live.iter().map(|s| s.active).sum();
            for s in &live {
                let want = f64::from(total) * f64::from(s.weight) / 21.0;
                assert!((f64::from(s.active) - want).abs() <= 2.0, "{live:?}");
            }
        }
    }

    #[test]
    fn lc_converges_to_equal_counts() {
        let mut live = [load(1, 0, 0), load(9, 0, 0), load(0, 0, 0), load(2, 0, 0)];
        for k in 0..300 {
            let i = Lc.schedule(&live, client(k)).unwrap();
            live[i].active += 1;
        }
        let active: Vec<u32> = live.iter().map(|s| s.active).collect();
        assert_eq!(active, [100, 100, 0, 100]);
    }
}
