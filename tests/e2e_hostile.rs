//! Hostile and broken packets end to end (issue 6): while a real client
//! runs a bounded stream of HTTP requests through a VS/NAT VIP, a host on
//! the LAN sends 40 frames of each broken or unwanted kind straight to the
//! director's MAC (AF_PACKET), and the client sends real requests with IP
//! options. Zero legitimate requests may fail, the daemon stays up, and
//! every kind shows up exactly under its drop reason in
//! `rvs services --json` (or under none, for frames that are not rvs's).
//!
//! What each kind maps to, and why:
//!
//! | kind | verdict |
//! |---|---|
//! | Ethernet runt (IPv4 ethertype, < 20 bytes of IP) | `malformed` (too short to say whom it is for) |
//! | truncated IPv4 header, truncated TCP header (to the VIP) | `malformed` |
//! | bad IHL (< 5, or longer than the packet) | `malformed` |
//! | bad total length (past the frame, or below the header) | `malformed` |
//! | bad IP header checksum | `bad_checksum` |
//! | first fragment (MF, offset 0) / later fragment | `fragment`: rvs neither reassembles nor forwards fragments (no state per fragment, so an endless stream of first fragments costs nothing) |
//! | TCP SYN+FIN, TCP without flags | `bad_tcp_flags` |
//! | RST or FIN of an unknown flow | `no_connection` |
//! | TCP to a VIP port not in the table, UDP to an unknown VIP port | `no_service` (not answered: no RST, no ICMP) |
//! | ICMP error to the VIP with a short quote, a quote with bad IHL, a quote of an unknown flow | `icmp_unmatched` |
//! | ICMP error from a NAT real server quoting an unknown flow | `icmp_unmatched` |
//! | ICMP echo to the VIP | not rvs's (`Pass`): the kernel has its copy and answers if the VIP is configured on the director |
//! | ARP requests for other addresses, gratuitous ARP, malformed ARP | not rvs's (`Pass`): only a well-formed request for a VIP is answered |
//! | unknown ethertype, IPv6 | not rvs's (`Pass`) |
//! | IP options (valid: NOP, NOP, NOP, EOL) on a real flow | forwarded: the header is kept as it is and the L4 header found after it; the requests must succeed and the real servers must see the options |

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, Gateway, Topology};

const PER_KIND: u64 = 40;
const LEGIT_REQUESTS: usize = 150;

fn config(topo: &Topology) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    let mut s = format!(
        r#"[daemon]
interfaces = ["eth0"]
control_socket = "{}"
workers = 2

[[virtual_service]]
name = "web"
protocol = "tcp"
address = "203.0.113.10:80"
scheduler = "rr"
forwarding = "nat"
"#,
        sock.display()
    );
    for i in 1..=3 {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\n\n",
            10 + i
        ));
    }
    s.push_str(
        r#"[[virtual_service]]
name = "dns"
protocol = "udp"
address = "203.0.113.10:53"
scheduler = "rr"
[[virtual_service.real_server]]
address = "192.0.2.11:5353"
"#,
    );
    s
}

/// `inject.py DIRECTOR_MAC KIND COUNT`: COUNT frames of KIND from this
/// host's eth0 to the director's MAC. Source 198.51.100.9 (a client that
/// never talks for real), ports vary per frame.
const INJECT: &str = r#"
import random, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
dst = bytes.fromhex(sys.argv[1].replace(":", ""))
kind, count = sys.argv[2], int(sys.argv[3])
src = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
CLI, VIP, RS = "198.51.100.9", "203.0.113.10", "192.0.2.11"
a = socket.inet_aton
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b)//2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def ip(payload, proto=6, src=CLI, dst=VIP, flags=0x4000, ihl=5, fix=True, total=None, opts=b""):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0,
        20 + len(opts) + len(payload) if total is None else total,
        random.randrange(65536), flags, 64, proto, 0, a(src), a(dst)) + opts
    c = csum(h) if fix else (csum(h) ^ 0x5a5a)
    return h[:10] + struct.pack("!H", c) + h[12:] + payload
def tcp(fl, sport, dport=80, src=CLI, dst=VIP):
    h = struct.pack("!HHIIBBHHH", sport, dport, 1000, 1, 0x50, fl, 1000, 0, 0)
    c = csum(a(src) + a(dst) + struct.pack("!BBH", 0, 6, len(h)) + h)
    return h[:16] + struct.pack("!H", c) + h[18:]
def udp(sport, dport):
    return struct.pack("!HHHH", sport, dport, 10, 0) + b"hi"
def icmp(quote, typ=3, code=3):
    h = struct.pack("!BBHI", typ, code, 0, 0) + quote
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]
def arp(op, sha, spa, tha, tpa, hlen=6):
    return struct.pack("!HHBBH", 1, 0x0800, hlen, 4, op) + sha + a(spa) + tha + a(tpa)
