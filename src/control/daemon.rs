//! `rvs run`: loads the table, starts the data path, installs the
//! steering, then serves signals (SIGHUP reload, SIGTERM/SIGINT stop), the
//! control socket, health events and metrics until told to stop, and
//! removes what it installed on the way out.

use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::control::config::{self, Diagnostic, HostInfo, Severity};
use crate::control::health::{Health, HealthEvent, HealthManager};
use crate::control::metrics::{self, ReloadCounts};
use crate::control::protocol::{ConnJson, RealJson, Request, ServiceJson};
use crate::control::state;
use crate::core::config::{Config, ConnPolicy, Protocol};
use crate::core::conntrack::RealId;
use crate::core::director::ConnInfo;
use crate::core::host::HostView;
use crate::core::service::{RealKey, RuntimeState, ServiceKey};
use crate::core::Director;
use crate::datapath::hostwatch::HostWatch;
use crate::datapath::worker::{Datapath, Liveness};
use crate::datapath::{nft, system};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Diagnostic>),
    #[error("{0}")]
    Setup(String),
    /// Another rvs answers on the control socket: the steering is its.
    #[error("{0}")]
    AlreadyRunning(String),
}

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at: Option<Instant>,
    conns: u64,
    in_pkts: u64,
    out_pkts: u64,
    in_bytes: u64,
    out_bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    cps: f64,
    in_pps: f64,
    out_pps: f64,
    in_bps: f64,
    out_bps: f64,
}

/// Control-plane state, behind one mutex (never touched per packet).
#[derive(Debug)]
struct State {
    path: PathBuf,
    config: Arc<Config>,
    runtime: RuntimeState,
    director: Arc<Director>,
    /// The data interfaces the running workers are bound to (a reload
    /// that changes them restarts the workers).
    interfaces: Vec<String>,
    /// The packet workers; `None` only once the daemon has stopped them.
    /// Replaced when a data interface is re-created (its sockets were
    /// bound to the device that went away).
    datapath: Option<Datapath>,
    /// The running workers' heartbeats, for the watchdog: read without
    /// this state's lock, which a long reload holds.
    liveness: Arc<ArcSwap<Liveness>>,
    health: HealthManager,
    reloads: ReloadCounts,
    transitions: u64,
    samples: HashMap<RealId, Sample>,
    rates: HashMap<RealId, Rate>,
    /// Services whose up weight is below their quorum (logged on crossing).
    below_quorum: HashSet<ServiceKey>,
    /// The last apply stored its snapshot but its socket filters or
    /// steering failed: the next host change applies even an unchanged host.
    unapplied: bool,
    /// The interface indexes last logged as re-created but down (logged
    /// once, not at each retry).
    logged_down: Vec<u32>,
    /// Set once the daemon is stopping: nothing may install steering after
    /// it is removed.
    stopping: bool,
}

fn log_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        match d.severity {
            Severity::Error => tracing::error!("{d}"),
            Severity::Warning => tracing::warn!("{d}"),
        }
    }
}

/// Whether `path` lies inside `root`, judged lexically (a path with `..`
/// is never inside anything).
fn within(path: &Path, root: &Path) -> bool {
    use std::path::Component;
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && path.starts_with(root)
}

/// Under systemd, rvs writes only inside the directories the unit gives it
/// (`RuntimeDirectory=` → `$RUNTIME_DIRECTORY`, `StateDirectory=` →
/// `$STATE_DIRECTORY`): a config that points the control socket or the state
/// directory anywhere else is refused, so no config value can make the
/// service write outside them.
fn confined(config: &Config) -> Result<(), String> {
    let check = |path: &Path, var: &str, key: &str| -> Result<(), String> {
        let Ok(dirs) = std::env::var(var) else {
            return Ok(());
        };
        if dirs
            .split(':')
            .any(|d| !d.is_empty() && within(path, Path::new(d)))
        {
            Ok(())
        } else {
            Err(format!(
                "`{key}` = {} is outside {var} ({dirs}); under systemd rvs writes only there",
                path.display()
            ))
        }
    };
    check(
        &config.daemon.control_socket,
        "RUNTIME_DIRECTORY",
        "control_socket",
    )?;
    check(&config.daemon.state_dir, "STATE_DIRECTORY", "state_dir")
}

fn parse_service(s: &str) -> Result<ServiceKey, String> {
    let (addr, proto) = match s.rsplit_once('/') {
        Some((a, "tcp")) => (a, Protocol::Tcp),
        Some((a, "udp")) => (a, Protocol::Udp),
        Some((_, p)) => return Err(format!("unknown protocol `{p}` (tcp or udp)")),
        None => (s, Protocol::Tcp),
    };
    let addr: SocketAddrV4 = addr
        .parse()
        .map_err(|_| format!("`{s}` is not VIP:PORT[/tcp|/udp]"))?;
    Ok(ServiceKey {
        protocol: proto,
        addr,
    })
}

impl State {
    fn apply(&mut self) -> Result<(), String> {
        let host = system::host_view().map_err(|e| format!("cannot read interfaces: {e}"))?;
        self.apply_host_with(host, false)
    }

    /// Applies the configuration with `host`; with `keep_steering`, the
    /// nftables table is only rewritten if its ruleset changed (a route
    /// change alone does not touch it).
    fn apply_host_with(&mut self, host: HostView, keep_steering: bool) -> Result<(), String> {
        if self.stopping {
            return Err("rvs is stopping".into());
        }
        let before = (keep_steering && !self.unapplied)
            .then(|| nft::ruleset(&self.director.snapshot(), &self.interfaces));
        self.director
            .set_config(self.config.clone(), Arc::new(host), &self.runtime);
        let snap = self.director.snapshot();
        self.unapplied = true;
        if let Some(d) = &self.datapath {
            d.filter_handle()
                .update(&snap)
                .map_err(|e| format!("updating socket filters: {e}"))?;
        }
        if before.as_deref() != Some(nft::ruleset(&snap, &self.interfaces).as_str()) {
            nft::apply(&snap, &self.interfaces).map_err(|e| e.to_string())?;
        }
        self.unapplied = false;
        Ok(())
    }

