//! A token bucket for the answers the director makes up itself (ICMP
//! errors), so that a flood of packets that each earn one — TTL 1, refused
//! UDP, DF over the tunnel MTU — cannot turn the director into a
//! packet generator aimed at a spoofed source. The defaults are the
//! kernel's global ICMP limit (`net.ipv4.icmp_msgs_per_sec` = 1000,
//! `icmp_msgs_burst` = 50), which IPVS's answers go through.
//!
//! Sans-IO: the caller passes its clock in milliseconds. Lock-free: two
//! atomics, touched only by packets that would be answered, never by the
//! forwarding path. Concurrent refills may lose a refill to a race, never
//! grant more than the burst.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[derive(Debug)]
pub struct RateLimit {
    per_sec: u32,
    burst: u32,
    tokens: AtomicU32,
    /// Refills granted so far, in thousandths of a token (the clock in ms
    /// times `per_sec`), so every refill is exact whatever the rate.
    refilled: AtomicU64,
}

impl RateLimit {
    /// Full: `burst` answers at once, then `per_sec` a second.
    pub fn new(per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            per_sec,
            burst,
            tokens: AtomicU32::new(burst),
            refilled: AtomicU64::new(0),
        }
    }

    /// The kernel's global ICMP limit: 1000 a second, bursts of 50.
    pub fn icmp() -> RateLimit {
        RateLimit::new(1000, 50)
    }

    /// Takes one token at `now_ms` if there is one.
    pub fn allow(&self, now_ms: u64) -> bool {
        let due = now_ms.saturating_mul(u64::from(self.per_sec));
        let last = self.refilled.load(Ordering::Relaxed);
        let earned = due.saturating_sub(last) / 1000;
        if earned > 0 {
            // Whole tokens move the mark by exactly their share, keeping the
            // fraction of the next one; more than a bucket's worth just
            // catches up (the bucket is full either way).
            let mark = if earned > u64::from(self.burst) {
                due
            } else {
                last + earned * 1000
            };
            if self
                .refilled
                .compare_exchange(last, mark, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                let earned = u32::try_from(earned).unwrap_or(u32::MAX);
                let burst = self.burst;
                let _ = self
                    .tokens
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                        Some(t.saturating_add(earned).min(burst))
                    });
            }
        }
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimit::new(1000, 50);
        let t0 = 10_000;
        assert_eq!((0..80).filter(|_| l.allow(t0)).count(), 50, "the burst");
        assert!(!l.allow(t0), "empty within the same millisecond");
        // One token a millisecond from then on: 100 over the next 100 ms,
        // however many ask.
        let granted: usize = (1..=100)
            .map(|ms| (0..5).filter(|_| l.allow(t0 + ms)).count())
            .sum();
        assert_eq!(granted, 100);
        // An idle second refills to the burst, not beyond.
        let t1 = t0 + 100 + 10_000;
        assert_eq!((0..80).filter(|_| l.allow(t1)).count(), 50);
    }

    #[test]
    fn slow_rates_accumulate_across_calls() {
        // 10 a second: a token per 100 ms, asked for every 30 ms.
        let l = RateLimit::new(10, 1);
        assert!(l.allow(1_000));
        let granted = (1..=100u64).filter(|k| l.allow(1_000 + 30 * k)).count();
        assert_eq!(granted, 30, "3000 ms at 10/s");
    }

    #[test]
    fn rates_that_do_not_divide_a_second_are_exact() {
        for per_sec in [1500u32, 700, 3] {
            let l = RateLimit::new(per_sec, 3);
            // Asked three times a millisecond for 10 s: the burst, then
            // every token as it is earned.
            let granted: usize = (0..=10_000u64)
                .map(|ms| (0..3).filter(|_| l.allow(ms)).count())
                .sum();
            let want = 3 + per_sec as usize * 10;
            assert!(
                granted.abs_diff(want) <= 1,
                "{per_sec}/s: {granted} in 10 s, want {want}"
            );
        }
    }

    #[test]
    fn racing_threads_never_exceed_the_burst() {
        let l = std::sync::Arc::new(RateLimit::new(1000, 50));
        let granted: usize = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.allow(5)).count())
            })
            .map(|h| h.join().unwrap_or(0))
            .sum();
        assert_eq!(granted, 50);
    }
}
