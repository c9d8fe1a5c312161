//! The real-server lifecycle end to end (issue 4, with the operator pieces
//! of issue 3): persistence across a server going down, the sorry server,
//! runtime weights across down/up and a restart, connection thresholds,
//! quorum, `on_down` keep/reset, `rvs drain RIP:PORT`. VS/NAT, `rvs run` in
//! the director namespace, python HTTP servers on the real servers.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{run_bounded, rvs_binary, wait_until, Daemon, Gateway, Topology};

const T: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 2;
/// Slack on top of the protocol bound for a loaded host.
const MARGIN: Duration = Duration::from_millis(1000);
const METRICS: &str = "127.0.0.1:19478";

const HTTP_CHECK: &str = r#"health_check = { type = "http", path = "/", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }"#;

/// Timing-sensitive: one at a time on a small host.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn sock(topo: &Topology) -> String {
    topo.tmp_dir()
        .join("control.sock")
        .to_string_lossy()
        .into_owned()
}

fn daemon_section(topo: &Topology) -> String {
    format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nmetrics_address = \"{METRICS}\"\nworkers = 2\n",
        sock(topo)
    )
}

/// A `[[virtual_service]]` on 203.0.113.10:`port` (NAT) with `extra` lines
/// and real servers (index, weight, extra lines) on port 8080.
fn service(name: &str, port: u16, extra: &str, reals: &[(usize, u32, &str)]) -> String {
    let mut s = format!(
        "\n[[virtual_service]]\nname = \"{name}\"\nprotocol = \"tcp\"\naddress = \"203.0.113.10:{port}\"\nforwarding = \"nat\"\n{extra}\n"
    );
    for (i, w, more) in reals {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\nweight = {w}\n{more}\n",
            10 + i
        ));
    }
    s
}

/// The director with the VIP on it, http servers on 8080 in rs1–rs3, and
/// rvs running the service "web" (VIP:80, NAT) over all three at weight 1
/// with the service lines `extra`.
fn three_servers_web(extra: &str) -> (Topology, Daemon) {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    topo.add_vip_on_director(common::VIP);
    let cfg =
        daemon_section(&topo) + &service("web", 80, extra, &[(1, 1, ""), (2, 1, ""), (3, 1, "")]);
    let daemon = Daemon::start(&topo, &cfg);
    (topo, daemon)
}

fn rvs(args: &[&str]) -> Output {
    let mut cmd = Command::new(rvs_binary());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(10))
}

fn rvs_ok(topo: &Topology, args: &[&str]) {
    let s = sock(topo);
    let mut a = args.to_vec();
    a.extend(["--socket", s.as_str()]);
    let out = rvs(&a);
    assert!(
        out.status.success(),
        "rvs {a:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn services_json(topo: &Topology) -> serde_json::Value {
    common::rvs_json(topo, &["services", "--json"])
}

fn find_service<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no service {name}: {v}"))
}

