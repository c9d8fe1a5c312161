//! Loading the TOML configuration into a validated [`Config`].
//!
//! Parse, don't validate: the file is read into a `toml_edit::ImDocument`,
//! which keeps the byte span of every key and value, and walked by hand. Each
//! problem becomes a [`Diagnostic`] with `file:line:column`, and the walk goes
//! on, so one run of `rvs check` reports every mistake in the file, not only
//! the first. A [`Config`] is built only when there is no error; warnings
//! travel next to it.
//!
//! The schema is the one in DESIGN.md § Configuration.

mod host;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike, Value};

pub use self::host::{HostInfo, HostInterface};
pub use crate::control::duration::parse_duration;

/// The `control_socket` a config file names, read even from a file with
/// other mistakes (a broken edit must not lose the running daemon), else
/// the default. Errors: the file cannot be read, or is not TOML.
pub fn control_socket_in(path: &Path) -> Result<PathBuf, String> {
    if let Ok((config, _)) = load(path, None) {
        return Ok(config.daemon.control_socket);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read {}: {e} (or name the daemon's socket with --socket)",
            path.display()
        )
    })?;
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e| {
        format!(
            "{} is not TOML, so it names no control socket: {e}",
            path.display()
        )
    })?;
    Ok(doc
        .get("daemon")
        .and_then(|d| d.get("control_socket"))
        .and_then(|v| v.as_str())
        .map_or_else(|| DaemonConfig::default().control_socket, PathBuf::from))
}
use crate::core::config::{
    CheckKind, Config, ConnPolicy, DaemonConfig, HealthCheck, Method, Persistence, Protocol,
    RealServerConfig, SchedulerKind, ServiceConfig, Timeouts,
};

/// How bad a [`Diagnostic`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The file is refused.
    Error,
    /// The file is accepted, but probably not what was meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a config file, at a 1-based line and column (column in
/// characters). Line 0 means the whole file (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `FILE:LINE:COLUMN: error: message`, or `FILE: error: message` when
    /// the diagnostic is about the whole file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.severity,
                self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.severity,
                self.message
            )
        }
    }
}

/// Reads and parses the config file at `path`.
///
/// A file that cannot be read, or that anyone may write (mode `o+w`), is
/// refused with one diagnostic at line 0. See [`parse`] for the rest.
pub fn load(
    path: &Path,
    host: Option<&HostInfo>,
) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    use std::os::unix::fs::PermissionsExt;

    let whole_file = |message: String| {
        vec![Diagnostic {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }]
    };
    let io_reason = |e: std::io::Error| {
        // "No such file or directory (os error 2)" → "No such file or directory"
        let text = e.to_string();
        match text.find(" (os error") {
            Some(i) => text[..i].to_owned(),
            None => text,
        }
    };
    let mode = match std::fs::metadata(path) {
        Ok(m) => m.permissions().mode(),
        Err(e) => return Err(whole_file(format!("cannot read: {}", io_reason(e)))),
    };
    if mode & 0o002 != 0 {
        return Err(whole_file(format!(
            "refusing a world-writable config file (mode {:04o}); anyone could change the \
             virtual-service table; run `chmod o-w {}`",
            mode & 0o7777,
            path.display()
        )));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path, host),
        Err(e) => Err(whole_file(format!("cannot read: {}", io_reason(e)))),
    }
}

/// Parses config `text`; `file` names it in diagnostics.
///
/// With `host`, interface names are checked against the host and DR real
/// servers against its directly attached subnets.
///
/// Returns the config and its warnings, or every diagnostic: errors first,
/// then warnings, each group in file order.
pub fn parse(
    text: &str,
    file: &Path,
    host: Option<&HostInfo>,
) -> Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut cx = Cx::new(text, file, host);
    let config = match ImDocument::parse(text) {
        Ok(doc) => cx.config(doc.as_table()),
        Err(e) => {
            let message = e.message().trim().replace('\n', "; ");
            let pos = cx.pos(e.span());
            cx.error(pos, format!("invalid TOML: {message}"));
            None
        }
    };
    let (mut errors, mut warnings): (Vec<_>, Vec<_>) = cx
        .diags
        .into_iter()
        .partition(|d| d.severity == Severity::Error);
    errors.sort_by_key(|d| (d.line, d.column));
    warnings.sort_by_key(|d| (d.line, d.column));
    match config {
        Some(config) if errors.is_empty() => Ok((config, warnings)),
        _ => {
            if errors.is_empty() {
                // Every path that yields no Config reports an error first;
                // this keeps the contract if one ever does not.
                errors.push(Diagnostic {
                    severity: Severity::Error,
                    file: file.to_path_buf(),
                    line: 0,
                    column: 0,
                    message: "invalid configuration".to_owned(),
                });
            }
            errors.append(&mut warnings);
            Err(errors)
        }
    }
}

/// A 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The problem was reported already; the value is unusable.
#[derive(Debug, Clone, Copy)]
struct Bad;

/// A looked-up value: absent (`Ok(None)`), present and valid, or reported.
type Got<T> = Result<Option<T>, Bad>;

/// A table (standard, inline or array element) being walked.
#[derive(Clone, Copy)]
struct Tbl<'a> {
    t: &'a dyn TableLike,
    /// Header of a `[table]`, or the `{ … }` of an inline table.
    pos: Pos,
    /// How messages name the table: `[daemon]`, `health_check`, …
    what: &'static str,
}

