//! The data path: the only code that touches the kernel's packet path —
//! AF_PACKET sockets, workers, neighbours, nftables steering, and the
//! tunnel endpoint that stands in for the kernel's `ipip` on real servers.
//!
//! Rules of this layer: per packet, no allocation and no global lock; the
//! core decides, this layer moves bytes and resolves next hops.

pub mod afpacket;
pub mod bpf;
pub mod coalesce;
pub mod hostwatch;
pub mod neigh;
pub mod nft;
pub mod realserver;
pub mod ring;
pub mod system;
pub mod tunnel_endpoint;
pub mod worker;