    /// Loads the file again and applies it. Errors: the problems found,
    /// and whether the new table is nevertheless the running one (its
    /// steering failed after it was applied).
    fn reload(&mut self) -> Result<(), (Vec<String>, bool)> {
        // systemd (Type=notify-reload, and RELOADING=1 in general) wants
        // the CLOCK_MONOTONIC time the reload started.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: ts is a valid out-parameter.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let usec = format!(
            "MONOTONIC_USEC={}",
            i128::from(ts.tv_sec) * 1_000_000 + i128::from(ts.tv_nsec) / 1000
        );
        let _ = sd_notify::notify(
            false,
            &[
                sd_notify::NotifyState::Reloading,
                sd_notify::NotifyState::Custom(&usec),
            ],
        );
        let host = HostInfo::from_system();
        let result = match config::load(&self.path, Some(&host)) {
            Ok((cfg, _)) if confined(&cfg).is_err() => {
                self.reloads.error += 1;
                let e = confined(&cfg).err().unwrap_or_default();
                tracing::error!("reload refused: {e}; the running table is unchanged");
                Err((vec![e], false))
            }
            Ok((cfg, warnings)) => {
                log_diagnostics(&warnings);
                let old = &self.config.daemon;
                let new = &cfg.daemon;
                if old.control_socket != new.control_socket
                    || old.metrics_address != new.metrics_address
                    || old.control_group != new.control_group
                {
                    tracing::warn!("reload: changes to daemon.control_socket, control_group or metrics_address take effect at the next restart");
                }
                // New workers first: if they cannot start, nothing changes.
                if let Err(e) = self.restart_workers_for(&cfg) {
                    self.reloads.error += 1;
                    tracing::error!("reload refused: {e}; the running table is unchanged");
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    return Err((vec![e], false));
                }
                // Runtime weights are kept until the file changes that server.
                let prev = self.config.clone();
                self.runtime.weights.retain(|(svc, addr), _| {
                    let weight_in = |c: &Config| {
                        c.services
                            .iter()
                            .find(|s| s.protocol == svc.protocol && s.address == svc.addr)
                            .and_then(|s| s.real_servers.iter().find(|r| r.address == *addr))
                            .map(|r| r.weight)
                    };
                    weight_in(&prev) == weight_in(&cfg) && weight_in(&cfg).is_some()
                });
                self.config = Arc::new(cfg);
                self.save_state();
                self.health.sync(&self.config);
                let applied = self.apply();
                self.check_quorum();
                match applied {
                    Ok(()) => {
                        self.reloads.ok += 1;
                        tracing::info!(
                            services = self.config.services.len(),
                            "reloaded {}",
                            self.path.display()
                        );
                        Ok(())
                    }
                    Err(e) => {
                        self.reloads.error += 1;
                        tracing::error!("reload applied the table but steering failed: {e}");
                        Err((vec![e], true))
                    }
                }
            }
            Err(diags) => {
                self.reloads.error += 1;
                log_diagnostics(&diags);
                tracing::error!("reload failed; the running table is unchanged");
                Err((diags.iter().map(|d| d.to_string()).collect(), false))
            }
        };
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        result
    }

    /// The kernel's interfaces, addresses or routes may have changed (the
    /// netlink watch heard something): applies the host as it is now, if
    /// it differs from the running one. Connections and scheduler state are
    /// kept, as for a health change.
    /// Returns whether something failed that must be tried again even if
    /// no further change is heard.
    fn host_changed(&mut self) -> bool {
        if self.stopping {
            return false;
        }
        let host = match system::host_view() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("cannot read interfaces after a change: {e}");
                return true;
            }
        };
        if *self.director.snapshot().host == host && !self.unapplied {
            return false;
        }
        let reopened = self.reopen_if_recreated(&host);
        tracing::info!(
            routes = host.routes.len(),
            local_addresses = host.local_addrs.len(),
            "the host's interfaces, addresses or routes changed: applied"
        );
        // A re-created device needs its steering chain again, even if the
        // ruleset reads the same (it names devices, not indexes).
        if let Err(e) = self.apply_host_with(host, reopened == Some(false)) {
            tracing::error!("applying the host change: {e} (tried again at the next change, or within a minute)");
        }
        if reopened.is_none() {
            self.unapplied = true;
        }
        self.unapplied
    }

    /// A data interface deleted and created again (a VLAN, bond or veth
    /// rebuilt by the network configuration) has a new index, and the
    /// workers' sockets are bound to the old device: starts workers on the
    /// devices as they are now and stops the old ones. Connections are the
    /// director's and carry on. Returns whether it did, `None` if it
    /// should have and failed.
    fn reopen_if_recreated(&mut self, host: &HostView) -> Option<bool> {
        let Some(old) = self.datapath.as_ref() else {
            return Some(false);
        };
        let mut now = Vec::new();
        for name in &self.interfaces {
            match host.interfaces.iter().find(|i| &i.name == name) {
                Some(i) => now.push(i.index),
                None => {
                    tracing::error!("data interface {name} is gone: rvs forwards nothing on it until it is back");
                }
            }
        }
        if now.len() != self.interfaces.len() || now == old.ifindexes() {
            return Some(false);
        }
        // A device is made down, then configured and brought up (networkd,
        // ifupdown): a fanout group cannot be joined on it until then
        // (EINVAL). Its coming up is the next change.
        let down: Vec<&String> = (self.interfaces.iter())
            .filter(|n| system::is_up(n) == Some(false))
            .collect();
        if !down.is_empty() {
            if self.logged_down != now {
                tracing::info!(
                    ?down,
                    "a data interface was re-created and is down: its sockets are reopened when it is up"
                );
                self.logged_down = now;
            }
            return None;
        }
        let (workers, busy_poll) = (old.workers(), old.busy_poll());
        let interfaces = self.interfaces.clone();
        match self.replace_datapath(host, &interfaces, &now, workers, busy_poll) {
            Ok(()) => {
                tracing::warn!(
                    interfaces = ?self.interfaces,
                    "a data interface was re-created: its sockets were reopened"
                );
                // Steering is applied by the caller.
                Some(true)
            }
            Err(e) => {
                tracing::error!("a data interface was re-created but its sockets cannot be reopened: {e} (tried again at the next change, or within a minute)");
                None
            }
        }
    }

    /// A reload that changes `interfaces`, `workers` or `busy_poll_us`:
    /// workers are started as the new file says, in place of the running
    /// ones, and the steering follows the new interfaces at the apply.
    fn restart_workers_for(&mut self, cfg: &Config) -> Result<(), String> {
        let (workers, busy_poll) = (worker_count(cfg), busy_poll_of(cfg));
        let host = system::host_view().map_err(|e| format!("cannot read interfaces: {e}"))?;
        let ifindexes = ifindexes_of(&host, &cfg.daemon.interfaces)?;
        // Also when only the indexes differ: a re-created interface whose
        // reopening failed is tried again by a reload of the same file.
        let running = self
            .datapath
            .as_ref()
            .map(|d| (d.ifindexes().to_vec(), d.workers(), d.busy_poll()));
        if self.interfaces == cfg.daemon.interfaces
            && running == Some((ifindexes.clone(), workers, busy_poll))
        {
            return Ok(());
        }
        self.replace_datapath(
            &host,
            &cfg.daemon.interfaces,
            &ifindexes,
            workers,
            busy_poll,
        )
        .map_err(|e| format!("cannot start the packet workers: {e}"))?;
        tracing::info!(
            interfaces = ?self.interfaces,
            workers,
            busy_poll_us = cfg.daemon.busy_poll_us,
            "reload: packet workers restarted"
        );
        Ok(())
    }

    /// Starts workers on `ifindexes` (the data interfaces `interfaces`, in
    /// order) in place of the running ones: the new sockets read nothing
    /// until the old workers have stopped, then get the filter of the
    /// running snapshot. If the new workers cannot start, the running ones
    /// are kept and nothing changes. Connections are the director's and
    /// carry on; the caller re-applies the steering.
    fn replace_datapath(
        &mut self,
        host: &HostView,
        interfaces: &[String],
        ifindexes: &[u32],
        workers: usize,
        busy_poll: Duration,
    ) -> std::io::Result<()> {
        let Some(old) = self.datapath.as_ref() else {
            return Err(std::io::Error::other("rvs is stopping"));
        };
        let new = old.successor(self.director.clone(), host, ifindexes, workers, busy_poll)?;
        // From here on the new workers are the running ones, whatever fails.
        self.liveness.store(Arc::new(new.liveness()));
        let mut old = self.datapath.replace(new);
        self.interfaces = interfaces.to_vec();
        self.unapplied = true;
        // The old workers stop (they never take this lock), then the new
        // sockets get the real filter at once; the old timer thread is
        // waited for last, so its sleep adds nothing to the gap.
        if let Some(o) = old.as_mut() {
            o.stop_workers();
        }
        if let Some(d) = &self.datapath {
            if let Err(e) = d.filter_handle().update(&self.director.snapshot()) {
                tracing::error!("new packet workers: setting their socket filters: {e} (tried again at the apply)");
            }
        }
        drop(old);
        Ok(())
    }

    fn on_health(&mut self, ev: HealthEvent) {
        self.health.record(&ev);
        self.transitions += 1;
        tracing::info!(
            service = %ev.real.0,
            real_server = %ev.real.1,
            "real server is {} ({})",
            ev.health.as_str(),
            ev.reason
        );
        let down = ev.health == Health::Down;
        let changed = if down {
            self.runtime.down.insert(ev.real)
        } else {
            self.runtime.down.remove(&ev.real)
        };
        if changed {
            if let Err(e) = self.apply() {
                tracing::error!("applying health change: {e}");
            }
            if down && self.director.on_down_policy(ev.real.0) == ConnPolicy::Reset {
                self.director.reset_real(ev.real.0, ev.real.1);
            }
            self.check_quorum();
        }
    }

    /// Logs a service crossing its quorum, once per crossing each way (the
    /// `rvs_service_degraded` metric follows the same test).
    fn check_quorum(&mut self) {
        let snap = self.director.snapshot();
        let mut seen = HashSet::new();
        for s in snap.services.iter().filter(|s| s.accepting) {
            seen.insert(s.key);
            let q = s.config.quorum;
            let below = q > 0 && s.up_weight() < q;
            if below && self.below_quorum.insert(s.key) {
                tracing::warn!(service = %s.key, "service is below quorum: up weight {} < quorum {q}", s.up_weight());
            } else if !below && self.below_quorum.remove(&s.key) {
                tracing::info!(service = %s.key, "service quorum restored: up weight {} >= quorum {q}", s.up_weight());
            }
        }
        self.below_quorum.retain(|k| seen.contains(k));
    }

    /// Writes the runtime weights to the state file (errors are logged: the
    /// running table does not depend on it).
    fn save_state(&self) {
        let dir = &self.config.daemon.state_dir;
        if let Err(e) = state::save(dir, &self.config, &self.runtime.weights) {
            tracing::warn!(
                "cannot save runtime weights to {}: {e}",
                state::path(dir).display()
            );
        }
    }

    /// `rvs drain RIP:PORT`: weight 0 in every service that has the server.
    fn drain_everywhere(&mut self, real: &str) -> Result<(), String> {
        let addr: SocketAddrV4 = real
            .parse()
            .map_err(|_| format!("`{real}` is not IP:PORT"))?;
        let keys: Vec<ServiceKey> = self
            .config
            .services
            .iter()
            .filter(|s| s.real_servers.iter().any(|r| r.address == addr))
            .map(|s| ServiceKey {
                protocol: s.protocol,
                addr: s.address,
            })
            .collect();
        if keys.is_empty() {
            return Err(format!("no service has real server {addr}"));
        }
        for k in keys {
            self.runtime.weights.insert((k, addr), 0);
        }
        self.save_state();
        let r = self.apply();
        self.check_quorum();
        r
    }

    fn set_weight(&mut self, service: &str, real: &str, weight: u32) -> Result<(), String> {
        let svc = parse_service(service)?;
        let addr: SocketAddrV4 = real
            .parse()
            .map_err(|_| format!("`{real}` is not IP:PORT"))?;
        let exists = self.config.services.iter().any(|s| {
            s.protocol == svc.protocol
                && s.address == svc.addr
                && s.real_servers.iter().any(|r| r.address == addr)
        });
        if !exists {
            return Err(format!("no real server {addr} in service {svc}"));
        }
        if weight > 65535 {
            return Err("weight must be 0..=65535".into());
        }
        self.runtime.weights.insert((svc, addr), weight);
        self.save_state();
        let r = self.apply();
        self.check_quorum();
        r
    }

    fn sample_rates(&mut self) {
        let now = Instant::now();
        let snap = self.director.snapshot();
        for r in &snap.reals {
            let cur = Sample {
                at: Some(now),
                conns: r.conns_total.get(),
                in_pkts: r.in_pkts.get(),
                out_pkts: r.out_pkts.get(),
                in_bytes: r.in_bytes.get(),
                out_bytes: r.out_bytes.get(),
            };
            let prev = self.samples.insert(r.id, cur).unwrap_or_default();
            if let Some(at) = prev.at {
                let dt = now.duration_since(at).as_secs_f64().max(0.001);
                let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                self.rates.insert(
                    r.id,
                    Rate {
                        cps: d(cur.conns, prev.conns),
                        in_pps: d(cur.in_pkts, prev.in_pkts),
                        out_pps: d(cur.out_pkts, prev.out_pkts),
                        in_bps: d(cur.in_bytes, prev.in_bytes) * 8.0,
                        out_bps: d(cur.out_bytes, prev.out_bytes) * 8.0,
                    },
                );
            }
        }
    }

    fn services(&self) -> Vec<ServiceJson> {
        use std::sync::atomic::Ordering::Relaxed;
        let snap = self.director.snapshot();
        snap.services
            .iter()
            .map(|s| {
                let reals: Vec<RealJson> = s
                    .reals
                    .iter()
                    .map(|r| {
                        let st = snap.real(r.id);
                        let g =
                            |f: fn(&crate::core::service::RealState) -> u64| st.map_or(0, |s| f(s));
                        let rate = self.rates.get(&r.id).copied().unwrap_or_default();
                        let rk: RealKey = (s.key, r.addr);
                        RealJson {
                            address: r.addr.to_string(),
                            method: r.method.as_str().into(),
                            weight: r.weight,
                            weight_source: if self.runtime.weights.contains_key(&rk) {
                                "runtime"
                            } else {
                                "file"
                            }
                            .into(),
                            effective_weight: r.effective_weight,
                            health: self.health.state(&rk).as_str().into(),
                            active: st.map_or(0, |s| s.active.load(Relaxed)),
                            inactive: st.map_or(0, |s| s.inactive.load(Relaxed)),
                            conns: g(|s| s.conns_total.get()),
                            in_pkts: g(|s| s.in_pkts.get()),
                            out_pkts: g(|s| s.out_pkts.get()),
                            in_bytes: g(|s| s.in_bytes.get()),
                            out_bytes: g(|s| s.out_bytes.get()),
                            cps: rate.cps,
                            in_pps: rate.in_pps,
                            out_pps: rate.out_pps,
                            in_bps: rate.in_bps,
                            out_bps: rate.out_bps,
                        }
                    })
                    .collect();
                let up = s.reals.iter().any(|r| r.effective_weight > 0);
                ServiceJson {
                    name: s.config.name.clone(),
                    protocol: s.key.protocol.as_str().into(),
                    address: s.key.addr.to_string(),
                    scheduler: s.config.scheduler.as_str().into(),
                    persistence_timeout_s: s.config.persistence.map(|p| p.timeout.as_secs()),
                    persistence_netmask: s.config.persistence.map(|p| p.netmask.to_string()),
                    accepting: s.accepting,
                    degraded: !up || (s.config.quorum > 0 && s.up_weight() < s.config.quorum),
                    real_servers: reals,
                }
            })
            .collect()
    }

    fn handle(&mut self, req: Request) -> Answer {
        use serde_json::json;
        let fail = |e: String| json!({"ok": false, "error": e});
        Answer::Line(match req {
            Request::Conns { service } => {
                return match service.as_deref().map(parse_service).transpose() {
                    Ok(filter) => Answer::Conns(self.director.clone(), filter),
                    Err(e) => Answer::Line(fail(e)),
                }
            }
            Request::Services => {
                let drops: serde_json::Map<String, serde_json::Value> = self
                    .director
                    .drops()
                    .snapshot()
                    .into_iter()
                    .map(|(r, n)| (r.name().to_string(), json!(n)))
                    .collect();
                json!({"ok": true, "services": self.services(), "drops": drops,
                       "connection_table_entries": self.director.entries()})
            }
            Request::Reload => match self.reload() {
                Ok(()) => json!({"ok": true}),
                Err((errors, false)) => {
                    json!({"ok": false, "error": "reload failed; the running table is unchanged", "errors": errors})
                }
                Err((errors, true)) => {
                    json!({"ok": false, "error": "reload applied the new table, but its steering failed (tried again at the next host change or reload)", "errors": errors})
                }
            },
            Request::Weight {
                service,
                real,
                weight,
            } => match self.set_weight(&service, &real, weight) {
                Ok(()) => json!({"ok": true}),
                Err(e) => fail(e),
            },
            Request::Drain { service, real } => {
                let r = match service {
                    Some(service) => self.set_weight(&service, &real, 0),
                    None => self.drain_everywhere(&real),
                };
                match r {
                    Ok(()) => json!({"ok": true}),
                    Err(e) => fail(e),
                }
            }
            Request::Zero => {
                for r in &self.director.snapshot().reals {
                    r.zero_stats();
                }
                self.samples.clear();
                self.rates.clear();
                json!({"ok": true})
            }
            Request::Status => json!({"ok": true, "pid": std::process::id(),
                "config": self.path.display().to_string(),
                "connection_table_entries": self.director.entries()}),
        })
    }
}

