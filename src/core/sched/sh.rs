//! Source hashing (IPVS `ip_vs_sh.c`): a 256-bucket table, filled at build
//! by walking the servers of weight > 0 in table order, each taking as many
//! consecutive buckets as its weight, round after round until the table is
//! full. A flow goes to the bucket of the hash of its client address.
//!
//! Two departures from IPVS, both to keep shares near the weights: weights
//! are divided by their gcd (20:40 fills like 1:2, not 20 buckets then 40),
//! and when the turns of one round exceed the table they are shifted right
//! until they fit (each server keeping at least one bucket). IPVS gives
//! weights 100:200:300 100 and 156 buckets and the third none.
//!
//! If the server of the bucket has live weight 0, the flow falls back as
//! IPVS's `sh-fallback` does: rehash with a probe number a few times, then
//! walk the buckets from the first one; `None` only if no server is
//! available.

use std::net::Ipv4Addr;

use super::{gcd, hash, Scheduler, ServerLoad, ServerSlot, DOMAIN_SH_CLIENT};
use crate::core::config::SchedulerKind;

/// IPVS `IP_VS_SH_TAB_BITS` = 8.
const BUCKETS: usize = 256;

/// Rehashes before the linear walk. Each misses with the probability that
/// a random bucket's server is unavailable; 8 keeps the walk (which puts
/// the keys of a run of unavailable buckets on one neighbour) rare unless
/// most of the table is down.
const REHASHES: u64 = 8;

/// Source hashing.
#[derive(Debug)]
pub struct Sh {
    seed: u64,
    /// Server index per bucket; empty when no server has weight > 0.
    buckets: Vec<u32>,
}

impl Sh {
    pub fn new(slots: &[ServerSlot], seed: u64) -> Self {
        Sh {
            seed,
            buckets: fill(slots),
        }
    }

    fn bucket(&self, client: Ipv4Addr, probe: u64) -> usize {
        let h = hash(
            self.seed,
            &[DOMAIN_SH_CLIENT, u64::from(u32::from(client)), probe],
        );
        // The low 8 bits: < 256.
        (h & 0xff) as usize
    }
}

/// The bucket table: indices of `slots` (weight > 0) repeated by turns.
fn fill(slots: &[ServerSlot]) -> Vec<u32> {
    // (index, weight) of the servers that take part; indices fit in u32
    // (a table of more than 2^32 servers cannot exist).
    let members: Vec<(u32, u32)> = slots
        .iter()
        .zip(0u32..)
        .filter(|(s, _)| s.weight > 0)
        .map(|(s, i)| (i, s.weight))
        .collect();
    if members.is_empty() {
        return Vec::new();
    }
    let g = members.iter().fold(0, |g, &(_, w)| gcd(g, w));
    let turns = |shift: u32| -> Vec<u64> {
        members
            .iter()
            .map(|&(_, w)| u64::from((w / g) >> shift).max(1))
            .collect()
    };
    let mut shift = 0;
    let mut t = turns(0);
    while t.iter().sum::<u64>() > BUCKETS as u64 && shift < 32 {
        shift += 1;
        t = turns(shift);
    }
    let mut buckets = Vec::with_capacity(BUCKETS);
    'fill: loop {
        for (&(i, _), &n) in members.iter().zip(&t) {
            for _ in 0..n {
                if buckets.len() == BUCKETS {
                    break 'fill;
                }
                buckets.push(i);
            }
        }
    }
    buckets
}

fn available(servers: &[ServerLoad], i: u32) -> bool {
    servers.get(i as usize).is_some_and(|s| s.weight > 0)
}

impl Scheduler for Sh {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn schedule(&self, servers: &[ServerLoad], client: Ipv4Addr) -> Option<usize> {
        if self.buckets.is_empty() {
            return None;
        }
        let first = self.bucket(client, 0);
        let pick = |b: usize| {
            let i = self.buckets[b];
            available(servers, i).then_some(i as usize)
        };
        (0..=REHASHES)
            .find_map(|p| {
                pick(if p == 0 {
                    first
                } else {
                    self.bucket(client, p)
                })
            })
            .or_else(|| (1..BUCKETS).find_map(|k| pick((first + k) % BUCKETS)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::super::testutil::{client, common_properties, idle, slots};
    use super::*;

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Sh);
    }

    #[test]
    fn table_follows_weights() {
        let count = |weights: &[u32]| {
            let mut c = vec![0u32; weights.len()];
            for i in fill(&slots(weights)) {
                c[i as usize] += 1;
            }
            c
        };
        assert_eq!(count(&[1, 1]), [128, 128]);
        // 256 = 42 rounds of 6 + A B B C.
        assert_eq!(count(&[1, 2, 3]), [43, 86, 127]);
        assert_eq!(count(&[100, 200, 300]), [43, 86, 127]);
        assert_eq!(count(&[0, 1, 0, 1]), [0, 128, 0, 128]);
        // Turns 1000 and 1 shift to 250 and 1: the light one keeps a bucket.
        let c = count(&[1000, 1]);
        assert!(c[1] >= 1 && c[0] >= 250, "{c:?}");
        // IPVS's layout: consecutive runs.
        assert_eq!(fill(&slots(&[1, 2]))[..6], [0, 1, 1, 0, 1, 1]);
    }

    #[test]
    fn same_client_same_server() {
        let s = build(SchedulerKind::Sh, &slots(&[1, 1, 1, 1]), 42);
        let live = idle(&[1, 1, 1, 1]);
        let mut seen = [0u32; 4];
        for c in 0..1000 {
            let first = s.schedule(&live, client(c)).unwrap();
            seen[first] += 1;
            for _ in 0..3 {
                assert_eq!(s.schedule(&live, client(c)), Some(first));
            }
        }
        // And the clients spread (binomial, σ ≈ 14).
        assert!(seen.iter().all(|&n| (180..320).contains(&n)), "{seen:?}");
    }

    #[test]
    fn seed_changes_placement() {
        let a = build(SchedulerKind::Sh, &slots(&[1, 1, 1, 1]), 1);
        let b = build(SchedulerKind::Sh, &slots(&[1, 1, 1, 1]), 2);
        let live = idle(&[1, 1, 1, 1]);
        let differ = (0..1000)
            .filter(|&c| a.schedule(&live, client(c)) != b.schedule(&live, client(c)))
            .count();
        assert!(differ > 500, "{differ}");
    }

    #[test]
    fn falls_back_when_its_server_is_down() {
        let s = build(SchedulerKind::Sh, &slots(&[1, 1, 1, 1]), 42);
        let up = idle(&[1, 1, 1, 1]);
        let down2 = idle(&[1, 1, 0, 1]);
        let mut moved_to = [0u32; 4];
        for c in 0..2000 {
            let before = s.schedule(&up, client(c)).unwrap();
            let after = s.schedule(&down2, client(c)).unwrap();
            if before == 2 {
                assert_ne!(after, 2);
                moved_to[after] += 1;
                // Still sticky.
                assert_eq!(s.schedule(&down2, client(c)), Some(after));
            } else {
                // Clients of the other servers stay put.
                assert_eq!(before, after);
            }
        }
        // The orphans spread over the others rather than on one neighbour.
        assert!(
            moved_to.iter().filter(|&&n| n > 50).count() == 3,
            "{moved_to:?}"
        );
        // Only one server left: everyone goes there.
        let only3 = idle(&[0, 0, 0, 1]);
        assert!((0..500).all(|c| s.schedule(&only3, client(c)) == Some(3)));
        assert_eq!(s.schedule(&idle(&[0, 0, 0, 0]), client(1)), None);
    }
}
