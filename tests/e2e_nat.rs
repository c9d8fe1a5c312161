//! VS/NAT end to end: real kernel TCP and UDP through `rvs run` in a
//! director namespace, to python servers in three real-server namespaces.

mod common;

use common::rvs_json;

use std::collections::HashMap;
use std::time::Duration;

use common::{cpu_share, expected_bytes, wait_until, Daemon, Gateway, Topology};

const T: Duration = Duration::from_secs(5);

fn nat_config(topo: &Topology, scheduler: &str, weights: [u32; 3], extra: &str) -> String {
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
scheduler = "{scheduler}"
forwarding = "nat"
{extra}
"#,
        sock.display()
    );
    for (i, w) in weights.iter().enumerate() {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\nweight = {w}\n\n",
            11 + i
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
[[virtual_service.real_server]]
address = "192.0.2.12:5353"
"#,
    );
    s
}

fn count(topo: &Topology, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for k in 0..n {
        let body = topo
            .curl("http://203.0.113.10/", T)
            .unwrap_or_else(|e| panic!("request {k} failed: {e}"));
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn nat_round_robin_tcp_udp_and_bulk() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    topo.start_udp_echo(5353);
    // The kernel of the director must not answer for the VIP itself.
    topo.add_vip_on_director(common::VIP);
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    let daemon = Daemon::start(&topo, &nat_config(&topo, "rr", [1, 1, 1], ""));

    let seen = count(&topo, 300);
    assert_eq!(seen.get("rs1"), Some(&100), "{seen:?}\n{}", daemon.log());
    assert_eq!(seen.get("rs2"), Some(&100), "{seen:?}");
    assert_eq!(seen.get("rs3"), Some(&100), "{seen:?}");

    // A bulk transfer (GSO super-frames on veth) arrives intact.
    let body = topo
        .curl_bytes_from(
            "cli",
            "http://203.0.113.10/bytes?n=5000000",
            Duration::from_secs(20),
        )
        .expect("bulk download");
    assert!(body == expected_bytes(5_000_000), "bulk body differs");

    // UDP both ways through NAT.
    let a = topo.udp_request("203.0.113.10:53", "q1").expect("udp 1");
    let b = topo.udp_request("203.0.113.10:53", "q2").expect("udp 2");
    assert!(a.ends_with(":q1") && b.ends_with(":q2"), "{a} {b}");

    assert_eq!(rst.packets(), 0, "the client saw a RST:\n{}", daemon.log());
}

#[test]
fn nat_weighted_round_robin_is_exact() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let _daemon = Daemon::start(&topo, &nat_config(&topo, "wrr", [1, 2, 3], ""));
    let seen = count(&topo, 60);
    assert_eq!(
        (seen.get("rs1"), seen.get("rs2"), seen.get("rs3")),
        (Some(&10), Some(&20), Some(&30)),
        "{seen:?}"
    );
}

/// Short close timeouts so a closed connection stops holding its
/// persistence template within a second (IPVS keeps a template while it
/// controls connections, TIME_WAIT ones included).
const SHORT_CLOSE: &str = "[timeouts]\ntcp_time_wait = \"500ms\"\ntcp_close = \"500ms\"\ntcp_fin_wait = \"500ms\"\ntcp_close_wait = \"500ms\"\ntcp_last_ack = \"500ms\"\n";

fn nat_config_with_timeouts(topo: &Topology, scheduler: &str, extra: &str) -> String {
    let c = nat_config(topo, scheduler, [1, 1, 1], extra);
    // [timeouts] must come before the first [[virtual_service]].
    c.replacen(
        "\n[[virtual_service]]",
        &format!("\n{SHORT_CLOSE}\n[[virtual_service]]"),
        1,
    )
}

fn slow_download(topo: &Topology) -> std::process::Child {
    slow_download_to(topo, "/dev/null")
}

/// A 50 MB download from the VIP at 20 kB/s, written to `out`.
fn slow_download_to(topo: &Topology, out: &str) -> std::process::Child {
    topo.spawn(
        "cli",
        &[
            "curl",
            "-sS",
            "--noproxy",
            "*",
            "--limit-rate",
            "20k",
            "-o",
            out,
            "http://203.0.113.10/bytes?n=50000000",
        ],
    )
}

/// The (client, real server) of the one ESTABLISHED connection in the
/// table (waits ≤ `T` for it).
fn established_entry(topo: &Topology) -> (serde_json::Value, serde_json::Value) {
    wait_until(T, || {
        let v = rvs_json(topo, &["conns", "--json"]);
        v["connections"]
            .as_array()?
            .iter()
            .find(|c| c["state"] == "ESTABLISHED" && c["template"] == false)
            .map(|c| (c["client"].clone(), c["real_server"].clone()))
    })
    .expect("the long flow is in the table")
}

