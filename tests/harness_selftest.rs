//! The end-to-end harness checks itself: the topology routes, the helper
//! servers answer, DR preparation and the counters work, and Drop leaves no
//! namespace behind (also after a panic).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{
    expected_bytes, list_namespaces, rs_ip, wait_until, Daemon, Gateway, Topology, CLIENT_IP,
    DIRECTOR_IP, ROUTER_CLIENT_IP, ROUTER_LAN_IP, VIP,
};

const T: Duration = Duration::from_secs(5);

fn namespaces_with(prefix: &str) -> Vec<String> {
    list_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[test]
fn topology_routes_and_servers_answer() {
    let topo = Topology::new(3);
    assert_eq!(topo.namespaces().len(), 4 + 3);

    topo.ping("cli", ROUTER_CLIENT_IP, T).unwrap();
    topo.ping("cli", ROUTER_LAN_IP, T).unwrap();
    topo.ping("dir", ROUTER_LAN_IP, T).unwrap();
    topo.ping("rtr", DIRECTOR_IP, T).unwrap();

    topo.start_http_servers(80);
    for i in 1..=3 {
        let base = format!("http://{}", rs_ip(i));
        assert_eq!(
            topo.curl_from("rtr", &format!("{base}/"), T).unwrap(),
            format!("rs{i}\n")
        );
        let body = topo
            .curl_bytes_from("rtr", &format!("{base}/bytes?n=100000"), T)
            .unwrap();
        assert!(body == expected_bytes(100_000), "rs{i} /bytes differs");
    }
    // Routed through the router (real servers' default is the router).
    assert_eq!(
        topo.curl(&format!("http://{}/", rs_ip(2)), T).unwrap(),
        "rs2\n"
    );
    assert!(topo
        .curl_from("rtr", "http://192.0.2.11/nothing", T)
        .is_err());

    topo.start_udp_echo(5353);
    for i in 1..=3 {
        let addr = format!("{}:5353", rs_ip(i));
        assert_eq!(
            topo.udp_request_from("rtr", &addr, "hello", T).unwrap(),
            format!("rs{i}:hello")
        );
    }
    assert_eq!(
        topo.udp_request("192.0.2.13:5353", "from-client").unwrap(),
        "rs3:from-client"
    );
    assert!(topo.udp_request("192.0.2.13:5354", "closed").is_err());
}

#[test]
fn addresses_routes_and_sysctls_are_as_documented() {
    let topo = Topology::with_gateway(2, Gateway::Director);
    let cli = topo.exec_ok("cli", &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(cli.contains(&format!("{CLIENT_IP}/24")), "{cli}");
    assert!(topo
        .exec_ok("cli", &["ip", "route", "show", "default"])
        .contains("via 198.51.100.1"));
    assert_eq!(topo.sysctl_get("rtr", "net.ipv4.ip_forward"), "1");
    assert_eq!(topo.sysctl_get("dir", "net.ipv4.ip_forward"), "0");
    assert!(topo
        .exec_ok("rtr", &["ip", "route", "show", "203.0.113.0/24"])
        .contains("via 192.0.2.1"));
    assert!(topo
        .exec_ok("dir", &["ip", "route", "show", "default"])
        .contains("via 192.0.2.254"));
    let mac = topo.exec_ok("rs2", &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(mac.trim(), "02:00:00:00:02:0c");

    let rs_default = |i| topo.exec_ok(&format!("rs{i}"), &["ip", "route", "show", "default"]);
    assert!(
        rs_default(1).contains("via 192.0.2.1 "),
        "{}",
        rs_default(1)
    );
    topo.set_rs_gateway(1, Gateway::Router);
    assert!(
        rs_default(1).contains("via 192.0.2.254"),
        "{}",
        rs_default(1)
    );
    assert!(
        rs_default(2).contains("via 192.0.2.1 "),
        "{}",
        rs_default(2)
    );

    // The full name is accepted where a short one is.
    let full = topo.ns("rs2").to_string();
    assert!(full.starts_with(topo.prefix()) && full.ends_with("-rs2"));
    assert_eq!(topo.ns(&full), full);
}

#[test]
fn dr_setup_puts_vip_on_lo_and_silences_arp() {
    let topo = Topology::new(2);
    topo.setup_dr_real_server(2, VIP);
    let lo = topo.exec_ok("rs2", &["ip", "-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(lo.contains("203.0.113.10/32"), "{lo}");
    assert_eq!(topo.sysctl_get("rs2", "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(
        topo.sysctl_get("rs2", "net.ipv4.conf.eth0.arp_announce"),
        "2"
    );
    let other = topo.exec_ok("rs1", &["ip", "-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(!other.contains("203.0.113.10"), "{other}");

    topo.add_vip_on_director(VIP);
    let dir = topo.exec_ok("dir", &["ip", "-4", "-o", "addr", "show", "dev", "lo"]);
    assert!(dir.contains("203.0.113.10/32"), "{dir}");
    // With the VIP on the director, the client reaches it through the router.
    topo.ping("cli", VIP, T).unwrap();
}

#[test]
fn nft_counter_counts_rsts_at_the_client() {
    let topo = Topology::new(1);
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    let all_in = topo.nft_counter("cli", "prerouting", "");
    assert_eq!(rst.packets(), 0);
    // Nothing listens on the router's port 81: its kernel answers RST.
    let err = topo
        .curl("http://198.51.100.1:81/", T)
        .expect_err("port 81 is closed");
    assert!(
        err.contains("refused") || err.contains("Couldn't connect"),
        "{err}"
    );
    assert_eq!(rst.packets(), 1);
    assert!(rst.bytes() >= 40);
    assert!(all_in.packets() >= 1);
}

#[test]
fn daemon_wrapper_waits_for_readiness_and_stops() {
    let topo = Topology::new(1);
    let mut d = Daemon::start_command(
        &topo,
        "dir",
        &[
            "sh",
            "-c",
            "echo starting; sleep 0.2; echo 'rvs: ready'; trap 'echo bye; exit 0' TERM; \
             while true; do sleep 0.1; done",
        ],
        "rvs: ready",
    );
    assert!(d.pid() > 0);
    assert!(d.is_running());
    assert!(d.log().contains("starting\n"));
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(d.log().contains("bye"), "{}", d.log());
    assert!(!d.is_running());

    // A process that exits before it is ready fails the start, with its log.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_command(
            &topo,
            "dir",
            &["sh", "-c", "echo boom; exit 3"],
            "rvs: ready",
        )
    }));
    let message = *failed
        .expect_err("start must fail")
        .downcast::<String>()
        .expect("panic message is a String");
    assert!(
        message.contains("exit status: 3") && message.contains("boom"),
        "{message}"
    );
}

#[test]
fn rvs_binary_is_built() {
    let bin = common::rvs_binary();
    assert!(bin.is_file(), "{} missing", bin.display());
}

#[test]
fn drop_removes_every_namespace_and_process() {
    let (prefix, mut child) = {
        let topo = Topology::new(2);
        let child = topo.spawn("rs1", &["sleep", "60"]);
        let prefix = topo.prefix().to_string();
        assert_eq!(namespaces_with(&prefix).len(), 6);
        (prefix, child)
    };
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
    // The sleep was SIGKILLed by the topology's Drop.
    let status = wait_until(T, || child.try_wait().ok().flatten())
        .expect("sleep still running after the topology dropped");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
}

#[test]
fn drop_removes_namespaces_after_a_panic() {
    let prefix = std::sync::Mutex::new(String::new());
    let result = std::panic::catch_unwind(|| {
        let topo = Topology::new(1);
        *prefix.lock().unwrap() = topo.prefix().to_string();
        topo.start_udp_echo(7);
        panic!("deliberate failure inside a test");
    });
    assert!(result.is_err());
    let prefix = prefix.into_inner().unwrap();
    assert!(!prefix.is_empty());
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
}

#[test]
fn a_failing_step_cleans_up_what_was_built() {
    let topo = Topology::new(1);
    let prefix = topo.prefix().to_string();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        topo.exec_ok("cli", &["ip", "link", "set", "nonexistent0", "up"]);
    }));
    let message = *result
        .expect_err("must panic")
        .downcast::<String>()
        .unwrap();
    assert!(message.contains("nonexistent0"), "{message}");
    drop(topo);
    assert_eq!(namespaces_with(&prefix), Vec::<String>::new());
}
