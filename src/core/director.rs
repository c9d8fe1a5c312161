//! `Director`: takes (now, frame) and returns what to send where.
//!
//! Sans-IO (quinn-proto's shape): no sockets, no clock, no threads. The
//! driver passes each received frame with its arrival interface and offload
//! metadata; the director rewrites it in place (NAT, DR, TUN, or an answer
//! of its own such as ARP, a RST or an ICMP error) and returns a
//! [`Verdict`]. Every exit that does not transmit is a counted
//! [`DropReason`] or [`Verdict::Pass`] (not ours: the kernel has its copy).
//!
//! Shared by all workers through `&self`: the table is sharded by client
//! endpoint with one lock per shard, the configuration is an `ArcSwap`
//! snapshot, counters are atomics. Nothing on the per-packet path
//! allocates once the table has grown to its working size.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::core::config::{Config, ConnPolicy, Method, Protocol};
use crate::core::conntrack::{flags, Conn, FlowKey, Shard, Template, TemplateKey};
use crate::core::counters::{DropCounters, DropReason};
use crate::core::hash::{FastBuild, FastMap};
use crate::core::host::{Hop, HostView};
use crate::core::lock::{ShardGuard, ShardLock};
use crate::core::ratelimit::RateLimit;
use crate::core::sched::ServerLoad;
use crate::core::service::{Registry, RuntimeState, Service, ServiceKey, Snapshot};
use crate::core::tcp_state::{Direction, TcpState};
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::checksum;
use crate::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};
use crate::wire::icmpv4::{dst_unreachable, Icmpv4Message, Icmpv4Packet};
use crate::wire::ipv4::{IpProtocol, Ipv4Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::udp::UdpPacket;

const SHARDS: usize = 64;
const TEMPLATE_SHARDS: usize = 16;
/// Slots examined per shard per `handle_timeout`: 64 × 1024 = 65 536 per
/// call, so a sweep at 10 Hz visits a million entries in under 2 s while
/// holding each shard lock for microseconds.
const SWEEP_BUDGET: usize = 1024;
/// How often the driver should call `handle_timeout` while entries exist.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Slots searched for a half-open entry to evict when the table is full.
const EVICT_BUDGET: usize = 64;
/// Room the driver leaves before the Ethernet header so TUN can prepend
/// its outer IPv4 header in place.
pub const HEADROOM: usize = 64;
const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;

/// Offload metadata of a frame: Linux's `virtio_net_hdr`, which
/// AF_PACKET's PACKET_VNET_HDR hands over on receive and takes on send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// The L4 checksum field holds only the pseudo-header sum; whoever
    /// transmits completes it from `csum_start` (offsets from the Ethernet
    /// header).
    pub needs_csum: bool,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// `VIRTIO_NET_HDR_GSO_*`; non-zero for a super-frame the kernel
    /// segments on the way out.
    pub gso_type: u8,
    pub gso_size: u16,
    pub hdr_len: u16,
}

/// A received frame, rewritten in place.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The whole buffer; the frame starts at `start` with at least
    /// [`HEADROOM`] bytes before it when the driver can give them.
    pub buf: &'a mut [u8],
    pub start: usize,
    pub len: usize,
    /// Arrival interface index.
    pub ifindex: u32,
    pub offload: Offload,
}

/// What to send where. The driver writes the Ethernet source (the egress
/// interface's MAC) and destination (`dst_mac`, or the neighbour entry of
/// `next_hop`) into the first 12 bytes of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub ifindex: u32,
    pub next_hop: Ipv4Addr,
    pub dst_mac: Option<EthernetAddress>,
    pub start: usize,
    pub len: usize,
    pub offload: Offload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Transmit(Transmit),
    Drop(DropReason),
    /// Not a packet of rvs; the kernel handles its own copy.
    Pass,
    /// A GSO super-frame of a flow whose method cannot forward it whole
    /// (TUN): the driver splits it into MTU-sized segments
    /// (`wire::gso`) and hands each back to `handle`. Nothing was changed.
    Segment,
}

/// One row of `rvs conns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub protocol: Protocol,
    pub state: &'static str,
    pub expires_in: Duration,
    pub client: SocketAddrV4,
    pub vaddr: SocketAddrV4,
    pub raddr: SocketAddrV4,
    pub template: bool,
}

thread_local! {
    /// Scheduler input, reused per thread so a new flow allocates nothing.
    static LOADS: RefCell<Vec<ServerLoad>> = const { RefCell::new(Vec::new()) };
    /// The last (now, base) converted to milliseconds on this thread.
    static CLOCK: std::cell::Cell<(Option<Instant>, Option<Instant>, u64)> =
        const { std::cell::Cell::new((None, None, 0)) };
    /// The next identification of a TUN outer header without DF. Per
    /// thread, so workers share no counter line; each starts at a random
    /// point, so their sequences rarely meet.
    static IP_ID: std::cell::Cell<u16> = std::cell::Cell::new({
        #[allow(clippy::cast_possible_truncation)]
        let start = crate::core::hash::random_key() as u16;
        start
    });
}

/// The identification [`next_ip_id`] gives next on this thread.
#[cfg(test)]
pub(crate) fn peek_ip_id() -> u16 {
    IP_ID.with(std::cell::Cell::get)
}

fn next_ip_id() -> u16 {
    IP_ID.with(|c| {
        let id = c.get();
        c.set(id.wrapping_add(1));
        id
    })
}

/// The sans-IO director. See the module docs.
#[derive(Debug)]
pub struct Director {
    snapshot: ArcSwap<Snapshot>,
    registry: Mutex<Registry>,
    shards: Box<[ShardLock<Shard>]>,
    templates: Box<[Mutex<FastMap<TemplateKey, Template>>]>,
    template_cursor: AtomicUsize,
    /// Persistence templates in `templates`, capped at `max_connections`
    /// of their own: an idle template outlives its last connection by the
    /// persistence timeout, so new client networks (a spoofed SYN flood)
    /// would otherwise grow them at their arrival rate × the timeout.
    template_count: AtomicUsize,
    entries: AtomicUsize,
    drops: DropCounters,
    hasher: FastBuild,
    base: Instant,
    last_sweep_ms: AtomicU64,
    /// ICMP errors the director makes up itself.
    icmp_limit: RateLimit,
}

/// How long a reclaimed reset flow is remembered (IPVS's TCP CLOSE timeout).
/// How long a reset flow's tombstone stays (see [`flags::TOMBSTONE`]).
const TOMBSTONE_MS: u64 = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned shard still holds consistent entries (every mutation is a
    // single assignment); keep forwarding rather than take the daemon down.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms(d: Duration) -> u64 {
    // Not as_millis(): its u128 arithmetic shows in a per-packet profile.
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_millis()))
}

fn l4_protocol(p: IpProtocol) -> Option<Protocol> {
    match p {
        IpProtocol::Tcp => Some(Protocol::Tcp),
        IpProtocol::Udp => Some(Protocol::Udp),
        _ => None,
    }
}

fn direction_in(method: Method) -> Direction {
    match method {
        Method::Nat => Direction::Input,
        Method::Tun | Method::Dr => Direction::InputOnly,
    }
}

fn prefix_of(mask: Ipv4Addr) -> u8 {
    // Validated contiguous by the config layer; count_ones ≤ 32.
    u8::try_from(u32::from(mask).count_ones()).unwrap_or(32)
}

fn masked(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(addr) & crate::core::host::mask(prefix))
}

/// Parsed essentials of an IPv4 + TCP/UDP packet.
#[derive(Debug, Clone, Copy)]
struct L4 {
    protocol: Protocol,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    /// Offset of the IP header in the buffer.
    ip: usize,
    /// Offset of the L4 header in the buffer.
    l4: usize,
    /// IP total length.
    ip_len: usize,
    tcp_flags: u8,
}