#[test]
fn nat_persistence_holds_then_expires() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let daemon = Daemon::start(
        &topo,
        &nat_config_with_timeouts(&topo, "rr", "persistence = { timeout = \"2s\" }"),
    );
    let seen = count(&topo, 12);
    assert_eq!(seen.len(), 1, "persistent client spread over {seen:?}");
    let first = seen.keys().next().cloned().unwrap_or_default();
    let conns = rvs_json(&topo, &["conns", "--json"]);
    let templates: Vec<_> = conns["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["template"] == true)
        .collect();
    assert_eq!(templates.len(), 1, "one template: {conns}");
    assert_eq!(templates[0]["client"], "198.51.100.2:0");
    // Connections end (500 ms close timeouts), then the 2 s template
    // expires: the next connection is scheduled anew, and rr moves on.
    std::thread::sleep(Duration::from_millis(3500));
    let after = count(&topo, 1);
    assert!(
        !after.contains_key(&first),
        "still on {first} after expiry: {after:?}\n{}",
        daemon.log()
    );
}

#[test]
fn nat_wlc_held_connections_follow_weights() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let daemon = Daemon::start(&topo, &nat_config(&topo, "wlc", [1, 2, 3], ""));
    let _held: Vec<_> = (0..12)
        .map(|_| {
            let c = slow_download(&topo);
            std::thread::sleep(Duration::from_millis(150));
            c
        })
        .collect();
    let active = common::wait_until(Duration::from_secs(10), || {
        let v = rvs_json(&topo, &["services", "--json"]);
        let a: Vec<u64> = v["services"][0]["real_servers"]
            .as_array()?
            .iter()
            .map(|r| r["active"].as_u64().unwrap_or(0))
            .collect();
        (a.iter().sum::<u64>() == 12).then_some(a)
    })
    .unwrap_or_else(|| panic!("12 active connections never showed\n{}", daemon.log()));
    for (got, want) in active.iter().zip([2u64, 4, 6]) {
        assert!(got.abs_diff(want) <= 1, "active {active:?}, want 2/4/6 ±1");
    }
}

#[test]
fn nat_long_flow_keeps_its_server_while_others_come_and_go() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let _daemon = Daemon::start(&topo, &nat_config(&topo, "rr", [1, 1, 1], ""));
    let mut long = slow_download(&topo);
    let long_entry = || established_entry(&topo);
    let before = long_entry();
    let seen = count(&topo, 30);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(long_entry(), before, "the long flow moved");
    let _ = long.kill();
    let _ = long.wait();
}

const GARBAGE: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
dst = bytes.fromhex(sys.argv[1].replace(":", ""))
src = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b)//2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
def ip(payload, flags=0, ihl=5, fix=True, total=None):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total or 20 + len(payload), 1, flags, 64, 6, 0,
        socket.inet_aton("198.51.100.9"), socket.inet_aton("203.0.113.10"))
    c = csum(h) if fix else 0x1234
    return h[:10] + struct.pack("!H", c) + h[12:] + payload
def tcp(fl):
    return struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, fl, 1000, 0, 0)
frames = [
    ip(tcp(0x02))[:15],
    ip(tcp(0x02), ihl=3),
    ip(tcp(0x02), total=400),
    ip(tcp(0x02), fix=False),
    ip(tcp(0x02), flags=0x2000),
    ip(tcp(0x03)),
    ip(tcp(0x10)),
]
for f in frames:
    for _ in range(5):
        s.send(dst + src + b"\x08\x00" + f)
s.send(dst + src + b"\x86\xdd" + b"\x60" + b"\0" * 39)
"#;