/// What a request is answered with.
enum Answer {
    /// One JSON line.
    Line(serde_json::Value),
    /// The connection table (of one service, if given), streamed by
    /// [`write_conns`] after the control state's lock is released.
    Conns(Arc<Director>, Option<ServiceKey>),
}

/// One `rvs conns` entry as the protocol shows it.
fn conn_json(c: &ConnInfo) -> ConnJson {
    ConnJson {
        protocol: c.protocol.as_str().into(),
        state: c.state.into(),
        expires_in_ms: u64::try_from(c.expires_in.as_millis()).unwrap_or(u64::MAX),
        client: c.client.to_string(),
        vaddr: c.vaddr.to_string(),
        real_server: c.raddr.to_string(),
        template: c.template,
    }
}

/// Serializes the entries of each part of the table, in order, as the
/// comma-separated elements of one JSON array, and hands each part's bytes
/// to `send` (which returns false to stop: the client went away). Holds
/// one part at a time: the memory a listing takes does not grow with the
/// table (a million entries as one answer took ~1.5 KB each).
fn conns_parts(
    director: &Director,
    filter: Option<ServiceKey>,
    mut send: impl FnMut(Vec<u8>) -> bool,
) {
    let now = Instant::now();
    let mut infos = Vec::new();
    let mut first = true;
    for part in 0..director.connection_parts() {
        infos.clear();
        director.connections_part(part, now, &mut infos);
        let mut buf = Vec::new();
        for c in infos
            .iter()
            .filter(|c| filter.is_none_or(|k| k.addr == c.vaddr && k.protocol == c.protocol))
        {
            if !first {
                buf.push(b',');
            }
            first = false;
            // Writing into a Vec cannot fail; ConnJson has no map keys
            // that could.
            let _ = serde_json::to_writer(&mut buf, &conn_json(c));
        }
        if !buf.is_empty() && !send(buf) {
            return;
        }
    }
}

