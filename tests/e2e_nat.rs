//! VS/NAT end to end: real kernel TCP and UDP through `rvs run` in a
//! director namespace, to python servers in three real-server namespaces.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{expected_bytes, Daemon, Gateway, Topology};

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

    let seen = count(&topo, 30);
    assert_eq!(seen.get("rs1"), Some(&10), "{seen:?}\n{}", daemon.log());
    assert_eq!(seen.get("rs2"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("rs3"), Some(&10), "{seen:?}");

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

#[test]
fn nat_persistence_keeps_a_client_on_one_server() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let _daemon = Daemon::start(
        &topo,
        &nat_config(
            &topo,
            "rr",
            [1, 1, 1],
            "persistence = { timeout = \"30s\" }",
        ),
    );
    let seen = count(&topo, 12);
    assert_eq!(seen.len(), 1, "persistent client spread over {seen:?}");
}
