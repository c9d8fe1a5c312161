//! Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, § 3.4; IPVS `ip_vs_mh.c`).
//!
//! A lookup table of prime size M is filled at build: each server of build
//! weight > 0 has a permutation of the slots, `(offset + j × skip) mod M`,
//! from hashes of its address (ip and port) and the seed; servers take
//! turns, in proportion to their weights, claiming their next unclaimed
//! preferred slot until the table is full (see [`populate`]). A flow goes to
//! the slot of the hash of its client address.
//!
//! The servers are visited in order of address, not table order, so the
//! table depends only on the set of (address, weight) and the seed: every
//! director with the same servers computes the same placement, and
//! removing one server moves little more than its own share of clients.
//!
//! If the chosen server has live weight 0, the flow is rehashed a few
//! times (IPVS's `mh-fallback`), then goes to the next available server in
//! address order after the one first chosen.

use std::collections::BinaryHeap;
use std::fmt;
use std::net::Ipv4Addr;

use super::{
    hash, reduce, Scheduler, ServerLoad, ServerSlot, DOMAIN_MH_CLIENT, DOMAIN_MH_OFFSET,
    DOMAIN_MH_SKIP,
};
use crate::core::config::SchedulerKind;

/// Table sizes: primes near powers of two, as IPVS's
/// `CONFIG_IP_VS_MH_TAB_INDEX` list. The smallest ≥ 100 × n is used (the
/// paper's M ≫ N; 100 keeps each server's share within about 1 % of its
/// weight), the largest beyond 1310 servers.
const PRIMES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// Rehashes before the walk in address order.
const REHASHES: u64 = 8;

/// Marks an unclaimed slot while filling.
const EMPTY: u32 = u32::MAX;

/// Maglev hashing.
pub struct Mh {
    seed: u64,
    /// Server index per slot; empty when no server has weight > 0.
    table: Box<[u32]>,
    /// Indices of the servers of build weight > 0, in address order.
    order: Box<[u32]>,
    /// Position in `order` per server index (`EMPTY` if not a member).
    rank: Box<[u32]>,
}

impl fmt::Debug for Mh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mh")
            .field("seed", &self.seed)
            .field("table_size", &self.table.len())
            .field("servers", &self.order.len())
            .finish()
    }
}

/// The table size for `n` servers.
fn table_size(n: usize) -> u32 {
    let want = n.saturating_mul(100);
    PRIMES
        .into_iter()
        .find(|&p| p as usize >= want)
        .unwrap_or(PRIMES[PRIMES.len() - 1])
}

impl Mh {
    pub fn new(slots: &[ServerSlot], seed: u64) -> Self {
        // Indices fit in u32: a table of 2^32 servers cannot exist.
        let mut order: Vec<u32> = (0u32..)
            .zip(slots)
            .filter(|(_, s)| s.weight > 0)
            .map(|(i, _)| i)
            .collect();
        let addr = |i: u32| {
            let a = slots[i as usize].address;
            (u32::from(*a.ip()), a.port())
        };
        order.sort_by_key(|&i| (addr(i), i));
        let mut rank = vec![EMPTY; slots.len()];
        for (r, &i) in (0u32..).zip(&order) {
            rank[i as usize] = r;
        }
        let table = if order.is_empty() {
            Vec::new()
        } else {
            populate(slots, &order, seed)
        };
        Mh {
            seed,
            table: table.into_boxed_slice(),
            order: order.into_boxed_slice(),
            rank: rank.into_boxed_slice(),
        }
    }

    fn slot(&self, client: Ipv4Addr, probe: u64) -> usize {
        // The table size is one of PRIMES, so it fits in u32.
        let m = self.table.len() as u32;
        let h = hash(
            self.seed,
            &[DOMAIN_MH_CLIENT, u64::from(u32::from(client)), probe],
        );
        reduce(h, m)
    }
}

/// A member's place in the weighted fill order: its next claim is its
/// `claims + 1`-th, due at virtual time `(claims + 1) / weight`.
#[derive(PartialEq, Eq)]
struct Due {
    claims: u64,
    weight: u64,
    rank: u32,
}