def frame(i):
    port = 40000 + i
    if kind == "runt":
        return 0x0800, ip(tcp(2, port))[: i % 20]
    if kind == "truncated":
        # An IP header cut short, or a whole IP header with a TCP header cut short.
        return 0x0800, ip(tcp(2, port))[:19] if i % 2 else ip(tcp(2, port)[:10])
    if kind == "bad_ihl":
        return 0x0800, ip(tcp(2, port), ihl=(3 if i % 2 else 15))
    if kind == "bad_total_length":
        return 0x0800, ip(tcp(2, port), total=(400 if i % 2 else 12))
    if kind == "bad_checksum":
        return 0x0800, ip(tcp(2, port), fix=False)
    if kind == "first_fragment":
        return 0x0800, ip(tcp(2, port) + b"x" * 32, flags=0x2000)
    if kind == "later_fragment":
        return 0x0800, ip(b"y" * 48, flags=(0x2000 if i % 2 else 0) | 185)
    if kind == "syn_fin":
        return 0x0800, ip(tcp(0x03, port))
    if kind == "no_flags":
        return 0x0800, ip(tcp(0x00, port))
    if kind == "rst_unknown":
        return 0x0800, ip(tcp(0x04, port))
    if kind == "fin_unknown":
        return 0x0800, ip(tcp(0x11, port))
    if kind == "port_not_in_table":
        return 0x0800, ip(tcp(0x02, port, dport=81))
    if kind == "udp_unknown_port":
        return 0x0800, ip(udp(port, 9999), proto=17)
    if kind == "icmp_short_quote":
        return 0x0800, ip(icmp(ip(tcp(0x12, 80, port, VIP, CLI), src=VIP, dst=CLI)[:12]), proto=1, src="198.51.100.1")
    if kind == "icmp_unknown_flow":
        q = ip(tcp(0x12, 80, port, VIP, CLI), src=VIP, dst=CLI)[:28]
        return 0x0800, ip(icmp(q, code=4), proto=1, src="198.51.100.1")
    if kind == "icmp_bad_ihl_quote":
        q = bytearray(ip(tcp(0x12, 80, port, VIP, CLI), src=VIP, dst=CLI)[:28]); q[0] = 0x43
        return 0x0800, ip(icmp(bytes(q)), proto=1, src="198.51.100.1")
    if kind == "icmp_from_real_unknown":
        q = ip(tcp(0x02, port, 8080, CLI, RS), src=CLI, dst=RS)[:28]
        return 0x0800, ip(icmp(q), proto=1, src=RS, dst=CLI)
    if kind == "icmp_echo":
        e = struct.pack("!BBHHH", 8, 0, 0, 7, i) + b"ping"
        return 0x0800, ip(e[:2] + struct.pack("!H", csum(e)) + e[4:], proto=1)
    if kind == "arp_random":
        return 0x0806, arp(1, src, "192.0.2.99", b"\0" * 6, "10.%d.%d.%d" % (i, i * 7 % 256, i * 13 % 256))
    if kind == "arp_gratuitous":
        return 0x0806, arp(1 + i % 2, src, "192.0.2.77", b"\xff" * 6, "192.0.2.77")
    if kind == "arp_malformed":
        good = arp(1, src, "192.0.2.99", b"\0" * 6, VIP)
        return 0x0806, (good[: i % 28] if i % 2 else arp(1, src + b"\0", "192.0.2.99", b"\0" * 7, VIP, hlen=7))
    if kind == "ethertype_unknown":
        return 0x88b5, b"\x00" * 46
    if kind == "ipv6":
        return 0x86dd, b"\x60" + b"\0" * 5 + b"\x06\x40" + b"\0" * 32 + tcp(2, port)
    raise SystemExit("unknown kind " + kind)
for i in range(count):
    et, payload = frame(i)
    s.send(dst + src + struct.pack("!H", et) + payload)
"#;

/// `options_client.py VIP N`: N HTTP/1.0 requests over TCP sockets whose
/// every segment carries IP options (NOP NOP NOP EOL); prints how many got
/// a 200.
const OPTIONS_CLIENT: &str = r#"
import socket, sys
ok = 0
for i in range(int(sys.argv[2])):
    s = socket.socket()
    s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, b"\x01\x01\x01\x00")
    s.settimeout(5)
    try:
        s.connect((sys.argv[1], 80))
        s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk: break
            data += chunk
        if data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            print("bad answer", data[:80], file=sys.stderr)
    except OSError as e:
        print("request", i, e, file=sys.stderr)
    finally:
        s.close()
print(ok)
"#;

