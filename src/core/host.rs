//! What the director knows of its host: interfaces (index, MAC, MTU,
//! addresses) and routes. Plain data, filled in by the drivers from the
//! kernel and handed to the core with each snapshot; the core reads it to
//! pick the egress interface and next hop, never the kernel.

use std::net::Ipv4Addr;

use crate::core::hash::{random_key, WordMap};
use crate::wire::ethernet::EthernetAddress;

/// One interface the director forwards on (or owns addresses on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: EthernetAddress,
    pub mtu: u16,
    /// IPv4 addresses with their prefix length; the first is the primary.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

impl Interface {
    /// The primary address: the source of packets the director itself
    /// originates here (TUN outer headers, ICMP errors).
    pub fn source_addr(&self) -> Option<Ipv4Addr> {
        self.addrs.first().map(|&(a, _)| a)
    }
}

/// One IPv4 route (main table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub ifindex: u32,
}

/// Where a packet to some address leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub ifindex: u32,
    /// The address whose MAC the frame goes to: the gateway, or the
    /// destination itself when it is on-link.
    pub next_hop: Ipv4Addr,
}

/// Interfaces and routes of the director host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostView {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
    /// Addresses the kernel owns on any interface (including lo): for a VIP
    /// among them the kernel answers ARP, for the others rvs does.
    pub local_addrs: Vec<Ipv4Addr>,
}

pub fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

pub fn in_subnet(addr: Ipv4Addr, net: Ipv4Addr, prefix: u8) -> bool {
    let m = mask(prefix);
    u32::from(addr) & m == u32::from(net) & m
}

impl HostView {
    /// A host with one interface `eth0` (MTU 1500) holding `addr/prefix`,
    /// and a default route via `gateway`: the shape of a director in the
    /// tests, benches and fuzz targets.
    pub fn one_interface(
        index: u32,
        mac: EthernetAddress,
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
    ) -> HostView {
        HostView {
            interfaces: vec![Interface {
                index,
                name: "eth0".into(),
                mac,
                mtu: 1500,
                addrs: vec![(addr, prefix)],
            }],
            routes: vec![Route {
                dst: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                gateway: Some(gateway),
                ifindex: index,
            }],
            local_addrs: vec![addr],
        }
    }

    pub fn interface(&self, index: u32) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.index == index)
    }

    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.local_addrs.contains(&addr)
    }

    /// Longest-prefix match over the routes, then over the interfaces'
    /// connected subnets (which the kernel's table also holds, but a view
    /// built from addresses alone must still route on-link).
    pub fn route(&self, dst: Ipv4Addr) -> Option<Hop> {
        let mut best: Option<(u8, Hop)> = None;
        let mut consider = |prefix: u8, hop: Hop| {
            if best.is_none_or(|(p, _)| prefix > p) {
                best = Some((prefix, hop));
            }
        };
        for r in &self.routes {
            if in_subnet(dst, r.dst, r.prefix) && self.interface(r.ifindex).is_some() {
                consider(
                    r.prefix,
                    Hop {
                        ifindex: r.ifindex,
                        next_hop: r.gateway.unwrap_or(dst),
                    },
                );
            }
        }
        for i in &self.interfaces {
            for &(a, p) in &i.addrs {
                if in_subnet(dst, a, p) {
                    consider(
                        p,
                        Hop {
                            ifindex: i.index,
                            next_hop: dst,
                        },
                    );
                }
            }
        }
        best.map(|(_, h)| h)
    }

    /// The source address for packets the director itself originates on
    /// `ifindex` (TUN outer headers, ICMP errors).
    pub fn source_addr(&self, ifindex: u32) -> Option<Ipv4Addr> {
        self.interface(ifindex).and_then(Interface::source_addr)
    }
}

/// Route tables up to this long are scanned (fastest for the few routes
/// of a typical director); longer ones are looked up per prefix length.
const LINEAR_MAX: usize = 16;

