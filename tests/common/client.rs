//! Helpers shared by the end-to-end tests: the rvs client as a user runs
//! it, and stopping a real server's HTTP service.

use std::process::Command;
use std::time::Duration;

use crate::common::{rvs_binary, wait_until, Topology};

/// The control socket the tests' configs use: `control.sock` in the
/// topology's scratch directory.
pub fn control_socket(topo: &Topology) -> String {
    topo.tmp_dir()
        .join("control.sock")
        .to_string_lossy()
        .into_owned()
}

/// Runs `rvs ARGS --socket <control_socket>` (ARGS include `--json`) and
/// parses its output; panics with rvs's stderr when it fails.
pub fn rvs_json(topo: &Topology, args: &[&str]) -> serde_json::Value {
    let out = Command::new(rvs_binary())
        .args(args)
        .arg("--socket")
        .arg(control_socket(topo))
        .output()
        .expect("run rvs client");
    assert!(
        out.status.success(),
        "rvs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("rvs --json output")
}

impl Topology {
    /// SIGKILLs the harness HTTP server(s) listening on `port` in namespace
    /// `short`, found by pid inside that namespace only (other tests run
    /// servers of the same name), and waits until the port is closed.
    pub fn kill_http_server(&self, short: &str, port: u16) {
        let out = Command::new("ip")
            .args(["netns", "pids", self.ns(short)])
            .output()
            .expect("ip netns pids");
        let mut killed = 0;
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("http_server") && cmdline.trim_end().ends_with(&port.to_string()) {
                // SAFETY: kill(2) on a pid `ip netns pids` just listed in our
                // own namespace; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed += 1;
            }
        }
        assert!(killed > 0, "no http_server on {port} in {short}");
        let filter = format!("= :{port}");
        let gone = wait_until(Duration::from_secs(5), || {
            let out = self.exec(short, &["ss", "-Htln", "sport", &filter]);
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        });
        assert!(gone.is_some(), "http server of {short} still listening");
    }
}
