//! The Internet checksum: computation (RFC 1071) and incremental update
//! (RFC 1624).
//!
//! Every `u16` here is the host-order number of a big-endian 16-bit word,
//! exactly as the views' getters return it (`Ipv4Packet::checksum`, ...).
//!
//! Two kinds of value appear:
//!
//! - a *sum*: the folded one's-complement sum of some words, not complemented
//!   ([`data`], [`combine`], [`pseudo_header_v4`]). For any input with a
//!   non-zero word it lies in `1..=0xFFFF`.
//! - a *checksum field*: the complement of a sum, as stored in a header.
//!
//! RFC 1071 § 2 (B): the sum is independent of byte order and can be taken
//! in wider words and folded afterwards, because 2^16 ≡ 1 (mod 2^16 - 1).
//! [`data`] therefore adds 64-bit big-endian words with end-around carry.
//!
//! RFC 1624 § 3 eqn. 3, `HC' = ~(~HC + ~m + m')`, updates a stored checksum
//! when a field changes from `m` to `m'`, without touching the rest of the
//! packet. Because one's-complement addition only yields 0 when every operand
//! is 0, and a stored checksum over a non-zero header is never `0xFFFF`, eqn. 3
//! gives exactly the value a full recompute would (including `0x0000`); the
//! property tests below check this against recomputes.

use std::net::Ipv4Addr;

use super::ipv4::IpProtocol;

/// Folds a 64-bit one's-complement accumulator to 16 bits with end-around
/// carry. Returns 0 only if `acc` is 0.
///
/// Two end-around-carry additions of halves, without a loop: when an
/// addition carries, the wrapped sum is at most `MAX - 1`, so adding the
/// carry back cannot carry again (Linux's `csum_fold` does the same).
#[inline]
fn fold(acc: u64) -> u16 {
    #[allow(clippy::cast_possible_truncation)]
    let (lo, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let s = lo + u32::from(c);
    #[allow(clippy::cast_possible_truncation)]
    let (lo, c) = (s as u16).overflowing_add((s >> 16) as u16);
    lo + u16::from(c)
}

/// Adds `word` to `acc` with end-around carry (one's-complement addition).
#[inline]
fn add64(acc: u64, word: u64) -> u64 {
    let (sum, carry) = acc.overflowing_add(word);
    sum + u64::from(carry)
}

/// The folded one's-complement sum of `bytes` taken as big-endian 16-bit
/// words, an odd trailing byte padded with a zero byte (RFC 1071 § 1).
/// Not complemented.
pub fn data(bytes: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        acc = add64(acc, u64::from_be_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Zero padding at the end keeps every byte at its 16-bit position.
        // Assembled in pieces of 4, 2 and 1 bytes: a copy of a variable
        // length is a call to memcpy (an IPv4 header's last 4 bytes).
        let mut word = 0u64;
        let mut pos = 0;
        if rest.len() >= 4 {
            word = u64::from(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]])) << 32;
            pos = 4;
        }
        if rest.len() - pos >= 2 {
            word |= u64::from(u16::from_be_bytes([rest[pos], rest[pos + 1]])) << (48 - 8 * pos);
            pos += 2;
        }
        if rest.len() > pos {
            word |= u64::from(rest[pos]) << (56 - 8 * pos);
        }
        acc = add64(acc, word);
    }
    fold(acc)
}

/// [`data`] of an option-less IPv4 header: five 32-bit words summed without
/// carries (five words cannot overflow 64 bits) and folded once. Every
/// packet's header is verified; the general loop costs ~3× this.
#[inline]
pub fn header20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// The IPv4 header checksum after the TTL byte (the high byte of the
/// TTL–protocol word) is decremented: the stored sum grows by 0x0100 with
/// end-around carry (RFC 1141; Linux's `ip_decrease_ttl`). A carry into
/// 0xFFFF is folded so the field never holds the negative zero that a
/// sender would not.
#[inline]
pub fn ttl_decremented(check: u16) -> u16 {
    let c = u32::from(check) + 0x0100;
    let c = c + u32::from(c >= 0xffff);
    #[allow(clippy::cast_possible_truncation)]
    let c = c as u16;
    c
}

/// The folded one's-complement sum of several sums (or words).
#[inline]
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().fold(0u64, |acc, &s| acc + u64::from(s)))
}

