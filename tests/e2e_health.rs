//! Health checks end to end: `rvs run` in the director namespace checks
//! three python HTTP servers (VS/NAT); a stopped or failing server is marked
//! down and gets no new clients, and comes back when it recovers.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{rvs_binary, wait_until, Daemon, Gateway, Topology};

const T: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const RISE: u32 = 2;
const FALL: u32 = 2;
/// Slack on top of the protocol bound for scheduling on a loaded host and
/// for the polling of `rvs services`.
const MARGIN: Duration = Duration::from_millis(1000);

/// The tests measure timings: one at a time on a small host.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

const HTTP_CHECK: &str = r#"health_check = { type = "http", path = "/", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }"#;
const TCP_CHECK: &str =
    r#"health_check = { type = "tcp", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }"#;

fn service(name: &str, port: u16, check: &str, servers: &[usize]) -> String {
    let mut s = format!(
        r#"
[[virtual_service]]
name = "{name}"
protocol = "tcp"
address = "203.0.113.10:{port}"
scheduler = "rr"
forwarding = "nat"
{check}
"#
    );
    for i in servers {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\nweight = 1\n",
            10 + i
        ));
    }
    s
}

fn config(topo: &Topology, services: &[String]) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    let mut s = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nworkers = 2\n",
        sock.display()
    );
    for svc in services {
        s.push_str(svc);
    }
    s
}

