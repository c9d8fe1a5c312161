//! Operating rvs from the shell (issue 3): `rvs check`, `rvs conns`,
//! `rvs services`, `rvs weight`/`drain`/`zero`, metrics, and the control
//! socket's permissions.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{run_bounded, rvs_binary, wait_until, Daemon, Gateway, Topology};

const T: Duration = Duration::from_secs(5);
const METRICS: &str = "127.0.0.1:19477";

fn rvs(args: &[&str]) -> Output {
    let mut cmd = Command::new(rvs_binary());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(10))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn is_location_line(l: &str, path: &str) -> bool {
    l.strip_prefix(path)
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(|rest| {
            let mut it = rest.splitn(3, ':');
            let (a, b) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
                && it.next().is_some()
        })
}

#[test]
fn check_accepts_the_examples_and_reports_every_mistake() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("config dir") {
        let p = e.expect("entry").path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let ps = p.to_string_lossy().into_owned();
        let out = rvs(&["check", "--config", &ps]);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "rvs check {ps}: {stdout}{}",
            text(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout:?}");
        assert!(stdout.contains("ok"), "{stdout}");
        n += 1;
    }
    assert!(n >= 3, "only {n} example configs");

    let tmp = std::env::temp_dir().join(format!("rvs-check-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");
    let bad = tmp.join("bad.toml");
    std::fs::write(
        &bad,
        r#"[daemon]
interfaces = ["lo"]
control_socket = "/run/rvs/test.sock"

[[virtual_service]]
name = "web"
protocol = "tcp"
address = "203.0.113.10:80"
scheduler = "wlc"
forwarding = "nat"
colour = "blue"

[[virtual_service.real_server]]
address = "192.0.2.300:8080"

[[virtual_service.real_server]]
address = "192.0.2.12:8080"
weight = 70000

[[virtual_service.real_server]]
address = "192.0.2.12:8080"
"#,
    )
    .expect("write bad config");
    let bs = bad.to_string_lossy().into_owned();
    let out = rvs(&["check", "--config", &bs]);
    let _ = std::fs::remove_dir_all(&tmp);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let located: Vec<&str> = stderr
        .lines()
        .filter(|l| is_location_line(l, &bs))
        .collect();
    // unknown key (line 11), bad address (14), weight (18), duplicate (21).
    for line in [11, 14, 18, 21] {
        let p = format!("{bs}:{line}:");
        assert!(
            located.iter().any(|l| l.starts_with(&p)),
            "no error at line {line}:\n{stderr}"
        );
    }
}

#[test]
fn client_without_daemon_says_so_in_one_line() {
    for args in [
        &["services"][..],
        &["conns", "--json"],
        &["reload"],
        &["zero"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--socket", "/nonexistent/rvs-e2e.sock"]);
        let out = rvs(&a);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{a:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{a:?}: {stderr:?}");
        assert!(
            stderr.starts_with("rvs is not running"),
            "{a:?}: {stderr:?}"
        );
    }
}

fn nat_config(topo: &Topology) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    let mut s = format!(
        r#"[daemon]
interfaces = ["eth0"]
control_socket = "{}"
metrics_address = "{METRICS}"
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
            "\n[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\nweight = 1\n",
            10 + i
        ));
    }
    s
}

/// Holds 3 connections to the VIP open; returns their client ports.
const HOLD: &str = r#"
import socket, sys, time
ss = [socket.create_connection(("203.0.113.10", 80), timeout=5) for _ in range(3)]
print("ports " + " ".join(str(s.getsockname()[1]) for s in ss), flush=True)
time.sleep(float(sys.argv[1]))
"#;

