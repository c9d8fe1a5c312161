//! The director fixture shared by `benches/director.rs` and
//! `examples/handle_loop.rs`: one interface (192.0.2.1/24, default via
//! .254), one TCP service on 203.0.113.10:80 with `servers` real servers,
//! a TCP frame builder, and [`Churn`], the steady state in which new flows
//! are measured.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rvs::core::config::{Config, Method, Protocol, RealServerConfig, SchedulerKind, ServiceConfig};
use rvs::core::director::{Director, Frame, Offload, Verdict, HEADROOM};
use rvs::core::host::HostView;
use rvs::core::service::{RuntimeState, Snapshot};
use rvs::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};
use rvs::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use rvs::wire::tcp::{flags, TcpPacket};

pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub fn host() -> HostView {
    HostView::one_interface(
        2,
        EthernetAddress([2, 0, 0, 0, 0, 1]),
        Ipv4Addr::new(192, 0, 2, 1),
        24,
        Ipv4Addr::new(192, 0, 2, 254),
    )
}

pub fn config(method: Method, servers: usize) -> Config {
    let port = if method == Method::Nat { 8080 } else { 80 };
    let mut c = Config::default();
    c.daemon.max_connections = 50_000_000;
    c.services.push(ServiceConfig {
        name: "web".into(),
        protocol: Protocol::Tcp,
        address: SocketAddrV4::new(VIP, 80),
        scheduler: SchedulerKind::Wlc,
        persistence: None,
        on_remove: Default::default(),
        on_down: Default::default(),
        sorry_server: None,
        forwarding: Method::Nat,
        quorum: 0,
        health_check: None,
        real_servers: (0..servers)
            .map(|i| RealServerConfig {
                address: SocketAddrV4::new(
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 11)) + i as u32),
                    port,
                ),
                weight: 1,
                method,
                health_check: None,
                max_connections: 0,
                min_connections: 0,
            })
            .collect(),
    });
    c
}

pub fn tcp_frame(src: SocketAddrV4, dst: SocketAddrV4, fl: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    {
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(EthernetAddress([2, 0, 0, 0, 0, 1]));
        eth.set_src_addr(EthernetAddress([2, 0, 0, 0, 0, 0xfe]));
        eth.set_ethertype(EtherType::Ipv4);
    }
    Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: 20,
        hop_limit: 64,
        dont_frag: true,
    }
    .emit(&mut Ipv4Packet::new_unchecked(&mut f[14..34]));
    let mut t = TcpPacket::new_unchecked(&mut f[34..]);
    t.set_src_port(src.port());
    t.set_dst_port(dst.port());
    t.set_seq_number(1);
    t.set_ack_number(if fl & flags::ACK != 0 { 1 } else { 0 });
    t.set_header_len(20);
    t.set_flags(fl);
    t.set_window_len(65535);
    t.fill_checksum(*src.ip(), *dst.ip());
    f
}

/// Copies `input` behind the headroom of `buf` and hands it to `d`.
pub fn run(d: &Director, now: std::time::Instant, buf: &mut [u8], input: &[u8]) -> Verdict {
    run_with(d, &d.snapshot(), now, buf, input)
}

/// [`run`] with a snapshot loaded once, as the packet workers do per batch:
/// what the timed loops use.
pub fn run_with(
    d: &Director,
    snap: &Snapshot,
    now: std::time::Instant,
    buf: &mut [u8],
    input: &[u8],
) -> Verdict {
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut frame = Frame {
        buf,
        start: HEADROOM,
        len: input.len(),
        ifindex: 2,
        offload: Offload::default(),
    };
    d.handle_with(snap, now, &mut frame)
}

/// Client endpoint number `i`: 198.51.100.0/24, ports 1024..61024
/// (distinct for `i` below 15 million).
pub fn client(i: u32) -> SocketAddrV4 {
    let port = u16::try_from(1024 + i % 60_000).expect("below 61024");
    SocketAddrV4::new(Ipv4Addr::from(0xc633_6400 + i / 60_000), port)
}

/// A director with `background` ESTABLISHED flows (clients `0..background`)
/// and a ring of SYN frames from further clients: the steady state in which
/// a new flow is measured. Each pass over the ring inserts one new flow per
/// frame; between passes ([`Churn::recycle`], not timed) the clock moves past
/// the SYN_RECV timeout and `handle_timeout` expires the ring's flows, so the
/// table stays between `background` and `background + ring` entries and its
/// slabs and indexes keep their size, as in a loaded director where flows
/// end as fast as they start. ESTABLISHED lasts a year here, so the
/// background outlives any run.
#[derive(Debug)]
pub struct Churn {
    pub d: Director,
    pub now: Instant,
    background: usize,
    ring: Vec<Vec<u8>>,
    pos: usize,
    buf: Vec<u8>,
}

impl Churn {
    pub fn new(method: Method, background: u32, ring: u32) -> Churn {
        let mut c = config(method, 3);
        c.timeouts.tcp_established = Duration::from_secs(365 * 24 * 3600);
        let now = Instant::now();
        let d = Director::new(Arc::new(c), Arc::new(host()), &RuntimeState::default(), now);
        let vip = SocketAddrV4::new(VIP, 80);
        let mut buf = vec![0u8; 2048];
        for i in 0..background {
            for fl in [flags::SYN, flags::ACK] {
                let v = run(&d, now, &mut buf, &tcp_frame(client(i), vip, fl));
                assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
            }
        }
        assert_eq!(d.entries(), background as usize);
        Churn {
            d,
            now,
            background: background as usize,
            ring: (background..background + ring)
                .map(|i| tcp_frame(client(i), vip, flags::SYN))
                .collect(),
            pos: 0,
            buf,
        }
    }

    /// Hands the next SYNs of the ring to the director, at most `max` and
    /// not past the ring's end. Returns (handled, forwarded).
    pub fn syns(&mut self, max: u64) -> (u64, u64) {
        let left = self.ring.len() - self.pos;
        let end = self.pos + usize::try_from(max).unwrap_or(usize::MAX).min(left);
        let mut forwarded = 0;
        let snap = self.d.snapshot();
        for f in &self.ring[self.pos..end] {
            if matches!(
                run_with(&self.d, &snap, self.now, &mut self.buf, f),
                Verdict::Transmit(_)
            ) {
                forwarded += 1;
            }
        }
        let n = (end - self.pos) as u64;
        self.pos = end;
        (n, forwarded)
    }

    /// At the end of the ring: expires the ring's flows (see the type's
    /// docs) and starts the ring again.
    pub fn recycle(&mut self) {
        if self.pos < self.ring.len() {
            return;
        }
        self.pos = 0;
        self.now += Duration::from_secs(61);
        while self.d.entries() > self.background {
            self.d.handle_timeout(self.now);
        }
    }
}
