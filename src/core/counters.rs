//! Why packets were dropped, counted without locks, and [`PerWorker`]:
//! the counter type of everything counted per packet.
//!
//! Every exit of `Director::handle` that does not forward is a
//! [`DropReason`]; the reason indexes an array of atomic counters, which
//! metrics and `rvs services` read.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a frame was not forwarded.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// The `reason` label in `rvs_drops_total`.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    Malformed => "malformed", "A header addressed to a virtual service is truncated or inconsistent.";
    BadChecksum => "bad_checksum", "The IPv4 header checksum of a packet to a virtual service is wrong.";
    Fragment => "fragment", "IP fragments to a virtual service are not forwarded.";
    NoService => "no_service", "A packet to a VIP on a port or protocol no virtual service has.";
    NoConnection => "no_connection", "A non-SYN TCP segment of an unknown flow (or a NAT reply without an entry).";
    BadTcpFlags => "bad_tcp_flags", "A TCP segment with an invalid flag combination (SYN+FIN, SYN+RST, none).";
    NoRealServer => "no_real_server", "No real server could take a new flow; the client was refused.";
    TableFull => "table_full", "The connection table is at max_connections.";
    RealServerReset => "real_server_reset", "The flow's real server was removed or went down with the reset policy.";
    NoRoute => "no_route", "No route to the destination of a forwarded packet.";
    TooBig => "too_big", "The packet exceeds the egress MTU (ICMP fragmentation needed sent when DF is set).";
    GsoUnsupported => "gso_unsupported", "A GSO super-frame that the method cannot forward whole (TUN).";
    IcmpUnmatched => "icmp_unmatched", "An ICMP error to a VIP or from a real server that quotes no known flow.";
    NeighbourPending => "neighbour_pending", "The next hop's MAC address is unknown and its queue is full.";
    TxError => "tx_error", "The kernel refused to send the frame.";
    RxDropped => "rx_dropped", "The kernel dropped frames before rvs read them: a receive ring was full, or a frame larger than a ring slot found the socket queue full.";
}

/// Slots of a [`PerWorker`] counter. Packet workers take slots 1.. in
/// turn (more workers than slots share, still correctly); other threads
/// (tests, the control plane) use slot 0.
pub const STAT_SLOTS: usize = 8;

thread_local! {
    static SLOT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread count into its own slot (packet workers call
/// this once at start).
pub fn set_worker_slot(worker: usize) {
    SLOT.with(|s| s.set(1 + worker % (STAT_SLOTS - 1)));
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

/// A counter written per packet: one cache line per worker, so workers
/// never bounce a line between cores; summed when read (scrape time).
#[derive(Debug, Default)]
pub struct PerWorker {
    slots: [Line; STAT_SLOTS],
}

impl PerWorker {
    #[inline]
    pub fn add(&self, n: u64) {
        let i = SLOT.with(std::cell::Cell::get);
        self.slots[i % STAT_SLOTS].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub fn reset(&self) {
        for l in &self.slots {
            l.0.store(0, Ordering::Relaxed);
        }
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [PerWorker; 16],
}

const _: () = assert!(DropReason::ALL.len() == 16);

impl DropCounters {
    pub fn add(&self, reason: DropReason) {
        self.counts[reason as usize].add(1);
    }

    pub fn add_n(&self, reason: DropReason, n: u64) {
        self.counts[reason as usize].add(n);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason as usize].get()
    }

    pub fn snapshot(&self) -> Vec<(DropReason, u64)> {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_worker_counts_sum_across_threads() {
        let c = std::sync::Arc::new(PerWorker::default());
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let c = c.clone();
                std::thread::spawn(move || {
                    set_worker_slot(w);
                    for _ in 0..1000 {
                        c.add(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.add(5);
        assert_eq!(c.get(), 4005);
        c.reset();
        assert_eq!(c.get(), 0);
    }
}
