//! The `wire` module deals with the packet *representation*: typed,
//! zero-copy views over byte buffers and the checksums that go with them.
//!
//! Rules of this layer: no I/O, no allocation, no panics on bytes from the
//! network. Every view has `new_checked` (= `new_unchecked` + `check_len`);
//! after a successful `new_checked` no getter panics.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod gso;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use self::arp::{ArpError, ArpHardware, ArpOperation, ArpPacket, ArpRepr};
pub use self::ethernet::{EtherType, EthernetAddress, EthernetError, EthernetFrame, EthernetRepr};
pub use self::icmpv4::{Icmpv4Error, Icmpv4Message, Icmpv4Packet};
pub use self::ipv4::{IpProtocol, Ipv4Error, Ipv4Packet, Ipv4Repr};
pub use self::tcp::{TcpError, TcpPacket};
pub use self::udp::{UdpError, UdpPacket};

/// A fixed byte range of a header, as used by each view's private `mod field`.
type Field = core::ops::Range<usize>;

/// Reads a big-endian `u16` from a 2-byte field.
///
/// # Panics
/// If `bytes` is shorter than 2; callers pass `&data[field::X]` of a
/// length-checked buffer.
fn read_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

/// Reads a big-endian `u32` from a 4-byte field (panics like [`read_u16`]).
fn read_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Writes a big-endian `u16` into a 2-byte field (panics like [`read_u16`]).
fn write_u16(bytes: &mut [u8], value: u16) {
    bytes[..2].copy_from_slice(&value.to_be_bytes());
}

/// Writes a big-endian `u32` into a 4-byte field (panics like [`read_u16`]).
fn write_u32(bytes: &mut [u8], value: u32) {
    bytes[..4].copy_from_slice(&value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        /// The layer's promise: after `new_checked` succeeds, no getter panics,
        /// whatever the bytes.
        #[test]
        fn checked_views_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let a = Ipv4Addr::new(10, 0, 0, 1);
            if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
                let _ = EthernetRepr::parse(&f);
            }
            if let Ok(p) = ArpPacket::new_checked(&bytes[..]) {
                let _ = (p.hardware_type(), p.protocol_type(), p.hardware_len(), p.protocol_len());
                let _ = (p.operation(), p.source_hardware_addr(), p.source_protocol_addr());
                let _ = (p.target_hardware_addr(), p.target_protocol_addr(), ArpRepr::parse(&p));
            }
            let mut ip_bytes = bytes.clone();
            if let Some(b) = ip_bytes.first_mut() {
                // Give the IPv4 parser a fair chance past the version check.
                *b = 0x40 | (*b & 0x0f);
            }
            if let Ok(p) = Ipv4Packet::new_checked(&ip_bytes[..]) {
                let _ = (p.version(), p.header_len(), p.dscp_ecn(), p.total_len(), p.ident());
                let _ = (p.dont_frag(), p.more_frags(), p.frag_offset(), p.is_fragment());
                let _ = (p.hop_limit(), p.next_header(), p.checksum(), p.src_addr(), p.dst_addr());
                let _ = (p.verify_checksum(), p.payload().len(), Ipv4Repr::parse(&p));
            }
            if let Ok(p) = TcpPacket::new_checked(&bytes[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.header_len());
                let _ = (p.flags(), p.fin(), p.syn(), p.rst(), p.psh(), p.ack(), p.urg());
                let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options().len());
                let _ = (p.payload().len(), p.verify_checksum(a, a));
            }
            if let Ok(p) = UdpPacket::new_checked(&bytes[..]) {
                let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.payload().len());
                let _ = p.verify_checksum(a, a);
            }
            if let Ok(p) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = (p.msg_type(), p.msg_code(), p.checksum(), p.echo_ident(), p.echo_seq_no());
                let _ = (p.next_mtu(), p.data().len(), p.is_error(), p.verify_checksum());
            }
        }
    }
    proptest! {
        /// The round-trip and checksum invariants the cargo-fuzz parser
        /// targets (`fuzz/fuzz_targets/*.rs`) assert, on every test run.
        #[test]
        fn parsed_headers_round_trip_and_filled_checksums_verify(
            bytes in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let (a, b) = (Ipv4Addr::new(198, 51, 100, 2), Ipv4Addr::new(203, 0, 113, 10));
            if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
                if let Ok(repr) = EthernetRepr::parse(&f) {
                    let mut out = vec![0xa5u8; bytes.len()];
                    repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
                    prop_assert_eq!(&out[..14], &bytes[..14]);
                }
            }
            let mut arp = bytes.clone();
            if arp.len() >= 8 {
                // Ethernet/IPv4 sizes, so parse gets past its first checks.
                arp[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            if let Ok(p) = ArpPacket::new_checked(&arp[..]) {
                if let Ok(repr) = ArpRepr::parse(&p) {
                    let mut out = vec![0xa5u8; repr.buffer_len()];
                    repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
                    let again = ArpPacket::new_checked(&out[..]);
                    prop_assert!(again.is_ok());
                    prop_assert_eq!(ArpRepr::parse(&again.unwrap()).ok(), Some(repr));
                }
            }
            let mut ip = bytes.clone();
            if let Some(b0) = ip.first_mut() {
                *b0 = 0x40 | (*b0 & 0x0f);
            }
            if Ipv4Packet::new_checked(&ip[..]).is_ok() {
                let p = Ipv4Packet::new_checked(&ip[..]).unwrap();
                prop_assert!(usize::from(p.header_len()) >= 20);
                prop_assert!(p.payload().len() + usize::from(p.header_len()) <= ip.len());
                Ipv4Packet::new_unchecked(&mut ip[..]).fill_checksum();
                prop_assert!(Ipv4Packet::new_checked(&ip[..]).unwrap().verify_checksum());
            }
            let mut t = bytes.clone();
            if TcpPacket::new_checked(&t[..]).is_ok() {
                TcpPacket::new_unchecked(&mut t[..]).fill_checksum(a, b);
                prop_assert!(TcpPacket::new_checked(&t[..]).unwrap().verify_checksum(a, b));
            }
            if let Ok(p) = UdpPacket::new_checked(&bytes[..]) {
                prop_assert!(p.payload().len() + 8 <= bytes.len());
            }
            let mut icmp = bytes.clone();
            if Icmpv4Packet::new_checked(&icmp[..]).is_ok() {
                Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
                prop_assert!(Icmpv4Packet::new_checked(&icmp[..]).unwrap().verify_checksum());
            }
        }
    }
}
