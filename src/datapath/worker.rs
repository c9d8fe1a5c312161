//! Packet workers: each owns one AF_PACKET socket per data interface (all
//! workers' sockets on an interface form one fanout group), takes frames
//! from the socket's mmap ring in batches, runs every frame through
//! `Director::handle_with` in its ring slot with the snapshot loaded once
//! per batch, fills in Ethernet addresses and sends the results in batches
//! before handing the slots back. A worker sleeps in `poll` only when
//! every ring is empty. A timer thread expires connections and refreshes
//! neighbours from the kernel.

use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::announce::Announcer;
use crate::core::counters::DropReason;
use crate::core::director::{
    Director, Frame, Offload, Transmit, Verdict, HEADROOM, SWEEP_INTERVAL,
};
use crate::core::host::HostView;
use crate::core::service::Snapshot;
use crate::datapath::afpacket::{
    emit_vnet, parse_vnet, send_frames, Batch, Fanout, PacketSocket, TxDesc, VNET_HDR_LEN,
};
use crate::datapath::bpf;
use crate::datapath::neigh::{self, Neighbours, Pending};
use crate::datapath::ring::{self, RxFrame};
use crate::datapath::system;
use crate::wire::ethernet::{EthernetAddress, EthernetFrame};
use crate::wire::gso;

/// Next hops whose last ARP request a worker remembers: as many as its
/// pending queue can wait for, so a waiting hop's entry is never lost.
const ASKED: usize = neigh::PENDING_SLOTS;

/// Frames per batch: ring slots taken, rewritten in place and sent with one
/// `sendmmsg` before they are handed back.
const BATCH: usize = 64;
/// Receive ring bytes per socket: 8 MiB (4096 slots of 2 KiB at MTU
/// 1500, 20 ms of frames at 200 kpps for a worker held up), less with
/// many workers so an interface's rings stay within 32 MiB of kernel
/// memory in all, and at least 1 MiB.
const RING_BYTES: u32 = 8 << 20;
const RING_BYTES_PER_INTERFACE: u32 = 32 << 20;
const RING_BYTES_MIN: u32 = 1 << 20;
/// Segments of a GSO super-frame sent with one `sendmmsg`: a 64 KiB frame
/// at MSS 1448 makes 46, so two calls (and the e2e TUN uploads take the
/// flush in the middle of a frame too).
const SEG_SLOTS: usize = 32;
/// How often a worker reads the kernel's drop statistics of its sockets.
const STATS_INTERVAL: Duration = Duration::from_millis(100);
/// Batches per socket per turn before the worker looks at the others.
const TURN_BOUND: usize = 8;
/// How often worker 0 looks for VIPs to announce (gratuitous ARP).
const ANNOUNCE_CHECK: Duration = Duration::from_millis(100);

/// Running workers; dropping it stops them (and waits for them).
#[derive(Debug)]
pub struct Datapath {
    stop: Arc<AtomicBool>,
    /// The packet workers.
    threads: Vec<JoinHandle<()>>,
    /// Expiry and neighbour refresh (sleeps up to 100 ms between turns).
    timer: Option<JoinHandle<()>>,
    pub neighbours: Arc<Neighbours>,
    liveness: Liveness,
    /// Frames received per worker (each worker writes only its own).
    pub packets: Arc<Vec<AtomicU64>>,
    /// Every worker socket, for filter updates from the control plane.
    fds: Vec<std::os::fd::RawFd>,
    /// The interfaces the sockets are bound to, in the order given.
    ifindexes: Vec<u32>,
    busy_poll: Duration,
    generation: u16,
}

impl Datapath {
    /// Opens the sockets and starts `workers` threads on `ifindexes`; a
    /// worker whose rings ran empty keeps polling them for `busy_poll`
    /// after its last frame before it sleeps.
    pub fn start(
        director: Arc<Director>,
        ifindexes: &[u32],
        workers: usize,
        busy_poll: Duration,
    ) -> io::Result<Datapath> {
        let host = director.snapshot().host.clone();
        Datapath::start_generation(director, &host, ifindexes, workers, busy_poll, 0, None)
    }