/// The walk's state: the text (for positions), the host, the diagnostics.
struct Cx<'a> {
    text: &'a str,
    file: &'a Path,
    host: Option<&'a HostInfo>,
    line_starts: Vec<usize>,
    diags: Vec<Diagnostic>,
}

const TOP_KEYS: &[&str] = &["daemon", "timeouts", "virtual_service"];
const DAEMON_KEYS: &[&str] = &[
    "interfaces",
    "control_socket",
    "metrics_address",
    "max_connections",
    "workers",
    "sloppy_tcp",
    "seed",
    "state_dir",
    "control_group",
    "busy_poll_us",
];
const TIMEOUT_KEYS: &[&str] = &[
    "tcp_established",
    "tcp_syn_recv",
    "tcp_fin_wait",
    "tcp_time_wait",
    "tcp_close",
    "tcp_close_wait",
    "tcp_last_ack",
    "udp",
];
const SERVICE_KEYS: &[&str] = &[
    "name",
    "protocol",
    "address",
    "scheduler",
    "forwarding",
    "persistence",
    "on_remove",
    "on_down",
    "sorry_server",
    "quorum",
    "health_check",
    "real_server",
];
const REAL_KEYS: &[&str] = &[
    "address",
    "weight",
    "forwarding",
    "health_check",
    "max_connections",
    "min_connections",
];
const PERSISTENCE_KEYS: &[&str] = &["timeout", "netmask"];
const CHECK_COMMON_KEYS: &[&str] = &[
    "type",
    "interval",
    "timeout",
    "rise",
    "fall",
    "check_address",
    "check_port",
];
/// Keys that only one check type takes, with that type.
const CHECK_TYPED_KEYS: &[(&str, &str)] = &[
    ("path", "http"),
    ("host", "http"),
    ("status", "http"),
    ("body", "http"),
    ("payload", "udp"),
    ("expect", "udp"),
    ("command", "exec"),
];
/// In the order DESIGN.md lists them.
const SCHEDULERS: &[&str] = &["lc", "wlc", "rr", "wrr", "sh", "mh", "sed", "nq"];
/// `daemon.max_connections` upper bound: 2^30 entries (~110 GB of table).
/// A shard's slots are the live entries plus reset tombstones, at most
/// twice this, so slot indexes stay below 2^31 (the connection table keeps
/// the protocol in an index entry's top bit).
const MAX_TABLE: i64 = 1 << 30;
/// `daemon.busy_poll_us` upper bound: beyond 10 ms a worker would spin
/// through idle periods instead of bridging the gaps between packets.
const MAX_BUSY_POLL_US: u32 = 10_000;
/// `daemon.workers` upper bound.
const MAX_WORKERS: u32 = 256;
/// IPVS weights are 0..=65535 in ipvsadm.
const MAX_WEIGHT: u32 = 65_535;

/// Health check defaults (keepalived's usual values).
const CHECK_INTERVAL: Duration = Duration::from_secs(2);
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
const CHECK_RISE: u32 = 2;
const CHECK_FALL: u32 = 3;

/// A virtual service as parsed, with the positions later checks point at.
struct ParsedService {
    config: Option<ServiceConfig>,
    name: Option<(String, Pos)>,
    key: Option<((Protocol, SocketAddrV4), Pos)>,
}

