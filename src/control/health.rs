//! Health checks, run by [`HealthManager`].
//!
//! One tokio task per (service, real server, check); each probe uses a
//! fresh connection (or process) and its own timeout, and never blocks
//! another check or the packet path. Transitions need `rise` consecutive
//! successes or `fall` consecutive failures and are reported once as a
//! [`HealthEvent`] with the reason of the last probe.
//!
//! The probes are written against tokio's sockets directly: no HTTP client
//! library, so no proxy environment (`http_proxy`, …) can ever redirect a
//! check.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::core::config::{CheckKind, Config, HealthCheck};
use crate::core::service::{RealKey, ServiceKey};

/// A real server's health as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No result yet, or no check configured.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A state change of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub real: RealKey,
    pub health: Health,
    /// Why: "timeout after 1s", "connection refused", "status 503", …
    pub reason: String,
}

/// The rise/fall state machine of one real server, fed probe results.
///
/// From `Unknown` the first `rise` consecutive successes make it `Up` and
/// the first `fall` consecutive failures make it `Down`; `Up` needs `fall`
/// consecutive failures to go down, `Down` needs `rise` consecutive
/// successes to come back. Any opposite result resets the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    health: Health,
    successes: u32,
    failures: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32, initial: Health) -> Tracker {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            health: initial,
            successes: 0,
            failures: 0,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Feeds one probe result; returns the new state if it changed.
    pub fn observe(&mut self, success: bool) -> Option<Health> {
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.health != Health::Up && self.successes >= self.rise {
                self.health = Health::Up;
                return Some(Health::Up);
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.health != Health::Down && self.failures >= self.fall {
                self.health = Health::Down;
                return Some(Health::Down);
            }
        }
        None
    }
}

/// What identifies one running check: a change to any part restarts it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckSpec {
    service_name: String,
    check: HealthCheck,
}

#[derive(Debug)]
struct Running {
    spec: CheckSpec,
    task: JoinHandle<()>,
}

/// Runs the checks of the current config.
#[derive(Debug)]
pub struct HealthManager {
    events: mpsc::UnboundedSender<HealthEvent>,
    states: HashMap<RealKey, Health>,
    running: HashMap<RealKey, Running>,
}

impl HealthManager {
    pub fn new(events: mpsc::UnboundedSender<HealthEvent>) -> HealthManager {
        HealthManager {
            events,
            states: HashMap::new(),
            running: HashMap::new(),
        }
    }

    /// Starts checks for new (service, server, check) triples, stops those
    /// no longer in `config`, keeps the state of unchanged ones.
    ///
    /// Must be called within a tokio runtime (a blocking task of it is
    /// fine).
    pub fn sync(&mut self, config: &Config) {
        let mut wanted: HashMap<RealKey, CheckSpec> = HashMap::new();
        for s in &config.services {
            let key = ServiceKey {
                protocol: s.protocol,
                addr: s.address,
            };
            for r in &s.real_servers {
                if let Some(check) = &r.health_check {
                    wanted.insert(
                        (key, r.address),
                        CheckSpec {
                            service_name: s.name.clone(),
                            check: check.clone(),
                        },
                    );
                }
            }
        }

        // Stop checks that are gone or changed.
        let stale: Vec<RealKey> = self
            .running
            .iter()
            .filter(|(k, run)| wanted.get(k) != Some(&run.spec))
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(run) = self.running.remove(&k) {
                run.task.abort();
            }
            if !wanted.contains_key(&k) {
                // No check any more: the server is no longer held down.
                if self.states.remove(&k).is_some_and(|h| h != Health::Unknown) {
                    let _ = self.events.send(HealthEvent {
                        real: k,
                        health: Health::Unknown,
                        reason: "health check removed".to_owned(),
                    });
                }
            }
        }

        let handle = match tokio::runtime::Handle::try_current() {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("health checks not started: no tokio runtime ({e})");
                return;
            }
        };
        for (k, spec) in wanted {
            if self.running.contains_key(&k) {
                continue;
            }
            // A changed check starts from the state the old one reached, so
            // a down server is not handed flows before it proves itself.
            let initial = self.state(&k);
            let tracker = Tracker::new(spec.check.rise, spec.check.fall, initial);
            let target = Target::new(&k, &spec);
            let task = handle.spawn(run_check(
                k,
                target,
                spec.check.clone(),
                tracker,
                self.events.clone(),
            ));
            self.running.insert(k, Running { spec, task });
        }
    }

    /// Records a transition reported by a check task.
    pub fn record(&mut self, ev: &HealthEvent) {
        self.states.insert(ev.real, ev.health);
    }

    pub fn state(&self, real: &RealKey) -> Health {
        self.states.get(real).copied().unwrap_or(Health::Unknown)
    }
}

