//! Receive coalescing for the tunnel endpoint: consecutive segments of one
//! TCP stream, decapsulated one by one, are merged into a single large
//! packet handed to the TUN device with a `virtio_net_hdr` that describes
//! it as TCPv4 GSO (`IFF_VNET_HDR`), as a NIC's GRO would hand one to the
//! stack. The real server's TCP then receives one packet per burst instead
//! of one per segment, and the endpoint makes one `write` per burst.
//!
//! Pure: takes inner IPv4 packets (already checked by
//! [`super::tunnel_endpoint::inner_packet`]) and emits (vnet header, bytes)
//! pairs to write; no I/O. What it merges is what Linux's GRO merges: same
//! addresses, ports, ACK number, TOS, TTL and DF, identical TCP options,
//! consecutive sequence numbers, ACK-only flags (a PSH segment ends a run),
//! every segment but the last exactly the first one's size, no IP options,
//! and each segment's TCP checksum verified first (a merged packet is
//! handed over as "checksum to be completed", which the stack trusts). A
//! run stays within one IPv4 datagram (65 535 bytes). Anything else passes
//! through unchanged, with an empty header.

pub use super::afpacket::VNET_HDR_LEN;
use super::afpacket::{emit_vnet, parse_vnet};
use crate::core::director::Offload;
use crate::wire::checksum;
use crate::wire::ipv4::{IpProtocol, Ipv4Packet};
use crate::wire::tcp::flags::{ACK as TCP_ACK, PSH as TCP_PSH};
use crate::wire::tcp::TcpPacket;

/// `GSO_TCPV4`.
const GSO_TCPV4: u8 = 1;
const MAX_IP_LEN: usize = 65_535;

/// A run of segments being merged.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// IPv4 header (20) + TCP header length.
    headers: usize,
    /// Payload size of the first segment: the GSO size.
    mss: usize,
    next_seq: u32,
    segments: u32,
}

/// Merges TCP segments; see the module docs.
#[derive(Debug)]
pub struct Coalescer {
    /// The run: the first segment's headers, then every payload.
    buf: Vec<u8>,
    run: Option<Run>,
    /// Segments that left as part of a merged packet (not alone).
    pub merged: u64,
    /// Cleared when the device refuses merged packets: everything passes
    /// through from then on.
    pub enabled: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer {
            buf: Vec::with_capacity(MAX_IP_LEN),
            run: None,
            merged: 0,
            enabled: true,
        }
    }
}

/// What [`mergeable`] found out about a segment.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// TCP header length.
    thl: usize,
    payload: usize,
    seq: u32,
}