/// Writes the `conns` answer, `{"ok":true,"connections":[…]}` and a
/// newline, as the table's parts are serialized off the runtime.
async fn write_conns<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    director: Arc<Director>,
    filter: Option<ServiceKey>,
    timeout: Duration,
) -> std::io::Result<()> {
    write_array(
        w,
        move |send: &mut dyn FnMut(Vec<u8>) -> bool| conns_parts(&director, filter, send),
        timeout,
    )
    .await
}

/// Writes `{"ok":true,"connections":[` + the parts `produce` hands to its
/// `send` (on a blocking thread; `send` returns false once the client is
/// gone) + `]}` and a newline.
async fn write_array<W, P>(w: &mut W, produce: P, timeout: Duration) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
    P: FnOnce(&mut dyn FnMut(Vec<u8>) -> bool) + Send + 'static,
{
    // Two parts in flight at most: the producer waits for the socket.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
    let producer = tokio::task::spawn_blocking(move || {
        produce(&mut |buf| tx.blocking_send(buf).is_ok());
    });
    let mut written = write_bounded(w, b"{\"ok\":true,\"connections\":[", timeout).await;
    while written.is_ok() {
        let Some(buf) = rx.recv().await else { break };
        written = write_bounded(w, &buf, timeout).await;
    }
    // On a write error the producer's next send fails and it ends: the
    // blocking thread is free again before this returns.
    drop(rx);
    let produced = producer.await;
    written?;
    // A panic in the producer would leave the array unterminated, which
    // the client reports as a bad answer.
    if produced.is_err() {
        return Err(std::io::Error::other("listing the connection table failed"));
    }
    write_bounded(w, b"]}\n", timeout).await
}

