//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! [`ArpPacket`] reads the fixed Ethernet/IPv4 layout (28 bytes: hardware
//! length 6, protocol length 4); [`ArpRepr::parse`] rejects anything else, so
//! a packet for another hardware or protocol never reaches the neighbour
//! table.

use core::fmt;
use std::net::Ipv4Addr;

use super::ethernet::{EtherType, EthernetAddress};
use super::{read_u16, write_u16};

/// Length of an Ethernet/IPv4 ARP packet: 8 bytes of fixed header plus two
/// (6-byte MAC, 4-byte IPv4) pairs (RFC 826, "Packet format").
pub const PACKET_LEN: usize = 28;

/// The hardware type (`ar$hrd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpHardware {
    /// 1: Ethernet (10 Mb), as assigned in RFC 826 and the IANA registry.
    Ethernet,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for ArpHardware {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpHardware::Ethernet,
            other => ArpHardware::Unknown(other),
        }
    }
}

impl From<ArpHardware> for u16 {
    fn from(value: ArpHardware) -> Self {
        match value {
            ArpHardware::Ethernet => 1,
            ArpHardware::Unknown(other) => other,
        }
    }
}

/// The opcode (`ar$op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1: `ares_op$REQUEST`.
    Request,
    /// 2: `ares_op$REPLY`.
    Reply,
    /// Any other value.
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(value: u16) -> Self {
        match value {
            1 => ArpOperation::Request,
            2 => ArpOperation::Reply,
            other => ArpOperation::Unknown(other),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(value: ArpOperation) -> Self {
        match value {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(other) => other,
        }
    }
}

/// Why bytes are not a usable ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpError {
    /// The buffer is shorter than an Ethernet/IPv4 ARP packet.
    Truncated,
    /// The packet is not for Ethernet hardware and IPv4 addresses.
    Unsupported,
}

impl fmt::Display for ArpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArpError::Truncated => "The buffer is shorter than an Ethernet/IPv4 ARP packet.",
            ArpError::Unsupported => "The packet is not for Ethernet hardware and IPv4 addresses.",
        })
    }
}

impl std::error::Error for ArpError {}

/// A read/write view over an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    use crate::wire::Field;

    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

fn read_mac(bytes: &[u8]) -> EthernetAddress {
    let mut addr = [0u8; 6];
    addr.copy_from_slice(bytes);
    EthernetAddress(addr)
}

fn read_ip(bytes: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps a buffer without checking it; getters may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> ArpPacket<T> {
        ArpPacket { buffer }
    }

    /// Wraps a buffer and checks it with [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<ArpPacket<T>, ArpError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds 28 bytes. Extra bytes (Ethernet padding)
    /// are allowed and ignored.
    pub fn check_len(&self) -> Result<(), ArpError> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(ArpError::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The hardware type.
    pub fn hardware_type(&self) -> ArpHardware {
        ArpHardware::from(read_u16(&self.buffer.as_ref()[field::HTYPE]))
    }

    /// The protocol type (an EtherType).
    pub fn protocol_type(&self) -> EtherType {
        EtherType::from(read_u16(&self.buffer.as_ref()[field::PTYPE]))
    }

    /// The hardware address length.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// The protocol address length.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// The operation.
    pub fn operation(&self) -> ArpOperation {
        ArpOperation::from(read_u16(&self.buffer.as_ref()[field::OPER]))
    }

    /// The sender hardware address.
    pub fn source_hardware_addr(&self) -> EthernetAddress {
        read_mac(&self.buffer.as_ref()[field::SHA])
    }

    /// The sender protocol address.
    pub fn source_protocol_addr(&self) -> Ipv4Addr {
        read_ip(&self.buffer.as_ref()[field::SPA])
    }

    /// The target hardware address.
    pub fn target_hardware_addr(&self) -> EthernetAddress {
        read_mac(&self.buffer.as_ref()[field::THA])
    }

    /// The target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ip(&self.buffer.as_ref()[field::TPA])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    pub fn set_hardware_type(&mut self, value: ArpHardware) {
        write_u16(&mut self.buffer.as_mut()[field::HTYPE], u16::from(value));
    }

    /// Sets the protocol type.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(&mut self.buffer.as_mut()[field::PTYPE], u16::from(value));
    }

    /// Sets the hardware address length.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets the protocol address length.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the operation.
    pub fn set_operation(&mut self, value: ArpOperation) {
        write_u16(&mut self.buffer.as_mut()[field::OPER], u16::from(value));
    }

    /// Sets the sender hardware address.
    pub fn set_source_hardware_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&value.0);
    }

    /// Sets the sender protocol address.
    pub fn set_source_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&value.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hardware_addr(&mut self, value: EthernetAddress) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&value.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_protocol_addr(&mut self, value: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&value.octets());
    }
}

