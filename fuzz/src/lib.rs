//! Shared pieces of the fuzz targets: a fixed virtual-service table (the
//! one of `src/core/director_tests.rs`), the input format of the
//! `director` target and the invariants every transmitted frame keeps.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rvs::core::config::{
    Config, ConnPolicy, Method, Protocol, RealServerConfig, SchedulerKind, ServiceConfig,
};
use rvs::core::director::{Director, Frame, Offload, Verdict, HEADROOM};
use rvs::core::host::HostView;
use rvs::core::service::RuntimeState;
use rvs::wire::ethernet::EthernetAddress;
use rvs::wire::{ArpPacket, Ipv4Packet};

pub const IFINDEX: u32 = 2;
pub const MAX_CONNECTIONS: u32 = 4;
const TAIL: usize = 128;

fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(a), port)
}

fn host() -> HostView {
    HostView::one_interface(
        IFINDEX,
        EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
        Ipv4Addr::new(192, 0, 2, 1),
        24,
        Ipv4Addr::new(192, 0, 2, 254),
    )
}

fn service(protocol: Protocol, addr: SocketAddrV4, real: SocketAddrV4, m: Method) -> ServiceConfig {
    ServiceConfig {
        name: format!("{addr}"),
        protocol,
        address: addr,
        scheduler: SchedulerKind::Wlc,
        persistence: None,
        on_remove: ConnPolicy::Keep,
        on_down: ConnPolicy::Keep,
        sorry_server: None,
        quorum: 0,
        health_check: None,
        real_servers: vec![RealServerConfig {
            address: real,
            weight: 1,
            method: m,
            health_check: None,
            max_connections: 0,
            min_connections: 0,
        }],
    }
}

/// NAT 203.0.113.10:80/tcp → 192.0.2.11:8080 and :53/udp → :5353, DR
/// 203.0.113.20:80 → 192.0.2.21, TUN 203.0.113.30:80 → 192.0.2.31; a
/// table capped at [`MAX_CONNECTIONS`].
pub fn director(t0: Instant) -> Director {
    let mut c = Config {
        services: vec![
            service(
                Protocol::Tcp,
                sa([203, 0, 113, 10], 80),
                sa([192, 0, 2, 11], 8080),
                Method::Nat,
            ),
            service(
                Protocol::Udp,
                sa([203, 0, 113, 10], 53),
                sa([192, 0, 2, 11], 5353),
                Method::Nat,
            ),
            service(
                Protocol::Tcp,
                sa([203, 0, 113, 20], 80),
                sa([192, 0, 2, 21], 80),
                Method::Dr,
            ),
            service(
                Protocol::Tcp,
                sa([203, 0, 113, 30], 80),
                sa([192, 0, 2, 31], 80),
                Method::Tun,
            ),
        ],
        ..Config::default()
    };
    c.daemon.max_connections = MAX_CONNECTIONS;
    Director::new(Arc::new(c), Arc::new(host()), &RuntimeState::default(), t0)
}

/// Input of the `director` target: records of `[step, len_hi, len_lo,
/// frame…]`. `step & 0x3f` seconds pass before the frame; `step & 0x40`
/// runs the expiry sweep after it; `step & 0x80` marks the frame as a GSO
/// super-frame with a partial checksum.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 3 {
            return None;
        }
        let step = data[0];
        let len = usize::from(u16::from_be_bytes([data[1], data[2]]) % 2048).min(data.len() - 3);
        let frame = &data[3..3 + len];
        data = &data[3 + len..];
        Some((step, frame))
    })
}

/// Encodes one record (used by the seed generator and tests).
pub fn record(step: u8, frame: &[u8]) -> Vec<u8> {
    let mut v = vec![step];
    v.extend_from_slice(&u16::try_from(frame.len()).unwrap().to_be_bytes());
    v.extend_from_slice(frame);
    v
}

/// Runs every record through `Director::handle` and checks the
/// invariants: no panic, every transmitted frame inside the buffer and
/// well formed (ARP that parses, or IPv4 that parses with a valid header
/// checksum), the table within its cap.
pub fn run(data: &[u8]) {
    let t0 = Instant::now();
    let d = director(t0);
    let mut now = t0;
    let mut buf = vec![0u8; HEADROOM + 2048 + TAIL];
    for (step, frame) in records(data) {
        now += Duration::from_secs(u64::from(step & 0x3f));
        buf.fill(0xa5);
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let mut offload = Offload::default();
        if step & 0x80 != 0 {
            offload = Offload {
                needs_csum: true,
                csum_start: 34,
                csum_offset: 16,
                gso_type: 1,
                gso_size: 1448,
                hdr_len: 54,
            };
        }
        let mut f = Frame {
            buf: &mut buf,
            start: HEADROOM,
            len: frame.len(),
            ifindex: IFINDEX,
            offload,
        };
        if let Verdict::Transmit(t) = d.handle(now, &mut f) {
            assert!(t.start + t.len <= buf.len(), "transmit outside the buffer");
            let out = &buf[t.start..t.start + t.len];
            assert!(out.len() >= 14, "runt transmitted");
            match u16::from_be_bytes([out[12], out[13]]) {
                0x0806 => assert!(ArpPacket::new_checked(&out[14..]).is_ok()),
                0x0800 => {
                    let ip = Ipv4Packet::new_checked(&out[14..]).expect("transmitted IPv4 parses");
                    assert!(ip.verify_checksum(), "transmitted IPv4 checksum");
                }
                et => panic!("transmitted ethertype {et:#06x}"),
            }
        }
        assert!(
            d.entries() <= MAX_CONNECTIONS as usize,
            "table over its cap"
        );
        if step & 0x40 != 0 {
            d.handle_timeout(now);
        }
    }
    let _ = d.connections(now);
}