/// How long a control client may take in nothing of an answer before it
/// is dropped: a `rvs conns` stopped with Ctrl-Z must not hold a thread.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `write_all`, failing with `TimedOut` if the peer takes in nothing for
/// `timeout` (each write that makes progress starts the wait again, so a
/// slow but steady reader is not cut off).
async fn write_bounded<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match tokio::time::timeout(timeout, w.write(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the control client stopped reading",
                ))
            }
        }
    }
    Ok(())
}

/// The gid of `name` (`getgrnam_r`).
fn group_id(name: &str) -> Result<u32, String> {
    let cname = std::ffi::CString::new(name).map_err(|_| format!("bad group name {name:?}"))?;
    // SAFETY: group is plain old data; getgrnam_r fills it and points into buf.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives it.
    let r = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if r != 0 || out.is_null() {
        return Err(format!("control_group: no group named {name}"));
    }
    Ok(grp.gr_gid)
}

/// Whether process `pid` has `gid` among its groups (`/proc/PID/status`).
fn in_group(pid: i32, primary: u32, gid: u32) -> bool {
    if primary == gid {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Groups:"))
                .map(|l| l.split_whitespace().skip(1).any(|g| g.parse() == Ok(gid)))
        })
        .unwrap_or(false)
}

fn peer_allowed(stream: &UnixStream, group: Option<u32>) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(0);
    // SAFETY: cred/len are valid out-parameters for SO_PEERCRED on a live fd.
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    r == 0
        && (cred.uid == 0
            || cred.uid == me
            || group.is_some_and(|g| in_group(cred.pid, cred.gid, g)))
}

