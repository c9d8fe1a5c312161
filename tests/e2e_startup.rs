//! Start-up failures print one clear line, exit non-zero and leave nothing
//! behind; a second rvs on the same control socket does not disturb the
//! running one.

mod common;

use std::time::Duration;

use common::{run_bounded, rvs_binary, Daemon, Gateway, Topology};

fn config(topo: &Topology, interface: &str) -> String {
    format!(
        "[daemon]\ninterfaces = [\"{interface}\"]\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\n\
         [[virtual_service]]\nname = \"web\"\naddress = \"203.0.113.10:80\"\n\
         [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n",
        common::control_socket(topo),
        topo.tmp_dir().join("state").display()
    )
}

fn run_in_dir(topo: &Topology, file: &std::path::Path) -> std::process::Output {
    let rvs = rvs_binary();
    let cmd = topo.command(
        "dir",
        &[
            rvs.to_str().unwrap(),
            "run",
            "--config",
            file.to_str().unwrap(),
        ],
    );
    run_bounded(cmd, Duration::from_secs(15))
}

fn table_present(topo: &Topology) -> bool {
    topo.exec("dir", &["nft", "list", "table", "netdev", "rvs"])
        .status
        .success()
}

/// The error lines rvs printed (log lines of other levels aside).
fn error_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("rvs:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn missing_interface_and_socket_in_use() {
    let topo = Topology::with_gateway(1, Gateway::Director);
    topo.start_http_server(1, 8080);

    let missing = topo.write_file("missing.toml", &config(&topo, "eth9"));
    let out = run_in_dir(&topo, &missing);
    assert_eq!(out.status.code(), Some(1));
    let errs = error_lines(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("unknown interface `eth9`"), "{errs:?}");
    assert!(!table_present(&topo), "steering left by a failed start");
    assert!(!std::path::Path::new(&common::control_socket(&topo)).exists());

    // A running daemon, then a second one on the same socket.
    let good = config(&topo, "eth0");
    let _first = Daemon::start(&topo, &good);
    let path = topo.write_file("second.toml", &good);
    let out = run_in_dir(&topo, &path);
    assert_eq!(out.status.code(), Some(1));
    let errs = error_lines(&out);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("another rvs is running"), "{errs:?}");
    // The first one's steering and socket are intact and it still serves.
    assert!(table_present(&topo));
    let v = common::rvs_json(&topo, &["services", "--json"]);
    assert_eq!(v["services"][0]["address"], "203.0.113.10:80");
    assert_eq!(
        topo.curl("http://203.0.113.10/", Duration::from_secs(5))
            .unwrap()
            .trim(),
        "rs1"
    );
}
