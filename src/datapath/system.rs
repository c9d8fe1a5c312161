//! Reads the host's interfaces, routes and neighbours from the kernel into
//! the core's plain [`HostView`]: `getifaddrs(3)` for addresses and MACs,
//! `SIOCGIFMTU` for MTUs, `/proc/net/route` and `/proc/net/arp` (both
//! per network namespace) for routes and the kernel's neighbour table.

use std::io;
use std::net::Ipv4Addr;

use crate::core::host::{HostView, Interface, Route};
use crate::wire::ethernet::EthernetAddress;

/// Every interface with its addresses, plus the routes of the main table.
pub fn host_view() -> io::Result<HostView> {
    let mut ifaces: Vec<Interface> = Vec::new();
    let mut local = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills ifap with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points at a sockaddr.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let entry = match ifaces.iter().position(|i| i.name == name) {
            Some(p) => p,
            None => {
                let cname = std::ffi::CString::new(name.clone()).unwrap_or_default();
                // SAFETY: cname is a valid C string.
                let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
                ifaces.push(Interface {
                    index,
                    name: name.clone(),
                    mac: EthernetAddress([0; 6]),
                    mtu: mtu(&name).unwrap_or(1500),
                    addrs: Vec::new(),
                });
                ifaces.len() - 1
            }
        };
        if family == libc::AF_PACKET {
            // SAFETY: AF_PACKET entries carry a sockaddr_ll.
            let sll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
            if sll.sll_halen == 6 {
                let mut m = [0u8; 6];
                m.copy_from_slice(&sll.sll_addr[..6]);
                ifaces[entry].mac = EthernetAddress(m);
            }
        } else if family == libc::AF_INET {
            // SAFETY: AF_INET entries carry a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let prefix = if ifa.ifa_netmask.is_null() {
                32
            } else {
                // SAFETY: the netmask of an AF_INET entry is a sockaddr_in.
                let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                u8::try_from(u32::from_be(m.sin_addr.s_addr).count_ones()).unwrap_or(32)
            };
            ifaces[entry].addrs.push((addr, prefix));
            local.push(addr);
        }
    }
    // SAFETY: ifap came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(ifap) };
    let routes = read_routes(&ifaces).unwrap_or_default();
    Ok(HostView {
        interfaces: ifaces,
        routes,
        local_addrs: local,
    })
}

/// Whether a process named `rvs` other than this one runs in this
/// process's network namespace (a daemon, or a client command: either way
/// not ours to judge). Processes we may not inspect count as such.
pub fn other_rvs_in_this_netns() -> bool {
    let Ok(ours) = std::fs::read_link("/proc/self/ns/net") else {
        return true;
    };
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        if pid == me {
            return false;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim_end() == "rvs"
            && std::fs::read_link(format!("/proc/{pid}/ns/net")).map_or(true, |ns| ns == ours)
    })
}

fn mtu(name: &str) -> Option<u16> {
    // SAFETY: after SIOCGIFMTU the union holds ifru_mtu.
    let m = unsafe { ifreq(name, libc::SIOCGIFMTU)?.ifr_ifru.ifru_mtu };
    u16::try_from(m).ok()
}

/// Whether the interface is administratively up (IFF_UP); `None` if
/// there is no such interface.
pub fn is_up(name: &str) -> Option<bool> {
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    let f = unsafe { ifreq(name, libc::SIOCGIFFLAGS)?.ifr_ifru.ifru_flags };
    Some(f & libc::IFF_UP as libc::c_short != 0)
}

/// An interface ioctl that reads `ifr_name` and fills the rest.
fn ifreq(name: &str, request: libc::c_ulong) -> Option<libc::ifreq> {
    // SAFETY: plain socket(2) call; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ifreq is plain old data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: `request` is a SIOCGIF* call on a valid, named ifreq.
    let r = unsafe { libc::ioctl(fd, request, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    (r >= 0).then_some(req)
}

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    // /proc/net/route prints addresses as the host-order hex of the
    // network-order u32, i.e. little-endian bytes on x86.
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Ipv4Addr::from(v.to_ne_bytes()))
}

/// Parses `/proc/net/route` text.
pub fn parse_routes(text: &str, ifaces: &[Interface]) -> Vec<Route> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let Some(iface) = ifaces.iter().find(|i| i.name == f[0]) else {
            continue;
        };
        let (Some(dst), Some(gw), Some(mask)) = (hex_addr(f[1]), hex_addr(f[2]), hex_addr(f[7]))
        else {
            continue;
        };
        let flags = u32::from_str_radix(f[3], 16).unwrap_or(0);
        const RTF_UP: u32 = 0x1;
        const RTF_GATEWAY: u32 = 0x2;
        if flags & RTF_UP == 0 {
            continue;
        }
        out.push(Route {
            dst,
            prefix: u8::try_from(u32::from(mask).count_ones()).unwrap_or(32),
            gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
            ifindex: iface.index,
        });
    }
    out
}

fn read_routes(ifaces: &[Interface]) -> io::Result<Vec<Route>> {
    Ok(parse_routes(
        &std::fs::read_to_string("/proc/net/route")?,
        ifaces,
    ))
}

/// The kernel's complete IPv4 neighbour entries: (interface name, address, MAC).
pub fn kernel_neighbours() -> Vec<(String, Ipv4Addr, EthernetAddress)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/arp") else {
        return Vec::new();
    };
    parse_arp(&text)
}

/// Parses `/proc/net/arp` text (complete entries only: flags & ATF_COM).
pub fn parse_arp(text: &str) -> Vec<(String, Ipv4Addr, EthernetAddress)> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 0x2 == 0 {
            continue;
        }
        let (Ok(ip), Some(mac)) = (f[0].parse::<Ipv4Addr>(), parse_mac(f[3])) else {
            continue;
        };
        out.push((f[5].to_string(), ip, mac));
    }
    out
}

pub fn parse_mac(s: &str) -> Option<EthernetAddress> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(EthernetAddress(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth0() -> Vec<Interface> {
        vec![Interface {
            index: 2,
            name: "eth0".into(),
            mac: EthernetAddress([0; 6]),
            mtu: 1500,
            addrs: vec![],
        }]
    }

    #[test]
    fn proc_net_route() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\tFE0200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth9\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let r = parse_routes(text, &eth0());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].gateway, Some(Ipv4Addr::new(192, 0, 2, 254)));
        assert_eq!(r[0].prefix, 0);
        assert_eq!(r[1].dst, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(r[1].prefix, 24);
        assert_eq!(r[1].gateway, None);
    }

    #[test]
    fn proc_net_arp() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
192.0.2.11       0x1         0x2         02:aa:bb:cc:dd:01     *        eth0\n\
192.0.2.12       0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        let n = parse_arp(text);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].1, Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(n[0].2, EthernetAddress([2, 0xaa, 0xbb, 0xcc, 0xdd, 1]));
        assert_eq!(parse_mac("1:2:3"), None);
    }

    #[test]
    fn reads_this_host() {
        let h = host_view().expect("getifaddrs");
        let lo = h
            .interfaces
            .iter()
            .find(|i| i.name == "lo")
            .expect("lo exists");
        assert!(lo.index > 0);
        assert!(h.local_addrs.contains(&Ipv4Addr::LOCALHOST));
    }
}
