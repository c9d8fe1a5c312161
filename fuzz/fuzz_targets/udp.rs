#![no_main]
//! UDP: after `new_checked`, no getter panics; the payload is inside the
//! buffer.
use libfuzzer_sys::fuzz_target;
use rvs::wire::UdpPacket;
use std::net::Ipv4Addr;

fuzz_target!(|data: &[u8]| {
    let a = Ipv4Addr::new(198, 51, 100, 2);
    if let Ok(p) = UdpPacket::new_checked(data) {
        let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum());
        let _ = p.verify_checksum(a, a);
        assert!(p.payload().len() + 8 <= data.len());
    }
});