    /// Starts a datapath to take over from `self` on `ifindexes` with
    /// `workers` threads (a data interface re-created, or a reload that
    /// changed the interfaces or the workers). Its sockets accept no frame
    /// until the caller, having dropped `self` (which stops its workers),
    /// gives them the real filter with [`FilterHandle::update`]: so no
    /// frame is forwarded twice, and the only frames missed are those of
    /// the moment in between. The connection table is the director's and
    /// carries on; so do the packet counters when the number of workers
    /// is the same. `host` is the host as it is now (the director's
    /// snapshot may still hold the devices that went away): it sizes the
    /// rings for each device's MTU.
    pub fn successor(
        &self,
        director: Arc<Director>,
        host: &HostView,
        ifindexes: &[u32],
        workers: usize,
        busy_poll: Duration,
    ) -> io::Result<Datapath> {
        Datapath::start_generation(
            director,
            host,
            ifindexes,
            workers,
            busy_poll,
            // Generation 0 is the first start only (it reads at once).
            self.generation.wrapping_add(1).max(1),
            Some(self.packets.clone()),
        )
    }

    /// Worker threads (not counting the timer).
    pub fn workers(&self) -> usize {
        self.packets.len()
    }

    /// How long a worker keeps polling after its last frame.
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// The interfaces the sockets are bound to, in the order given to
    /// [`Datapath::start`].
    pub fn ifindexes(&self) -> &[u32] {
        &self.ifindexes
    }

    fn start_generation(
        director: Arc<Director>,
        host: &HostView,
        ifindexes: &[u32],
        workers: usize,
        busy_poll: Duration,
        generation: u16,
        packets: Option<Arc<Vec<AtomicU64>>>,
    ) -> io::Result<Datapath> {
        let stop = Arc::new(AtomicBool::new(false));
        let neighbours = Arc::new(Neighbours::default());
        seed_neighbours(&neighbours, host);
        let workers = workers.max(1);
        let packets = packets
            .filter(|p| p.len() == workers)
            .unwrap_or_else(|| Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect()));
        let heartbeats: Arc<Vec<AtomicU64>> =
            Arc::new((0..workers).map(|_| AtomicU64::new(0)).collect());
        // One fanout group per interface, its id chosen by the kernel when
        // the first worker's socket makes it: a restart's sockets (on new
        // devices) get new groups, never the old ones'.
        let mut groups: Vec<Option<u16>> = vec![None; ifindexes.len()];
        // Built first, so that a failure half-way stops and joins what was
        // started (dropping it does).
        let t0 = Instant::now();
        let mut dp = Datapath {
            stop: stop.clone(),
            threads: Vec::new(),
            timer: None,
            neighbours: neighbours.clone(),
            liveness: Liveness {
                heartbeats: heartbeats.clone(),
                started: t0,
            },
            packets: packets.clone(),
            fds: Vec::new(),
            ifindexes: ifindexes.to_vec(),
            busy_poll,
            generation,
        };
        // A successor reads nothing until its predecessor has stopped.
        let prog = if generation == 0 {
            bpf::for_snapshot(&director.snapshot())
        } else {
            bpf::nothing()
        };
        for w in 0..workers {
            let mut sockets = Vec::new();
            for (k, &ifi) in ifindexes.iter().enumerate() {
                let mtu = host.interface(ifi).map_or(1500, |i| i.mtu);
                let fanout = match groups[k] {
                    _ if workers == 1 => Fanout::Alone,
                    None => Fanout::New,
                    Some(id) => Fanout::Join(id),
                };
                let bytes = (RING_BYTES_PER_INTERFACE / u32::try_from(workers).unwrap_or(u32::MAX))
                    .clamp(RING_BYTES_MIN, RING_BYTES);
                let frames = ring::frames_for(u32::from(mtu), bytes);
                let s = PacketSocket::open(ifi, fanout, u32::from(mtu), frames, 8 << 20, &prog)?;
                if fanout == Fanout::New {
                    groups[k] = Some(s.fanout_id()?);
                }
                dp.fds.push(s.fd());
                sockets.push(s);
            }
            let mut worker = Worker {
                director: director.clone(),
                egress: Egress {
                    neighbours: neighbours.clone(),
                    ifindexes: sockets.iter().map(|s| s.ifindex).collect(),
                    pending: (0..neigh::PENDING_SLOTS)
                        .map(|_| Pending {
                            ifindex: 0,
                            next_hop: Ipv4Addr::UNSPECIFIED,
                            since: t0,
                            len: 0,
                            vnet: [0; VNET_HDR_LEN],
                            buf: vec![0u8; neigh::PENDING_FRAME].into_boxed_slice(),
                            used: false,
                        })
                        .collect(),
                    last_ask: vec![(0, Ipv4Addr::UNSPECIFIED, t0); ASKED],
                },
                big: Batch::new(1),
                taken: Vec::with_capacity(BATCH),
                sockets,
                tx: Vec::with_capacity(BATCH),
                scratch: vec![0u8; 64],
                segs: (0..SEG_SLOTS)
                    .map(|_| vec![0u8; HEADROOM + neigh::PENDING_FRAME])
                    .collect(),
                seg_tx: Vec::with_capacity(SEG_SLOTS),
                announcer: (w == 0).then(Announcer::default),
                next_announce: t0,
                announce_now: Vec::new(),
            };
            let stop = stop.clone();
            let hb = heartbeats.clone();
            let pk = packets.clone();
            dp.threads.push(
                std::thread::Builder::new()
                    .name(format!("rvs-worker-{w}"))
                    .spawn(move || {
                        // A successor's workers claim their counter lines
                        // at their first count, once the workers they
                        // replace have stopped and handed theirs back.
                        if generation == 0 {
                            crate::core::counters::set_worker_slot(w);
                        }
                        worker.run(&stop, &hb[w], &pk[w], t0, busy_poll)
                    })?,
            );
        }
        dp.timer = Some(
            std::thread::Builder::new()
                .name("rvs-timer".into())
                .spawn(move || timer(&director, &neighbours, &stop))?,
        );
        Ok(dp)
    }

    /// Stops the packet workers and waits for them (≤ 50 ms: they wake
    /// that often); the timer thread stops when this is dropped.
    pub fn stop_workers(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }

    /// A handle the control plane uses to keep the socket filters in step
    /// with the table.
    pub fn filter_handle(&self) -> FilterHandle {
        FilterHandle {
            fds: self.fds.clone(),
        }
    }

    /// The workers' heartbeats, readable without the datapath (and so
    /// without the lock of whoever owns it).
    pub fn liveness(&self) -> Liveness {
        self.liveness.clone()
    }
}

