//! The connection table's storage: a slab of small `Copy` entries per
//! shard, indexed by the inbound tuple and, for NAT, by the reply tuple.
//!
//! Shards are chosen by the client endpoint, which both directions of a
//! NAT flow carry (inbound as source, replies as destination): one flow is
//! always under one shard lock, and no lock is global. This module only
//! stores; the director decides what an entry means (state, counts,
//! templates).

use std::hash::BuildHasher;
use std::net::{Ipv4Addr, SocketAddrV4};

use hashbrown::HashTable;

use crate::core::config::{Method, Protocol};
use crate::core::hash::FastBuild;

/// Index of a real server in the director's registry; stable for the life
/// of the process, across reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealId(pub u32);

/// A flow tuple: the client endpoint and the endpoint on the far side (the
/// virtual service for inbound lookups, the real server for NAT replies),
/// packed into words: the table compares three words per probe instead of
/// five fields, and hashes them in one 128-bit round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    /// Client address above the other address.
    addrs: u64,
    /// Client port above the other port.
    ports: u32,
    udp: bool,
}

/// An index entry: a [`FlowKey`] and its slot in 16 bytes, the protocol in
/// the slot's top bit: a shard holds at most its live entries plus reset
/// tombstones, each at most `max_connections` ≤ 2^30, so indexes stay
/// below 2^31.
#[derive(Debug, Clone, Copy)]
struct Entry {
    addrs: u64,
    ports: u32,
    tag: u32,
}

const UDP_TAG: u32 = 1 << 31;

impl Entry {
    fn new(key: FlowKey, slot: u32) -> Entry {
        Entry {
            addrs: key.addrs,
            ports: key.ports,
            tag: slot | if key.udp { UDP_TAG } else { 0 },
        }
    }

    #[inline]
    fn is(&self, key: &FlowKey) -> bool {
        self.addrs == key.addrs && self.ports == key.ports && (self.tag >= UDP_TAG) == key.udp
    }

    fn key(&self) -> FlowKey {
        FlowKey {
            addrs: self.addrs,
            ports: self.ports,
            udp: self.tag >= UDP_TAG,
        }
    }

    fn slot(&self) -> u32 {
        self.tag & !UDP_TAG
    }
}

impl std::hash::Hash for FlowKey {
    /// One 128-bit word: every hasher round is a multiply, and a new NAT
    /// flow hashes its keys three times (the lookup, the reply check and
    /// removal; inserts reuse the lookups' hashes).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u128(
            u128::from(self.addrs) << 64 | u128::from(self.ports) << 1 | u128::from(self.udp),
        );
    }
}

impl FlowKey {
    #[inline]
    pub fn new(protocol: Protocol, client: SocketAddrV4, other: SocketAddrV4) -> FlowKey {
        FlowKey {
            addrs: u64::from(u32::from(*client.ip())) << 32 | u64::from(u32::from(*other.ip())),
            ports: u32::from(client.port()) << 16 | u32::from(other.port()),
            udp: protocol == Protocol::Udp,
        }
    }
}

/// Flags of an entry.
pub mod flags {
    /// The entry holds a reference on a persistence template.
    pub const TEMPLATE: u8 = 0x01;
    /// The flow's real server was reset and the entry already released
    /// (counts, template); it stays until its next packet or its short
    /// expiry so that packet is counted as a reset, not an unknown flow.
    pub const TOMBSTONE: u8 = 0x02;
}

/// One connection. Small and `Copy`: the real server is an index, and the
/// entry carries what forwarding needs so that a real server removed from
/// the table (drain) keeps forwarding its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub client: SocketAddrV4,
    pub vaddr: SocketAddrV4,
    pub raddr: SocketAddrV4,
    pub real: RealId,
    /// The real server's reset epoch at creation; a later reset makes the
    /// entry dead.
    pub epoch: u32,
    /// Milliseconds since the director's base instant.
    pub expires: u64,
    pub protocol: Protocol,
    pub method: Method,
    /// `TcpState as u8` for TCP; 0 for UDP.
    pub state: u8,
    pub flags: u8,
    /// Prefix length of the persistence netmask, when `TEMPLATE` is set.
    pub tpl_prefix: u8,
}