/// The JSON of real server `i` in service `name`.
fn real(topo: &Topology, name: &str, i: usize) -> serde_json::Value {
    let v = services_json(topo);
    let addr = format!("192.0.2.{}:8080", 10 + i);
    find_service(&v, name)["real_servers"]
        .as_array()
        .expect("real_servers")
        .iter()
        .find(|r| r["address"] == addr.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no {addr} in {name}: {v}"))
}

fn wait_health(
    topo: &Topology,
    daemon: &Daemon,
    name: &str,
    i: usize,
    want: &str,
    within: Duration,
) {
    let ok = wait_until(within, || {
        (real(topo, name, i)["health"] == want).then_some(())
    });
    assert!(
        ok.is_some(),
        "rs{i} of {name} not {want} within {within:?}: {}\n--- daemon log ---\n{}",
        services_json(topo),
        daemon.log()
    );
}

/// The harness's HTTP server on real server `i`, answering `name`, on
/// `port`; the caller owns it (the topology also kills it on Drop).
fn start_named_http(topo: &Topology, i: usize, name: &str, port: u16) -> Child {
    let script = topo.write_file("named_http.py", common::scripts::HTTP_SERVER);
    let script = script.to_string_lossy().into_owned();
    let rs = topo.rs(i);
    let child = topo.spawn(&rs, &["python3", "-u", &script, name, &port.to_string()]);
    let filter = format!("= :{port}");
    let up = wait_until(common::READY_TIMEOUT, || {
        let out = topo.exec(&rs, &["ss", "-Htln", "sport", &filter]);
        (!text(&out.stdout).trim().is_empty()).then_some(())
    });
    assert!(up.is_some(), "{name} server on {rs}:{port} did not start");
    child
}

/// `n` requests to the VIP on `port`, each of which must succeed: the count
/// per answering server.
fn hits(topo: &Topology, port: u16, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for k in 0..n {
        let body = topo
            .curl(&format!("http://203.0.113.10:{port}/"), T)
            .unwrap_or_else(|e| panic!("request {k} to :{port} failed: {e}"));
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

fn scrape(topo: &Topology) -> String {
    let out = topo.exec(
        "dir",
        &[
            "curl",
            "-sS",
            "--fail",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            &format!("http://{METRICS}/metrics"),
        ],
    );
    assert!(out.status.success(), "scrape: {}", text(&out.stderr));
    text(&out.stdout)
}

fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Holds `n` idle connections to the VIP on `port` for `secs` seconds.
const HOLD: &str = r#"
import socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ss = [socket.create_connection(("203.0.113.10", port), timeout=5) for _ in range(n)]
print("held " + " ".join(str(s.getsockname()[1]) for s in ss), flush=True)
time.sleep(secs)
"#;

/// Connects to the VIP on `port`, waits (≤ 20 s) for the file `go` to
/// exist, then sends GET / and prints `ok BODY` or `fail ERROR`.
const LATE_REQUEST: &str = r#"
import os, socket, sys, time
port, go = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("203.0.113.10", port), timeout=5)
print("connected", flush=True)
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
try:
    s.settimeout(3)
    s.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
    data = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        data += b
    body = data.split(b"\r\n\r\n", 1)[1].decode().strip() if b"\r\n\r\n" in data else ""
    print("ok " + body if data.startswith(b"HTTP/1.0 200") else "fail short " + repr(data), flush=True)
except Exception as e:
    print("fail " + type(e).__name__ + " " + str(e), flush=True)
"#;

fn wait_log_line(log: &std::path::Path, prefix: &str, within: Duration) -> String {
    wait_until(within, || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {prefix:?} line in {}: {}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        )
    })
}

