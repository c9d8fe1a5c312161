#![no_main]
//! ARP: after `new_checked`, no getter panics; a parsed request re-emits as
//! a packet that parses to the same representation.
use libfuzzer_sys::fuzz_target;
use rvs::wire::{ArpPacket, ArpRepr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ArpPacket::new_checked(data) {
        let _ = (
            p.hardware_type(),
            p.protocol_type(),
            p.hardware_len(),
            p.protocol_len(),
        );
        let _ = (
            p.operation(),
            p.source_hardware_addr(),
            p.source_protocol_addr(),
        );
        let _ = (p.target_hardware_addr(), p.target_protocol_addr());
        if let Ok(repr) = ArpRepr::parse(&p) {
            let mut out = vec![0xa5u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut out[..]));
            let again = ArpPacket::new_checked(&out[..]).expect("emitted ARP parses");
            assert_eq!(ArpRepr::parse(&again).ok(), Some(repr));
        }
    }
});
