//! Round robin (IPVS `ip_vs_rr.c`): each new flow goes to the next server,
//! in table order, whose live weight is > 0.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Scheduler, ServerLoad};
use crate::core::config::SchedulerKind;

/// Round robin. The position of the last choice is an atomic, so
/// concurrent workers share one rotation without a lock.
#[derive(Debug)]
pub struct Rr {
    /// Index of the last server chosen; `usize::MAX` before the first.
    last: AtomicUsize,
}

impl Rr {
    pub fn new() -> Self {
        Rr {
            last: AtomicUsize::new(usize::MAX),
        }
    }
}

/// The first server after `last` (cyclically, `last` itself at the end)
/// with weight > 0.
fn next_after(servers: &[ServerLoad], last: usize) -> Option<usize> {
    let n = servers.len();
    let start = match last.checked_add(1) {
        Some(s) if s < n => s,
        _ => 0,
    };
    (0..n)
        .map(|k| {
            if start + k >= n {
                start + k - n
            } else {
                start + k
            }
        })
        .find(|&i| servers[i].weight > 0)
}

impl Scheduler for Rr {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Rr
    }

    fn schedule(&self, servers: &[ServerLoad], _client: std::net::Ipv4Addr) -> Option<usize> {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let i = next_after(servers, last)?;
            // Lock-free: a failed exchange means another worker advanced the
            // rotation; continue from where it left it.
            match self
                .last
                .compare_exchange_weak(last, i, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(i),
                Err(now) => last = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::testutil::{client, common_properties, idle, slots};
    use super::*;

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Rr);
    }

    #[test]
    fn rotates_in_table_order() {
        let s = build(SchedulerKind::Rr, &slots(&[1, 5, 1]), 0);
        let live = idle(&[1, 5, 1]);
        let picks: Vec<_> = (0..7).map(|c| s.schedule(&live, client(c))).collect();
        let expect = [0, 1, 2, 0, 1, 2, 0].map(Some);
        assert_eq!(picks, expect);
    }

    #[test]
    fn skips_weight_zero_evenly() {
        let s = Rr::new();
        let live = idle(&[0, 1, 0, 1, 1, 0]);
        let mut count = [0u32; 6];
        for c in 0..300 {
            count[s.schedule(&live, client(c)).unwrap()] += 1;
        }
        assert_eq!(count, [0, 100, 0, 100, 100, 0]);
    }

    #[test]
    fn follows_live_weight_changes() {
        let s = Rr::new();
        assert_eq!(s.schedule(&idle(&[1, 1, 1]), client(0)), Some(0));
        assert_eq!(s.schedule(&idle(&[1, 0, 1]), client(0)), Some(2));
        assert_eq!(s.schedule(&idle(&[1, 0, 1]), client(0)), Some(0));
        assert_eq!(s.schedule(&idle(&[1, 1, 1]), client(0)), Some(1));
        assert_eq!(s.schedule(&idle(&[0, 0, 0]), client(0)), None);
        assert_eq!(s.schedule(&idle(&[1, 1, 1]), client(0)), Some(2));
    }

    #[test]
    fn shared_between_threads() {
        let s = Rr::new();
        let live = idle(&[1, 1, 1, 1]);
        let mut count = [0u32; 4];
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    sc.spawn(|| {
                        let mut c = [0u32; 4];
                        for k in 0..1000 {
                            c[s.schedule(&live, client(k)).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            for h in hs {
                for (t, x) in count.iter_mut().zip(h.join().unwrap()) {
                    *t += x;
                }
            }
        });
        assert_eq!(count, [500; 4]);
    }
}
