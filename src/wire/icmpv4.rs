//! ICMP for IPv4 (RFC 792).
//!
//! [`Icmpv4Packet`] is a view over the payload of an IP datagram: type, code,
//! checksum, the 4-byte "rest of header" (echo identifier and sequence
//! number, or the next-hop MTU of RFC 1191 § 4), and the data. For error
//! messages the data begins with the offending datagram's IP header and at
//! least 8 bytes of its payload (RFC 792, "Internet Header + 64 bits of
//! Original Data Datagram"), which is how the director maps an error back to
//! a connection.

use core::fmt;

use super::checksum;
use super::{read_u16, write_u16, write_u32};

/// Type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;

/// The message types rvs knows (RFC 792).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Message {
    /// 0.
    EchoReply,
    /// 3.
    DstUnreachable,
    /// 5.
    Redirect,
    /// 8.
    EchoRequest,
    /// 11.
    TimeExceeded,
    /// 12.
    ParamProblem,
    /// Any other type.
    Unknown(u8),
}

impl From<u8> for Icmpv4Message {
    fn from(value: u8) -> Self {
        match value {
            0 => Icmpv4Message::EchoReply,
            3 => Icmpv4Message::DstUnreachable,
            5 => Icmpv4Message::Redirect,
            8 => Icmpv4Message::EchoRequest,
            11 => Icmpv4Message::TimeExceeded,
            12 => Icmpv4Message::ParamProblem,
            other => Icmpv4Message::Unknown(other),
        }
    }
}

impl From<Icmpv4Message> for u8 {
    fn from(value: Icmpv4Message) -> Self {
        match value {
            Icmpv4Message::EchoReply => 0,
            Icmpv4Message::DstUnreachable => 3,
            Icmpv4Message::Redirect => 5,
            Icmpv4Message::EchoRequest => 8,
            Icmpv4Message::TimeExceeded => 11,
            Icmpv4Message::ParamProblem => 12,
            Icmpv4Message::Unknown(other) => other,
        }
    }
}

impl Icmpv4Message {
    /// True for the error messages, which quote an offending datagram:
    /// destination unreachable, redirect, time exceeded, parameter problem.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Icmpv4Message::DstUnreachable
                | Icmpv4Message::Redirect
                | Icmpv4Message::TimeExceeded
                | Icmpv4Message::ParamProblem
        )
    }
}

/// Codes of destination unreachable (RFC 792; 6..=12 from RFC 1122
/// § 3.2.2.1; 13..=15 from RFC 1812 § 5.2.7.1).
pub mod dst_unreachable {
    pub const NET: u8 = 0;
    pub const HOST: u8 = 1;
    pub const PROTOCOL: u8 = 2;
    pub const PORT: u8 = 3;
    /// "Fragmentation needed and DF set"; `next_mtu` holds the MTU
    /// (RFC 1191 § 4).
    pub const FRAG_NEEDED: u8 = 4;
    pub const SRC_ROUTE_FAILED: u8 = 5;
    pub const DST_NET_UNKNOWN: u8 = 6;
    pub const DST_HOST_UNKNOWN: u8 = 7;
    pub const SRC_HOST_ISOLATED: u8 = 8;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    pub const NET_TOS: u8 = 11;
    pub const HOST_TOS: u8 = 12;
    pub const COMM_PROHIBITED: u8 = 13;
    pub const HOST_PRECEDENCE: u8 = 14;
    pub const PRECEDENCE_CUTOFF: u8 = 15;
}

/// Codes of time exceeded (RFC 792).
pub mod time_exceeded {
    pub const TTL_EXPIRED: u8 = 0;
    pub const FRAG_EXPIRED: u8 = 1;
}

/// Why bytes are not a usable ICMP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Error {
    /// The buffer is shorter than an ICMP header.
    Truncated,
}

impl fmt::Display for Icmpv4Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Icmpv4Error::Truncated => "The buffer is shorter than an ICMP header.",
        })
    }
}

impl std::error::Error for Icmpv4Error {}

