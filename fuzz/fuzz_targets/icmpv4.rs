#![no_main]
//! ICMPv4: after `new_checked`, no getter panics; a filled checksum verifies.
use libfuzzer_sys::fuzz_target;
use rvs::wire::Icmpv4Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Icmpv4Packet::new_checked(data) {
        let _ = (
            p.msg_type(),
            p.msg_code(),
            p.checksum(),
            p.echo_ident(),
            p.echo_seq_no(),
        );
        let _ = (
            p.next_mtu(),
            p.data().len(),
            p.is_error(),
            p.verify_checksum(),
        );
        let mut copy = data.to_vec();
        Icmpv4Packet::new_unchecked(&mut copy[..]).fill_checksum();
        assert!(Icmpv4Packet::new_checked(&copy[..])
            .unwrap()
            .verify_checksum());
    }
});