fn services_json(sock: &str) -> serde_json::Value {
    let out = rvs(&["services", "--socket", sock, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("services json")
}

fn reals(v: &serde_json::Value) -> HashMap<String, serde_json::Value> {
    v["services"][0]["real_servers"]
        .as_array()
        .expect("real_servers")
        .iter()
        .map(|r| (r["address"].as_str().unwrap_or("").to_string(), r.clone()))
        .collect()
}

fn hits(topo: &Topology, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for k in 0..n {
        let body = topo
            .curl("http://203.0.113.10/", T)
            .unwrap_or_else(|e| panic!("request {k}: {e}"));
        *seen.entry(body.trim().to_string()).or_insert(0) += 1;
    }
    seen
}

fn metric(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn conns_services_weight_drain_zero_metrics_and_socket() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let daemon = Daemon::start(&topo, &nat_config(&topo));
    let sock_path = topo.tmp_dir().join("control.sock");
    let sock = sock_path.to_string_lossy().into_owned();

    // The control socket is 0600.
    let mode = std::fs::metadata(&sock_path)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    // Three held connections appear in `rvs conns --json`, exactly.
    let script = topo.write_file("hold.py", HOLD);
    let (mut holder, log) = topo.spawn_logged("cli", &["python3", &script.to_string_lossy(), "20"]);
    let ports: BTreeSet<u16> = wait_until(T, || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.lines()
            .find_map(|l| l.strip_prefix("ports "))
            .map(|p| p.split(' ').filter_map(|x| x.parse().ok()).collect())
    })
    .unwrap_or_else(|| {
        panic!(
            "holder never connected: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert_eq!(ports.len(), 3);
    let conns = wait_until(T, || {
        let out = rvs(&["conns", "--socket", &sock, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conns json");
        let c = v["connections"].as_array().expect("connections").clone();
        (c.len() == 3 && c.iter().all(|c| c["state"] == "ESTABLISHED")).then_some(c)
    })
    .expect("three ESTABLISHED connections in rvs conns --json");
    let mut seen_ports = BTreeSet::new();
    let mut seen_reals = BTreeSet::new();
    for c in &conns {
        let client = c["client"].as_str().expect("client");
        let (ip, port) = client.rsplit_once(':').expect("ip:port");
        assert_eq!(ip, "198.51.100.2", "{c}");
        seen_ports.insert(port.parse::<u16>().expect("port"));
        assert_eq!(c["virtual"], "203.0.113.10:80", "{c}");
        assert_eq!(c["protocol"], "tcp", "{c}");
        assert_eq!(c["template"], false, "{c}");
        seen_reals.insert(c["real_server"].as_str().expect("real_server").to_string());
    }
    assert_eq!(seen_ports, ports, "client ports");
    // rr over three servers: one connection each.
    let all: BTreeSet<String> = (11..=13).map(|i| format!("192.0.2.{i}:8080")).collect();
    assert_eq!(seen_reals, all);

    // The table for people: mm:ss expiry, one row per connection.
    let out = rvs(&["conns", "--socket", &sock]);
    let t = text(&out.stdout);
    assert!(out.status.success());
    let mut lines = t.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["pro", "expire", "state", "source", "virtual", "destination"]
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 3, "{t}");
    for r in &rows {
        assert_eq!(r.len(), 6, "{t}");
        assert_eq!(r[0], "TCP");
        let (m, s) = r[1].split_once(':').expect("mm:ss");
        assert!(m.len() == 2 && s.len() == 2 && s < "60", "expire {}", r[1]);
        assert!(m >= "14", "ESTABLISHED expires in ~15 minutes: {}", r[1]);
        assert_eq!(r[2], "ESTABLISHED");
        assert_eq!(r[4], "203.0.113.10:80");
    }

    // `rvs services`: ActiveConn 1 per server.
    let out = rvs(&["services", "--socket", &sock]);
    let t = text(&out.stdout);
    assert!(t.contains("ActiveConn") && t.contains("InActConn"), "{t}");
    for a in &all {
        let row = t.lines().find(|l| l.contains(a.as_str())).expect("row");
        let f: Vec<&str> = row.split_whitespace().collect();
        // -> ADDR Masq WEIGHT ACTIVE INACTIVE HEALTH
        assert_eq!((f[2], f[3], f[4]), ("Masq", "1", "1"), "{row}");
    }
    let _ = holder.kill();
    let _ = holder.wait();

    // Weight 0 stops new flows; drain too.
    let out = rvs(&[
        "weight",
        "--socket",
        &sock,
        "203.0.113.10:80",
        "192.0.2.11:8080",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = hits(&topo, 12);
    let rs3_after_weight = seen.get("rs3").copied().unwrap_or(0) as f64;
    assert_eq!(seen.get("rs1"), None, "weight 0 still got flows: {seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 12);
    let out = rvs(&[
        "drain",
        "--socket",
        &sock,
        "203.0.113.10:80",
        "192.0.2.12:8080",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = hits(&topo, 8);
    assert_eq!(seen.get("rs3"), Some(&8), "after drain: {seen:?}");
    let r = reals(&services_json(&sock));
    assert_eq!(r["192.0.2.11:8080"]["weight"], 0);
    assert_eq!(r["192.0.2.12:8080"]["weight"], 0);
    assert_eq!(r["192.0.2.13:8080"]["weight"], 1);
    // 3 held + 12 + 8 connections so far.
    let total: u64 = r.values().map(|x| x["conns"].as_u64().unwrap_or(0)).sum();
    assert_eq!(total, 23, "{r:?}");

    // Metrics, scraped inside the director namespace.
    let scrape = || {
        let out = topo.exec(
            "dir",
            &[
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "5",
                &format!("http://{METRICS}/metrics"),
            ],
        );
        assert!(out.status.success(), "scrape: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let m = scrape();
    let label = "{service=\"203.0.113.10:80/tcp\",real_server=\"192.0.2.13:8080\"}";
    assert_eq!(
        metric(&m, &format!("rvs_real_server_connections_total{label}")),
        Some(1.0 + rs3_after_weight + 8.0),
        "{m}"
    );
    assert!(
        metric(&m, "rvs_connection_table_entries ").is_some_and(|v| v >= 20.0),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("rvs_drops_total{reason=\"")),
        "{m}"
    );
    assert_eq!(
        metric(&m, "rvs_reloads_total{result=\"ok\"}"),
        Some(0.0),
        "{m}"
    );
    let out = rvs(&["reload", "--socket", &sock]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let m = scrape();
    assert_eq!(
        metric(&m, "rvs_reloads_total{result=\"ok\"}"),
        Some(1.0),
        "{m}"
    );
    // The reload changed no weight in the file: runtime weights stay.
    let r = reals(&services_json(&sock));
    assert_eq!(r["192.0.2.11:8080"]["weight"], 0);

    // Zero.
    let out = rvs(&["zero", "--socket", &sock]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = reals(&services_json(&sock));
    for (a, x) in &r {
        assert_eq!(x["conns"], 0, "{a} after zero: {x}");
        assert_eq!(x["in_pkts"], 0, "{a} after zero: {x}");
    }

    // A non-root peer is refused by SO_PEERCRED (after getting past the
    // file mode), with one clear line.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    std::fs::set_permissions(topo.tmp_dir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod dir");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(rvs_binary())
        .args(["services", "--socket", &sock]);
    let out = run_bounded(cmd, Duration::from_secs(10));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    // Root still gets in.
    let _ = services_json(&sock);
    drop(daemon);
}

/// Sends one UDP datagram to VIP:53 from each of `argv[1]` source ports on
/// each of 198.51.100.2 and .3 (raw socket: the client owns only .2; the
/// answers to .3 are lost in the router, which is fine here), paced below
/// what one worker takes, twice (the second pass fills any gap a full ring
/// left).
const FLOWS: &str = r#"
import socket, struct, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton("203.0.113.10")
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
for _ in range(2):
    sent = 0
    for src in ("198.51.100.2", "198.51.100.3"):
        sa = socket.inet_aton(src)
        for port in range(10000, 10000 + n):
            udp = struct.pack("!HHHH", port, 53, 12, 0) + b"flow"
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 32, 0, 0x4000, 64, 17, 0, sa, dst)
            ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
            s.sendto(ip + udp, ("203.0.113.10", 0))
            sent += 1
            if sent % 200 == 0:
                time.sleep(0.002)
print("sent", flush=True)
"#;

/// The peak resident memory of `pid` (VmHWM), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

#[test]
fn conns_of_a_large_table_streams_in_bounded_memory() {
    const PER_SOURCE: usize = 50_000;
    let topo = Topology::with_gateway(3, Gateway::Director);
    let sock = topo.tmp_dir().join("control.sock");
    let mut config = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nworkers = 1\n\n\
         [[virtual_service]]\nname = \"dns\"\nprotocol = \"udp\"\naddress = \"203.0.113.10:53\"\n\
         scheduler = \"rr\"\nforwarding = \"nat\"\n",
        sock.display()
    );
    for i in 1..=3 {
        config.push_str(&format!(
            "\n[[virtual_service.real_server]]\naddress = \"192.0.2.{}:5353\"\n",
            10 + i
        ));
    }
    config.push_str(
        "\n[[virtual_service]]\nname = \"web\"\nprotocol = \"tcp\"\naddress = \"203.0.113.10:80\"\n\
         scheduler = \"rr\"\nforwarding = \"nat\"\n\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n",
    );
    let daemon = Daemon::start(&topo, &config);
    let sock = sock.to_string_lossy().into_owned();
    let script = topo.write_file("flows.py", FLOWS);
    let want = 2 * PER_SOURCE;
    let entries = |sock: &str| {
        let out = rvs(&["services", "--socket", sock, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services json");
        v["connection_table_entries"].as_u64()
    };
    // Each run sends every flow twice; a busy machine may still drop some
    // at a full ring, so run it again (at most three times) until every
    // flow has its entry.
    for _ in 0..3 {
        let out = topo.exec_timeout(
            "cli",
            &[
                "python3",
                &script.to_string_lossy(),
                &PER_SOURCE.to_string(),
            ],
            Duration::from_secs(120),
        );
        assert!(
            out.status.success() && text(&out.stdout).contains("sent"),
            "flow generator: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        if entries(&sock) == Some(want as u64) {
            break;
        }
    }
    assert_eq!(entries(&sock), Some(want as u64), "one entry per flow");

    let before = peak_kib(daemon.pid());
    let mut cmd = Command::new(rvs_binary());
    cmd.args(["conns", "--socket", &sock, "--json"]);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conns json");
    let conns = v["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), want);
    let clients: BTreeSet<&str> = conns.iter().filter_map(|c| c["client"].as_str()).collect();
    assert_eq!(clients.len(), want, "every flow once");
    assert!(conns
        .iter()
        .all(|c| c["protocol"] == "udp" && c["state"] == "UDP"));
    let mut cmd = Command::new(rvs_binary());
    cmd.args(["conns", "--socket", &sock]);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        want + 1,
        "header + one row per flow"
    );
    // One service's part of the table, and a service with none.
    let count = |service: &str| {
        let mut cmd = Command::new(rvs_binary());
        cmd.args(["conns", "--socket", &sock, "--json", "--service", service]);
        let out = run_bounded(cmd, Duration::from_secs(60));
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("conns json");
        v["connections"].as_array().map(Vec::len)
    };
    assert_eq!(count("203.0.113.10:53/udp"), Some(want));
    assert_eq!(
        count("203.0.113.10:80"),
        Some(0),
        "the TCP service has none"
    );
    // A reader that stops early (`| head`) ends the listing quietly.
    let pipe = format!(
        "set -o pipefail; {} conns --socket {sock} | head -n 3 >/dev/null",
        rvs_binary().display()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &pipe]);
    let out = run_bounded(cmd, Duration::from_secs(60));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "rvs conns | head: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    let after = peak_kib(daemon.pid());
    eprintln!("daemon peak RSS {before} KiB before rvs conns, {after} KiB after ({want} entries)");
    assert!(
        after - before < 16 * 1024,
        "listing {want} connections grew the daemon's peak memory by {} KiB",
        after - before
    );
}

#[test]
fn client_commands_take_the_socket_from_config_even_a_broken_one_and_never_guess() {
    let dir = std::env::temp_dir().join(format!("rvs-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sock = dir.join("elsewhere.sock");
    // Valid TOML, invalid config (an unknown key): its socket still counts.
    let broken = dir.join("broken.toml");
    std::fs::write(
        &broken,
        format!(
            "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nno_such_key = 1\n",
            sock.display()
        ),
    )
    .expect("write");
    let out = rvs(&["services", "--config", &broken.to_string_lossy()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&sock.display().to_string()),
        "did not use the file's socket: {}",
        text(&out.stderr)
    );
    // A file that cannot be read is an error, not the default socket.
    let missing = dir.join("missing.toml");
    let out = rvs(&["conns", "--config", &missing.to_string_lossy()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("missing.toml"),
        "{err}"
    );
    assert!(!err.contains("/run/rvs"), "fell back to the default: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}