impl Conn {
    pub fn in_key(&self) -> FlowKey {
        FlowKey::new(self.protocol, self.client, self.vaddr)
    }
    pub fn reply_key(&self) -> FlowKey {
        FlowKey::new(self.protocol, self.client, self.raddr)
    }
    fn has_reply_index(&self) -> bool {
        self.method == Method::Nat
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    conn: Conn,
    live: bool,
}

/// One shard: slab + indexes + a sweep cursor.
///
/// The indexes are `hashbrown::HashTable`s rather than `HashMap`s so that a
/// key is hashed once per packet: the caller hashes it ([`Shard::hash`]),
/// looks it up, and on a miss inserts with the same hash and without the
/// duplicate probe a map's `insert` makes (the miss just proved there is
/// none).
#[derive(Debug)]
pub struct Shard {
    slots: Vec<Slot>,
    free: Vec<u32>,
    hasher: FastBuild,
    index: HashTable<Entry>,
    reply: HashTable<Entry>,
    cursor: usize,
    /// Where the next eviction search starts; advanced by each search so
    /// that eviction looks at the whole shard over time.
    evict_cursor: usize,
}

impl Shard {
    pub fn new(hasher: FastBuild) -> Shard {
        Shard {
            slots: Vec::new(),
            free: Vec::new(),
            hasher,
            index: HashTable::new(),
            reply: HashTable::new(),
            cursor: 0,
            evict_cursor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The hash both indexes use for `key`.
    #[inline]
    pub fn hash(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn find_in(&self, key: &FlowKey) -> Option<u32> {
        self.find_in_hashed(self.hash(key), key)
    }

    /// [`Shard::find_in`] with `hash` = [`Shard::hash`] of `key`.
    #[inline]
    pub fn find_in_hashed(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        self.index.find(hash, |e| e.is(key)).map(Entry::slot)
    }

    pub fn find_reply(&self, key: &FlowKey) -> Option<u32> {
        self.find_reply_hashed(self.hash(key), key)
    }

    /// [`Shard::find_reply`] with `hash` = [`Shard::hash`] of `key`.
    #[inline]
    pub fn find_reply_hashed(&self, hash: u64, key: &FlowKey) -> Option<u32> {
        self.reply.find(hash, |e| e.is(key)).map(Entry::slot)
    }

    /// # Panics
    /// If `slot` did not come from this shard's `find_*`/`insert` (a logic
    /// error, never input-driven).
    pub fn get(&self, slot: u32) -> &Conn {
        &self.slots[slot as usize].conn
    }

    /// # Panics
    /// As [`Shard::get`].
    pub fn get_mut(&mut self, slot: u32) -> &mut Conn {
        &mut self.slots[slot as usize].conn
    }

    /// Inserts a new entry; the caller has checked that its in-key (and
    /// reply key) are free.
    pub fn insert(&mut self, conn: Conn) -> u32 {
        let h_in = self.hash(&conn.in_key());
        let h_reply = self.hash(&conn.reply_key());
        self.insert_hashed(conn, h_in, h_reply)
    }

    /// [`Shard::insert`] with the [`Shard::hash`]es of the entry's in-key
    /// and reply key (the latter unused for a method without replies).
    pub fn insert_hashed(&mut self, conn: Conn, h_in: u64, h_reply: u64) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Slot { conn, live: true };
                s
            }
            None => {
                self.slots.push(Slot { conn, live: true });
                // The table is capped far below u32::MAX entries.
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        debug_assert!(slot < UDP_TAG, "slot {slot} would carry the protocol bit");
        debug_assert_eq!(h_in, self.hash(&conn.in_key()));
        let hasher = self.hasher;
        let rehash = move |e: &Entry| hasher.hash_one(e.key());
        self.index
            .insert_unique(h_in, Entry::new(conn.in_key(), slot), rehash);
        if conn.has_reply_index() {
            self.reply
                .insert_unique(h_reply, Entry::new(conn.reply_key(), slot), rehash);
        }
        slot
    }

    pub fn remove(&mut self, slot: u32) -> Conn {
        let s = &mut self.slots[slot as usize];
        s.live = false;
        let conn = s.conn;
        let key = conn.in_key();
        if let Ok(e) = self.index.find_entry(self.hash(&key), |e| e.is(&key)) {
            e.remove();
        }
        if conn.has_reply_index() {
            // Only our own reply entry: a refused duplicate never got one,
            // and another slot's must stay.
            let key = conn.reply_key();
            if let Ok(e) = self
                .reply
                .find_entry(self.hash(&key), |e| e.is(&key) && e.slot() == slot)
            {
                e.remove();
            }
        }
        self.free.push(slot);
        conn
    }

    /// Up to `budget` live slots from the sweep cursor for which `dead`
    /// holds, removed and handed to `release`. Bounded work per call;
    /// `dead` may change an entry it keeps.
    pub fn sweep(
        &mut self,
        budget: usize,
        mut dead: impl FnMut(&mut Conn) -> bool,
        mut release: impl FnMut(Conn),
    ) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let i = self.cursor;
            self.cursor += 1;
            let s = &mut self.slots[i];
            if s.live && dead(&mut s.conn) {
                // i < slots.len() ≤ u32::MAX by the cap.
                let c = self.remove(u32::try_from(i).unwrap_or(u32::MAX));
                release(c);
            }
        }
    }

