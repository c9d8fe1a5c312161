//! A keyed, fast hasher for the per-packet tables.
//!
//! std's SipHash costs ~20 ns per lookup, most of a packet's budget. The
//! table keys are small fixed-size tuples, so a multiply–xor mix (the
//! folded-multiply construction of FxHash/aHash's fallback) is enough; it is
//! keyed with a per-process random seed so that remote clients, who choose
//! addresses and ports, cannot aim collisions at one bucket without knowing
//! it.

use std::hash::{BuildHasher, Hasher};

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a).wrapping_mul(u128::from(b));
    // The high and low halves fold all input bits into all output bits.
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (full as u64, (full >> 64) as u64);
    lo ^ hi
}

/// Hasher state; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct FastHasher {
    state: u64,
    key: u64,
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.state = fold_mul(self.state ^ i, MUL ^ self.key);
    }
    /// Both halves in one multiply (the "mum" step of wyhash): a two-word
    /// key costs two multiplies with `finish` instead of three.
    #[inline]
    fn write_u128(&mut self, i: u128) {
        #[allow(clippy::cast_possible_truncation)]
        let (lo, hi) = (i as u64, (i >> 64) as u64);
        self.state = fold_mul(self.state ^ lo, hi ^ MUL ^ self.key);
    }
    #[inline]
    fn finish(&self) -> u64 {
        fold_mul(self.state, self.key | 1)
    }
}

/// Builds [`FastHasher`]s with one key.
#[derive(Debug, Clone, Copy)]
pub struct FastBuild {
    key: u64,
}

impl FastBuild {
    pub fn with_key(key: u64) -> FastBuild {
        FastBuild { key }
    }

    /// A key from the process's random state (std seeds it from the OS).
    pub fn random() -> FastBuild {
        let key = std::collections::hash_map::RandomState::new().hash_one(0x0052_5653_u64);
        FastBuild { key }
    }
}

impl Default for FastBuild {
    fn default() -> Self {
        FastBuild::random()
    }
}

impl BuildHasher for FastBuild {
    type Hasher = FastHasher;
    #[inline]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            state: self.key,
            key: self.key,
        }
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;
pub type FastSet<K> = std::collections::HashSet<K, FastBuild>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_spreading() {
        let a = FastBuild::with_key(1);
        let b = FastBuild::with_key(2);
        assert_ne!(a.hash_one(42u32), b.hash_one(42u32));
        // Sequential ports must not land in a few buckets.
        let mut low = std::collections::HashSet::new();
        for port in 0u16..1024 {
            low.insert(a.hash_one((6u8, 0xc633_6402u32, port)) & 1023);
        }
        assert!(low.len() > 550, "only {} distinct buckets", low.len());
        // The same for two-word keys, in the low bits (bucket index) and
        // the top 7 (hashbrown's tag).
        let (mut low, mut top) = (std::collections::HashSet::new(), [0u32; 128]);
        for port in 0u64..1024 {
            let h =
                a.hash_one(u128::from(0xc633_6402_cb00_710a_u64) << 64 | u128::from(port << 8 | 6));
            low.insert(h & 1023);
            top[(h >> 57) as usize] += 1;
        }
        assert!(low.len() > 550, "only {} distinct buckets", low.len());
        assert!(top.iter().all(|&n| n < 24), "tags {top:?}");
    }
}
