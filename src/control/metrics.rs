//! Prometheus text exposition of the director's counters (read-only; the
//! listener binds where `metrics_address` says, loopback in the examples).
//!
//! Rendered by hand: a handful of families whose values already live in
//! atomics, so a registry crate would only add a copy step.

use std::fmt::Write;

use crate::control::protocol::ServiceJson;
use crate::core::counters::DropReason;
use crate::core::Director;

#[derive(Debug, Clone, Copy, Default)]
pub struct ReloadCounts {
    pub ok: u64,
    pub error: u64,
}

pub fn render(
    director: &Director,
    services: &[ServiceJson],
    reloads: ReloadCounts,
    transitions: u64,
    worker_packets: &[u64],
) -> String {
    let mut o = String::new();
    let fam = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    type Getter = fn(&crate::control::protocol::RealJson) -> f64;
    let per_real: [(&str, &str, &str, Getter); 5] = [
        (
            "rvs_real_server_connections_total",
            "counter",
            "Connections scheduled to the real server.",
            |r| r.conns as f64,
        ),
        (
            "rvs_real_server_active_connections",
            "gauge",
            "ESTABLISHED connections.",
            |r| f64::from(r.active),
        ),
        (
            "rvs_real_server_inactive_connections",
            "gauge",
            "Connections in other states.",
            |r| f64::from(r.inactive),
        ),
        (
            "rvs_real_server_up",
            "gauge",
            "1 when the real server may take new flows (health up or unchecked).",
            |r| {
                if r.health == "down" {
                    0.0
                } else {
                    1.0
                }
            },
        ),
        (
            "rvs_real_server_weight",
            "gauge",
            "Effective weight.",
            |r| f64::from(r.effective_weight),
        ),
    ];
    for (name, kind, help, get) in per_real {
        fam(&mut o, name, kind, help);
        for s in services {
            for r in &s.real_servers {
                let _ = writeln!(
                    o,
                    "{name}{{service=\"{}/{}\",real_server=\"{}\"}} {}",
                    s.address,
                    s.protocol,
                    r.address,
                    get(r)
                );
            }
        }
    }
    for (name, help, inn, out) in [
        ("rvs_real_server_packets_total", "Packets forwarded.", 0, 1),
        (
            "rvs_real_server_bytes_total",
            "Bytes forwarded (IP length).",
            2,
            3,
        ),
    ] {
        fam(&mut o, name, "counter", help);
        for s in services {
            for r in &s.real_servers {
                let v = [r.in_pkts, r.out_pkts, r.in_bytes, r.out_bytes];
                for (dir, idx) in [("in", inn), ("out", out)] {
                    let _ = writeln!(
                        o,
                        "{name}{{service=\"{}/{}\",real_server=\"{}\",direction=\"{dir}\"}} {}",
                        s.address, s.protocol, r.address, v[idx]
                    );
                }
            }
        }
    }
    fam(
        &mut o,
        "rvs_connection_table_entries",
        "gauge",
        "Entries in the connection table.",
    );
    let _ = writeln!(o, "rvs_connection_table_entries {}", director.entries());
    fam(
        &mut o,
        "rvs_connection_table_max",
        "gauge",
        "The connection table's cap (max_connections).",
    );
    let _ = writeln!(
        o,
        "rvs_connection_table_max {}",
        director.snapshot().config.daemon.max_connections
    );
    fam(
        &mut o,
        "rvs_worker_packets_total",
        "counter",
        "Frames received per packet worker.",
    );
    for (w, n) in worker_packets.iter().enumerate() {
        let _ = writeln!(o, "rvs_worker_packets_total{{worker=\"{w}\"}} {n}");
    }
    fam(
        &mut o,
        "rvs_drops_total",
        "counter",
        "Frames not forwarded, by reason.",
    );
    for &r in DropReason::ALL {
        let _ = writeln!(
            o,
            "rvs_drops_total{{reason=\"{}\"}} {}",
            r.name(),
            director.drops().get(r)
        );
    }
    fam(
        &mut o,
        "rvs_reloads_total",
        "counter",
        "Configuration reloads, by result.",
    );
    let _ = writeln!(o, "rvs_reloads_total{{result=\"ok\"}} {}", reloads.ok);
    let _ = writeln!(o, "rvs_reloads_total{{result=\"error\"}} {}", reloads.error);
    fam(
        &mut o,
        "rvs_health_transitions_total",
        "counter",
        "Real-server health state changes.",
    );
    let _ = writeln!(o, "rvs_health_transitions_total {transitions}");
    fam(
        &mut o,
        "rvs_service_degraded",
        "gauge",
        "1 when a service has no real server up (or is below quorum).",
    );
    for s in services {
        let _ = writeln!(
            o,
            "rvs_service_degraded{{service=\"{}/{}\"}} {}",
            s.address,
            s.protocol,
            u8::from(s.degraded)
        );
    }
    o
}
