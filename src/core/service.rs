//! The virtual-service table as the packet path sees it: an immutable
//! [`Snapshot`] built from a validated `Config`, the host view and the
//! runtime state (health, runtime weights), swapped whole on every change.
//!
//! Real servers live in a [`Registry`] that outlasts snapshots: a real
//! server keeps its [`RealId`], counters and connection counts across
//! reloads for as long as the process runs, so `rvs services` never goes
//! backwards and removed servers can drain.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use crate::core::config::{Config, ConnPolicy, Method, Persistence, Protocol, ServiceConfig};
use crate::core::conntrack::RealId;
use crate::core::counters::PerWorker;
use crate::core::hash::{random_key, WordMap};
use crate::core::host::{HostView, RouteTable};
use crate::core::sched::{self, Scheduler, ServerLoad, ServerSlot};

/// (protocol, VIP, port): a virtual service's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub addr: SocketAddrV4,
}

impl std::fmt::Display for ServiceKey {
    /// `203.0.113.10:80/tcp`, the `service` label of the metrics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.protocol.as_str())
    }
}

/// A real server's identity within its service.
pub type RealKey = (ServiceKey, SocketAddrV4);

/// Counters and live counts of one real server; shared by every snapshot.
#[derive(Debug)]
pub struct RealState {
    pub id: RealId,
    pub service: ServiceKey,
    pub addr: SocketAddrV4,
    pub active: AtomicU32,
    pub inactive: AtomicU32,
    /// Persistence templates pointing here.
    pub templates: AtomicU32,
    pub conns_total: PerWorker,
    pub in_pkts: PerWorker,
    pub out_pkts: PerWorker,
    pub in_bytes: PerWorker,
    pub out_bytes: PerWorker,
    /// Bumped when the server's connections are reset; entries created
    /// under an older epoch are dead.
    pub epoch: AtomicU32,
    /// Over `max_connections`, until it falls below `min_connections`.
    pub overloaded: AtomicBool,
}

impl RealState {
    fn new(id: RealId, service: ServiceKey, addr: SocketAddrV4) -> RealState {
        RealState {
            id,
            service,
            addr,
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            templates: AtomicU32::new(0),
            conns_total: PerWorker::default(),
            in_pkts: PerWorker::default(),
            out_pkts: PerWorker::default(),
            in_bytes: PerWorker::default(),
            out_bytes: PerWorker::default(),
            epoch: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
        }
    }

    pub fn connections(&self) -> u32 {
        self.active
            .load(Ordering::Relaxed)
            .saturating_add(self.inactive.load(Ordering::Relaxed))
    }

    pub fn zero_stats(&self) {
        for c in [
            &self.conns_total,
            &self.in_pkts,
            &self.out_pkts,
            &self.in_bytes,
            &self.out_bytes,
        ] {
            c.reset();
        }
    }
}

/// Every real server the process has known, by identity.
#[derive(Debug, Default)]
pub struct Registry {
    reals: Vec<Arc<RealState>>,
    by_key: HashMap<RealKey, RealId>,
}

impl Registry {
    pub fn get_or_insert(&mut self, key: RealKey) -> RealId {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = RealId(u32::try_from(self.reals.len()).unwrap_or(u32::MAX));
        self.reals.push(Arc::new(RealState::new(id, key.0, key.1)));
        self.by_key.insert(key, id);
        id
    }

    pub fn all(&self) -> &[Arc<RealState>] {
        &self.reals
    }
}

/// Health and operator overrides that change effective weights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeState {
    /// Weights set with `rvs weight` (they win over the file's).
    pub weights: HashMap<RealKey, u32>,
    /// Real servers that health checks hold down.
    pub down: HashSet<RealKey>,
}

/// One real server of a service in a snapshot.
#[derive(Debug, Clone)]
pub struct ServiceReal {
    pub id: RealId,
    pub addr: SocketAddrV4,
    pub method: Method,
    /// Weight from the file or `rvs weight`.
    pub weight: u32,
    /// 0 when down, quiescent or the service is draining.
    pub effective_weight: u32,
    pub down: bool,
    pub max_connections: u32,
    pub min_connections: u32,
}

/// One virtual service in a snapshot.
#[derive(Debug)]
pub struct Service {
    pub key: ServiceKey,
    pub config: ServiceConfig,
    pub reals: Vec<ServiceReal>,
    pub scheduler: Box<dyn Scheduler>,
    pub sorry: Option<ServiceReal>,
    /// False for a service removed from the file whose connections drain.
    pub accepting: bool,
}

