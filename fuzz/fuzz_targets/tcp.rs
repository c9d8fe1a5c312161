#![no_main]
//! TCP: after `new_checked`, no getter panics; a filled checksum verifies.
use libfuzzer_sys::fuzz_target;
use rvs::wire::TcpPacket;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let (a, b) = (
        Ipv4Addr::new(198, 51, 100, 2),
        Ipv4Addr::new(203, 0, 113, 10),
    );
    if let Ok(p) = TcpPacket::new_checked(data) {
        let _ = (
            p.src_port(),
            p.dst_port(),
            p.seq_number(),
            p.ack_number(),
            p.header_len(),
        );
        let _ = (
            p.flags(),
            p.fin(),
            p.syn(),
            p.rst(),
            p.psh(),
            p.ack(),
            p.urg(),
        );
        let _ = (
            p.window_len(),
            p.checksum(),
            p.urgent_at(),
            p.options().len(),
        );
        let _ = (p.payload().len(), p.verify_checksum(a, b));
        let mut copy = data.to_vec();
        TcpPacket::new_unchecked(&mut copy[..]).fill_checksum(a, b);
        assert!(TcpPacket::new_checked(&copy[..])
            .unwrap()
            .verify_checksum(a, b));
    }
});
