//! The client side of the control socket: sends one request, prints the
//! answer as a table for people (`ipvsadm -L -n` style) or as JSON for
//! programs (`--json`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::protocol::{ConnJson, Request, ServiceJson};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("rvs is not running (cannot connect to {path}: {reason})")]
    NotRunning { path: String, reason: String },
    #[error("{0}")]
    Failed(String),
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
}

/// Sends `req` to the daemon at `socket` and returns its answer (`ok`
/// checked: a refusal becomes `CliError::Failed` with every error line).
pub fn request(socket: &Path, req: &Request) -> Result<Value, CliError> {
    let mut s = UnixStream::connect(socket).map_err(|e| CliError::NotRunning {
        path: socket.display().to_string(),
        reason: e.to_string(),
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = serde_json::to_string(req).map_err(|e| CliError::Protocol(e.to_string()))?;
    line.push('\n');
    // A refused peer may see the daemon close before it reads the request;
    // the daemon's one-line answer is still there to read.
    let _ = s.write_all(line.as_bytes());
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    if answer.is_empty() {
        return Err(CliError::Protocol(
            "the daemon closed the connection".into(),
        ));
    }
    let v: Value = serde_json::from_str(&answer).map_err(|e| CliError::Protocol(e.to_string()))?;
    if v["ok"] == Value::Bool(true) {
        return Ok(v);
    }
    let mut msg = v["error"].as_str().unwrap_or("request failed").to_string();
    if let Some(errs) = v["errors"].as_array() {
        for e in errs {
            if let Some(e) = e.as_str() {
                msg.push('\n');
                msg.push_str(e);
            }
        }
    }
    Err(CliError::Failed(msg))
}

fn mmss(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// `ipvsadm -L -n -c`.
pub fn print_conns(v: &Value, json: bool) -> Result<(), CliError> {
    if json {
        println!("{}", serde_json::json!({"connections": v["connections"]}));
        return Ok(());
    }
    let conns: Vec<ConnJson> = serde_json::from_value(v["connections"].clone())
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    println!("pro expire state       source                virtual               destination");
    for c in conns {
        println!(
            "{:<3} {:<6} {:<11} {:<21} {:<21} {}",
            c.protocol.to_uppercase(),
            mmss(c.expires_in_ms),
            c.state,
            c.client,
            c.vaddr,
            c.real_server
        );
    }
    Ok(())
}

fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesView {
    Plain,
    Stats,
    Rate,
}

/// `ipvsadm -L -n` (`--stats`, `--rate`).
pub fn print_services(v: &Value, view: ServicesView, json: bool) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::json!({"services": v["services"], "drops": v["drops"],
                               "connection_table_entries": v["connection_table_entries"]})
        );
        return Ok(());
    }
    let services: Vec<ServiceJson> = serde_json::from_value(v["services"].clone())
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    println!("Prot LocalAddress:Port Scheduler Flags");
    match view {
        ServicesView::Plain => {
            println!("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn Health")
        }
        ServicesView::Stats => {
            println!("  -> RemoteAddress:Port           Conns   InPkts  OutPkts  InBytes OutBytes")
        }
        ServicesView::Rate => {
            println!("  -> RemoteAddress:Port           CPS     InPPS   OutPPS    InBPS   OutBPS")
        }
    }
    let runtime = services
        .iter()
        .any(|s| s.real_servers.iter().any(|r| r.weight_source == "runtime"));
    for s in services {
        let mut flags = String::new();
        if let Some(t) = s.persistence_timeout_s {
            flags.push_str(&format!("persistent {t}"));
            if let Some(m) = s
                .persistence_netmask
                .as_deref()
                .filter(|m| *m != "255.255.255.255")
            {
                flags.push_str(&format!(" mask {m}"));
            }
        }
        if !s.accepting {
            flags.push_str(" draining");
        }
        if s.degraded {
            flags.push_str(" degraded");
        }
        println!(
            "{:<4} {} {} {}",
            s.protocol.to_uppercase(),
            s.address,
            s.scheduler,
            flags.trim()
        );
        for r in &s.real_servers {
            match view {
                ServicesView::Plain => {
                    let fwd = match r.method.as_str() {
                        "nat" => "Masq",
                        "tun" => "Tunnel",
                        _ => "Route",
                    };
                    // A weight set at run time (`rvs weight`) is marked `*`.
                    let weight = if r.weight_source == "runtime" {
                        format!("{}*", r.effective_weight)
                    } else {
                        r.effective_weight.to_string()
                    };
                    println!(
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<9} {}",
                        r.address, fwd, weight, r.active, r.inactive, r.health
                    );
                }
                ServicesView::Stats => println!(
                    "  -> {:<28} {:<7} {:<7} {:<8} {:<8} {}",
                    r.address,
                    r.conns,
                    r.in_pkts,
                    r.out_pkts,
                    human(r.in_bytes as f64),
                    human(r.out_bytes as f64)
                ),
                ServicesView::Rate => println!(
                    "  -> {:<28} {:<7} {:<7} {:<8} {:<8} {}",
                    r.address,
                    human(r.cps),
                    human(r.in_pps),
                    human(r.out_pps),
                    human(r.in_bps),
                    human(r.out_bps)
                ),
            }
        }
    }
    if runtime && view == ServicesView::Plain {
        println!("(* weight set at run time with `rvs weight`/`rvs drain`, kept until the file changes it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_is_mm_ss() {
        assert_eq!(mmss(0), "00:00");
        assert_eq!(mmss(61_500), "01:01");
        assert_eq!(mmss(900_000), "15:00");
    }

    #[test]
    fn not_running_is_one_line() {
        let e = request(Path::new("/nonexistent/rvs.sock"), &Request::Status).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("rvs is not running"), "{s}");
        assert!(!s.contains('\n'));
    }
}