/// A read/write view over an ICMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use crate::wire::Field;

    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
    pub const ECHO_IDENT: Field = 4..6;
    pub const ECHO_SEQNO: Field = 6..8;
    /// RFC 1191 § 4: the low-order 16 bits of the rest of header.
    pub const NEXT_MTU: Field = 6..8;
    pub const DATA: usize = 8;
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; getters may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Icmpv4Packet<T> {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer and checks it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Icmpv4Packet<T>, Icmpv4Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), Icmpv4Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Icmpv4Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The message type.
    pub fn msg_type(&self) -> Icmpv4Message {
        Icmpv4Message::from(self.buffer.as_ref()[field::TYPE])
    }

    /// The message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::CHECKSUM])
    }

    /// The identifier of an echo request or reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_IDENT])
    }

    /// The sequence number of an echo request or reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::ECHO_SEQNO])
    }

    /// The next-hop MTU of a "fragmentation needed" message (RFC 1191 § 4).
    pub fn next_mtu(&self) -> u16 {
        read_u16(&self.buffer.as_ref()[field::NEXT_MTU])
    }

    /// Everything after the 8-byte header; for errors, the quoted datagram.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA..]
    }

    /// True for an error message (see [`Icmpv4Message::is_error`]).
    pub fn is_error(&self) -> bool {
        self.msg_type().is_error()
    }

    /// True if the checksum over the whole buffer is correct.
    pub fn verify_checksum(&self) -> bool {
        checksum::data(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, value: Icmpv4Message) {
        self.buffer.as_mut()[field::TYPE] = u8::from(value);
    }

    /// Sets the message code.
    pub fn set_msg_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::CHECKSUM], value);
    }

    /// Sets bytes 4..8, the "rest of header" (0 where RFC 792 says unused).
    pub fn set_rest_of_header(&mut self, value: u32) {
        write_u32(&mut self.buffer.as_mut()[field::REST], value);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_IDENT], value);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::ECHO_SEQNO], value);
    }

    /// Sets the next-hop MTU (bytes 6..8; bytes 4..6 are left alone).
    pub fn set_next_mtu(&mut self, value: u16) {
        write_u16(&mut self.buffer.as_mut()[field::NEXT_MTU], value);
    }

    /// Everything after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA..]
    }

    /// Computes the checksum over the whole buffer and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::data(self.buffer.as_ref());
        self.set_checksum(!sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, ident 0x1234, seq 1, data "abcdefgh"; checksum computed
    // by an independent script.
    static ECHO_BYTES: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    static ECHO_DATA: &[u8] = b"abcdefgh";

    // Fragmentation needed, MTU 1400, quoting a 192.168.1.10 -> 192.168.1.20
    // IP header (its checksum valid) and the first 8 bytes of its TCP header (RFC 792 / RFC 1191 layout).
    static FRAG_NEEDED_BYTES: [u8; 36] = [
        0x03, 0x04, 0xc7, 0x4d, 0x00, 0x00, 0x05, 0x78, 0x45, 0x00, 0x05, 0xdc, 0x1c, 0x46, 0x40,
        0x00, 0x40, 0x06, 0x95, 0x67, 0xc0, 0xa8, 0x01, 0x0a, 0xc0, 0xa8, 0x01, 0x14, 0xc7, 0x38,
        0x00, 0x50, 0x12, 0x34, 0x56, 0x79,
    ];

    #[test]
    fn test_deconstruct() {
        let packet = Icmpv4Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::EchoRequest);
        assert_eq!(packet.msg_code(), 0);
        assert_eq!(packet.checksum(), 0x5435);
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), ECHO_DATA);
        assert!(!packet.is_error());
        assert!(packet.verify_checksum());
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 16];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes);
        packet.set_msg_type(Icmpv4Message::EchoRequest);
        packet.set_msg_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(ECHO_DATA);
        packet.fill_checksum();
        assert_eq!(&bytes[..], &ECHO_BYTES[..]);
    }

    #[test]
    fn test_frag_needed() {
        let packet = Icmpv4Packet::new_checked(&FRAG_NEEDED_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Icmpv4Message::DstUnreachable);
        assert_eq!(packet.msg_code(), dst_unreachable::FRAG_NEEDED);
        assert_eq!(packet.next_mtu(), 1400);
        assert!(packet.is_error());
        assert!(packet.verify_checksum());
        assert_eq!(packet.data(), &FRAG_NEEDED_BYTES[8..]);

        let mut bytes = vec![0xa5; FRAG_NEEDED_BYTES.len()];
        let mut packet = Icmpv4Packet::new_unchecked(&mut bytes);
        packet.set_msg_type(Icmpv4Message::DstUnreachable);
        packet.set_msg_code(dst_unreachable::FRAG_NEEDED);
        packet.set_rest_of_header(0);
        packet.set_next_mtu(1400);
        packet.data_mut().copy_from_slice(&FRAG_NEEDED_BYTES[8..]);
        packet.fill_checksum();
        assert_eq!(&bytes[..], &FRAG_NEEDED_BYTES[..]);
    }

    #[test]
    fn test_reject_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Icmpv4Packet::new_checked(&ECHO_BYTES[..len]).unwrap_err(),
                Icmpv4Error::Truncated
            );
        }
        assert!(Icmpv4Packet::new_checked(&ECHO_BYTES[..8])
            .unwrap()
            .data()
            .is_empty());
    }

    #[test]
    fn test_bad_checksum() {
        let mut bytes = ECHO_BYTES;
        bytes[9] ^= 0x40;
        assert!(!Icmpv4Packet::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn test_message_round_trip() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(Icmpv4Message::from(n)), n);
        }
        for (msg, error) in [
            (Icmpv4Message::EchoReply, false),
            (Icmpv4Message::DstUnreachable, true),
            (Icmpv4Message::Redirect, true),
            (Icmpv4Message::EchoRequest, false),
            (Icmpv4Message::TimeExceeded, true),
            (Icmpv4Message::ParamProblem, true),
            (Icmpv4Message::Unknown(13), false),
        ] {
            assert_eq!(msg.is_error(), error, "{msg:?}");
        }
    }
}
