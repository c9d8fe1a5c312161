//! `control_group`: the control socket becomes 0660 owned by that group,
//! and its members (not only root) may use it; others are still refused.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

use common::{run_bounded, rvs_binary, Daemon, Gateway, Topology};

fn as_user(group: &str, sock: &str) -> std::process::Output {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=nobody",
        &format!("--regid={group}"),
        "--clear-groups",
    ])
    .arg(rvs_binary())
    .args(["services", "--json", "--socket", sock]);
    run_bounded(cmd, Duration::from_secs(10))
}

#[test]
fn members_of_control_group_may_use_the_socket() {
    let topo = Topology::with_gateway(1, Gateway::Director);
    let sock_path = topo.tmp_dir().join("control.sock");
    let sock = sock_path.to_str().unwrap().to_string();
    let cfg = format!(
        "[daemon]\ninterfaces = [\"eth0\"]\ncontrol_socket = \"{sock}\"\ncontrol_group = \"nogroup\"\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n"
    );
    let daemon = Daemon::start(&topo, &cfg);
    let meta = std::fs::metadata(&sock_path).expect("socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534, "socket group is nogroup");
    std::fs::set_permissions(topo.tmp_dir(), std::fs::Permissions::from_mode(0o711)).unwrap();

    let member = as_user("nogroup", &sock);
    assert!(
        member.status.success(),
        "group member refused: {}\n{}",
        String::from_utf8_lossy(&member.stderr),
        daemon.log()
    );
    let v: serde_json::Value = serde_json::from_slice(&member.stdout).expect("json");
    assert_eq!(v["services"][0]["address"], "203.0.113.10:80");

    // Not in the group: the file mode already refuses, in one line.
    let other = as_user("daemon", &sock);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.to_lowercase().contains("permission denied"),
        "{stderr}"
    );
}