#[test]
fn nat_port_not_in_table_is_not_answered_and_garbage_is_counted() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let daemon = Daemon::start(&topo, &nat_config(&topo, "rr", [1, 1, 1], ""));
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    assert!(topo
        .curl("http://203.0.113.10:81/", Duration::from_secs(1))
        .is_err());
    assert_eq!(rst.packets(), 0, "someone answered port 81 with a RST");
    // Broken frames to the VIP from a host on the LAN, straight to the
    // director's MAC: truncated, bad IHL, bad total length, bad checksum,
    // fragment, SYN+FIN, ACK of an unknown flow (5 each), and IPv6.
    let dir_mac = topo.exec_ok("dir", &["cat", "/sys/class/net/eth0/address"]);
    topo.exec_ok("rs1", &["python3", "-c", GARBAGE, dir_mac.trim()]);
    let drops = common::wait_until(Duration::from_secs(5), || {
        let d = rvs_json(&topo, &["services", "--json"])["drops"].clone();
        let n = |k: &str| d[k].as_u64().unwrap_or(0);
        (n("malformed") >= 15
            && n("bad_checksum") >= 5
            && n("fragment") >= 5
            && n("bad_tcp_flags") >= 5
            && n("no_connection") >= 5)
            .then_some(d)
    });
    assert!(
        drops.is_some(),
        "drops not counted: {}\n{}",
        rvs_json(&topo, &["services", "--json"])["drops"],
        daemon.log()
    );
    assert_eq!(count(&topo, 3).len(), 3, "still forwarding");
}

/// Probes `argv[1]:argv[2]` over UDP with TTL 2 and 3 from the client, as
/// traceroute does, and prints per TTL either the reply or the ICMP error
/// the kernel queued (IP_RECVERR): type, code and the offender's address.
const TTL_PROBE: &str = r#"
import errno, socket, struct, sys
IP_TTL, IP_RECVERR, MSG_ERRQUEUE = 2, 11, 0x2000
def probe(ttl):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, IP_TTL, ttl)
    s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    s.settimeout(2)
    s.connect((sys.argv[1], int(sys.argv[2])))
    s.send(b"ttl%d" % ttl)
    try:
        return "reply " + s.recv(512).decode()
    except socket.timeout:
        return "timeout"
    except OSError as e:
        if e.errno != errno.EHOSTUNREACH:
            return "error %s" % e
    _, anc, _, _ = s.recvmsg(512, 512, MSG_ERRQUEUE)
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_RECVERR:
            _, _, icmp_type, icmp_code = struct.unpack_from("=IBBB", data)
            # struct sock_extended_err (16 bytes), then the offender's sockaddr_in.
            return "icmp %d/%d from %s" % (icmp_type, icmp_code, socket.inet_ntoa(data[20:24]))
    return "no queued error"
for ttl in (2, 3):
    print(probe(ttl))
"#;

#[test]
fn nat_ttl_runs_out_at_the_director_with_time_exceeded() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_udp_echo(5353);
    let daemon = Daemon::start(&topo, &nat_config(&topo, "rr", [1, 1, 1], ""));
    // cli → rtr (hop 1) → director (hop 2) → real server (hop 3).
    let out = topo.exec_ok("cli", &["python3", "-c", TTL_PROBE, "203.0.113.10", "53"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("icmp 11/0 from {}", common::DIRECTOR_IP).as_str()),
        "TTL 2 must die at the director, which says so:\n{out}\n{}",
        daemon.log()
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|l| l.starts_with("reply ") && l.ends_with(":ttl3")),
        "TTL 3 reaches a real server and its reply comes back:\n{out}"
    );
    let d = rvs_json(&topo, &["services", "--json"])["drops"].clone();
    assert_eq!(d["ttl_exceeded"].as_u64(), Some(1), "drops: {d}");
}

/// The router's cache entry for `vip` on its LAN side: the MAC, if any.
/// Waits (≤ `T`) until a request to the VIP is answered; fails with `what`
/// and the daemon's log.
fn served_within_t(topo: &Topology, what: &str, daemon: &Daemon) {
    let served = wait_until(T, || {
        topo.curl("http://203.0.113.10/", Duration::from_secs(1))
            .ok()
    });
    assert!(served.is_some(), "{what}:\n{}", daemon.log());
}