/// A high-level Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    pub operation: ArpOperation,
    pub source_hardware_addr: EthernetAddress,
    pub source_protocol_addr: Ipv4Addr,
    pub target_hardware_addr: EthernetAddress,
    pub target_protocol_addr: Ipv4Addr,
}

impl ArpRepr {
    /// Parses a packet, rejecting any hardware type other than Ethernet (1,
    /// length 6) and any protocol other than IPv4 (0x0800, length 4).
    /// Unknown operations are kept as `ArpOperation::Unknown`.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Result<ArpRepr, ArpError> {
        packet.check_len()?;
        if packet.hardware_type() != ArpHardware::Ethernet
            || packet.protocol_type() != EtherType::Ipv4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(ArpError::Unsupported);
        }
        Ok(ArpRepr {
            operation: packet.operation(),
            source_hardware_addr: packet.source_hardware_addr(),
            source_protocol_addr: packet.source_protocol_addr(),
            target_hardware_addr: packet.target_hardware_addr(),
            target_protocol_addr: packet.target_protocol_addr(),
        })
    }

    /// The length [`emit`](Self::emit) writes: 28.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the whole packet.
    ///
    /// # Panics
    /// If the buffer is shorter than 28 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut ArpPacket<T>) {
        packet.set_hardware_type(ArpHardware::Ethernet);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(self.operation);
        packet.set_source_hardware_addr(self.source_hardware_addr);
        packet.set_source_protocol_addr(self.source_protocol_addr);
        packet.set_target_hardware_addr(self.target_hardware_addr);
        packet.set_target_protocol_addr(self.target_protocol_addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // who-has 192.168.1.20 tell 192.168.1.10 (02:00:00:00:00:01).
    static PACKET_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc0,
        0xa8, 0x01, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x01, 0x14,
    ];

    fn packet_repr() -> ArpRepr {
        ArpRepr {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress([0x02, 0, 0, 0, 0, 0x01]),
            source_protocol_addr: Ipv4Addr::new(192, 168, 1, 10),
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: Ipv4Addr::new(192, 168, 1, 20),
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = ArpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.hardware_type(), ArpHardware::Ethernet);
        assert_eq!(packet.protocol_type(), EtherType::Ipv4);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), ArpOperation::Request);
        assert_eq!(
            packet.source_hardware_addr(),
            EthernetAddress([0x02, 0, 0, 0, 0, 0x01])
        );
        assert_eq!(
            packet.source_protocol_addr(),
            Ipv4Addr::new(192, 168, 1, 10)
        );
        assert_eq!(packet.target_hardware_addr(), EthernetAddress([0; 6]));
        assert_eq!(
            packet.target_protocol_addr(),
            Ipv4Addr::new(192, 168, 1, 20)
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = vec![0xa5; 28];
        let mut packet = ArpPacket::new_unchecked(&mut bytes);
        packet.set_hardware_type(ArpHardware::Ethernet);
        packet.set_protocol_type(EtherType::Ipv4);
        packet.set_hardware_len(6);
        packet.set_protocol_len(4);
        packet.set_operation(ArpOperation::Request);
        packet.set_source_hardware_addr(EthernetAddress([0x02, 0, 0, 0, 0, 0x01]));
        packet.set_source_protocol_addr(Ipv4Addr::new(192, 168, 1, 10));
        packet.set_target_hardware_addr(EthernetAddress([0; 6]));
        packet.set_target_protocol_addr(Ipv4Addr::new(192, 168, 1, 20));
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_parse() {
        let packet = ArpPacket::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(ArpRepr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn test_emit() {
        let repr = packet_repr();
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut bytes));
        assert_eq!(&bytes[..], &PACKET_BYTES[..]);
    }

    #[test]
    fn test_reject_truncated() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                ArpPacket::new_checked(&PACKET_BYTES[..len]).unwrap_err(),
                ArpError::Truncated
            );
        }
    }

    #[test]
    fn test_reject_unsupported() {
        for (at, value) in [(1, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = PACKET_BYTES;
            bytes[at] = value;
            let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
            assert_eq!(
                ArpRepr::parse(&packet),
                Err(ArpError::Unsupported),
                "byte {at} = {value}"
            );
        }
    }

    #[test]
    fn test_unknown_operation() {
        let mut bytes = PACKET_BYTES;
        bytes[7] = 9;
        let packet = ArpPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            ArpRepr::parse(&packet).unwrap().operation,
            ArpOperation::Unknown(9)
        );
        assert_eq!(u16::from(ArpOperation::Unknown(9)), 9);
    }
}
