//! End-to-end test harness: hosts are network namespaces joined by veth pairs
//! and a bridge, built per test and removed on Drop (also when the test
//! panics).
//!
//! One-armed LVS on one L2 segment (DESIGN.md, "Test network"):
//!
//! ```text
//!  cli 198.51.100.2 ── eth0 ⇄ eth1 ── rtr 198.51.100.1 / 192.0.2.254 (ip_forward=1,
//!                                       │  203.0.113.0/24 via 192.0.2.1)
//!                              sw: br0 ─┼─ dir 192.0.2.1 (ip_forward=0, default via .254)
//!                                       ├─ rs1 192.0.2.11
//!                                       └─ rsN 192.0.2.(10+N)  (default via .1 or .254)
//! ```
//!
//! Safety rules: nothing here touches the root namespace's interfaces,
//! routes, sysctls or firewall. Every link is created inside a namespace
//! (`ip -n NS link add … peer … netns SW`), every command runs with a time
//! bound, every wait loop is bounded. Namespace names are
//! `rvs{pid}x{counter}-{host}`, unique per topology, so tests run in
//! parallel. A stale namespace with the same prefix (a crashed run whose pid
//! was reused) is removed before building. Missing root or a missing tool is
//! a loud failure, never a skip.

#![allow(dead_code)]

pub mod client;
pub mod daemon;
pub mod nft;
pub mod scripts;

use std::ffi::OsStr;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test binary uses its own subset
pub use client::{control_socket, rvs_json};
pub use daemon::Daemon;
pub use nft::NftCounter;

/// Time bound of one harness command unless a caller picks another.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Time bound for a background server to print its readiness line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a UDP request waits for its reply.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(2);

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const ROUTER_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const ROUTER_LAN_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
pub const DIRECTOR_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The first VIP tests use; any address in 203.0.113.0/24 routes to the director.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

/// Address of real server `i` (1-based): 192.0.2.(10+i).
pub fn rs_ip(i: usize) -> Ipv4Addr {
    assert!(
        (1..=200).contains(&i),
        "real server index {i} out of 1..=200"
    );
    Ipv4Addr::new(192, 0, 2, 10 + i as u8)
}

/// MAC address of a host's LAN interface (eth0): 02:00:00:00:02:<last octet
/// of its LAN address>; the client is 02:00:00:00:01:02 and the router's
/// client-side interface 02:00:00:00:01:01.
pub fn lan_mac(last_octet: u8) -> String {
    format!("02:00:00:00:02:{last_octet:02x}")
}

/// The body GET /bytes?n=N returns: byte i is `i % 251`.
pub fn expected_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Path of the `rvs` binary cargo built for these tests.
pub fn rvs_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rvs"))
}

/// Where a real server sends its replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// 192.0.2.1, for NAT: replies must pass the director.
    Director,
    /// 192.0.2.254, for DR and TUN: replies go straight to the client.
    Router,
}

impl Gateway {
    pub fn ip(self) -> Ipv4Addr {
        match self {
            Gateway::Director => DIRECTOR_IP,
            Gateway::Router => ROUTER_LAN_IP,
        }
    }
}

/// Runs `cmd` with stdin closed, collecting stdout and stderr, killing it
/// after `timeout` (then stderr ends with a `[harness] killed` note).
///
/// # Panics
/// If the program cannot be started.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut out = child.stdout.take().expect("stdout was piped");
    let mut err = child.stderr.take().expect("stderr was piped");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait after kill");
            }
            Ok(None) => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let mut stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        stderr
            .extend_from_slice(format!("\n[harness] killed {what} after {timeout:?}\n").as_bytes());
    }
    Output {
        status,
        stdout,
        stderr,
    }
}

fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`{}` failed ({}):\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fails the test (never skips) unless we are root and every tool exists.
fn check_prerequisites() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "end-to-end tests need root (network namespaces, raw sockets); \
                 euid is {euid}. Run them as root, e.g. `sudo -E cargo test`."
            ));
        }
        let missing: Vec<&str> = ["ip", "nft", "python3", "curl", "sysctl"]
            .into_iter()
            .filter(|t| !on_path(t))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "end-to-end tests need these tools on PATH: {} \
                 (Debian: apt-get install -y iproute2 nftables python3 curl procps)",
                missing.join(", ")
            ));
        }
        Ok(())
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

/// Names of all network namespaces (`ip netns list`).
pub fn list_namespaces() -> Vec<String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "list"]);
    let out = run_bounded(cmd, COMMAND_TIMEOUT);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// SIGKILLs every process in namespace `full` (by pid, from `ip netns pids`)