/// Last time each worker of one [`Datapath`] finished a loop.
#[derive(Debug, Clone)]
pub struct Liveness {
    /// Milliseconds since `started`, one per worker.
    heartbeats: Arc<Vec<AtomicU64>>,
    started: Instant,
}

impl Liveness {
    /// True while every worker finished a loop within `max_age` (a worker
    /// wakes at least every 50 ms): what the systemd watchdog ping proves.
    pub fn workers_alive(&self, max_age: Duration) -> bool {
        let beats: Vec<u64> = self
            .heartbeats
            .iter()
            .map(|h| h.load(Ordering::Relaxed))
            .collect();
        all_recent(
            &beats,
            u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX),
        )
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.stop_workers();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
    }
}

/// The worker sockets' descriptors, valid while the [`Datapath`] runs.
#[derive(Debug, Clone)]
pub struct FilterHandle {
    fds: Vec<std::os::fd::RawFd>,
}

impl FilterHandle {
    /// Replaces the socket filters after the table changed (new VIPs or
    /// NAT real servers).
    pub fn update(&self, snap: &Snapshot) -> io::Result<()> {
        let prog = bpf::for_snapshot(snap);
        for &fd in &self.fds {
            bpf::attach(fd, &prog)?;
        }
        Ok(())
    }
}

/// Every heartbeat (ms since start) is at most `max_age_ms` older than
/// `now_ms`; false with no worker at all.
fn all_recent(beats: &[u64], now_ms: u64, max_age_ms: u64) -> bool {
    !beats.is_empty()
        && beats
            .iter()
            .all(|&b| now_ms.saturating_sub(b) <= max_age_ms)
}

fn seed_neighbours(n: &Neighbours, host: &HostView) {
    for (name, ip, mac) in system::kernel_neighbours() {
        if let Some(i) = host.interfaces.iter().find(|i| i.name == name) {
            n.learn(i.index, ip, mac);
        }
    }
}

