//! Per-packet cost of `Director::handle` (established and new flows, each
//! method), the connection table at 10 k and 1 M entries (insert, lookup,
//! expire), scheduler decisions at 3/100/1000 servers, route lookups with
//! 2 and 1002 routes, connection-table memory per entry. Run: `cargo bench --bench director`.
//!
//! Each iteration copies the input frame into the buffer first (the
//! director rewrites in place); that copy (54 bytes) is part of the figure.
//! Frames are built before the timed loops.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};

#[path = "fixture.rs"]
mod fixture;
use fixture::{config, host, run, run_with, tcp_frame, Churn, VIP};
use rvs::core::config::{Method, SchedulerKind};
use rvs::core::director::Verdict;
use rvs::core::host::{Route, RouteTable};
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
        let snap = d.snapshot();
        c.bench_function(&format!("established/{}/in", method.as_str()), |b| {
            b.iter(|| black_box(run_with(&d, &snap, t0, &mut buf, black_box(&ack))))
        });
        if method == Method::Nat {
            let conns = d.connections(t0);
            let rs = conns[0].raddr;
            let reply = tcp_frame(rs, client, flags::ACK);
            c.bench_function("established/nat/reply", |b| {
                b.iter(|| black_box(run_with(&d, &snap, t0, &mut buf, black_box(&reply))))
            });
        }
    }
}

/// Times `ch.syns` only: building the frames and expiring the ring's flows
/// between passes stay outside the measurement.
fn time_syns(ch: &mut Churn, iters: u64) -> Duration {
    let mut left = iters;
    let mut t = Duration::ZERO;
    while left > 0 {
        let start = Instant::now();
        let (n, forwarded) = ch.syns(left);
        t += start.elapsed();
        assert_eq!(forwarded, n, "every SYN opens a flow");
        left -= n;
        ch.recycle();
    }
    t
}

/// Ring of new clients per pass (see `fixture::Churn`).
const RING: u32 = 4096;

fn new_flow(c: &mut Criterion) {
    // A SYN to a table of ~100 k entries: lookup miss, scheduling (wlc over
    // 3 servers), insert (both indexes for NAT), forwarding.
    for method in [Method::Nat, Method::Dr, Method::Tun] {
        let mut ch = Churn::new(method, 100_000, RING);
        c.bench_function(&format!("new_flow/{}", method.as_str()), |b| {
            b.iter_custom(|iters| time_syns(&mut ch, iters))
        });
    }
}

fn label(n: u32) -> String {
    if n >= 1_000_000 {
        format!("{}M", n / 1_000_000)
    } else {
        format!("{}k", n / 1000)
    }
}

/// The connection table through the Director API (NAT: both indexes),
/// at 10 k and 1 M entries: insert (a new flow into a table of N),
/// lookup (an established packet of a flow picked across the N), expire
/// (`handle_timeout` reclaiming a table of N, per entry).
fn conntrack(c: &mut Criterion) {
    let vip = SocketAddrV4::new(VIP, 80);
    for n in [10_000u32, 1_000_000] {
        let mut ch = Churn::new(Method::Nat, n, RING);
        c.bench_function(&format!("conntrack/insert/{}", label(n)), |b| {
            b.iter_custom(|iters| time_syns(&mut ch, iters))
        });
        // Up to 64 k flows spread over the whole table, visited in turn.
        let frames: Vec<Vec<u8>> = (0..n.min(65_536))
            .map(|k| {
                let i = u64::from(k) * u64::from(n) / u64::from(n.min(65_536));
                tcp_frame(fixture::client(u32::try_from(i).unwrap()), vip, flags::ACK)
            })
            .collect();
        let mut buf = vec![0u8; 2048];
        let mut k = 0;
        let snap = ch.d.snapshot();
        c.bench_function(&format!("conntrack/lookup/{}", label(n)), |b| {
            b.iter(|| {
                k = (k + 1) % frames.len();
                black_box(run_with(&ch.d, &snap, ch.now, &mut buf, &frames[k]))
            })
        });
    }
    conntrack_expire();
}

/// Expiry cost per entry: a table of N flows all past their timeout,
/// `handle_timeout` called (as the driver does, every `SWEEP_INTERVAL`)
/// until it is empty. Printed like `memory`: filling 1 M entries per
/// sample would make criterion's sampling take minutes.
fn conntrack_expire() {
    let vip = SocketAddrV4::new(VIP, 80);
    for n in [10_000u32, 1_000_000] {
        let mut per_entry = Vec::new();
        let mut calls = 0;
        for _ in 0..3 {
            let t0 = Instant::now();
            let d = Director::new(
                Arc::new(config(Method::Nat, 3)),
                Arc::new(host()),
                &RuntimeState::default(),
                t0,
            );
            let mut buf = vec![0u8; 2048];
            for i in 0..n {
                run(
                    &d,
                    t0,
                    &mut buf,
                    &tcp_frame(fixture::client(i), vip, flags::SYN),
                );
            }
            assert_eq!(d.entries(), n as usize);
            // Past SYN_RECV's 60 s.
            let later = t0 + Duration::from_secs(61);
            calls = 0;
            let start = Instant::now();
            while d.entries() > 0 {
                d.handle_timeout(later);
                calls += 1;
            }
            per_entry.push(start.elapsed().as_secs_f64() * 1e9 / f64::from(n));
        }
        per_entry.sort_by(f64::total_cmp);
        println!(
            "conntrack/expire/{}: {:.1} ns per entry (median of 3, min {:.1}; {} handle_timeout calls)",
            label(n),
            per_entry[1],
            per_entry[0],
            calls
        );
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

/// The route lookup every forwarded packet makes: the test network's host
/// (one connected /24, a default route), and the same with 1000 more /24s
/// (a director fed by a routing daemon), for addresses that hit a /24, the
/// connected subnet and the default route in turn.
fn routes(c: &mut Criterion) {
    for extra in [0u32, 1000] {
        let mut h = host();
        h.routes.extend((0..extra).map(|i| Route {
            dst: Ipv4Addr::from(0x0a00_0000 + (i << 8)),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 253)),
            ifindex: 2,
        }));
        let t = RouteTable::new(&h);
        let dsts = [
            Ipv4Addr::new(10, 2, 7, 1),
            Ipv4Addr::new(192, 0, 2, 11),
            Ipv4Addr::new(198, 51, 100, 2),
        ];
        let mut k = 0usize;
        c.bench_function(&format!("route/{}", extra + 2), |b| {
            b.iter(|| {
                k = (k + 1) % dsts.len();
                black_box(t.route(black_box(dsts[k])))
            })
        });
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
    targets = established, new_flow, conntrack, schedulers, routes, memory
}
criterion_main!(benches);
