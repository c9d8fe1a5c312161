//! TCP headers (RFC 9293 § 3.1, which obsoletes RFC 793).
//!
//! [`TcpPacket`] is a view over exactly one TCP segment, the payload of its
//! IP datagram: the checksum covers the whole buffer plus the IPv4
//! pseudo-header (RFC 9293 § 3.1 "Checksum"). The director rewrites ports and
//! addresses and then updates the checksum incrementally
//! ([`checksum::update_u16`], [`checksum::update_u32`]); options are passed
//! through untouched.

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::IpProtocol;
use super::{read_u16, read_u32, write_u16, write_u32};

/// Length of a header without options: "Data Offset ... The TCP header
/// (even one including options) is an integer multiple of 32 bits", minimum
/// 5 words (RFC 9293 § 3.1).
pub const HEADER_LEN: usize = 20;

/// The control bits, the low 8 of the 12 flag bits (RFC 9293 § 3.1; ECE and
/// CWR from RFC 3168 § 23.2).
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Why bytes are not a usable TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpError {
    /// The buffer is shorter than a TCP header.
    Truncated,
    /// The data offset is below 5 words or beyond the buffer.
    BadHeaderLen,
}

impl fmt::Display for TcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TcpError::Truncated => "The buffer is shorter than a TCP header.",
            TcpError::BadHeaderLen => "The data offset is below 5 words or beyond the buffer.",
        })
    }
}

impl std::error::Error for TcpError {}

/// A read/write view over a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use crate::wire::Field;

    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset (high nibble); the low nibble holds reserved bits.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// The pseudo-header length field: the segment length as 16 bits. A segment
