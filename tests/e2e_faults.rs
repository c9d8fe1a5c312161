//! Faults and floods end to end (issue 6, "Floods and memory" and
//! "Faults"): rvs killed and restarted, a broken config file on SIGHUP, a
//! real server killed or cut off mid-transfer, random loss on the
//! director's links, and a spoofed SYN flood against `max_connections`.
//!
//! The tests measure timings and the flood loads both cores: they run one
//! at a time (SERIAL).

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{expected_bytes, run_bounded, rvs_binary, wait_until, Daemon, Gateway, Topology, VIP};

const T: Duration = Duration::from_secs(5);
const URL: &str = "http://203.0.113.10/";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// One TCP service on VIP:80 with three real servers on `port`.
fn config(
    topo: &Topology,
    method: &str,
    scheduler: &str,
    port: u16,
    daemon_extra: &str,
    service_extra: &str,
) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    let mut s = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nworkers = 2\n{daemon_extra}\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\nscheduler = \"{scheduler}\"\n\
         forwarding = \"{method}\"\n{service_extra}\n",
        sock.display()
    );
    for i in 1..=3 {
        s.push_str(&format!(
            "[[virtual_service.real_server]]\naddress = \"192.0.2.{}:{port}\"\nweight = 1\n",
            10 + i
        ));
    }
    s
}

fn sock(topo: &Topology) -> String {
    topo.tmp_dir()
        .join("control.sock")
        .to_string_lossy()
        .into_owned()
}

fn rvs_cli(args: &[&str]) -> Output {
    let mut cmd = Command::new(rvs_binary());
    cmd.args(args);
    run_bounded(cmd, Duration::from_secs(10))
}

fn json_of(topo: &Topology, what: &str) -> serde_json::Value {
    common::rvs_json(topo, &[what, "--json"])
}

/// Real server of the flow from the client's port `port` (`rvs conns`).
fn real_of_client_port(topo: &Topology, port: u16) -> Option<String> {
    let v = json_of(topo, "conns");
    let suffix = format!(":{port}");
    v["connections"].as_array()?.iter().find_map(|c| {
        (c["client"].as_str()?.ends_with(&suffix) && !c["template"].as_bool().unwrap_or(false))
            .then(|| c["real_server"].as_str().unwrap_or("").to_string())
    })
}