impl Director {
    pub fn new(
        config: Arc<Config>,
        host: Arc<HostView>,
        runtime: &RuntimeState,
        now: Instant,
    ) -> Director {
        let mut registry = Registry::default();
        let snap = Snapshot::build(config, host, runtime, &mut registry, None);
        // The table hash is keyed randomly per process (remote clients choose
        // the keys); a configured seed makes shard placement reproducible,
        // as STYLE asks of every choice a test depends on.
        let seed = snap.config.daemon.seed;
        let hasher = if seed == 0 {
            FastBuild::random()
        } else {
            FastBuild::with_key(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x7276_735f_7461_626c)
        };
        Director {
            snapshot: ArcSwap::from_pointee(snap),
            registry: Mutex::new(registry),
            shards: (0..SHARDS)
                .map(|_| ShardLock::new(Shard::new(hasher)))
                .collect(),
            templates: (0..TEMPLATE_SHARDS)
                .map(|_| Mutex::new(FastMap::with_hasher(hasher)))
                .collect(),
            template_cursor: AtomicUsize::new(0),
            template_count: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            drops: DropCounters::default(),
            hasher,
            base: now,
            last_sweep_ms: AtomicU64::new(0),
            icmp_limit: RateLimit::icmp(),
        }
    }

    /// Applies a new configuration, host view or runtime state. New flows
    /// follow it; existing flows keep their real server (unless it was
    /// removed with `on_remove = "reset"`).
    pub fn set_config(&self, config: Arc<Config>, host: Arc<HostView>, runtime: &RuntimeState) {
        let mut reg = lock(&self.registry);
        let prev = self.snapshot.load_full();
        let snap = Snapshot::build(config, host, runtime, &mut reg, Some(&prev));
        self.snapshot.store(Arc::new(snap));
    }

    /// Ends every connection of a real server now (health check down with
    /// `on_down = "reset"`, or an operator's request).
    pub fn reset_real(&self, service: ServiceKey, addr: SocketAddrV4) {
        let snap = self.snapshot.load();
        for st in &snap.reals {
            if st.service == service && st.addr == addr {
                st.epoch.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The snapshot in force; drivers load it once per batch.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    fn now_ms(&self, now: Instant) -> u64 {
        // Drivers pass one `now` for a whole batch; converting it once per
        // batch instead of per packet saves ~10% of an established packet.
        CLOCK.with(|c| {
            let (at, base, v) = c.get();
            if at == Some(now) && base == Some(self.base) {
                return v;
            }
            let v = ms(now.saturating_duration_since(self.base));
            c.set((Some(now), Some(self.base), v));
            v
        })
    }

    fn shard_of(&self, protocol: Protocol, client: SocketAddrV4) -> &ShardLock<Shard> {
        use std::hash::BuildHasher;
        // One packed word: a tuple would hash each field in its own round.
        let h = self.hasher.hash_one(
            u64::from(protocol as u8) << 48
                | u64::from(u32::from(*client.ip())) << 16
                | u64::from(client.port()),
        );
        // SHARDS is a power of two; the low bits of the mixed hash index it.
        #[allow(clippy::cast_possible_truncation)]
        &self.shards[(h as usize) & (SHARDS - 1)]
    }

    fn template_shard(&self, key: &TemplateKey) -> &Mutex<FastMap<TemplateKey, Template>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        #[allow(clippy::cast_possible_truncation)]
        &self.templates[(h as usize) % TEMPLATE_SHARDS]
    }

    /// Handles one frame with the snapshot in force.
    pub fn handle(&self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let snap = self.snapshot.load();
        self.handle_with(&snap, now, frame)
    }

    /// Handles one frame with a snapshot the caller loaded (once per batch).
    pub fn handle_with(&self, snap: &Snapshot, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let v = self.dispatch(snap, self.now_ms(now), frame);
        if let Verdict::Drop(r) = v {
            self.drops.add(r);
        }
        v
    }

    /// Counts a drop the driver decided (neighbour queue full, send error).
    pub fn count_drop(&self, reason: DropReason) {
        self.drops.add(reason);
    }

    /// Counts `n` drops the driver learnt of at once (kernel statistics).
    pub fn count_drops(&self, reason: DropReason, n: u64) {
        if n > 0 {
            self.drops.add_n(reason, n);
        }
    }

    fn dispatch(&self, snap: &Snapshot, now: u64, f: &mut Frame<'_>) -> Verdict {
        let end = f.start.saturating_add(f.len);
        if end > f.buf.len() || f.len < ETH_LEN {
            return Verdict::Drop(DropReason::Malformed);
        }
        let ethertype = EthernetFrame::new_unchecked(&f.buf[f.start..end]).ethertype();
        match ethertype {
            EtherType::Arp => self.handle_arp(snap, f),
            EtherType::Ipv4 => self.handle_ipv4(snap, now, f),
            _ => Verdict::Pass,
        }
    }

    fn handle_arp(&self, snap: &Snapshot, f: &mut Frame<'_>) -> Verdict {
        let end = f.start + f.len;
        let Ok(arp) = ArpPacket::new_checked(&f.buf[f.start + ETH_LEN..end]) else {
            return Verdict::Pass;
        };
        let Ok(req) = ArpRepr::parse(&arp) else {
            return Verdict::Pass;
        };
        let target = req.target_protocol_addr;
        if req.operation != ArpOperation::Request
            || !snap.is_vip(target)
            || snap.host.is_local(target)
        {
            return Verdict::Pass;
        }
        let Some(iface) = snap.host.interface(f.ifindex) else {
            return Verdict::Pass;
        };
        let reply = ArpRepr {
            operation: ArpOperation::Reply,
            source_hardware_addr: iface.mac,
            source_protocol_addr: target,
            target_hardware_addr: req.source_hardware_addr,
            target_protocol_addr: req.source_protocol_addr,
        };
        let out = &mut f.buf[f.start..f.start + ETH_LEN + reply.buffer_len()];
        let mut eth = EthernetFrame::new_unchecked(&mut *out);
        eth.set_dst_addr(req.source_hardware_addr);
        eth.set_src_addr(iface.mac);
        eth.set_ethertype(EtherType::Arp);
        reply.emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
        Verdict::Transmit(Transmit {
            ifindex: f.ifindex,
            next_hop: req.source_protocol_addr,
            dst_mac: Some(req.source_hardware_addr),
            start: f.start,
            len: ETH_LEN + reply.buffer_len(),
            offload: Offload::default(),
        })
    }

    fn handle_ipv4(&self, snap: &Snapshot, now: u64, f: &mut Frame<'_>) -> Verdict {
        let ip_off = f.start + ETH_LEN;
        let end = f.start + f.len;
        let bytes = &f.buf[ip_off..end];
        // A VIP destination decides whether a broken packet is ours to count;
        // asked only on the way to a drop (forwarded packets never need it).
        let dst_is_vip = || {
            bytes.len() >= IPV4_LEN
                && snap.is_vip(Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]))
        };
        let ours = |r: DropReason| {
            if dst_is_vip() {
                Verdict::Drop(r)
            } else {
                Verdict::Pass
            }
        };
        if bytes.len() < IPV4_LEN {
            // Too short to say whom it is for: malformed whoever it was for.
            return Verdict::Drop(DropReason::Malformed);
        }
        let Ok(ip) = Ipv4Packet::new_checked(bytes) else {
            return ours(DropReason::Malformed);
        };
        if !ip.verify_checksum() {
            return ours(DropReason::BadChecksum);
        }
        let proto = ip.next_header();
        if ip.is_fragment() {
            return ours(DropReason::Fragment);
        }
        if proto == IpProtocol::Icmp {
            let to_vip = dst_is_vip();
            return self.handle_icmp(snap, now, f, to_vip);
        }
        let Some(protocol) = l4_protocol(proto) else {
            return ours(DropReason::NoService);
        };
        let src_ip = ip.src_addr();
        let dst_ip = ip.dst_addr();
        let ttl = ip.hop_limit();
        let hl = ip.header_len();
        let ip_len = usize::from(ip.total_len());
        let payload = ip.payload();
        let (sport, dport, tcp_flags) = match protocol {
            Protocol::Tcp => match TcpPacket::new_checked(payload) {
                Ok(t) => (t.src_port(), t.dst_port(), t.flags()),
                Err(_) => return ours(DropReason::Malformed),
            },
            Protocol::Udp => match UdpPacket::new_checked(payload) {
                Ok(u) => (u.src_port(), u.dst_port(), 0),
                Err(_) => return ours(DropReason::Malformed),
            },
        };
        let l4 = L4 {
            protocol,
            src: SocketAddrV4::new(src_ip, sport),
            dst: SocketAddrV4::new(dst_ip, dport),
            ip: ip_off,
            l4: ip_off + usize::from(hl),
            ip_len,
            tcp_flags,
        };
        let svc = snap.service(protocol, l4.dst);
        let reply = || snap.is_nat_real(protocol, l4.src) && !snap.host.is_local(dst_ip);
        if svc.is_none() && !reply() {
            return ours(DropReason::NoService);
        }
        // Ours to forward, one way or the other.
        if ttl <= 1 {
            return self.time_exceeded(snap, now, f, ip_off);
        }
        match svc {
            Some(svc) => self.inbound(snap, now, f, svc, &l4),
            None => self.nat_reply(snap, now, f, &l4),
        }
    }

