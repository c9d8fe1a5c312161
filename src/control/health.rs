//! Health checks (placeholder API; checks are run by `HealthManager`).
//!
//! One tokio task per (service, real server) with a check configured; each
//! probe uses a fresh connection and its own timeout, never blocks another
//! check or the packet path. Transitions need `rise` consecutive successes
//! or `fall` consecutive failures and are reported once as a
//! [`HealthEvent`].

use std::collections::HashMap;

use tokio::sync::mpsc;

use crate::core::config::Config;
use crate::core::service::RealKey;

/// A real server's health as the checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No result yet, or no check configured.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A state change of one real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub real: RealKey,
    pub health: Health,
    /// Why: "timeout", "connection refused", "status 503", …
    pub reason: String,
}

/// Runs the checks of the current config.
#[derive(Debug)]
pub struct HealthManager {
    events: mpsc::UnboundedSender<HealthEvent>,
    states: HashMap<RealKey, Health>,
}

impl HealthManager {
    pub fn new(events: mpsc::UnboundedSender<HealthEvent>) -> HealthManager {
        HealthManager {
            events,
            states: HashMap::new(),
        }
    }

    /// Starts checks for new (service, server, check) triples, stops those
    /// no longer in `config`, keeps the state of unchanged ones.
    pub fn sync(&mut self, config: &Config) {
        let _ = (&self.events, config);
    }

    /// Records a transition reported by a check task.
    pub fn record(&mut self, ev: &HealthEvent) {
        self.states.insert(ev.real, ev.health);
    }

    pub fn state(&self, real: &RealKey) -> Health {
        self.states.get(real).copied().unwrap_or(Health::Unknown)
    }
}
