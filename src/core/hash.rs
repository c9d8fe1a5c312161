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
        FastBuild { key: random_key() }
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

/// A per-process random word (std's `RandomState` keys), for [`FastBuild`]
/// and [`WordMap`] seeds.
pub fn random_key() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(0x0052_5653_u64)
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, FastBuild>;
pub type FastSet<K> = std::collections::HashSet<K, FastBuild>;

/// A read-mostly map from nonzero `u64` words to small values, for the
/// per-packet lookups of tables the configuration and the kernel fill
/// (services, VIPs, NAT real servers, long route tables): open addressing
/// with linear probing in a power-of-two array at most half full, one keyed
/// (folded) multiply per lookup.
///
/// std's `HashMap` costs ~35 instructions a probe here (tag groups, a
/// bitmask walk, a generic key compare); this costs ~10. Keys come from the
/// configuration or the kernel, never from packets: a packet only probes, and with the
/// array at most half full a miss ends at the first empty slot, on average
/// within two.
#[derive(Debug, Clone)]
pub struct WordMap<V> {
    slots: Box<[(u64, V)]>,
    /// `64 - log2(slots.len())`: the top bits of the product index the array.
    shift: u32,
    key: u64,
    len: usize,
}

impl<V: Copy + Default> WordMap<V> {
    /// An empty map whose probes are keyed with `seed`.
    pub fn new(seed: u64) -> WordMap<V> {
        WordMap {
            slots: vec![(0, V::default()); 2].into_boxed_slice(),
            shift: 63,
            key: seed | 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn home(&self, word: u64) -> usize {
        // A folded multiply of the keyed word: both halves of the product
        // carry every input bit into the top bits, which index the array.
        // (A plain multiply by a keyed factor left structured keys — /24
        // networks 256 apart — in long runs for some keys: a probe of a
        // 1000-route table took 7 to 225 ns depending on the seed.)
        #[allow(clippy::cast_possible_truncation)]
        let i = (fold_mul(word ^ self.key, MUL) >> self.shift) as usize;
        i
    }

    /// # Panics
    /// If `word` is 0 (the empty-slot marker): a logic error of the caller,
    /// whose words always carry a nonzero protocol byte.
    pub fn insert(&mut self, word: u64, value: V) {
        assert_ne!(word, 0, "WordMap keys are nonzero");
        if 2 * (self.len + 1) > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(word);
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == word {
                slot.1 = value;
                return;
            }
            if slot.0 == 0 {
                *slot = (word, value);
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(
            &mut self.slots,
            vec![(0, V::default()); n].into_boxed_slice(),
        );
        self.shift -= 1;
        self.len = 0;
        for &(w, v) in old.iter().filter(|s| s.0 != 0) {
            self.insert(w, v);
        }
    }

    #[inline(always)]
    pub fn get(&self, word: u64) -> Option<V> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(word);
        loop {
            let (w, v) = self.slots[i];
            if w == word && w != 0 {
                return Some(v);
            }
            if w == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub fn contains(&self, word: u64) -> bool {
        self.get(word).is_some()
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, V)> + '_ {
        self.slots.iter().copied().filter(|s| s.0 != 0)
    }
}

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

    #[test]
    fn word_map_agrees_with_a_hash_map() {
        let mut m = WordMap::<u32>::new(0x1234_5678);
        let mut std_map = std::collections::HashMap::new();
        assert_eq!(m.get(7), None);
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        for i in 0..5000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Clustered keys (consecutive ports) as well as scattered ones.
            let word = if i % 2 == 0 {
                x | 1
            } else {
                0x0600_0000_0000 | u64::from(i)
            };
            m.insert(word, i);
            std_map.insert(word, i);
            assert!(m.len() * 2 <= m.slots.len());
        }
        assert_eq!(m.len(), std_map.len());
        for (&w, &v) in &std_map {
            assert_eq!(m.get(w), Some(v));
        }
        for w in [2u64, 4, 0x0600_0000_0000 | 9999, u64::MAX - 1] {
            assert_eq!(m.get(w), std_map.get(&w).copied());
        }
        // A probe for the empty-slot marker finds nothing.
        assert_eq!(m.get(0), None);
        let mut seen: Vec<_> = m.iter().collect();
        seen.sort_unstable();
        let mut want: Vec<_> = std_map.into_iter().collect();
        want.sort_unstable();
        assert_eq!(seen, want);
    }
}
