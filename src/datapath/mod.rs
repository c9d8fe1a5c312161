//! The `datapath` layer is the only code that touches the kernel's packet
//! path: AF_PACKET sockets, workers, neighbours, nftables steering, the
//! tunnel endpoint. It turns what the sans-IO [`crate::core`] decides into
//! system calls and nothing more: no scheduling or connection-table logic
//! lives here, every packet from the network is treated as hostile (a bad one
//! gets a counter, never a panic), and each `unsafe` block carries a
//! `// SAFETY:` comment.

pub mod tunnel_endpoint;
