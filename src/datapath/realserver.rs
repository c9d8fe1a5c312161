//! `rvs realserver setup|teardown`: prepares a real server for VS/DR or
//! VS/TUN, idempotently, printing each change it makes.
//!
//! DR: the VIP on `lo` as /32, and `arp_ignore=1`, `arp_announce=2` on
//! `all` and the interface, so the server accepts packets for the VIP
//! without answering ARP for it (the director owns the VIP on the LAN).
//! TUN: a `tunl0` IP-in-IP device holding the VIP with `rp_filter` relaxed
//! where the kernel has `ipip`; where it has none, the same sysctls and a
//! pointer to `rvs tunnel-endpoint`, which does the decapsulation in user
//! space.

use std::net::Ipv4Addr;
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dr,
    Tun,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Command(String),
    #[error("cannot write {path}: {err}")]
    Sysctl { path: String, err: std::io::Error },
}

fn ip(args: &[&str]) -> Result<String, SetupError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| SetupError::Command(format!("cannot run ip: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(SetupError::Command(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn sysctl(key: &str, value: &str, report: &mut Vec<String>) -> Result<(), SetupError> {
    let path = sysctl_path(key);
    let cur = std::fs::read_to_string(&path).unwrap_or_default();
    if cur.trim() == value {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|err| SetupError::Sysctl {
        path: path.clone(),
        err,
    })?;
    report.push(format!("set {key} = {value} (was {})", cur.trim()));
    Ok(())
}

/// The /proc/sys file of a dotted key whose interface name (the part
/// after `conf.`) may itself hold dots, as VLANs do (`eth0.100`).
fn sysctl_path(key: &str) -> String {
    match key.split_once(".conf.") {
        Some((head, rest)) => {
            let (dev, leaf) = rest.rsplit_once('.').unwrap_or((rest, ""));
            format!("/proc/sys/{}/conf/{dev}/{leaf}", head.replace('.', "/"))
        }
        None => format!("/proc/sys/{}", key.replace('.', "/")),
    }
}

fn has_addr(dev: &str, vip: Ipv4Addr) -> Result<bool, SetupError> {
    let out = ip(&["-4", "-o", "addr", "show", "dev", dev])?;
    Ok(out.contains(&format!(" {vip}/32 ")))
}

/// Applies the setup; returns what changed (empty when already in place).
pub fn setup(mode: Mode, vip: Ipv4Addr, interface: &str) -> Result<Vec<String>, SetupError> {
    let mut report = Vec::new();
    match mode {
        Mode::Dr => {
            if !has_addr("lo", vip)? {
                ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                report.push(format!("added {vip}/32 to lo"));
            }
            for dev in ["all", interface] {
                sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1", &mut report)?;
                sysctl(
                    &format!("net.ipv4.conf.{dev}.arp_announce"),
                    "2",
                    &mut report,
                )?;
            }
        }
        Mode::Tun => {
            let have_tunl0 = ip(&["link", "show", "tunl0"]).is_ok()
                || Command::new("modprobe")
                    .arg("ipip")
                    .status()
                    .is_ok_and(|s| s.success())
                    && ip(&["link", "show", "tunl0"]).is_ok();
            if have_tunl0 {
                ip(&["link", "set", "tunl0", "up"])?;
                if !has_addr("tunl0", vip)? {
                    ip(&["addr", "add", &format!("{vip}/32"), "dev", "tunl0"])?;
                    report.push(format!("added {vip}/32 to tunl0"));
                }
                sysctl("net.ipv4.conf.tunl0.rp_filter", "0", &mut report)?;
            } else {
                report.push(format!(
                    "this kernel has no ipip: run `rvs tunnel-endpoint --vip {vip}` (a service) to decapsulate in user space"
                ));
            }
            sysctl("net.ipv4.conf.all.rp_filter", "0", &mut report)?;
            for dev in ["all", interface] {
                sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1", &mut report)?;
                sysctl(
                    &format!("net.ipv4.conf.{dev}.arp_announce"),
                    "2",
                    &mut report,
                )?;
            }
        }
    }
    Ok(report)
}

/// Removes the VIP again (sysctls are left as they are: other VIPs or
/// services may rely on them); returns what changed.
pub fn teardown(mode: Mode, vip: Ipv4Addr) -> Result<Vec<String>, SetupError> {
    let dev = match mode {
        Mode::Dr => "lo",
        Mode::Tun => "tunl0",
    };
    let mut report = Vec::new();
    if ip(&["link", "show", dev]).is_ok() && has_addr(dev, vip)? {
        ip(&["addr", "del", &format!("{vip}/32"), "dev", dev])?;
        report.push(format!("removed {vip}/32 from {dev}"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::sysctl_path;

    #[test]
    fn interface_names_keep_their_dots() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.eth0.100.arp_ignore"),
            "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore"
        );
        assert_eq!(
            sysctl_path("net.ipv4.conf.all.rp_filter"),
            "/proc/sys/net/ipv4/conf/all/rp_filter"
        );
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward"),
            "/proc/sys/net/ipv4/ip_forward"
        );
    }
}
