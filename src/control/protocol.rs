//! The control-socket protocol: one JSON object per line each way.
//!
//! Request: `{"cmd": "conns"}`, `{"cmd": "services"}`, `{"cmd": "reload"}`,
//! `{"cmd": "weight", "service": "203.0.113.10:80/tcp", "real": "192.0.2.11:8080", "weight": 0}`,
//! `{"cmd": "drain", "service": …, "real": …}` (`service` optional: every
//! service with that real server), `{"cmd": "zero"}`,
//! `{"cmd": "status"}`. `service` may omit `/tcp`.
//! Response: `{"ok": true, …}` with the command's fields, or
//! `{"ok": false, "error": "one line", "errors": ["file:line:col: …"]}`.
//! See docs/control-protocol.md.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Conns {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    Services,
    Reload,
    Weight {
        service: String,
        real: String,
        weight: u32,
    },
    /// Without `service`: weight 0 in every service that has `real`.
    Drain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        real: String,
    },
    Zero,
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnJson {
    pub protocol: String,
    pub state: String,
    pub expires_in_ms: u64,
    pub client: String,
    #[serde(rename = "virtual")]
    pub vaddr: String,
    pub real_server: String,
    pub template: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealJson {
    pub address: String,
    pub method: String,
    pub weight: u32,
    /// "file", or "runtime" for a weight set with `rvs weight`/`rvs drain`.
    #[serde(default)]
    pub weight_source: String,
    pub effective_weight: u32,
    /// "up", "down" or "unknown" (no check yet / none configured).
    pub health: String,
    pub active: u32,
    pub inactive: u32,
    pub conns: u64,
    pub in_pkts: u64,
    pub out_pkts: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub cps: f64,
    pub in_pps: f64,
    pub out_pps: f64,
    pub in_bps: f64,
    pub out_bps: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceJson {
    pub name: String,
    pub protocol: String,
    pub address: String,
    pub scheduler: String,
    pub persistence_timeout_s: Option<u64>,
    pub persistence_netmask: Option<String>,
    pub accepting: bool,
    pub degraded: bool,
    pub real_servers: Vec<RealJson>,
}