/// and deletes it. Never panics: it runs from Drop.
fn remove_namespace(full: &str) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "pids", full]);
    let out = run_bounded(cmd, COMMAND_TIMEOUT);
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill(2) with a pid that `ip netns pids` reported inside our
        // own namespace; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "del", full]);
    let out = run_bounded(cmd, COMMAND_TIMEOUT);
    if !out.status.success() {
        eprintln!(
            "[harness] ip netns del {full}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// Removes every namespace whose name starts with `prefix`.
pub fn remove_namespaces_with_prefix(prefix: &str) {
    for name in list_namespaces() {
        if name.starts_with(prefix) {
            remove_namespace(&name);
        }
    }
}

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

/// The test network. See the module docs for the picture.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    real_servers: usize,
    /// Full names of the namespaces created so far, in creation order.
    namespaces: Vec<String>,
    tmp: PathBuf,
    /// Background processes the harness started; killed and reaped on Drop.
    children: Mutex<Vec<Child>>,
    /// Pids handed out by [`Topology::spawn`]; killed on Drop.
    spawned: Mutex<Vec<u32>>,
    next_id: AtomicU32,
}

impl Topology {
    /// Builds the network with `real_servers` real servers (rs1..rsN) whose
    /// default gateway is the router (DR/TUN style).
    ///
    /// # Panics
    /// Without root, a needed tool, or if any step fails; whatever was built
    /// is removed first.
    pub fn new(real_servers: usize) -> Topology {
        Topology::with_gateway(real_servers, Gateway::Router)
    }

    /// Like [`Topology::new`], with every real server's default route via `gw`.
    pub fn with_gateway(real_servers: usize, gw: Gateway) -> Topology {
        check_prerequisites();
        assert!(
            (1..=200).contains(&real_servers),
            "real servers: 1..=200, not {real_servers}"
        );
        let prefix = format!(
            "rvs{}x{}-",
            std::process::id(),
            NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed)
        );
        // A crashed earlier run with our pid (reused) and counter.
        remove_namespaces_with_prefix(&prefix);
        let tmp = std::env::temp_dir().join(format!("{prefix}e2e"));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("creating {}: {e}", tmp.display()));
        let mut topo = Topology {
            prefix,
            real_servers,
            namespaces: Vec::new(),
            tmp,
            children: Mutex::new(Vec::new()),
            spawned: Mutex::new(Vec::new()),
            next_id: AtomicU32::new(0),
        };
        // A panic in build() drops `topo`, which removes what exists.
        topo.build(gw);
        topo
    }

    fn build(&mut self, gw: Gateway) {
        let ipv6 = Path::new("/proc/sys/net/ipv6").exists();
        let mut hosts: Vec<String> = ["cli", "rtr", "sw", "dir"].map(String::from).to_vec();
        hosts.extend((1..=self.real_servers).map(|i| format!("rs{i}")));
        for host in &hosts {
            let full = format!("{}{host}", self.prefix);
            self.ip(&["netns", "add", &full]);
            self.namespaces.push(full);
            self.ip_in(host, &["link", "set", "lo", "up"]);
            if ipv6 {
                // No IPv6 chatter (DAD, router solicitations) on the segment.
                self.sysctl(host, "net.ipv6.conf.all.disable_ipv6", "1");
                self.sysctl(host, "net.ipv6.conf.default.disable_ipv6", "1");
            }
            // New namespaces inherit IPv4 settings from the root one; pin them.
            let forward = if host == "rtr" { "1" } else { "0" };
            self.sysctl(host, "net.ipv4.ip_forward", forward);
        }

        let sw = self.ns("sw").to_string();
        self.ip_in(
            "sw",
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        );
        self.ip_in("sw", &["link", "set", "br0", "up"]);
        // A plain switch: with br_netfilter in the kernel, bridged IPv4 would
        // be validated (and broken headers dropped) before reaching a host.
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-arptables"] {
            let path = format!("net.bridge.{key}");
            if std::path::Path::new(&format!("/proc/sys/net/bridge/{key}")).exists() {
                self.sysctl("sw", &path, "0");
            }
        }

        // Client ⇄ router, a point-to-point veth pair.
        let rtr = self.ns("rtr").to_string();
        self.ip_in(
            "cli",
            &[
                "link",
                "add",
                "eth0",
                "address",
                "02:00:00:00:01:02",
                "type",
                "veth",
                "peer",
                "name",
                "eth1",
                "address",
                "02:00:00:00:01:01",
                "netns",
                &rtr,
            ],
        );

        // LAN hosts: eth0 in the host, a port named after the host on br0.
        let mut lan: Vec<(String, Ipv4Addr)> =
            vec![("rtr".into(), ROUTER_LAN_IP), ("dir".into(), DIRECTOR_IP)];
        lan.extend((1..=self.real_servers).map(|i| (format!("rs{i}"), rs_ip(i))));
        for (host, addr) in &lan {
            let mac = lan_mac(addr.octets()[3]);
            self.ip_in(
                host,
                &[
                    "link", "add", "eth0", "address", &mac, "type", "veth", "peer", "name", host,
                    "netns", &sw,
                ],
            );
            self.ip_in("sw", &["link", "set", host, "master", "br0"]);
            self.ip_in("sw", &["link", "set", host, "up"]);
            self.ip_in(host, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            self.ip_in(host, &["link", "set", "eth0", "up"]);
        }

        self.ip_in("cli", &["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
        self.ip_in("cli", &["link", "set", "eth0", "up"]);
        self.ip_in("cli", &["route", "add", "default", "via", "198.51.100.1"]);

        self.ip_in("rtr", &["addr", "add", "198.51.100.1/24", "dev", "eth1"]);
        self.ip_in("rtr", &["link", "set", "eth1", "up"]);
        self.ip_in(
            "rtr",
            &["route", "add", "203.0.113.0/24", "via", "192.0.2.1"],
        );

        self.ip_in("dir", &["route", "add", "default", "via", "192.0.2.254"]);

        for i in 1..=self.real_servers {
            self.set_rs_gateway(i, gw);
        }
    }

    /// Runs `ip ARGS` (namespace-scoped arguments only), panicking on failure.
    fn ip(&self, args: &[&str]) {
        let mut cmd = Command::new("ip");
        cmd.args(args);
        let out = run_bounded(cmd, COMMAND_TIMEOUT);
        if !out.status.success() {
            let mut all = vec!["ip"];
            all.extend_from_slice(args);
            panic!("{}", describe(&all, &out));
        }
    }

    /// `ip -n <ns> ARGS`.
    fn ip_in(&self, short: &str, args: &[&str]) {
        let full = self.ns(short).to_string();
        let mut all = vec!["-n", full.as_str()];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// Sets a sysctl inside namespace `short`.
    pub fn sysctl(&self, short: &str, key: &str, value: &str) {
        self.exec_ok(short, &["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Reads a sysctl inside namespace `short`.
    pub fn sysctl_get(&self, short: &str, key: &str) -> String {
        self.exec_ok(short, &["sysctl", "-n", key])
            .trim()
            .to_string()
    }

    /// The prefix of every namespace of this topology (`rvs{pid}x{n}-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Number of real servers.
    pub fn real_servers(&self) -> usize {
        self.real_servers
    }

    /// Full names of this topology's namespaces.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// This topology's scratch directory (configs, logs, scripts); removed
    /// on Drop. Use it for per-test paths such as a control socket.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// A number unique within this topology, for file names.
    pub fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes `contents` to `name` in [`Topology::tmp_dir`] and returns the path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.tmp.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        path
    }

    /// Full namespace name of host `short` ("cli", "rtr", "sw", "dir", "rs1"…).
    /// A full name of this topology is returned unchanged.
    ///
    /// # Panics
    /// If `short` names no host of this topology.
    pub fn ns(&self, short: &str) -> &str {
        let short = short.strip_prefix(self.prefix.as_str()).unwrap_or(short);
        self.namespaces
            .iter()
            .find(|full| full.strip_prefix(self.prefix.as_str()) == Some(short))
            .map(String::as_str)
            .unwrap_or_else(|| {
                panic!(
                    "no host {short:?} in this topology (hosts: cli, rtr, sw, dir, rs1..rs{})",
                    self.real_servers
                )
            })
    }

    /// `ip netns exec <ns> ARGS…` as a Command, not yet run.
    pub fn command<S: AsRef<OsStr>>(&self, short: &str, args: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(short)]).args(args);
        cmd
    }

    /// Runs `args` in namespace `short` (bounded by [`COMMAND_TIMEOUT`]).
    pub fn exec(&self, short: &str, args: &[&str]) -> Output {
        self.exec_timeout(short, args, COMMAND_TIMEOUT)
    }

    /// Runs `args` in namespace `short`, killed after `timeout`.
    pub fn exec_timeout(&self, short: &str, args: &[&str], timeout: Duration) -> Output {
        run_bounded(self.command(short, args), timeout)
    }

    /// Runs `args` in namespace `short` and returns its stdout.
    ///
    /// # Panics
    /// If it fails, with its stdout and stderr.
    pub fn exec_ok(&self, short: &str, args: &[&str]) -> String {
        let out = self.exec(short, args);
        if !out.status.success() {
            panic!("in {}: {}", self.ns(short), describe(args, &out));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_path(&self, short: &str, what: &str) -> PathBuf {
        self.tmp
            .join(format!("{short}-{what}-{}.log", self.next_id()))
    }

    /// Starts `args` in namespace `short` in the background, stdout and
    /// stderr appended to a log file in [`Topology::tmp_dir`]. The process is
    /// SIGKILLed when the topology drops (if still running).
    pub fn spawn(&self, short: &str, args: &[&str]) -> Child {
        let (child, _log) = self.spawn_logged(short, args);
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child.id());
        child
    }

    /// Starts `args` in `short` with output to a fresh log file; returns the
    /// child and the log path. The caller owns the child.
    pub fn spawn_logged(&self, short: &str, args: &[&str]) -> (Child, PathBuf) {
        let name = Path::new(args.first().copied().unwrap_or("cmd"))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cmd".into());
        let log = self.log_path(short, &name);
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let file2 = file.try_clone().expect("dup log file");
        let mut cmd = self.command(short, args);
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {short}: {e}"));
        (child, log)
    }

    /// Starts a python3 server script in `short`, waits (≤ [`READY_TIMEOUT`])
    /// for it to print `ready`, and keeps it until Drop.
    fn start_script(&self, short: &str, script: &str, args: &[&str]) {
        let path = self.write_file(&format!("{script}.py"), script_text(script));
        let path = path.to_string_lossy().into_owned();
        let mut argv = vec!["python3", "-u", path.as_str()];
        argv.extend_from_slice(args);
        let (mut child, log) = self.spawn_logged(short, &argv);
        let result = daemon::wait_for_line(&mut child, &log, "ready", READY_TIMEOUT);
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        if let Err(why) = result {
            panic!(
                "{script} in {short} did not start: {why}\n--- log ---\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Starts the HTTP server on real server `i`, on 0.0.0.0:`port`.
    /// GET / answers "rsI\n"; GET /bytes?n=N answers [`expected_bytes`]`(N)`.
    pub fn start_http_server(&self, i: usize, port: u16) {
        let name = self.rs(i);
        self.start_script(&name, "http_server", &[&name, &port.to_string()]);
    }

    /// [`Topology::start_http_server`] on every real server.
    pub fn start_http_servers(&self, port: u16) {
        for i in 1..=self.real_servers {
            self.start_http_server(i, port);
        }
    }

    /// Starts the UDP echo on real server `i`, on 0.0.0.0:`port`: each
    /// datagram is answered with "rsI:" + payload, from the address it was
    /// sent to.
    pub fn start_udp_echo_on(&self, i: usize, port: u16) {
        let name = self.rs(i);
        self.start_script(&name, "udp_echo", &[&name, &port.to_string()]);
    }

    /// [`Topology::start_udp_echo_on`] on every real server.
    pub fn start_udp_echo(&self, port: u16) {
        for i in 1..=self.real_servers {
            self.start_udp_echo_on(i, port);
        }
    }

    /// "rsI", checking that real server `i` exists.
    pub fn rs(&self, i: usize) -> String {
        assert!(
            (1..=self.real_servers).contains(&i),
            "real server {i} out of 1..={}",
            self.real_servers
        );
        format!("rs{i}")
    }

    /// Points real server `i`'s default route at `gw`.
    pub fn set_rs_gateway(&self, i: usize, gw: Gateway) {
        let host = self.rs(i);
        self.ip_in(
            &host,
            &["route", "replace", "default", "via", &gw.ip().to_string()],
        );
    }

    /// GET `url` with curl from the client; Ok(body) or Err(curl's error).
    pub fn curl(&self, url: &str, timeout: Duration) -> Result<String, String> {
        self.curl_from("cli", url, timeout)
    }

    /// GET `url` with curl from namespace `short`.
    pub fn curl_from(&self, short: &str, url: &str, timeout: Duration) -> Result<String, String> {
        self.curl_bytes_from(short, url, timeout)
            .map(|body| String::from_utf8_lossy(&body).into_owned())
    }

    /// GET `url` from namespace `short`; the raw body.
    pub fn curl_bytes_from(
        &self,
        short: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let max_time = format!("{:.3}", timeout.as_secs_f64());
        let args = [
            "curl",
            "-sS",
            "--fail",
            "--noproxy",
            "*",
            "--max-time",
            &max_time,
            url,
        ];
        let out = self.exec_timeout(short, &args, timeout + Duration::from_secs(5));
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "curl {url} from {short}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Sends one UDP datagram `payload` from the client to `addr`
    /// ("ip:port") and returns the reply, waiting up to [`UDP_TIMEOUT`].
    pub fn udp_request(&self, addr: &str, payload: &str) -> Result<String, String> {
        self.udp_request_from("cli", addr, payload, UDP_TIMEOUT)
    }

    /// [`Topology::udp_request`] from namespace `short` with a chosen timeout.
    /// Only a reply from `addr` itself counts (the socket is connected).
    pub fn udp_request_from(
        &self,
        short: &str,
        addr: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let addr: SocketAddrV4 = addr
            .parse()
            .unwrap_or_else(|e| panic!("udp_request: {addr:?} is not ip:port: {e}"));
        let ip = addr.ip().to_string();
        let port = addr.port().to_string();
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let args = [
            "python3",
            "-c",
            scripts::UDP_REQUEST,
            &ip,
            &port,
            payload,
            &secs,
        ];
        let out = self.exec_timeout(short, &args, timeout + Duration::from_secs(5));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "udp {addr} from {short}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// One ICMP echo from namespace `short` to `addr`.
    pub fn ping(&self, short: &str, addr: Ipv4Addr, timeout: Duration) -> Result<(), String> {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        let args = ["python3", "-c", scripts::PING, &addr.to_string(), &secs];
        let out = self.exec_timeout(short, &args, timeout + Duration::from_secs(5));
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ping {addr} from {short}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Prepares real server `i` for DR: `vip`/32 on lo, arp_ignore=1 and
    /// arp_announce=2 (all and eth0), so it accepts the VIP without answering
    /// ARP for it. The gateway is left alone (DR wants [`Gateway::Router`]).
    pub fn setup_dr_real_server(&self, i: usize, vip: Ipv4Addr) {
        let host = self.rs(i);
        self.ip_in(&host, &["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
        for dev in ["all", "eth0"] {
            self.sysctl(&host, &format!("net.ipv4.conf.{dev}.arp_ignore"), "1");
            self.sysctl(&host, &format!("net.ipv4.conf.{dev}.arp_announce"), "2");
        }
    }

    /// Puts `vip`/32 on the director's lo (the kernel then answers ARP for it).
    pub fn add_vip_on_director(&self, vip: Ipv4Addr) {
        self.ip_in("dir", &["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    }

    /// Starts `rvs tunnel-endpoint --vip …` on real server `i` and waits for
    /// its readiness line.
    pub fn start_tunnel_endpoint(&self, i: usize, vips: &[Ipv4Addr]) -> Daemon {
        let host = self.rs(i);
        let vips: Vec<String> = vips.iter().map(Ipv4Addr::to_string).collect();
        let mut args = vec!["tunnel-endpoint"];
        for vip in &vips {
            args.extend(["--vip", vip.as_str()]);
        }
        Daemon::start_rvs(self, &host, &args)
    }

    /// Installs a counting rule in namespace `short` (see [`NftCounter`]).
    pub fn nft_counter(&self, short: &str, hook: &str, rule: &str) -> NftCounter {
        NftCounter::install(self, short, hook, rule)
    }
}

fn script_text(name: &str) -> &'static str {
    match name {
        "http_server" => scripts::HTTP_SERVER,
        "udp_echo" => scripts::UDP_ECHO,
        other => panic!("no script {other}"),
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let spawned = std::mem::take(&mut *self.spawned.lock().unwrap_or_else(|p| p.into_inner()));
        let ours: Vec<u32> = self
            .namespaces
            .iter()
            .flat_map(|ns| {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "pids", ns]);
                let out = run_bounded(cmd, COMMAND_TIMEOUT);
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        // Only pids still inside our namespaces: a reaped pid may be reused.
        for pid in spawned.into_iter().filter(|p| ours.contains(p)) {
            // SAFETY: kill(2) on a pid that is inside one of our namespaces.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for ns in self.namespaces.iter().rev() {
            remove_namespace(ns);
        }
        if thread::panicking() {
            eprintln!("[harness] test failed; topology {} removed", self.prefix);
        }
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// CPU time (user + system, in clock ticks) `pid` has used so far.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Share of one core `pid` uses over the next second.
pub fn cpu_share(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let a = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    (cpu_ticks(pid) - a) as f64 / hz
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
