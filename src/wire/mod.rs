//! The `wire` module deals with the packet *representation*: typed,
//! zero-copy views over byte buffers and the checksums that go with them.
//!
//! Rules of this layer: no I/O, no allocation, no panics on bytes from the
//! network. Every view has `new_checked` (= `new_unchecked` + `check_len`);
//! after a successful `new_checked` no getter panics.

pub mod arp;
pub mod checksum;
pub mod ethernet;
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