#[test]
fn sticky_client_is_rescheduled_when_its_server_goes_down() {
    let _serial = serial();
    let (topo, daemon) = three_servers_web(&format!(
        "scheduler = \"rr\"\npersistence = {{ timeout = \"5m\" }}\n{HTTP_CHECK}"
    ));
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "up", T);
    }
    let seen = hits(&topo, 80, 6);
    assert_eq!(
        seen.len(),
        1,
        "a persistent client sticks to one server: {seen:?}"
    );
    let sticky = seen.keys().next().cloned().unwrap_or_default();
    let i: usize = sticky
        .strip_prefix("rs")
        .and_then(|n| n.parse().ok())
        .expect("rsN");

    topo.kill_http_server(&sticky, 8080);
    let killed = Instant::now();
    let window = INTERVAL * FALL + TIMEOUT + MARGIN;
    let mut results: Vec<(Duration, Result<String, String>)> = Vec::new();
    // Bounded: requests until 3 s past the detection window.
    while killed.elapsed() < window + Duration::from_secs(3) {
        let r = topo.curl("http://203.0.113.10/", T);
        results.push((killed.elapsed(), r.map(|b| b.trim().to_string())));
    }
    let early_failures = results
        .iter()
        .filter(|(t, r)| *t < window && r.is_err())
        .count();
    let after: Vec<&(Duration, Result<String, String>)> =
        results.iter().filter(|(t, _)| *t >= window).collect();
    eprintln!(
        "sticky rs{i} killed: {} requests, {early_failures} failed inside the {window:?} window, {} after it",
        results.len(),
        after.len()
    );
    assert!(
        after.len() >= 10,
        "too few requests after the window: {}",
        after.len()
    );
    let mut new_home = None;
    for (t, r) in &after {
        match r {
            Ok(body) => {
                assert_ne!(body, &sticky, "request at {t:?} reached the down server");
                assert!(
                    new_home.get_or_insert(body.clone()) == body,
                    "the rescheduled client sticks to its new server: {after:?}"
                );
            }
            Err(e) => panic!(
                "request at {t:?} (window {window:?}) failed: {e}\n{}",
                daemon.log()
            ),
        }
    }
    assert_eq!(real(&topo, "web", i)["health"], "down");
    // Its template now names the new server.
    let out = rvs(&["conns", "--socket", &sock(&topo), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conns json");
    let templates: Vec<&serde_json::Value> = v["connections"]
        .as_array()
        .expect("connections")
        .iter()
        .filter(|c| c["template"] == true)
        .collect();
    assert_eq!(templates.len(), 1, "{v}");
    let home = new_home.expect("answered");
    let home_i: usize = home[2..].parse().expect("rsN");
    assert_eq!(
        templates[0]["real_server"],
        format!("192.0.2.{}:8080", 10 + home_i).as_str(),
        "{v}"
    );
}

#[test]
fn sorry_server_takes_new_flows_while_every_server_is_down() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_server(1, 8080);
    topo.start_http_server(2, 8080);
    // rs3 is not in the pool: it runs the sorry server on 8081.
    let mut sorry = start_named_http(&topo, 3, "sorry", 8081);
    topo.add_vip_on_director(common::VIP);
    let cfg = daemon_section(&topo)
        + &service(
            "web",
            80,
            &format!("scheduler = \"rr\"\nsorry_server = \"192.0.2.13:8081\"\n{HTTP_CHECK}"),
            &[(1, 1, ""), (2, 1, "")],
        );
    let daemon = Daemon::start(&topo, &cfg);
    wait_health(&topo, &daemon, "web", 1, "up", T);
    wait_health(&topo, &daemon, "web", 2, "up", T);
    let seen = hits(&topo, 80, 10);
    assert_eq!(seen.get("rs1"), Some(&5), "{seen:?}");
    assert_eq!(seen.get("rs2"), Some(&5), "{seen:?}");
    assert_eq!(
        find_service(&services_json(&topo), "web")["degraded"],
        false
    );

    topo.kill_http_server("rs1", 8080);
    topo.kill_http_server("rs2", 8080);
    wait_health(&topo, &daemon, "web", 1, "down", T);
    wait_health(&topo, &daemon, "web", 2, "down", T);
    let seen = hits(&topo, 80, 10);
    assert_eq!(seen.get("sorry"), Some(&10), "{seen:?}");
    let v = services_json(&topo);
    assert_eq!(find_service(&v, "web")["degraded"], true, "{v}");
    let m = scrape(&topo);
    assert_eq!(
        metric(&m, "rvs_service_degraded{service=\"203.0.113.10:80/tcp\"}"),
        Some(1.0),
        "{m}"
    );

    topo.start_http_server(1, 8080);
    wait_health(&topo, &daemon, "web", 1, "up", T);
    let seen = hits(&topo, 80, 10);
    assert_eq!(
        seen.get("rs1"),
        Some(&10),
        "back from the sorry server: {seen:?}"
    );
    let v = services_json(&topo);
    assert_eq!(find_service(&v, "web")["degraded"], false, "{v}");
    let _ = sorry.kill();
    let _ = sorry.wait();
}

