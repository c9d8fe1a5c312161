//! A fixed number of `Director::handle` calls for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/handle_loop nat 100000`
//! and divide the total `Ir` by the count (benches/README.md). Instruction
//! counts do not depend on what else the machine is doing, unlike times.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use rvs::core::config::{Config, Method, Protocol, RealServerConfig, SchedulerKind, ServiceConfig};
use rvs::core::director::{Frame, Offload, Verdict, HEADROOM};
use rvs::core::host::{HostView, Interface, Route};
use rvs::core::service::RuntimeState;
use rvs::core::Director;
use rvs::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};
use rvs::wire::ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
use rvs::wire::tcp::{flags, TcpPacket};

fn tcp_frame(src: SocketAddrV4, dst: SocketAddrV4, fl: u8) -> Vec<u8> {
    let mut f = vec![0u8; 54];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_ethertype(EtherType::Ipv4);
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
    t.set_header_len(20);
    t.set_flags(fl);
    t.fill_checksum(*src.ip(), *dst.ip());
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let method = match args.next().as_deref() {
        Some("dr") => Method::Dr,
        Some("tun") => Method::Tun,
        _ => Method::Nat,
    };
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let port = if method == Method::Nat { 8080 } else { 80 };
    let vip = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80);
    let mut c = Config::default();
    c.services.push(ServiceConfig {
        name: "web".into(),
        protocol: Protocol::Tcp,
        address: vip,
        scheduler: SchedulerKind::Wlc,
        persistence: None,
        on_remove: Default::default(),
        on_down: Default::default(),
        sorry_server: None,
        quorum: 0,
        health_check: None,
        real_servers: (0..3u8)
            .map(|i| RealServerConfig {
                address: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 11 + i), port),
                weight: 1,
                method,
                health_check: None,
                max_connections: 0,
                min_connections: 0,
            })
            .collect(),
    });
    let host = HostView {
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
    };
    let t0 = Instant::now();
    let d = Director::new(Arc::new(c), Arc::new(host), &RuntimeState::default(), t0);
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40000);
    let mut buf = vec![0u8; 2048];
    let mut run = |input: &[u8]| {
        buf[HEADROOM..HEADROOM + input.len()].copy_from_slice(input);
        let mut f = Frame {
            buf: &mut buf,
            start: HEADROOM,
            len: input.len(),
            ifindex: 2,
            offload: Offload::default(),
        };
        d.handle(t0, &mut f)
    };
    assert!(matches!(
        run(&tcp_frame(client, vip, flags::SYN)),
        Verdict::Transmit(_)
    ));
    let ack = tcp_frame(client, vip, flags::ACK);
    let mut sent = 0u32;
    for _ in 0..n {
        if matches!(run(&ack), Verdict::Transmit(_)) {
            sent += 1;
        }
    }
    println!("{} packets forwarded ({})", sent, method.as_str());
}