/// The networks of one prefix length → (ifindex, gateway).
type NetMap = WordMap<(u32, Option<Ipv4Addr>)>;

/// [`HostView::route`] compiled for the packet path: every candidate
/// (routes and connected subnets, whose interface exists) as masked words,
/// longest prefix first. A short table is a scan that stops at the first
/// match; a long one (a director fed by a routing daemon) is one hash map
/// per prefix length, probed longest first, so a lookup costs at most one
/// probe per distinct prefix length instead of one compare per route.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    entries: Vec<(u32, u32, u32, Option<Ipv4Addr>)>,
    /// Empty for short tables. Otherwise (mask, network → (ifindex,
    /// gateway)) per prefix length, longest first; among equal networks the
    /// first entry (the kernel's route before a connected subnet) is kept,
    /// as the scan would find it.
    by_length: Vec<(u32, NetMap)>,
}

impl PartialEq for RouteTable {
    fn eq(&self, other: &Self) -> bool {
        // `by_length` is derived from `entries`.
        self.entries == other.entries
    }
}

impl Eq for RouteTable {}

/// The nonzero word a network is kept under in [`RouteTable::by_length`].
#[inline(always)]
fn net_word(net: u32) -> u64 {
    (1 << 32) | u64::from(net)
}

impl RouteTable {
    pub fn new(host: &HostView) -> RouteTable {
        let mut e: Vec<(u8, u32, u32, u32, Option<Ipv4Addr>)> = Vec::new();
        for r in &host.routes {
            if host.interface(r.ifindex).is_some() {
                let m = mask(r.prefix);
                e.push((r.prefix, m, u32::from(r.dst) & m, r.ifindex, r.gateway));
            }
        }
        for i in &host.interfaces {
            for &(a, p) in &i.addrs {
                let m = mask(p);
                e.push((p, m, u32::from(a) & m, i.index, None));
            }
        }
        // Longest prefix first; among equals, the kernel's routes before
        // connected subnets (stable sort keeps insertion order).
        e.sort_by_key(|x| std::cmp::Reverse(x.0));
        let entries: Vec<_> = e.into_iter().map(|(_, m, n, i, g)| (m, n, i, g)).collect();
        let mut by_length: Vec<(u32, NetMap)> = Vec::new();
        if entries.len() > LINEAR_MAX {
            // Destinations come from packets: the probe is keyed.
            let seed = random_key();
            for &(m, n, i, g) in &entries {
                if by_length.last().is_none_or(|(lm, _)| *lm != m) {
                    by_length.push((m, WordMap::new(seed)));
                }
                if let Some((_, map)) = by_length.last_mut() {
                    if !map.contains(net_word(n)) {
                        map.insert(net_word(n), (i, g));
                    }
                }
            }
        }
        RouteTable { entries, by_length }
    }

    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<Hop> {
        let d = u32::from(dst);
        if self.by_length.is_empty() {
            return self.entries.iter().find(|&&(m, n, _, _)| d & m == n).map(
                |&(_, _, ifindex, gw)| Hop {
                    ifindex,
                    next_hop: gw.unwrap_or(dst),
                },
            );
        }
        self.by_length.iter().find_map(|(m, map)| {
            map.get(net_word(d & m)).map(|(ifindex, gw)| Hop {
                ifindex,
                next_hop: gw.unwrap_or(dst),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostView {
        HostView::one_interface(
            2,
            EthernetAddress([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(192, 0, 2, 1),
            24,
            Ipv4Addr::new(192, 0, 2, 254),
        )
    }

    #[test]
    fn on_link_beats_default() {
        let h = host();
        assert_eq!(
            h.route(Ipv4Addr::new(192, 0, 2, 11)),
            Some(Hop {
                ifindex: 2,
                next_hop: Ipv4Addr::new(192, 0, 2, 11)
            })
        );
        assert_eq!(
            h.route(Ipv4Addr::new(198, 51, 100, 2)).map(|h| h.next_hop),
            Some(Ipv4Addr::new(192, 0, 2, 254))
        );
        assert_eq!(h.source_addr(2), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(h.source_addr(9), None);
        let t = RouteTable::new(&h);
        for a in [
            [192, 0, 2, 11],
            [198, 51, 100, 2],
            [10, 0, 0, 1],
            [192, 0, 2, 254],
        ] {
            let a = Ipv4Addr::from(a);
            assert_eq!(t.route(a), h.route(a), "{a}");
        }
    }

    proptest::proptest! {
        /// The compiled table, short (scanned) or long (per prefix
        /// length), routes as the reference longest-prefix match does:
        /// routes and connected subnets from a small address space so that
        /// prefixes overlap, nest and repeat, gateways or none, an
        /// interface that does not exist.
        #[test]
        fn compiled_routes_match_the_reference(
            routes in proptest::collection::vec(
                (0u32..64, 0u8..=32, 0u32..3, proptest::option::of(1u32..8)),
                0..80,
            ),
            addrs in proptest::collection::vec((0u32..64, 0u8..=32), 0..4),
            dsts in proptest::collection::vec(0u32..64, 1..40),
        ) {
            // Addresses 10.0.0.0 + (x << 26 | x): top and bottom bits vary.
            let a = |x: u32| Ipv4Addr::from(0x0a00_0000 ^ (x << 26) ^ x);
            let mut h = host();
            h.routes = routes
                .iter()
                .map(|&(d, p, i, g)| Route {
                    dst: a(d),
                    prefix: p,
                    // 0.0.0.0 too: a gateway, however odd, is not "on link".
                    gateway: g.map(|g| match g {
                        7 => Ipv4Addr::UNSPECIFIED,
                        g => Ipv4Addr::new(192, 0, 2, g as u8),
                    }),
                    ifindex: 1 + i, // 1..3; only 2 exists
                })
                .collect();
            h.interfaces[0].addrs.extend(addrs.iter().map(|&(x, p)| (a(x), p)));
            let t = RouteTable::new(&h);
            for &d in &dsts {
                proptest::prop_assert_eq!(t.route(a(d)), h.route(a(d)), "{}", a(d));
            }
        }
    }

    #[test]
    fn a_long_table_is_looked_up_per_prefix_length() {
        let mut h = host();
        // 1000 /24s via one gateway, one /16 over part of them via another.
        h.routes.extend((0..1000u32).map(|i| Route {
            dst: Ipv4Addr::from(0x0a00_0000 + (i << 8)),
            prefix: 24,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 253)),
            ifindex: 2,
        }));
        h.routes.push(Route {
            dst: Ipv4Addr::new(10, 1, 0, 0),
            prefix: 16,
            gateway: Some(Ipv4Addr::new(192, 0, 2, 252)),
            ifindex: 2,
        });
        let t = RouteTable::new(&h);
        assert!(!t.by_length.is_empty());
        let hop = |a: [u8; 4]| t.route(Ipv4Addr::from(a)).map(|h| h.next_hop);
        assert_eq!(hop([10, 0, 7, 9]), Some(Ipv4Addr::new(192, 0, 2, 253)));
        // 10.1.0.0/24 .. 10.1.255.0/24 are among the /24s up to 10.3.231.0.
        assert_eq!(hop([10, 1, 5, 1]), Some(Ipv4Addr::new(192, 0, 2, 253)));
        assert_eq!(
            hop([10, 4, 0, 1]),
            Some(Ipv4Addr::new(192, 0, 2, 254)),
            "default"
        );
        assert_eq!(
            hop([192, 0, 2, 11]),
            Some(Ipv4Addr::new(192, 0, 2, 11)),
            "on link"
        );
    }

    #[test]
    fn masks() {
        assert_eq!(mask(0), 0);
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(32), u32::MAX);
        assert!(in_subnet(
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(10, 0, 0, 0),
            8
        ));
    }
}
