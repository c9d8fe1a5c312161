//! VS/DR and VS/TUN end to end: the director sees only the client's side;
//! real servers answer the client directly through the router.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{expected_bytes, Daemon, Topology, VIP};

const T: Duration = Duration::from_secs(5);

fn config(topo: &Topology, method: &str, scheduler: &str, extra: &str) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    let mut s = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nworkers = 2\n{extra}\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\nscheduler = \"{scheduler}\"\nforwarding = \"{method}\"\n",
        sock.display()
    );
    for i in 0..3 {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:80\"\n",
            11 + i
        ));
    }
    s.push_str(&format!(
        "[[virtual_service]]\nname = \"dns\"\nprotocol = \"udp\"\naddress = \"203.0.113.10:53\"\nscheduler = \"rr\"\nforwarding = \"{method}\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:53\"\n[[virtual_service.real_server]]\naddress = \"192.0.2.12:53\"\n"
    ));
    s
}

fn spread(topo: &Topology, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for k in 0..n {
        let body = topo
            .curl("http://203.0.113.10/", T)
            .unwrap_or_else(|e| panic!("request {k}: {e}"));
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

#[test]
fn dr_round_robin_direct_return_udp_and_bulk() {
    let topo = Topology::new(3);
    // Prepared the way an operator would: `rvs realserver setup`, twice to
    // show it is idempotent.
    let rvs = common::rvs_binary();
    let rvs = rvs.to_str().expect("utf-8 path");
    let setup = [
        "realserver",
        "setup",
        "--mode",
        "dr",
        "--vip",
        "203.0.113.10",
    ];
    for i in 1..=3 {
        let rs = topo.rs(i);
        let mut args = vec![rvs];
        args.extend(setup);
        let first = topo.exec_ok(&rs, &args);
        assert!(first.contains("added 203.0.113.10/32 to lo"), "{first}");
        assert!(first.contains("arp_ignore = 1"), "{first}");
        assert_eq!(topo.exec_ok(&rs, &args).trim(), "nothing to change");
    }
    topo.start_http_servers(80);
    topo.start_udp_echo(53);
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    // Replies must not pass through the director: count them there.
    let via_dir = topo.nft_counter("dir", "prerouting", "ip saddr 203.0.113.10");
    let daemon = Daemon::start(&topo, &config(&topo, "dr", "rr", ""));
    let seen = spread(&topo, 300);
    assert_eq!(
        (seen.get("rs1"), seen.get("rs2"), seen.get("rs3")),
        (Some(&100), Some(&100), Some(&100)),
        "{seen:?}\n{}",
        daemon.log()
    );
    let body = topo
        .curl_bytes_from(
            "cli",
            "http://203.0.113.10/bytes?n=3000000",
            Duration::from_secs(20),
        )
        .expect("bulk download over DR");
    assert!(body == expected_bytes(3_000_000));
    let a = topo
        .udp_request("203.0.113.10:53", "x")
        .expect("udp over DR");
    assert!(a.ends_with(":x"), "{a}");
    assert_eq!(rst.packets(), 0, "client saw a RST");
    assert_eq!(via_dir.packets(), 0, "DR replies went through the director");

    // rvs never handles its own transmissions: a DR frame it sent still
    // goes to the VIP and would be forwarded again and again until its TTL
    // ran out. Two guards keep it out (PACKET_IGNORE_OUTGOING, and the
    // core ignores frames not addressed to the director's MAC; the test
    // passes with either alone). Each datagram arrives once.
    let at_rs: Vec<_> = (1..=2)
        .map(|i| topo.nft_counter(&topo.rs(i), "prerouting", "udp dport 53"))
        .collect();
    let burst = "import socket, time\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for i in range(200):\n    s.sendto(b'b%d' % i, ('203.0.113.10', 53)); time.sleep(0.001)\n";
    topo.exec_ok("cli", &["python3", "-c", burst]);
    let delivered = common::wait_until(T, || {
        let n: u64 = at_rs.iter().map(|c| c.packets()).sum();
        (n >= 200).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(300));
    let n: u64 = at_rs.iter().map(|c| c.packets()).sum();
    assert!(
        delivered.is_some() && n == 200,
        "{n} datagrams arrived for 200 sent"
    );

    // The VIP is not the director kernel's: rvs answers its pings.
    topo.ping("cli", VIP, T)
        .unwrap_or_else(|e| panic!("no echo reply from the VIP: {e}\n{}", daemon.log()));
}

#[test]
fn dr_mh_is_consistent_per_client() {
    let topo = Topology::new(3);
    for i in 1..=3 {
        topo.setup_dr_real_server(i, VIP);
    }
    topo.start_http_servers(80);
    let _daemon = Daemon::start(&topo, &config(&topo, "dr", "mh", "seed = 7"));
    let seen = spread(&topo, 10);
    assert_eq!(
        seen.len(),
        1,
        "mh hashes one client to one server: {seen:?}"
    );
}

#[test]
fn tun_through_user_space_tunnel_endpoints() {
    let topo = Topology::new(3);
    let _endpoints: Vec<Daemon> = (1..=3)
        .map(|i| topo.start_tunnel_endpoint(i, &[VIP]))
        .collect();
    topo.start_http_servers(80);
    topo.start_udp_echo(53);
    let daemon = Daemon::start(&topo, &config(&topo, "tun", "rr", ""));
    let seen = spread(&topo, 300);
    assert_eq!(
        (seen.get("rs1"), seen.get("rs2"), seen.get("rs3")),
        (Some(&100), Some(&100), Some(&100)),
        "{seen:?}\n{}",
        daemon.log()
    );
    let a = topo
        .udp_request("203.0.113.10:53", "y")
        .expect("udp over TUN");
    assert!(a.ends_with(":y"), "{a}");
    // A download: the client only sends small segments, the real server
    // answers directly.
    let body = topo
        .curl_bytes_from(
            "cli",
            "http://203.0.113.10/bytes?n=2000000",
            Duration::from_secs(20),
        )
        .expect("download over TUN");
    assert!(body == expected_bytes(2_000_000));
}

/// A TCP sink on every real server: reads until EOF, answers
/// "<server> <bytes> <sha256>".
const SINK: &str = r#"
import hashlib, socket, sys, threading
name = sys.argv[1]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(16)
def serve(c):
    h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    c.sendall(f"{name} {n} {h.hexdigest()}\n".encode()); c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

const UPLOAD: &str = r#"
import hashlib, socket, sys
n = int(sys.argv[1])
data = bytes(i % 251 for i in range(n))
c = socket.create_connection(("203.0.113.10", 9000), timeout=20)
c.sendall(data)
c.shutdown(socket.SHUT_WR)
print(c.makefile().readline().strip(), hashlib.sha256(data).hexdigest())
"#;

#[test]
fn tun_bulk_upload_is_segmented_and_path_mtu_works() {
    let topo = Topology::new(3);
    let _endpoints: Vec<Daemon> = (1..=3)
        .map(|i| topo.start_tunnel_endpoint(i, &[VIP]))
        .collect();
    let sinks: Vec<_> = (1..=3)
        .map(|i| topo.spawn(&topo.rs(i), &["python3", "-c", SINK, &topo.rs(i)]))
        .collect();
    let sock = topo.tmp_dir().join("control.sock");
    let cfg = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\n\n\
         [[virtual_service]]\nname = \"sink\"\naddress = \"203.0.113.10:9000\"\nscheduler = \"rr\"\nforwarding = \"tun\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:9000\"\n",
        sock.display()
    );
    let daemon = Daemon::start(&topo, &cfg);
    std::thread::sleep(Duration::from_millis(300));
    // Uploads from a stack with TSO on veth: the director receives GSO
    // super-frames, segments them, and its ICMP "fragmentation needed"
    // (inner + 20 > 1500) makes the client lower its path MTU.
    for _ in 0..2 {
        let out = topo.exec_ok("cli", &["python3", "-c", UPLOAD, "3000000"]);
        let f: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{out}\n{}", daemon.log());
        assert_eq!(f[1], "3000000", "bytes received: {out}");
        assert_eq!(f[2], f[3], "digest differs: {out}");
    }
    drop(sinks);
}
