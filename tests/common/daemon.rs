//! A background process under test (the `rvs` daemon, a tunnel endpoint, a
//! helper listener) with its output in a log file and a readiness line.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use super::{rvs_binary, Topology, READY_TIMEOUT};

/// Line the rvs daemon and `rvs tunnel-endpoint` print once they serve.
pub const READY_LINE: &str = "rvs: ready";

/// How long [`Daemon::stop`] and Drop wait after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until a line of `log` contains `needle`; Err if `child` exits first
/// or `timeout` passes.
pub fn wait_for_line(
    child: &mut Child,
    log: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l.contains(needle)) {
            return Ok(());
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!("exited ({status}) before printing {needle:?}"))
            }
            Ok(None) => {}
            Err(e) => return Err(format!("waiting: {e}")),
        }
        if Instant::now() >= deadline {
            return Err(format!("no {needle:?} within {timeout:?}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A process started in a namespace. On Drop it gets SIGTERM, then SIGKILL
/// after [`STOP_TIMEOUT`]; if the test is panicking its log is printed.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    what: String,
    log: PathBuf,
    config: Option<PathBuf>,
    exit: Option<ExitStatus>,
}

impl Daemon {
    /// Writes `config` to a file in the topology's scratch directory, runs
    /// `rvs run --config FILE` in the director namespace and waits
    /// (≤ [`READY_TIMEOUT`]) for [`READY_LINE`].
    ///
    /// # Panics
    /// If the daemon exits or is not ready in time, with its log.
    ///
    /// A config without `state_dir` gets the topology's `state` directory,
    /// so no test reads or writes the host's /var/lib/rvs.
    pub fn start(topo: &Topology, config: &str) -> Daemon {
        let config = if config.contains("state_dir") {
            config.to_string()
        } else {
            let dir = topo.tmp_dir().join("state");
            config.replacen(
                "[daemon]\n",
                &format!("[daemon]\nstate_dir = \"{}\"\n", dir.display()),
                1,
            )
        };
        let path = topo.write_file(&format!("rvs-{}.toml", topo.next_id()), &config);
        let path_arg = path.to_string_lossy().into_owned();
        let mut daemon = Daemon::start_rvs(topo, "dir", &["run", "--config", &path_arg]);
        daemon.config = Some(path);
        daemon
    }

    /// Runs `rvs ARGS…` in namespace `short` and waits for [`READY_LINE`].
    pub fn start_rvs(topo: &Topology, short: &str, args: &[&str]) -> Daemon {
        let binary = rvs_binary().to_string_lossy().into_owned();
        let mut argv = vec![binary.as_str()];
        argv.extend_from_slice(args);
        Daemon::start_command(topo, short, &argv, READY_LINE)
    }

    /// Runs `argv` in namespace `short` (stdout and stderr to one log file)
    /// and waits until a log line contains `ready`.
    pub fn start_command(topo: &Topology, short: &str, argv: &[&str], ready: &str) -> Daemon {
        let (mut child, log) = topo.spawn_logged(short, argv);
        let what = format!("`{}` in {}", argv.join(" "), topo.ns(short));
        if let Err(why) = wait_for_line(&mut child, &log, ready, READY_TIMEOUT) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not become ready: {why}\n--- log {} ---\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Daemon {
            child,
            what,
            log,
            config: None,
            exit: None,
        }
    }

    /// Process id (the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Path of the config file ([`Daemon::start`] only).
    pub fn config_path(&self) -> Option<&Path> {
        self.config.as_deref()
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) if it is still running.
    pub fn signal(&mut self, signal: libc::c_int) {
        if self.is_running() {
            // SAFETY: kill(2) on our own child, which has not been reaped
            // (is_running just saw it alive), so the pid is still ours.
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        }
    }

    /// True until it exits.
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits up to `timeout` for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.exit
    }

    /// SIGTERM, wait ≤ [`STOP_TIMEOUT`], then SIGKILL; returns how it ended.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        if let Some(status) = self.wait_exit(STOP_TIMEOUT) {
            return status;
        }
        eprintln!(
            "[harness] {} ignored SIGTERM for {STOP_TIMEOUT:?}; SIGKILL",
            self.what
        );
        let _ = self.child.kill();
        // Never panic here: stop() also runs from Drop. Raw status 9 = SIGKILL.
        let status = self
            .child
            .wait()
            .unwrap_or_else(|_| ExitStatus::from_raw(libc::SIGKILL));
        self.exit = Some(status);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.is_running() {
            self.stop();
        }
        if thread::panicking() {
            eprintln!(
                "[harness] --- log of {} ({}) ---\n{}\n[harness] --- end of log ---",
                self.what,
                self.exit.map(|s| s.to_string()).unwrap_or_default(),
                self.log()
            );
        }
    }
}