/// The folded sum of the IPv4 pseudo-header (RFC 793 § 3.1, RFC 768):
/// source, destination, zero + protocol, and the TCP/UDP `length`.
/// Not complemented.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: IpProtocol, length: u16) -> u16 {
    let src = u32::from(src);
    let dst = u32::from(dst);
    combine(&[
        hi16(src),
        lo16(src),
        hi16(dst),
        lo16(dst),
        u16::from(u8::from(protocol)),
        length,
    ])
}

#[inline]
fn hi16(value: u32) -> u16 {
    let b = value.to_be_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

#[inline]
fn lo16(value: u32) -> u16 {
    let b = value.to_be_bytes();
    u16::from_be_bytes([b[2], b[3]])
}

/// Updates a stored (complemented) checksum field after a 16-bit field of
/// the covered data changed from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    !combine(&[!check, !old, new])
}

/// Updates a stored (complemented) checksum field after a 32-bit field
/// (e.g. `u32::from(ipv4_addr)`) changed from `old` to `new` (RFC 1624 eqn. 3).
#[inline]
pub fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    !fold(u64::from(!check) + delta_u32(old, new))
}

/// [`update_u32`] then [`update_u16`] (a NAT rewrite of address and port
/// under a TCP checksum) with one fold: `fold(fold(a) + b)` equals
/// `fold(a + b)` (both keep the value mod 0xFFFF, and 0 only for 0).
#[inline]
pub fn update_u32_u16(check: u16, old: u32, new: u32, old16: u16, new16: u16) -> u16 {
    !fold(u64::from(!check) + delta_u32(old, new) + u64::from(!old16) + u64::from(new16))
}

/// The unfolded one's-complement change `~old + new` of a 32-bit field.
#[inline]
fn delta_u32(old: u32, new: u32) -> u64 {
    u64::from(!hi16(old)) + u64::from(!lo16(old)) + u64::from(hi16(new)) + u64::from(lo16(new))
}

/// Updates a checksum field that holds an *uncomplemented* partial sum
/// (Linux `CHECKSUM_PARTIAL`, virtio `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the field
/// holds the folded pseudo-header sum and the device adds the rest later):
/// `sum - old + new` in one's complement.
pub fn update_partial_u16(sum: u16, old: u16, new: u16) -> u16 {
    combine(&[sum, !old, new])
}

/// [`update_partial_u16`] for a 32-bit field.
#[inline]
pub fn update_partial_u32(sum: u16, old: u32, new: u32) -> u16 {
    combine(&[sum, !hi16(old), !lo16(old), hi16(new), lo16(new)])
}

/// [`update_u16`] with the UDP rules of RFC 768: a stored 0 means "no
/// checksum" and stays 0; a computed 0 is transmitted as `0xFFFF`.
#[inline]
pub fn update_udp_u16(check: u16, old: u16, new: u16) -> u16 {
    if check == 0 {
        return 0;
    }
    udp_nonzero(update_u16(check, old, new))
}

/// [`update_u32`] with the UDP rules of [`update_udp_u16`].
#[inline]
pub fn update_udp_u32(check: u16, old: u32, new: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    udp_nonzero(update_u32(check, old, new))
}

