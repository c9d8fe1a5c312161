//! Reload without loss (issue 3): while a client runs a bounded stream of
//! short HTTP requests and one long, rate-limited transfer through a VS/NAT
//! service, the config file is rewritten and reloaded 20 times (alternating
//! two valid tables that differ in weights, an added and a removed server)
//! and 5 times with broken files. Every request succeeds, the long transfer
//! arrives intact, broken reloads report FILE:LINE:COLUMN and change
//! nothing, and per-server counters never go backwards.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{expected_bytes, run_bounded, rvs_binary, wait_until, Daemon, Gateway, Topology};

const LONG_BYTES: usize = 20_000_000;
const SHORT_REQUESTS: usize = 300;

/// The table: (server index, weight) pairs, on_remove = "drain".
fn config(topo: &Topology, reals: &[(usize, u32)]) -> String {
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
scheduler = "wrr"
forwarding = "nat"
on_remove = "drain"
"#,
        sock.display()
    );
    for (i, w) in reals {
        s.push_str(&format!(
            "\n[[virtual_service.real_server]]\naddress = \"192.0.2.{}:8080\"\nweight = {w}\n",
            10 + i
        ));
    }
    s
}

fn rvs(args: &[&str]) -> Output {
    let mut cmd = Command::new(rvs_binary());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(10))
}

