//! IPv4 headers (RFC 791).
//!
//! [`Ipv4Packet`] is a view over an IPv4 datagram: the header, its options,
//! and the payload up to `total_len`. Frames may carry link-layer padding
//! past `total_len` (Ethernet pads to 60 bytes); [`Ipv4Packet::payload`] stops
//! at `total_len` so the padding never reaches the transport layer.
//!
//! [`Ipv4Repr`] is the high-level form of a header without options and
//! without fragmentation, as the director emits it.

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::{read_u16, write_u16};

/// The minimum datagram every host must accept, RFC 791 § 3.1 ("Total
/// Length"): "All hosts must be prepared to accept datagrams of up to 576
/// octets (whether they arrive whole or in fragments)."
pub const MIN_MTU: usize = 576;

/// Length of a header without options: RFC 791 § 3.1, "the minimum value for
/// a correct header is 5" 32-bit words.
pub const HEADER_LEN: usize = 20;

/// Longest header: the IHL field has 4 bits, 15 words of 4 bytes.
pub const MAX_HEADER_LEN: usize = 60;

/// The IP protocol numbers rvs knows (IANA "Assigned Internet Protocol
/// Numbers", RFC 790 and its successors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// ICMP, 1 (RFC 792).
    Icmp,
    /// IP in IP, 4 (RFC 2003); the LVS "tunnel" forwarding method.
    IpIp,
    /// TCP, 6 (RFC 9293).
    Tcp,
    /// UDP, 17 (RFC 768).
    Udp,
    /// Any other protocol number.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(value: u8) -> Self {
        match value {
            1 => IpProtocol::Icmp,
            4 => IpProtocol::IpIp,
            6 => IpProtocol::Tcp,
            17 => IpProtocol::Udp,
            other => IpProtocol::Unknown(other),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(value: IpProtocol) -> Self {
        match value {
            IpProtocol::Icmp => 1,
            IpProtocol::IpIp => 4,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(other) => other,
        }
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpProtocol::Icmp => f.write_str("icmp"),
            IpProtocol::IpIp => f.write_str("ipip"),
            IpProtocol::Tcp => f.write_str("tcp"),
            IpProtocol::Udp => f.write_str("udp"),
            IpProtocol::Unknown(n) => write!(f, "proto {n}"),
        }
    }
}

/// Why bytes are not a usable IPv4 datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ipv4Error {
    /// The buffer is shorter than an IPv4 header.
    Truncated,
    /// The version field is not 4.
    BadVersion,
    /// The header length is below 20 bytes or beyond the buffer.
    BadHeaderLen,
    /// The total length is below the header length or beyond the buffer.
    BadTotalLen,
    /// The header checksum is invalid.
    BadChecksum,
    /// The datagram is a fragment.
    Fragmented,
}

impl fmt::Display for Ipv4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ipv4Error::Truncated => "The buffer is shorter than an IPv4 header.",
            Ipv4Error::BadVersion => "The version field is not 4.",
            Ipv4Error::BadHeaderLen => "The header length is below 20 bytes or beyond the buffer.",
            Ipv4Error::BadTotalLen => {
                "The total length is below the header length or beyond the buffer."
            }
            Ipv4Error::BadChecksum => "The header checksum is invalid.",
            Ipv4Error::Fragmented => "The datagram is a fragment.",
        })
    }
}

impl std::error::Error for Ipv4Error {}

/// A read/write view over an IPv4 datagram (RFC 791 § 3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use crate::wire::Field;

    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// RFC 791 § 3.1 "Flags": bit 1 is DF, bit 2 is MF; the low 13 bits are the