/// inside an IPv4 datagram is at most 65515 bytes, so it always fits.
fn segment_len(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> TcpPacket<T> {
        TcpPacket { buffer }
    }

    /// Wraps a buffer and checks it with [`check_len`](Self::check_len); after
    /// `Ok` no getter panics.
    pub fn new_checked(buffer: T) -> Result<TcpPacket<T>, TcpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the header and its options:
    /// `20 <= header_len <= buffer`.
    pub fn check_len(&self) -> Result<(), TcpError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(TcpError::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN || header_len > len {
            return Err(TcpError::BadHeaderLen);
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

    /// The sequence number.
    pub fn seq_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::SEQ_NUM])
    }

    /// The acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        read_u32(&self.buffer.as_ref()[field::ACK_NUM])
    }

    /// The header length in bytes (data offset × 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The control bits; test them with the constants in [`flags`].
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// The SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// The RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// The PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// The ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// The URG flag.
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }

    /// The ECE flag (RFC 3168).
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }

    /// The CWR flag (RFC 3168).
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }

    /// The window field.
    pub fn window_len(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::WIN_SIZE])
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::URGENT])
    }

    /// The options, bytes `20..header_len`.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `header_len`, or a data offset
    /// below 5.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The data after the header and its options.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `header_len`.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// True if the checksum over the whole buffer and the pseudo-header of
    /// `src` and `dst` is correct.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = self.buffer.as_ref();
        checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, segment_len(data.len())),
            checksum::data(data),
        ]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::SRC_PORT], value);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::DST_PORT], value);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::SEQ_NUM], value);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::ACK_NUM], value);
    }

    /// Sets the header length in bytes (a multiple of 4, at most 60); the
    /// reserved bits are cleared.
    pub fn set_header_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = ((value / 4) & 0x0f) << 4;
    }

    /// Sets the control bits.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the window field.
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::WIN_SIZE], value);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::URGENT], value);
    }

    /// The options, mutable.
    ///
    /// # Panics
    /// Like [`options`](TcpPacket::options).
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The data after the header, mutable.
    ///
    /// # Panics
    /// On an unchecked buffer shorter than `header_len`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }

    /// Computes the checksum over the whole buffer and the pseudo-header of
    /// `src` and `dst`, and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let data = self.buffer.as_ref();
        let sum = checksum::combine(&[
            checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, segment_len(data.len())),
            checksum::data(data),
        ]);
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

    // 192.168.1.10:51000 -> 192.168.1.20:80 SYN, seq 0x12345678, win 64240,
    // options MSS 1460, NOP, NOP, SACK-permitted. Checksum computed by an
    // independent script.
    static SYN_BYTES: [u8; 28] = [
        0xc7, 0x38, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0xfa,
        0xf0, 0xd4, 0x8a, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02,
    ];

    static OPTION_BYTES: [u8; 8] = [0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02];

    // The same connection, PSH|ACK carrying "GET / HTTP/1.0\r\n\r\n".
    static PACKET_BYTES: [u8; 38] = [
        0xc7, 0x38, 0x00, 0x50, 0x12, 0x34, 0x56, 0x79, 0xab, 0xcd, 0xef, 0x01, 0x50, 0x18, 0x01,
        0xf6, 0x80, 0xb0, 0x00, 0x00, 0x47, 0x45, 0x54, 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50,
        0x2f, 0x31, 0x2e, 0x30, 0x0d, 0x0a, 0x0d, 0x0a,
    ];

    static PAYLOAD_BYTES: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

    #[test]
    fn test_deconstruct() {
        let packet = TcpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 51000);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x1234_5679);
        assert_eq!(packet.ack_number(), 0xabcd_ef01);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.flags(), flags::PSH | flags::ACK);
        assert!(!packet.fin());
        assert!(!packet.syn());
        assert!(!packet.rst());
        assert!(packet.psh());
        assert!(packet.ack());
        assert!(!packet.urg());
        assert!(!packet.ece());
        assert!(!packet.cwr());
        assert_eq!(packet.window_len(), 502);
        assert_eq!(packet.checksum(), 0x80b0);
        assert_eq!(packet.urgent_at(), 0);
        assert!(packet.options().is_empty());
        assert_eq!(packet.payload(), PAYLOAD_BYTES);
        assert!(packet.verify_checksum(SRC, DST));
        assert!(!packet.verify_checksum(SRC, Ipv4Addr::new(192, 168, 1, 21)));
    }

    #[test]
    fn test_deconstruct_syn() {
        let packet = TcpPacket::new_checked(&SYN_BYTES[..]).unwrap();
        assert_eq!(packet.header_len(), 28);
        assert_eq!(packet.flags(), flags::SYN);
        assert!(packet.syn());
        assert!(!packet.ack());
        assert_eq!(packet.window_len(), 64240);
        assert_eq!(packet.options(), &OPTION_BYTES[..]);
        assert!(packet.payload().is_empty());
        assert!(packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; PACKET_BYTES.len()];
        let mut packet = TcpPacket::new_unchecked(&mut bytes);
        packet.set_src_port(51000);
        packet.set_dst_port(80);
        packet.set_seq_number(0x1234_5679);
        packet.set_ack_number(0xabcd_ef01);
        packet.set_header_len(20);
        packet.set_flags(flags::PSH | flags::ACK);
        packet.set_window_len(502);
        packet.set_urgent_at(0);
        packet.set_checksum(0xa5a5);
        packet.payload_mut().copy_from_slice(PAYLOAD_BYTES);
        packet.fill_checksum(SRC, DST);
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_construct_syn() {
        let mut bytes = vec![0xa5; SYN_BYTES.len()];
        let mut packet = TcpPacket::new_unchecked(&mut bytes);
        packet.set_src_port(51000);
        packet.set_dst_port(80);
        packet.set_seq_number(0x1234_5678);
        packet.set_ack_number(0);
        packet.set_header_len(28);
        packet.set_flags(flags::SYN);
        packet.set_window_len(64240);
        packet.set_urgent_at(0);
        packet.options_mut().copy_from_slice(&OPTION_BYTES);
        packet.fill_checksum(SRC, DST);
        assert_eq!(&bytes[..], &SYN_BYTES[..]);
    }

    #[test]
    fn test_reject_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                TcpPacket::new_checked(&PACKET_BYTES[..len]).unwrap_err(),
                TcpError::Truncated
            );
        }
    }

    #[test]
    fn test_reject_bad_header_len() {
        // Data offset 7 (28 bytes) with only 27 bytes present.
        assert_eq!(
            TcpPacket::new_checked(&SYN_BYTES[..27]).unwrap_err(),
            TcpError::BadHeaderLen
        );
        let mut bytes = PACKET_BYTES;
        bytes[12] = 0x40;
        assert_eq!(
            TcpPacket::new_checked(&bytes[..]).unwrap_err(),
            TcpError::BadHeaderLen
        );
        bytes[12] = 0xf0;
        assert_eq!(
            TcpPacket::new_checked(&bytes[..]).unwrap_err(),
            TcpError::BadHeaderLen
        );
    }

    #[test]
    fn test_bad_checksum() {
        let mut bytes = PACKET_BYTES;
        bytes[25] ^= 0x01;
        assert!(!TcpPacket::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum(SRC, DST));
    }

    #[test]
    fn test_flag_bits() {
        let mut bytes = PACKET_BYTES;
        let mut packet = TcpPacket::new_unchecked(&mut bytes[..]);
        let all = [
            flags::FIN,
            flags::SYN,
            flags::RST,
            flags::PSH,
            flags::ACK,
            flags::URG,
            flags::ECE,
            flags::CWR,
        ];
        for (i, &flag) in all.iter().enumerate() {
            packet.set_flags(flag);
            let got = [
                packet.fin(),
                packet.syn(),
                packet.rst(),
                packet.psh(),
                packet.ack(),
                packet.urg(),
                packet.ece(),
                packet.cwr(),
            ];
            for (j, &bit) in got.iter().enumerate() {
                assert_eq!(bit, i == j);
            }
        }
        // Flags leave the data offset alone.
        assert_eq!(packet.header_len(), 20);
    }
}