async fn serve_client(state: Arc<Mutex<State>>, stream: UnixStream, group: Option<u32>) {
    if !peer_allowed(&stream, group) {
        let mut s = stream;
        let _ = s
            .write_all(b"{\"ok\":false,\"error\":\"permission denied: the control socket serves root and the daemon's user only\"}\n")
            .await;
        return;
    }
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    // Bounded: a peer gets at most 64 requests per connection.
    for _ in 0..64 {
        let Ok(Some(line)) = lines.next_line().await else {
            return;
        };
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let st = state.clone();
                let answer = tokio::task::spawn_blocking(move || {
                    st.lock().unwrap_or_else(|e| e.into_inner()).handle(req)
                })
                .await;
                match answer {
                    Ok(Answer::Line(v)) => v,
                    Ok(Answer::Conns(director, filter)) => {
                        if write_conns(&mut w, director, filter, CLIENT_WRITE_TIMEOUT)
                            .await
                            .is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Err(_) => serde_json::json!({"ok": false, "error": "internal error"}),
                }
            }
            Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
        };
        let mut out = resp.to_string();
        out.push('\n');
        if write_bounded(&mut w, out.as_bytes(), CLIENT_WRITE_TIMEOUT)
            .await
            .is_err()
        {
            return;
        }
    }
}

fn bind_control_socket(path: &Path, group: Option<u32>) -> Result<UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ))
        }
        Err(_) => {}
    }
    // Created with a tight umask so there is no window where it is open.
    // SAFETY: umask has no preconditions.
    let old = unsafe { libc::umask(0o177) };
    let l = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let l = l.map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    match group {
        Some(gid) => {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| format!("cannot give {} to group {gid}: {e}", path.display()))?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
        }
        None => {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(l)
}

