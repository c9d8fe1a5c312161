#![no_main]
//! IPv4: after `new_checked`, no getter panics and the payload lies inside
//! the buffer; a filled checksum verifies.
use libfuzzer_sys::fuzz_target;
use rvs::wire::{Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
        );
        let _ = (
            p.hop_limit(),
            p.next_header(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
        );
        let _ = (p.verify_checksum(), Ipv4Repr::parse(&p));
        assert!(usize::from(p.header_len()) >= 20);
        assert!(p.payload().len() + usize::from(p.header_len()) <= data.len());
        let mut copy = data.to_vec();
        let mut q = Ipv4Packet::new_unchecked(&mut copy[..]);
        q.fill_checksum();
        assert!(Ipv4Packet::new_checked(&copy[..])
            .unwrap()
            .verify_checksum());
    }
});