fn timer(director: &Director, neighbours: &Neighbours, stop: &AtomicBool) {
    let mut last_seed = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(SWEEP_INTERVAL);
        let now = Instant::now();
        director.handle_timeout(now);
        if now.duration_since(last_seed) >= Duration::from_secs(1) {
            seed_neighbours(neighbours, &director.snapshot().host);
            last_seed = now;
        }
    }
}

struct Worker {
    director: Arc<Director>,
    /// What addressing a frame needs, apart from the buffers a frame may
    /// sit in (ring slots, `big`, `segs`) so both can be borrowed at once.
    egress: Egress,
    sockets: Vec<PacketSocket>,
    /// One frame too large for a ring slot (read with `recvmsg`), or a
    /// GSO frame being segmented.
    big: Batch,
    /// Ring slots of the current batch, released after it is sent.
    taken: Vec<RxFrame>,
    /// Frames of the current batch to send; `slot` indexes `taken`.
    tx: Vec<TxDesc>,
    scratch: Vec<u8>,
    /// Segments being forwarded by software GSO (headroom + jumbo MTU
    /// each), sent `SEG_SLOTS` at a time.
    segs: Vec<Vec<u8>>,
    /// Segments to send; `slot` indexes `segs`.
    seg_tx: Vec<TxDesc>,
    /// Gratuitous ARP for the VIPs rvs answers for: worker 0 only.
    announcer: Option<Announcer>,
    /// When worker 0 next looks for VIPs to announce.
    next_announce: Instant,
    /// VIPs to announce now (reused).
    announce_now: Vec<Ipv4Addr>,
}