/// RFC 768: "If the computed checksum is zero, it is transmitted as all
/// ones".
#[inline]
pub(crate) fn udp_nonzero(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Ipv4Packet, TcpPacket, UdpPacket};
    use proptest::prelude::*;

    /// A plain 16-bit-at-a-time reference (RFC 1071 § 4.1 style).
    fn reference(bytes: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        u16::try_from(acc).unwrap()
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 § 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(data(&bytes), 0xddf2);
        assert_eq!(data(&bytes[..7]), reference(&bytes[..7]));
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0; 9]), 0);
        assert_eq!(data(&[0xff; 2]), 0xffff);
        assert_eq!(data(&[0xff; 16]), 0xffff);
        assert_eq!(combine(&[]), 0);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 § 4: HC = 0xDD2F, m = 0x5555 -> m' = 0x3285, HC' = 0x0000.
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_rules() {
        assert_eq!(update_udp_u16(0, 0x1234, 0x4321), 0);
        assert_eq!(update_udp_u32(0, 0x1234_5678, 0x8765_4321), 0);
        // Same case as the RFC 1624 example: the 0 result goes out as 0xFFFF.
        assert_eq!(update_udp_u16(0xdd2f, 0x5555, 0x3285), 0xffff);
        // And back: a stored 0xFFFF (computed 0) updates like 0x0000 would.
        assert_eq!(update_udp_u16(0xffff, 0x3285, 0x5555), 0xdd2f);
    }

    const IPV4_HDR: usize = 20;
    const TCP_HDR: usize = 20;
    const UDP_HDR: usize = 8;

    /// What to rewrite: (source?, address? (else port)).
    #[derive(Debug, Clone, Copy)]
    struct Rewrite {
        source: bool,
        address: bool,
        new_addr: Ipv4Addr,
        new_port: u16,
    }

    /// Which checksum to force to an edge value: 0 none, 1 the original,
    /// 2 the rewritten one.
    type Edge = u8;

    fn build(
        proto: IpProtocol,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let l4_hdr = if proto == IpProtocol::Tcp {
            TCP_HDR
        } else {
            UDP_HDR
        };
        let l4_len = l4_hdr + payload.len();
        let mut buf = vec![0u8; IPV4_HDR + l4_len];
        let repr = crate::wire::Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: proto,
            payload_len: l4_len,
            hop_limit: 64,
            dont_frag: true,
        };
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]));
        let l4 = &mut buf[IPV4_HDR..];
        if proto == IpProtocol::Tcp {
            let mut tcp = TcpPacket::new_unchecked(&mut *l4);
            tcp.set_src_port(ports.0);
            tcp.set_dst_port(ports.1);
            tcp.set_seq_number(0x0102_0304);
            tcp.set_header_len(20);
            tcp.set_flags(crate::wire::tcp::flags::ACK);
            tcp.set_window_len(0xffff);
        } else {
            let mut udp = UdpPacket::new_unchecked(&mut *l4);
            udp.set_src_port(ports.0);
            udp.set_dst_port(ports.1);
            udp.set_len(u16::try_from(l4_len).unwrap());
        }
        l4[l4_hdr..].copy_from_slice(payload);
        buf
    }

    fn fill_all(buf: &mut [u8], proto: IpProtocol) {
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4 = ip.payload_mut();
        if proto == IpProtocol::Tcp {
            TcpPacket::new_checked(l4).unwrap().fill_checksum(src, dst);
        } else {
            UdpPacket::new_checked(l4).unwrap().fill_checksum(src, dst);
        }
    }

    fn l4_check(buf: &[u8]) -> u16 {
        // TCP checksum at 16..18, UDP at 6..8 of the segment.
        let ip = Ipv4Packet::new_checked(buf).unwrap();
        if ip.next_header() == IpProtocol::Tcp {
            TcpPacket::new_checked(ip.payload()).unwrap().checksum()
        } else {
            UdpPacket::new_checked(ip.payload()).unwrap().checksum()
        }
    }

    /// Offset of the last payload word, where the tests hide a fix-up word
    /// that drives the L4 checksum to an edge value.
    fn fixup_at(buf: &[u8]) -> usize {
        buf.len() - 2
    }

    /// Sets the fix-up word so that the L4 checksum becomes 0 (TCP) or a
    /// computed 0, transmitted 0xFFFF (UDP): the L4 sum must be 0xFFFF.
    fn force_edge(buf: &mut [u8], proto: IpProtocol) {
        let at = fixup_at(buf);
        buf[at..].copy_from_slice(&[0, 0]);
        fill_all(buf, proto);
        let check = l4_check(buf);
        // The sum without the fix-up is !check; adding !sum makes it 0xFFFF.
        let word = if proto == IpProtocol::Udp && check == 0xffff {
            0
        } else {
            check
        };
        buf[at..].copy_from_slice(&word.to_be_bytes());
        fill_all(buf, proto);
    }

    /// Sets the IPv4 ident so that the header checksum becomes 0x0000.
    fn force_ip_edge(buf: &mut [u8]) {
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        ip.set_ident(0);
        ip.fill_checksum();
        let fix = ip.checksum();
        ip.set_ident(fix);
        ip.fill_checksum();
        assert_eq!(ip.checksum(), 0);
    }

    fn copy_ident(from: &[u8], to: &mut [u8]) {
        to[4..6].copy_from_slice(&from[4..6]);
    }

    fn apply(
        buf: &mut [u8],
        rw: Rewrite,
        proto: IpProtocol,
        udp_none: bool,
    ) -> (u32, u32, u16, u16) {
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        let (old_addr, old_port);
        let (new_addr, new_port) = (u32::from(rw.new_addr), rw.new_port);
        let ip_check_before = ip.checksum();
        if rw.source {
            old_addr = u32::from(ip.src_addr());
        } else {
            old_addr = u32::from(ip.dst_addr());
        }
        if rw.address {
            if rw.source {
                ip.set_src_addr(rw.new_addr);
            } else {
                ip.set_dst_addr(rw.new_addr);
            }
            ip.set_checksum(update_u32(ip_check_before, old_addr, new_addr));
        }
        let l4 = ip.payload_mut();
        let port_at = if rw.source { 0 } else { 2 };
        old_port = u16::from_be_bytes([l4[port_at], l4[port_at + 1]]);
        let check_at = if proto == IpProtocol::Tcp { 16 } else { 6 };
        let mut check = u16::from_be_bytes([l4[check_at], l4[check_at + 1]]);
        if udp_none {
            assert_eq!(check, 0);
        }
        if rw.address {
            check = if proto == IpProtocol::Tcp {
                update_u32(check, old_addr, new_addr)
            } else {
                update_udp_u32(check, old_addr, new_addr)
            };
        } else {
            l4[port_at..port_at + 2].copy_from_slice(&new_port.to_be_bytes());
            check = if proto == IpProtocol::Tcp {
                update_u16(check, old_port, new_port)
            } else {
                update_udp_u16(check, old_port, new_port)
            };
        }
        l4[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
        (old_addr, new_addr, old_port, new_port)
    }

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            any::<u32>().prop_map(Ipv4Addr::from),
            Just(Ipv4Addr::new(0, 0, 0, 0)),
            Just(Ipv4Addr::new(255, 255, 255, 255)),
        ]
    }

    fn port() -> impl Strategy<Value = u16> {
        prop_oneof![any::<u16>(), Just(0u16), Just(0xffffu16)]
    }

    fn rewrite() -> impl Strategy<Value = Rewrite> {
        (any::<bool>(), any::<bool>(), addr(), port()).prop_map(
            |(source, address, new_addr, new_port)| Rewrite {
                source,
                address,
                new_addr,
                new_port,
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn check_rewrite(
        proto: IpProtocol,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: (u16, u16),
        payload: &[u8],
        rw: Rewrite,
        edge: Edge,
        udp_none: bool,
    ) -> Result<(), TestCaseError> {
        let mut payload = payload.to_vec();
        // Room for the fix-up word, kept 16-bit aligned.
        if payload.len() % 2 == 1 {
            payload.push(0);
        }
        payload.extend_from_slice(&[0, 0]);

        let mut original = build(proto, src, dst, ports, &payload);
        fill_all(&mut original, proto);
        // The expected result: the rewritten packet, fully recomputed.
        let mut expected = original.clone();
        {
            let mut ip = Ipv4Packet::new_checked(&mut expected[..]).unwrap();
            let l4 = ip.payload_mut();
            if !rw.address {
                let at = if rw.source { 0 } else { 2 };
                l4[at..at + 2].copy_from_slice(&rw.new_port.to_be_bytes());
            }
            if rw.address {
                if rw.source {
                    ip.set_src_addr(rw.new_addr);
                } else {
                    ip.set_dst_addr(rw.new_addr);
                }
            }
        }
        match edge {
            1 => {
                force_ip_edge(&mut original);
                copy_ident(&original, &mut expected);
                force_edge(&mut original, proto);
                let at = fixup_at(&original);
                let word = [original[at], original[at + 1]];
                expected[at..].copy_from_slice(&word);
                fill_all(&mut expected, proto);
            }
            2 => {
                force_ip_edge(&mut expected);
                copy_ident(&expected, &mut original);
                force_edge(&mut expected, proto);
                let at = fixup_at(&expected);
                let word = [expected[at], expected[at + 1]];
                original[at..].copy_from_slice(&word);
                fill_all(&mut original, proto);
            }
            _ => fill_all(&mut expected, proto),
        }
        if udp_none {
            for buf in [&mut original, &mut expected] {
                let at = IPV4_HDR + 6;
                buf[at..at + 2].copy_from_slice(&[0, 0]);
            }
        }
        match edge {
            _ if udp_none => {}
            1 => prop_assert_eq!(
                l4_check(&original),
                if proto == IpProtocol::Tcp { 0 } else { 0xffff }
            ),
            2 => prop_assert_eq!(
                l4_check(&expected),
                if proto == IpProtocol::Tcp { 0 } else { 0xffff }
            ),
            _ => {}
        }

        match edge {
            1 => prop_assert_eq!(
                Ipv4Packet::new_checked(&original[..]).unwrap().checksum(),
                0
            ),
            2 => prop_assert_eq!(
                Ipv4Packet::new_checked(&expected[..]).unwrap().checksum(),
                0
            ),
            _ => {}
        }

        let mut rewritten = original.clone();
        apply(&mut rewritten, rw, proto, udp_none);
        prop_assert_eq!(&rewritten, &expected);

        // Sanity: the result verifies.
        let ip = Ipv4Packet::new_checked(&rewritten[..]).unwrap();
        prop_assert!(ip.verify_checksum());
        let (s, d) = (ip.src_addr(), ip.dst_addr());
        if proto == IpProtocol::Tcp {
            prop_assert!(TcpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(s, d));
        } else {
            prop_assert!(UdpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(s, d));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn fold_is_repeated_halving(acc: u64) {
            let mut x = acc;
            while x > 0xffff {
                x = (x >> 16) + (x & 0xffff);
            }
            prop_assert_eq!(u64::from(fold(acc)), x);
        }

        #[test]
        fn ttl_decrement_keeps_the_header_valid(mut h: [u8; 20], ttl in 1u8..=255) {
            h[8] = ttl;
            h[10] = 0;
            h[11] = 0;
            let [c0, c1] = (!header20(&h)).to_be_bytes();
            h[10] = c0;
            h[11] = c1;
            h[8] -= 1;
            let [c0, c1] = ttl_decremented(u16::from_be_bytes([h[10], h[11]])).to_be_bytes();
            h[10] = c0;
            h[11] = c1;
            prop_assert_eq!(header20(&h), 0xffff);
        }

        #[test]
        fn header20_is_data(h: [u8; 20]) {
            prop_assert_eq!(header20(&h), data(&h));
        }

        #[test]
        fn update_u32_u16_is_the_two_updates(check: u16, old: u32, new: u32, o16: u16, n16: u16) {
            prop_assert_eq!(
                update_u32_u16(check, old, new, o16, n16),
                update_u16(!combine(&[!check, !hi16(old), !lo16(old), hi16(new), lo16(new)]), o16, n16)
            );
            prop_assert_eq!(
                update_u32(check, old, new),
                !combine(&[!check, !hi16(old), !lo16(old), hi16(new), lo16(new)])
            );
        }

        #[test]
        fn data_matches_reference(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(data(&bytes), reference(&bytes));
        }

        #[test]
        fn data_split_at_even_offset_combines(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in 0usize..100) {
            let cut = (cut * 2).min(bytes.len() & !1);
            prop_assert_eq!(combine(&[data(&bytes[..cut]), data(&bytes[cut..])]), data(&bytes));
        }

        #[test]
        fn tcp_rewrite_matches_recompute(
            src in addr(), dst in addr(), sport in port(), dport in port(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            rw in rewrite(), edge in 0u8..3,
        ) {
            check_rewrite(IpProtocol::Tcp, src, dst, (sport, dport), &payload, rw, edge, false)?;
        }

        #[test]
        fn udp_rewrite_matches_recompute(
            src in addr(), dst in addr(), sport in port(), dport in port(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            rw in rewrite(), edge in 0u8..3, none in proptest::bool::weighted(0.2),
        ) {
            check_rewrite(IpProtocol::Udp, src, dst, (sport, dport), &payload, rw, edge, none)?;
        }

        #[test]
        fn partial_matches_pseudo_header(
            src in addr(), dst in addr(), new in addr(), source in any::<bool>(),
            tcp in any::<bool>(), len in any::<u16>(),
        ) {
            let proto = if tcp { IpProtocol::Tcp } else { IpProtocol::Udp };
            let before = pseudo_header_v4(src, dst, proto, len);
            let (old, after) = if source {
                (src, pseudo_header_v4(new, dst, proto, len))
            } else {
                (dst, pseudo_header_v4(src, new, proto, len))
            };
            prop_assert_eq!(update_partial_u32(before, u32::from(old), u32::from(new)), after);
            // Also as two 16-bit halves.
            let (o, n) = (u32::from(old), u32::from(new));
            let half = update_partial_u16(before, hi16(o), hi16(n));
            prop_assert_eq!(update_partial_u16(half, lo16(o), lo16(n)), after);
        }

        #[test]
        fn partial_update_round_trips(sum in 1u16.., old in any::<u16>(), new in any::<u16>()) {
            prop_assert_eq!(update_partial_u16(sum, old, old), sum);
            let there = update_partial_u16(sum, old, new);
            prop_assert_eq!(update_partial_u16(there, new, old), sum);
        }
    }
}
