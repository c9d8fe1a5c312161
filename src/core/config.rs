//! The validated configuration the director runs on.
//!
//! These types cannot hold an invalid table: `control::config` parses the
//! TOML file, reports every problem with its position, and only then builds a
//! [`Config`]. The core never sees raw text.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Forwarding method (IPVS "packet forwarding method").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// VS/NAT: rewrite destination inbound, source on the way back.
    Nat,
    /// VS/TUN: IP-in-IP encapsulation toward the real server.
    Tun,
    /// VS/DR: rewrite the destination MAC only.
    Dr,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Nat => "nat",
            Method::Tun => "tun",
            Method::Dr => "dr",
        }
    }
    /// The name `ipvsadm -L -n` shows in its Forward column.
    pub fn ipvs_name(self) -> &'static str {
        match self {
            Method::Nat => "Masq",
            Method::Tun => "Tunnel",
            Method::Dr => "Route",
        }
    }
}

/// Scheduler chosen per virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sh,
    Mh,
    Sed,
    Nq,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 8] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sh,
        SchedulerKind::Mh,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
        }
    }
    pub fn from_name(name: &str) -> Option<SchedulerKind> {
        SchedulerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// What happens to the connections of a real server that leaves the table
/// (removed by a reload) or goes down (health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConnPolicy {
    /// Existing connections continue until they end.
    #[default]
    Keep,
    /// Entries expire at once; later packets are dropped and counted
    /// (IPVS expire_nodest_conn).
    Reset,
}

/// IPVS-style per-state timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_established: Duration,
    pub tcp_syn_sent: Duration,
    pub tcp_syn_recv: Duration,
    pub tcp_fin_wait: Duration,
    pub tcp_time_wait: Duration,
    pub tcp_close: Duration,
    pub tcp_close_wait: Duration,
    pub tcp_last_ack: Duration,
    pub tcp_listen: Duration,
    pub tcp_synack: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    /// The defaults of IPVS (`net/netfilter/ipvs/ip_vs_proto_tcp.c`,
    /// `tcp_timeouts[]`, and `ip_vs_proto_udp.c`).
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_established: s(15 * 60),
            tcp_syn_sent: s(2 * 60),
            tcp_syn_recv: s(60),
            tcp_fin_wait: s(2 * 60),
            tcp_time_wait: s(2 * 60),
            tcp_close: s(10),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_listen: s(2 * 60),
            tcp_synack: s(2 * 60),
            udp: s(5 * 60),
        }
    }
}

/// Client persistence (IPVS `-p timeout -M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout: Duration,
    pub netmask: Ipv4Addr,
}

/// Health check of a real server (run by the control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Address to probe instead of the real server's own.
    pub address: Option<Ipv4Addr>,
    /// Port to probe instead of the real server's own.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    Tcp,
    Http {
        path: String,
        host: Option<String>,
        status: u16,
        body: Option<String>,
    },
    Udp {
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    Exec {
        command: String,
    },
}

/// One real server of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealServerConfig {
    pub address: SocketAddrV4,
    /// 0 = quiescent: no new connections.
    pub weight: u32,
    pub method: Method,
    pub health_check: Option<HealthCheck>,
    /// Stop new flows at this many connections (IPVS `-x`); 0 = no limit.
    pub max_connections: u32,
    /// Take new flows again below this many (IPVS `-y`); 0 = max_connections.
    pub min_connections: u32,
}

/// One virtual service: (protocol, VIP, port) and its real servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub protocol: Protocol,
    pub address: SocketAddrV4,
    pub scheduler: SchedulerKind,
    pub persistence: Option<Persistence>,
    pub on_remove: ConnPolicy,
    pub on_down: ConnPolicy,
    pub sorry_server: Option<SocketAddrV4>,
    /// The service's `forwarding`: its real servers' method unless they
    /// name their own, and the sorry server's.
    pub forwarding: Method,
    /// Minimum total weight of up servers; 0 = none.
    pub quorum: u32,
    pub health_check: Option<HealthCheck>,
    pub real_servers: Vec<RealServerConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub interfaces: Vec<String>,
    pub control_socket: PathBuf,
    pub metrics_address: Option<std::net::SocketAddr>,
    pub max_connections: u32,
    pub workers: u32,
    /// Accept mid-flow TCP packets of unknown flows (IPVS sloppy_tcp).
    pub sloppy_tcp: bool,
    /// Seed for schedulers that hash (mh, sh; equal on every director) and,
    /// when non-zero, for the connection-table hash (0: random per process).
    pub seed: u64,
    /// Where runtime state (weights set with `rvs weight`) survives a
    /// restart; systemd's StateDirectory=rvs.
    pub state_dir: PathBuf,
    /// A group whose members may use the control socket too (mode 0660).
    pub control_group: Option<String>,
    /// Microseconds a worker keeps polling its rings after the last frame
    /// before it sleeps (0: sleep at once). Trades CPU for latency, and
    /// only pays where the worker's core does not also run the kernel's
    /// receive softirq: a spinning worker pushes that work to ksoftirqd,
    /// which then competes with it (benches/README.md).
    pub busy_poll_us: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            interfaces: Vec::new(),
            control_socket: PathBuf::from("/run/rvs/control.sock"),
            metrics_address: None,
            max_connections: 1_000_000,
            workers: 0,
            sloppy_tcp: false,
            seed: 0,
            state_dir: PathBuf::from("/var/lib/rvs"),
            control_group: None,
            busy_poll_us: 0,
        }
    }
}

/// The whole validated table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub timeouts: Timeouts,
    pub services: Vec<ServiceConfig>,
}