#[test]
fn runtime_weight_returns_after_down_and_up() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    topo.add_vip_on_director(common::VIP);
    let cfg = daemon_section(&topo)
        + &service(
            "web",
            80,
            &format!("scheduler = \"wrr\"\n{HTTP_CHECK}"),
            &[(1, 1, ""), (2, 1, ""), (3, 1, "")],
        );
    let daemon = Daemon::start(&topo, &cfg);
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "up", T);
    }
    rvs_ok(
        &topo,
        &["weight", "203.0.113.10:80", "192.0.2.11:8080", "5"],
    );
    let r = real(&topo, "web", 1);
    assert_eq!(
        (r["weight"].as_u64(), r["weight_source"].as_str()),
        (Some(5), Some("runtime")),
        "{r}"
    );

    topo.kill_http_server("rs1", 8080);
    wait_health(&topo, &daemon, "web", 1, "down", T);
    let r = real(&topo, "web", 1);
    assert_eq!(r["effective_weight"], 0, "{r}");
    let seen = hits(&topo, 80, 6);
    assert_eq!(seen.get("rs1"), None, "{seen:?}");

    topo.start_http_server(1, 8080);
    wait_health(&topo, &daemon, "web", 1, "up", T);
    let r = real(&topo, "web", 1);
    assert_eq!(
        (r["weight"].as_u64(), r["effective_weight"].as_u64()),
        (Some(5), Some(5)),
        "the runtime weight comes back, not the file's 1: {r}"
    );
    // wrr 5/1/1 from a fresh table: two full cycles.
    let seen = hits(&topo, 80, 14);
    assert_eq!(seen.get("rs1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("rs2"), Some(&2), "{seen:?}");
}

#[test]
fn max_connections_stops_new_flows_until_below_min() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let short = "[timeouts]\ntcp_fin_wait = \"1s\"\ntcp_time_wait = \"1s\"\ntcp_close = \"1s\"\ntcp_close_wait = \"1s\"\ntcp_last_ack = \"1s\"\n";
    // wrr 100/1/1 sends the first flows to rs1; its limit is 2 (back below 1).
    let cfg = daemon_section(&topo)
        + short
        + &service(
            "web",
            80,
            "scheduler = \"wrr\"",
            &[
                (1, 100, "max_connections = 2\nmin_connections = 1"),
                (2, 1, ""),
                (3, 1, ""),
            ],
        );
    let daemon = Daemon::start(&topo, &cfg);
    let script = topo.write_file("hold.py", HOLD);
    let (mut holder, log) = topo.spawn_logged(
        "cli",
        &["python3", "-u", &script.to_string_lossy(), "80", "2", "30"],
    );
    wait_log_line(&log, "held ", T);
    let r = real(&topo, "web", 1);
    assert_eq!(r["active"], 2, "both held connections on rs1: {r}");

    // The third and later new flows go elsewhere while rs1 is at its limit.
    let seen = hits(&topo, 80, 6);
    assert_eq!(
        seen.get("rs1"),
        None,
        "rs1 over max_connections got flows: {seen:?}"
    );
    assert_eq!(seen.values().sum::<usize>(), 6);

    let _ = holder.kill();
    let _ = holder.wait();
    // The held connections close and their entries expire (1 s timeouts).
    let drained = wait_until(Duration::from_secs(10), || {
        let r = real(&topo, "web", 1);
        (r["active"] == 0 && r["inactive"] == 0).then_some(())
    });
    assert!(
        drained.is_some(),
        "rs1 still has connections: {}\n{}",
        real(&topo, "web", 1),
        daemon.log()
    );
    // It takes flows again; closed connections count until their entries
    // expire (active + inactive, as IPVS counts), so at most 2 of a quick
    // burst before it is at its limit once more.
    let seen = hits(&topo, 80, 6);
    let rs1 = seen.get("rs1").copied().unwrap_or(0);
    assert!(
        (1..=2).contains(&rs1),
        "rs1 takes flows again below min_connections, up to its limit: {seen:?}"
    );
}

#[test]
fn quorum_crossing_is_logged_once_and_exported() {
    let _serial = serial();
    let (topo, daemon) =
        three_servers_web(&format!("scheduler = \"rr\"\nquorum = 2\n{HTTP_CHECK}"));
    for i in 1..=3 {
        wait_health(&topo, &daemon, "web", i, "up", T);
    }
    let label = "rvs_service_degraded{service=\"203.0.113.10:80/tcp\"}";
    assert_eq!(metric(&scrape(&topo), label), Some(0.0));

    topo.kill_http_server("rs2", 8080);
    wait_health(&topo, &daemon, "web", 2, "down", T);
    assert_eq!(
        metric(&scrape(&topo), label),
        Some(0.0),
        "up weight 2 meets quorum 2"
    );
    topo.kill_http_server("rs3", 8080);
    wait_health(&topo, &daemon, "web", 3, "down", T);
    let m = scrape(&topo);
    assert_eq!(metric(&m, label), Some(1.0), "{m}");
    assert_eq!(find_service(&services_json(&topo), "web")["degraded"], true);
    // Still serving from rs1.
    let seen = hits(&topo, 80, 4);
    assert_eq!(seen.get("rs1"), Some(&4), "{seen:?}");
    std::thread::sleep(INTERVAL * 5);
    let below = daemon.log().matches("below quorum").count();
    assert_eq!(below, 1, "one line per crossing:\n{}", daemon.log());

    topo.start_http_server(3, 8080);
    wait_health(&topo, &daemon, "web", 3, "up", T);
    let m = scrape(&topo);
    assert_eq!(metric(&m, label), Some(0.0), "{m}");
    let log = daemon.log();
    assert_eq!(log.matches("quorum restored").count(), 1, "{log}");
    assert_eq!(log.matches("below quorum").count(), 1, "{log}");
}

