//! Notices when the kernel's interfaces, IPv4 addresses or IPv4 routes
//! change, so the director's host view (egress interface, next hop, which
//! VIPs the kernel owns) follows `ip route` and `ip addr` as the kernel's
//! own forwarding would, without a reload.
//!
//! A netlink socket subscribed to the link, IPv4 address and IPv4 route
//! multicast groups. The messages are not parsed: any one of them (or an
//! overflow of the socket, `ENOBUFS`) only means "read the host again";
//! the daemon reads it with [`super::system::host_view`] and applies it
//! when it differs. This layer never decides anything about packets.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// rtnetlink multicast groups (`RTMGRP_*` of `linux/rtnetlink.h`).
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;

/// A non-blocking netlink socket that hears of host changes.
#[derive(Debug)]
pub struct HostWatch {
    fd: OwnedFd,
}

impl HostWatch {
    /// Opens the socket, subscribed to link, address and route changes of
    /// this network namespace.
    pub fn open() -> io::Result<HostWatch> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE;
        // SAFETY: sa is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(HostWatch { fd })
    }

    /// Reads and discards every queued message; `Ok(true)` if there was
    /// any (an overflow counts: changes were missed, so something changed),
    /// `Ok(false)` if none. Never blocks.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut any = false;
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                any = true;
                continue;
            }
            if n == 0 {
                return Ok(any);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(any),
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => any = true,
                _ => return Err(e),
            }
        }
    }
}

impl AsRawFd for HostWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opening needs no privilege; with nothing changing, nothing is heard.
    /// (That a change is heard is shown end to end, in a namespace the test
    /// makes: `tests/e2e_nat.rs`.)
    #[test]
    fn opens_and_drains_without_blocking() {
        let w = HostWatch::open().expect("netlink socket");
        let t = std::time::Instant::now();
        let _ = w.drain().expect("drain");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }
}