impl<'a> Cx<'a> {
    fn new(text: &'a str, file: &'a Path, host: Option<&'a HostInfo>) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Cx {
            text,
            file,
            host,
            line_starts,
            diags: Vec::new(),
        }
    }

    // --- positions and reporting ---

    fn pos(&self, span: Option<Range<usize>>) -> Pos {
        let offset = span.map_or(0, |s| s.start).min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos { line, column }
    }

    fn report(&mut self, severity: Severity, pos: Pos, message: String) {
        self.diags.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message,
        });
    }

    fn error(&mut self, pos: Pos, message: String) {
        self.report(Severity::Error, pos, message);
    }

    fn warning(&mut self, pos: Pos, message: String) {
        self.report(Severity::Warning, pos, message);
    }

    /// Where an item is: its value, else its key, else its table.
    fn item_pos(&self, t: &Tbl<'_>, key: &str) -> Pos {
        match t.t.get_key_value(key) {
            Some((k, item)) => {
                let span = item_span(item).or_else(|| k.span());
                if span.is_some() {
                    self.pos(span)
                } else {
                    t.pos
                }
            }
            None => t.pos,
        }
    }

    fn key_pos(&self, t: &Tbl<'_>, key: &str) -> Pos {
        match t.t.key(key).and_then(|k| k.span()) {
            Some(span) => self.pos(Some(span)),
            None => self.item_pos(t, key),
        }
    }

    /// Reports every key of `t` not in `allowed`, suggesting a close one.
    fn unknown_keys(&mut self, t: &Tbl<'_>, allowed: &[&str]) {
        let keys: Vec<String> = t.t.iter().map(|(k, _)| k.to_owned()).collect();
        for key in keys {
            if allowed.contains(&key.as_str()) {
                continue;
            }
            let pos = self.key_pos(t, &key);
            let message = match suggest(&key, allowed) {
                Some(s) => format!("unknown key `{key}` in {}; did you mean `{s}`?", t.what),
                None => format!(
                    "unknown key `{key}` in {}; expected one of {}",
                    t.what,
                    allowed.join(", ")
                ),
            };
            self.error(pos, message);
        }
    }

    fn missing(&mut self, t: &Tbl<'_>, key: &str) {
        self.error(t.pos, format!("{} is missing required key `{key}`", t.what));
    }

    fn wrong_type(&mut self, pos: Pos, key: &str, expected: &str, item: &Item) {
        self.error(
            pos,
            format!("`{key}`: expected {expected}, found {}", type_article(item)),
        );
    }

    // --- typed getters: report wrong types, return the value and its position ---

    fn value<'t>(&mut self, t: &Tbl<'t>, key: &str) -> Option<(&'t Item, Pos)> {
        let item = t.t.get(key)?;
        Some((item, self.item_pos(t, key)))
    }

    fn string<'t>(&mut self, t: &Tbl<'t>, key: &str) -> Got<(&'t str, Pos)> {
        let Some((item, pos)) = self.value(t, key) else {
            return Ok(None);
        };
        match item.as_str() {
            Some(s) => Ok(Some((s, pos))),
            None => {
                self.wrong_type(pos, key, "a string", item);
                Err(Bad)
            }
        }
    }

    fn bool(&mut self, t: &Tbl<'_>, key: &str) -> Got<bool> {
        let Some((item, pos)) = self.value(t, key) else {
            return Ok(None);
        };
        match item.as_bool() {
            Some(b) => Ok(Some(b)),
            None => {
                self.wrong_type(pos, key, "a boolean", item);
                Err(Bad)
            }
        }
    }

    /// An integer in `min..=max`.
    fn int(&mut self, t: &Tbl<'_>, key: &str, min: i64, max: i64) -> Got<(i64, Pos)> {
        let Some((item, pos)) = self.value(t, key) else {
            return Ok(None);
        };
        match item.as_integer() {
            Some(n) if (min..=max).contains(&n) => Ok(Some((n, pos))),
            Some(n) => {
                self.error(
                    pos,
                    format!("`{key}` must be between {min} and {max}, found {n}"),
                );
                Err(Bad)
            }
            None => {
                self.wrong_type(pos, key, "an integer", item);
                Err(Bad)
            }
        }
    }

    fn u32(&mut self, t: &Tbl<'_>, key: &str, min: u32, max: u32) -> Got<(u32, Pos)> {
        let n = self.int(t, key, i64::from(min), i64::from(max))?;
        // The range check above keeps n within u32.
        Ok(n.map(|(n, pos)| (u32::try_from(n).unwrap_or(max), pos)))
    }

    /// A positive duration such as `"10s"`.
    fn duration(&mut self, t: &Tbl<'_>, key: &str) -> Got<(Duration, Pos)> {
        let Some((s, pos)) = self.string(t, key)? else {
            return Ok(None);
        };
        match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.error(
                    pos,
                    format!("`{key}` must be a positive duration, found \"{s}\""),
                );
                Err(Bad)
            }
            Ok(d) => Ok(Some((d, pos))),
            Err(why) => {
                self.error(pos, format!("`{key}`: {why}"));
                Err(Bad)
            }
        }
    }

    /// One of a fixed set of words; `kind` names the set in the message.
    fn word<T: Copy>(
        &mut self,
        t: &Tbl<'_>,
        key: &str,
        kind: &str,
        words: &[(&str, T)],
    ) -> Got<(T, Pos)> {
        let Some((s, pos)) = self.string(t, key)? else {
            return Ok(None);
        };
        match words.iter().find(|(w, _)| *w == s) {
            Some(&(_, v)) => Ok(Some((v, pos))),
            None => {
                let names: Vec<&str> = words.iter().map(|(w, _)| *w).collect();
                self.error(
                    pos,
                    format!(
                        "unknown {kind} \"{s}\"; expected one of {}",
                        names.join(", ")
                    ),
                );
                Err(Bad)
            }
        }
    }

    /// `"a.b.c.d:port"`, port not 0.
    fn socket_v4(&mut self, t: &Tbl<'_>, key: &str) -> Got<(SocketAddrV4, Pos)> {
        let Some((s, pos)) = self.string(t, key)? else {
            return Ok(None);
        };
        match s.parse::<SocketAddrV4>() {
            Ok(a) if a.port() == 0 => {
                self.error(
                    pos,
                    format!("`{key}`: port 0 is not a valid port in \"{s}\""),
                );
                Err(Bad)
            }
            Ok(a) => Ok(Some((a, pos))),
            Err(_) if s.parse::<std::net::SocketAddrV6>().is_ok() => {
                self.error(
                    pos,
                    format!(
                        "`{key}`: \"{s}\" is IPv6; rvs forwards IPv4 only (no IPv6 services yet)"
                    ),
                );
                Err(Bad)
            }
            Err(_) => {
                self.error(
                    pos,
                    format!(
                        "`{key}`: expected an IPv4 address and port such as \"192.0.2.11:80\", \
                         found \"{s}\""
                    ),
                );
                Err(Bad)
            }
        }
    }

    fn ipv4(&mut self, t: &Tbl<'_>, key: &str) -> Got<(Ipv4Addr, Pos)> {
        let Some((s, pos)) = self.string(t, key)? else {
            return Ok(None);
        };
        match s.parse::<Ipv4Addr>() {
            Ok(a) => Ok(Some((a, pos))),
            Err(_) => {
                self.error(
                    pos,
                    format!(
                        "`{key}`: expected an IPv4 address such as \"192.0.2.11\", found \"{s}\""
                    ),
                );
                Err(Bad)
            }
        }
    }

    /// A sub-table, inline (`{ … }`) or standard (`[a.b]`).
    fn table<'t>(&mut self, t: &Tbl<'t>, key: &str, what: &'static str) -> Got<Tbl<'t>> {
        let Some((item, pos)) = self.value(t, key) else {
            return Ok(None);
        };
        match item.as_table_like() {
            Some(sub) => Ok(Some(Tbl { t: sub, pos, what })),
            None => {
                self.wrong_type(pos, key, "a table", item);
                Err(Bad)
            }
        }
    }

    /// An array of tables, `[[a.b]]` or `[{ … }, { … }]`.
    fn tables<'t>(&mut self, t: &Tbl<'t>, key: &str, what: &'static str) -> Got<Vec<Tbl<'t>>> {
        let Some((item, pos)) = self.value(t, key) else {
            return Ok(None);
        };
        if let Some(aot) = item.as_array_of_tables() {
            let out = aot
                .iter()
                .map(|sub| Tbl {
                    t: sub,
                    pos: self.pos(sub.span()),
                    what,
                })
                .collect();
            return Ok(Some(out));
        }
        let Some(array) = item.as_array() else {
            self.wrong_type(pos, key, "an array of tables", item);
            return Err(Bad);
        };
        let mut out = Vec::new();
        let mut bad = false;
        for v in array.iter() {
            let vpos = self.pos(v.span());
            match v.as_inline_table() {
                Some(sub) => out.push(Tbl {
                    t: sub,
                    pos: vpos,
                    what,
                }),
                None => {
                    self.error(
                        vpos,
                        format!("`{key}`: expected a table, found {}", value_article(v)),
                    );
                    bad = true;
                }
            }
        }
        if bad {
            Err(Bad)
        } else {
            Ok(Some(out))
        }
    }

    // --- the schema ---

    fn config(&mut self, doc: &toml_edit::Table) -> Option<Config> {
        let top = Tbl {
            t: doc,
            pos: Pos { line: 1, column: 1 },
            what: "the top level",
        };
        self.unknown_keys(&top, TOP_KEYS);

        let daemon = match self.table(&top, "daemon", "[daemon]") {
            Ok(Some(t)) => self.daemon(&t),
            Ok(None) => {
                self.error(top.pos, "missing required table [daemon]".to_owned());
                None
            }
            Err(Bad) => None,
        };
        let timeouts = match self.table(&top, "timeouts", "[timeouts]") {
            Ok(Some(t)) => self.timeouts(&t),
            Ok(None) => Some(Timeouts::default()),
            Err(Bad) => None,
        };
        let interfaces = daemon.as_ref().map(|d| d.interfaces.as_slice());
        let services = match self.tables(&top, "virtual_service", "[[virtual_service]]") {
            Ok(Some(list)) => self.services(&list, interfaces),
            Ok(None) => Some(Vec::new()),
            Err(Bad) => None,
        };
        Some(Config {
            daemon: daemon?,
            timeouts: timeouts?,
            services: services?,
        })
    }

    fn daemon(&mut self, t: &Tbl<'_>) -> Option<DaemonConfig> {
        self.unknown_keys(t, DAEMON_KEYS);
        let defaults = DaemonConfig::default();
        let interfaces = self.interfaces(t);
        let control_socket = match self.string(t, "control_socket") {
            Ok(Some((s, pos))) if !s.starts_with('/') => {
                self.error(
                    pos,
                    format!("`control_socket` must be an absolute path, found \"{s}\""),
                );
                Err(Bad)
            }
            other => other.map(|o| o.map(|(s, _)| PathBuf::from(s))),
        };
        let state_dir = match self.string(t, "state_dir") {
            Ok(Some((s, pos))) if !s.starts_with('/') => {
                self.error(
                    pos,
                    format!("`state_dir` must be an absolute path, found \"{s}\""),
                );
                Err(Bad)
            }
            other => other.map(|o| o.map(|(s, _)| PathBuf::from(s))),
        };
        let metrics_address = match self.string(t, "metrics_address") {
            Ok(Some((s, pos))) => match s.parse::<SocketAddr>() {
                Ok(a) => Ok(Some(a)),
                Err(_) => {
                    self.error(
                        pos,
                        format!(
                            "`metrics_address`: expected an address and port such as \
                             \"127.0.0.1:9477\", found \"{s}\""
                        ),
                    );
                    Err(Bad)
                }
            },
            Ok(None) => Ok(None),
            Err(Bad) => Err(Bad),
        };
        let control_group = match self.string(t, "control_group") {
            Ok(Some((s, pos))) if s.is_empty() || s.contains(['\0', ':', '\n']) => {
                self.error(pos, format!("`control_group`: \"{s}\" is not a group name"));
                Err(Bad)
            }
            other => other.map(|o| o.map(|(s, _)| s.to_string())),
        };
        let max_connections = self.int(t, "max_connections", 1, MAX_TABLE);
        let workers = self.u32(t, "workers", 0, MAX_WORKERS);
        let sloppy_tcp = self.bool(t, "sloppy_tcp");
        let seed = self.int(t, "seed", 0, i64::MAX);
        let busy_poll_us = self.u32(t, "busy_poll_us", 0, MAX_BUSY_POLL_US);
        Some(DaemonConfig {
            interfaces: interfaces?,
            control_socket: or(control_socket, defaults.control_socket)?,
            metrics_address: metrics_address.ok()?,
            // MAX_TABLE is 2^30, below u32::MAX.
            max_connections: or(max_connections.map(|o| o.map(|(n, _)| n as u32)), 1_000_000)?,
            workers: or(workers.map(|o| o.map(|(n, _)| n)), defaults.workers)?,
            sloppy_tcp: or(sloppy_tcp, defaults.sloppy_tcp)?,
            // The range check keeps the seed non-negative.
            seed: or(
                seed.map(|o| o.map(|(n, _)| n.unsigned_abs())),
                defaults.seed,
            )?,
            state_dir: or(state_dir, defaults.state_dir)?,
            control_group: control_group.ok()?,
            busy_poll_us: or(
                busy_poll_us.map(|o| o.map(|(n, _)| n)),
                defaults.busy_poll_us,
            )?,
        })
    }

    fn interfaces(&mut self, t: &Tbl<'_>) -> Option<Vec<String>> {
        let Some((item, pos)) = self.value(t, "interfaces") else {
            self.missing(t, "interfaces");
            return None;
        };
        let Some(array) = item.as_array() else {
            self.wrong_type(pos, "interfaces", "an array of strings", item);
            return None;
        };
        if array.is_empty() {
            self.error(
                pos,
                "`interfaces` must name at least one interface".to_owned(),
            );
            return None;
        }
        let mut names: Vec<(String, Pos)> = Vec::new();
        let mut bad = false;
        for v in array.iter() {
            let vpos = self.pos(v.span());
            let Some(name) = v.as_str() else {
                self.error(
                    vpos,
                    format!(
                        "`interfaces`: expected a string, found {}",
                        value_article(v)
                    ),
                );
                bad = true;
                continue;
            };
            if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
                let first = *first;
                self.error(
                    vpos,
                    format!("interface `{name}` is listed twice (first at {first})"),
                );
                bad = true;
                continue;
            }
            if name.is_empty() {
                self.error(vpos, "`interfaces`: empty interface name".to_owned());
                bad = true;
            } else if let Some(host) = self.host {
                if host.interface(name).is_none() {
                    let known: Vec<&str> =
                        host.interfaces.iter().map(|i| i.name.as_str()).collect();
                    self.error(
                        vpos,
                        format!(
                            "unknown interface `{name}`; this host has {}",
                            if known.is_empty() {
                                "none".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    bad = true;
                }
            }
            names.push((name.to_owned(), vpos));
        }
        (!bad).then(|| names.into_iter().map(|(n, _)| n).collect())
    }

    fn timeouts(&mut self, t: &Tbl<'_>) -> Option<Timeouts> {
        self.unknown_keys(t, TIMEOUT_KEYS);
        let d = Timeouts::default();
        let mut ok = true;
        let mut get = |cx: &mut Self, key: &str, default: Duration| match cx.duration(t, key) {
            Ok(v) => v.map_or(default, |(d, _)| d),
            Err(Bad) => {
                ok = false;
                default
            }
        };
        let out = Timeouts {
            tcp_established: get(self, "tcp_established", d.tcp_established),
            tcp_syn_recv: get(self, "tcp_syn_recv", d.tcp_syn_recv),
            tcp_fin_wait: get(self, "tcp_fin_wait", d.tcp_fin_wait),
            tcp_time_wait: get(self, "tcp_time_wait", d.tcp_time_wait),
            tcp_close: get(self, "tcp_close", d.tcp_close),
            tcp_close_wait: get(self, "tcp_close_wait", d.tcp_close_wait),
            tcp_last_ack: get(self, "tcp_last_ack", d.tcp_last_ack),
            udp: get(self, "udp", d.udp),
            ..d
        };
        ok.then_some(out)
    }

    fn services(
        &mut self,
        list: &[Tbl<'_>],
        interfaces: Option<&[String]>,
    ) -> Option<Vec<ServiceConfig>> {
        let parsed: Vec<ParsedService> = list.iter().map(|t| self.service(t, interfaces)).collect();
        let mut ok = true;
        for (i, s) in parsed.iter().enumerate() {
            let earlier = &parsed[..i];
            if let Some((name, pos)) = &s.name {
                if let Some((_, first)) = earlier
                    .iter()
                    .filter_map(|e| e.name.as_ref())
                    .find(|(n, _)| n == name)
                {
                    let first = *first;
                    self.error(
                        *pos,
                        format!("duplicate virtual service name `{name}` (first at {first})"),
                    );
                    ok = false;
                }
            }
            if let Some((key, pos)) = &s.key {
                if let Some((_, first)) = earlier
                    .iter()
                    .filter_map(|e| e.key.as_ref())
                    .find(|(k, _)| k == key)
                {
                    let first = *first;
                    self.error(
                        *pos,
                        format!(
                            "duplicate virtual service {} {} (first at {first})",
                            key.0.as_str(),
                            key.1
                        ),
                    );
                    ok = false;
                }
            }
        }
        let services: Option<Vec<ServiceConfig>> = parsed.into_iter().map(|s| s.config).collect();
        if ok {
            services
        } else {
            None
        }
    }

    fn service(&mut self, t: &Tbl<'_>, interfaces: Option<&[String]>) -> ParsedService {
        self.unknown_keys(t, SERVICE_KEYS);
        let name = match self.string(t, "name") {
            Ok(Some(("", pos))) => {
                self.error(pos, "`name` must not be empty".to_owned());
                Err(Bad)
            }
            Ok(Some((s, pos))) => Ok(Some((s.to_owned(), pos))),
            Ok(None) => {
                self.missing(t, "name");
                Err(Bad)
            }
            Err(Bad) => Err(Bad),
        };
        let label = name
            .as_ref()
            .ok()
            .and_then(|o| o.as_ref())
            .map_or_else(String::new, |(n, _)| n.clone());
        let protocol = self.word(
            t,
            "protocol",
            "protocol",
            &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
        );
        let address = self.socket_v4(t, "address");
        if let Ok(None) = address {
            self.missing(t, "address");
        }
        let scheduler = self.scheduler(t);
        let forwarding = self.method(t, "forwarding");
        let persistence = self.persistence(t);
        let on_remove = self.word(
            t,
            "on_remove",
            "on_remove policy",
            &[("drain", ConnPolicy::Keep), ("reset", ConnPolicy::Reset)],
        );
        let on_down = self.word(
            t,
            "on_down",
            "on_down policy",
            &[("keep", ConnPolicy::Keep), ("reset", ConnPolicy::Reset)],
        );
        let sorry_server = self.socket_v4(t, "sorry_server");
        let quorum = self.u32(t, "quorum", 0, u32::MAX);
        let health_check = self.health_check(t);

        let protocol_v = protocol.ok().map(|o| o.map_or(Protocol::Tcp, |(p, _)| p));
        let vaddr = address.ok().flatten();
        let method = forwarding.ok().map(|o| o.map_or(Method::Nat, |(m, _)| m));
        // The sorry server is reached by the service's own method.
        if let (Ok(Some((a, pos))), Some(Method::Tun | Method::Dr), Ok(Some((v, _)))) =
            (&sorry_server, method, &address)
        {
            if a.port() != v.port() {
                self.error(
                    *pos,
                    format!(
                        "tun/dr forward to the virtual port; sorry server port {} differs from {}",
                        a.port(),
                        v.port()
                    ),
                );
            }
        }
        let reals = self.real_servers(
            t,
            &label,
            vaddr.map(|(a, _)| a),
            method,
            health_check.as_ref().ok().cloned().flatten(),
            interfaces,
        );

        let key = match (protocol_v, vaddr) {
            (Some(p), Some((a, pos))) => Some(((p, a), pos)),
            _ => None,
        };
        let config = (|| {
            Some(ServiceConfig {
                name: name.clone().ok()??.0,
                protocol: protocol_v?,
                address: vaddr?.0,
                scheduler: or(scheduler, SchedulerKind::Wlc)?,
                persistence: persistence.ok()?,
                on_remove: or(on_remove.map(|o| o.map(|(p, _)| p)), ConnPolicy::Keep)?,
                on_down: or(on_down.map(|o| o.map(|(p, _)| p)), ConnPolicy::Keep)?,
                sorry_server: sorry_server.ok()?.map(|(a, _)| a),
                forwarding: method?,
                quorum: or(quorum.map(|o| o.map(|(n, _)| n)), 0)?,
                health_check: health_check.ok()?,
                real_servers: reals?,
            })
        })();
        ParsedService {
            config,
            name: name.ok().flatten(),
            key,
        }
    }

    fn scheduler(&mut self, t: &Tbl<'_>) -> Got<SchedulerKind> {
        let Some((s, pos)) = self.string(t, "scheduler")? else {
            return Ok(None);
        };
        match SchedulerKind::from_name(s) {
            Some(k) => Ok(Some(k)),
            None => {
                self.error(
                    pos,
                    format!(
                        "unknown scheduler \"{s}\"; expected one of {}",
                        SCHEDULERS.join(", ")
                    ),
                );
                Err(Bad)
            }
        }
    }

    fn method(&mut self, t: &Tbl<'_>, key: &str) -> Got<(Method, Pos)> {
        self.word(
            t,
            key,
            "forwarding method",
            &[
                ("nat", Method::Nat),
                ("tun", Method::Tun),
                ("dr", Method::Dr),
            ],
        )
    }

    fn persistence(&mut self, t: &Tbl<'_>) -> Got<Persistence> {
        let Some(p) = self.table(t, "persistence", "persistence")? else {
            return Ok(None);
        };
        self.unknown_keys(&p, PERSISTENCE_KEYS);
        let timeout = self.duration(&p, "timeout");
        if let Ok(None) = timeout {
            self.missing(&p, "timeout");
        }
        let netmask = match self.ipv4(&p, "netmask") {
            Ok(Some((m, pos))) if host::prefix_len(m).is_none() => {
                self.error(
                    pos,
                    format!("`netmask`: {m} is not a contiguous netmask (such as 255.255.255.0)"),
                );
                Err(Bad)
            }
            other => other.map(|o| o.map(|(m, _)| m)),
        };
        match (timeout, netmask) {
            (Ok(Some((timeout, _))), Ok(netmask)) => Ok(Some(Persistence {
                timeout,
                netmask: netmask.unwrap_or(Ipv4Addr::BROADCAST),
            })),
            _ => Err(Bad),
        }
    }

    fn health_check(&mut self, t: &Tbl<'_>) -> Got<HealthCheck> {
        let Some(h) = self.table(t, "health_check", "health_check")? else {
            return Ok(None);
        };
        let mut allowed: Vec<&str> = CHECK_COMMON_KEYS.to_vec();
        allowed.extend(CHECK_TYPED_KEYS.iter().map(|(k, _)| *k));
        self.unknown_keys(&h, &allowed);

        let kind = match self.string(&h, "type") {
            Ok(Some((s, pos))) => match s {
                "tcp" | "http" | "udp" | "exec" => Some(s),
                _ => {
                    self.error(
                        pos,
                        format!("unknown health check type \"{s}\"; expected one of tcp, http, udp, exec"),
                    );
                    None
                }
            },
            Ok(None) => {
                self.missing(&h, "type");
                None
            }
            Err(Bad) => None,
        };
        let mut ok = kind.is_some();
        if let Some(kind) = kind {
            for &(key, only) in CHECK_TYPED_KEYS {
                if only != kind && h.t.contains_key(key) {
                    let pos = self.key_pos(&h, key);
                    self.error(
                        pos,
                        format!("`{key}` is not valid for a {kind} health check (only for {only})"),
                    );
                    ok = false;
                }
            }
        }
        let interval = self.duration(&h, "interval");
        let timeout = self.duration(&h, "timeout");
        let rise = self.u32(&h, "rise", 1, u32::MAX);
        let fall = self.u32(&h, "fall", 1, u32::MAX);
        let address = self.ipv4(&h, "check_address");
        let port = self.int(&h, "check_port", 1, 65_535);

        if let (Ok(i), Ok(Some((to, pos)))) = (&interval, &timeout) {
            let i = i.map_or(CHECK_INTERVAL, |(d, _)| d);
            if *to > i {
                self.error(
                    *pos,
                    format!("health check timeout {to:?} is longer than its interval {i:?}"),
                );
                ok = false;
            }
        } else if let (Ok(Some((i, pos))), Ok(None)) = (&interval, &timeout) {
            if *i < CHECK_TIMEOUT {
                self.error(
                    *pos,
                    format!(
                        "health check interval {i:?} is shorter than the default timeout {CHECK_TIMEOUT:?}; set `timeout`"
                    ),
                );
                ok = false;
            }
        }

        let kind = match kind {
            Some("http") => {
                let path = self.string(&h, "path");
                let hostname = self.string(&h, "host");
                let status = self.int(&h, "status", 100, 599);
                let body = self.string(&h, "body");
                (|| {
                    Some(CheckKind::Http {
                        path: path
                            .ok()?
                            .map_or_else(|| "/".to_owned(), |(s, _)| s.to_owned()),
                        host: hostname.ok()?.map(|(s, _)| s.to_owned()),
                        // The range check keeps status within u16.
                        status: status.ok()?.map_or(200, |(n, _)| n as u16),
                        body: body.ok()?.map(|(s, _)| s.to_owned()),
                    })
                })()
            }
            Some("udp") => {
                let payload = self.string(&h, "payload");
                let expect = self.string(&h, "expect");
                (|| {
                    Some(CheckKind::Udp {
                        payload: payload
                            .ok()?
                            .map_or_else(Vec::new, |(s, _)| s.as_bytes().to_vec()),
                        expect: expect.ok()?.map(|(s, _)| s.as_bytes().to_vec()),
                    })
                })()
            }
            Some("exec") => match self.string(&h, "command") {
                Ok(Some((s, pos))) if s.trim().is_empty() => {
                    self.error(pos, "`command` must not be empty".to_owned());
                    None
                }
                Ok(Some((s, _))) => Some(CheckKind::Exec {
                    command: s.to_owned(),
                }),
                Ok(None) => {
                    self.error(h.pos, "an exec health check needs `command`".to_owned());
                    None
                }
                Err(Bad) => None,
            },
            Some(_) => Some(CheckKind::Tcp),
            None => None,
        };
        let check = (|| {
            Some(HealthCheck {
                kind: kind?,
                interval: or(interval.map(|o| o.map(|(d, _)| d)), CHECK_INTERVAL)?,
                timeout: or(timeout.map(|o| o.map(|(d, _)| d)), CHECK_TIMEOUT)?,
                rise: or(rise.map(|o| o.map(|(n, _)| n)), CHECK_RISE)?,
                fall: or(fall.map(|o| o.map(|(n, _)| n)), CHECK_FALL)?,
                address: address.ok()?.map(|(a, _)| a),
                // The range check keeps the port within u16.
                port: port.ok()?.map(|(n, _)| n as u16),
            })
        })();
        match check {
            Some(c) if ok => Ok(Some(c)),
            _ => Err(Bad),
        }
    }

    /// The real servers of the service `label`, at `vaddr`, whose default
    /// method is `method` and default check `check` (`None` in the
    /// arguments: that part of the service is invalid, and reported).
    fn real_servers(
        &mut self,
        t: &Tbl<'_>,
        label: &str,
        vaddr: Option<SocketAddrV4>,
        method: Option<Method>,
        check: Option<HealthCheck>,
        interfaces: Option<&[String]>,
    ) -> Option<Vec<RealServerConfig>> {
        let list = match self.tables(t, "real_server", "[[virtual_service.real_server]]") {
            Ok(Some(list)) => list,
            Ok(None) => Vec::new(),
            Err(Bad) => return None,
        };
        if list.is_empty() {
            let name = if label.is_empty() {
                String::new()
            } else {
                format!(" `{label}`")
            };
            self.warning(t.pos, format!("virtual service{name} has no real servers"));
        }
        let mut seen: Vec<(SocketAddrV4, Pos)> = Vec::new();
        let mut out = Some(Vec::new());
        for r in &list {
            let real = self.real_server(r, vaddr, method, check.as_ref(), interfaces);
            // Duplicates are found by address alone, so a server with some
            // other mistake (a bad weight) is still reported as a duplicate.
            let address = real.as_ref().map(|x| x.address).or_else(|| {
                r.t.get("address")
                    .and_then(|i| i.as_str())
                    .and_then(|a| a.parse::<SocketAddrV4>().ok())
            });
            if let Some(address) = address {
                if let Some(&(_, first)) = seen.iter().find(|(a, _)| *a == address) {
                    let pos = self.item_pos(r, "address");
                    let name = if label.is_empty() {
                        String::new()
                    } else {
                        format!(" `{label}`")
                    };
                    self.error(
                        pos,
                        format!(
                            "duplicate real server {address} in virtual service{name} (first at {first})",
                        ),
                    );
                    out = None;
                    continue;
                }
                seen.push((address, self.item_pos(r, "address")));
            }
            match (real, out.as_mut()) {
                (Some(real), Some(v)) => v.push(real),
                _ => out = None,
            }
        }
        out
    }

    fn real_server(
        &mut self,
        r: &Tbl<'_>,
        vaddr: Option<SocketAddrV4>,
        service_method: Option<Method>,
        service_check: Option<&HealthCheck>,
        interfaces: Option<&[String]>,
    ) -> Option<RealServerConfig> {
        self.unknown_keys(r, REAL_KEYS);
        let address = self.socket_v4(r, "address");
        if let Ok(None) = address {
            self.missing(r, "address");
        }
        let weight = self.u32(r, "weight", 0, MAX_WEIGHT);
        let forwarding = self.method(r, "forwarding");
        let health_check = self.health_check(r);
        let max = self.u32(r, "max_connections", 0, u32::MAX);
        let min = self.u32(r, "min_connections", 0, u32::MAX);

        let mut ok = true;
        if let (Ok(Some((max, _))), Ok(Some((min, pos)))) = (&max, &min) {
            if *max > 0 && min > max {
                self.error(
                    *pos,
                    format!("`min_connections` {min} is greater than `max_connections` {max}"),
                );
                ok = false;
            }
        }
        let method = match forwarding {
            Ok(Some((m, _))) => Some(m),
            Ok(None) => service_method,
            Err(Bad) => None,
        };
        if let Ok(Some((addr, pos))) = &address {
            // Frames to such an address could only come back to rvs (or
            // wait for an ARP answer nobody sends): IPVS's "local node"
            // is not something rvs does.
            if vaddr.is_some_and(|v| v.ip() == addr.ip()) {
                self.error(
                    *pos,
                    format!(
                        "real server {} is the virtual service's own address",
                        addr.ip()
                    ),
                );
                ok = false;
            } else if let Some(i) = self.host.and_then(|h| {
                h.interfaces
                    .iter()
                    .find(|i| i.addrs.iter().any(|(a, _)| a == addr.ip()))
            }) {
                self.error(
                    *pos,
                    format!(
                        "real server {} is an address of this director (on {}); rvs forwards only to other hosts",
                        addr.ip(),
                        i.name
                    ),
                );
                ok = false;
            }
        }
        if let (Ok(Some((addr, pos))), Some(m)) = (&address, method) {
            if let (Method::Tun | Method::Dr, Some(v)) = (m, vaddr) {
                if addr.port() != v.port() {
                    self.error(
                        *pos,
                        format!(
                            "tun/dr forward to the virtual port; real server port {} differs from {}",
                            addr.port(),
                            v.port()
                        ),
                    );
                    ok = false;
                }
            }
            if let (Method::Dr, Some(host), Some(names)) = (m, self.host, interfaces) {
                let attached = names
                    .iter()
                    .filter_map(|n| host.interface(n))
                    .any(|i| i.is_attached(*addr.ip()));
                if !attached {
                    let subnets: Vec<String> = names
                        .iter()
                        .filter_map(|n| host.interface(n))
                        .flat_map(|i| {
                            i.addrs
                                .iter()
                                .map(move |(a, p)| format!("{a}/{p} on {}", i.name))
                        })
                        .collect();
                    self.warning(
                        *pos,
                        format!(
                            "dr real server {} is not on a directly attached subnet of {} ({}); \
                             DR needs the real server on the same link",
                            addr.ip(),
                            names.join(", "),
                            if subnets.is_empty() {
                                "no IPv4 subnets".to_owned()
                            } else {
                                subnets.join(", ")
                            }
                        ),
                    );
                }
            }
        }
        let health_check = match health_check {
            Ok(Some(c)) => Some(Some(c)),
            Ok(None) => Some(service_check.cloned()),
            Err(Bad) => None,
        };
        if !ok {
            return None;
        }
        Some(RealServerConfig {
            address: address.ok()??.0,
            weight: or(weight.map(|o| o.map(|(n, _)| n)), 1)?,
            method: method?,
            health_check: health_check?,
            max_connections: or(max.map(|o| o.map(|(n, _)| n)), 0)?,
            min_connections: or(min.map(|o| o.map(|(n, _)| n)), 0)?,
        })
    }
}

/// The value of a looked-up field, or its default when absent; `None` when
/// it was invalid (and reported).
fn or<T>(got: Got<T>, default: T) -> Option<T> {
    got.ok().map(|o| o.unwrap_or(default))
}

fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

fn value_article(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

fn type_article(item: &Item) -> &'static str {
    match item {
        Item::Value(v) => value_article(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None => "nothing",
    }
}

/// The allowed key closest to `key`, if it is close enough to be a typo.
fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|a| (levenshtein(key, a), *a))
        .filter(|&(d, a)| d <= 2.max(a.len() / 4) && d < a.len())
        .min_by_key(|&(d, _)| d)
        .map(|(_, a)| a)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests;