fn set_weight(topo: &Topology, real: &str, weight: u32) {
    let s = sock(topo);
    let w = weight.to_string();
    let out = rvs_cli(&["weight", "--socket", &s, "203.0.113.10:80", real, &w]);
    assert!(
        out.status.success(),
        "rvs weight: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the harness HTTP server on real server `i` as a child the test
/// may kill (the topology still reaps it on Drop).
fn start_http(topo: &Topology, i: usize, port: u16) -> Child {
    let name = topo.rs(i);
    let path = topo.write_file(
        &format!("http-{}.py", topo.next_id()),
        common::scripts::HTTP_SERVER,
    );
    let path = path.to_string_lossy().into_owned();
    let port = port.to_string();
    let (mut child, log) =
        topo.spawn_logged(&name, &["python3", "-u", path.as_str(), &name, &port]);
    if let Err(why) = common::daemon::wait_for_line(&mut child, &log, "ready", T) {
        panic!("http server on {name}: {why}");
    }
    child
}

/// `curl` from the client with extra arguments; (exit status, body, stderr).
fn curl(topo: &Topology, extra: &[&str], url: &str, timeout: Duration) -> (Output, Duration) {
    let max_time = format!("{:.3}", timeout.as_secs_f64());
    let mut args = vec![
        "curl",
        "-sS",
        "--fail",
        "--noproxy",
        "*",
        "--max-time",
        &max_time,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let t0 = Instant::now();
    let out = topo.exec_timeout("cli", &args, timeout + Duration::from_secs(5));
    (out, t0.elapsed())
}

/// `n` sequential GET / from the client; the bodies ("rsI") by count and
/// the failures.
fn requests(topo: &Topology, n: usize, timeout: Duration) -> (HashMap<String, usize>, Vec<String>) {
    let mut seen = HashMap::new();
    let mut failed = Vec::new();
    // The loop as a whole is bounded too: what does not start within 40 s
    // counts as failed.
    let deadline = Instant::now() + Duration::from_secs(40);
    for k in 0..n {
        if Instant::now() >= deadline {
            failed.push(format!("requests {k}..{n}: not started within 40 s"));
            break;
        }
        match topo.curl(URL, timeout) {
            Ok(body) => *seen.entry(body.trim().to_string()).or_insert(0) += 1,
            Err(e) => failed.push(format!("request {k}: {e}")),
        }
    }
    (seen, failed)
}

/// Small TCP buffers on the client and the real servers, so a
/// rate-limited download keeps most of its body at the server's
/// application (which a fault can then interrupt) instead of in socket
/// buffers that the kernel would still deliver.
fn small_tcp_buffers(topo: &Topology) {
    topo.sysctl("cli", "net.ipv4.tcp_rmem", "4096 65536 262144");
    for i in 1..=topo.real_servers() {
        topo.sysctl(&topo.rs(i), "net.ipv4.tcp_wmem", "4096 65536 262144");
    }
}

fn table_present(topo: &Topology) -> bool {
    topo.exec("dir", &["nft", "list", "table", "netdev", "rvs"])
        .status
        .success()
}

fn restart(topo: &Topology, config: &std::path::Path) -> Daemon {
    let path = config.to_string_lossy().into_owned();
    Daemon::start_rvs(topo, "dir", &["run", "--config", &path])
}

// ---- 1: SIGKILL leaves a stale table; a restart replaces it ---------------------

#[test]
fn sigkill_leaves_stale_table_restart_replaces_it_sigterm_cleans_up() {
    let _g = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    topo.add_vip_on_director(VIP);
    for i in 1..=3 {
        topo.start_http_server(i, 8080);
    }
    let mut first = Daemon::start(&topo, &config(&topo, "nat", "rr", 8080, "", ""));
    let cfg = first.config_path().expect("config path").to_path_buf();
    let (_, failed) = requests(&topo, 3, T);
    assert!(failed.is_empty(), "{failed:?}");

    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(T).is_some(), "rvs survived SIGKILL");
    // What a crash leaves: the steering table, which now blackholes the VIP.
    assert!(table_present(&topo), "no stale table after SIGKILL");
    let listing = topo.exec_ok("dir", &["nft", "list", "table", "netdev", "rvs"]);
    assert!(listing.contains("203.0.113.10"), "{listing}");
    let dead = topo.curl(URL, Duration::from_millis(1500));
    assert!(dead.is_err(), "VIP answered with rvs dead: {dead:?}");

    // A start that fails (here a broken file) still removes what the dead
    // rvs left: nothing else would, and it drops the VIPs' traffic.
    // TOML, but no valid config: it still names the control socket.
    let broken = topo.write_file(
        "broken.toml",
        &format!(
            "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nno_such_key = 1\n",
            sock(&topo)
        ),
    );
    let rvs = rvs_binary();
    let run_broken = || {
        topo.exec_timeout(
            "dir",
            &[
                &rvs.to_string_lossy(),
                "run",
                "--config",
                &broken.to_string_lossy(),
            ],
            T,
        )
    };
    let out = run_broken();
    assert!(!out.status.success(), "rvs started on a broken file");
    assert!(
        !table_present(&topo),
        "a failed start left the dead rvs's table: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("a previous rvs left"));

    // The next rvs runs under another name, so that only its answering
    // control socket tells the failed start below that it is alive.
    let renamed = topo.tmp_dir().join("rvs-director");
    std::fs::copy(rvs_binary(), &renamed).expect("copy the binary");
    let t0 = Instant::now();
    let mut second = Daemon::start_command(
        &topo,
        "dir",
        &[
            &renamed.to_string_lossy(),
            "run",
            "--config",
            &cfg.to_string_lossy(),
        ],
        "rvs: ready",
    );
    let ready = t0.elapsed();
    let up = wait_until(Duration::from_secs(5), || {
        topo.curl(URL, Duration::from_millis(500)).ok()
    });
    let serving = t0.elapsed();
    eprintln!(
        "[faults] restart after SIGKILL: ready after {:.0} ms, VIP serving after {:.0} ms",
        ready.as_secs_f64() * 1e3,
        serving.as_secs_f64() * 1e3
    );
    assert!(up.is_some(), "VIP does not work after the restart");
    assert!(
        serving < Duration::from_secs(2),
        "VIP took {serving:?} to work again after the restart"
    );
    let listing = topo.exec_ok("dir", &["nft", "list", "ruleset"]);
    assert_eq!(
        listing.matches("table netdev rvs").count(),
        1,
        "one rvs table expected:\n{listing}"
    );
    // A failed start beside a running rvs leaves its table alone.
    let out = run_broken();
    assert!(!out.status.success());
    assert!(
        table_present(&topo),
        "a failed start removed a live rvs's table"
    );
    let (seen, failed) = requests(&topo, 30, T);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");

    // A clean stop removes what rvs installed.
    let t0 = Instant::now();
    second.signal(libc::SIGTERM);
    let status = second.wait_exit(Duration::from_secs(2));
    let took = t0.elapsed();
    eprintln!(
        "[faults] SIGTERM: exited {status:?} after {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    let status = status.expect("rvs did not exit within 2 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(!table_present(&topo), "table netdev rvs left after SIGTERM");
    assert!(
        !topo.tmp_dir().join("control.sock").exists(),
        "control socket left after SIGTERM"
    );
}

// ---- 2: a DR flow survives a crash with mh + sloppy_tcp ----------------------------

#[test]
fn dr_mh_sloppy_download_survives_sigkill_and_restart() {
    let _g = serial();
    let topo = Topology::new(3);
    small_tcp_buffers(&topo);
    for i in 1..=3 {
        topo.setup_dr_real_server(i, VIP);
        topo.start_http_server(i, 80);
    }
    let mut first = Daemon::start(
        &topo,
        &config(&topo, "dr", "mh", 80, "sloppy_tcp = true\nseed = 7", ""),
    );
    let cfg = first.config_path().expect("config path").to_path_buf();
    const N: usize = 4_000_000;
    let url = format!("http://203.0.113.10/bytes?n={N}");
    thread::scope(|s| {
        let dl = s.spawn(|| {
            curl(
                &topo,
                &["--limit-rate", "1M", "--local-port", "41001"],
                &url,
                Duration::from_secs(30),
            )
        });
        let before = wait_until(T, || real_of_client_port(&topo, 41001))
            .expect("the download's entry in rvs conns");
        thread::sleep(Duration::from_millis(1200));
        first.signal(libc::SIGKILL);
        assert!(first.wait_exit(T).is_some());
        thread::sleep(Duration::from_millis(500));
        let _second = restart(&topo, &cfg);
        let after = wait_until(T, || real_of_client_port(&topo, 41001))
            .expect("the restarted rvs picked the flow up (sloppy_tcp)");
        assert_eq!(before, after, "mh sent the flow to another server");
        let (out, took) = dl.join().expect("download thread");
        assert!(
            out.status.success(),
            "download across the crash failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout.len(), N, "length");
        assert!(out.stdout == expected_bytes(N), "body differs");
        eprintln!(
            "[faults] 4 MB at 1 MB/s across SIGKILL + restart: intact in {:.1} s, {before} both times",
            took.as_secs_f64()
        );
    });
}

// ---- 3: a broken config file on SIGHUP ---------------------------------------------

#[test]
fn broken_config_on_sighup_keeps_forwarding_and_logs() {
    let _g = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    for i in 1..=3 {
        topo.start_http_server(i, 8080);
    }
    let good = config(&topo, "nat", "rr", 8080, "", "");
    let mut d = Daemon::start(&topo, &good);
    let cfg = d.config_path().expect("config path").to_path_buf();
    let dangling = topo.tmp_dir().join("no-such-file.toml");
    type Fault = Box<dyn Fn(&std::path::Path)>;
    let faults: Vec<(&str, Fault)> = vec![
        // `clear` below has just removed it.
        ("deleted", Box::new(|_| {})),
        (
            "a directory",
            Box::new(|p| std::fs::create_dir(p).expect("mkdir")),
        ),
        (
            "a dangling symlink",
            Box::new(move |p| std::os::unix::fs::symlink(&dangling, p).expect("symlink")),
        ),
        (
            "garbage",
            Box::new(|p| std::fs::write(p, b"\x00\xff[[[ not = toml\n\x01").expect("write")),
        ),
        (
            "valid TOML, invalid table",
            Box::new(|p| {
                std::fs::write(p, "[daemon]\ninterfaces = [\"eth0\"]\nworkers = \"many\"\n")
                    .expect("write")
            }),
        ),
    ];
    let clear = |p: &std::path::Path| {
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir(p).expect("rmdir");
        } else if p.symlink_metadata().is_ok() {
            std::fs::remove_file(p).expect("rm");
        }
    };
    for (what, fault) in &faults {
        let failures = d.log().matches("reload failed").count();
        clear(&cfg);
        fault(&cfg);
        d.signal(libc::SIGHUP);
        let logged = wait_until(T, || {
            (d.log().matches("reload failed").count() > failures).then_some(())
        });
        assert!(
            logged.is_some(),
            "config {what}: no reload error logged:\n{}",
            d.log()
        );
        assert!(d.is_running(), "config {what}: the daemon exited");
        let (seen, failed) = requests(&topo, 15, T);
        assert!(failed.is_empty(), "config {what}: {failed:?}");
        assert_eq!(seen.len(), 3, "config {what}: {seen:?}");
    }
    let log = d.log();
    assert!(log.contains("cannot read"), "{log}");
    // Put a good file back: the next SIGHUP applies it.
    clear(&cfg);
    std::fs::write(&cfg, good.replacen("weight = 1", "weight = 0", 1)).expect("write");
    d.signal(libc::SIGHUP);
    wait_until(T, || d.log().contains("reloaded").then_some(()))
        .expect("a good file reloads again");
    let (seen, failed) = requests(&topo, 10, T);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(seen.get("rs1"), None, "weight 0 from the file: {seen:?}");
}

// ---- 4: a real server killed mid-transfer -------------------------------------------

#[test]
fn real_server_killed_mid_transfer() {
    let _g = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    small_tcp_buffers(&topo);
    let mut servers: Vec<Child> = (1..=3).map(|i| start_http(&topo, i, 8080)).collect();
    let check = r#"health_check = { type = "tcp", interval = "200ms", timeout = "150ms", rise = 2, fall = 2 }"#;
    let d = Daemon::start(&topo, &config(&topo, "nat", "rr", 8080, "", check));
    let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
    const N: usize = 3_000_000;
    let url = format!("http://203.0.113.10/bytes?n={N}");
    thread::scope(|s| {
        let a = s.spawn(|| {
            curl(
                &topo,
                &["--limit-rate", "1M", "--local-port", "41011"],
                &url,
                Duration::from_secs(15),
            )
        });
        let ra = wait_until(T, || real_of_client_port(&topo, 41011)).expect("A's entry");
        let b = s.spawn(|| {
            curl(
                &topo,
                &["--limit-rate", "1M", "--local-port", "41012"],
                &url,
                Duration::from_secs(15),
            )
        });
        let rb = wait_until(T, || real_of_client_port(&topo, 41012)).expect("B's entry");
        assert_ne!(ra, rb, "rr put both downloads on one server");
        thread::sleep(Duration::from_millis(1000));
        let victim: usize = ra
            .split(':')
            .next()
            .and_then(|ip| ip.rsplit('.').next())
            .and_then(|o| o.parse::<usize>().ok())
            .expect("rs address")
            - 10;
        let _ = servers[victim - 1].kill();
        let _ = servers[victim - 1].wait();
        let (out_a, _) = a.join().expect("A");
        let (out_b, took_b) = b.join().expect("B");
        eprintln!(
            "[faults] killed rs{victim} mid-transfer: A got {} of {N} bytes ({}), B intact in {:.1} s",
            out_a.stdout.len(),
            String::from_utf8_lossy(&out_a.stderr).trim(),
            took_b.as_secs_f64()
        );
        assert!(!out_a.status.success(), "A completed from a dead server");
        assert!(out_a.stdout.len() < N);
        assert!(
            out_b.status.success(),
            "B on {rb} failed: {}",
            String::from_utf8_lossy(&out_b.stderr)
        );
        assert!(out_b.stdout == expected_bytes(N), "B's body differs");
        // The health check takes the dead server out; everything else works.
        let down = wait_until(T, || {
            let v = json_of(&topo, "services");
            v["services"][0]["real_servers"]
                .as_array()?
                .iter()
                .any(|r| r["address"] == ra.as_str() && r["health"] == "down")
                .then_some(())
        });
        assert!(down.is_some(), "{ra} not marked down:\n{}", d.log());
        let (seen, failed) = requests(&topo, 30, T);
        assert!(failed.is_empty(), "after the kill: {failed:?}");
        assert_eq!(seen.get(&format!("rs{victim}")), None, "{seen:?}");
        assert_eq!(seen.values().sum::<usize>(), 30);
        eprintln!(
            "[faults] after the kill: {seen:?}, RSTs at the client: {}",
            rst.packets()
        );
    });
    assert!(d.log().contains("is down"), "no health log line");
}

// ---- 5: a real server's link cut; random loss -----------------------------------------

#[test]
fn real_server_link_cut_only_its_flows_stall() {
    let _g = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    small_tcp_buffers(&topo);
    for i in 1..=3 {
        topo.start_http_server(i, 8080);
    }
    let _d = Daemon::start(&topo, &config(&topo, "nat", "rr", 8080, "", ""));
    const N: usize = 3_000_000;
    let url = format!("http://203.0.113.10/bytes?n={N}");
    thread::scope(|s| {
        let a = s.spawn(|| {
            curl(
                &topo,
                &["--limit-rate", "1M", "--local-port", "41021"],
                &url,
                Duration::from_secs(8),
            )
        });
        let ra = wait_until(T, || real_of_client_port(&topo, 41021)).expect("A's entry");
        let b = s.spawn(|| {
            curl(
                &topo,
                &["--limit-rate", "1M", "--local-port", "41022"],
                &url,
                Duration::from_secs(15),
            )
        });
        let rb = wait_until(T, || real_of_client_port(&topo, 41022)).expect("B's entry");
        assert_ne!(ra, rb);
        thread::sleep(Duration::from_millis(800));
        let octet: usize = ra
            .split(':')
            .next()
            .and_then(|ip| ip.rsplit('.').next())
            .and_then(|o| o.parse().ok())
            .expect("rs address");
        let victim = format!("rs{}", octet - 10);
        // Cut: nothing in, nothing out of its eth0.
        let cut = topo.write_file(
            "cut.nft",
            "table netdev cut {\n chain in {\n  type filter hook ingress device eth0 priority -500; policy drop;\n }\n}\n\
             table inet cutout {\n chain out {\n  type filter hook output priority -500; policy accept;\n  oifname \"eth0\" drop\n }\n}\n",
        );
        topo.exec_ok(&victim, &["nft", "-f", &cut.to_string_lossy()]);
        // New traffic moves away once the operator drains it.
        set_weight(&topo, &ra, 0);
        let (seen, failed) = requests(&topo, 20, T);
        assert!(failed.is_empty(), "with {victim} cut: {failed:?}");
        assert_eq!(seen.get(&victim), None, "{seen:?}");
        let (out_b, _) = b.join().expect("B");
        assert!(
            out_b.status.success(),
            "B on {rb} failed: {}",
            String::from_utf8_lossy(&out_b.stderr)
        );
        assert!(out_b.stdout == expected_bytes(N), "B's body differs");
        let (out_a, _) = a.join().expect("A");
        eprintln!(
            "[faults] cut {victim}: its download stalled at {} of {N} bytes ({}); B intact; 20 new requests {seen:?}",
            out_a.stdout.len(),
            String::from_utf8_lossy(&out_a.stderr).trim()
        );
        assert!(!out_a.status.success(), "A finished over a cut link");
        assert!(out_a.stdout.len() < N);
    });
}

#[test]
fn five_percent_loss_on_the_directors_links() {
    let _g = serial();
    let topo = Topology::with_gateway(3, Gateway::Director);
    for i in 1..=3 {
        topo.start_http_server(i, 8080);
    }
    let d = Daemon::start(&topo, &config(&topo, "nat", "rr", 8080, "", ""));
    // Every packet the director sends towards the client or a real server
    // meets a 5% random drop where it arrives.
    let rule = topo.write_file(
        "loss.nft",
        "table inet loss {\n counter dropped { }\n chain pre {\n  type filter hook prerouting priority -500; policy accept;\n  numgen random mod 100 < 5 counter name dropped drop\n }\n}\n",
    );
    let rule = rule.to_string_lossy().into_owned();
    let hosts = ["cli", "rs1", "rs2", "rs3"];
    for h in hosts {
        topo.exec_ok(h, &["nft", "-f", &rule]);
    }
    let dropped = |h: &str| -> u64 {
        let out = topo.exec_ok(
            h,
            &["nft", "-j", "list", "counter", "inet", "loss", "dropped"],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("nft json");
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|i| i["counter"]["packets"].as_u64()))
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    let (seen, failed) = requests(&topo, 100, Duration::from_secs(15));
    let took = t0.elapsed();
    assert!(failed.is_empty(), "under 5% loss: {failed:?}\n{}", d.log());
    assert_eq!(seen.values().sum::<usize>(), 100);
    const N: usize = 2_000_000;
    let (out, dl) = curl(
        &topo,
        &[],
        &format!("http://203.0.113.10/bytes?n={N}"),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "download under loss: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == expected_bytes(N), "body differs");
    let counts: Vec<(&str, u64)> = hosts.iter().map(|h| (*h, dropped(h))).collect();
    eprintln!(
        "[faults] 5% loss: 100 requests in {:.1} s, 2 MB in {:.1} s, dropped packets {}",
        took.as_secs_f64(),
        dl.as_secs_f64(),
        counts
            .iter()
            .map(|(h, n)| format!("{h}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
}

// ---- 6: SYN flood against max_connections ---------------------------------------------

/// `flood.py IFNAME DST_MAC SRC_MAC VIP PORT N SECONDS LIMIT`: N spoofed
/// SYNs (sources 198.51.100.100-250, random ports and sequence numbers,
/// valid checksums) as Ethernet frames on IFNAME, paced over SECONDS, never
/// running longer than LIMIT seconds.
const FLOOD: &str = r#"
import random, socket, struct, sys, time
ifname, dmac, smac, vip, port, n, secs, limit = sys.argv[1:9]
port, n, secs, limit = int(port), int(n), float(secs), float(limit)
eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) + b"\x08\x00"
vip_b = socket.inet_aton(vip)
v0, v1 = struct.unpack("!HH", vip_b)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
rnd = random.Random(20240606)
def fold(x):
    x = (x & 0xffff) + (x >> 16)
    x = (x & 0xffff) + (x >> 16)
    return x
ip_const = 0x4500 + 40 + 0x4000 + ((64 << 8) | 6) + v0 + v1
tcp_const = port + 0x5002 + 64240 + 6 + 20 + v0 + v1
pack = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH").pack
s0 = (198 << 8) | 51
print("ready", flush=True)
start = time.monotonic()
sent = errors = 0
chunk = 500
while sent < n and time.monotonic() - start < limit:
    frames = []
    for _ in range(min(chunk, n - sent)):
        last = 100 + rnd.randrange(151)
        s1 = (100 << 8) | last
        ident = rnd.getrandbits(16)
        sport = 1024 + rnd.randrange(64512)
        seq = rnd.getrandbits(32)
        ipc = ~fold(ip_const + ident + s0 + s1) & 0xffff
        tc = ~fold(tcp_const + s0 + s1 + sport + (seq >> 16) + (seq & 0xffff)) & 0xffff
        src = bytes((198, 51, 100, last))
        frames.append(eth + pack(0x45, 0, 40, ident, 0x4000, 64, 6, ipc, src, vip_b,
                                 sport, port, seq, 0, 0x50, 0x02, 64240, tc, 0))
    for f in frames:
        try:
            s.send(f)
            sent += 1
        except OSError:
            errors += 1
            sent += 1
    ahead = start + secs * sent / n - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print("sent %d (%d send errors) in %.2f s" % (sent - errors, errors, time.monotonic() - start), flush=True)
"#;

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn scheduled_total(v: &serde_json::Value) -> u64 {
    v["services"][0]["real_servers"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["conns"].as_u64()).sum())
        .unwrap_or(0)
}

#[test]
fn syn_flood_stays_within_max_connections_and_legit_clients_get_through() {
    let _g = serial();
    const CAP: u64 = 5000;
    const SYNS: usize = 200_000;
    let topo = Topology::new(3);
    for i in 1..=3 {
        topo.setup_dr_real_server(i, VIP);
        topo.start_http_server(i, 80);
    }
    let d = Daemon::start(
        &topo,
        &config(
            &topo,
            "dr",
            "rr",
            80,
            &format!("max_connections = {CAP}"),
            "",
        ),
    );
    let pid = d.pid();
    let (_, failed) = requests(&topo, 3, T);
    assert!(failed.is_empty(), "{failed:?}");
    let rss_before = vm_hwm_kib(pid);
    let base = json_of(&topo, "services");

    let script = topo.write_file("flood.py", FLOOD);
    let script = script.to_string_lossy().into_owned();
    let n = SYNS.to_string();
    let dir_mac = common::lan_mac(1);
    let rtr_mac = common::lan_mac(254);
    // From the LAN: the router's eth0, as if it had routed the flood.
    let (mut flood, flood_log) = topo.spawn_logged(
        "rtr",
        &[
            "python3",
            "-u",
            &script,
            "eth0",
            &dir_mac,
            &rtr_mac,
            "203.0.113.10",
            "80",
            &n,
            "10",
            "20",
        ],
    );
    common::daemon::wait_for_line(&mut flood, &flood_log, "ready", T).expect("flood generator");

    let stop = AtomicBool::new(false);
    let peak = thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0u64;
            let mut samples = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let v = json_of(&topo, "services");
                peak = peak.max(v["connection_table_entries"].as_u64().unwrap_or(0));
                samples += 1;
                thread::sleep(Duration::from_millis(50));
            }
            (peak, samples)
        });
        let t0 = Instant::now();
        let mut ok = 0;
        let mut during = 0;
        let mut failures = Vec::new();
        for k in 0..100 {
            if t0.elapsed() > Duration::from_secs(40) {
                failures.push(format!("requests {k}..100: not started within 40 s"));
                break;
            }
            if flood.try_wait().ok().flatten().is_none() {
                during += 1;
            }
            match topo.curl(URL, T) {
                Ok(_) => ok += 1,
                Err(e) => failures.push(format!("request {k}: {e}")),
            }
        }
        let legit = t0.elapsed();
        let flood_done = wait_until(Duration::from_secs(25), || flood.try_wait().ok().flatten());
        stop.store(true, Ordering::Relaxed);
        let (peak, samples) = sampler.join().expect("sampler");
        assert!(
            flood_done.is_some(),
            "the flood generator overran its bound"
        );
        (peak, samples, ok, during, failures, legit)
    });
    let (peak, samples, ok, during, failures, legit) = peak;
    let after = json_of(&topo, "services");
    let rss_peak = vm_hwm_kib(pid);
    let flood_out = std::fs::read_to_string(&flood_log).unwrap_or_default();
    let scheduled = scheduled_total(&after) - scheduled_total(&base);
    let drops = &after["drops"];
    let full = drops["table_full"].as_u64().unwrap_or(0);
    eprintln!(
        "[faults] SYN flood: {}; rvs saw {} SYNs: scheduled {scheduled} new flows, table_full {full}; drops {drops}; \
         table peak {peak} (cap {CAP}, {samples} samples), now {}; \
         legit {ok}/100 ok ({during} started during the flood) in {:.1} s; \
         VmHWM {rss_before} KiB before, {rss_peak} KiB peak",
        flood_out.lines().last().unwrap_or("?"),
        scheduled + full,
        after["connection_table_entries"],
        legit.as_secs_f64()
    );
    if !failures.is_empty() {
        eprintln!("[faults] failed legit requests: {failures:?}");
    }
    assert!(flood_out.contains("sent "), "{flood_out}");
    assert!(peak <= CAP, "table reached {peak} > {CAP}");
    assert!(
        peak >= CAP * 9 / 10,
        "the flood never filled the table (peak {peak})"
    );
    assert!(ok >= 95, "only {ok}/100 legit requests: {failures:?}");
    // The flood really overlapped the legitimate requests (on a loaded
    // 2-core host a slow request can stretch the loop past it).
    assert!(during >= 20, "the flood ended too early ({during})");
    assert!(d.log().contains("rvs: ready"));
}

#[test]
fn frames_to_an_unresolved_real_server_ask_by_arp_a_few_times_not_once_each() {
    let _g = serial();
    let topo = Topology::with_gateway(1, Gateway::Director);
    // 192.0.2.99 is on the segment's prefix but no host has it: every
    // frame to it waits for an ARP answer that never comes.
    let cfg = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\nworkers = 2\n\n\
         [[virtual_service]]\nname = \"dns\"\nprotocol = \"udp\"\naddress = \"203.0.113.10:53\"\n\
         scheduler = \"rr\"\nforwarding = \"nat\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.99:53\"\n",
        sock(&topo)
    );
    let d = Daemon::start(&topo, &cfg);
    let rules = topo.write_file(
        "arp.nft",
        "table netdev arpc {\n counter c { }\n chain in {\n  type filter hook ingress device eth0 priority 0; policy accept;\n  \
         arp operation request arp daddr ip 192.0.2.99 counter name c\n }\n}\n",
    );
    topo.exec_ok("rs1", &["nft", "-f", &rules.to_string_lossy()]);
    // 400 datagrams over ~0.5 s.
    let burst = "import socket, time\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 for _ in range(400):\n    s.sendto(b'q', ('203.0.113.10', 53)); time.sleep(0.001)\n";
    topo.exec_ok("cli", &["python3", "-c", burst]);
    thread::sleep(Duration::from_millis(1500));
    let out = topo.exec_ok(
        "rs1",
        &["nft", "-j", "list", "counter", "netdev", "arpc", "c"],
    );
    let json: serde_json::Value = serde_json::from_str(&out).expect("nft -j");
    let asked = json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i.get("counter")))
        .and_then(|c| c["packets"].as_u64())
        .expect("ARP counter");
    let v = json_of(&topo, "services");
    eprintln!("[faults] 400 frames to an unresolved next hop: {asked} ARP requests");
    // The first frame asks; then one request per ARP_RETRY (200 ms) while
    // frames wait (each waits at most 1 s).
    assert!(
        (1..=15).contains(&asked),
        "{asked} ARP requests for 400 frames\n{v}\n{}",
        d.log()
    );
}
