//! Next-hop MAC addresses: learned from ARP seen on the data interfaces,
//! seeded from the kernel's table (`/proc/net/arp`), and resolved with our
//! own ARP requests when missing. Frames waiting for an answer sit in a
//! small bounded queue per worker; a missing neighbour is resolved, not
//! dropped forever.
//!
//! The table is read per packet without a lock (an `ArcSwap` of a map) and
//! copied on the rare change. Because a change copies it, what may add an
//! entry is limited, much as in the kernel's ARP: any ARP frame updates the
//! entry of a sender already known; one addressed to us (a request for one
//! of our addresses or VIPs) adds a new sender while the table has room
//! ([`MAX_NEIGHBOURS`]); and a neighbour we are resolving (frames wait for
//! it) or one the kernel's table holds is always added, pushing out another
//! entry when the table is full. A host on the segment sending ARP from
//! ever new addresses therefore cannot grow the table without bound (each
//! new entry costs a copy of all the others), nor keep a needed neighbour
//! out of it; what it pushes out is learned again on demand.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::core::hash::{FastBuild, FastMap};
use crate::wire::arp::{ArpOperation, ArpPacket, ArpRepr};
use crate::wire::ethernet::{EtherType, EthernetAddress, EthernetFrame};

type Map = FastMap<(u32, Ipv4Addr), EthernetAddress>;

/// Most entries the table holds (the kernel's default `gc_thresh3` is 1024;
/// a director talks to its routers, clients' gateways and real servers).
pub const MAX_NEIGHBOURS: usize = 4096;

/// Whether [`Neighbours::record`] may add an address not in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Only update a known entry (overheard ARP).
    KnownOnly,
    /// Add while the table has room (ARP addressed to us).
    IfRoom,
    /// Add, pushing out another entry if the table is full (a neighbour
    /// being resolved, the kernel's table).
    Always,
}

/// Shared neighbour table.
#[derive(Debug)]
pub struct Neighbours {
    map: ArcSwap<Map>,
    write: Mutex<()>,
}

impl Default for Neighbours {
    fn default() -> Self {
        Neighbours {
            map: ArcSwap::from_pointee(Map::with_hasher(FastBuild::random())),
            write: Mutex::new(()),
        }
    }
}

impl Neighbours {
    pub fn get(&self, ifindex: u32, addr: Ipv4Addr) -> Option<EthernetAddress> {
        self.map.load().get(&(ifindex, addr)).copied()
    }

    /// Records `addr` → `mac` (the kernel's table, or a neighbour being
    /// resolved): added even to a full table; a no-op (no copy) when
    /// already known.
    pub fn learn(&self, ifindex: u32, addr: Ipv4Addr, mac: EthernetAddress) {
        self.record(ifindex, addr, mac, Admit::Always);
    }

    /// Records `addr` → `mac` as `admit` allows a new entry; copies the
    /// table only for a change.
    fn record(&self, ifindex: u32, addr: Ipv4Addr, mac: EthernetAddress, admit: Admit) {
        if !mac.is_unicast() || addr.is_unspecified() || addr.is_broadcast() {
            return;
        }
        match (self.get(ifindex, addr), admit) {
            (Some(known), _) if known == mac => return,
            (Some(_), _) | (None, Admit::Always) => {}
            (None, Admit::IfRoom) if self.len() < MAX_NEIGHBOURS => {}
            (None, _) => return,
        }
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.map.load();
        let mut m: Map = (**cur).clone();
        if !m.contains_key(&(ifindex, addr)) && m.len() >= MAX_NEIGHBOURS {
            if admit != Admit::Always {
                return;
            }
            // Any other entry: if it is still needed, it is resolved again.
            if let Some(&k) = m.keys().next() {
                m.remove(&k);
            }
        }
        m.insert((ifindex, addr), mac);
        self.map.store(Arc::new(m));
    }

    /// Learns from an ARP frame (request or reply) received on `ifindex`:
    /// updates the sender's entry; adds it if we are resolving it
    /// (`wanted(sender)`), or if the frame is addressed to us
    /// (`ours(target)`) and the table has room (see the module docs).
    pub fn learn_from_arp(
        &self,
        ifindex: u32,
        frame: &[u8],
        ours: impl Fn(Ipv4Addr) -> bool,
        wanted: impl Fn(Ipv4Addr) -> bool,
    ) {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return;
        };
        if eth.ethertype() != EtherType::Arp {
            return;
        }
        let Ok(p) = ArpPacket::new_checked(eth.payload()) else {
            return;
        };
        if let Ok(r) = ArpRepr::parse(&p) {
            let admit = if wanted(r.source_protocol_addr) {
                Admit::Always
            } else if ours(r.target_protocol_addr) {
                Admit::IfRoom
            } else {
                Admit::KnownOnly
            };
            self.record(
                ifindex,
                r.source_protocol_addr,
                r.source_hardware_addr,
                admit,
            );
        }
    }

    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Builds a broadcast ARP request for `target` into `out` (≥ 42 bytes);