fn router_mac_for(topo: &Topology, vip: &str) -> Option<String> {
    let out = topo.exec_ok("rtr", &["ip", "neigh", "show", vip, "dev", "eth0"]);
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

/// Gives the router a stale neighbour entry: `vip` under `mac` (another
/// director's, as after the VIP moved).
fn router_has_stale(topo: &Topology, vip: &str, mac: &str) {
    topo.exec_ok(
        "rtr",
        &[
            "ip", "neigh", "replace", vip, "lladdr", mac, "dev", "eth0", "nud", "stale",
        ],
    );
}

#[test]
fn vips_are_announced_by_gratuitous_arp_at_start_and_reload() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    // The router still has the VIPs under another director's MAC (the
    // VIPs moved here), as a router on the VIPs' segment would.
    let old = "02:00:00:00:99:99";
    for vip in ["203.0.113.10", "203.0.113.11"] {
        router_has_stale(&topo, vip, old);
    }
    let config = nat_config(&topo, "rr", [1, 1, 1], "");
    let mut daemon = Daemon::start(&topo, &config);
    let director = common::lan_mac(1);
    // Waits until the router has `vip` under the director's MAC.
    let moves_here = |vip: &str, when: &str| {
        let moved = wait_until(T, || {
            (router_mac_for(&topo, vip).as_deref() == Some(director.as_str())).then_some(())
        });
        assert!(
            moved.is_some(),
            "{when}: the router still sends {vip} to {:?}",
            router_mac_for(&topo, vip)
        );
    };
    moves_here("203.0.113.10", "at start");
    assert_eq!(
        router_mac_for(&topo, "203.0.113.11").as_deref(),
        Some(old),
        "not a VIP yet: left alone"
    );

    // A reload that adds a VIP announces it.
    let added = config.replace("203.0.113.10:53", "203.0.113.11:53");
    std::fs::write(daemon.config_path().expect("config path"), added).expect("rewrite config");
    daemon.signal(libc::SIGHUP);
    moves_here("203.0.113.11", "after the reload");

    // A VIP the kernel owns is the kernel's to announce: none from rvs.
    router_has_stale(&topo, "203.0.113.12", old);
    topo.exec_ok(
        "dir",
        &["ip", "addr", "add", "203.0.113.12/32", "dev", "lo"],
    );
    let owned = config.replace("203.0.113.10:53", "203.0.113.12:53");
    std::fs::write(daemon.config_path().expect("config path"), owned).expect("rewrite config");
    daemon.signal(libc::SIGHUP);
    let reloaded = wait_until(T, || {
        (daemon.log().matches("reloaded").count() >= 2).then_some(())
    });
    assert!(
        reloaded.is_some(),
        "second reload not logged: {}",
        daemon.log()
    );
    // Well past the announcer's first look (100 ms) after the reload.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(router_mac_for(&topo, "203.0.113.12").as_deref(), Some(old));
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn route_and_address_changes_are_followed_without_a_reload() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    // The director starts with no route back to the client, and owns a
    // VIP (203.0.113.12) on lo: the kernel answers ARP for it, not rvs.
    topo.exec_ok("dir", &["ip", "route", "del", "default"]);
    topo.exec_ok(
        "dir",
        &["ip", "addr", "add", "203.0.113.12/32", "dev", "lo"],
    );
    let old = "02:00:00:00:99:99";
    router_has_stale(&topo, "203.0.113.12", old);
    let config =
        nat_config(&topo, "rr", [1, 1, 1], "").replace("203.0.113.10:53", "203.0.113.12:53");
    let mut daemon = Daemon::start(&topo, &config);
    assert!(
        topo.curl("http://203.0.113.10/", Duration::from_secs(2))
            .is_err(),
        "answered with no route to the client:\n{}",
        daemon.log()
    );

    // The operator adds the route: followed within a second or so, no SIGHUP.
    topo.exec_ok(
        "dir",
        &["ip", "route", "add", "default", "via", "192.0.2.254"],
    );
    served_within_t(&topo, "the new route was not followed", &daemon);
    assert!(daemon.log().contains("routes changed"), "{}", daemon.log());
    assert_eq!(router_mac_for(&topo, "203.0.113.12").as_deref(), Some(old));

    // The kernel gives the VIP up: rvs answers for it now, and says so.
    topo.exec_ok(
        "dir",
        &["ip", "addr", "del", "203.0.113.12/32", "dev", "lo"],
    );
    let director = common::lan_mac(1);
    let moved = wait_until(T, || {
        (router_mac_for(&topo, "203.0.113.12").as_deref() == Some(director.as_str())).then_some(())
    });
    assert!(
        moved.is_some(),
        "no gratuitous ARP after the kernel gave the VIP up: {:?}\n{}",
        router_mac_for(&topo, "203.0.113.12"),
        daemon.log()
    );
    assert!(
        !daemon.log().contains("reloaded"),
        "nothing here is a reload: {}",
        daemon.log()
    );
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}

