#![no_main]
//! Ethernet: after `new_checked`, no getter panics; parse → emit round-trips.
use libfuzzer_sys::fuzz_target;
use rvs::wire::{EthernetFrame, EthernetRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = EthernetFrame::new_checked(data) {
        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
        if let Ok(repr) = EthernetRepr::parse(&f) {
            let mut out = vec![0xa5u8; data.len()];
            repr.emit(&mut EthernetFrame::new_unchecked(&mut out[..]));
            assert_eq!(&out[..14], &data[..14], "ethernet header round trip");
        }
    }
});
