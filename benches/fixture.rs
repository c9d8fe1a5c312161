//! The director fixture shared by `benches/director.rs` and
//! `examples/handle_loop.rs`: one interface (192.0.2.1/24, default via
//! .254), one TCP service on 203.0.113.10:80 with `servers` real servers,
//! and a TCP frame builder.

use std::net::{Ipv4Addr, SocketAddrV4};

use rvs::core::config::{Config, Method, Protocol, RealServerConfig, SchedulerKind, ServiceConfig};
use rvs::core::director::{Director, Frame, Offload, Verdict, HEADROOM};
use rvs::core::host::{HostView, Interface, Route};
use rvs::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};
use rvs::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use rvs::wire::tcp::{flags, TcpPacket};

pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

pub fn host() -> HostView {
    HostView {
        interfaces: vec![Interface {
            index: 2,
            name: "eth0".into(),
            mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            mtu: 1500,
            addrs: vec![(Ipv4Addr::new(192, 0, 2, 1), 24)],
        }],
        routes: vec![Route {
            dst: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 254)),
            ifindex: 2,
        }],
        local_addrs: vec![Ipv4Addr::new(192, 0, 2, 1)],
    }
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
    buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
    let mut frame = Frame {
        buf,
        start: HEADROOM,
        len: input.len(),
        ifindex: 2,
        offload: Offload::default(),
    };
    d.handle(now, &mut frame)
}