/// fragment offset in units of 8 octets.
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FLAGS_MASK: u16 = 0xe000;
const OFFSET_MASK: u16 = 0x1fff;

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; getters may panic on short or
    /// inconsistent buffers. Use for buffers this program writes.
    pub const fn new_unchecked(buffer: T) -> Ipv4Packet<T> {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer and checks it with [`check_len`](Self::check_len); after
    /// `Ok` no getter panics.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Ipv4Packet<T>, Ipv4Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole IPv4 header and `total_len` bytes:
    /// version 4, `20 <= header_len <= buffer`, `header_len <= total_len <=
    /// buffer`. The checksum is not checked (see
    /// [`verify_checksum`](Self::verify_checksum)).
    #[inline]
    pub fn check_len(&self) -> Result<(), Ipv4Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Ipv4Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Ipv4Error::BadVersion);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN || header_len > len {
            return Err(Ipv4Error::BadHeaderLen);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len || total_len > len {
            return Err(Ipv4Error::BadTotalLen);
        }
        Ok(())
    }

    /// Returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version field (4 for IPv4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The DSCP and ECN bits (the former type-of-service byte).
    pub fn dscp_ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN]
    }

    /// The total length of the datagram in bytes, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::LENGTH])
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::IDENT])
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_DF != 0
    }

    /// The "more fragments" flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(&self.buffer.as_ref()[field::FLG_OFF]) & OFFSET_MASK) << 3
    }

    /// True if the datagram is a fragment: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// The time-to-live field.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// True if the header checksum, over `header_len` bytes, is correct
    /// (RFC 791 § 3.1 "Header Checksum", RFC 1071).
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `header_len`.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let header_len = usize::from(self.header_len());
        let header = &self.buffer.as_ref()[..header_len];
        let sum = match <&[u8; 20]>::try_from(header) {
            Ok(h) => checksum::header20(h),
            Err(_) => checksum::data(header),
        };
        sum == 0xffff
    }

    /// The payload: bytes `header_len..total_len`, so link-layer padding past
    /// `total_len` is excluded.
    ///
    /// # Panics
    /// On an unchecked buffer that is shorter than `total_len` or whose
    /// `total_len` is below `header_len`.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version field.
    pub fn set_version(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (value << 4);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60).
    pub fn set_header_len(&mut self, value: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((value / 4) & 0x0f);
    }

    /// Sets the DSCP and ECN bits.
    pub fn set_dscp_ecn(&mut self, value: u8) {
        self.buffer.as_mut()[field::DSCP_ECN] = value;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::LENGTH], value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::IDENT], value);
    }

    fn set_flg_off(&mut self, mask: u16, bits: u16) {
        let raw = read_u16(&self.buffer.as_ref()[field::FLG_OFF]);
        write_u16(
            &mut self.buffer.as_mut()[field::FLG_OFF],
            (raw & !mask) | (bits & mask),
        );
    }

    /// Clears the three flag bits (reserved, DF, MF), keeping the offset.
    pub fn clear_flags(&mut self) {
        self.set_flg_off(FLAGS_MASK, 0);
    }

    /// Sets or clears the "don't fragment" flag.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flg_off(FLAG_DF, if value { FLAG_DF } else { 0 });
    }

    /// Sets or clears the "more fragments" flag.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flg_off(FLAG_MF, if value { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset in bytes (rounded down to a multiple of 8).
    pub fn set_frag_offset(&mut self, value: u16) {
        self.set_flg_off(OFFSET_MASK, value >> 3);
    }

    /// Sets the time-to-live field.
    pub fn set_hop_limit(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    /// Sets the protocol of the payload.
    pub fn set_next_header(&mut self, value: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = u8::from(value);
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&value.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&value.octets());
    }

    /// Computes the header checksum over `header_len` bytes and stores it.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `header_len`.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = usize::from(self.header_len());
        let sum = checksum::data(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(!sum);
    }

    /// The payload, mutable: bytes `header_len..total_len`.
    ///
    /// # Panics
    /// Like [`payload`](Ipv4Packet::payload).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// A high-level IPv4 header: no options, not a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub next_header: IpProtocol,
    /// Bytes after the header, up to `total_len`.
    pub payload_len: usize,
    pub hop_limit: u8,
    pub dont_frag: bool,
}

