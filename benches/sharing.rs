//! Why one sharded connection table and not one table per worker: two
//! threads forwarding established NAT flows (both directions) through one
//! shared `Director` against two threads each with a `Director` of its own
//! (the per-worker design, with no sharing at all), and one thread alone.
//! If the shared table costs little per packet over private ones, the
//! sharded table is the better design: it needs no flow-consistent steering,
//! which AF_PACKET's fanout hash cannot give NAT (the reply's addresses
//! differ from the request's, so the two directions hash apart).
//! Run: `cargo bench --bench sharing`.
//!
//! Measured 2026-12-02 (2 cores, a compiler running beside it): 1 thread
//! 215 ns per packet, 2 threads on one table 255 ns each, 2 threads with a
//! table each 220 ns: sharing costs ~16 % per packet here, where both
//! threads hit all 64 shards all the time (cache lines of the shard locks
//! move between cores; no lock waits). Per-worker tables would need a
//! fanout program keyed on the client endpoint (PACKET_FANOUT_CBPF: the
//! source of a request, the destination of a reply) — not built yet.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion};

// Shared with benches/director.rs, which uses more of it.
#[allow(dead_code)]
#[path = "fixture.rs"]
mod fixture;
use fixture::{config, host, run, run_with, tcp_frame, VIP};
use rvs::core::config::Method;
use rvs::core::service::RuntimeState;
use rvs::core::Director;
use rvs::wire::tcp::flags;

/// Flows per thread, each sent in and replied to in turn.
const FLOWS: u32 = 1024;

fn director() -> Arc<Director> {
    Arc::new(Director::new(
        Arc::new(config(Method::Nat, 3)),
        Arc::new(host()),
        &RuntimeState::default(),
        Instant::now(),
    ))
}

/// Opens `FLOWS` connections from clients of thread `t` and returns the
/// frames of both directions (client ACK in, real-server ACK back).
fn flows(d: &Director, t: u32) -> Vec<Vec<u8>> {
    let vip = SocketAddrV4::new(VIP, 80);
    let now = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut frames = Vec::new();
    for i in 0..FLOWS {
        let client = SocketAddrV4::new(
            Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + t * 16 + i / 256),
            1024 + (i % 256) as u16,
        );
        run(d, now, &mut buf, &tcp_frame(client, vip, flags::SYN));
        frames.push(tcp_frame(client, vip, flags::ACK));
    }
    let conns = d.connections(now);
    for c in conns.iter().filter(|c| {
        let first = u32::from(Ipv4Addr::new(198, 51, 100, 0)) + t * 16;
        (first..first + 16).contains(&u32::from(*c.client.ip()))
    }) {
        frames.push(tcp_frame(c.raddr, c.client, flags::ACK));
    }
    frames
}

/// `iters` packets on each of `directors.len()` threads at once; the time
/// of the slowest thread.
fn parallel(directors: &[Arc<Director>], frames: &[Vec<Vec<u8>>], iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(directors.len()));
    std::thread::scope(|s| {
        let handles: Vec<_> = directors
            .iter()
            .zip(frames)
            .enumerate()
            .map(|(w, (d, fr))| {
                let barrier = barrier.clone();
                s.spawn(move || {
                    // As the packet workers do: per-packet counters in
                    // this thread's own cache line.
                    rvs::core::counters::set_worker_slot(w);
                    let mut buf = vec![0u8; 2048];
                    let now = Instant::now();
                    let snap = d.snapshot();
                    barrier.wait();
                    let t0 = Instant::now();
                    for i in 0..iters {
                        let f = &fr[(i as usize) % fr.len()];
                        black_box(run_with(d, &snap, now, &mut buf, f));
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

fn sharing(c: &mut Criterion) {
    let shared = director();
    let shared_frames = vec![flows(&shared, 0), flows(&shared, 1)];
    let own = [director(), director()];
    let own_frames = vec![flows(&own[0], 0), flows(&own[1], 1)];
    let mut g = c.benchmark_group("nat_established_both_directions");
    g.bench_function("1_thread", |b| {
        b.iter_custom(|iters| parallel(std::slice::from_ref(&shared), &shared_frames[..1], iters))
    });
    g.bench_function("2_threads_shared_table", |b| {
        b.iter_custom(|iters| parallel(&[shared.clone(), shared.clone()], &shared_frames, iters))
    });
    g.bench_function("2_threads_table_each", |b| {
        b.iter_custom(|iters| parallel(&own, &own_frames, iters))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = sharing
}
criterion_main!(benches);
