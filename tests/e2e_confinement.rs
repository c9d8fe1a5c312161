//! Under systemd (RuntimeDirectory=/StateDirectory= set RUNTIME_DIRECTORY
//! and STATE_DIRECTORY), rvs refuses a config that would make it write
//! outside those directories, at start and on reload.

mod common;

use std::time::Duration;

use common::{run_bounded, rvs_binary, Daemon, Gateway, Topology};

fn config(sock: &str, state: &str) -> String {
    format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{sock}\"\nstate_dir = \"{state}\"\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n"
    )
}

#[test]
fn writes_stay_inside_the_units_directories() {
    let topo = Topology::with_gateway(1, Gateway::Director);
    let tmp = topo.tmp_dir().to_path_buf();
    let (run, state, elsewhere) = (tmp.join("run"), tmp.join("state"), tmp.join("elsewhere"));
    for d in [&run, &state, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = format!(
        "RUNTIME_DIRECTORY={} STATE_DIRECTORY={}",
        run.display(),
        state.display()
    );
    let rvs = rvs_binary();

    // A control socket outside RUNTIME_DIRECTORY: refused, nothing installed.
    let bad = topo.write_file(
        "bad.toml",
        &config(
            &format!("{}/control.sock", elsewhere.display()),
            &state.display().to_string(),
        ),
    );
    let mut cmd = topo.command(
        "dir",
        &[
            "sh",
            "-c",
            &format!(
                "{env} exec {} run --config {}",
                rvs.display(),
                bad.display()
            ),
        ],
    );
    cmd.env_remove("NOTIFY_SOCKET");
    let out = run_bounded(cmd, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("outside RUNTIME_DIRECTORY"), "{stderr}");
    assert!(!elsewhere.join("control.sock").exists());
    let nft = topo.exec("dir", &["nft", "list", "table", "netdev", "rvs"]);
    assert!(
        !nft.status.success(),
        "steering installed by a refused start"
    );

    // Inside both: starts; a reload to a file that moves state_dir out is
    // refused and the daemon keeps running.
    let sock = format!("{}/control.sock", run.display());
    let good = topo.write_file("good.toml", &config(&sock, &state.display().to_string()));
    let script = format!(
        "{env} exec {} run --config {}",
        rvs.display(),
        good.display()
    );
    let mut d = Daemon::start_command(&topo, "dir", &["sh", "-c", &script], "rvs: ready");
    std::fs::write(&good, config(&sock, &elsewhere.display().to_string())).unwrap();
    let out = std::process::Command::new(&rvs)
        .args(["reload", "--socket", &sock])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("outside STATE_DIRECTORY"), "{stderr}");
    assert!(
        d.is_running(),
        "daemon died on a refused reload:\n{}",
        d.log()
    );
}