/// `p` as a segment that may start or join a run: IPv4 without options,
/// TCP, not a fragment, ACK set and no flag but PSH besides, some payload,
/// a correct TCP checksum.
fn mergeable(p: &[u8]) -> Option<Segment> {
    let ip = Ipv4Packet::new_checked(p).ok()?;
    if ip.header_len() != 20
        || ip.next_header() != IpProtocol::Tcp
        || ip.is_fragment()
        || usize::from(ip.total_len()) != p.len()
    {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let payload = tcp.payload().len();
    if payload == 0
        || tcp.flags() & !TCP_PSH != TCP_ACK
        || !tcp.verify_checksum(ip.src_addr(), ip.dst_addr())
    {
        return None;
    }
    Some(Segment {
        thl: usize::from(tcp.header_len()),
        payload,
        seq: tcp.seq_number(),
    })
}

impl Coalescer {
    /// Takes one inner packet; calls `out(vnet_header, packet)` for what is
    /// ready to be written (a finished run, or `p` itself), in order.
    pub fn push(&mut self, p: &[u8], out: &mut impl FnMut(&[u8; VNET_HDR_LEN], &[u8])) {
        let Some(Segment { thl, payload, seq }) = mergeable(p).filter(|_| self.enabled) else {
            self.flush(out);
            out(&[0; VNET_HDR_LEN], p);
            return;
        };
        if let Some(run) = self.run {
            let h = &self.buf[..run.headers];
            let joins = run.headers == 20 + thl
                && payload <= run.mss
                && self.buf.len() + payload <= MAX_IP_LEN
                && seq == run.next_seq
                && p[1] == h[1]
                && p[8] == h[8]
                && p[6] & 0x40 == h[6] & 0x40
                && p[12..24] == h[12..24]
                && p[28..32] == h[28..32]
                && p[40..20 + thl] == h[40..]
                && h[33] & TCP_PSH == 0;
            if joins {
                self.buf.extend_from_slice(&p[20 + thl..]);
                // The latest window and PSH, as the last segment says.
                self.buf[34..36].copy_from_slice(&p[34..36]);
                self.buf[33] |= p[33] & TCP_PSH;
                #[allow(clippy::cast_possible_truncation)] // payload < 65 536
                let next = run.next_seq.wrapping_add(payload as u32);
                self.run = Some(Run {
                    next_seq: next,
                    segments: run.segments + 1,
                    ..run
                });
                // A short or PSH segment ends the stream's burst.
                if payload < run.mss || p[33] & TCP_PSH != 0 {
                    self.flush(out);
                }
                return;
            }
            self.flush(out);
        }
        if p[33] & TCP_PSH != 0 {
            // Nothing can follow it in a run.
            out(&[0; VNET_HDR_LEN], p);
            return;
        }
        self.buf.clear();
        self.buf.extend_from_slice(p);
        #[allow(clippy::cast_possible_truncation)] // payload < 65 536
        let next_seq = seq.wrapping_add(payload as u32);
        self.run = Some(Run {
            headers: 20 + thl,
            mss: payload,
            next_seq,
            segments: 1,
        });
    }

    /// Hands over the run being merged, if any.
    pub fn flush(&mut self, out: &mut impl FnMut(&[u8; VNET_HDR_LEN], &[u8])) {
        let Some(run) = self.run.take() else {
            return;
        };
        if run.segments == 1 {
            // Unchanged, checksums as received.
            out(&[0; VNET_HDR_LEN], &self.buf);
            return;
        }
        let total = self.buf.len();
        let mut ip = Ipv4Packet::new_unchecked(&mut self.buf[..]);
        #[allow(clippy::cast_possible_truncation)] // total ≤ 65 535
        ip.set_total_len(total as u16);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        // NEEDS_CSUM: the field holds the pseudo-header sum, the stack (or
        // a segmentation) completes it over the data.
        #[allow(clippy::cast_possible_truncation)] // total ≤ 65 535
        let pseudo = checksum::pseudo_header_v4(src, dst, IpProtocol::Tcp, (total - 20) as u16);
        TcpPacket::new_unchecked(&mut self.buf[20..]).set_checksum(pseudo);
        #[allow(clippy::cast_possible_truncation)] // headers ≤ 80, mss < 65 536
        let v = emit_vnet(&Offload {
            needs_csum: true,
            csum_start: 20,
            csum_offset: 16,
            gso_type: GSO_TCPV4,
            gso_size: run.mss as u16,
            hdr_len: run.headers as u16,
        });
        self.merged += u64::from(run.segments);
        out(&v, &self.buf);
    }
}

/// How many segments a packet handed out by [`Coalescer`] carries.
pub fn segments(v: &[u8; VNET_HDR_LEN], packet: &[u8]) -> u64 {
    let o = parse_vnet(v);
    if o.gso_type == 0 || o.gso_size == 0 {
        return 1;
    }
    packet
        .len()
        .saturating_sub(usize::from(o.hdr_len))
        .div_ceil(usize::from(o.gso_size)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 4] = [198, 51, 100, 2];
    const DST: [u8; 4] = [203, 0, 113, 10];

    /// A real TCP/IPv4 segment: ACK (| PSH), timestamp option, `n` bytes
    /// of payload starting at `seq`, correct checksums.
    fn segment(seq: u32, n: usize, flags: u8, sport: u16) -> Vec<u8> {
        let thl = 32;
        let total = 20 + thl + n;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&SRC);
        p[16..20].copy_from_slice(&DST);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&80u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7777u32.to_be_bytes());
        t[12] = (thl as u8 / 4) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&500u16.to_be_bytes());
        // NOP NOP timestamps
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 3]);
        for (i, b) in t[thl..].iter_mut().enumerate() {
            *b = (seq as usize + i) as u8;
        }
        fill_checksums(&mut p);
        p
    }

    /// Recomputes both checksums of a segment built (or edited) by hand.
    fn fill_checksums(p: &mut [u8]) {
        let mut ip = Ipv4Packet::new_unchecked(&mut *p);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        TcpPacket::new_unchecked(&mut p[20..]).fill_checksum(src, dst);
    }

    fn sport(p: &[u8]) -> u16 {
        TcpPacket::new_unchecked(&p[20..]).src_port()
    }

    fn run(c: &mut Coalescer, pkts: &[Vec<u8>]) -> Vec<([u8; VNET_HDR_LEN], Vec<u8>)> {
        let mut got = Vec::new();
        let mut out = |v: &[u8; VNET_HDR_LEN], p: &[u8]| got.push((*v, p.to_vec()));
        for p in pkts {
            c.push(p, &mut out);
        }
        c.flush(&mut out);
        got
    }

    /// What the kernel does with NEEDS_CSUM: completes the checksum over
    /// the TCP segment (from csum_start, the field holding the
    /// pseudo-header sum); the result must verify as a normal segment.
    fn completed_checksum_verifies(p: &[u8]) -> bool {
        let mut p = p.to_vec();
        let sum = !checksum::data(&p[20..]);
        p[36..38].copy_from_slice(&sum.to_be_bytes());
        mergeable(&p).is_some()
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic; whatever is not merged passes
        /// through unchanged.
        #[test]
        fn arbitrary_input_passes_through(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut c = Coalescer::default();
            let got = run(&mut c, std::slice::from_ref(&bytes));
            proptest::prop_assert_eq!(got.len(), 1);
            proptest::prop_assert_eq!(&got[0].1, &bytes);
        }

        /// Segments of two flows, in or out of order, with PSH here and
        /// there: every payload byte comes out once, in order per flow, and
        /// merged packets complete to valid checksums.
        #[test]
        fn payload_is_kept_in_order(
            steps in proptest::collection::vec((0u16..2, 0u32..3, proptest::bool::ANY), 1..60)
        ) {
            let mut c = Coalescer::default();
            let mut next = [1000u32, 50_000];
            let mut pkts = Vec::new();
            for &(flow, skip, psh) in &steps {
                let f = usize::from(flow);
                // skip 0 or 1: in order; 2: a gap of 100 bytes.
                if skip == 2 {
                    next[f] += 100;
                }
                let flags = if psh { TCP_ACK | TCP_PSH } else { TCP_ACK };
                pkts.push(segment(next[f], 100, flags, 4000 + flow));
                next[f] += 100;
            }
            let got = run(&mut c, &pkts);
            let payload = |p: &[u8]| p[52..].to_vec();
            for flow in 0..2u16 {
                let sent: Vec<u8> = pkts
                    .iter()
                    .filter(|p| sport(p) == 4000 + flow)
                    .flat_map(|p| payload(p))
                    .collect();
                let recv: Vec<u8> = got
                    .iter()
                    .filter(|(_, p)| sport(p) == 4000 + flow)
                    .flat_map(|(_, p)| payload(p))
                    .collect();
                proptest::prop_assert_eq!(sent, recv);
            }
            for (v, p) in &got {
                if v[1] == GSO_TCPV4 {
                    proptest::prop_assert!(completed_checksum_verifies(p));
                } else {
                    proptest::prop_assert!(mergeable(p).is_some());
                }
            }
        }
    }

    #[test]
    fn a_burst_becomes_one_gso_packet() {
        let mut c = Coalescer::default();
        let pkts = [
            segment(1000, 100, TCP_ACK, 4000),
            segment(1100, 100, TCP_ACK, 4000),
            segment(1200, 100, TCP_ACK, 4000),
            segment(1300, 40, TCP_ACK | TCP_PSH, 4000),
        ];
        let got = run(&mut c, &pkts);
        assert_eq!(got.len(), 1, "{got:?}");
        let (v, p) = &got[0];
        let o = parse_vnet(v);
        assert!(o.needs_csum);
        assert_eq!(o.gso_type, GSO_TCPV4);
        assert_eq!(o.hdr_len, 52);
        assert_eq!(o.gso_size, 100);
        assert_eq!((o.csum_start, o.csum_offset), (20, 16));
        assert_eq!(segments(v, p), 4);
        assert_eq!(p.len(), 52 + 340);
        let ip = Ipv4Packet::new_checked(&p[..]).expect("IPv4");
        assert_eq!(usize::from(ip.total_len()), p.len(), "IP total length");
        assert!(ip.verify_checksum(), "IP header checksum");
        let tcp = TcpPacket::new_unchecked(&p[20..]);
        assert_eq!(tcp.flags(), TCP_ACK | TCP_PSH, "the last segment's PSH");
        assert_eq!(
            tcp.seq_number(),
            1000,
            "the first segment's sequence number"
        );
        let payload: Vec<u8> = pkts.iter().flat_map(|s| s[52..].to_vec()).collect();
        assert_eq!(&p[52..], &payload[..]);
        assert!(completed_checksum_verifies(p));
        assert_eq!(c.merged, 4);
    }

    #[test]
    fn disabled_it_passes_everything_through() {
        let mut c = Coalescer {
            enabled: false,
            ..Coalescer::default()
        };
        let pkts = [
            segment(1000, 100, TCP_ACK, 4000),
            segment(1100, 100, TCP_ACK, 4000),
        ];
        let got = run(&mut c, &pkts);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|(v, _)| v == &[0; VNET_HDR_LEN]));
    }

    #[test]
    fn what_cannot_merge_passes_through_in_order() {
        let mut c = Coalescer::default();
        let mut bad = segment(1100, 100, TCP_ACK, 4000);
        bad[60] ^= 0xff; // payload corrupted: checksum fails
        let pkts = [
            segment(1000, 100, TCP_ACK, 4000),
            bad.clone(),                                 // bad checksum
            segment(1200, 100, TCP_ACK, 4000),           // not after 1000+100: new run
            segment(5000, 100, TCP_ACK, 4001),           // another flow
            segment(5100, 100, TCP_ACK | 0x01, 4001),    // FIN
            segment(9000, 100, TCP_ACK | TCP_PSH, 4002), // lone PSH
            segment(9100, 100, TCP_ACK, 4002),
        ];
        let got = run(&mut c, &pkts);
        let want: Vec<&Vec<u8>> = pkts.iter().collect();
        assert_eq!(got.len(), want.len(), "nothing merged: {got:?}");
        for ((v, p), w) in got.iter().zip(want) {
            assert_eq!(v, &[0; VNET_HDR_LEN]);
            assert_eq!(p, w, "unchanged");
        }
        assert_eq!(c.merged, 0);
    }

    #[test]
    fn a_run_stops_at_a_bigger_segment_a_changed_option_and_the_ip_limit() {
        let mut c = Coalescer::default();
        let mut ts = segment(1200, 100, TCP_ACK, 4000);
        ts[20 + 27] = 4; // TSval changed (the checksum with it)
        fill_checksums(&mut ts);
        let got = run(
            &mut c,
            &[
                segment(1000, 100, TCP_ACK, 4000),
                segment(1100, 100, TCP_ACK, 4000),
                ts,
                segment(1300, 200, TCP_ACK, 4000), // bigger than the run's size
            ],
        );
        let sizes: Vec<usize> = got.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(sizes, [52 + 200, 52 + 100, 52 + 200], "{got:?}");
        assert_eq!(got[0].0[1], GSO_TCPV4);
        assert_eq!(got[1].0, [0; VNET_HDR_LEN]);

        // 1400-byte segments: 46 fit in one datagram, the 47th starts anew.
        let mut c = Coalescer::default();
        let pkts: Vec<Vec<u8>> = (0..47)
            .map(|i| segment(1000 + i * 1400, 1400, TCP_ACK, 4000))
            .collect();
        let got = run(&mut c, &pkts);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1.len(), 52 + 46 * 1400);
        assert!(got[0].1.len() <= MAX_IP_LEN);
        assert!(completed_checksum_verifies(&got[0].1));
    }
}