/// `rvs services --json` as {real server → (weight, conns)}.
fn table(sock: &str) -> BTreeMap<String, (u64, u64)> {
    let out = rvs(&["services", "--socket", sock, "--json"]);
    assert!(
        out.status.success(),
        "rvs services: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("services json");
    let mut t = BTreeMap::new();
    for s in v["services"].as_array().expect("services") {
        if s["address"] != "203.0.113.10:80" || s["accepting"] != true {
            continue;
        }
        for r in s["real_servers"].as_array().expect("real_servers") {
            t.insert(
                r["address"].as_str().expect("address").to_string(),
                (
                    r["weight"].as_u64().expect("weight"),
                    r["conns"].as_u64().expect("conns"),
                ),
            );
        }
    }
    t
}

fn expected(reals: &[(usize, u32)]) -> BTreeMap<String, u64> {
    reals
        .iter()
        .map(|(i, w)| (format!("192.0.2.{}:8080", 10 + i), u64::from(*w)))
        .collect()
}

fn weights(t: &BTreeMap<String, (u64, u64)>) -> BTreeMap<String, u64> {
    t.iter().map(|(k, (w, _))| (k.clone(), *w)).collect()
}

/// True if some line of `text` is `PATH:LINE:COLUMN: …`.
fn has_location(text: &str, path: &Path) -> bool {
    let p = format!("{}:", path.display());
    text.lines().any(|l| {
        l.strip_prefix(&p).is_some_and(|rest| {
            let mut it = rest.splitn(3, ':');
            let line = it.next().unwrap_or("");
            let col = it.next().unwrap_or("");
            !line.is_empty()
                && !col.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
                && col.bytes().all(|b| b.is_ascii_digit())
                && it.next().is_some()
        })
    })
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The long transfer: `LONG_BYTES` at 2 MB/s (≤ 40 s), as curl's output.
fn long_transfer(topo: &Topology) -> Output {
    topo.exec_timeout(
        "cli",
        &[
            "curl",
            "-sS",
            "--fail",
            "--noproxy",
            "*",
            "--limit-rate",
            "2M",
            "--max-time",
            "40",
            "http://203.0.113.10/bytes?n=20000000",
        ],
        Duration::from_secs(45),
    )
}

#[test]
fn twenty_five_reloads_under_load_lose_nothing() {
    let started = Instant::now();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    let sock_path = topo.tmp_dir().join("control.sock");
    let sock = sock_path.to_string_lossy().into_owned();

    // The long transfer lands on rs2, which table B removes (drain) and
    // table A brings back: it must survive both.
    let initial = [(2, 1)];
    let a = [(1, 1), (2, 2)];
    let b = [(1, 3), (3, 1)];
    let mut daemon = Daemon::start(&topo, &config(&topo, &initial));
    let path = daemon.config_path().expect("config path").to_path_buf();

    let failures = AtomicUsize::new(0);
    let done_short = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut short_errors: Vec<String> = Vec::new();

    std::thread::scope(|scope| {
        let long = scope.spawn(|| long_transfer(&topo));
        // Let the long transfer be scheduled (to rs2, the only server).
        let got = wait_until(Duration::from_secs(5), || {
            table(&sock)
                .get("192.0.2.12:8080")
                .filter(|(_, c)| *c >= 1)
                .map(|_| ())
        });
        assert!(got.is_some(), "the long transfer never reached rs2");

        let short = scope.spawn(|| {
            let mut errors = Vec::new();
            for k in 0..SHORT_REQUESTS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = topo.curl("http://203.0.113.10/", Duration::from_secs(5)) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("request {k}: {e}"));
                }
                done_short.fetch_add(1, Ordering::Relaxed);
            }
            errors
        });

        let check_monotonic = |seen: &mut HashMap<String, u64>, when: &str| {
            let t = table(&sock);
            for (addr, (_, conns)) in &t {
                let prev = seen.entry(addr.clone()).or_insert(0);
                assert!(
                    *conns >= *prev,
                    "{when}: conns of {addr} went backwards: {prev} -> {conns}"
                );
                *prev = *conns;
            }
            t
        };

        let mut good = 0usize;
        let mut bad = 0usize;
        let broken: [(&str, String); 5] = [
            (
                "syntax error",
                config(&topo, &a).replace("weight = 2", "weight = = 2"),
            ),
            (
                "unknown key",
                config(&topo, &a).replace("weight = 2", "wieght = 2"),
            ),
            (
                "bad address",
                config(&topo, &a).replace("192.0.2.12:8080", "192.0.2.300:8080"),
            ),
            (
                "weight out of range",
                config(&topo, &b).replace("weight = 3", "weight = 70000"),
            ),
            (
                "unknown scheduler",
                config(&topo, &b).replace("\"wrr\"", "\"fastest\""),
            ),
        ];
        // 20 good reloads (alternating B, A), a broken one after every 4th.
        let mut current;
        for i in 0..20 {
            let (name, reals) = if i % 2 == 0 {
                ("B", &b[..])
            } else {
                ("A", &a[..])
            };
            std::fs::write(&path, config(&topo, reals)).expect("write config");
            if i % 2 == 0 {
                // SIGHUP; the daemon logs one "reloaded" line per success.
                let before = count_lines(&daemon.log(), "reloaded ");
                daemon.signal(libc::SIGHUP);
                let ok = wait_until(Duration::from_secs(5), || {
                    (count_lines(&daemon.log(), "reloaded ") > before).then_some(())
                });
                assert!(ok.is_some(), "SIGHUP reload {i} ({name}) not logged");
            } else {
                let out = rvs(&["reload", "--socket", &sock]);
                assert!(
                    out.status.success(),
                    "rvs reload {i} ({name}) failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            good += 1;
            current = expected(reals);
            let t = check_monotonic(&mut seen, &format!("after reload {i} ({name})"));
            assert_eq!(weights(&t), current, "table after reload {i} ({name})");

            if i % 4 == 3 {
                let (what, text) = &broken[bad];
                std::fs::write(&path, text).expect("write broken config");
                let out = rvs(&["reload", "--socket", &sock]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(
                    out.status.code(),
                    Some(1),
                    "broken reload ({what}) must exit 1: {stderr}"
                );
                assert!(
                    has_location(&stderr, &path),
                    "broken reload ({what}) must print {}:LINE:COLUMN: {stderr}",
                    path.display()
                );
                bad += 1;
                let t = check_monotonic(&mut seen, &format!("after broken reload ({what})"));
                assert_eq!(
                    weights(&t),
                    current,
                    "a broken file ({what}) changed the table"
                );
                // A broken file by SIGHUP too: logged, nothing changes.
                let before = count_lines(&daemon.log(), "reload failed");
                daemon.signal(libc::SIGHUP);
                let logged = wait_until(Duration::from_secs(5), || {
                    (count_lines(&daemon.log(), "reload failed") > before).then_some(())
                });
                assert!(
                    logged.is_some(),
                    "SIGHUP with a broken file ({what}) not logged"
                );
                let t = check_monotonic(&mut seen, "after broken SIGHUP");
                assert_eq!(
                    weights(&t),
                    current,
                    "a broken SIGHUP ({what}) changed the table"
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        assert_eq!((good, bad), (20, 5));

        // The stream goes on through the final table.
        let errors = short.join().expect("short requests thread");
        short_errors = errors;
        stop.store(true, Ordering::Relaxed);
        let out = long.join().expect("long transfer thread");
        assert!(
            out.status.success(),
            "long transfer failed: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), LONG_BYTES, "long transfer length");
        assert!(
            out.stdout == expected_bytes(LONG_BYTES),
            "long transfer body differs"
        );
    });

    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed requests: {short_errors:#?}\n{}",
        daemon.log()
    );
    assert_eq!(done_short.load(Ordering::Relaxed), SHORT_REQUESTS);
    // A last reload to a table with all three servers shows every counter:
    // each short request and the long one counted exactly once.
    std::fs::write(&path, config(&topo, &[(1, 1), (2, 1), (3, 1)])).expect("write config");
    let out = rvs(&["reload", "--socket", &sock]);
    assert!(
        out.status.success(),
        "final reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = table(&sock);
    for (addr, (_, conns)) in &t {
        assert!(
            *conns >= seen.get(addr).copied().unwrap_or(0),
            "{addr} went backwards"
        );
    }
    let total: u64 = t.values().map(|(_, c)| c).sum();
    assert_eq!(
        total,
        (SHORT_REQUESTS + 1) as u64,
        "connections counted: {t:?}"
    );
    let st = daemon.stop();
    assert!(st.success(), "daemon exit: {st}\n{}", daemon.log());
    eprintln!("e2e_reload took {:?}", started.elapsed());
}

/// The packet worker threads of `pid` (by their names).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with("rvs-worker-"))
        .count()
}

/// Reloads by `rvs reload` and waits for `needle` to be logged once more.
fn reload_and_wait(daemon: &Daemon, sock: &str, needle: &str, what: &str) {
    let before = count_lines(&daemon.log(), needle);
    let out = rvs(&["reload", "--socket", sock]);
    assert!(
        out.status.success(),
        "rvs reload ({what}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let logged = wait_until(Duration::from_secs(5), || {
        (count_lines(&daemon.log(), needle) > before).then_some(())
    });
    assert!(logged.is_some(), "{what}: no {needle:?}:\n{}", daemon.log());
}

#[test]
fn reload_restarts_the_workers_for_new_interfaces_workers_and_busy_polling() {
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.start_http_servers(8080);
    // A second data interface for the director to take on at a reload.
    topo.exec_ok(
        "dir",
        &[
            "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
        ],
    );
    topo.exec_ok("dir", &["ip", "link", "set", "d0", "up"]);
    topo.exec_ok("dir", &["ip", "link", "set", "d1", "up"]);
    let sock_path = topo.tmp_dir().join("control.sock");
    let sock = sock_path.to_string_lossy().into_owned();
    let reals = [(1, 1), (2, 1), (3, 1)];
    let base = config(&topo, &reals);
    let mut daemon = Daemon::start(&topo, &base);
    let path = daemon.config_path().expect("config path").to_path_buf();
    let pid = daemon.pid();
    assert_eq!(worker_threads(pid), 2);
    let steering = || topo.exec_ok("dir", &["nft", "list", "table", "netdev", "rvs"]);

    let failures = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let long = scope.spawn(|| long_transfer(&topo));
        let short = scope.spawn(|| {
            let mut errors = Vec::new();
            for k in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = topo.curl("http://203.0.113.10/", Duration::from_secs(5)) {
                    failures.fetch_add(1, Ordering::Relaxed);
                    errors.push(format!("request {k}: {e}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        std::thread::sleep(Duration::from_millis(500));

        let restarted = "packet workers restarted";
        // One worker.
        std::fs::write(&path, base.replace("workers = 2", "workers = 1")).expect("write");
        reload_and_wait(&daemon, &sock, restarted, "workers = 1");
        assert_eq!(worker_threads(pid), 1, "{}", daemon.log());
        std::thread::sleep(Duration::from_millis(500));
        // A second interface, with busy polling.
        std::fs::write(
            &path,
            base.replace("workers = 2", "workers = 1\nbusy_poll_us = 50")
                .replace(r#"interfaces = ["eth0"]"#, r#"interfaces = ["eth0", "d0"]"#),
        )
        .expect("write");
        reload_and_wait(&daemon, &sock, restarted, "interfaces eth0, d0");
        let t = steering();
        assert!(t.contains("\"d0\""), "no steering on d0:\n{t}");
        std::thread::sleep(Duration::from_millis(500));
        // Back to the first file.
        std::fs::write(&path, &base).expect("write");
        reload_and_wait(&daemon, &sock, restarted, "back to the first file");
        assert_eq!(worker_threads(pid), 2, "{}", daemon.log());
        let t = steering();
        assert!(!t.contains("\"d0\""), "d0 still steered:\n{t}");
        // A reload that changes only the table restarts nothing.
        std::fs::write(&path, base.replace("weight = 1", "weight = 2")).expect("write");
        reload_and_wait(&daemon, &sock, "reloaded ", "weights only");
        assert_eq!(count_lines(&daemon.log(), restarted), 3, "{}", daemon.log());

        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let errors = short.join().expect("short requests thread");
        assert!(
            errors.is_empty(),
            "failed requests: {errors:#?}\n{}",
            daemon.log()
        );
        let out = long.join().expect("long transfer thread");
        assert!(
            out.status.success(),
            "long transfer failed: {} {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            daemon.log()
        );
        assert!(
            out.stdout == expected_bytes(LONG_BYTES),
            "long transfer body differs ({} bytes)",
            out.stdout.len()
        );
    });
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let log = daemon.log();
    assert!(!log.contains("next restart"), "{log}");
    assert_eq!(count_lines(&log, "rvs: ready services"), 1, "{log}");
    let st = daemon.stop();
    assert!(st.success(), "daemon exit: {st}\n{log}");
}
