//! Counting rules in a namespace's nftables, to observe packets the test
//! cannot see otherwise (e.g. TCP RSTs reaching the client).

use std::process::Command;

use super::{run_bounded, Topology, COMMAND_TIMEOUT};

/// A named nftables counter behind one rule, in its own table
/// `inet rvs_test_<n>` of one namespace (gone with the namespace).
///
/// ```ignore
/// let rst = topo.nft_counter("cli", "input", "tcp flags & rst == rst");
/// // … traffic …
/// assert_eq!(rst.packets(), 0);
/// ```
#[derive(Debug, Clone)]
pub struct NftCounter {
    ns: String,
    table: String,
}

impl NftCounter {
    /// Installs, in namespace `short`, a base chain on `hook` (prerouting,
    /// input, forward, output or postrouting) at priority -400 (before
    /// conntrack and any other table) with the rule `<rule> counter`.
    /// `rule` is nft match syntax, e.g. `ip saddr 203.0.113.10 tcp sport 80`;
    /// "" counts every packet.
    ///
    /// # Panics
    /// If nft rejects the rule, with its message.
    pub fn install(topo: &Topology, short: &str, hook: &str, rule: &str) -> NftCounter {
        let table = format!("rvs_test_{}", topo.next_id());
        let text = format!(
            "table inet {table} {{\n\
             \tcounter c {{ }}\n\
             \tchain count {{\n\
             \t\ttype filter hook {hook} priority -400; policy accept;\n\
             \t\t{rule} counter name c\n\
             \t}}\n\
             }}\n"
        );
        let path = topo.write_file(&format!("{table}.nft"), &text);
        let path = path.to_string_lossy().into_owned();
        topo.exec_ok(short, &["nft", "-f", &path]);
        NftCounter {
            ns: topo.ns(short).to_string(),
            table,
        }
    }

    fn read(&self) -> (u64, u64) {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns", "exec", &self.ns, "nft", "-j", "list", "counter", "inet",
        ])
        .args([self.table.as_str(), "c"]);
        let out = run_bounded(cmd, COMMAND_TIMEOUT);
        assert!(
            out.status.success(),
            "reading counter {} in {}: {}",
            self.table,
            self.ns,
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("nft -j output is not JSON: {e}"));
        let counter = json["nftables"]
            .as_array()
            .and_then(|items| items.iter().find_map(|i| i.get("counter")))
            .unwrap_or_else(|| panic!("no counter object in {json}"));
        (
            counter["packets"].as_u64().unwrap_or(0),
            counter["bytes"].as_u64().unwrap_or(0),
        )
    }

    /// Packets counted so far.
    pub fn packets(&self) -> u64 {
        self.read().0
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.read().1
    }

    /// Name of the table holding the counter.
    pub fn table(&self) -> &str {
        &self.table
    }
}
