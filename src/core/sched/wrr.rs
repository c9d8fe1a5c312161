//! Weighted round robin (IPVS `ip_vs_wrr.c`): interleaved. The current
//! weight `cw` starts at the greatest weight and falls by the gcd of the
//! weights after each pass over the table; in a pass, each server whose
//! weight is ≥ `cw` takes one flow in turn. Weights 1:2:3 give the cycle
//! C, B C, A B C.
//!
//! The weights are the live ones: when they differ from those the state was
//! computed for (a server quiesced, went down, crossed its connection
//! limit), the greatest weight and the gcd are recomputed and `cw` is
//! brought back into the new range. Unlike IPVS (`ip_vs_wrr_dest_changed`)
//! the position in the table is kept, not reset to the head: a server that
//! flaps across its connection limit would otherwise pull every flow to the
//! head of the table.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{gcd, Scheduler, ServerLoad, ServerSlot};
use crate::core::config::SchedulerKind;

/// Weighted round robin. Its few words of state sit behind a `Mutex` held
/// for one O(n) pass.
#[derive(Debug)]
pub struct Wrr {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The index to look at next; `weights.len()` (or more) = end of pass.
    next: usize,
    /// Current weight: a multiple of `gcd` in `(0, max]`, or 0 if no weight
    /// is > 0.
    cw: u32,
    /// Greatest weight.
    max: u32,
    /// Gcd of the weights > 0 (1 if none).
    gcd: u32,
    /// The weights `max` and `gcd` were computed from (sized at build).
    weights: Vec<u32>,
}

impl State {
    fn new(weights: Vec<u32>) -> Self {
        let mut s = State {
            next: 0,
            cw: 0,
            max: 0,
            gcd: 1,
            weights,
        };
        s.recompute();
        s.cw = s.max;
        s
    }

    fn recompute(&mut self) {
        self.max = self.weights.iter().copied().max().unwrap_or(0);
        self.gcd = self.weights.iter().copied().fold(0, gcd).max(1);
        self.cw = if self.cw == 0 || self.cw > self.max {
            self.max
        } else {
            // Next multiple of gcd at or above cw: ≤ max, a multiple of gcd.
            self.cw.div_ceil(self.gcd) * self.gcd
        };
    }

    /// Adopts the live weights if they changed. Allocates only if the
    /// caller broke the contract of `servers.len()`.
    fn sync(&mut self, servers: &[ServerLoad]) {
        let same = self.weights.len() == servers.len()
            && self
                .weights
                .iter()
                .zip(servers)
                .all(|(w, s)| *w == s.weight);
        if !same {
            self.weights.clear();
            self.weights.extend(servers.iter().map(|s| s.weight));
            self.recompute();
        }
    }

    fn schedule(&mut self, servers: &[ServerLoad]) -> Option<usize> {
        self.sync(servers);
        if self.max == 0 {
            return None;
        }
        let n = servers.len();
        // A server of weight `max` qualifies for every `cw`, so the rest of
        // this pass and one full pass find a server: 2n + 1 steps bound it.
        for _ in 0..=2 * n {
            if self.next >= n {
                self.next = 0;
                self.cw = match self.cw.checked_sub(self.gcd) {
                    Some(cw) if cw > 0 => cw,
                    _ => self.max,
                };
            }
            let i = self.next;
            self.next += 1;
            if servers[i].weight >= self.cw {
                return Some(i);
            }
        }
        None
    }
}

impl Wrr {
    pub fn new(slots: &[ServerSlot]) -> Self {
        let weights = slots.iter().map(|s| s.weight).collect();
        Wrr {
            state: Mutex::new(State::new(weights)),
        }
    }
}

impl Scheduler for Wrr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wrr
    }

    fn schedule(&self, servers: &[ServerLoad], _client: Ipv4Addr) -> Option<usize> {
        // Nothing in the critical section panics; a poisoned lock still
        // holds consistent state.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.schedule(servers)
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::testutil::{client, common_properties, idle, slots};
    use super::*;

    fn picks(s: &dyn Scheduler, live: &[ServerLoad], k: u32) -> Vec<usize> {
        (0..k)
            .map(|c| s.schedule(live, client(c)).unwrap())
            .collect()
    }

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Wrr);
    }

    #[test]
    fn interleaves_like_ipvs() {
        let s = build(SchedulerKind::Wrr, &slots(&[1, 2, 3]), 0);
        let live = idle(&[1, 2, 3]);
        assert_eq!(picks(&*s, &live, 12), [2, 1, 2, 0, 1, 2, 2, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn exact_shares_over_600() {
        let s = build(SchedulerKind::Wrr, &slots(&[1, 2, 3]), 0);
        let live = idle(&[1, 2, 3]);
        let mut count = [0u32; 3];
        for i in picks(&*s, &live, 600) {
            count[i] += 1;
        }
        assert_eq!(count, [100, 200, 300]);
    }

    #[test]
    fn gcd_shortens_the_cycle() {
        let s = build(SchedulerKind::Wrr, &slots(&[20, 40, 60]), 0);
        let live = idle(&[20, 40, 60]);
        assert_eq!(picks(&*s, &live, 6), [2, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn equal_weights_are_round_robin() {
        let s = build(SchedulerKind::Wrr, &slots(&[4, 4, 4]), 0);
        assert_eq!(picks(&*s, &idle(&[4, 4, 4]), 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn follows_live_weights() {
        let s = build(SchedulerKind::Wrr, &slots(&[1, 2, 3]), 0);
        // The heaviest server quiesces: 1:2 among the others.
        let live = idle(&[1, 2, 0]);
        let mut count = [0u32; 3];
        for i in picks(&*s, &live, 300) {
            count[i] += 1;
        }
        assert_eq!(count, [100, 200, 0]);
        // And comes back with a new weight.
        let live = idle(&[1, 2, 5]);
        let _ = picks(&*s, &live, 3);
        let mut count = [0u32; 3];
        for i in picks(&*s, &live, 800) {
            count[i] += 1;
        }
        assert_eq!(count, [100, 200, 500]);
        assert_eq!(s.schedule(&idle(&[0, 0, 0]), client(0)), None);
        assert!(s.schedule(&live, client(0)).is_some());
    }

    #[test]
    fn huge_weights_are_cheap_and_exact() {
        let s = build(SchedulerKind::Wrr, &slots(&[1, u32::MAX]), 0);
        let live = idle(&[1, u32::MAX]);
        assert!(picks(&*s, &live, 1000).iter().all(|&i| i == 1));
    }
}
