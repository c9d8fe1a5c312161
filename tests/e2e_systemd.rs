//! The sd_notify conversation systemd has with a Type=notify rvs: READY=1
//! once forwarding, RELOADING=1 with MONOTONIC_USEC then READY=1 around a
//! reload, WATCHDOG=1 pings when the watchdog is on, STOPPING=1 and a clean
//! exit (steering removed) on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{rvs_binary, Daemon, Gateway, Topology};

fn next_message(sock: &UnixDatagram, want: &str, within: Duration) -> String {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(want) {
                return m;
            }
            seen.push(m);
        }
    }
    panic!("no {want} within {within:?}; got {seen:?}");
}

#[test]
fn notify_ready_reload_watchdog_stopping() {
    let topo = Topology::with_gateway(1, Gateway::Director);
    let notify = topo.tmp_dir().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{}\"\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n",
        topo.tmp_dir().join("control.sock").display()
    );
    let path = topo.write_file("rvs.toml", &cfg);
    let env_notify = format!("NOTIFY_SOCKET={}", notify.display());
    let rvs = rvs_binary();
    // As systemd does: WATCHDOG_PID names the service's own pid (the
    // shell's, kept by exec).
    let script = format!(
        "WATCHDOG_PID=$$ WATCHDOG_USEC=400000 {env_notify} exec {} run --config {}",
        rvs.display(),
        path.display()
    );
    let mut d = Daemon::start_command(&topo, "dir", &["sh", "-c", &script], "rvs: ready");
    next_message(&sock, "READY=1", Duration::from_secs(5));
    next_message(&sock, "WATCHDOG=1", Duration::from_secs(2));
    d.signal(libc::SIGHUP);
    let reloading = next_message(&sock, "RELOADING=1", Duration::from_secs(5));
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    next_message(&sock, "READY=1", Duration::from_secs(5));
    // A reload that restarts the workers: the pings go on, proving the
    // new workers' heartbeats (the old ones' stop with them).
    std::fs::write(
        &path,
        cfg.replacen("[daemon]\n", "[daemon]\nworkers = 1\n", 1),
    )
    .expect("rewrite config");
    d.signal(libc::SIGHUP);
    next_message(&sock, "RELOADING=1", Duration::from_secs(5));
    next_message(&sock, "READY=1", Duration::from_secs(5));
    assert!(d.log().contains("packet workers restarted"), "{}", d.log());
    let after = Instant::now();
    for k in 0..6 {
        next_message(&sock, "WATCHDOG=1", Duration::from_secs(2));
        assert!(d.is_running(), "ping {k}\n{}", d.log());
    }
    assert!(
        after.elapsed() >= Duration::from_millis(900),
        "six pings 200 ms apart took {:?}",
        after.elapsed()
    );
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    next_message(&sock, "STOPPING=1", Duration::from_secs(5));
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}\n{}", d.log());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?} to stop",
        t.elapsed()
    );
    let listing = topo.exec("dir", &["nft", "list", "table", "netdev", "rvs"]);
    assert!(!listing.status.success(), "steering table left behind");
    assert!(
        !topo.tmp_dir().join("control.sock").exists(),
        "control socket left behind"
    );
}
