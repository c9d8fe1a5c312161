//! What the loader needs to know about this host: its interfaces and their
//! IPv4 subnets (to check `daemon.interfaces` and that DR real servers are
//! directly attached).

use std::ffi::CStr;
use std::net::Ipv4Addr;

/// The interfaces of a host, as seen by the config checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub interfaces: Vec<HostInterface>,
}

/// One network interface and its IPv4 addresses with prefix lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

impl HostInfo {
    /// Reads the interfaces of this host with `getifaddrs(3)`.
    ///
    /// Interfaces without an IPv4 address are listed with no addresses. If
    /// `getifaddrs` fails the result is empty.
    pub fn from_system() -> HostInfo {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: `head` is a valid out-pointer; on success getifaddrs stores
        // a list that we free below with freeifaddrs.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return HostInfo::default();
        }
        let mut host = HostInfo::default();
        let mut cur = head;
        while !cur.is_null() {
            // SAFETY: `cur` is a non-null node of the list getifaddrs returned,
            // which stays alive until freeifaddrs.
            let ifa = unsafe { &*cur };
            cur = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
                .to_string_lossy()
                .into_owned();
            let index = match host.interfaces.iter().position(|i| i.name == name) {
                Some(i) => i,
                None => {
                    host.interfaces.push(HostInterface {
                        name,
                        addrs: Vec::new(),
                    });
                    host.interfaces.len() - 1
                }
            };
            if let Some(addr) = ipv4_of(ifa.ifa_addr) {
                let prefix = ipv4_of(ifa.ifa_netmask)
                    .map(|m| prefix_len(m).unwrap_or(32))
                    .unwrap_or(32);
                host.interfaces[index].addrs.push((addr, prefix));
            }
        }
        // SAFETY: `head` came from a successful getifaddrs and is freed once.
        unsafe { libc::freeifaddrs(head) };
        host
    }

    /// The interface called `name`, if the host has it.
    pub fn interface(&self, name: &str) -> Option<&HostInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

impl HostInterface {
    /// Whether `ip` lies in one of this interface's directly attached subnets.
    pub fn is_attached(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().any(|&(addr, prefix)| {
            let mask = prefix_mask(prefix);
            u32::from(addr) & mask == u32::from(ip) & mask
        })
    }
}

/// The netmask of a prefix length (`/24` → `0xffff_ff00`).
pub(crate) fn prefix_mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// The prefix length of a contiguous netmask, `None` if it has holes.
pub(crate) fn prefix_len(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    // leading_ones is at most 32, so it fits in u8.
    (ones + m.trailing_zeros() >= 32).then_some(ones as u8)
}

fn ipv4_of(sa: *const libc::sockaddr) -> Option<Ipv4Addr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: `sa` is non-null and points to a sockaddr from getifaddrs;
    // sa_family is the common first field of every sockaddr type.
    let family = unsafe { (*sa).sa_family };
    if i32::from(family) != libc::AF_INET {
        return None;
    }
    // SAFETY: the family is AF_INET, so the storage is a sockaddr_in.
    let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
    Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_system_lists_loopback() {
        let host = HostInfo::from_system();
        let lo = host.interface("lo").expect("every Linux host has lo");
        assert!(lo.addrs.contains(&(Ipv4Addr::LOCALHOST, 8)), "{lo:?}");
    }

    #[test]
    fn masks_and_prefixes() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(24), 0xffff_ff00);
        assert_eq!(prefix_mask(32), u32::MAX);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_len(Ipv4Addr::new(255, 0, 255, 0)), None);
        let eth0 = HostInterface {
            name: "eth0".into(),
            addrs: vec![(Ipv4Addr::new(192, 0, 2, 1), 24)],
        };
        assert!(eth0.is_attached(Ipv4Addr::new(192, 0, 2, 11)));
        assert!(!eth0.is_attached(Ipv4Addr::new(198, 51, 100, 1)));
    }
}