impl Service {
    pub fn persistence(&self) -> Option<Persistence> {
        self.config.persistence
    }

    /// The effective weight a scheduler may use now: 0 while the server is
    /// over its connection limit (IPVS -x/-y hysteresis).
    pub fn live_weight(&self, r: &ServiceReal, state: &RealState) -> u32 {
        if r.effective_weight == 0 {
            return 0;
        }
        if r.max_connections > 0 {
            let n = state.connections();
            let lower = if r.min_connections > 0 {
                r.min_connections
            } else {
                // IPVS's default lower threshold is 3/4 of the upper one.
                r.max_connections - r.max_connections / 4
            };
            if n >= r.max_connections {
                state.overloaded.store(true, Ordering::Relaxed);
            } else if n < lower {
                state.overloaded.store(false, Ordering::Relaxed);
            }
            if state.overloaded.load(Ordering::Relaxed) {
                return 0;
            }
        }
        r.effective_weight
    }

    /// Fills `loads` for the scheduler.
    pub fn loads(&self, reals: &[Arc<RealState>], loads: &mut Vec<ServerLoad>) {
        loads.clear();
        for r in &self.reals {
            let (w, a, i) = match reals.get(r.id.0 as usize) {
                Some(s) => (
                    self.live_weight(r, s),
                    s.active.load(Ordering::Relaxed),
                    s.inactive.load(Ordering::Relaxed),
                ),
                None => (0, 0, 0),
            };
            loads.push(ServerLoad {
                weight: w,
                active: a,
                inactive: i,
            });
        }
    }

    pub fn up_weight(&self) -> u32 {
        self.reals
            .iter()
            .filter(|r| !r.down)
            .map(|r| r.weight)
            .sum()
    }
}

/// (protocol, address, port) packed into one word, never 0 (the protocol
/// is stored plus one), for the [`WordMap`]s.
fn endpoint_word(protocol: Protocol, addr: SocketAddrV4) -> u64 {
    (u64::from(protocol as u8) + 1) << 48
        | u64::from(u32::from(*addr.ip())) << 16
        | u64::from(addr.port())
}

/// The inverse of [`endpoint_word`].
fn word_endpoint(word: u64) -> (Protocol, SocketAddrV4) {
    let protocol = if word >> 48 == 1 {
        Protocol::Tcp
    } else {
        Protocol::Udp
    };
    #[allow(clippy::cast_possible_truncation)]
    let addr = SocketAddrV4::new(Ipv4Addr::from((word >> 16) as u32), word as u16);
    (protocol, addr)
}

/// An address as a nonzero [`WordMap`] key.
fn addr_word(addr: Ipv4Addr) -> u64 {
    1 << 32 | u64::from(u32::from(addr))
}

/// The immutable table the packet path reads.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub host: Arc<HostView>,
    pub services: Vec<Service>,
    /// Index in `services`, keyed by [`endpoint_word`]; probed for every
    /// packet, as are the two below.
    by_key: WordMap<usize>,
    /// Keyed by [`addr_word`].
    vips: WordMap<()>,
    /// (protocol, address, port) of NAT real servers, draining ones
    /// included: replies from them are rewritten. Keyed by
    /// [`endpoint_word`].
    nat_reals: WordMap<()>,
    /// Every real server known so far, indexed by `RealId`.
    pub reals: Vec<Arc<RealState>>,
    /// `host`'s routes compiled for per-packet lookups.
    pub routes: RouteTable,
}

impl Snapshot {
    #[inline(always)]
    pub fn service(&self, protocol: Protocol, addr: SocketAddrV4) -> Option<&Service> {
        self.by_key
            .get(endpoint_word(protocol, addr))
            .and_then(|i| self.services.get(i))
    }

    #[inline]
    pub fn is_vip(&self, addr: Ipv4Addr) -> bool {
        self.vips.contains(addr_word(addr))
    }