impl Drop for HealthManager {
    fn drop(&mut self) {
        for run in self.running.values() {
            run.task.abort();
        }
    }
}

/// Where and for whom a probe runs.
#[derive(Debug, Clone)]
struct Target {
    addr: SocketAddrV4,
    real: SocketAddrV4,
    service_name: String,
}

impl Target {
    fn new(k: &RealKey, spec: &CheckSpec) -> Target {
        let real = k.1;
        let ip: Ipv4Addr = spec.check.address.unwrap_or(*real.ip());
        let port = spec.check.port.unwrap_or(real.port());
        Target {
            addr: SocketAddrV4::new(ip, port),
            real,
            service_name: spec.service_name.clone(),
        }
    }
}

async fn run_check(
    real: RealKey,
    target: Target,
    check: HealthCheck,
    mut tracker: Tracker,
    events: mpsc::UnboundedSender<HealthEvent>,
) {
    let mut tick = tokio::time::interval(check.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = probe(&target, &check).await;
        let ok = result.is_ok();
        if let Some(h) = tracker.observe(ok) {
            let reason = match result {
                Ok(why) => why,
                Err(why) => why,
            };
            if events
                .send(HealthEvent {
                    real,
                    health: h,
                    reason,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

/// One probe: Ok(what succeeded) or Err(why it failed).
async fn probe(t: &Target, check: &HealthCheck) -> Result<String, String> {
    let to = check.timeout;
    let fut = async {
        match &check.kind {
            CheckKind::Tcp => probe_tcp(t.addr).await,
            CheckKind::Http {
                path,
                host,
                status,
                body,
            } => probe_http(t.addr, path, host.as_deref(), *status, body.as_deref()).await,
            CheckKind::Udp { payload, expect } => {
                probe_udp(t.addr, payload, expect.as_deref()).await
            }
            // Bounds itself: a timeout must kill the process group.
            CheckKind::Exec { command } => probe_exec(t, command, to).await,
        }
    };
    if matches!(check.kind, CheckKind::Exec { .. }) {
        return fut.await;
    }
    match tokio::time::timeout(to, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {}", fmt_duration(to))),
    }
}

/// "1s", "150ms", "1.5s".
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        _ => e.to_string(),
    }
}

async fn probe_tcp(addr: SocketAddrV4) -> Result<String, String> {
    TcpStream::connect(addr)
        .await
        .map(|_| "connect ok".to_owned())
        .map_err(|e| io_reason(&e))
}

/// The most of a response an http check reads.
const HTTP_MAX: usize = 1 << 20;

async fn probe_http(
    addr: SocketAddrV4,
    path: &str,
    host: Option<&str>,
    status: u16,
    body: Option<&str>,
) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| io_reason(&e))?;
    let host = host.map_or_else(|| addr.ip().to_string(), str::to_owned);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rvs-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| io_reason(&e))?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let mut got: Option<u16> = None;
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(n) => n,
            // A reset after a complete answer (a server that closes with
            // unread data) still counts as that answer.
            Err(e) if got.is_some() && e.kind() == io::ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(io_reason(&e)),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if got.is_none() {
            got = match parse_status_line(&buf) {
                StatusLine::Incomplete => None,
                StatusLine::Invalid => return Err("invalid HTTP response".to_owned()),
                StatusLine::Status(code) => Some(code),
            };
            if let Some(code) = got {
                if code != status {
                    return Err(format!("status {code}"));
                }
                if body.is_none() {
                    return Ok(format!("status {code}"));
                }
            }
        }
        if buf.len() >= HTTP_MAX {
            break;
        }
    }
    let code = match got {
        Some(c) => c,
        None => {
            return Err(match parse_status_line(&buf) {
                StatusLine::Incomplete if buf.is_empty() => "empty response".to_owned(),
                _ => "invalid HTTP response".to_owned(),
            })
        }
    };
    if let Some(want) = body {
        let start = find(&buf, b"\r\n\r\n").map_or(buf.len(), |i| i + 4);
        if find(&buf[start..], want.as_bytes()).is_none() {
            return Err(format!("body does not contain {want:?}"));
        }
    }
    Ok(format!("status {code}"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The result of parsing the start of an HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusLine {
    /// Not a whole status line yet.
    Incomplete,
    /// Not an HTTP/1.x status line.
    Invalid,
    Status(u16),
}

/// Parses `HTTP/1.x NNN [reason]\r\n` at the start of `buf`.
pub fn parse_status_line(buf: &[u8]) -> StatusLine {
    const PREFIX: &[u8] = b"HTTP/";
    let head = &buf[..buf.len().min(PREFIX.len())];
    if head != &PREFIX[..head.len()] {
        return StatusLine::Invalid;
    }
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > 8192 {
            StatusLine::Invalid
        } else {
            StatusLine::Incomplete
        };
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return StatusLine::Invalid;
    };
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    let valid_version = matches!(
        version.strip_prefix("HTTP/"),
        Some(v) if v.len() == 3 && v.as_bytes()[1] == b'.' && v.as_bytes()[0].is_ascii_digit() && v.as_bytes()[2].is_ascii_digit()
    );
    if !valid_version || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return StatusLine::Invalid;
    }
    match code.parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => StatusLine::Status(c),
        _ => StatusLine::Invalid,
    }
}

