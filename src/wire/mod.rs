//! The `wire` module deals with the packet *representation*: typed,
//! zero-copy views over byte buffers and the checksums that go with them.
//!
//! Rules of this layer: no I/O, no allocation, no panics on bytes from the
//! network. Every view has `new_checked` (= `new_unchecked` + `check_len`);
//! after a successful `new_checked` no getter panics.
