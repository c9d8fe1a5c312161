//! The floor under any forwarder built on AF_PACKET: rvs's own socket,
//! ring and `sendmmsg` code with no director behind them. Every IPv4 frame
//! to the VIP has its Ethernet addresses rewritten (to `NEXT_MAC`, from the
//! interface's own) and is sent back out where it came in — less work per
//! packet than rvs's DR path (no table, no scheduler, no TTL), the same
//! system calls and the same kernel work per frame.
//!
//! `benches/e2e/run.sh --only floor` runs it in the DR topology and counts
//! what the real server receives. What it delivers bounds what rvs can:
//! the difference between the two is rvs's own code, the difference
//! between it and the kernel's forwarding is the price of the packet
//! socket itself.
//!
//!   afpacket_floor IFACE VIP NEXT_MAC SECONDS
//!
//! Bench tooling, run by hand as root inside a namespace; it stops after
//! SECONDS and prints the frames it forwarded.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rvs::core::director::HEADROOM;
use rvs::datapath::afpacket::{send_frames, Fanout, PacketSocket};
use rvs::datapath::{bpf, ring, system};

const BATCH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: afpacket_floor IFACE VIP NEXT_MAC SECONDS";
    let (Some(iface), Some(vip), Some(next), Some(secs)) = (
        args.get(1),
        args.get(2).and_then(|a| a.parse::<Ipv4Addr>().ok()),
        args.get(3).and_then(|a| system::parse_mac(a)).map(|m| m.0),
        args.get(4).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let host = system::host_view().unwrap_or_else(|e| {
        eprintln!("reading interfaces: {e}");
        std::process::exit(1)
    });
    let Some(ifc) = host.interfaces.iter().find(|i| &i.name == iface) else {
        eprintln!("no interface {iface}");
        std::process::exit(1)
    };
    let prog = bpf::program(&BTreeSet::from([vip]), &BTreeSet::new());
    let mtu = u32::from(ifc.mtu);
    let frames = ring::frames_for(mtu, 32 << 20);
    let mut sock = PacketSocket::open(ifc.index, Fanout::Alone, mtu, frames, 8 << 20, &prog)
        .unwrap_or_else(|e| {
            eprintln!("opening the packet socket: {e}");
            std::process::exit(1)
        });
    let own = ifc.mac.0;
    let vip = vip.octets();
    eprintln!("afpacket_floor: ready");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut taken = Vec::with_capacity(BATCH);
    let mut keep = [false; BATCH];
    let (mut forwarded, mut other) = (0u64, 0u64);
    while Instant::now() < end {
        while taken.len() < BATCH {
            match sock.ring.take() {
                Some(f) => taken.push(f),
                None => break,
            }
        }
        if taken.is_empty() {
            let mut pfd = libc::pollfd {
                fd: sock.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 50) };
            if pfd.revents & libc::POLLERR != 0 {
                let _ = sock.take_error();
            }
            continue;
        }
        for (k, f) in taken.iter().enumerate() {
            let buf = sock.ring.buf_mut(f);
            let frame = &mut buf[HEADROOM..HEADROOM + f.snaplen];
            keep[k] = !f.copied
                && frame.len() >= 34
                && frame[12..14] == [0x08, 0x00]
                && frame[30..34] == vip;
            if keep[k] {
                frame[0..6].copy_from_slice(&next);
                frame[6..12].copy_from_slice(&own);
            }
        }
        let ring = &sock.ring;
        let out = taken
            .iter()
            .zip(keep.iter())
            .filter(|(_, &k)| k)
            .map(|(f, _)| (ring.bytes(f, HEADROOM, f.snaplen), ring.vnet(f)));
        let n = keep[..taken.len()].iter().filter(|&&k| k).count() as u64;
        let refused = send_frames(&sock, out) as u64;
        forwarded += n - refused;
        other += taken.len() as u64 - n;
        for f in taken.drain(..) {
            sock.ring.release(f.slot);
        }
    }
    println!("afpacket_floor: forwarded {forwarded}, not for the VIP {other}");
}