/// returns its length.
pub fn arp_request(
    out: &mut [u8],
    src_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
) -> usize {
    let len = 14 + 28;
    let mut eth = EthernetFrame::new_unchecked(&mut out[..len]);
    eth.set_dst_addr(EthernetAddress::BROADCAST);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(EtherType::Arp);
    ArpRepr {
        operation: ArpOperation::Request,
        source_hardware_addr: src_mac,
        source_protocol_addr: src_ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    }
    .emit(&mut ArpPacket::new_unchecked(eth.payload_mut()));
    len
}

/// How long a frame waits for its next hop, and how often we ask again.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(1);
pub const ARP_RETRY: Duration = Duration::from_millis(200);
/// Frames held per worker while their neighbours resolve (each up to
/// `PENDING_FRAME` bytes, allocated once).
pub const PENDING_SLOTS: usize = 64;
pub const PENDING_FRAME: usize = 9216;

/// A frame waiting for a MAC.
#[derive(Debug)]
pub struct Pending {
    pub ifindex: u32,
    pub next_hop: Ipv4Addr,
    pub since: Instant,
    pub len: usize,
    pub vnet: [u8; crate::datapath::afpacket::VNET_HDR_LEN],
    pub buf: Box<[u8]>,
    pub used: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_from_arp_and_builds_requests() {
        let n = Neighbours::default();
        let mut buf = [0u8; 60];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        let len = arp_request(
            &mut buf,
            mac,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 11),
        );
        assert_eq!(len, 42);
        n.learn_from_arp(
            3,
            &buf[..len],
            |a| a == Ipv4Addr::new(192, 0, 2, 11),
            |_| false,
        );
        assert_eq!(n.get(3, Ipv4Addr::new(192, 0, 2, 1)), Some(mac));
        assert_eq!(n.get(4, Ipv4Addr::new(192, 0, 2, 1)), None);
        n.learn(3, Ipv4Addr::new(192, 0, 2, 7), EthernetAddress::BROADCAST);
        assert_eq!(n.len(), 1, "broadcast MACs are not learned");
    }

    #[test]
    fn only_arp_addressed_to_us_adds_a_neighbour() {
        let n = Neighbours::default();
        let us = Ipv4Addr::new(192, 0, 2, 1);
        let ours = |a: Ipv4Addr| a == us;
        let (old, new) = (
            EthernetAddress([2, 0, 0, 0, 0, 9]),
            EthernetAddress([2, 0, 0, 0, 0, 10]),
        );
        let host = Ipv4Addr::new(192, 0, 2, 11);
        let mut buf = [0u8; 60];
        // Overheard: host asks for someone else. Not known: not added.
        let len = arp_request(&mut buf, old, host, Ipv4Addr::new(192, 0, 2, 254));
        n.learn_from_arp(3, &buf[..len], ours, |_| false);
        assert_eq!(n.get(3, host), None);
        // Asks us: added.
        let len = arp_request(&mut buf, old, host, us);
        n.learn_from_arp(3, &buf[..len], ours, |_| false);
        assert_eq!(n.get(3, host), Some(old));
        // Overheard again, from a new MAC (a replaced host, its gratuitous
        // ARP): a known entry follows.
        let len = arp_request(&mut buf, new, host, host);
        n.learn_from_arp(3, &buf[..len], ours, |_| false);
        assert_eq!(n.get(3, host), Some(new));
    }

    #[test]
    fn a_flood_of_new_senders_stops_at_the_cap_but_never_keeps_a_needed_neighbour_out() {
        let n = Neighbours::default();
        let us = Ipv4Addr::new(192, 0, 2, 1);
        let mut buf = [0u8; 60];
        let mac = EthernetAddress([2, 0, 0, 0, 0, 9]);
        // Requests for our address from ever new senders (10.0.0.0/8).
        for i in 0..(MAX_NEIGHBOURS as u32 + 500) {
            let len = arp_request(&mut buf, mac, Ipv4Addr::from(0x0a00_0000 + i), us);
            n.learn_from_arp(3, &buf[..len], |a| a == us, |_| false);
        }
        assert_eq!(n.len(), MAX_NEIGHBOURS);
        // A known one still follows a change.
        let first = Ipv4Addr::from(0x0a00_0000);
        let other = EthernetAddress([2, 0, 0, 0, 0, 10]);
        let len = arp_request(&mut buf, other, first, first);
        n.learn_from_arp(3, &buf[..len], |a| a == us, |_| false);
        assert_eq!(n.get(3, first), Some(other));
        // The answer for a neighbour we are resolving gets in, and so does
        // the kernel's table; the table stays at the cap.
        let gw = Ipv4Addr::new(192, 0, 2, 254);
        let len = arp_request(&mut buf, other, gw, us);
        n.learn_from_arp(3, &buf[..len], |a| a == us, |a| a == gw);
        assert_eq!(n.get(3, gw), Some(other), "resolved despite the flood");
        n.learn(3, Ipv4Addr::new(192, 0, 2, 99), other);
        assert_eq!(n.get(3, Ipv4Addr::new(192, 0, 2, 99)), Some(other));
        assert_eq!(n.len(), MAX_NEIGHBOURS);
    }
}