impl Ipv4Repr {
    /// Parses a datagram: checks lengths and the header checksum, and
    /// rejects fragments (their payload is not a whole transport segment).
    /// Options are accepted and skipped: `payload_len` counts from
    /// `header_len`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Ipv4Packet<T>) -> Result<Ipv4Repr, Ipv4Error> {
        packet.check_len()?;
        if !packet.verify_checksum() {
            return Err(Ipv4Error::BadChecksum);
        }
        if packet.is_fragment() {
            return Err(Ipv4Error::Fragmented);
        }
        Ok(Ipv4Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            next_header: packet.next_header(),
            payload_len: usize::from(packet.total_len()) - usize::from(packet.header_len()),
            hop_limit: packet.hop_limit(),
            dont_frag: packet.dont_frag(),
        })
    }

    /// The length of the header [`emit`](Self::emit) writes: 20.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes a 20-byte header (DSCP/ECN 0, ident 0, offset 0) and its
    /// checksum. The payload is not touched.
    ///
    /// `total_len` is `20 + payload_len`, saturated at 65535: keep
    /// `payload_len <= 65515` (true of every parsed `Ipv4Repr`).
    ///
    /// # Panics
    /// If the buffer is shorter than 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Ipv4Packet<T>) {
        let total_len = u16::try_from(HEADER_LEN + self.payload_len).unwrap_or(u16::MAX);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp_ecn(0);
        packet.set_total_len(total_len);
        packet.set_ident(0);
        packet.clear_flags();
        packet.set_frag_offset(0);
        packet.set_dont_frag(self.dont_frag);
        packet.set_hop_limit(self.hop_limit);
        packet.set_next_header(self.next_header);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.168.1.10 -> 192.168.1.20, DF, TTL 64, ICMP echo request; checksums
    // computed by an independent script (RFC 1071 reference sum).
    static PACKET_BYTES: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, 0x9b, 0x24, 0xc0, 0xa8, 0x01,
        0x0a, 0xc0, 0xa8, 0x01, 0x14, 0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62,
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];

    static PAYLOAD_BYTES: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    // The same datagram as `Ipv4Repr::emit` writes it: ident 0.
    static REPR_PACKET_BYTES: [u8; 36] = [
        0x45, 0x00, 0x00, 0x24, 0x00, 0x00, 0x40, 0x00, 0x40, 0x01, 0xb7, 0x6a, 0xc0, 0xa8, 0x01,
        0x0a, 0xc0, 0xa8, 0x01, 0x14, 0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62,
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    ];

    fn packet_repr() -> Ipv4Repr {
        Ipv4Repr {
            src_addr: Ipv4Addr::new(192, 168, 1, 10),
            dst_addr: Ipv4Addr::new(192, 168, 1, 20),
            next_header: IpProtocol::Icmp,
            payload_len: 16,
            hop_limit: 64,
            dont_frag: true,
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Ipv4Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp_ecn(), 0);
        assert_eq!(packet.total_len(), 36);
        assert_eq!(packet.ident(), 0x1c46);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.hop_limit(), 64);
        assert_eq!(packet.next_header(), IpProtocol::Icmp);
        assert_eq!(packet.checksum(), 0x9b24);
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 1, 20));
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 36];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp_ecn(0);
        packet.set_total_len(36);
        packet.set_ident(0x1c46);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_more_frags(false);
        packet.set_frag_offset(0);
        packet.set_hop_limit(64);
        packet.set_next_header(IpProtocol::Icmp);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 1, 10));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 1, 20));
        packet.fill_checksum();
        packet.payload_mut().copy_from_slice(&PAYLOAD_BYTES[..]);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let packet = Ipv4Packet::new_checked(&REPR_PACKET_BYTES[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(packet_repr()));
        let packet = Ipv4Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn test_emit() {
        let repr = packet_repr();
        let mut bytes = vec![0xa5; repr.buffer_len() + repr.payload_len];
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&PAYLOAD_BYTES[..]);
        assert_eq!(&bytes[..], &REPR_PACKET_BYTES[..]);
    }

    #[test]
    fn test_padding_excluded_from_payload() {
        let mut bytes = [0u8; 60];
        bytes[..36].copy_from_slice(&PACKET_BYTES[..]);
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 16);
        let mut packet = Ipv4Packet::new_checked(&mut bytes[..]).unwrap();
        assert_eq!(packet.payload_mut().len(), 16);
    }

    #[test]
    fn test_options() {
        // A header with 4 bytes of options (NOP NOP NOP EOL).
        let mut bytes = [0u8; 40];
        bytes[..20].copy_from_slice(&PACKET_BYTES[..20]);
        bytes[20..24].copy_from_slice(&[1, 1, 1, 0]);
        bytes[24..].copy_from_slice(&PAYLOAD_BYTES[..]);
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_header_len(24);
        packet.set_total_len(40);
        packet.fill_checksum();
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.payload(), &PAYLOAD_BYTES[..]);
        assert!(packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet).unwrap().payload_len, 16);
    }

    #[test]
    fn test_fragments() {
        let mut bytes = PACKET_BYTES;
        let mut packet = Ipv4Packet::new_unchecked(&mut bytes[..]);
        packet.set_more_frags(true);
        assert!(packet.is_fragment());
        assert!(packet.dont_frag());
        packet.set_more_frags(false);
        packet.set_frag_offset(1480);
        assert_eq!(packet.frag_offset(), 1480);
        assert!(packet.is_fragment());
        assert!(packet.dont_frag());
        packet.fill_checksum();
        assert_eq!(Ipv4Repr::parse(&packet), Err(Ipv4Error::Fragmented));
        packet.clear_flags();
        assert_eq!(packet.frag_offset(), 1480);
        assert!(!packet.dont_frag());
    }

    #[test]
    fn test_reject_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Ipv4Packet::new_checked(&PACKET_BYTES[..len]).unwrap_err(),
                Ipv4Error::Truncated
            );
        }
        // The total length says 36; 35 bytes are there.
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET_BYTES[..35]).unwrap_err(),
            Ipv4Error::BadTotalLen
        );
    }

    #[test]
    fn test_reject_bad_version() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Ipv4Error::BadVersion
        );
    }

    #[test]
    fn test_reject_bad_header_len() {
        let mut bytes = PACKET_BYTES;
        bytes[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Ipv4Error::BadHeaderLen
        );
        // IHL 15 = 60 bytes, beyond the 36-byte buffer.
        bytes[0] = 0x4f;
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Ipv4Error::BadHeaderLen
        );
    }

    #[test]
    fn test_reject_bad_total_len() {
        let mut bytes = PACKET_BYTES;
        bytes[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Ipv4Error::BadTotalLen
        );
        bytes[2..4].copy_from_slice(&37u16.to_be_bytes());
        assert_eq!(
            Ipv4Packet::new_checked(&bytes[..]).unwrap_err(),
            Ipv4Error::BadTotalLen
        );
    }

    #[test]
    fn test_reject_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[8] = 63;
        let packet = Ipv4Packet::new_checked(&bytes[..]).unwrap();
        assert!(!packet.verify_checksum());
        assert_eq!(Ipv4Repr::parse(&packet), Err(Ipv4Error::BadChecksum));
    }

    #[test]
    fn test_protocol_round_trip() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(n)), n);
        }
        assert_eq!(IpProtocol::from(4), IpProtocol::IpIp);
    }

    #[test]
    fn test_error_display_is_doc() {
        assert_eq!(
            Ipv4Error::BadChecksum.to_string(),
            "The header checksum is invalid."
        );
    }
}