    // ---- connection bookkeeping -------------------------------------------------

    fn set_state(snap: &Snapshot, c: &mut Conn, new: u8) {
        let old = c.state;
        c.state = new;
        if c.protocol != Protocol::Tcp {
            return;
        }
        let (was, is) = (
            TcpState::from_u8(old).is_active(),
            TcpState::from_u8(new).is_active(),
        );
        if was != is {
            if let Some(r) = snap.real(c.real) {
                if is {
                    r.active.fetch_add(1, Ordering::Relaxed);
                    r.inactive.fetch_sub(1, Ordering::Relaxed);
                } else {
                    r.inactive.fetch_add(1, Ordering::Relaxed);
                    r.active.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn timeout_of(snap: &Snapshot, c: &Conn) -> u64 {
        let t = &snap.config.timeouts;
        match c.protocol {
            Protocol::Tcp => ms(TcpState::from_u8(c.state).timeout(t)),
            Protocol::Udp => ms(t.udp),
        }
    }

    fn is_tombstone(c: &Conn) -> bool {
        c.flags & flags::TOMBSTONE != 0
    }

    fn is_dead(snap: &Snapshot, c: &Conn, now: u64) -> bool {
        c.expires <= now
            || Self::is_tombstone(c)
            || snap
                .real(c.real)
                .is_some_and(|r| r.epoch.load(Ordering::Relaxed) != c.epoch)
    }

    /// Accounting for an entry taken out of its shard (a tombstone was
    /// accounted for when it became one).
    fn reclaim(&self, snap: &Snapshot, c: &Conn, now: u64) {
        if !Self::is_tombstone(c) {
            self.release(snap, c, now);
        }
    }

    /// Accounting for an entry that left its shard.
    fn release(&self, snap: &Snapshot, c: &Conn, now: u64) {
        self.entries.fetch_sub(1, Ordering::Relaxed);
        if let Some(r) = snap.real(c.real) {
            let active = c.protocol == Protocol::Tcp && TcpState::from_u8(c.state).is_active();
            if active {
                r.active.fetch_sub(1, Ordering::Relaxed);
            } else {
                r.inactive.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if c.flags & flags::TEMPLATE != 0 {
            let key = TemplateKey {
                client_net: masked(*c.client.ip(), c.tpl_prefix),
                vaddr: c.vaddr,
                protocol: c.protocol,
            };
            let mut t = lock(self.template_shard(&key));
            if let Some(tpl) = t.get_mut(&key) {
                tpl.conns = tpl.conns.saturating_sub(1);
                if tpl.conns == 0 {
                    tpl.expires = now + tpl.timeout_ms;
                }
            }
        }
    }

    /// Picks a real server for a new flow, through the persistence
    /// template when there is a usable one. Returns the real server's index
    /// in `svc.reals` (or `usize::MAX` for the sorry server) and whether a
    /// template reference was taken; `NoRealServer`, or `TableFull` when
    /// a new template finds no room.
    fn schedule(
        &self,
        snap: &Snapshot,
        now: u64,
        svc: &Service,
        client: Ipv4Addr,
    ) -> Result<(usize, bool), DropReason> {
        if !svc.accepting {
            return Err(DropReason::NoRealServer);
        }
        let pick = || {
            LOADS.with(|l| {
                let mut loads = l.borrow_mut();
                svc.loads(&snap.reals, &mut loads);
                svc.scheduler.schedule(&loads, client)
            })
        };
        let sorry = || {
            svc.sorry
                .as_ref()
                .map(|_| (usize::MAX, false))
                .ok_or(DropReason::NoRealServer)
        };
        let Some(p) = svc.persistence() else {
            return pick().map(|i| (i, false)).map_or_else(sorry, Ok);
        };
        let prefix = prefix_of(p.netmask);
        let key = TemplateKey {
            client_net: masked(client, prefix),
            vaddr: svc.key.addr,
            protocol: svc.key.protocol,
        };
        let timeout_ms = ms(p.timeout);
        let mut t = lock(self.template_shard(&key));
        let mut carried = 0;
        // A template removed here leaves its count for the one replacing
        // it: reserving again could lose the room to another worker.
        let mut replaced = false;
        if let Some(tpl) = t.get_mut(&key) {
            let alive = tpl.conns > 0 || tpl.expires > now;
            if alive {
                let usable = svc.reals.iter().position(|r| {
                    r.id == tpl.real
                        && r.addr == tpl.raddr
                        && snap.real(r.id).is_some_and(|s| {
                            s.epoch.load(Ordering::Relaxed) == tpl.epoch
                                && svc.live_weight(r, s) > 0
                        })
                });
                if let Some(i) = usable {
                    tpl.conns += 1;
                    tpl.expires = now.saturating_add(timeout_ms);
                    return Ok((i, true));
                }
                carried = tpl.conns;
            }
            if let Some(s) = snap.real(tpl.real) {
                s.templates.fetch_sub(1, Ordering::Relaxed);
            }
            t.remove(&key);
            replaced = true;
        }
        let Some(i) = pick() else {
            if replaced {
                self.template_count.fetch_sub(1, Ordering::Relaxed);
            }
            return sorry();
        };
        if !replaced && !self.reserve_template(snap, &mut t) {
            return Err(DropReason::TableFull);
        }
        let r = &svc.reals[i];
        let epoch = snap.real(r.id).map_or(0, |s| {
            s.templates.fetch_add(1, Ordering::Relaxed);
            s.epoch.load(Ordering::Relaxed)
        });
        // Connections of a replaced template still hold references to this
        // key; carrying their count keeps the new template alive for them.
        t.insert(
            key,
            Template {
                real: r.id,
                raddr: r.addr,
                epoch,
                conns: carried + 1,
                expires: now.saturating_add(timeout_ms),
                timeout_ms,
            },
        );
        Ok((i, true))
    }

    /// Counts one more template if there is room. When the templates are
    /// at their cap, an idle one (no connections left: only its
    /// persistence timeout keeps it) is dropped for it, the first among
    /// [`EVICT_BUDGET`] of the same shard's (`t`, whose lock the caller
    /// holds), else of another shard that is free at once: under that
    /// pressure a client network losing its stickiness beats a new client
    /// being refused. False if every template looked at still controls
    /// connections.
    fn reserve_template(&self, snap: &Snapshot, t: &mut FastMap<TemplateKey, Template>) -> bool {
        let max = snap.config.daemon.max_connections as usize;
        let reserved = self
            .template_count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if reserved {
            return true;
        }
        let evict_idle = |t: &mut FastMap<TemplateKey, Template>| {
            let idle = t
                .iter()
                .take(EVICT_BUDGET)
                .find(|(_, tpl)| tpl.conns == 0)
                .map(|(k, tpl)| (*k, tpl.real));
            let Some((k, real)) = idle else {
                return false;
            };
            t.remove(&k);
            if let Some(s) = snap.real(real) {
                s.templates.fetch_sub(1, Ordering::Relaxed);
            }
            true
        };
        // The evicted template's count is the new one's.
        if evict_idle(t) {
            return true;
        }
        // Never waited for: another worker may hold one and want ours.
        self.templates.iter().any(|other| match other.try_lock() {
            Ok(mut o) => evict_idle(&mut o),
            Err(std::sync::TryLockError::Poisoned(p)) => evict_idle(&mut p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => false,
        })
    }

    fn inbound(
        &self,
        snap: &Snapshot,
        now: u64,
        f: &mut Frame<'_>,
        svc: &Service,
        l4: &L4,
    ) -> Verdict {
        let key = FlowKey::new(l4.protocol, l4.src, l4.dst);
        let tcp = l4.protocol == Protocol::Tcp;
        let syn = tcp && l4.tcp_flags & tcp::flags::SYN != 0;
        let ack = l4.tcp_flags & tcp::flags::ACK != 0;
        let own = self.shard_of(l4.protocol, l4.src);
        let mut shard = own.lock();
        let h_in = shard.hash(&key);
        if let Some(slot) = shard.find_in_hashed(h_in, &key) {
            let c = *shard.get(slot);
            let reset = Self::is_tombstone(&c)
                || snap
                    .real(c.real)
                    .is_some_and(|r| r.epoch.load(Ordering::Relaxed) != c.epoch);
            let reuse = syn && !ack && TcpState::from_u8(c.state).allows_reuse();
            if reset || c.expires <= now || reuse {
                shard.remove(slot);
                self.reclaim(snap, &c, now);
                if reset && !syn && tcp {
                    return Verdict::Drop(DropReason::RealServerReset);
                }
            } else if f.offload.gso_type != 0 && c.method == Method::Tun {
                return Verdict::Segment;
            } else {
                let c = shard.get_mut(slot);
                if tcp {
                    let next =
                        TcpState::from_u8(c.state).next(direction_in(c.method), l4.tcp_flags);
                    Self::set_state(snap, c, next as u8);
                }
                c.expires = now + Self::timeout_of(snap, c);
                let conn = *c;
                drop(shard);
                return self.forward_in(snap, now, f, &conn, l4);
            }
        }

        // A new flow.
        if tcp {
            let fin = l4.tcp_flags & tcp::flags::FIN != 0;
            let rst = l4.tcp_flags & tcp::flags::RST != 0;
            if syn && (fin || rst) {
                return Verdict::Drop(DropReason::BadTcpFlags);
            }
            let sloppy = snap.config.daemon.sloppy_tcp && ack && !rst && !fin;
            if (!syn || ack) && !sloppy {
                return Verdict::Drop(if l4.tcp_flags == 0 {
                    DropReason::BadTcpFlags
                } else {
                    DropReason::NoConnection
                });
            }
        }
        // Room for the new entry is reserved before it exists, so workers
        // racing on different shards cannot overshoot max_connections.
        if !self.reserve_entry(snap, now, &mut shard, own) {
            return Verdict::Drop(DropReason::TableFull);
        }
        let (idx, templated) = match self.schedule(snap, now, svc, *l4.src.ip()) {
            Ok(picked) => picked,
            Err(DropReason::NoRealServer) => {
                drop(shard);
                self.entries.fetch_sub(1, Ordering::Relaxed);
                self.drops.add(DropReason::NoRealServer);
                return self.refuse(snap, now, f, l4);
            }
            Err(reason) => {
                self.entries.fetch_sub(1, Ordering::Relaxed);
                return Verdict::Drop(reason);
            }
        };
        let real = if idx == usize::MAX {
            match svc.sorry.as_ref() {
                Some(r) => r,
                None => {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    return Verdict::Drop(DropReason::NoRealServer);
                }
            }
        } else {
            &svc.reals[idx]
        };
        let st = snap.real(real.id);
        let mut conn = Conn {
            client: l4.src,
            vaddr: l4.dst,
            raddr: real.addr,
            real: real.id,
            epoch: st.map_or(0, |s| s.epoch.load(Ordering::Relaxed)),
            expires: 0,
            protocol: l4.protocol,
            method: real.method,
            state: TcpState::None as u8,
            flags: if templated { flags::TEMPLATE } else { 0 },
            tpl_prefix: svc.persistence().map_or(32, |p| prefix_of(p.netmask)),
        };
        if let Some(s) = st {
            s.inactive.fetch_add(1, Ordering::Relaxed);
            s.conns_total.add(1);
        }
        if tcp {
            // A flow picked up mid-stream (sloppy_tcp, e.g. after a restart
            // or a director failover) is established, not in the CLOSE that
            // IPVS's table gives an ACK in NONE.
            let next = if syn {
                TcpState::None.next(direction_in(conn.method), l4.tcp_flags)
            } else {
                TcpState::Established
            };
            Self::set_state(snap, &mut conn, next as u8);
        }
        conn.expires = now + Self::timeout_of(snap, &conn);
        // A NAT reply tuple already taken by another client flow cannot be
        // told apart on the way back; refuse rather than mix two flows.
        let reply = conn.reply_key();
        let h_reply = shard.hash(&reply);
        if conn.method == Method::Nat && shard.find_reply_hashed(h_reply, &reply).is_some() {
            // release() gives the reserved room back.
            self.release(snap, &conn, now);
            return Verdict::Drop(DropReason::NoRealServer);
        }
        // Counted by reserve_entry.
        shard.insert_hashed(conn, h_in, h_reply);
        drop(shard);
        self.forward_in(snap, now, f, &conn, l4)
    }

    /// Counts one more entry if the table has room; when it is full, first
    /// evicts the oldest connection that never completed its handshake
    /// (own shard first, then the others). False: no room (table_full).
    fn reserve_entry(
        &self,
        snap: &Snapshot,
        now: u64,
        shard: &mut ShardGuard<'_, Shard>,
        own: &ShardLock<Shard>,
    ) -> bool {
        let max = snap.config.daemon.max_connections as usize;
        // A tombstone frees no room: it was released when it became one.
        let half_open = |c: &Conn| {
            c.protocol == Protocol::Tcp
                && TcpState::from_u8(c.state) == TcpState::SynRecv
                && !Self::is_tombstone(c)
        };
        let reserve = || {
            self.entries
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok()
        };
        // A few rounds: another worker may take the room an eviction made.
        for _ in 0..3 {
            if reserve() {
                return true;
            }
            match shard.find_evictable(EVICT_BUDGET, half_open) {
                Some(slot) => {
                    let c = shard.remove(slot);
                    self.release(snap, &c, now);
                }
                None => {
                    if !self.evict_elsewhere(snap, now, own, half_open) {
                        return false;
                    }
                }
            }
        }
        reserve()
    }

    /// Evicts one entry for which `evictable` holds from a shard other
    /// than `own` (whose lock the caller holds). Other shards are only
    /// tried, never waited for, so two workers cannot deadlock.
    fn evict_elsewhere(
        &self,
        snap: &Snapshot,
        now: u64,
        own: &ShardLock<Shard>,
        evictable: impl Fn(&Conn) -> bool,
    ) -> bool {
        // Start after our own shard, not at shard 0, so evictions spread
        // over the table instead of draining the first shards.
        let start = self
            .shards
            .iter()
            .position(|m| std::ptr::eq(m, own))
            .unwrap_or(0);
        for k in 1..SHARDS {
            let m = &self.shards[(start + k) % SHARDS];
            let Some(mut s) = m.try_lock() else {
                continue;
            };
            if let Some(slot) = s.find_evictable(EVICT_BUDGET, &evictable) {
                let c = s.remove(slot);
                drop(s);
                self.release(snap, &c, now);
                return true;
            }
        }
        false
    }

    fn nat_reply(&self, snap: &Snapshot, now: u64, f: &mut Frame<'_>, l4: &L4) -> Verdict {
        // Replies travel real server → client: the client is the destination.
        let key = FlowKey::new(l4.protocol, l4.dst, l4.src);
        let mut shard = self.shard_of(l4.protocol, l4.dst).lock();
        let Some(slot) = shard.find_reply(&key) else {
            return Verdict::Drop(DropReason::NoConnection);
        };
        let c = *shard.get(slot);
        if Self::is_dead(snap, &c, now) {
            shard.remove(slot);
            self.reclaim(snap, &c, now);
            return Verdict::Drop(if c.expires <= now {
                DropReason::NoConnection
            } else {
                DropReason::RealServerReset
            });
        }
        let c = shard.get_mut(slot);
        if c.protocol == Protocol::Tcp {
            let next = TcpState::from_u8(c.state).next(Direction::Output, l4.tcp_flags);
            Self::set_state(snap, c, next as u8);
        }
        c.expires = now + Self::timeout_of(snap, c);
        let conn = *c;
        drop(shard);
        if let Some(r) = snap.real(conn.real) {
            r.out_pkts.add(1);
            r.out_bytes.add(l4.ip_len as u64);
        }
        let Some(hop) = snap.route(*conn.client.ip()) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let partial = f.offload.needs_csum;
        rewrite_l4(f.buf, l4, partial, Endpoint::Src, conn.vaddr);
        forward(f, l4.ip, hop)
    }

    fn forward_in(
        &self,
        snap: &Snapshot,
        now: u64,
        f: &mut Frame<'_>,
        c: &Conn,
        l4: &L4,
    ) -> Verdict {
        if let Some(r) = snap.real(c.real) {
            r.in_pkts.add(1);
            r.in_bytes.add(l4.ip_len as u64);
        }
        let rip = *c.raddr.ip();
        let Some(hop) = snap.route(rip) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        match c.method {
            // The TTL was checked (> 1) before the flow was looked up.
            Method::Nat => {
                let partial = f.offload.needs_csum;
                rewrite_l4(f.buf, l4, partial, Endpoint::Dst, c.raddr);
                forward(f, l4.ip, hop)
            }
            Method::Dr => forward(
                f,
                l4.ip,
                Hop {
                    ifindex: hop.ifindex,
                    next_hop: rip,
                },
            ),
            Method::Tun => self.encapsulate(snap, now, f, l4.ip, l4.ip_len, rip, hop),
        }
    }

    /// VS/TUN: wraps the IP packet at `ip` in an outer IPv4 header toward
    /// `rip`, in place (the Ethernet header moves into the headroom).
    #[allow(clippy::too_many_arguments)]
    fn encapsulate(
        &self,
        snap: &Snapshot,
        now: u64,
        f: &mut Frame<'_>,
        ip: usize,
        ip_len: usize,
        rip: Ipv4Addr,
        hop: Hop,
    ) -> Verdict {
        if f.offload.gso_type != 0 {
            // virtio_net_hdr cannot describe segmentation of IPXIP4 frames.
            return Verdict::Drop(DropReason::GsoUnsupported);
        }
        if f.offload.needs_csum {
            complete_checksum(f);
        }
        let Some(iface) = snap.host.interface(hop.ifindex) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let mtu = usize::from(iface.mtu);
        let df = f.buf[ip + 6] & 0x40 != 0;
        if ip_len + IPV4_LEN > mtu {
            if df {
                // RFC 1191: tell the client the MTU left after our header.
                let next_mtu = u16::try_from(mtu - IPV4_LEN).unwrap_or(576);
                return self.icmp_error(
                    snap,
                    now,
                    f,
                    ip,
                    Icmpv4Message::DstUnreachable,
                    dst_unreachable::FRAG_NEEDED,
                    next_mtu,
                    None,
                );
            }
            return Verdict::Drop(DropReason::TooBig);
        }
        if f.start < IPV4_LEN {
            return Verdict::Drop(DropReason::TooBig);
        }
        let Some(src) = iface.source_addr() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        // After the MTU checks: a "fragmentation needed" quotes the packet
        // as it arrived.
        decrement_ttl(f.buf, ip);
        let new_start = f.start - IPV4_LEN;
        f.buf.copy_within(f.start..f.start + ETH_LEN, new_start);
        let outer_off = new_start + ETH_LEN;
        let total = ip_len + IPV4_LEN;
        // RFC 2003 § 3.1: the outer TOS is the inner one; ECN as Linux's
        // tunnels (RFC 6040 normal mode): CE inside is sent as ECT(0), so a
        // router on the tunnel path may still mark it.
        let tos = f.buf[ip + 1];
        let tos = if tos & 3 == 3 { tos & !3 | 2 } else { tos };
        // total ≤ mtu ≤ u16::MAX.
        let [len_hi, len_lo] = u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes();
        let [s0, s1, s2, s3] = src.octets();
        let [d0, d1, d2, d3] = rip.octets();
        // A fragmentable outer packet needs an identification that differs
        // from its neighbours' (RFC 6864 § 4.1); with DF it may be 0.
        let [id_hi, id_lo] = if df {
            [0, 0]
        } else {
            next_ip_id().to_be_bytes()
        };
        let mut outer: [u8; IPV4_LEN] = [
            0x45,
            tos,
            len_hi,
            len_lo,
            id_hi,
            id_lo,
            if df { 0x40 } else { 0 },
            0,
            64,
            u8::from(IpProtocol::IpIp),
            0,
            0,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ];
        let [c0, c1] = (!checksum::header20(&outer)).to_be_bytes();
        outer[10] = c0;
        outer[11] = c1;
        f.buf[outer_off..outer_off + IPV4_LEN].copy_from_slice(&outer);
        f.start = new_start;
        f.len = ETH_LEN + total;
        transmit(f, hop)
    }

    /// The "no server" answer: a RST from the VIP for TCP (every stack
    /// fails the connect at once), ICMP port unreachable for UDP.
    fn refuse(&self, snap: &Snapshot, now: u64, f: &mut Frame<'_>, l4: &L4) -> Verdict {
        match l4.protocol {
            Protocol::Tcp => self.reset_reply(f, l4),
            Protocol::Udp => {
                let src = *l4.dst.ip();
                self.icmp_error(
                    snap,
                    now,
                    f,
                    l4.ip,
                    Icmpv4Message::DstUnreachable,
                    dst_unreachable::PORT,
                    0,
                    Some(src),
                )
            }
        }
    }

    fn reset_reply(&self, f: &mut Frame<'_>, l4: &L4) -> Verdict {
        let (seq, ack, acked) = {
            let t = TcpPacket::new_unchecked(&f.buf[l4.l4..l4.ip + l4.ip_len]);
            let data = u32::try_from(t.payload().len()).unwrap_or(0);
            let syn_fin = u32::from(t.syn()) + u32::from(t.fin());
            (
                t.seq_number().wrapping_add(data).wrapping_add(syn_fin),
                t.ack_number(),
                t.ack(),
            )
        };
        let src_mac = EthernetFrame::new_unchecked(&f.buf[f.start..f.start + ETH_LEN]).src_addr();
        let ip = l4.ip;
        let total = IPV4_LEN + 20;
        if ip + total > f.buf.len() {
            return Verdict::Drop(DropReason::Malformed);
        }
        {
            let mut p = Ipv4Packet::new_unchecked(&mut f.buf[ip..ip + total]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_dscp_ecn(0);
            p.set_total_len(40);
            p.set_ident(0);
            p.clear_flags();
            p.set_dont_frag(true);
            p.set_frag_offset(0);
            p.set_hop_limit(64);
            p.set_next_header(IpProtocol::Tcp);
            p.set_src_addr(*l4.dst.ip());
            p.set_dst_addr(*l4.src.ip());
            p.fill_checksum();
        }
        {
            let mut t = TcpPacket::new_unchecked(&mut f.buf[ip + IPV4_LEN..ip + total]);
            t.set_src_port(l4.dst.port());
            t.set_dst_port(l4.src.port());
            // RFC 9293 §3.10.7.1: a segment with ACK gets RST with seq =
            // its ack; otherwise seq 0 and ACK of everything it carried.
            if acked {
                t.set_seq_number(ack);
                t.set_ack_number(0);
                t.set_flags(tcp::flags::RST);
            } else {
                t.set_seq_number(0);
                t.set_ack_number(seq);
                t.set_flags(tcp::flags::RST | tcp::flags::ACK);
            }
            t.set_header_len(20);
            t.set_window_len(0);
            t.set_urgent_at(0);
            t.fill_checksum(*l4.dst.ip(), *l4.src.ip());
        }
        f.offload = Offload::default();
        Verdict::Transmit(Transmit {
            ifindex: f.ifindex,
            next_hop: *l4.src.ip(),
            dst_mac: Some(src_mac),
            start: f.start,
            len: ETH_LEN + total,
            offload: Offload::default(),
        })
    }

    /// A packet we would forward whose TTL runs out here: ICMP time
    /// exceeded to its source from this interface's address, as a router
    /// (and IPVS's `decrement_ttl`) does, so a routing loop through the
    /// director ends and traceroute shows the hop. It never reaches the
    /// connection table: a dropped packet changes no flow's state.
    #[cold]
    #[inline(never)]
    fn time_exceeded(&self, snap: &Snapshot, now: u64, f: &mut Frame<'_>, ip: usize) -> Verdict {
        self.drops.add(DropReason::TtlExceeded);
        self.icmp_error(snap, now, f, ip, Icmpv4Message::TimeExceeded, 0, 0, None)
    }

    /// Answers the sender of the packet at `ip` with the ICMP error `msg`
    /// / `code` (RFC 792) quoting its header and first 8 bytes, built in
    /// place and sent back to the frame's source MAC — unless the answer
    /// is suppressed (see the checks below, and the rate limit).
    #[allow(clippy::too_many_arguments)]
    fn icmp_error(
        &self,
        snap: &Snapshot,
        now: u64,
        f: &mut Frame<'_>,
        ip: usize,
        msg: Icmpv4Message,
        code: u8,
        next_mtu: u16,
        src: Option<Ipv4Addr>,
    ) -> Verdict {
        let (orig_src, quote_len) = {
            let p = Ipv4Packet::new_unchecked(&f.buf[ip..f.start + f.len]);
            let q = (usize::from(p.header_len()) + 8).min(usize::from(p.total_len()));
            (p.src_addr(), q)
        };
        let Some(src) = src.or_else(|| snap.host.source_addr(f.ifindex)) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let total = IPV4_LEN + 8 + quote_len;
        if ip + total > f.buf.len() {
            return Verdict::Drop(DropReason::Malformed);
        }
        let eth = EthernetFrame::new_unchecked(&f.buf[f.start..f.start + ETH_LEN]);
        let (src_mac, dst_mac) = (eth.src_addr(), eth.dst_addr());
        // RFC 1812 § 4.3.2.7: no error to a source that names no one host,
        // nor about a frame sent to everyone on the link; RFC 1122 § 3.2.2:
        // none about an ICMP error (the only ICMP rvs forwards).
        let martian = f.buf[ip + 9] == u8::from(IpProtocol::Icmp)
            || orig_src.is_unspecified()
            || orig_src.is_broadcast()
            || orig_src.is_multicast()
            || orig_src.is_loopback()
            || !dst_mac.is_unicast();
        // The token is taken last, so only answers that would go out spend it.
        if martian || !self.icmp_limit.allow(now) {
            return Verdict::Drop(DropReason::IcmpSuppressed);
        }
        f.buf.copy_within(ip..ip + quote_len, ip + IPV4_LEN + 8);
        {
            let mut icmp = Icmpv4Packet::new_unchecked(&mut f.buf[ip + IPV4_LEN..ip + total]);
            icmp.set_msg_type(msg);
            icmp.set_msg_code(code);
            icmp.set_rest_of_header(0);
            icmp.set_next_mtu(next_mtu);
            icmp.fill_checksum();
        }
        {
            let mut p = Ipv4Packet::new_unchecked(&mut f.buf[ip..ip + IPV4_LEN]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_dscp_ecn(0);
            p.set_total_len(u16::try_from(total).unwrap_or(u16::MAX));
            p.set_ident(0);
            p.clear_flags();
            p.set_frag_offset(0);
            p.set_hop_limit(64);
            p.set_next_header(IpProtocol::Icmp);
            p.set_src_addr(src);
            p.set_dst_addr(orig_src);
            p.fill_checksum();
        }
        f.offload = Offload::default();
        Verdict::Transmit(Transmit {
            ifindex: f.ifindex,
            next_hop: orig_src,
            dst_mac: Some(src_mac),
            start: f.start,
            len: ETH_LEN + total,
            offload: Offload::default(),
        })
    }

    /// Answers a ping to a VIP that rvs answers ARP for (the kernel does
    /// not own it, so nobody else would), in place, as the host owning the
    /// VIP would: monitoring that pings VIPs, as keepalived setups do,
    /// sees them up. The reply leaves where the request came in, to the
    /// MAC it came from. The request's IP packet is `ip_off..icmp_end`,
    /// its ICMP message from `icmp_off`.
    fn echo_reply(
        &self,
        snap: &Snapshot,
        f: &mut Frame<'_>,
        (client, vip): (Ipv4Addr, Ipv4Addr),
        (ip_off, icmp_off, icmp_end): (usize, usize, usize),
    ) -> Verdict {
        let eth = EthernetFrame::new_unchecked(&f.buf[f.start..f.start + ETH_LEN]);
        let (peer, to) = (eth.src_addr(), eth.dst_addr());
        let Some(iface) = snap.host.interface(f.ifindex) else {
            return Verdict::Pass;
        };
        // No answer to a broadcast frame or to a source that is no host
        // (RFC 1122 § 3.2.2.6 allows silence; it avoids smurf replies).
        if !to.is_unicast()
            || !peer.is_unicast()
            || client.is_unspecified()
            || client.is_broadcast()
            || client.is_multicast()
            || client.is_loopback()
        {
            return Verdict::Drop(DropReason::IcmpSuppressed);
        }
        if !Icmpv4Packet::new_unchecked(&f.buf[icmp_off..icmp_end]).verify_checksum() {
            return Verdict::Drop(DropReason::BadChecksum);
        }
        {
            let mut icmp = Icmpv4Packet::new_unchecked(&mut f.buf[icmp_off..icmp_end]);
            // Type 8 → 0 in the first 16-bit word; the code stays.
            let code = u16::from(icmp.msg_code());
            let check = checksum::update_u16(icmp.checksum(), 0x0800 | code, code);
            icmp.set_msg_type(Icmpv4Message::EchoReply);
            icmp.set_checksum(check);
        }
        {
            let mut p = Ipv4Packet::new_unchecked(&mut f.buf[ip_off..icmp_end]);
            p.set_src_addr(vip);
            p.set_dst_addr(client);
            p.set_hop_limit(64);
            p.fill_checksum();
        }
        let mut eth = EthernetFrame::new_unchecked(&mut f.buf[f.start..f.start + ETH_LEN]);
        eth.set_dst_addr(peer);
        eth.set_src_addr(iface.mac);
        f.offload = Offload::default();
        Verdict::Transmit(Transmit {
            ifindex: f.ifindex,
            next_hop: client,
            dst_mac: Some(peer),
            start: f.start,
            len: icmp_end - f.start,
            offload: Offload::default(),
        })
    }

    // ---- ICMP errors about tracked flows -----------------------------------------

    fn handle_icmp(
        &self,
        snap: &Snapshot,
        now: u64,
        f: &mut Frame<'_>,
        dst_is_vip: bool,
    ) -> Verdict {
        let ours = |r: DropReason| {
            if dst_is_vip {
                Verdict::Drop(r)
            } else {
                Verdict::Pass
            }
        };
        let ip_off = f.start + ETH_LEN;
        let end = f.start + f.len;
        let (outer_src, outer_dst, icmp_off, ip_len) = {
            let ip = Ipv4Packet::new_unchecked(&f.buf[ip_off..end]);
            (
                ip.src_addr(),
                ip.dst_addr(),
                ip_off + usize::from(ip.header_len()),
                usize::from(ip.total_len()),
            )
        };
        let icmp_end = ip_off + ip_len;
        let ttl = f.buf[ip_off + 8];
        let Ok(icmp) = Icmpv4Packet::new_checked(&f.buf[icmp_off..icmp_end]) else {
            return ours(DropReason::Malformed);
        };
        if dst_is_vip
            && icmp.msg_type() == Icmpv4Message::EchoRequest
            && !snap.host.is_local(outer_dst)
        {
            return self.echo_reply(
                snap,
                f,
                (outer_src, outer_dst),
                (ip_off, icmp_off, icmp_end),
            );
        }
        if !icmp.is_error() {
            return Verdict::Pass;
        }
        // The quoted packet: its IP header and at least 8 bytes of L4.
        let inner_off = icmp_off + 8;
        let q = &f.buf[inner_off..icmp_end];
        if q.len() < IPV4_LEN || q[0] >> 4 != 4 {
            return ours(DropReason::IcmpUnmatched);
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        if ihl < IPV4_LEN || q.len() < ihl + 8 {
            return ours(DropReason::IcmpUnmatched);
        }
        let inner = Ipv4Packet::new_unchecked(q);
        let Some(protocol) = l4_protocol(inner.next_header()) else {
            return ours(DropReason::IcmpUnmatched);
        };
        let isrc = SocketAddrV4::new(inner.src_addr(), u16::from_be_bytes([q[ihl], q[ihl + 1]]));
        let idst = SocketAddrV4::new(
            inner.dst_addr(),
            u16::from_be_bytes([q[ihl + 2], q[ihl + 3]]),
        );

        // (a) About a packet the VIP sent to a client: goes to the real server.
        if dst_is_vip && *isrc.ip() == outer_dst && snap.service(protocol, isrc).is_some() {
            let key = FlowKey::new(protocol, idst, isrc);
            let c = {
                let shard = self.shard_of(protocol, idst).lock();
                shard.find_in(&key).map(|s| *shard.get(s))
            };
            let Some(c) = c.filter(|c| !Self::is_dead(snap, c, now)) else {
                return Verdict::Drop(DropReason::IcmpUnmatched);
            };
            if ttl <= 1 {
                // No ICMP error about an ICMP error (RFC 1122 § 3.2.2).
                return Verdict::Drop(DropReason::TtlExceeded);
            }
            let rip = *c.raddr.ip();
            let Some(hop) = snap.route(rip) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            return match c.method {
                Method::Nat => {
                    rewrite_icmp(
                        f.buf,
                        ip_off,
                        icmp_off,
                        inner_off,
                        icmp_end,
                        Endpoint::Dst,
                        c.raddr,
                        Endpoint::Src,
                    );
                    forward(f, ip_off, hop)
                }
                Method::Dr => forward(
                    f,
                    ip_off,
                    Hop {
                        ifindex: hop.ifindex,
                        next_hop: rip,
                    },
                ),
                Method::Tun => self.encapsulate(snap, now, f, ip_off, ip_len, rip, hop),
            };
        }
        // (b) From a NAT real server about a client's packet: back to the client.
        if *idst.ip() == outer_src && snap.is_nat_real(protocol, idst) {
            let key = FlowKey::new(protocol, isrc, idst);
            let c = {
                let shard = self.shard_of(protocol, isrc).lock();
                shard.find_reply(&key).map(|s| *shard.get(s))
            };
            let Some(c) = c.filter(|c| !Self::is_dead(snap, c, now)) else {
                return Verdict::Drop(DropReason::IcmpUnmatched);
            };
            if ttl <= 1 {
                return Verdict::Drop(DropReason::TtlExceeded);
            }
            let Some(hop) = snap.route(*c.client.ip()) else {
                return Verdict::Drop(DropReason::NoRoute);
            };
            rewrite_icmp(
                f.buf,
                ip_off,
                icmp_off,
                inner_off,
                icmp_end,
                Endpoint::Src,
                c.vaddr,
                Endpoint::Dst,
            );
            return forward(f, ip_off, hop);
        }
        ours(DropReason::IcmpUnmatched)
    }

    // ---- timers and listings -------------------------------------------------------

    /// When the driver should next call [`Director::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.entries() == 0 && self.templates.iter().all(|t| lock(t).is_empty()) {
            return None;
        }
        let last = Duration::from_millis(self.last_sweep_ms.load(Ordering::Relaxed));
        Some(self.base + last + SWEEP_INTERVAL)
    }

    /// Expires entries: a bounded number of slots per shard and one
    /// template shard per call.
    pub fn handle_timeout(&self, now: Instant) {
        let now = self.now_ms(now);
        self.last_sweep_ms.store(now, Ordering::Relaxed);
        let snap = self.snapshot.load();
        let mut dead = Vec::new();
        let mut tombstoned = Vec::new();
        for shard in self.shards.iter() {
            {
                let mut s = shard.lock();
                s.sweep(
                    SWEEP_BUDGET,
                    |c| {
                        if Self::is_tombstone(c) {
                            return c.expires <= now;
                        }
                        if !Self::is_dead(&snap, c, now) {
                            return false;
                        }
                        if c.protocol == Protocol::Tcp && c.expires > now {
                            // Dead by epoch (its server was reset): released
                            // now, kept as a tombstone so the flow's next
                            // packet still counts as real_server_reset.
                            tombstoned.push(*c);
                            c.flags = (c.flags & !flags::TEMPLATE) | flags::TOMBSTONE;
                            c.expires = now + TOMBSTONE_MS;
                            return false;
                        }
                        true
                    },
                    |c| dead.push(c),
                );
            }
            // Released outside the conn shard lock: template locks are taken
            // after conn locks or alone, never before.
            for c in dead.drain(..).chain(tombstoned.drain(..)) {
                self.reclaim(&snap, &c, now);
            }
        }
        let i = self.template_cursor.fetch_add(1, Ordering::Relaxed) % TEMPLATE_SHARDS;
        let mut t = lock(&self.templates[i]);
        t.retain(|_, tpl| {
            let keep = tpl.conns > 0 || tpl.expires > now;
            if !keep {
                if let Some(s) = snap.real(tpl.real) {
                    s.templates.fetch_sub(1, Ordering::Relaxed);
                }
                self.template_count.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }

    /// The live table, templates included, whole (tests, benches): see
    /// [`Self::connections_part`] for what `rvs conns` reads.
    pub fn connections(&self, now: Instant) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        for part in 0..self.connection_parts() {
            self.connections_part(part, now, &mut out);
        }
        out
    }

    /// How many parts [`Self::connections_part`] splits the table into:
    /// each connection shard, then each template shard.
    pub fn connection_parts(&self) -> usize {
        self.shards.len() + self.templates.len()
    }

    /// Appends the live entries of one part of the table to `out`. The
    /// control plane lists the table part by part (`rvs conns`), so that
    /// what it holds at a time is one shard's worth, not the whole table,
    /// and each shard's lock is held only while that shard is copied.
    /// Parts past the last append nothing.
    pub fn connections_part(&self, part: usize, now: Instant, out: &mut Vec<ConnInfo>) {
        let now_ms = self.now_ms(now);
        let snap = self.snapshot.load();
        if let Some(shard) = self.shards.get(part) {
            shard.lock().for_each(|c| {
                if Self::is_dead(&snap, c, now_ms) {
                    return;
                }
                out.push(ConnInfo {
                    protocol: c.protocol,
                    state: match c.protocol {
                        Protocol::Tcp => TcpState::from_u8(c.state).name(),
                        Protocol::Udp => "UDP",
                    },
                    expires_in: Duration::from_millis(c.expires - now_ms),
                    client: c.client,
                    vaddr: c.vaddr,
                    raddr: c.raddr,
                    template: false,
                });
            });
            return;
        }
        let Some(t) = self.templates.get(part - self.shards.len()) else {
            return;
        };
        for (k, tpl) in lock(t).iter() {
            let alive = tpl.conns > 0 || tpl.expires > now_ms;
            if !alive {
                continue;
            }
            out.push(ConnInfo {
                protocol: k.protocol,
                // IPVS shows a template that controls connections as
                // ASSURED, an idle one as NONE.
                state: if tpl.conns > 0 { "ASSURED" } else { "NONE" },
                expires_in: Duration::from_millis(if tpl.conns > 0 {
                    tpl.timeout_ms
                } else {
                    tpl.expires - now_ms
                }),
                client: SocketAddrV4::new(k.client_net, 0),
                vaddr: k.vaddr,
                raddr: tpl.raddr,
                template: true,
            });
        }
    }

    /// Bytes held by the connection table (slabs and indexes).
    pub fn table_memory(&self) -> usize {
        self.shards.iter().map(|s| s.lock().memory()).sum()
    }

    /// Current policy for a real server leaving: used by the control plane.
    pub fn on_down_policy(&self, service: ServiceKey) -> ConnPolicy {
        self.snapshot
            .load()
            .services
            .iter()
            .find(|s| s.key == service)
            .map_or(ConnPolicy::Keep, |s| s.config.on_down)
    }
}

fn transmit(f: &Frame<'_>, hop: Hop) -> Verdict {
    Verdict::Transmit(Transmit {
        ifindex: hop.ifindex,
        next_hop: hop.next_hop,
        dst_mac: None,
        start: f.start,
        len: f.len,
        offload: f.offload,
    })
}

/// Completes a partial L4 checksum in software (the field already holds
/// the pseudo-header sum, so summing from `csum_start` gives the total).
fn complete_checksum(f: &mut Frame<'_>) {
    let start = f.start + usize::from(f.offload.csum_start);
    let field = start + usize::from(f.offload.csum_offset);
    let end = f.start + f.len;
    if field + 2 > end {
        return;
    }
    let sum = !checksum::data(&f.buf[start..end]);
    f.buf[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    f.offload.needs_csum = false;
}

/// Sends on a packet the director forwards (not one it makes up): one hop
/// less for the IPv4 packet at `ip`, whose TTL was checked to be above 1.
#[inline(always)]
fn forward(f: &mut Frame<'_>, ip: usize, hop: Hop) -> Verdict {
    decrement_ttl(f.buf, ip);
    transmit(f, hop)
}

/// One hop less for the IPv4 packet at `ip`, with the header checksum
/// updated in place. TUN calls it on the inner header before wrapping it.
#[inline(always)]
fn decrement_ttl(buf: &mut [u8], ip: usize) {
    let Some(h) = buf
        .get_mut(ip..ip + IPV4_LEN)
        .and_then(|h| <&mut [u8; IPV4_LEN]>::try_from(h).ok())
    else {
        return;
    };
    h[8] = h[8].saturating_sub(1);
    let check = checksum::ttl_decremented(u16::from_be_bytes([h[10], h[11]]));
    h[10..12].copy_from_slice(&check.to_be_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Src,
    Dst,
}

/// Rewrites the source or destination address and port of the IPv4 +
/// TCP/UDP packet `l4`, fixing both checksums incrementally (RFC 1624). A
/// partial L4 checksum holds only the pseudo-header sum: the address
/// changes it, the port (covered later by whoever completes it) does not.
#[inline(always)]
fn rewrite_l4(buf: &mut [u8], l4: &L4, partial: bool, which: Endpoint, to: SocketAddrV4) {
    let (addr_off, port_off) = match which {
        Endpoint::Src => (12, 0),
        Endpoint::Dst => (16, 2),
    };
    let csum_off = match l4.protocol {
        Protocol::Tcp => 16,
        Protocol::Udp => 6,
    };
    // Fixed-size views of the two headers: constant offsets inside need no
    // further bounds checks. The parser checked both lengths (IPv4 header,
    // TCP ≥ 20 or UDP 8 bytes), so the early returns cannot happen.
    let (front, back) = buf.split_at_mut(l4.l4);
    let (Some(ip), Some(hdr)) = (
        front
            .get_mut(l4.ip..l4.ip + IPV4_LEN)
            .and_then(|h| <&mut [u8; IPV4_LEN]>::try_from(h).ok()),
        back.get_mut(..8)
            .and_then(|h| <&mut [u8; 8]>::try_from(h).ok()),
    ) else {
        return;
    };
    let old_addr = u32::from_be_bytes([
        ip[addr_off],
        ip[addr_off + 1],
        ip[addr_off + 2],
        ip[addr_off + 3],
    ]);
    let new_addr = u32::from(*to.ip());
    let old_port = u16::from_be_bytes([hdr[port_off], hdr[port_off + 1]]);
    let new_port = to.port();
    ip[addr_off..addr_off + 4].copy_from_slice(&new_addr.to_be_bytes());
    hdr[port_off..port_off + 2].copy_from_slice(&new_port.to_be_bytes());
    let check = u16::from_be_bytes([ip[10], ip[11]]);
    let check = checksum::update_u32(check, old_addr, new_addr);
    ip[10..12].copy_from_slice(&check.to_be_bytes());
    // The TCP checksum sits past the first 8 bytes of the header.
    let Some(field) = back.get_mut(csum_off..csum_off + 2) else {
        return;
    };
    let mut c = u16::from_be_bytes([field[0], field[1]]);
    c = match (partial, l4.protocol) {
        (true, _) => checksum::update_partial_u32(c, old_addr, new_addr),
        (false, Protocol::Tcp) => {
            checksum::update_u32_u16(c, old_addr, new_addr, old_port, new_port)
        }
        (false, Protocol::Udp) => {
            let c = checksum::update_udp_u32(c, old_addr, new_addr);
            checksum::update_udp_u16(c, old_port, new_port)
        }
    };
    field.copy_from_slice(&c.to_be_bytes());
}

/// Rewrites an ICMP error in flight through NAT: the outer address
/// (`outer`), and the same endpoint mirrored in the quoted packet
/// (`inner`), then refreshes the quoted IP checksum, the ICMP checksum and
/// the outer IP checksum.
#[allow(clippy::too_many_arguments)]
fn rewrite_icmp(
    buf: &mut [u8],
    ip_off: usize,
    icmp_off: usize,
    inner_off: usize,
    icmp_end: usize,
    outer: Endpoint,
    to: SocketAddrV4,
    inner: Endpoint,
) {
    let oa = ip_off + if outer == Endpoint::Src { 12 } else { 16 };
    buf[oa..oa + 4].copy_from_slice(&to.ip().octets());
    {
        let mut p = Ipv4Packet::new_unchecked(&mut buf[ip_off..icmp_off]);
        p.fill_checksum();
    }
    let ihl = usize::from(buf[inner_off] & 0x0f) * 4;
    let ia = inner_off + if inner == Endpoint::Src { 12 } else { 16 };
    buf[ia..ia + 4].copy_from_slice(&to.ip().octets());
    let ip_port = inner_off + ihl + if inner == Endpoint::Src { 0 } else { 2 };
    buf[ip_port..ip_port + 2].copy_from_slice(&to.port().to_be_bytes());
    {
        let mut p = Ipv4Packet::new_unchecked(&mut buf[inner_off..inner_off + ihl]);
        p.fill_checksum();
    }
    let mut icmp = Icmpv4Packet::new_unchecked(&mut buf[icmp_off..icmp_end]);
    icmp.fill_checksum();
}