    /// The oldest (soonest to expire) live entry for which `evictable`
    /// holds among `budget` slots from the eviction cursor, which then
    /// moves past them. For eviction when the table is full, like IPVS's
    /// drop_entry. Picking the oldest matters: a freed slot is reused by
    /// the very next insert, so "the first match" would evict the newest
    /// half-open entry again and again — under a SYN flood that is the
    /// legitimate client whose handshake is still in flight.
    pub fn find_evictable(
        &mut self,
        budget: usize,
        evictable: impl Fn(&Conn) -> bool,
    ) -> Option<u32> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let start = self.evict_cursor % n;
        let budget = budget.min(n);
        self.evict_cursor = (start + budget) % n;
        (0..budget)
            .map(|k| (start + k) % n)
            .filter(|&i| self.slots[i].live && evictable(&self.slots[i].conn))
            .min_by_key(|&i| self.slots[i].conn.expires)
            .and_then(|i| u32::try_from(i).ok())
    }

    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for s in &self.slots {
            if s.live {
                f(&s.conn);
            }
        }
    }

    /// Bytes held by this shard (slab and both indexes, by capacity).
    pub fn memory(&self) -> usize {
        // hashbrown: one control byte per bucket besides the entry.
        let map_entry = std::mem::size_of::<Entry>() + 1;
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.free.capacity() * 4
            + (self.index.capacity() + self.reply.capacity()) * map_entry
    }
}

/// A persistence template: (client & netmask, VIP, port) → real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    pub real: RealId,
    pub raddr: SocketAddrV4,
    pub epoch: u32,
    /// Connections created through this template that are still alive.
    pub conns: u32,
    /// While `conns` is 0: milliseconds (director clock) when it dies.
    pub expires: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub client_net: Ipv4Addr,
    pub vaddr: SocketAddrV4,
    pub protocol: Protocol,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(port: u16, method: Method) -> Conn {
        Conn {
            client: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 2), port),
            vaddr: SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 10), 80),
            raddr: SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 11), 8080),
            real: RealId(0),
            epoch: 0,
            expires: u64::from(port),
            protocol: Protocol::Tcp,
            method,
            state: 0,
            flags: 0,
            tpl_prefix: 32,
        }
    }

    #[test]
    fn insert_find_remove_reuses_slots() {
        let mut s = Shard::new(FastBuild::with_key(7));
        let a = s.insert(conn(1000, Method::Nat));
        let b = s.insert(conn(1001, Method::Dr));
        assert_eq!(s.len(), 2);
        assert_eq!(s.find_in(&conn(1000, Method::Nat).in_key()), Some(a));
        assert_eq!(s.find_reply(&conn(1000, Method::Nat).reply_key()), Some(a));
        assert_eq!(s.find_reply(&conn(1001, Method::Dr).reply_key()), None);
        s.remove(a);
        assert_eq!(s.find_in(&conn(1000, Method::Nat).in_key()), None);
        assert_eq!(s.find_reply(&conn(1000, Method::Nat).reply_key()), None);
        let c = s.insert(conn(1002, Method::Nat));
        assert_eq!(c, a, "freed slot reused");
        assert_eq!(s.get(b).client.port(), 1001);
    }

    #[test]
    fn sweep_is_bounded_and_wraps() {
        let mut s = Shard::new(FastBuild::with_key(7));
        for p in 0..10 {
            s.insert(conn(p, Method::Dr));
        }
        let mut gone = Vec::new();
        s.sweep(4, |c| c.expires < 5, |c| gone.push(c.client.port()));
        assert_eq!(gone, vec![0, 1, 2, 3]);
        s.sweep(100, |c| c.expires < 5, |c| gone.push(c.client.port()));
        assert_eq!(gone, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.len(), 5);
        assert!(s.find_evictable(10, |c| c.expires == 9).is_some());
    }

    #[test]
    fn eviction_picks_the_oldest_match_and_moves_on() {
        let mut s = Shard::new(FastBuild::with_key(7));
        // expires = port: 10..=17; odd ports are "half-open".
        for p in [13, 11, 17, 15, 10, 12, 14, 16] {
            s.insert(conn(p, Method::Dr));
        }
        let odd = |c: &Conn| c.client.port() % 2 == 1;
        let first = s.find_evictable(4, odd).expect("a match in the first 4");
        assert_eq!(s.get(first).client.port(), 11, "oldest of 13, 11, 17, 15");
        // The next search starts after those 4 slots: 10, 12, 14, 16.
        assert_eq!(s.find_evictable(4, odd), None);
        let again = s.find_evictable(4, odd).expect("wrapped around");
        assert_eq!(s.get(again).client.port(), 11);
        assert_eq!(s.find_evictable(100, |_| false), None);
    }
}