/// `rvs services --json`: (service name, real server address) → health.
fn health(topo: &Topology) -> HashMap<(String, String), String> {
    let sock = topo.tmp_dir().join("control.sock");
    let out = Command::new(rvs_binary())
        .args(["services", "--socket"])
        .arg(&sock)
        .arg("--json")
        .output()
        .expect("running rvs services");
    assert!(
        out.status.success(),
        "rvs services: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services JSON");
    let mut m = HashMap::new();
    for s in v["services"].as_array().expect("services array") {
        let name = s["name"].as_str().unwrap_or_default().to_string();
        for r in s["real_servers"].as_array().expect("real_servers array") {
            m.insert(
                (
                    name.clone(),
                    r["address"].as_str().unwrap_or_default().to_string(),
                ),
                r["health"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    m
}

fn rs_addr(i: usize) -> String {
    format!("192.0.2.{}:8080", 10 + i)
}

/// Waits until real server `i` of service `svc` shows `want`; the time it took.
fn wait_health(
    topo: &Topology,
    daemon: &Daemon,
    svc: &str,
    i: usize,
    want: &str,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    let key = (svc.to_string(), rs_addr(i));
    let got = wait_until(within, || {
        (health(topo).get(&key).map(String::as_str) == Some(want)).then(Instant::now)
    });
    match got {
        Some(at) => at - start,
        None => panic!(
            "rs{i} of {svc} not {want} within {within:?}: {:?}\n--- daemon log ---\n{}",
            health(topo),
            daemon.log()
        ),
    }
}

/// `n` requests to the VIP on `port`, each of which must succeed; the count
/// per answering server.
fn requests(topo: &Topology, port: u16, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for k in 0..n {
        let body = topo
            .curl(&format!("http://203.0.113.10:{port}/"), T)
            .unwrap_or_else(|e| panic!("request {k} failed: {e}"));
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

/// A python HTTP server on real server `i`:8080 that answers every GET with
/// 503. The caller reaps it (the topology also kills it on Drop).
fn start_503_server(topo: &Topology, i: usize) -> std::process::Child {
    let script = topo.write_file(
        "http_503.py",
        r#"
import sys, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"unavailable\n"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, fmt, *args):
        pass
class S(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
s = S(("0.0.0.0", int(sys.argv[1])), H)
print("ready", flush=True)
s.serve_forever()
"#,
    );
    let script = script.to_string_lossy().into_owned();
    let rs = topo.rs(i);
    let child = topo.spawn(&rs, &["python3", "-u", &script, "8080"]);
    let listening = wait_until(common::READY_TIMEOUT, || {
        let out = topo.exec(&rs, &["ss", "-Htln", "sport", "= :8080"]);
        (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(listening.is_some(), "503 server on {rs} did not start");
    child
}

#[test]
fn stopped_server_is_taken_out_and_comes_back() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    topo.add_vip_on_director(common::VIP);
    let daemon = Daemon::start(
        &topo,
        &config(&topo, &[service("web", 80, HTTP_CHECK, &[1, 2, 3])]),
    );
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "up", T);
    }
    let seen = requests(&topo, 80, 30);
    assert_eq!(seen.get("rs2"), Some(&10), "{seen:?}");

    topo.kill_http_server("rs2", 8080);
    let bound = INTERVAL * FALL + TIMEOUT;
    let down = wait_health(&topo, &daemon, "web", 2, "down", bound + MARGIN);
    eprintln!("rs2 stopped → marked down after {down:?} (bound {bound:?} + margin)");
    let seen = requests(&topo, 80, 30);
    assert_eq!(
        seen.get("rs2"),
        None,
        "a request reached the down rs2: {seen:?}"
    );
    assert_eq!(seen.get("rs1"), Some(&15), "{seen:?}");
    assert_eq!(seen.get("rs3"), Some(&15), "{seen:?}");

    topo.start_http_server(2, 8080);
    let bound = INTERVAL * RISE + TIMEOUT;
    let up = wait_health(&topo, &daemon, "web", 2, "up", bound + MARGIN);
    eprintln!("rs2 restarted → marked up after {up:?} (bound {bound:?} + margin)");
    let seen = requests(&topo, 80, 30);
    assert_eq!(
        seen.get("rs2"),
        Some(&10),
        "rs2 takes flows again: {seen:?}"
    );
    let log = daemon.log();
    assert!(
        log.contains("connection refused"),
        "reason in the log:\n{log}"
    );
}

#[test]
fn http_503_is_down_for_http_check_and_up_for_tcp_check() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_server(1, 8080);
    topo.start_http_server(2, 8080);
    let mut server_503 = start_503_server(&topo, 3);
    topo.add_vip_on_director(common::VIP);
    let daemon = Daemon::start(
        &topo,
        &config(
            &topo,
            &[
                service("web", 80, HTTP_CHECK, &[1, 2, 3]),
                service("raw", 81, TCP_CHECK, &[1, 2, 3]),
            ],
        ),
    );
    let took = wait_health(&topo, &daemon, "web", 3, "down", T);
    eprintln!("503 server marked down after {took:?} from start");
    wait_health(&topo, &daemon, "web", 1, "up", T);
    wait_health(&topo, &daemon, "web", 2, "up", T);
    for i in 1..=3 {
        wait_health(&topo, &daemon, "raw", i, "up", T);
    }
    // The http service sends no client to the 503 server.
    let seen = requests(&topo, 80, 20);
    assert_eq!(seen.get("rs1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("rs2"), Some(&10), "{seen:?}");
    // Stable: still down a few intervals later, and the reason was logged.
    std::thread::sleep(INTERVAL * 3);
    assert_eq!(
        health(&topo)
            .get(&("web".into(), rs_addr(3)))
            .map(String::as_str),
        Some("down")
    );
    let log = daemon.log();
    assert!(log.contains("status 503"), "reason in the log:\n{log}");
    let _ = server_503.kill();
    let _ = server_503.wait();
}

#[test]
fn all_servers_down_is_a_prompt_refusal() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    topo.add_vip_on_director(common::VIP);
    let daemon = Daemon::start(
        &topo,
        &config(&topo, &[service("web", 80, HTTP_CHECK, &[1, 2, 3])]),
    );
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "up", T);
    }
    for i in 1..=3 {
        topo.kill_http_server(&topo.rs(i), 8080);
    }
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "down", T);
    }
    for k in 0..5 {
        let start = Instant::now();
        let r = topo.curl("http://203.0.113.10/", T);
        let took = start.elapsed();
        let err = match r {
            Ok(body) => panic!("request {k} answered with all servers down: {body:?}"),
            Err(e) => e,
        };
        eprintln!("all down: request {k} refused after {took:?}: {err}");
        assert!(
            // curl's words vary by version: "Connection refused",
            // "Couldn't connect to server" (exit 7) after a RST to the SYN.
            err.contains("refused") || err.contains("reset") || err.contains("(7)"),
            "not a refusal: {err}\n{}",
            daemon.log()
        );
        assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    }
}
