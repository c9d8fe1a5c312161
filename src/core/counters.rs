//! Why packets were dropped, counted without locks, and [`PerWorker`]:
//! the counter type of everything counted per packet.
//!
//! Every exit of `Director::handle` that does not forward is a
//! [`DropReason`]; the reason indexes an array of atomic counters, which
//! metrics and `rvs services` read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    TtlExceeded => "ttl_exceeded", "A packet to forward arrived with TTL 1 or 0 (ICMP time exceeded sent to its source).";
    IcmpSuppressed => "icmp_suppressed", "An ICMP error rvs would have sent (time exceeded, port unreachable, fragmentation needed) was not: over 1000 a second, bursts of 50 (the kernel's global ICMP limit), or to a source that may not get one (0.0.0.0, broadcast, multicast, loopback, or a link-layer broadcast frame; RFC 1812 4.3.2.7). The packet that earned it also counts under its own reason where it has one.";
    TooBig => "too_big", "The packet exceeds the egress MTU (ICMP fragmentation needed sent when DF is set).";
    GsoUnsupported => "gso_unsupported", "A GSO super-frame that the method cannot forward whole (TUN).";
    IcmpUnmatched => "icmp_unmatched", "An ICMP error to a VIP or from a real server that quotes no known flow.";
    NeighbourPending => "neighbour_pending", "The next hop's MAC address is unknown and its queue is full.";
    TxError => "tx_error", "The kernel refused to send the frame.";
    RxDropped => "rx_dropped", "The kernel dropped frames before rvs read them: a receive ring was full, or a frame larger than a ring slot found the socket queue full.";
}

/// Lines of a [`PerWorker`] counter. Line 0 is shared; each of the others
/// belongs to one thread, the first `STAT_SLOTS - 1` threads of the process
/// to count (packet workers claim theirs at start, before anyone else
/// counts on the packet path). Later threads share line 0, still correctly.
pub const STAT_SLOTS: usize = 16;

/// The next private line never handed out; past `STAT_SLOTS - 1`, threads
/// share line 0.
static NEXT_LINE: AtomicUsize = AtomicUsize::new(1);

/// Private lines whose thread has exited, handed out again before new
/// ones: workers restarted (a data interface re-created) take back the
/// lines of the ones they replace. Touched at a thread's first count and
/// at its exit, never per packet.
static FREED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The calling thread's line before it has claimed one.
const UNCLAIMED: usize = usize::MAX;

/// A thread's claim on its line; returns the line when the thread exits.
/// Its values stay in the line (and in the sums), and the next owner adds
/// to them: only one thread at a time writes a private line.
struct Claim(std::cell::Cell<usize>);

impl Drop for Claim {
    fn drop(&mut self) {
        let i = self.0.get();
        if i != UNCLAIMED && i != 0 {
            FREED.lock().unwrap_or_else(|e| e.into_inner()).push(i);
        }
    }
}

thread_local! {
    static SLOT: Claim = const { Claim(std::cell::Cell::new(UNCLAIMED)) };
}

fn claim() -> usize {
    if let Some(i) = FREED.lock().unwrap_or_else(|e| e.into_inner()).pop() {
        return i;
    }
    let n = NEXT_LINE.fetch_add(1, Ordering::Relaxed);
    if n < STAT_SLOTS {
        n
    } else {
        0
    }
}

/// The calling thread's line, claimed on first use.
#[inline]
fn line() -> usize {
    // During the thread's exit (another thread-local's destructor
    // counting) the claim is gone: the shared line then.
    SLOT.try_with(|s| match s.0.get() {
        UNCLAIMED => {
            let i = claim();
            s.0.set(i);
            i
        }
        i => i,
    })
    .unwrap_or(0)
}

/// Makes the calling thread claim its own line now (packet workers call
/// this once at start, so that the private lines go to them). The argument
/// is the worker's index, kept for the callers; lines are handed out in
/// the order threads claim them.
pub fn set_worker_slot(_worker: usize) {
    line();
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

/// A counter written per packet: one cache line per thread, so workers
/// never bounce a line between cores; summed when read (scrape time).
///
/// A private line has one writer, its thread, which adds with a plain load
/// and store: a locked read-modify-write (`fetch_add`) costs ~12 ns on the
/// bench machine, and an established packet counts twice (packets,
/// bytes). Only the shared line 0 takes `fetch_add`. So that no other
/// thread ever writes a private line, [`PerWorker::reset`] moves a base
/// instead of storing zeros.
#[derive(Debug, Default)]
pub struct PerWorker {
    slots: [Line; STAT_SLOTS],
    /// The sum of the lines at the last reset.
    base: AtomicU64,
}

impl PerWorker {
    #[inline]
    pub fn add(&self, n: u64) {
        let i = line();
        let l = &self.slots[i % STAT_SLOTS].0;
        if i == 0 {
            l.fetch_add(n, Ordering::Relaxed);
        } else {
            // Single writer: this thread owns line i (see `claim`).
            l.store(l.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    }

    fn sum(&self) -> u64 {
        self.slots
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    pub fn get(&self) -> u64 {
        self.sum().wrapping_sub(self.base.load(Ordering::Relaxed))
    }

    pub fn reset(&self) {
        self.base.store(self.sum(), Ordering::Relaxed);
    }
}

/// One counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct DropCounters {
    counts: [PerWorker; DROP_REASONS],
}

const DROP_REASONS: usize = DropReason::ALL.len();

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
        c.add(2);
        assert_eq!(c.get(), 2);
    }

    #[test]
    fn more_threads_than_lines_share_line_0() {
        let c = std::sync::Arc::new(PerWorker::default());
        // All alive at once, so that lines run out (an exiting thread
        // would hand its line on).
        let all = std::sync::Arc::new(std::sync::Barrier::new(2 * STAT_SLOTS));
        let threads: Vec<_> = (0..2 * STAT_SLOTS)
            .map(|_| {
                let c = c.clone();
                let all = all.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.add(1);
                    }
                    all.wait();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 2000 * STAT_SLOTS as u64);
        assert!(c.slots[0].0.load(Ordering::Relaxed) > 0, "line 0 shared");
    }

    #[test]
    fn lines_of_exited_threads_are_handed_on_with_their_counts() {
        let c = std::sync::Arc::new(PerWorker::default());
        // Many more threads than lines, one after another (restarted
        // workers): each takes a line another left (which line depends on
        // the other tests' threads), and no count is lost.
        for _ in 0..4 * STAT_SLOTS {
            let c2 = c.clone();
            std::thread::spawn(move || {
                set_worker_slot(0);
                c2.add(10);
            })
            .join()
            .unwrap();
        }
        assert_eq!(c.get(), 40 * STAT_SLOTS as u64);
    }
}