/// Each kind and the one drop reason its frames must be counted under
/// (`None`: not rvs's, no drop at all).
const KINDS: &[(&str, Option<&str>)] = &[
    ("runt", Some("malformed")),
    ("truncated", Some("malformed")),
    ("bad_ihl", Some("malformed")),
    ("bad_total_length", Some("malformed")),
    ("bad_checksum", Some("bad_checksum")),
    ("first_fragment", Some("fragment")),
    ("later_fragment", Some("fragment")),
    ("syn_fin", Some("bad_tcp_flags")),
    ("no_flags", Some("bad_tcp_flags")),
    ("rst_unknown", Some("no_connection")),
    ("fin_unknown", Some("no_connection")),
    ("port_not_in_table", Some("no_service")),
    ("udp_unknown_port", Some("no_service")),
    ("icmp_short_quote", Some("icmp_unmatched")),
    ("icmp_unknown_flow", Some("icmp_unmatched")),
    ("icmp_bad_ihl_quote", Some("icmp_unmatched")),
    ("icmp_from_real_unknown", Some("icmp_unmatched")),
    ("icmp_echo", None),
    ("arp_random", None),
    ("arp_gratuitous", None),
    ("arp_malformed", None),
    ("ethertype_unknown", None),
    ("ipv6", None),
];

fn drops(topo: &Topology) -> BTreeMap<String, u64> {
    let sock = topo.tmp_dir().join("control.sock");
    let out = std::process::Command::new(common::rvs_binary())
        .args(["services", "--json", "--socket"])
        .arg(&sock)
        .output()
        .expect("run rvs services");
    assert!(
        out.status.success(),
        "rvs services: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["drops"]
        .as_object()
        .expect("drops object")
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
        .collect()
}

fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
fn hostile_frames_are_counted_and_legitimate_traffic_is_untouched() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let mut daemon = Daemon::start(&topo, &config(&topo));
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    let options_seen: Vec<_> = (1..=3)
        .map(|i| topo.nft_counter(&format!("rs{i}"), "input", "ip hdrlength 6"))
        .collect();
    let dir_mac = topo.exec_ok("dir", &["cat", "/sys/class/net/eth0/address"]);
    let dir_mac = dir_mac.trim();
    let done = AtomicBool::new(false);

    let (failures, report) = std::thread::scope(|s| {
        // The legitimate client: a bounded stream of sequential requests.
        let legit = s.spawn(|| {
            let mut failures = Vec::new();
            for k in 0..LEGIT_REQUESTS {
                if let Err(e) = topo.curl("http://203.0.113.10/", Duration::from_secs(5)) {
                    failures.push(format!("request {k}: {e}"));
                }
                if !done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
            failures
        });

        let mut report = Vec::new();
        for &(kind, reason) in KINDS {
            let before = drops(&topo);
            let n = PER_KIND.to_string();
            topo.exec_ok("rs1", &["python3", "-c", INJECT, dir_mac, kind, &n]);
            let got = match reason {
                Some(r) => common::wait_until(Duration::from_secs(5), || {
                    let d = delta(&before, &drops(&topo));
                    (d.get(r).copied().unwrap_or(0) >= PER_KIND).then_some(())
                })
                .map(|()| {
                    // Settle: nothing more may trickle in under any reason.
                    std::thread::sleep(Duration::from_millis(200));
                    delta(&before, &drops(&topo))
                }),
                None => {
                    std::thread::sleep(Duration::from_millis(400));
                    Some(delta(&before, &drops(&topo)))
                }
            };
            let want: BTreeMap<String, u64> = reason
                .map(|r| (r.to_string(), PER_KIND))
                .into_iter()
                .collect();
            report.push((kind, want, got));
        }

        // Real requests whose every packet carries IP options.
        let out = topo.exec_ok(
            "cli",
            &[
                "python3",
                "-c",
                OPTIONS_CLIENT,
                "203.0.113.10",
                &PER_KIND.to_string(),
            ],
        );
        report.push((
            "ip_options_requests_ok",
            [("ok".to_string(), PER_KIND)].into(),
            Some([("ok".to_string(), out.trim().parse().unwrap_or(0))].into()),
        ));
        done.store(true, Ordering::Relaxed);
        (legit.join().expect("legit client thread"), report)
    });

    let wrong: Vec<_> = report
        .iter()
        .filter(|(_, want, got)| got.as_ref() != Some(want))
        .map(|(kind, want, got)| format!("{kind}: want {want:?}, got {got:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "kinds miscounted:\n{}\n{}",
        wrong.join("\n"),
        daemon.log()
    );
    assert!(
        failures.is_empty(),
        "{} of {LEGIT_REQUESTS} legitimate requests failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let with_options: u64 = options_seen.iter().map(common::NftCounter::packets).sum();
    assert!(
        with_options >= 3 * PER_KIND,
        "real servers saw {with_options} packets with IP options"
    );
    assert_eq!(rst.packets(), 0, "the client saw a RST");
    assert!(daemon.is_running(), "rvs died:\n{}", daemon.log());
    assert!(topo
        .curl("http://203.0.113.10/", Duration::from_secs(5))
        .is_ok());
}
