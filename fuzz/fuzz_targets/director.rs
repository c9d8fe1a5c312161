#![no_main]
//! `Director::handle` over sequences of arbitrary frames against a fixed
//! table; the invariants are in `rvs_fuzz::run`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rvs_fuzz::run(data));
