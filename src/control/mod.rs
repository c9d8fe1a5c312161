//! Control plane: config, reload, control socket, health checks, metrics.
//!
//! Tokio lives here, and only here; nothing in this layer is ever on the
//! packet path. It turns files, signals and control-socket requests into new
//! validated `Arc<Config>` snapshots and hands them to the data path.

pub mod config;
pub mod daemon;
pub mod duration;
pub mod health;
pub mod metrics;
pub mod protocol;
pub mod state;
