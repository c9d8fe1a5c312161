//! `rvs tunnel-endpoint` in a real namespace: IP-in-IP packets crafted on the
//! director are decapsulated on rs1 and reach a socket bound to the VIP;
//! replies go straight to the client through the router; packets for other
//! inner destinations are counted and dropped.

mod common;

use std::time::Duration;

use common::{wait_until, Daemon, Topology, VIP};

const T: Duration = Duration::from_secs(5);

/// `ipip_send.py OUTER_SRC OUTER_DST INNER_SRC INNER_DST udp|syn SPORT DPORT PAYLOAD`:
/// sends one IP-in-IP packet through a raw IPPROTO_RAW socket.
const IPIP_SEND: &str = r#"
import socket, struct, sys
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def ipv4(src, dst, proto, payload, ident):
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, 0x4000, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
osrc, odst, isrc, idst, kind, sport, dport, payload = sys.argv[1:9]
sport, dport, payload = int(sport), int(dport), payload.encode()
if kind == "udp":
    l4, proto = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload, 17
elif kind == "syn":
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, 0x02, 65535, 0, 0)
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(isrc), socket.inet_aton(idst), 0, 6, len(tcp))
    l4, proto = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:], 6
elif kind == "stream":
    # PAYLOAD is the segment count: that many 1000-byte ACK segments of one
    # flow, back to back (no PSH: GRO may merge them), sequence from
    # 1000 * DPORT-independent SPORT so every burst is a fresh range.
    segs = []
    for i in range(int(payload)):
        data = bytes([65 + i % 26]) * 1000
        seq = (sport * 100000 + i * 1000) & 0xffffffff
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 1, 5 << 4, 0x10, 65535, 0, 0) + data
        pseudo = struct.pack("!4s4sBBH", socket.inet_aton(isrc), socket.inet_aton(idst), 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
        segs.append(ipv4(osrc, odst, 4, ipv4(isrc, idst, 6, tcp, 2 + i), 1 + i))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for p in segs:
        s.sendto(p, (odst, 0))
    sys.exit(0)
else:
    sys.exit("kind must be udp, syn or stream")
packet = ipv4(osrc, odst, 4, ipv4(isrc, idst, proto, l4, 2), 1)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s.sendto(packet, (odst, 0))
"#;

/// `udp_listen.py ADDR PORT`: prints `from IP:PORT PAYLOAD` per datagram.
const UDP_LISTEN: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, (ip, port) = s.recvfrom(65535)
    print("from %s:%d %s" % (ip, port, data.decode("utf-8", "replace")), flush=True)
"#;

fn send_ipip(topo: &Topology, inner_dst: &str, kind: &str, sport: u16, dport: u16, payload: &str) {
    let script = topo.write_file("ipip_send.py", IPIP_SEND);
    let script = script.to_string_lossy().into_owned();
    topo.exec_ok(
        "dir",
        &[
            "python3",
            &script,
            "192.0.2.1",
            "192.0.2.11",
            "198.51.100.2",
            inner_dst,
            kind,
            &sport.to_string(),
            &dport.to_string(),
            payload,
        ],
    );
}

fn start_listener(topo: &Topology, addr: &str, port: u16) -> Daemon {
    let script = topo.write_file("udp_listen.py", UDP_LISTEN);
    let script = script.to_string_lossy().into_owned();
    Daemon::start_command(
        topo,
        "rs1",
        &["python3", "-u", &script, addr, &port.to_string()],
        "ready",
    )
}

#[test]
fn decapsulates_to_the_vip_and_drops_other_destinations() {
    let topo = Topology::new(1);
    let mut endpoint = topo.start_tunnel_endpoint(1, &[VIP]);

    let addrs = topo.exec_ok("rs1", &["ip", "-4", "-o", "addr", "show", "dev", "rvstun0"]);
    assert!(addrs.contains("203.0.113.10/32"), "{addrs}");
    let link = topo.exec_ok("rs1", &["ip", "link", "show", "dev", "rvstun0"]);
    assert!(link.contains(",UP") || link.contains("<UP"), "{link}");
    assert_eq!(
        topo.sysctl_get("rs1", "net.ipv4.conf.rvstun0.rp_filter"),
        "0"
    );
    assert_eq!(topo.sysctl_get("rs1", "net.ipv4.conf.all.rp_filter"), "0");

    let listener = start_listener(&topo, "203.0.113.10", 5353);
    send_ipip(&topo, "203.0.113.10", "udp", 40000, 5353, "hello-vip");
    let seen = wait_until(T, || {
        listener
            .log()
            .contains("from 198.51.100.2:40000 hello-vip")
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "not delivered; listener log:\n{}",
        listener.log()
    );

    // A non-VIP inner destination is dropped by the endpoint, not delivered.
    send_ipip(&topo, "203.0.113.99", "udp", 40001, 5353, "hello-other");

    // TCP: the SYN reaches the HTTP server on 0.0.0.0:80 through the TUN
    // device, and its SYN-ACK leaves from the VIP straight to the client.
    topo.start_http_server(1, 80);
    let synack = topo.nft_counter(
        "cli",
        "prerouting",
        "ip saddr 203.0.113.10 tcp sport 80 tcp flags & (syn | ack) == syn | ack",
    );
    send_ipip(&topo, "203.0.113.10", "syn", 40002, 80, "");
    let replied = wait_until(T, || (synack.packets() > 0).then_some(()));
    assert!(
        replied.is_some(),
        "no SYN-ACK from the VIP reached the client"
    );

    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !listener.log().contains("hello-other"),
        "{}",
        listener.log()
    );
    let status = endpoint.stop();
    assert!(status.success(), "{status}\n{}", endpoint.log());
    let log = endpoint.log();
    assert!(log.contains("not_vip=1"), "{log}");
    assert!(log.contains("delivered=2"), "{log}");
    assert!(log.contains("received=3"), "{log}");
    // Exiting removes the device (and with it the VIP).
    let gone = topo.exec("rs1", &["ip", "link", "show", "dev", "rvstun0"]);
    assert!(!gone.status.success(), "rvstun0 still exists after exit");
}

#[test]
fn segments_of_a_stream_are_merged_before_the_stack() {
    let topo = Topology::new(1);
    let mut endpoint = topo.start_tunnel_endpoint(1, &[VIP]);
    assert_eq!(
        topo.exec_ok("rs1", &["cat", "/sys/class/net/rvstun0/gro_flush_timeout"])
            .trim(),
        "100000"
    );
    // What the real server's stack receives: merged packets count once.
    let seen = topo.nft_counter("rs1", "prerouting", "ip daddr 203.0.113.10 tcp dport 9");
    const SEGMENTS: u64 = 8;
    // A burst may straddle a GRO flush when this machine is busy: try a few,
    // each a new range of the stream; one merged burst proves GRO is on
    // (without it every segment arrives alone, every time).
    let mut merged = false;
    for burst in 0..5u16 {
        let (p0, b0) = (seen.packets(), seen.bytes());
        send_ipip(
            &topo,
            "203.0.113.10",
            "stream",
            41000 + burst,
            9,
            &SEGMENTS.to_string(),
        );
        // Every payload byte arrives, under one 40-byte header per packet.
        let payload = || (seen.bytes() - b0).saturating_sub(40 * (seen.packets() - p0));
        let all = wait_until(T, || (payload() == SEGMENTS * 1000).then_some(()));
        assert!(
            all.is_some(),
            "not every segment arrived: {} payload bytes",
            payload()
        );
        let packets = seen.packets() - p0;
        assert!((1..=SEGMENTS).contains(&packets), "{packets} packets");
        eprintln!("burst {burst}: {SEGMENTS} segments arrived as {packets} packet(s)");
        if packets < SEGMENTS {
            merged = true;
            break;
        }
    }
    assert!(merged, "GRO merged no burst of {SEGMENTS} segments");
    let status = endpoint.stop();
    assert!(status.success(), "{status}\n{}", endpoint.log());
    assert!(endpoint.log().contains("gro=true"), "{}", endpoint.log());
}

#[test]
fn start_takes_over_an_existing_device() {
    let topo = Topology::new(1);
    // A leftover persistent TUN device of the same name is reused…
    topo.exec_ok(
        "rs1",
        &["ip", "tuntap", "add", "dev", "rvstun0", "mode", "tun"],
    );
    topo.exec_ok(
        "rs1",
        &["ip", "addr", "add", "203.0.113.77/32", "dev", "rvstun0"],
    );
    let mut endpoint = topo.start_tunnel_endpoint(1, &[VIP]);
    let addrs = topo.exec_ok("rs1", &["ip", "-4", "-o", "addr", "show", "dev", "rvstun0"]);
    assert!(addrs.contains("203.0.113.10/32"), "{addrs}");
    assert!(
        !addrs.contains("203.0.113.77"),
        "stale address kept: {addrs}"
    );
    assert!(endpoint.stop().success(), "{}", endpoint.log());
    // …and not left persistent.
    let gone = topo.exec("rs1", &["ip", "link", "show", "dev", "rvstun0"]);
    assert!(!gone.status.success(), "rvstun0 still exists after exit");

    // A TAP device of that name cannot be attached as TUN: it is recreated.
    topo.exec_ok(
        "rs1",
        &["ip", "tuntap", "add", "dev", "rvstun0", "mode", "tap"],
    );
    let mut endpoint = topo.start_tunnel_endpoint(1, &[VIP]);
    assert!(endpoint.log().contains("recreating"), "{}", endpoint.log());
    let listener = start_listener(&topo, "203.0.113.10", 5353);
    send_ipip(&topo, "203.0.113.10", "udp", 40000, 5353, "after-recreate");
    let seen = wait_until(T, || {
        listener.log().contains("after-recreate").then_some(())
    });
    assert!(seen.is_some(), "not delivered:\n{}", endpoint.log());
    assert!(endpoint.stop().success(), "{}", endpoint.log());
}

#[test]
fn rejects_bad_arguments() {
    let topo = Topology::new(1);
    let bin = common::rvs_binary().to_string_lossy().into_owned();
    let out = topo.exec("rs1", &[&bin, "tunnel-endpoint"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vip"));
    let out = topo.exec(
        "rs1",
        &[
            &bin,
            "tunnel-endpoint",
            "--vip",
            "203.0.113.10",
            "--device",
            "much-too-long-name",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("device name"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
