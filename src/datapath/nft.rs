//! nftables steering: the kernel keeps its copy of every frame AF_PACKET
//! hands us, so unless told otherwise it answers a SYN to a local VIP with
//! a RST, or routes an un-rewritten NAT reply. rvs owns one table,
//! `netdev rvs`, with an ingress chain per data interface that drops the
//! kernel's copy of exactly the packets rvs forwards: inbound VIP:port of
//! each service, and NAT replies from real servers that are not addressed
//! to the director itself (its own health checks must still get their
//! answers).
//!
//! Why netdev ingress and not an inet prerouting chain: ingress runs right
//! after the packet taps (AF_PACKET has its copy by then) and before the
//! IP stack, so the kernel's copy costs no IP input, routing or conntrack
//! work — that is per-packet CPU the director needs for forwarding.
//!
//! The table is replaced atomically (one `nft -f` transaction: create,
//! delete, recreate), so a start after a crash replaces a stale one, and a
//! reload never leaves a moment without steering.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::core::config::Protocol;
use crate::core::service::Snapshot;

pub const FAMILY: &str = "netdev";
pub const TABLE: &str = "rvs";

/// The ruleset for `snap` on the data interfaces `interfaces`.
pub fn ruleset(snap: &Snapshot, interfaces: &[String]) -> String {
    let mut rules = Vec::new();
    let mut services: Vec<_> = snap.services.iter().map(|s| s.key).collect();
    services.sort();
    for k in services {
        rules.push(format!(
            "    ip daddr {} {} dport {} counter drop",
            k.addr.ip(),
            k.protocol.as_str(),
            k.addr.port()
        ));
    }
    let mut local: Vec<Ipv4Addr> = snap.host.local_addrs.clone();
    local.sort();
    local.dedup();
    let not_local = if local.is_empty() {
        String::new()
    } else {
        let l: Vec<String> = local.iter().map(ToString::to_string).collect();
        format!(" ip daddr != {{ {} }}", l.join(", "))
    };
    let mut reals: Vec<_> = snap.nat_reals().collect();
    reals.sort_by_key(|(p, a)| (*p == Protocol::Udp, *a));
    for (p, a) in reals {
        rules.push(format!(
            "    ip saddr {} {} sport {}{not_local} counter drop",
            a.ip(),
            p.as_str(),
            a.port()
        ));
    }
    let mut chains = String::new();
    for (i, dev) in interfaces.iter().enumerate() {
        chains.push_str(&format!(
            "  chain in{i} {{\n    type filter hook ingress device \"{dev}\" priority -500; policy accept;\n{}\n  }}\n",
            rules.join("\n")
        ));
    }
    format!("table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\ntable {FAMILY} {TABLE} {{\n{chains}}}\n")
}

fn nft(input: &str) -> std::io::Result<()> {
    let mut child = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot run nft: {e} (is nftables installed?)"),
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "nft failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Installs (or replaces) the steering table for `snap`.
pub fn apply(snap: &Snapshot, interfaces: &[String]) -> std::io::Result<()> {
    nft(&ruleset(snap, interfaces))
}

/// Whether the steering table exists in this network namespace.
pub fn present() -> bool {
    Command::new("nft")
        .args(["list", "table", FAMILY, TABLE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes the table (on exit).
pub fn remove() -> std::io::Result<()> {
    nft(&format!(
        "table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
    ))
}