impl Ord for Due {
    /// Reversed (earliest due first from `BinaryHeap`, a max-heap):
    /// `(c_a + 1) / w_a` against `(c_b + 1) / w_b` by cross-multiplication,
    /// ties to the lower address.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let a = u128::from(self.claims + 1) * u128::from(other.weight);
        let b = u128::from(other.claims + 1) * u128::from(self.weight);
        b.cmp(&a).then(other.rank.cmp(&self.rank))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The Maglev population (the paper's Pseudocode 1), weighted. `order` is
/// non-empty.
///
/// The paper's loop lets each server claim one slot per round; IPVS gives
/// a server `weight / gcd` claims per round, and shifts large weights down
/// so a round stays small against M, which flattens ratios beyond about
/// √M (1:1000 fills 1:7 in 251 slots) and skews the last, partial round.
/// Here the claims go in weighted fair order instead — always to the
/// member whose next claim is due first, `(claims + 1) / weight`, ties in
/// address order — so every server's slot count stays within one of its
/// weight share at every step. Equal weights give the paper's round robin;
/// weights 1:2 claim B A B, B A B, …
fn populate(slots: &[ServerSlot], order: &[u32], seed: u64) -> Vec<u32> {
    let m = table_size(order.len());
    // (next preferred slot, skip) per member.
    let mut perm: Vec<(usize, usize)> = order
        .iter()
        .map(|&i| {
            let a = slots[i as usize].address;
            let key = (u64::from(u32::from(*a.ip())) << 16) | u64::from(a.port());
            let offset = reduce(hash(seed, &[DOMAIN_MH_OFFSET, key]), m);
            let skip = reduce(hash(seed, &[DOMAIN_MH_SKIP, key]), m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut due: BinaryHeap<Due> = (0u32..)
        .zip(order)
        .map(|(rank, &i)| Due {
            claims: 0,
            weight: u64::from(slots[i as usize].weight),
            rank,
        })
        .collect();
    let size = m as usize;
    let mut table = vec![EMPTY; size];
    for _ in 0..size {
        // `order` is non-empty and every member is pushed back.
        let Some(mut d) = due.pop() else { break };
        let (next, skip) = &mut perm[d.rank as usize];
        // M is prime and 1 ≤ skip < M, so the permutation visits every
        // slot: a free one is found while the table is not full.
        while table[*next] != EMPTY {
            *next += *skip;
            if *next >= size {
                *next -= size;
            }
        }
        table[*next] = order[d.rank as usize];
        d.claims += 1;
        due.push(d);
    }
    table
}

fn available(servers: &[ServerLoad], i: u32) -> bool {
    servers.get(i as usize).is_some_and(|s| s.weight > 0)
}

impl Scheduler for Mh {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Mh
    }

    fn schedule(&self, servers: &[ServerLoad], client: Ipv4Addr) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let first = self.table[self.slot(client, 0)];
        if available(servers, first) {
            return Some(first as usize);
        }
        if let Some(i) = (1..=REHASHES)
            .map(|p| self.table[self.slot(client, p)])
            .find(|&i| available(servers, i))
        {
            return Some(i as usize);
        }
        let n = self.order.len();
        let start = self.rank[first as usize] as usize;
        (1..n)
            .map(|k| self.order[(start + k) % n])
            .find(|&i| available(servers, i))
            .map(|i| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use super::super::build;
    use super::super::testutil::{client, common_properties, idle, slots};
    use super::*;

    const KEYS: u32 = 20_000;

    /// The address each client key maps to.
    fn placement(s: &dyn Scheduler, slots: &[ServerSlot]) -> Vec<Option<SocketAddrV4>> {
        let live: Vec<ServerLoad> = slots
            .iter()
            .map(|s| ServerLoad {
                weight: s.weight,
                ..ServerLoad::default()
            })
            .collect();
        (0..KEYS)
            .map(|c| s.schedule(&live, client(c)).map(|i| slots[i].address))
            .collect()
    }

    fn shares(mh: &Mh, n: usize) -> Vec<f64> {
        let mut c = vec![0u32; n];
        for &i in mh.table.iter() {
            c[i as usize] += 1;
        }
        c.iter()
            .map(|&x| f64::from(x) / mh.table.len() as f64)
            .collect()
    }

    #[test]
    fn properties() {
        common_properties(SchedulerKind::Mh);
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_size(1), 251);
        assert_eq!(table_size(2), 251);
        assert_eq!(table_size(3), 509);
        assert_eq!(table_size(40), 4093);
        assert_eq!(table_size(5000), 131_071);
        let mh = Mh::new(&slots(&[1; 10]), 0);
        assert_eq!(mh.table.len(), 1021);
        assert!(mh.table.iter().all(|&i| i < 10));
    }

    #[test]
    fn equal_weights_share_evenly() {
        let n = 10;
        let mh = Mh::new(&slots(&[1; 10]), 3);
        for s in shares(&mh, n) {
            assert!((s - 0.1).abs() < 0.01, "{s}");
        }
    }

    #[test]
    fn shares_follow_weights() {
        for (weights, seed) in [
            (&[1u32, 2, 3][..], 1u64),
            (&[10, 20, 30, 40], 2),
            (&[1, 1, 1, 5], 3),
            (&[200, 199], 4),
            (&[1, 1000], 5),
        ] {
            let mh = Mh::new(&slots(weights), seed);
            let total: u32 = weights.iter().sum();
            for (s, &w) in shares(&mh, weights.len()).iter().zip(weights) {
                let want = f64::from(w) / f64::from(total);
                assert!((s - want).abs() < 0.03, "{weights:?}: {s} vs {want}");
            }
        }
    }

    #[test]
    fn order_of_servers_does_not_matter() {
        let a = slots(&[1, 2, 3, 1, 1, 2]);
        let mut b = a.clone();
        b.reverse();
        b.swap(0, 3);
        let sa = build(SchedulerKind::Mh, &a, 9);
        let sb = build(SchedulerKind::Mh, &b, 9);
        assert_eq!(placement(&*sa, &a), placement(&*sb, &b));
    }

    #[test]
    fn removing_one_server_moves_about_its_share() {
        let n = 20;
        let all = slots(&[1; 20]);
        let before = placement(&*build(SchedulerKind::Mh, &all, 11), &all);
        for gone in [0, 7, 19] {
            let mut rest = all.clone();
            let removed = rest.remove(gone).address;
            let after = placement(&*build(SchedulerKind::Mh, &rest, 11), &rest);
            let mut moved = 0;
            let mut moved_others = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    moved += 1;
                    if *b != Some(removed) {
                        moved_others += 1;
                    }
                }
            }
            let ideal = f64::from(KEYS) / n as f64;
            // Maglev trades a little disruption for balance (§ 3.4, § 5.3):
            // with M ≈ 100 n about 1.5 × 1/n of the keys move (measured
            // 1537 of 20000 for n = 20), never 2 ×.
            assert!(
                f64::from(moved) < ideal * 2.0,
                "removed {gone}: {moved} moved, ideal {ideal}"
            );
            assert!(
                f64::from(moved_others) < f64::from(KEYS) * 0.05,
                "removed {gone}: {moved_others} keys of other servers moved"
            );
            assert!(after.iter().all(|a| *a != Some(removed)));
        }
    }

    #[test]
    fn same_client_same_server_and_seeded() {
        let s1 = build(SchedulerKind::Mh, &slots(&[1; 5]), 1);
        let s2 = build(SchedulerKind::Mh, &slots(&[1; 5]), 2);
        let live = idle(&[1; 5]);
        let mut differ = 0;
        for c in 0..1000 {
            let a = s1.schedule(&live, client(c));
            assert_eq!(s1.schedule(&live, client(c)), a);
            if a != s2.schedule(&live, client(c)) {
                differ += 1;
            }
        }
        assert!(differ > 600, "{differ}");
    }

    #[test]
    fn falls_back_when_its_server_is_down() {
        let s = build(SchedulerKind::Mh, &slots(&[1; 5]), 5);
        let up = idle(&[1; 5]);
        let down = idle(&[1, 0, 1, 1, 1]);
        let mut moved_to = [0u32; 5];
        for c in 0..5000 {
            let before = s.schedule(&up, client(c)).unwrap();
            let after = s.schedule(&down, client(c)).unwrap();
            if before == 1 {
                moved_to[after] += 1;
                assert_eq!(s.schedule(&down, client(c)), Some(after));
            } else {
                assert_eq!(before, after);
            }
        }
        assert_eq!(moved_to[1], 0);
        assert!(
            moved_to.iter().filter(|&&n| n > 100).count() == 4,
            "{moved_to:?}"
        );
        // Only the last server left: the walk in address order finds it.
        let only = idle(&[0, 0, 0, 0, 1]);
        assert!((0..2000).all(|c| s.schedule(&only, client(c)) == Some(4)));
        assert_eq!(s.schedule(&idle(&[0; 5]), client(0)), None);
    }
}