impl Worker {
    fn run(
        &mut self,
        stop: &AtomicBool,
        heartbeat: &AtomicU64,
        packets: &AtomicU64,
        t0: Instant,
        busy_poll: Duration,
    ) {
        let mut pfds: Vec<libc::pollfd> = self
            .sockets
            .iter()
            .map(|s| libc::pollfd {
                fd: s.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut last_stats = Instant::now();
        let mut last_frame = last_stats;
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            for (k, pfd) in pfds.iter_mut().enumerate() {
                let mut got = 0;
                for _ in 0..TURN_BOUND {
                    let n = self.turn(k);
                    got += n;
                    if n < BATCH {
                        break;
                    }
                }
                if got == 0 && pfd.revents & libc::POLLIN != 0 {
                    // Woken with an empty ring: a whole frame may wait on
                    // the socket queue without its ring marker (never seen;
                    // reading it keeps poll from spinning on it).
                    got += self.copied(k, &self.director.snapshot(), Instant::now());
                }
                if pfd.revents & libc::POLLERR != 0 {
                    if let Some(e) = self.sockets[k].take_error() {
                        tracing::debug!(ifindex = self.sockets[k].ifindex, "socket error: {e}");
                    }
                }
                pfd.revents = 0;
                packets.fetch_add(got as u64, Ordering::Relaxed);
                busy |= got > 0;
            }
            self.service_pending();
            let now = Instant::now();
            self.announce(now);
            heartbeat.store(
                u64::try_from(now.duration_since(t0).as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if now.duration_since(last_stats) >= STATS_INTERVAL {
                last_stats = now;
                for sock in &self.sockets {
                    self.director
                        .count_drops(DropReason::RxDropped, ring::take_drops(sock.fd()));
                }
            }
            if busy {
                last_frame = now;
            } else if now.duration_since(last_frame) < busy_poll {
                // Traffic was recent: the next frame is likely microseconds
                // away, cheaper to wait for awake than to sleep and be woken.
                std::hint::spin_loop();
            } else {
                let nfds = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
                // SAFETY: pfds is a valid array of nfds pollfds.
                unsafe { libc::poll(pfds.as_mut_ptr(), nfds, 50) };
            }
        }
    }

    fn socket_for(&self, ifindex: u32) -> Option<usize> {
        self.sockets.iter().position(|s| s.ifindex == ifindex)
    }

    /// One batch from the ring of socket `k`; returns the number of frames.
    fn turn(&mut self, k: usize) -> usize {
        self.taken.clear();
        while self.taken.len() < BATCH {
            match self.sockets[k].ring.take() {
                Some(f) => self.taken.push(f),
                None => break,
            }
        }
        let n = self.taken.len();
        if n == 0 {
            return 0;
        }
        let now = Instant::now();
        let snap = self.director.snapshot();
        let ifindex = self.sockets[k].ifindex;
        self.tx.clear();
        for i in 0..n {
            let f = self.taken[i];
            if f.copied {
                // Keep the flow's order: what came before leaves before.
                self.flush(k);
                self.copied(k, &snap, now);
                continue;
            }
            if f.snaplen == 0 || f.snaplen < f.len {
                // Truncated and not queued whole: the queue was full.
                self.director.count_drop(DropReason::RxDropped);
                continue;
            }
            let vnet = self.sockets[k].ring.vnet(&f);
            let offload = parse_vnet(&vnet);
            let len = f.snaplen;
            let buf = self.sockets[k].ring.buf_mut(&f);
            if len >= 14 && buf[HEADROOM + 12..HEADROOM + 14] == [0x08, 0x06] {
                let pending = &self.egress.pending;
                self.egress.neighbours.learn_from_arp(
                    ifindex,
                    &buf[HEADROOM..HEADROOM + len],
                    |a| snap.host.is_local(a) || snap.is_vip(a),
                    |a| {
                        pending
                            .iter()
                            .any(|p| p.used && p.ifindex == ifindex && p.next_hop == a)
                    },
                );
            }
            let mut frame = Frame {
                buf,
                start: HEADROOM,
                len,
                ifindex,
                offload,
            };
            let t = match self.director.handle_with(&snap, now, &mut frame) {
                Verdict::Transmit(t) => t,
                Verdict::Segment => {
                    // A small GSO frame (a few segments): segment it from
                    // the big buffer, after what came before it.
                    self.flush(k);
                    let src = self.sockets[k].ring.bytes(&f, HEADROOM, len);
                    self.big.bufs[0][HEADROOM..HEADROOM + len].copy_from_slice(src);
                    self.big.lens[0] = len;
                    self.big.vnet[0] = vnet;
                    self.segment(&snap, now, ifindex);
                    continue;
                }
                _ => continue,
            };
            let buf = self.sockets[k].ring.buf_mut(&f);
            let staged = self.egress.stage(&self.director, &snap, now, &t, buf);
            match staged {
                Staged::Send(out, vnet) => self.tx.push(TxDesc {
                    slot: i,
                    start: t.start,
                    len: t.len,
                    vnet,
                    sock: out,
                }),
                Staged::Unresolved { out, ask: true } => {
                    self.arp(&snap, out, t.ifindex, t.next_hop)
                }
                Staged::Unresolved { .. } | Staged::Dropped => {}
            }
        }
        self.flush(k);
        for f in &self.taken {
            self.sockets[k].ring.release(f.slot);
        }
        n
    }

    /// Sends the frames collected in `tx` (rewritten in the ring slots of
    /// socket `k`), grouped by the socket they leave by.
    fn flush(&mut self, k: usize) {
        if self.tx.is_empty() {
            return;
        }
        for out in 0..self.sockets.len() {
            if !self.tx.iter().any(|d| d.sock == out) {
                continue;
            }
            let ring = &self.sockets[k].ring;
            let taken = &self.taken;
            let frames = self
                .tx
                .iter()
                .filter(|d| d.sock == out)
                .map(|d| (ring.bytes(&taken[d.slot], d.start, d.len), d.vnet));
            let refused = send_frames(&self.sockets[out], frames);
            for _ in 0..refused {
                self.director.count_drop(DropReason::TxError);
            }
        }
        self.tx.clear();
    }

    /// Reads one whole frame from the queue of socket `k` (one the ring
    /// could only hold truncated) and forwards it; returns 1 if there was
    /// one.
    fn copied(&mut self, k: usize, snap: &Snapshot, now: Instant) -> usize {
        let got = self.big.recv(&self.sockets[k]).unwrap_or_default();
        if got == 0 {
            return 0;
        }
        let ifindex = self.sockets[k].ifindex;
        let len = self.big.lens[0];
        let offload = parse_vnet(&self.big.vnet[0]);
        let mut frame = Frame {
            buf: &mut self.big.bufs[0],
            start: HEADROOM,
            len,
            ifindex,
            offload,
        };
        let t = match self.director.handle_with(snap, now, &mut frame) {
            Verdict::Transmit(t) => t,
            Verdict::Segment => {
                self.segment(snap, now, ifindex);
                return 1;
            }
            _ => return 1,
        };
        let mut big = std::mem::replace(&mut self.big, Batch::empty());
        self.send_one(snap, now, &t, &mut big.bufs[0], true);
        self.big = big;
        1
    }

    /// Sends one frame at once (outside a batch), or parks it until its
    /// next hop answers (asking by ARP when `ask`).
    fn send_one(&mut self, snap: &Snapshot, now: Instant, t: &Transmit, buf: &mut [u8], ask: bool) {
        let staged = self.egress.stage(&self.director, snap, now, t, buf);
        match staged {
            Staged::Send(out, vnet) => {
                let bytes = &buf[t.start..t.start + t.len];
                if send_frames(&self.sockets[out], std::iter::once((bytes, vnet))) > 0 {
                    self.director.count_drop(DropReason::TxError);
                }
            }
            Staged::Unresolved { out, ask: true } if ask => {
                self.arp(snap, out, t.ifindex, t.next_hop)
            }
            Staged::Unresolved { .. } | Staged::Dropped => {}
        }
    }

    /// Splits the GSO super-frame in the big buffer into segments
    /// (software GSO), forwards each through the director and sends them
    /// in batches.
    fn segment(&mut self, snap: &Snapshot, now: Instant, ifindex: u32) {
        let len = self.big.lens[0];
        let mss = parse_vnet(&self.big.vnet[0]).gso_size;
        let frame = &self.big.bufs[0][HEADROOM..HEADROOM + len];
        let Ok(n) = gso::tcp_segments(frame, mss) else {
            self.director.count_drop(DropReason::GsoUnsupported);
            return;
        };
        self.seg_tx.clear();
        let mut asked = false;
        for s in 0..n {
            if self.seg_tx.len() == SEG_SLOTS {
                self.flush_segments();
            }
            let slot = self.seg_tx.len();
            let frame = &self.big.bufs[0][HEADROOM..HEADROOM + len];
            let buf = &mut self.segs[slot];
            let Ok(seg_len) = gso::write_tcp_segment(frame, mss, s, &mut buf[HEADROOM..]) else {
                self.director.count_drop(DropReason::GsoUnsupported);
                break;
            };
            let mut f = Frame {
                buf,
                start: HEADROOM,
                len: seg_len,
                ifindex,
                offload: Offload::default(),
            };
            let Verdict::Transmit(t) = self.director.handle_with(snap, now, &mut f) else {
                continue;
            };
            let staged = self
                .egress
                .stage(&self.director, snap, now, &t, &mut self.segs[slot]);
            match staged {
                Staged::Send(out, vnet) => self.seg_tx.push(TxDesc {
                    slot,
                    start: t.start,
                    len: t.len,
                    vnet,
                    sock: out,
                }),
                // One ARP request per super-frame is enough.
                Staged::Unresolved { out, ask: true } if !asked => {
                    asked = true;
                    self.arp(snap, out, t.ifindex, t.next_hop);
                }
                Staged::Unresolved { .. } | Staged::Dropped => {}
            }
        }
        self.flush_segments();
    }

    /// Sends the segments collected in `seg_tx`.
    fn flush_segments(&mut self) {
        for out in 0..self.sockets.len() {
            if !self.seg_tx.iter().any(|d| d.sock == out) {
                continue;
            }
            let segs = &self.segs;
            let frames = self
                .seg_tx
                .iter()
                .filter(|d| d.sock == out)
                .map(|d| (&segs[d.slot][d.start..d.start + d.len], d.vnet));
            let refused = send_frames(&self.sockets[out], frames);
            self.director
                .count_drops(DropReason::TxError, refused as u64);
        }
        self.seg_tx.clear();
    }

    fn arp(&mut self, snap: &Snapshot, sock: usize, ifindex: u32, target: Ipv4Addr) {
        let (Some(iface), Some(src)) =
            (snap.host.interface(ifindex), snap.host.source_addr(ifindex))
        else {
            return;
        };
        send_arp(
            &self.sockets[sock],
            &mut self.scratch,
            iface.mac,
            src,
            target,
        );
    }

    /// Worker 0: sends the gratuitous ARPs the [`Announcer`] asks for, on
    /// every interface, looking every `ANNOUNCE_CHECK` (a reload's new VIP
    /// is announced within that).
    fn announce(&mut self, now: Instant) {
        let Some(announcer) = self.announcer.as_mut() else {
            return;
        };
        if now < self.next_announce {
            return;
        }
        self.next_announce = now + ANNOUNCE_CHECK;
        let snap = self.director.snapshot();
        // The VIPs rvs answers ARP for (Director::handle_arp): the kernel's
        // own addresses are the kernel's to announce.
        let answered = snap.vips().filter(|v| !snap.host.is_local(*v));
        self.announce_now.clear();
        announcer.due(now, answered, &mut self.announce_now);
        for &vip in &self.announce_now {
            for sock in &self.sockets {
                let Some(iface) = snap.host.interface(sock.ifindex) else {
                    continue;
                };
                let refused = send_arp(sock, &mut self.scratch, iface.mac, vip, vip);
                self.director
                    .count_drops(DropReason::TxError, refused as u64);
            }
            tracing::debug!(%vip, "gratuitous ARP sent");
        }
    }

    /// Sends parked frames whose neighbour is now known, asks again for the
    /// others, gives up after `PENDING_TIMEOUT`.
    fn service_pending(&mut self) {
        if !self.egress.pending.iter().any(|p| p.used) {
            return;
        }
        let now = Instant::now();
        let snap = self.director.snapshot();
        for i in 0..self.egress.pending.len() {
            if !self.egress.pending[i].used {
                continue;
            }
            let (ifindex, hop) = (
                self.egress.pending[i].ifindex,
                self.egress.pending[i].next_hop,
            );
            let Some(sock) = self.socket_for(ifindex) else {
                self.egress.pending[i].used = false;
                continue;
            };
            if let Some(mac) = self.egress.neighbours.get(ifindex, hop) {
                let p = &mut self.egress.pending[i];
                EthernetFrame::new_unchecked(&mut p.buf[..14]).set_dst_addr(mac);
                p.used = false;
                let p = &self.egress.pending[i];
                let refused = send_frames(
                    &self.sockets[sock],
                    std::iter::once((&p.buf[..p.len], p.vnet)),
                );
                if refused > 0 {
                    self.director.count_drop(DropReason::TxError);
                }
            } else if now.duration_since(self.egress.pending[i].since) > neigh::PENDING_TIMEOUT {
                self.egress.pending[i].used = false;
                self.director.count_drop(DropReason::NeighbourPending);
            } else if self.egress.ask((ifindex, hop), now) {
                // One request per next hop and ARP_RETRY, however many
                // frames wait for it.
                self.arp(&snap, sock, ifindex, hop);
            }
        }
    }
}

/// Broadcasts an ARP request from `mac`/`sender` for `target` on `sock`
/// (built in `scratch`, ≥ 42 bytes); returns the number refused (0 or 1).
fn send_arp(
    sock: &PacketSocket,
    scratch: &mut [u8],
    mac: EthernetAddress,
    sender: Ipv4Addr,
    target: Ipv4Addr,
) -> usize {
    let len = neigh::arp_request(scratch, mac, sender, target);
    send_frames(
        sock,
        std::iter::once((&scratch[..len], [0u8; VNET_HDR_LEN])),
    )
}

/// What [`stage`] decided for a frame to transmit.
enum Staged {
    /// Addressed; leaves by this socket with this vnet header.
    Send(usize, [u8; VNET_HDR_LEN]),
    /// The next hop's MAC is unknown: the frame waits in the pending
    /// queue (or was dropped and counted if the queue was full); `ask`: by
    /// ARP on socket `out` (not if a request for that next hop went out
    /// within `ARP_RETRY`: frames to a dead server must not become a
    /// broadcast each).
    Unresolved { out: usize, ask: bool },
    /// No route (counted).
    Dropped,
}

/// The worker's means of addressing a frame: interfaces, neighbours and
/// the queue of frames waiting for one.
struct Egress {
    neighbours: Arc<Neighbours>,
    /// `sockets[i].ifindex` of the worker.
    ifindexes: Vec<u32>,
    pending: Vec<Pending>,
    /// The next hops last asked for by ARP and when (`ASKED` of them, the
    /// oldest replaced): the one record of who was asked, for frames that
    /// wait and for those the full queue dropped alike.
    last_ask: Vec<(u32, Ipv4Addr, Instant)>,
}

impl Egress {
    /// Fills in the Ethernet addresses of a frame to transmit; returns the
    /// socket it leaves by, its vnet header, and whether the next hop's MAC
    /// was known.
    fn prepare(
        &self,
        director: &Director,
        snap: &Snapshot,
        t: &Transmit,
        buf: &mut [u8],
    ) -> Option<(usize, [u8; VNET_HDR_LEN], bool)> {
        let out = self.ifindexes.iter().position(|&i| i == t.ifindex);
        let (Some(out), Some(iface)) = (out, snap.host.interface(t.ifindex)) else {
            director.count_drop(DropReason::NoRoute);
            return None;
        };
        let dst = t
            .dst_mac
            .or_else(|| self.neighbours.get(t.ifindex, t.next_hop));
        let mut eth = EthernetFrame::new_unchecked(&mut buf[t.start..t.start + 14]);
        eth.set_src_addr(iface.mac);
        if let Some(d) = dst {
            eth.set_dst_addr(d);
        }
        Some((out, emit_vnet(&t.offload), dst.is_some()))
    }

    /// Addresses the frame `t` describes in `buf` and decides: it can leave
    /// now by a socket, or its next hop's MAC is unknown (the frame waits
    /// in the pending queue; the caller asks by ARP), or it was dropped and
    /// counted.
    fn stage(
        &mut self,
        director: &Director,
        snap: &Snapshot,
        now: Instant,
        t: &Transmit,
        buf: &mut [u8],
    ) -> Staged {
        let Some((out, vnet, resolved)) = self.prepare(director, snap, t, buf) else {
            return Staged::Dropped;
        };
        if resolved {
            return Staged::Send(out, vnet);
        }
        let ask = self.ask((t.ifindex, t.next_hop), now);
        self.park(director, &buf[t.start..t.start + t.len], vnet, t, now);
        Staged::Unresolved { out, ask }
    }

    /// Whether next hop `hop` (interface, address) should be asked for by
    /// ARP now: not if it was within `ARP_RETRY`. A yes is recorded as
    /// the ask (in this hop's entry, else the oldest).
    fn ask(&mut self, hop: (u32, Ipv4Addr), now: Instant) -> bool {
        let entry = self.last_ask.iter().position(|&(i, h, _)| (i, h) == hop);
        if entry
            .is_some_and(|k| now.saturating_duration_since(self.last_ask[k].2) < neigh::ARP_RETRY)
        {
            return false;
        }
        let k = entry
            .or_else(|| (0..self.last_ask.len()).min_by_key(|&k| self.last_ask[k].2))
            .unwrap_or(0);
        if let Some(e) = self.last_ask.get_mut(k) {
            *e = (hop.0, hop.1, now);
        }
        true
    }

    /// Copies a frame into a free pending slot, or counts a drop when none
    /// is free or the frame is too large for one.
    fn park(
        &mut self,
        director: &Director,
        bytes: &[u8],
        vnet: [u8; VNET_HDR_LEN],
        t: &Transmit,
        now: Instant,
    ) {
        match self.pending.iter_mut().find(|p| !p.used) {
            Some(p) if bytes.len() <= p.buf.len() => {
                p.buf[..bytes.len()].copy_from_slice(bytes);
                p.len = bytes.len();
                p.vnet = vnet;
                p.ifindex = t.ifindex;
                p.next_hop = t.next_hop;
                p.since = now;
                p.used = true;
            }
            _ => director.count_drop(DropReason::NeighbourPending),
        }
    }
}

#[cfg(test)]
mod heartbeat_tests {
    use super::all_recent;

    #[test]
    fn every_worker_must_be_recent() {
        assert!(all_recent(&[990, 1000], 1000, 100));
        assert!(!all_recent(&[800, 1000], 1000, 100), "one stuck worker");
        assert!(!all_recent(&[], 1000, 100), "no workers");
        // A heartbeat stored after `now` was read is recent, not stale.
        assert!(all_recent(&[1005], 1000, 100));
        assert!(all_recent(&[0, 50], 60, 100), "just started");
    }
}