async fn probe_udp(
    addr: SocketAddrV4,
    payload: &[u8],
    expect: Option<&[u8]>,
) -> Result<String, String> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| io_reason(&e))?;
    s.connect(addr).await.map_err(|e| io_reason(&e))?;
    s.send(payload).await.map_err(|e| io_reason(&e))?;
    let mut buf = vec![0u8; 65_536];
    // A connected socket reports an ICMP port unreachable as ECONNREFUSED.
    let n = s.recv(&mut buf).await.map_err(|e| io_reason(&e))?;
    match expect {
        Some(want) if find(&buf[..n], want).is_none() => {
            Err(format!("unexpected answer ({n} bytes)"))
        }
        _ => Ok(format!("answer of {n} bytes")),
    }
}

async fn probe_exec(t: &Target, command: &str, to: Duration) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .env("RVS_REAL_SERVER_ADDRESS", t.real.ip().to_string())
        .env("RVS_REAL_SERVER_PORT", t.real.port().to_string())
        .env("RVS_CHECK_ADDRESS", t.addr.ip().to_string())
        .env("RVS_CHECK_PORT", t.addr.port().to_string())
        .env("RVS_VIRTUAL_SERVICE", &t.service_name)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot run sh: {e}"))?;
    let pid = child.id();
    let kill_group = |pid: Option<u32>| {
        if let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group of a child we spawned
            // (process_group(0) made its pid the group id) and have not yet
            // reaped, so the id cannot have been reused; no memory involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    };
    match tokio::time::timeout(to, child.wait()).await {
        Ok(Ok(st)) => {
            // Leftovers of a command that exited (backgrounded children).
            kill_group(pid);
            if st.success() {
                Ok("exit status 0".to_owned())
            } else if let Some(code) = st.code() {
                Err(format!("exit status {code}"))
            } else {
                Err(format!("{st}"))
            }
        }
        Ok(Err(e)) => Err(format!("waiting for the command: {e}")),
        Err(_) => {
            kill_group(pid);
            let _ = child.wait().await;
            Err(format!("timeout after {}", fmt_duration(to)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tracker, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&r| t.observe(r)).collect()
    }

    #[test]
    fn unknown_goes_up_after_rise_successes() {
        let mut t = Tracker::new(2, 3, Health::Unknown);
        assert_eq!(feed(&mut t, &[true]), [None]);
        assert_eq!(t.health(), Health::Unknown);
        assert_eq!(feed(&mut t, &[true]), [Some(Health::Up)]);
        assert_eq!(feed(&mut t, &[true, true]), [None, None]);
    }

    #[test]
    fn unknown_goes_down_after_fall_failures() {
        let mut t = Tracker::new(2, 3, Health::Unknown);
        assert_eq!(
            feed(&mut t, &[false, false, false]),
            [None, None, Some(Health::Down)]
        );
        assert_eq!(feed(&mut t, &[false]), [None]);
    }

    #[test]
    fn up_needs_fall_consecutive_failures() {
        let mut t = Tracker::new(2, 3, Health::Up);
        // Interrupted runs do not count.
        assert_eq!(feed(&mut t, &[false, false, true, false, false]), [None; 5]);
        assert_eq!(t.health(), Health::Up);
        assert_eq!(feed(&mut t, &[false]), [Some(Health::Down)]);
    }

    #[test]
    fn down_needs_rise_consecutive_successes() {
        let mut t = Tracker::new(3, 1, Health::Down);
        assert_eq!(feed(&mut t, &[true, true, false]), [None; 3]);
        assert_eq!(t.health(), Health::Down);
        assert_eq!(
            feed(&mut t, &[true, true, true]),
            [None, None, Some(Health::Up)]
        );
        assert_eq!(feed(&mut t, &[false]), [Some(Health::Down)]);
    }

    #[test]
    fn one_event_per_transition_when_flapping() {
        let mut t = Tracker::new(1, 1, Health::Unknown);
        let got = feed(&mut t, &[true, true, false, false, true]);
        assert_eq!(
            got,
            [
                Some(Health::Up),
                None,
                Some(Health::Down),
                None,
                Some(Health::Up)
            ]
        );
    }

    #[test]
    fn zero_rise_fall_act_as_one() {
        let mut t = Tracker::new(0, 0, Health::Unknown);
        assert_eq!(t.observe(false), Some(Health::Down));
        assert_eq!(t.observe(true), Some(Health::Up));
    }

    #[test]
    fn status_line_parser() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\n"),
            StatusLine::Status(200)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\nServer: x\r\n\r\n"),
            StatusLine::Status(503)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 204\r\n"),
            StatusLine::Status(204)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 404 Not Found\n"),
            StatusLine::Status(404)
        );
        assert_eq!(parse_status_line(b""), StatusLine::Incomplete);
        assert_eq!(parse_status_line(b"HTT"), StatusLine::Incomplete);
        assert_eq!(parse_status_line(b"HTTP/1.1 200 O"), StatusLine::Incomplete);
        assert_eq!(
            parse_status_line(b"SSH-2.0-OpenSSH\r\n"),
            StatusLine::Invalid
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 20 OK\r\n"),
            StatusLine::Invalid
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 2000 OK\r\n"),
            StatusLine::Invalid
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.1 abc OK\r\n"),
            StatusLine::Invalid
        );
        assert_eq!(parse_status_line(b"HTTP/x 200 OK\r\n"), StatusLine::Invalid);
        assert_eq!(
            parse_status_line(b"HTTP/1.1 999 OK\r\n"),
            StatusLine::Invalid
        );
    }

    #[test]
    fn durations_in_reasons() {
        assert_eq!(fmt_duration(Duration::from_secs(1)), "1s");
        assert_eq!(fmt_duration(Duration::from_millis(150)), "150ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
    }

    fn target(addr: SocketAddrV4) -> Target {
        Target {
            addr,
            real: addr,
            service_name: "web".into(),
        }
    }

    fn check(kind: CheckKind, timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            kind,
            interval: Duration::from_millis(200),
            timeout: Duration::from_millis(timeout_ms),
            rise: 1,
            fall: 1,
            address: None,
            port: None,
        }
    }

    fn http(status: u16, body: Option<&str>) -> CheckKind {
        CheckKind::Http {
            path: "/health".into(),
            host: Some("example.test".into()),
            status,
            body: body.map(str::to_owned),
        }
    }

    fn local(l: &tokio::net::TcpListener) -> SocketAddrV4 {
        match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        }
    }

    /// A one-request-per-connection HTTP server answering `answer`.
    async fn serve(answer: &'static str) -> SocketAddrV4 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = local(&l);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while find(&got, b"\r\n\r\n").is_none() {
                        let n = s.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let req = String::from_utf8_lossy(&got);
                    assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
                    assert!(req.contains("\r\nHost: example.test\r\n"), "{req}");
                    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probe_status_and_body() {
        let ok = serve("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nhealthy").await;
        let bad = serve("HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        assert_eq!(
            probe(&target(ok), &check(http(200, None), 500)).await,
            Ok("status 200".into())
        );
        assert_eq!(
            probe(&target(ok), &check(http(200, Some("healthy")), 500)).await,
            Ok("status 200".into())
        );
        assert!(probe(&target(ok), &check(http(200, Some("sick")), 500))
            .await
            .unwrap_err()
            .contains("body does not contain"));
        assert_eq!(
            probe(&target(bad), &check(http(200, None), 500)).await,
            Err("status 503".into())
        );
    }

    #[tokio::test]
    async fn hanging_check_times_out_without_delaying_others() {
        // Accepts, never answers. The margins are wide on purpose: the claim
        // is that the fast check does not wait for the hanging one's 1.5 s
        // timeout, and CI machines are loaded.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_addr = local(&hang);
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                held.push(hang.accept().await.unwrap());
            }
        });
        let ok = serve("HTTP/1.1 200 OK\r\n\r\n").await;
        let start = std::time::Instant::now();
        let slow = tokio::spawn(async move {
            let r = probe(&target(hang_addr), &check(http(200, None), 1500)).await;
            (r, start.elapsed())
        });
        let fast = probe(&target(ok), &check(http(200, None), 300)).await;
        let fast_took = start.elapsed();
        assert_eq!(fast, Ok("status 200".into()));
        assert!(fast_took < Duration::from_millis(1000), "{fast_took:?}");
        let (r, took) = slow.await.unwrap();
        assert_eq!(r, Err("timeout after 1.5s".into()));
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn tcp_probe_refused_and_ok() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = local(&l);
        assert_eq!(
            probe(&target(addr), &check(CheckKind::Tcp, 500)).await,
            Ok("connect ok".into())
        );
        drop(l);
        assert_eq!(
            probe(&target(addr), &check(CheckKind::Tcp, 500)).await,
            Err("connection refused".into())
        );
    }

    #[tokio::test]
    async fn udp_probe_answer_and_refusal() {
        let srv = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = match srv.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = srv.recv_from(&mut buf).await.unwrap();
                let mut answer = b"pong:".to_vec();
                answer.extend_from_slice(&buf[..n]);
                let _ = srv.send_to(&answer, from).await;
            }
        });
        let udp = |expect: Option<&str>| CheckKind::Udp {
            payload: b"ping".to_vec(),
            expect: expect.map(|e| e.as_bytes().to_vec()),
        };
        assert!(probe(&target(addr), &check(udp(None), 500)).await.is_ok());
        assert!(probe(&target(addr), &check(udp(Some("pong:ping")), 500))
            .await
            .is_ok());
        assert!(probe(&target(addr), &check(udp(Some("nope")), 500))
            .await
            .is_err());
        // Nobody on this port: ICMP port unreachable → refused.
        let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let free_addr = match free.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        drop(free);
        assert_eq!(
            probe(&target(free_addr), &check(udp(None), 500)).await,
            Err("connection refused".into())
        );
    }

    #[tokio::test]
    async fn exec_probe_exit_env_and_timeout() {
        let t = Target {
            addr: "127.0.0.1:9".parse().unwrap(),
            real: "192.0.2.11:8080".parse().unwrap(),
            service_name: "web".into(),
        };
        let exec = |c: &str| CheckKind::Exec { command: c.into() };
        assert_eq!(
            probe(&t, &check(exec("exit 0"), 5000)).await,
            Ok("exit status 0".into())
        );
        assert_eq!(
            probe(&t, &check(exec("exit 1"), 5000)).await,
            Err("exit status 1".into())
        );
        let env = r#"test "$RVS_REAL_SERVER_ADDRESS:$RVS_REAL_SERVER_PORT/$RVS_VIRTUAL_SERVICE" = "192.0.2.11:8080/web""#;
        assert!(probe(&t, &check(exec(env), 5000)).await.is_ok());
        let start = std::time::Instant::now();
        assert_eq!(
            probe(&t, &check(exec("sleep 30; exit 0"), 200)).await,
            Err("timeout after 200ms".into())
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn sync_keeps_unchanged_and_restarts_changed_checks() {
        let ok = serve("HTTP/1.1 200 OK\r\n\r\n").await;
        let cfg = |interval: &str| {
            let text = format!(
                r#"
[daemon]
interfaces = ["eth0"]
[[virtual_service]]
name = "web"
protocol = "tcp"
address = "203.0.113.10:80"
health_check = {{ type = "http", path = "/health", host = "example.test", interval = "{interval}", timeout = "100ms", rise = 1, fall = 1 }}
[[virtual_service.real_server]]
address = "{ok}"
"#
            );
            crate::control::config::parse(&text, std::path::Path::new("t.toml"), None)
                .unwrap_or_else(|d| panic!("{d:?}"))
                .0
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut m = HealthManager::new(tx);
        let a = cfg("200ms");
        m.sync(&a);
        let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ev.health, ev.reason.as_str()), (Health::Up, "status 200"));
        m.record(&ev);
        let key = ev.real;
        let id = m.running[&key].task.id();
        m.sync(&a);
        assert_eq!(m.running[&key].task.id(), id, "unchanged check kept");
        m.sync(&cfg("300ms"));
        assert_ne!(m.running[&key].task.id(), id, "changed check restarted");
        assert_eq!(m.state(&key), Health::Up, "state kept across the change");
        // Removed: stopped, and the server is released.
        m.sync(&Config::default());
        assert!(m.running.is_empty());
        let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev.health, Health::Unknown);
    }
}
