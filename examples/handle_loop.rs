//! A fixed number of `Director::handle` calls for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/handle_loop nat 100000`
//! and divide the total `Ir` by the count (benches/README.md). Instruction
//! counts do not depend on what else the machine is doing, unlike times.
//!
//! `handle_loop METHOD N` sends N packets of one established flow;
//! `handle_loop METHOD N new` sends N SYNs of new flows into a table of
//! 100 k established ones (`fixture::Churn`, as `new_flow/*` in the bench).
//! The set-up (and, for `new`, the expiry between passes) is counted too:
//! take the difference of two runs, e.g. N = 100000 and 200000, and divide
//! by 100000; `--toggle-collect='*Director::handle'` leaves out the expiry.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Instant;

use rvs::core::config::Method;
use rvs::core::director::Verdict;
use rvs::core::service::RuntimeState;
use rvs::core::Director;
use rvs::wire::tcp::flags;

#[path = "../benches/fixture.rs"]
mod fixture;
use fixture::{config, host, run, run_with, tcp_frame, Churn, VIP};

fn main() {
    let mut args = std::env::args().skip(1);
    let method = match args.next().as_deref() {
        Some("dr") => Method::Dr,
        Some("tun") => Method::Tun,
        _ => Method::Nat,
    };
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    if args.next().as_deref() == Some("new") {
        let mut ch = Churn::new(method, 100_000, 4096);
        let (mut left, mut sent) = (u64::from(n), 0);
        while left > 0 {
            let (k, forwarded) = ch.syns(left);
            left -= k;
            sent += forwarded;
            ch.recycle();
        }
        println!("{} new flows forwarded ({})", sent, method.as_str());
        return;
    }
    let t0 = Instant::now();
    let d = Director::new(
        Arc::new(config(method, 3)),
        Arc::new(host()),
        &RuntimeState::default(),
        t0,
    );
    let vip = SocketAddrV4::new(VIP, 80);
    let client = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), 40000);
    let mut buf = vec![0u8; 2048];
    let syn = tcp_frame(client, vip, flags::SYN);
    assert!(matches!(run(&d, t0, &mut buf, &syn), Verdict::Transmit(_)));
    let ack = tcp_frame(client, vip, flags::ACK);
    let mut sent = 0u32;
    let snap = d.snapshot();
    for _ in 0..n {
        if matches!(
            run_with(&d, &snap, t0, &mut buf, &ack),
            Verdict::Transmit(_)
        ) {
            sent += 1;
        }
    }
    println!("{} packets forwarded ({})", sent, method.as_str());
}
