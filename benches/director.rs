//! Per-packet cost of `Director::handle` (established and new flows, each
//! method), scheduler decisions at 3/100/1000 servers, connection-table
//! memory per entry. Run: `cargo bench --bench director`.
//!
//! Each iteration copies the input frame into the buffer first (the
//! director rewrites in place); that copy (~74 bytes) is part of the figure.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};

#[path = "fixture.rs"]
mod fixture;
use fixture::{config, host, run, tcp_frame, VIP};
use rvs::core::config::{Method, SchedulerKind};
use rvs::core::director::Verdict;
use rvs::core::sched::{self, ServerLoad, ServerSlot};
use rvs::core::service::RuntimeState;
use rvs::core::Director;
use rvs::wire::tcp::flags;

fn established(c: &mut Criterion) {
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40000);
    let vip = SocketAddrV4::new(VIP, 80);
    for method in [Method::Nat, Method::Dr, Method::Tun] {
        let t0 = Instant::now();
        let d = Director::new(
            Arc::new(config(method, 3)),
            Arc::new(host()),
            &RuntimeState::default(),
            t0,
        );
        let mut buf = vec![0u8; 2048];
        let syn = tcp_frame(client, vip, flags::SYN);
        assert!(matches!(run(&d, t0, &mut buf, &syn), Verdict::Transmit(_)));
        let ack = tcp_frame(client, vip, flags::ACK);
        c.bench_function(&format!("established/{}/in", method.as_str()), |b| {
            b.iter(|| black_box(run(&d, t0, &mut buf, black_box(&ack))))
        });
        if method == Method::Nat {
            let conns = d.connections(t0);
            let rs = conns[0].raddr;
            let reply = tcp_frame(rs, client, flags::ACK);
            c.bench_function("established/nat/reply", |b| {
                b.iter(|| black_box(run(&d, t0, &mut buf, black_box(&reply))))
            });
        }
    }
}

fn new_flow(c: &mut Criterion) {
    let vip = SocketAddrV4::new(VIP, 80);
    for method in [Method::Nat, Method::Dr, Method::Tun] {
        let t0 = Instant::now();
        let d = Director::new(
            Arc::new(config(method, 3)),
            Arc::new(host()),
            &RuntimeState::default(),
            t0,
        );
        let mut buf = vec![0u8; 2048];
        let mut n: u32 = 0;
        let mut syn = tcp_frame(
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 1),
            vip,
            flags::SYN,
        );
        c.bench_function(&format!("new_flow/{}", method.as_str()), |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let client = SocketAddrV4::new(
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + (n >> 16) % 256),
                    (n & 0xffff) as u16 | 1,
                );
                syn = tcp_frame(client, vip, flags::SYN);
                black_box(run(&d, t0, &mut buf, &syn))
            })
        });
        // Keep the table from outliving the bench group.
        d.handle_timeout(t0 + Duration::from_secs(3600));
    }
}

fn schedulers(c: &mut Criterion) {
    for n in [3usize, 100, 1000] {
        let slots: Vec<ServerSlot> = (0..n)
            .map(|i| ServerSlot {
                address: SocketAddrV4::new(Ipv4Addr::from(0xc000_0200 + i as u32), 80),
                weight: 1 + (i % 5) as u32,
            })
            .collect();
        let loads: Vec<ServerLoad> = slots
            .iter()
            .enumerate()
            .map(|(i, s)| ServerLoad {
                weight: s.weight,
                active: (i * 7 % 13) as u32,
                inactive: (i * 3 % 11) as u32,
            })
            .collect();
        for kind in SchedulerKind::ALL {
            let s = sched::build(kind, &slots, 1);
            let mut client = 0u32;
            c.bench_function(&format!("sched/{}/{n}", kind.as_str()), |b| {
                b.iter(|| {
                    client = client.wrapping_add(0x9e37_79b9);
                    black_box(s.schedule(black_box(&loads), Ipv4Addr::from(client)))
                })
            });
        }
    }
}

fn memory(_c: &mut Criterion) {
    // Bytes per entry at 1 M connections, table overhead included.
    for method in [Method::Nat, Method::Dr] {
        let t0 = Instant::now();
        let d = Director::new(
            Arc::new(config(method, 3)),
            Arc::new(host()),
            &RuntimeState::default(),
            t0,
        );
        let mut buf = vec![0u8; 2048];
        let vip = SocketAddrV4::new(VIP, 80);
        for n in 0..1_000_000u32 {
            let client =
                SocketAddrV4::new(Ipv4Addr::from(0xc633_6400 + (n >> 16)), (n & 0xffff) as u16);
            let syn = tcp_frame(client, vip, flags::SYN);
            run(&d, t0, &mut buf, &syn);
        }
        println!(
            "memory/{}: {} entries, {:.1} bytes per entry",
            method.as_str(),
            d.entries(),
            d.table_memory() as f64 / d.entries() as f64
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = established, new_flow, schedulers, memory
}
criterion_main!(benches);
