//! Control-plane security end to end (issue 6): `rvs run` refuses a
//! world-writable config and a control socket path that holds something
//! other than a socket (leaving it intact and nothing installed), and
//! warns when metrics listen beyond loopback.
//!
//! Each daemon runs inside the director namespace, so even a refusal that
//! failed to happen could not touch the host's network.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Daemon, Topology};

fn config(topo: &Topology, extra_daemon: &str) -> String {
    let sock = topo.tmp_dir().join("control.sock");
    format!(
        r#"[daemon]
interfaces = ["eth0"]
control_socket = "{}"
workers = 1
{extra_daemon}

[[virtual_service]]
name = "web"
protocol = "tcp"
address = "203.0.113.10:80"
scheduler = "rr"
forwarding = "nat"
[[virtual_service.real_server]]
address = "192.0.2.11:8080"
"#,
        sock.display()
    )
}

/// Runs `rvs run --config PATH` in the director namespace and expects it
/// to exit with an error within 15 s; returns its stderr.
fn run_refused(topo: &Topology, path: &std::path::Path) -> String {
    let rvs = common::rvs_binary().to_string_lossy().into_owned();
    let path = path.to_string_lossy().into_owned();
    let out = topo.exec_timeout(
        "dir",
        &[&rvs, "run", "--config", &path],
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "rvs run was not refused:\n{err}");
    err
}

fn nft_tables(topo: &Topology) -> String {
    topo.exec_ok("dir", &["nft", "list", "tables"])
}

#[test]
fn run_refuses_a_world_writable_config() {
    let topo = Topology::new(1);
    let path = topo.write_file("rvs.toml", &config(&topo, ""));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let err = run_refused(&topo, &path);
    assert!(
        err.contains("refusing a world-writable config file (mode 0666)")
            && err.contains(&format!("chmod o-w {}", path.display())),
        "unclear message:\n{err}"
    );
    assert!(!nft_tables(&topo).contains("rvs"), "a table was installed");
    // The same file, no longer world-writable, is accepted.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let path_arg = path.to_string_lossy().into_owned();
    let mut d = Daemon::start_rvs(&topo, "dir", &["run", "--config", &path_arg]);
    assert!(d.is_running());
}

#[test]
fn run_never_replaces_a_control_socket_path_that_is_not_a_socket() {
    let topo = Topology::new(1);
    let sock = topo.write_file("control.sock", "precious data\n");
    let path = topo.write_file("rvs.toml", &config(&topo, ""));
    let err = run_refused(&topo, &path);
    assert!(
        err.contains(&format!(
            "{} exists and is not a socket; refusing to replace it",
            sock.display()
        )),
        "unclear message:\n{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&sock).expect("the file is still there"),
        "precious data\n",
        "the file at control_socket was changed"
    );
    assert!(
        !nft_tables(&topo).contains("rvs"),
        "a table was left behind"
    );

    // A directory there is refused the same way, and stays.
    std::fs::remove_file(&sock).expect("rm");
    std::fs::create_dir(&sock).expect("mkdir");
    let err = run_refused(&topo, &path);
    assert!(err.contains("is not a socket"), "unclear message:\n{err}");
    assert!(sock.is_dir(), "the directory at control_socket was removed");
}

#[test]
fn run_warns_when_metrics_are_not_on_loopback() {
    let topo = Topology::new(1);
    let mut d = Daemon::start(&topo, &config(&topo, "metrics_address = \"0.0.0.0:9477\""));
    let log = d.log();
    assert!(
        log.contains("metrics listen on 0.0.0.0:9477, which is not loopback"),
        "no warning:\n{log}"
    );
    d.stop();
    // A stale socket of a stopped daemon is removed, so a restart binds.
    assert!(!topo.tmp_dir().join("control.sock").exists());
}

#[test]
fn control_socket_accept_failures_do_not_spin() {
    // rvs with few file descriptors, and a client that holds more control
    // connections than it has left: accept(2) fails with EMFILE while the
    // rest wait in the backlog, and fails again at once each time it is
    // called. A loop that retried at once would spin a core.
    let topo = Topology::new(1);
    let path = topo.write_file("rvs.toml", &config(&topo, ""));
    let rvs = common::rvs_binary().to_string_lossy().into_owned();
    let path_arg = path.to_string_lossy().into_owned();
    let mut d = Daemon::start_command(
        &topo,
        "dir",
        &[
            "prlimit",
            "--nofile=48:48",
            &rvs,
            "run",
            "--config",
            &path_arg,
        ],
        "rvs: ready",
    );
    let sock = topo.tmp_dir().join("control.sock");
    let hold = format!(
        "import socket, time\n\
         ss = []\n\
         for _ in range(120):\n    s = socket.socket(socket.AF_UNIX); s.connect('{}'); ss.append(s)\n\
         print('held', flush=True)\n\
         time.sleep(4)\n",
        sock.display()
    );
    let mut holder = topo.spawn("dir", &["python3", "-c", &hold]);
    std::thread::sleep(Duration::from_millis(1000));
    let busy = common::cpu_share(d.pid());
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(d.is_running(), "{}", d.log());
    assert!(busy < 0.3, "rvs uses {busy:.2} of a core:\n{}", d.log());
    assert!(
        d.log().contains("accept failed"),
        "the descriptors never ran out:\n{}",
        d.log()
    );
}