/// After a failed `accept` (EMFILE, ENFILE, ENOMEM: the connection stays
/// queued and the next accept fails at once): waits 100 ms instead of
/// spinning on a core the packet workers share; logs the first failure of
/// a run of them.
async fn accept_failed(what: &str, e: &std::io::Error, failing: &mut bool) {
    if !*failing {
        tracing::warn!("{what}: accept failed: {e} (retrying every 100 ms)");
        *failing = true;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn serve_metrics(state: Arc<Mutex<State>>, listener: TcpListener) {
    let mut failing = false;
    loop {
        let mut s = match listener.accept().await {
            Ok((s, _)) => {
                failing = false;
                s
            }
            Err(e) => {
                accept_failed("metrics", &e, &mut failing).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let n = match tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut s, &mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let resp = if req.starts_with("GET /metrics") {
                // The state's lock is a blocking one, held through a reload.
                let body = tokio::task::spawn_blocking(move || {
                    let st = state.lock().unwrap_or_else(|e| e.into_inner());
                    let workers: Vec<u64> = st
                        .datapath
                        .iter()
                        .flat_map(|d| d.packets.iter())
                        .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
                        .collect();
                    metrics::render(
                        &st.director,
                        &st.services(),
                        st.reloads,
                        st.transitions,
                        &workers,
                    )
                })
                .await
                .unwrap_or_default();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// The indexes of the interfaces `names`, in order.
fn ifindexes_of(host: &HostView, names: &[String]) -> Result<Vec<u32>, String> {
    names
        .iter()
        .map(|name| {
            host.interfaces
                .iter()
                .find(|i| &i.name == name)
                .map(|i| i.index)
                .ok_or_else(|| format!("interface {name} does not exist"))
        })
        .collect()
}

/// Packet worker threads for `cfg` (0: one per core).
fn worker_count(cfg: &Config) -> usize {
    match cfg.daemon.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

fn busy_poll_of(cfg: &Config) -> Duration {
    Duration::from_micros(u64::from(cfg.daemon.busy_poll_us))
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(path: &Path) -> Result<(), DaemonError> {
    let result = start_and_serve(path);
    // Not when another rvs answers: the table is that one's.
    if matches!(result, Err(DaemonError::Config(_) | DaemonError::Setup(_))) {
        remove_stale_steering(path);
    }
    result
}

/// After a start that failed: a steering table that no rvs of this
/// network namespace owns any more (the previous one crashed, and this
/// start found a broken file or a missing interface) would drop the
/// VIPs' traffic with nobody forwarding it. Removed, unless another rvs
/// process runs in the namespace (it may be the owner).
fn remove_stale_steering(path: &Path) {
    if !nft::present() || system::other_rvs_in_this_netns() {
        return;
    }
    // A daemon this process cannot see (another PID namespace, another
    // binary name) still answers on its socket: the one the file names,
    // or the default.
    let named = config::control_socket_in(path).ok();
    let default = crate::core::config::DaemonConfig::default().control_socket;
    let answers = |p: &Path| std::os::unix::net::UnixStream::connect(p).is_ok();
    if named.as_deref().is_some_and(answers) || answers(&default) {
        return;
    }
    match nft::remove() {
        Ok(()) => tracing::warn!(
            "removed the steering table ({} {}) a previous rvs left: the kernel handles the VIPs' traffic until rvs runs",
            nft::FAMILY,
            nft::TABLE
        ),
        Err(e) => tracing::error!("cannot remove the steering table a previous rvs left: {e}"),
    }
}

fn start_and_serve(path: &Path) -> Result<(), DaemonError> {
    let host_info = HostInfo::from_system();
    let (cfg, warnings) = config::load(path, Some(&host_info)).map_err(DaemonError::Config)?;
    log_diagnostics(&warnings);
    let cfg = Arc::new(cfg);
    confined(&cfg).map_err(DaemonError::Setup)?;
    // Before touching anything: a second rvs on the same socket would
    // replace (and on exit remove) the running one's steering.
    if std::os::unix::net::UnixStream::connect(&cfg.daemon.control_socket).is_ok() {
        return Err(DaemonError::AlreadyRunning(format!(
            "another rvs is running (its control socket {} answers)",
            cfg.daemon.control_socket.display()
        )));
    }
    // Opened before the host is first read, so that a change from here on
    // (DHCP, a routing daemon at boot) is queued and applied once running.
    let watch = HostWatch::open();
    let host = system::host_view()
        .map_err(|e| DaemonError::Setup(format!("cannot read interfaces: {e}")))?;
    let ifindexes = ifindexes_of(&host, &cfg.daemon.interfaces).map_err(DaemonError::Setup)?;
    let mut runtime = RuntimeState::default();
    match state::load(&cfg.daemon.state_dir, &cfg) {
        Ok((weights, dropped)) => {
            for d in dropped {
                tracing::info!("{d}");
            }
            if !weights.is_empty() {
                tracing::info!(
                    count = weights.len(),
                    "runtime weights restored from {}",
                    state::path(&cfg.daemon.state_dir).display()
                );
            }
            runtime.weights = weights;
        }
        Err(e) => tracing::warn!(
            "ignoring the state file {}: {e}",
            state::path(&cfg.daemon.state_dir).display()
        ),
    }
    let director = Arc::new(Director::new(
        cfg.clone(),
        Arc::new(host),
        &runtime,
        Instant::now(),
    ));
    nft::apply(&director.snapshot(), &cfg.daemon.interfaces)
        .map_err(|e| DaemonError::Setup(format!("installing nftables steering: {e}")))?;
    let workers = worker_count(&cfg);
    let busy_poll = busy_poll_of(&cfg);
    let datapath = match Datapath::start(director.clone(), &ifindexes, workers, busy_poll) {
        Ok(d) => d,
        Err(e) => {
            let _ = nft::remove();
            return Err(DaemonError::Setup(format!(
                "opening AF_PACKET sockets: {e} (rvs needs CAP_NET_RAW and CAP_NET_ADMIN)"
            )));
        }
    };
    let liveness = Arc::new(ArcSwap::from_pointee(datapath.liveness()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("rvs-control")
        .build()
        .map_err(|e| DaemonError::Setup(format!("tokio: {e}")))?;
    let result = rt.block_on(async {
        let (tx, mut health_rx) = mpsc::unbounded_channel();
        let mut health = HealthManager::new(tx);
        health.sync(&cfg);
        let state = Arc::new(Mutex::new(State {
            path: path.to_path_buf(),
            config: cfg.clone(),
            runtime,
            director: director.clone(),
            interfaces: cfg.daemon.interfaces.clone(),
            liveness: liveness.clone(),
            datapath: Some(datapath),
            health,
            reloads: ReloadCounts::default(),
            transitions: 0,
            samples: HashMap::new(),
            rates: HashMap::new(),
            below_quorum: HashSet::new(),
            unapplied: false,
            logged_down: Vec::new(),
            stopping: false,
        }));
        {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            // Entries dropped at load leave the file now, not at the next change.
            st.save_state();
            st.check_quorum();
        }
        let group = match &cfg.daemon.control_group {
            Some(name) => Some(group_id(name).map_err(DaemonError::Setup)?),
            None => None,
        };
        let listener =
            bind_control_socket(&cfg.daemon.control_socket, group).map_err(DaemonError::Setup)?;
        {
            let state = state.clone();
            tokio::spawn(async move {
                let mut failing = false;
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            failing = false;
                            tokio::spawn(serve_client(state.clone(), s, group));
                        }
                        Err(e) => accept_failed("control socket", &e, &mut failing).await,
                    }
                }
            });
        }
        if let Some(addr) = cfg.daemon.metrics_address {
            if !addr.ip().is_loopback() {
                tracing::warn!("metrics listen on {addr}, which is not loopback");
            }
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| DaemonError::Setup(format!("cannot bind metrics {addr}: {e}")))?;
            tokio::spawn(serve_metrics(state.clone(), l));
        }
        {
            let state = state.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(2));
                loop {
                    t.tick().await;
                    state.lock().unwrap_or_else(|e| e.into_inner()).sample_rates();
                }
            });
        }
        match watch {
            Ok(w) => {
                tokio::spawn(watch_host(state.clone(), w));
            }
            Err(e) => tracing::warn!(
                "cannot watch the host for route and address changes ({e}): a reload picks them up"
            ),
        }
        let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Setup(e.to_string()))?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| DaemonError::Setup(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Setup(e.to_string()))?;
        let watchdog = {
            let mut usec = 0;
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
        };
        // Its own task: the loop below waits out reloads and health
        // applies (they hold the state's lock), and the pings must not.
        let pinger = watchdog.map(|period| {
            let liveness = liveness.clone();
            tokio::spawn(async move {
                let mut wd = tokio::time::interval(period);
                let mut stalled = false;
                // Only report liveness while every worker is turning: a
                // stuck worker lets systemd's watchdog restart us.
                let max_age = period.clamp(Duration::from_millis(250), Duration::from_secs(2));
                loop {
                    wd.tick().await;
                    if liveness.load().workers_alive(max_age) {
                        stalled = false;
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    } else if !stalled {
                        stalled = true;
                        tracing::error!("a packet worker has not turned for {max_age:?}; withholding the watchdog ping");
                    }
                }
            })
        });
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!(
            services = cfg.services.len(),
            interfaces = ?cfg.daemon.interfaces,
            workers,
            "rvs: ready"
        );
        eprintln!("rvs: ready");
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let st = state.clone();
                    let _ = tokio::task::spawn_blocking(move || st.lock().unwrap_or_else(|e| e.into_inner()).reload()).await;
                }
                Some(ev) = health_rx.recv() => {
                    let st = state.clone();
                    let _ = tokio::task::spawn_blocking(move || st.lock().unwrap_or_else(|e| e.into_inner()).on_health(ev)).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        // The workers stop below: no error about them, no more pings.
        if let Some(p) = pinger {
            p.abort();
        }
        // Waits for an apply in progress (a host change, a control command)
        // and keeps any later one from reinstalling the steering that is
        // removed below.
        let datapath = {
            let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
            st.stopping = true;
            st.datapath.take()
        };
        Ok::<Option<Datapath>, DaemonError>(datapath)
    });
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping");
    rt.shutdown_timeout(Duration::from_secs(1));
    let result = result.map(|datapath| {
        // Dropping the datapath stops its workers and waits for them.
        drop(datapath);
    });
    if let Err(e) = nft::remove() {
        tracing::warn!("removing nftables table: {e}");
    }
    remove_control_socket(&cfg.daemon.control_socket);
    result
}

/// How long a burst of host changes (an address brings its routes; a link
/// going down takes several) is let settle before the host is read again.
const HOST_SETTLE: Duration = Duration::from_millis(100);

/// Least time between two reads of the host: a routing daemon rewriting
/// routes all the time costs one read of `/proc/net/route` per second, not
/// one per change (changes in between are applied at the next read).
const HOST_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// After a host change that could not be applied (sockets that would not
/// reopen, an nft failure), the next try even if nothing else is heard;
/// doubled after each failed try up to [`HOST_RETRY_MAX`], so that a
/// lasting failure logs once a minute, not once a change.
const HOST_RETRY: Duration = Duration::from_secs(5);
const HOST_RETRY_MAX: Duration = Duration::from_secs(60);

/// When the host is read again with nothing heard: never after a success;
/// [`HOST_RETRY`] after a first failure, then twice the last wait, up to
/// [`HOST_RETRY_MAX`].
fn next_retry(failed: bool, last: Option<Duration>) -> Option<Duration> {
    failed.then(|| last.map_or(HOST_RETRY, |r| (r * 2).min(HOST_RETRY_MAX)))
}

/// Re-reads the host whenever the netlink watch hears a change, after
/// [`HOST_SETTLE`]; the state compares and applies (`State::host_changed`).
async fn watch_host(state: Arc<Mutex<State>>, watch: HostWatch) {
    // SAFETY: HostWatch owns its descriptor (an OwnedFd), open and the same
    // until the AsyncFd, which owns the HostWatch, is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(watch, tokio::io::Interest::READABLE)
    };
    let fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("cannot watch the host for changes ({e}): a reload picks them up");
            return;
        }
    };
    let mut retry: Option<Duration> = None;
    loop {
        let readable = if let Some(after) = retry {
            tokio::time::timeout(after, fd.readable()).await.ok()
        } else {
            Some(fd.readable().await)
        };
        if let Some(readable) = readable {
            let mut guard = match readable {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("host watch failed ({e}): a reload picks changes up");
                    return;
                }
            };
            let heard = guard.get_inner().drain();
            guard.clear_ready();
            match heard {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!("host watch failed ({e}): a reload picks changes up");
                    return;
                }
            }
            tokio::time::sleep(HOST_SETTLE).await;
            let _ = fd.get_ref().drain();
        }
        let st = state.clone();
        let failed = tokio::task::spawn_blocking(move || {
            st.lock().unwrap_or_else(|e| e.into_inner()).host_changed()
        })
        .await
        .unwrap_or(true);
        retry = next_retry(failed, retry);
        // What arrives meanwhile stays queued (or overflows: ENOBUFS, also
        // "changed") and wakes the next round at once.
        tokio::time::sleep(HOST_MIN_INTERVAL.saturating_sub(HOST_SETTLE)).await;
    }
}