    pub fn vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        #[allow(clippy::cast_possible_truncation)]
        self.vips.iter().map(|(w, ())| Ipv4Addr::from(w as u32))
    }

    #[inline(always)]
    pub fn is_nat_real(&self, protocol: Protocol, addr: SocketAddrV4) -> bool {
        self.nat_reals.contains(endpoint_word(protocol, addr))
    }

    pub fn nat_reals(&self) -> impl Iterator<Item = (Protocol, SocketAddrV4)> + '_ {
        self.nat_reals.iter().map(|(w, ())| word_endpoint(w))
    }

    /// Egress interface and next hop toward `dst`.
    #[inline]
    pub fn route(&self, dst: Ipv4Addr) -> Option<crate::core::host::Hop> {
        self.routes.route(dst)
    }

    #[inline]
    pub fn real(&self, id: RealId) -> Option<&Arc<RealState>> {
        self.reals.get(id.0 as usize)
    }

    /// Builds a snapshot. `previous` is the snapshot being replaced (for
    /// draining services); real servers whose connections must be reset
    /// (removed with `on_remove = "reset"`) get their epoch bumped here.
    pub fn build(
        config: Arc<Config>,
        host: Arc<HostView>,
        runtime: &RuntimeState,
        registry: &mut Registry,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let seed = config.daemon.seed;
        let mut services = Vec::new();
        let mut present: HashSet<RealKey> = HashSet::new();
        for sc in &config.services {
            let key = ServiceKey {
                protocol: sc.protocol,
                addr: sc.address,
            };
            let mut reals = Vec::new();
            for rc in &sc.real_servers {
                let rk = (key, rc.address);
                present.insert(rk);
                let id = registry.get_or_insert(rk);
                let weight = runtime.weights.get(&rk).copied().unwrap_or(rc.weight);
                let down = runtime.down.contains(&rk);
                reals.push(ServiceReal {
                    id,
                    addr: rc.address,
                    method: rc.method,
                    weight,
                    effective_weight: if down { 0 } else { weight },
                    down,
                    max_connections: rc.max_connections,
                    min_connections: rc.min_connections,
                });
            }
            let sorry = sc.sorry_server.map(|addr| {
                let rk = (key, addr);
                present.insert(rk);
                ServiceReal {
                    id: registry.get_or_insert(rk),
                    addr,
                    method: sc.forwarding,
                    weight: 1,
                    effective_weight: 1,
                    down: false,
                    max_connections: 0,
                    min_connections: 0,
                }
            });
            let slots: Vec<ServerSlot> = reals
                .iter()
                .map(|r| ServerSlot {
                    address: r.addr,
                    weight: r.effective_weight,
                })
                .collect();
            services.push(Service {
                key,
                config: sc.clone(),
                scheduler: sched::build(sc.scheduler, &slots, seed),
                reals,
                sorry,
                accepting: true,
            });
        }

        // Services and servers that left the file.
        if let Some(prev) = previous {
            for ps in &prev.services {
                let gone = !services.iter().any(|s| s.key == ps.key);
                for r in ps.reals.iter().chain(ps.sorry.iter()) {
                    if present.contains(&(ps.key, r.addr)) {
                        continue;
                    }
                    if ps.config.on_remove == ConnPolicy::Reset {
                        if let Some(st) = prev.real(r.id) {
                            st.epoch.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let live = ps
                    .reals
                    .iter()
                    .chain(ps.sorry.iter())
                    .any(|r| prev.real(r.id).is_some_and(|s| s.connections() > 0));
                if gone && ps.config.on_remove == ConnPolicy::Keep && live {
                    let reals: Vec<ServiceReal> = ps
                        .reals
                        .iter()
                        .map(|r| ServiceReal {
                            effective_weight: 0,
                            ..r.clone()
                        })
                        .collect();
                    let slots: Vec<ServerSlot> = reals
                        .iter()
                        .map(|r| ServerSlot {
                            address: r.addr,
                            weight: 0,
                        })
                        .collect();
                    services.push(Service {
                        key: ps.key,
                        config: ps.config.clone(),
                        scheduler: sched::build(ps.config.scheduler, &slots, seed),
                        reals,
                        sorry: None,
                        accepting: false,
                    });
                }
            }
        }

        let key = random_key();
        let mut by_key = WordMap::new(key);
        let mut vips = WordMap::new(key);
        let mut nat_reals = WordMap::new(key);
        for (i, s) in services.iter().enumerate() {
            by_key.insert(endpoint_word(s.key.protocol, s.key.addr), i);
            vips.insert(addr_word(*s.key.addr.ip()), ());
            for r in s.reals.iter().chain(s.sorry.iter()) {
                if r.method == Method::Nat {
                    nat_reals.insert(endpoint_word(s.key.protocol, r.addr), ());
                }
            }
        }
        // Removed NAT servers still draining keep their replies rewritten.
        for st in registry.all() {
            if st.connections() > 0 && !present.contains(&(st.service, st.addr)) {
                nat_reals.insert(endpoint_word(st.service.protocol, st.addr), ());
            }
        }
        Snapshot {
            routes: RouteTable::new(&host),
            config,
            host,
            services,
            by_key,
            vips,
            nat_reals,
            reals: registry.all().to_vec(),
        }
    }
}