#[test]
fn on_down_reset_drops_held_connections_and_keep_lets_them_finish() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_server(1, 8080);
    // The health checks probe a second server on 8081; killing it fails
    // the check while the data port still serves.
    let mut check_server = start_named_http(&topo, 1, "check", 8081);
    topo.add_vip_on_director(common::VIP);
    let check = r#"health_check = { type = "tcp", interval = "200ms", timeout = "150ms", rise = 2, fall = 2, check_port = 8081 }"#;
    let cfg = daemon_section(&topo)
        + &service(
            "keep",
            80,
            &format!("scheduler = \"rr\"\n{check}"),
            &[(1, 1, "")],
        )
        + &service(
            "reset",
            81,
            &format!("scheduler = \"rr\"\non_down = \"reset\"\n{check}"),
            &[(1, 1, "")],
        );
    // The reset service's real server listens on 8080 too (NAT rewrites
    // 81 → 8080), so both services reach the same data server.
    let daemon = Daemon::start(&topo, &cfg);
    wait_health(&topo, &daemon, "keep", 1, "up", T);
    wait_health(&topo, &daemon, "reset", 1, "up", T);

    let script = topo.write_file("late.py", LATE_REQUEST);
    let go = topo.tmp_dir().join("go");
    let go_s = go.to_string_lossy().into_owned();
    let script_s = script.to_string_lossy().into_owned();
    let (mut keep_client, keep_log) =
        topo.spawn_logged("cli", &["python3", "-u", &script_s, "80", &go_s]);
    let (mut reset_client, reset_log) =
        topo.spawn_logged("cli", &["python3", "-u", &script_s, "81", &go_s]);
    wait_log_line(&keep_log, "connected", T);
    wait_log_line(&reset_log, "connected", T);
    let drops_before = services_json(&topo)["drops"]["real_server_reset"]
        .as_u64()
        .unwrap_or(0);

    let _ = check_server.kill();
    let _ = check_server.wait();
    wait_health(&topo, &daemon, "keep", 1, "down", T);
    wait_health(&topo, &daemon, "reset", 1, "down", T);
    std::fs::write(&go, "go").expect("write go");

    let keep = wait_until(Duration::from_secs(10), || {
        let l = std::fs::read_to_string(&keep_log).unwrap_or_default();
        l.lines()
            .find(|l| l.starts_with("ok") || l.starts_with("fail"))
            .map(str::to_string)
    })
    .expect("keep client finished");
    assert_eq!(
        keep, "ok rs1",
        "on_down = keep: the held connection completes"
    );
    let reset = wait_until(Duration::from_secs(10), || {
        let l = std::fs::read_to_string(&reset_log).unwrap_or_default();
        l.lines()
            .find(|l| l.starts_with("ok") || l.starts_with("fail"))
            .map(str::to_string)
    })
    .expect("reset client finished");
    assert!(
        reset.starts_with("fail"),
        "on_down = reset: the held connection is dropped, got {reset:?}"
    );
    let drops_after = services_json(&topo)["drops"]["real_server_reset"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        drops_after > drops_before,
        "real_server_reset {drops_before} → {drops_after}"
    );
    eprintln!("keep: {keep}; reset: {reset}; real_server_reset {drops_before} → {drops_after}");
    for c in [&mut keep_client, &mut reset_client] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn drain_everywhere_and_runtime_weights_survive_a_restart() {
    let _serial = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let cfg = |w2: u32| {
        daemon_section(&topo)
            + &service(
                "web",
                80,
                "scheduler = \"rr\"",
                &[(1, 1, ""), (2, w2, ""), (3, 1, "")],
            )
            + &service("alt", 81, "scheduler = \"rr\"", &[(1, 1, ""), (2, 1, "")])
    };
    let mut daemon = Daemon::start(&topo, &cfg(1));
    rvs_ok(&topo, &["drain", "192.0.2.11:8080"]);
    rvs_ok(
        &topo,
        &["weight", "203.0.113.10:80", "192.0.2.12:8080", "5"],
    );
    let check_drained = |topo: &Topology| {
        for svc in ["web", "alt"] {
            let r = real(topo, svc, 1);
            assert_eq!(
                (r["weight"].as_u64(), r["weight_source"].as_str()),
                (Some(0), Some("runtime")),
                "{svc}: {r}"
            );
        }
        let seen = hits(topo, 80, 6);
        assert_eq!(seen.get("rs1"), None, "drained rs1 got flows: {seen:?}");
    };
    check_drained(&topo);
    let alt = {
        let mut m = HashMap::new();
        for _ in 0..4 {
            let b = topo
                .curl("http://203.0.113.10:81/", T)
                .expect("alt request");
            *m.entry(b.trim().to_string()).or_insert(0) += 1;
        }
        m
    };
    assert_eq!(alt.get("rs2"), Some(&4), "alt: only rs2 is left: {alt:?}");
    // No such server anywhere: one clear error.
    let out = rvs(&["drain", "--socket", &sock(&topo), "192.0.2.99:8080"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no service has real server"),
        "{}",
        text(&out.stderr)
    );

    let state = topo.tmp_dir().join("state").join("weights.json");
    assert!(state.exists(), "state file {}", state.display());
    assert_eq!(daemon.stop().code(), Some(0));

    // A restart with the same file: the runtime weights come back.
    let mut daemon = Daemon::start(&topo, &cfg(1));
    check_drained(&topo);
    let r = real(&topo, "web", 2);
    assert_eq!(
        (r["weight"].as_u64(), r["weight_source"].as_str()),
        (Some(5), Some("runtime")),
        "{r}"
    );
    assert!(
        daemon.log().contains("runtime weights restored"),
        "{}",
        daemon.log()
    );
    assert_eq!(daemon.stop().code(), Some(0));

    // The file changes rs2's weight in web: the file wins there, the rest stays.
    let daemon = Daemon::start(&topo, &cfg(2));
    let r = real(&topo, "web", 2);
    assert_eq!(
        (r["weight"].as_u64(), r["weight_source"].as_str()),
        (Some(2), Some("file")),
        "{r}"
    );
    check_drained(&topo);
    assert!(
        daemon.log().contains("the file changed its weight"),
        "{}",
        daemon.log()
    );
}

#[test]
fn flows_spread_over_both_workers_of_one_fanout_group() {
    let _serial = serial();
    let (topo, daemon) = three_servers_web("scheduler = \"rr\"");
    // Both workers' sockets on eth0 are in one group: a socket that asked
    // for a group of its own would get a copy of every frame.
    let ss = topo.exec_ok("dir", &["ss", "-0", "-e", "-n", "-p"]);
    let ids: Vec<&str> = ss
        .split("p_raw")
        .filter(|e| e.contains("\"rvs\""))
        .map(|e| {
            e.split("fanout(id:")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap_or("none")
        })
        .collect();
    assert!(
        ids.len() == 2 && ids[0] == ids[1] && ids[0] != "none",
        "two sockets in one fanout group: {ids:?}\n{ss}"
    );
    // Each request is a new client port, so a new flow hash: with 40 of
    // them, both workers of the interface's fanout group (whose id the
    // kernel chose) must have had some.
    let seen = hits(&topo, 80, 40);
    assert_eq!(seen.values().sum::<usize>(), 40, "{seen:?}");
    let m = scrape(&topo);
    for w in 0..2 {
        let n = metric(&m, &format!("rvs_worker_packets_total{{worker=\"{w}\"}}"));
        assert!(
            n.is_some_and(|n| n > 0.0),
            "worker {w} forwarded nothing:\n{m}\n{}",
            daemon.log()
        );
    }
}