#[test]
fn link_flap_and_recreated_data_interface_are_followed_without_a_restart() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let mut daemon = Daemon::start(&topo, &nat_config(&topo, "rr", [1, 1, 1], ""));
    // The link goes down and up. The kernel flags each packet socket with
    // ENETDOWN; a worker that never reads it spins in poll from then on.
    topo.exec_ok("dir", &["ip", "link", "set", "eth0", "down"]);
    std::thread::sleep(Duration::from_millis(300));
    topo.exec_ok("dir", &["ip", "link", "set", "eth0", "up"]);
    // The kernel dropped the default route with the link.
    let _ = topo.exec(
        "dir",
        &["ip", "route", "replace", "default", "via", "192.0.2.254"],
    );
    // Measured with no traffic: a large frame's recvmsg would clear
    // the error as a side effect.
    let busy = cpu_share(daemon.pid());
    assert!(busy < 0.5, "rvs uses {busy:.2} of a core after a link flap");
    served_within_t(&topo, "nothing forwarded after a link flap", &daemon);

    // A long download, at 20 kB/s, crosses everything below. Small socket
    // buffers keep its body at the real server, so the file grows only
    // while the path carries it (the client holds at most ~3 s of it).
    topo.sysctl("cli", "net.ipv4.tcp_rmem", "4096 16384 65536");
    for i in 1..=3 {
        topo.sysctl(&topo.rs(i), "net.ipv4.tcp_wmem", "4096 16384 65536");
    }
    let out = topo.tmp_dir().join("long.bin");
    let out_path = out.to_string_lossy().to_string();
    let mut long = slow_download_to(&topo, &out_path);
    let size = || std::fs::metadata(&out).map_or(0, |m| m.len());
    let grows = |what: &str, log: &dyn Fn() -> String| {
        let from = size();
        // TCP's retransmission timer backs off while the link is away.
        let grew = wait_until(4 * T, || (size() > from + 100_000).then_some(()));
        assert!(
            grew.is_some(),
            "the long download stalled {what}:\n{}",
            log()
        );
    };
    let long_entry = || established_entry(&topo);
    let before = long_entry();
    grows("at first", &|| daemon.log());

    // The interface is deleted and built again (new index, same name and
    // MAC, as a network configuration rebuilding a VLAN or veth would).
    topo.exec_ok("dir", &["ip", "link", "del", "eth0"]);
    std::thread::sleep(Duration::from_millis(300));
    let mac = common::lan_mac(1);
    let sw = topo.ns("sw").to_string();
    topo.exec_ok(
        "dir",
        &[
            "ip", "link", "add", "eth0", "address", &mac, "type", "veth", "peer", "name", "dir",
            "netns", &sw,
        ],
    );
    topo.exec_ok("sw", &["ip", "link", "set", "dir", "master", "br0"]);
    topo.exec_ok("sw", &["ip", "link", "set", "dir", "up"]);
    topo.exec_ok("dir", &["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    // Left down a while, as a network configuration that builds a device,
    // then configures it, then brings it up: no fanout group can be
    // joined on it yet, so rvs waits for it to come up.
    std::thread::sleep(Duration::from_millis(1500));
    topo.exec_ok("dir", &["ip", "link", "set", "eth0", "up"]);
    topo.exec_ok(
        "dir",
        &["ip", "route", "add", "default", "via", "192.0.2.254"],
    );
    served_within_t(
        &topo,
        "nothing forwarded on the re-created interface",
        &daemon,
    );
    grows("after the interface was re-created", &|| {
        format!(
            "{}\n{}\n{}\n{}\n{}",
            daemon.log(),
            topo.exec_ok("dir", &["ip", "-s", "link", "show", "eth0"]),
            rvs_json(&topo, &["services", "--json"]),
            rvs_json(&topo, &["conns", "--json"]),
            topo.exec_ok("cli", &["ss", "-tni"]),
        )
    });
    assert_eq!(
        long_entry(),
        before,
        "the long flow lost its entry or moved"
    );
    assert!(
        long.try_wait().expect("curl status").is_none(),
        "the long download ended:\n{}",
        daemon.log()
    );
    let log = daemon.log();
    assert!(log.contains("its sockets were reopened"), "{log}");
    assert!(log.contains("re-created and is down"), "{log}");
    assert!(!log.contains("cannot be reopened"), "{log}");
    assert_eq!(
        log.matches("rvs: ready services").count(),
        1,
        "restarted:\n{log}"
    );
    let busy = cpu_share(daemon.pid());
    assert!(
        busy < 0.5,
        "rvs uses {busy:.2} of a core after the re-creation"
    );
    // The steering is hooked to the new device: the table was replaced
    // when the sockets were reopened (its counters started again), and the
    // kernel's copies of the requests since then were dropped by it.
    let table = topo.exec_ok("dir", &["nft", "list", "table", "netdev", "rvs"]);
    let dropped: u64 = table
        .lines()
        .find(|l| l.contains("203.0.113.10 tcp dport 80"))
        .and_then(|l| l.split("packets ").nth(1))
        .and_then(|n| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "no steering on the new device:\n{table}");
    let _ = long.kill();
    let _ = long.wait();
    let status = daemon.stop();
    assert!(status.success(), "{status}");
}
