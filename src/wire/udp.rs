//! UDP headers (RFC 768).
//!
//! [`UdpPacket`] is a view over the payload of an IP datagram. The datagram
//! ends at the `len` field, which may be shorter than the IP payload; the
//! checksum covers bytes `0..len` and the IPv4 pseudo-header. A checksum
//! field of 0 means "no checksum" (RFC 768: "An all zero transmitted
//! checksum value means that the transmitter generated no checksum"), and a
//! computed 0 is sent as `0xFFFF`.

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{read_u16, write_u16};

/// The header: source port, destination port, length, checksum.
pub const HEADER_LEN: usize = 8;

/// Why bytes are not a usable UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpError {
    /// The buffer is shorter than a UDP header.
    Truncated,
    /// The length field is below 8 or beyond the buffer.
    BadLength,
}

impl fmt::Display for UdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpError::Truncated => "The buffer is shorter than a UDP header.",
            UdpError::BadLength => "The length field is below 8 or beyond the buffer.",
        })
    }
}

impl std::error::Error for UdpError {}

/// A read/write view over a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> UdpPacket<T> {
        UdpPacket { buffer }
    }

    /// Wraps a buffer and checks it with [`check_len`](Self::check_len); after
    /// `Ok` no getter panics.
    pub fn new_checked(buffer: T) -> Result<UdpPacket<T>, UdpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and `8 <= len <= buffer`.
    pub fn check_len(&self) -> Result<(), UdpError> {
        let buffer_len = self.buffer.as_ref().len();
        if buffer_len < HEADER_LEN {
            return Err(UdpError::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN || len > buffer_len {
            return Err(UdpError::BadLength);
        }
        Ok(())
    }

    /// Returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::SRC_PORT])
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::DST_PORT])
    }

    /// The length field: header plus data, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The checksum field (0: none).
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The data, bytes `8..len`.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `len`, or `len` below 8.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True if the checksum field is 0 (none) or correct over bytes `0..len`
    /// and the pseudo-header of `src` and `dst`.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `len`.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let len = self.len();
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, len),
            checksum::data(&self.buffer.as_ref()[..usize::from(len)]),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// The data, mutable: bytes `8..len`.
    ///
    /// # Panics
    /// Like [`payload`](UdpPacket::payload).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// Computes the checksum over bytes `0..len` and the pseudo-header of
    /// `src` and `dst`, and stores it (`0xFFFF` if it computes to 0).
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `len`.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.len();
        let sum = checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::Udp, len),
            checksum::data(&self.buffer.as_ref()[..usize::from(len)]),
        ]);
        self.set_checksum(checksum::udp_nonzero(!sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

    // 192.168.1.10:40000 -> 192.168.1.20:53, "hello rvs\n"; checksum computed
    // by an independent script.
    static PACKET_BYTES: [u8; 18] = [
        0x9c, 0x40, 0x00, 0x35, 0x00, 0x12, 0xb6, 0x72, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x72,
        0x76, 0x73, 0x0a,
    ];

    static PAYLOAD_BYTES: &[u8] = b"hello rvs\n";

    #[test]
    fn test_deconstruct() {
        let packet = UdpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 40000);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 18);
        assert_eq!(packet.checksum(), 0xb672);
        assert_eq!(packet.payload(), PAYLOAD_BYTES);
        assert!(packet.verify_checksum(SRC, DST));
        assert!(!packet.verify_checksum(DST, DST));
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 18];
        let mut packet = UdpPacket::new_unchecked(&mut bytes);
        packet.set_src_port(40000);
        packet.set_dst_port(53);
        packet.set_len(18);
        packet.set_checksum(0xa5a5);
        packet.payload_mut().copy_from_slice(PAYLOAD_BYTES);
        packet.fill_checksum(SRC, DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_trailing_bytes_excluded() {
        // An IP payload longer than the UDP length: the extra byte is not
        // data and not covered by the checksum.
        let mut bytes = [0xeeu8; 19];
        bytes[..18].copy_from_slice(&PACKET_BYTES);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), PAYLOAD_BYTES);
        assert!(packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_zero_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[6..8].copy_from_slice(&[0, 0]);
        let packet = UdpPacket::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_computed_zero_is_sent_as_ffff() {
        // Choose the last two payload bytes so that the sum is 0xFFFF.
        let mut bytes = PACKET_BYTES;
        bytes[16..18].copy_from_slice(&[0, 0]);
        let mut packet = UdpPacket::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(SRC, DST);
        let fix = packet.checksum();
        packet.payload_mut()[8..10].copy_from_slice(&fix.to_be_bytes());
        packet.fill_checksum(SRC, DST);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_reject_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                UdpPacket::new_checked(&PACKET_BYTES[..len]).unwrap_err(),
                UdpError::Truncated
            );
        }
    }

    #[test]
    fn test_reject_bad_length() {
        assert_eq!(
            UdpPacket::new_checked(&PACKET_BYTES[..17]).unwrap_err(),
            UdpError::BadLength
        );
        let mut bytes = PACKET_BYTES;
        bytes[4..6].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            UdpPacket::new_checked(&bytes[..]).unwrap_err(),
            UdpError::BadLength
        );
    }
}
