//! Gratuitous ARP for the VIPs rvs answers ARP for (those the kernel does
//! not own): which to announce, and when.
//!
//! A VIP that moves to this director — a failover from another director,
//! the operator moving it, or just a start after the old owner went away —
//! is still in the router's (and the switches') caches under the old MAC,
//! which may keep it for minutes or, in some routers, hours. keepalived
//! sends gratuitous ARPs when it takes a VIP over; rvs does the same when
//! it starts answering ARP for one: at start-up, on a reload that adds a
//! VIP, and when a VIP stops being the kernel's. Each announcement is an
//! ARP request whose sender and target addresses are both the VIP (an "ARP
//! announcement", RFC 5227 § 2.3), broadcast on every data interface;
//! Linux and other hosts update an existing entry from it at once.
//!
//! Sans-IO like the rest of the core: the caller passes the time and the
//! VIPs, and sends what comes back.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Announcements per VIP: one can be lost, or arrive before a switch port
/// forwards (RFC 5227 sends 2; keepalived 5 at once, then 5 more later).
pub const ANNOUNCEMENTS: u8 = 3;
/// Between two announcements of one VIP.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The announcements made so far, per VIP currently answered.
#[derive(Debug, Default)]
pub struct Announcer {
    vips: BTreeMap<Ipv4Addr, Progress>,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    sent: u8,
    next: Instant,
}

impl Announcer {
    /// `answered` is every VIP rvs answers ARP for at `now`. Appends to
    /// `out` those to announce now: a VIP new to the set at once, then
    /// every [`INTERVAL`] until it has had [`ANNOUNCEMENTS`]. A VIP that
    /// leaves the set is forgotten, so it is announced afresh if it comes
    /// back (the kernel owned it meanwhile, or a reload removed it).
    pub fn due(
        &mut self,
        now: Instant,
        answered: impl IntoIterator<Item = Ipv4Addr>,
        out: &mut Vec<Ipv4Addr>,
    ) {
        let mut current: BTreeMap<Ipv4Addr, Progress> = answered
            .into_iter()
            .map(|v| {
                let p = self.vips.get(&v).copied();
                (v, p.unwrap_or(Progress { sent: 0, next: now }))
            })
            .collect();
        for (vip, p) in &mut current {
            if p.sent < ANNOUNCEMENTS && p.next <= now {
                out.push(*vip);
                p.sent += 1;
                p.next = now + INTERVAL;
            }
        }
        self.vips = current;
    }

    /// Whether some VIP still has announcements to come.
    #[cfg(test)]
    fn pending(&self) -> bool {
        self.vips.values().any(|p| p.sent < ANNOUNCEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
    const B: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 11);

    fn due(a: &mut Announcer, now: Instant, vips: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        a.due(now, vips.iter().copied(), &mut out);
        out
    }

    #[test]
    fn each_vip_is_announced_three_times_a_second_apart() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut a = Announcer::default();
        assert_eq!(due(&mut a, t0, &[A]), [A], "at once");
        assert!(a.pending());
        assert!(due(&mut a, ms(100), &[A]).is_empty());
        assert!(due(&mut a, ms(999), &[A]).is_empty());
        assert_eq!(due(&mut a, ms(1000), &[A]), [A]);
        // A VIP added later (a reload) starts its own series.
        assert_eq!(due(&mut a, ms(1500), &[A, B]), [B]);
        // Called late: one announcement, not a burst to catch up.
        assert_eq!(due(&mut a, ms(5000), &[A, B]), [A, B]);
        assert!(a.pending(), "B has one more");
        assert!(due(&mut a, ms(5500), &[A, B]).is_empty());
        assert_eq!(due(&mut a, ms(6000), &[A, B]), [B]);
        assert!(!a.pending());
        assert!(
            due(&mut a, ms(60_000), &[A, B]).is_empty(),
            "three each, then quiet"
        );
    }

    #[test]
    fn a_vip_that_leaves_and_comes_back_is_announced_again() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut a = Announcer::default();
        for n in 0..3 {
            assert_eq!(due(&mut a, s(n), &[A]), [A]);
        }
        assert!(due(&mut a, s(10), &[]).is_empty(), "the kernel owns it now");
        assert!(!a.pending());
        assert_eq!(due(&mut a, s(20), &[A]), [A], "ours again");
        assert!(due(&mut a, s(20), &[]).is_empty());
        assert!(due(&mut a, s(20), &[]).is_empty());
    }
}
