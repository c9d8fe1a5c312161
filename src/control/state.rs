//! The runtime state file: weights set with `rvs weight`/`rvs drain`
//! survive a daemon restart in `state_dir/weights.json`.
//!
//! Each entry records the file's weight for that server when it was saved;
//! on start an entry is kept only while the file still says that weight, so
//! "a runtime weight is kept until the file itself changes that server"
//! holds across restarts as it does across reloads.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::config::Config;
use crate::core::service::{RealKey, ServiceKey};

pub const FILE_NAME: &str = "weights.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// `VIP:PORT/proto`.
    service: String,
    real: String,
    weight: u32,
    /// The file's weight when the runtime one was saved.
    file_weight: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    weights: Vec<Entry>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Every real server of the file: `("VIP:PORT/proto", "RIP:PORT")` → its
/// key and file weight.
fn file_reals(config: &Config) -> HashMap<(String, String), (RealKey, u32)> {
    let mut m = HashMap::new();
    for s in &config.services {
        let key = ServiceKey {
            protocol: s.protocol,
            addr: s.address,
        };
        for r in &s.real_servers {
            m.insert(
                (key.to_string(), r.address.to_string()),
                ((key, r.address), r.weight),
            );
        }
    }
    m
}

/// Writes the runtime weights (atomically: a temporary file renamed over
/// the old one). With no runtime weight and no file yet, nothing is created.
pub fn save(dir: &Path, config: &Config, weights: &HashMap<RealKey, u32>) -> io::Result<()> {
    let file = path(dir);
    if weights.is_empty() && !file.exists() {
        return Ok(());
    }
    let by_key: HashMap<RealKey, u32> = file_reals(config).into_values().collect();
    let mut entries: Vec<Entry> = weights
        .iter()
        .filter_map(|(k, &w)| {
            by_key.get(k).map(|&fw| Entry {
                service: k.0.to_string(),
                real: k.1.to_string(),
                weight: w,
                file_weight: fw,
            })
        })
        .collect();
    entries.sort_by(|a, b| (&a.service, &a.real).cmp(&(&b.service, &b.real)));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let text =
        serde_json::to_string_pretty(&StateFile { weights: entries }).map_err(io::Error::other)?;
    // Never write through a symlink someone left at the temporary name:
    // remove whatever is there (remove_file does not follow links), then
    // create the file exclusively without following links.
    let _ = std::fs::remove_file(&tmp);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all((text + "\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)
}

/// The runtime weights to start with, and a note per entry dropped because
/// the file changed (or removed) that server since it was saved.
pub fn load(dir: &Path, config: &Config) -> io::Result<(HashMap<RealKey, u32>, Vec<String>)> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(e),
    };
    let state: StateFile = serde_json::from_str(&text)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let reals = file_reals(config);
    let mut weights = HashMap::new();
    let mut dropped = Vec::new();
    for e in state.weights {
        match reals.get(&(e.service.clone(), e.real.clone())) {
            Some(&(key, fw)) if fw == e.file_weight => {
                weights.insert(key, e.weight);
            }
            Some(&(_, fw)) => dropped.push(format!(
                "runtime weight {} of {} in {} dropped: the file changed its weight ({} → {fw})",
                e.weight, e.real, e.service, e.file_weight
            )),
            None => dropped.push(format!(
                "runtime weight {} of {} in {} dropped: no longer in the file",
                e.weight, e.real, e.service
            )),
        }
    }
    Ok((weights, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::ConnPolicy;
    use crate::core::config::{Method, Protocol, RealServerConfig, SchedulerKind, ServiceConfig};

    fn config(weights: &[(u8, u32)]) -> Config {
        Config {
            services: vec![ServiceConfig {
                name: "web".into(),
                protocol: Protocol::Tcp,
                address: "203.0.113.10:80".parse().unwrap(),
                scheduler: SchedulerKind::Rr,
                persistence: None,
                on_remove: ConnPolicy::Keep,
                on_down: ConnPolicy::Keep,
                sorry_server: None,
                forwarding: Method::Nat,
                quorum: 0,
                health_check: None,
                real_servers: weights
                    .iter()
                    .map(|&(last, w)| RealServerConfig {
                        address: format!("192.0.2.{last}:8080").parse().unwrap(),
                        weight: w,
                        method: Method::Nat,
                        health_check: None,
                        max_connections: 0,
                        min_connections: 0,
                    })
                    .collect(),
            }],
            ..Config::default()
        }
    }

    fn key(last: u8) -> RealKey {
        (
            ServiceKey {
                protocol: Protocol::Tcp,
                addr: "203.0.113.10:80".parse().unwrap(),
            },
            format!("192.0.2.{last}:8080").parse().unwrap(),
        )
    }

    #[test]
    fn weights_survive_until_the_file_changes_the_server() {
        let dir = std::env::temp_dir().join(format!("rvs-state-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = config(&[(11, 1), (12, 1)]);
        // Nothing to save: no file is created.
        save(&dir, &cfg, &HashMap::new()).unwrap();
        assert!(!path(&dir).exists());

        let w: HashMap<RealKey, u32> = [(key(11), 5), (key(12), 0)].into();
        save(&dir, &cfg, &w).unwrap();
        let (got, dropped) = load(&dir, &cfg).unwrap();
        assert_eq!(got, w);
        assert!(dropped.is_empty());

        // The file changed 12's weight and removed nothing: 11 stays.
        let (got, dropped) = load(&dir, &config(&[(11, 1), (12, 3)])).unwrap();
        assert_eq!(got, [(key(11), 5)].into());
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(dropped[0].contains("192.0.2.12:8080"), "{dropped:?}");
        // 11 left the file.
        let (got, dropped) = load(&dir, &config(&[(12, 1)])).unwrap();
        assert_eq!(got, [(key(12), 0)].into());
        assert!(dropped[0].contains("no longer in the file"), "{dropped:?}");

        // All runtime weights cleared: the file says so (empty), not stale.
        save(&dir, &cfg, &HashMap::new()).unwrap();
        assert!(load(&dir, &cfg).unwrap().0.is_empty());

        std::fs::write(path(&dir), "not json").unwrap();
        assert!(load(&dir, &cfg).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
