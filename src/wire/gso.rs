//! Software TCP segmentation: what the kernel's GSO does to a TCP/IPv4
//! super-frame, for the paths that cannot hand the super-frame on whole
//! (VS/TUN: `virtio_net_hdr` cannot describe segmentation of IP-in-IP).
//!
//! Segment `k` of a frame carries payload bytes `k × mss ..` and copies of
//! the Ethernet, IPv4 and TCP headers with, per RFC 9293 and Linux's
//! `tcp_gso_segment`: sequence number advanced by the offset, IP ident
//! incremented per segment, FIN and PSH only on the last segment, CWR only
//! on the first, and both checksums computed in full.

use crate::wire::ipv4::{IpProtocol, Ipv4Packet};
use crate::wire::tcp::{flags, TcpPacket};

/// Why a frame cannot be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// The frame is not Ethernet + IPv4 + TCP with consistent lengths.
    Malformed,
    /// The segment size is zero.
    BadSegmentSize,
    /// The output buffer is too small for the segment.
    Truncated,
}

impl core::fmt::Display for GsoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            GsoError::Malformed => "not a consistent Ethernet/IPv4/TCP frame",
            GsoError::BadSegmentSize => "segment size is zero",
            GsoError::Truncated => "output buffer too small",
        })
    }
}

/// Offsets of a TCP/IPv4 frame: (IP header, TCP header, payload, end).
fn layout(frame: &[u8]) -> Result<(usize, usize, usize, usize), GsoError> {
    let ip = 14;
    let p = Ipv4Packet::new_checked(frame.get(ip..).ok_or(GsoError::Malformed)?)
        .map_err(|_| GsoError::Malformed)?;
    if p.next_header() != IpProtocol::Tcp {
        return Err(GsoError::Malformed);
    }
    let tcp = ip + usize::from(p.header_len());
    let end = ip + usize::from(p.total_len());
    let t = TcpPacket::new_checked(&frame[tcp..end]).map_err(|_| GsoError::Malformed)?;
    Ok((ip, tcp, tcp + usize::from(t.header_len()), end))
}

/// How many segments of at most `mss` payload bytes `frame` makes.
pub fn tcp_segments(frame: &[u8], mss: u16) -> Result<usize, GsoError> {
    if mss == 0 {
        return Err(GsoError::BadSegmentSize);
    }
    let (_, _, payload, end) = layout(frame)?;
    Ok((end - payload).div_ceil(usize::from(mss)).max(1))
}

/// Writes segment `k` of `frame` into `out`; returns its length.
pub fn write_tcp_segment(
    frame: &[u8],
    mss: u16,
    k: usize,
    out: &mut [u8],
) -> Result<usize, GsoError> {
    if mss == 0 {
        return Err(GsoError::BadSegmentSize);
    }
    let (ip, tcp, payload, end) = layout(frame)?;
    let mss = usize::from(mss);
    let from = payload + k * mss;
    if from > end || (from == end && k > 0) {
        return Err(GsoError::Malformed);
    }
    let to = (from + mss).min(end);
    let last = to == end;
    let hdrs = payload;
    let len = hdrs + (to - from);
    if out.len() < len {
        return Err(GsoError::Truncated);
    }
    out[..hdrs].copy_from_slice(&frame[..hdrs]);
    out[hdrs..len].copy_from_slice(&frame[from..to]);
    let (src, dst) = {
        let mut p = Ipv4Packet::new_unchecked(&mut out[ip..len]);
        // len - ip ≤ the original total length, a u16.
        p.set_total_len(u16::try_from(len - ip).unwrap_or(u16::MAX));
        let ident = p
            .ident()
            .wrapping_add(u16::try_from(k & 0xffff).unwrap_or(0));
        p.set_ident(ident);
        p.fill_checksum();
        (p.src_addr(), p.dst_addr())
    };
    let mut t = TcpPacket::new_unchecked(&mut out[tcp..len]);
    let seq = t
        .seq_number()
        .wrapping_add(u32::try_from(k * mss).unwrap_or(0));
    t.set_seq_number(seq);
    let mut fl = t.flags();
    if !last {
        fl &= !(flags::FIN | flags::PSH);
    }
    if k > 0 {
        fl &= !flags::CWR;
    }
    t.set_flags(fl);
    t.set_checksum(0);
    t.fill_checksum(src, dst);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn frame(payload: usize, fl: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12] = 0x08;
        let total = u16::try_from(40 + payload).unwrap();
        {
            let mut p = Ipv4Packet::new_unchecked(&mut f[14..]);
            p.set_version(4);
            p.set_header_len(20);
            p.set_total_len(total);
            p.set_ident(100);
            p.set_dont_frag(true);
            p.set_hop_limit(64);
            p.set_next_header(IpProtocol::Tcp);
            p.set_src_addr(Ipv4Addr::new(198, 51, 100, 2));
            p.set_dst_addr(Ipv4Addr::new(203, 0, 113, 10));
            p.fill_checksum();
        }
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        let mut t = TcpPacket::new_unchecked(&mut f[34..]);
        t.set_src_port(40000);
        t.set_dst_port(80);
        t.set_seq_number(1000);
        t.set_header_len(20);
        t.set_flags(fl);
        t.fill_checksum(
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv4Addr::new(203, 0, 113, 10),
        );
        f
    }

    #[test]
    fn splits_payload_and_fixes_headers() {
        let f = frame(3000, flags::ACK | flags::PSH | flags::FIN | flags::CWR);
        assert_eq!(tcp_segments(&f, 1448).unwrap(), 3);
        let mut all = Vec::new();
        for k in 0..3 {
            let mut out = vec![0xa5u8; 2000];
            let n = write_tcp_segment(&f, 1448, k, &mut out).unwrap();
            let out = &out[..n];
            let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.ident(), 100 + k as u16);
            let t = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(t.verify_checksum(ip.src_addr(), ip.dst_addr()));
            assert_eq!(t.seq_number(), 1000 + (k * 1448) as u32);
            assert_eq!(t.fin(), k == 2);
            assert_eq!(t.psh(), k == 2);
            assert_eq!(t.cwr(), k == 0);
            all.extend_from_slice(t.payload());
        }
        assert_eq!(all, f[54..].to_vec());
    }

    #[test]
    fn rejects_nonsense() {
        let f = frame(10, flags::ACK);
        assert_eq!(tcp_segments(&f, 0), Err(GsoError::BadSegmentSize));
        assert_eq!(tcp_segments(&f[..30], 100), Err(GsoError::Malformed));
        let mut small = [0u8; 20];
        assert_eq!(
            write_tcp_segment(&f, 100, 0, &mut small),
            Err(GsoError::Truncated)
        );
        assert_eq!(
            write_tcp_segment(&f, 100, 5, &mut [0u8; 200]),
            Err(GsoError::Malformed)
        );
        assert_eq!(tcp_segments(&f, 1448).unwrap(), 1);
    }
}