/// Removes the control socket at exit; anything that is not a socket (a
/// file the bind refused to replace, or one put there since) stays.
fn remove_control_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_host_applies_are_retried_with_backoff_until_one_succeeds() {
        let s = Duration::from_secs;
        let mut waits = Vec::new();
        let mut last = None;
        for _ in 0..7 {
            last = next_retry(true, last);
            waits.push(last.unwrap_or_default().as_secs());
        }
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60]);
        assert_eq!(next_retry(false, Some(s(60))), None);
        assert_eq!(next_retry(true, None), Some(s(5)));
    }

    /// A client that asks for the connection table and reads nothing is
    /// dropped after the timeout, and the thread producing the table's
    /// parts, blocked on the full channel, is released before the answer's
    /// writer returns.
    #[test]
    fn a_client_that_stops_reading_is_dropped_and_the_producer_released() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let sent = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicBool::new(false));
        let (s, r) = (sent.clone(), refused.clone());
        // 1000 parts of 1 KiB: far more than the pipe and the channel hold.
        let produce = move |send: &mut dyn FnMut(Vec<u8>) -> bool| {
            for _ in 0..1000 {
                if !send(vec![b'x'; 1024]) {
                    r.store(true, Ordering::SeqCst);
                    return;
                }
                s.fetch_add(1, Ordering::SeqCst);
            }
        };
        rt.block_on(async {
            // Room for 4 bytes, which nobody reads.
            let (mut ours, _theirs) = tokio::io::duplex(4);
            let t = Instant::now();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                write_array(&mut ours, produce, Duration::from_millis(200)),
            )
            .await
            .expect("the writer must give up on its own");
            let e = r.expect_err("a stalled client must not hold the answer");
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        });
        assert!(
            refused.load(Ordering::SeqCst),
            "the producer must have been told the client is gone (sent {})",
            sent.load(Ordering::SeqCst)
        );
        assert!(sent.load(Ordering::SeqCst) < 1000);
    }

    #[test]
    fn a_slow_but_steady_reader_gets_the_whole_answer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (mut ours, mut theirs) = tokio::io::duplex(64);
            let reader = tokio::spawn(async move {
                let mut got = Vec::new();
                let mut chunk = [0u8; 64];
                loop {
                    // 64 bytes every 20 ms: 4 KiB in ~1.3 s, far longer
                    // than the 100 ms timeout, never idle that long.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match tokio::io::AsyncReadExt::read(&mut theirs, &mut chunk).await {
                        Ok(0) | Err(_) => return got,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
            });
            let body = vec![b'y'; 4096];
            write_bounded(&mut ours, &body, Duration::from_millis(100))
                .await
                .expect("a reader that keeps reading is served");
            drop(ours);
            assert_eq!(reader.await.expect("reader"), body);
        });
    }

    #[test]
    fn within_is_lexical_and_refuses_dot_dot() {
        let root = Path::new("/run/rvs");
        assert!(within(Path::new("/run/rvs/control.sock"), root));
        assert!(within(Path::new("/run/rvs/sub/x.sock"), root));
        assert!(!within(Path::new("/run/rvs/../../etc/x.sock"), root));
        assert!(!within(Path::new("/run/rvsx/control.sock"), root));
        assert!(!within(Path::new("/etc/control.sock"), root));
        assert!(!within(Path::new("run/rvs/control.sock"), root));
    }
}
