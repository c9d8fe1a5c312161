//! The client side of the control socket: sends one request, prints the
//! answer as a table for people (`ipvsadm -L -n` style) or as JSON for
//! programs (`--json`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::control::protocol::{ConnJson, Request, ServiceJson};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("rvs is not running (cannot connect to {path}: {reason})")]
    NotRunning { path: String, reason: String },
    #[error("{0}")]
    Failed(String),
    #[error("bad answer from the daemon: {0}")]
    Protocol(String),
}

/// Connects to the daemon at `socket` and sends `req`; the answer is read
/// from the returned reader.
fn send(socket: &Path, req: &Request) -> Result<BufReader<UnixStream>, CliError> {
    let mut s = UnixStream::connect(socket).map_err(|e| CliError::NotRunning {
        path: socket.display().to_string(),
        reason: e.to_string(),
    })?;
    // Per read: a long answer (`rvs conns` of a big table) keeps arriving.
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut line = serde_json::to_string(req).map_err(|e| CliError::Protocol(e.to_string()))?;
    line.push('\n');
    // A refused peer may see the daemon close before it reads the request;
    // the daemon's one-line answer is still there to read.
    let _ = s.write_all(line.as_bytes());
    Ok(BufReader::new(s))
}

/// A refusal (`ok` false) as `CliError::Failed` with every error line.
fn refusal(error: Option<&str>, errors: &[&str]) -> CliError {
    let mut msg = error.unwrap_or("request failed").to_string();
    for e in errors {
        msg.push('\n');
        msg.push_str(e);
    }
    CliError::Failed(msg)
}

/// Sends `req` to the daemon at `socket` and returns its answer (`ok`
/// checked: a refusal becomes `CliError::Failed` with every error line).
pub fn request(socket: &Path, req: &Request) -> Result<Value, CliError> {
    let mut answer = String::new();
    send(socket, req)?
        .read_line(&mut answer)
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    if answer.is_empty() {
        return Err(CliError::Protocol(
            "the daemon closed the connection".into(),
        ));
    }
    let v: Value = serde_json::from_str(&answer).map_err(|e| CliError::Protocol(e.to_string()))?;
    if v["ok"] == Value::Bool(true) {
        return Ok(v);
    }
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Err(refusal(v["error"].as_str(), &errors))
}

/// `rvs conns` (`ipvsadm -L -n -c`, or `--json`): asks the daemon and
/// prints each entry to `out` as it is parsed from the answer, so a table
/// of any size is listed in constant memory. A closed `out` (`| head`)
/// ends the listing quietly.
pub fn conns(
    socket: &Path,
    req: &Request,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    print_conns(send(socket, req)?, json, out)
}

/// Prints the `conns` answer read from `answer` (see [`conns`]).
fn print_conns(
    answer: impl std::io::Read,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let mut printer = ConnsPrinter {
        out,
        json,
        started: false,
        rows: 0,
        failed: None,
    };
    let mut de = serde_json::Deserializer::from_reader(answer);
    let parsed = serde::de::DeserializeSeed::deserialize(&mut printer, &mut de);
    if let Some(e) = printer.failed.take() {
        return if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(CliError::Failed(format!("cannot write the listing: {e}")))
        };
    }
    let answer = parsed.map_err(|e| {
        if e.is_eof() && printer.rows == 0 {
            CliError::Protocol("the daemon closed the connection".into())
        } else {
            CliError::Protocol(e.to_string())
        }
    })?;
    if answer.ok != Some(true) {
        let errors: Vec<&str> = answer.errors.iter().map(String::as_str).collect();
        return Err(refusal(answer.error.as_deref(), &errors));
    }
    if !printer.started {
        return Err(CliError::Protocol("the answer has no connections".into()));
    }
    let end = printer.out.flush();
    match end {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Failed(format!("cannot write the listing: {e}")))
        }
        _ => Ok(()),
    }
}

/// The fields of a `conns` answer other than its entries.
#[derive(Default)]
struct ConnsAnswer {
    ok: Option<bool>,
    error: Option<String>,
    errors: Vec<String>,
}

/// Prints `conns` entries as serde hands them over.
struct ConnsPrinter<'a, W> {
    out: &'a mut W,
    json: bool,
    /// The `connections` array was reached (the header is out).
    started: bool,
    rows: usize,
    /// The first write error; parsing stops at it.
    failed: Option<std::io::Error>,
}

impl<W: Write> ConnsPrinter<'_, W> {
    fn start(&mut self) -> std::io::Result<()> {
        self.started = true;
        if self.json {
            self.out.write_all(b"{\"connections\":[")
        } else {
            writeln!(
                self.out,
                "pro expire state       source                virtual               destination"
            )
        }
    }

    fn row(&mut self, c: &ConnJson) -> std::io::Result<()> {
        if self.json {
            if self.rows > 0 {
                self.out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *self.out, c).map_err(std::io::Error::other)?;
        } else {
            writeln!(
                self.out,
                "{:<3} {:<6} {:<11} {:<21} {:<21} {}",
                c.protocol.to_uppercase(),
                mmss(c.expires_in_ms),
                c.state,
                c.client,
                c.vaddr,
                c.real_server
            )?;
        }
        self.rows += 1;
        Ok(())
    }

    fn end(&mut self) -> std::io::Result<()> {
        if self.json {
            self.out.write_all(b"]}\n")?;
        }
        Ok(())
    }

    /// Keeps the first write error and turns it into a parse error that
    /// stops the listing.
    fn check<E: serde::de::Error>(&mut self, r: std::io::Result<()>) -> Result<(), E> {
        r.map_err(|e| {
            let msg = e.to_string();
            self.failed.get_or_insert(e);
            E::custom(msg)
        })
    }
}

impl<'de, W: Write> serde::de::DeserializeSeed<'de> for &mut ConnsPrinter<'_, W> {
    type Value = ConnsAnswer;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ConnsAnswer, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, W: Write> serde::de::Visitor<'de> for &mut ConnsPrinter<'_, W> {
    type Value = ConnsAnswer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a conns answer")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<ConnsAnswer, A::Error> {
        let mut answer = ConnsAnswer::default();
        while let Some(key) = m.next_key::<String>()? {
            match key.as_str() {
                "ok" => answer.ok = Some(m.next_value()?),
                "error" => answer.error = m.next_value()?,
                "errors" => answer.errors = m.next_value()?,
                "connections" => m.next_value_seed(Rows(&mut *self))?,
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(answer)
    }
}

/// The `connections` array, printed element by element.
struct Rows<'p, 'a, W>(&'p mut ConnsPrinter<'a, W>);

impl<'de, W: Write> serde::de::DeserializeSeed<'de> for Rows<'_, '_, W> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, W: Write> serde::de::Visitor<'de> for Rows<'_, '_, W> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of connections")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let r = self.0.start();
        self.0.check(r)?;
        while let Some(c) = seq.next_element::<ConnJson>()? {
            let r = self.0.row(&c);
            self.0.check(r)?;
        }
        let r = self.0.end();
        self.0.check(r)
    }
}

fn mmss(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

fn human(x: f64) -> String {
    if x >= 1e9 {
        format!("{:.1}G", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServicesView {
    Plain,
    Stats,
    Rate,
}

/// `ipvsadm -L -n` (`--stats`, `--rate`).
pub fn print_services(v: &Value, view: ServicesView, json: bool) -> Result<(), CliError> {
    if json {
        println!(
            "{}",
            serde_json::json!({"services": v["services"], "drops": v["drops"],
                               "connection_table_entries": v["connection_table_entries"]})
        );
        return Ok(());
    }
    let services: Vec<ServiceJson> = serde_json::from_value(v["services"].clone())
        .map_err(|e| CliError::Protocol(e.to_string()))?;
    println!("Prot LocalAddress:Port Scheduler Flags");
    match view {
        ServicesView::Plain => {
            println!("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn Health")
        }
        ServicesView::Stats => {
            println!("  -> RemoteAddress:Port           Conns   InPkts  OutPkts  InBytes OutBytes")
        }
        ServicesView::Rate => {
            println!("  -> RemoteAddress:Port           CPS     InPPS   OutPPS    InBPS   OutBPS")
        }
    }
    let runtime = services
        .iter()
        .any(|s| s.real_servers.iter().any(|r| r.weight_source == "runtime"));
    for s in services {
        let mut flags = String::new();
        if let Some(t) = s.persistence_timeout_s {
            flags.push_str(&format!("persistent {t}"));
            if let Some(m) = s
                .persistence_netmask
                .as_deref()
                .filter(|m| *m != "255.255.255.255")
            {
                flags.push_str(&format!(" mask {m}"));
            }
        }
        if !s.accepting {
            flags.push_str(" draining");
        }
        if s.degraded {
            flags.push_str(" degraded");
        }
        println!(
            "{:<4} {} {} {}",
            s.protocol.to_uppercase(),
            s.address,
            s.scheduler,
            flags.trim()
        );
        for r in &s.real_servers {
            match view {
                ServicesView::Plain => {
                    let fwd = match r.method.as_str() {
                        "nat" => "Masq",
                        "tun" => "Tunnel",
                        _ => "Route",
                    };
                    // A weight set at run time (`rvs weight`) is marked `*`.
                    let weight = if r.weight_source == "runtime" {
                        format!("{}*", r.effective_weight)
                    } else {
                        r.effective_weight.to_string()
                    };
                    println!(
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<9} {}",
                        r.address, fwd, weight, r.active, r.inactive, r.health
                    );
                }
                ServicesView::Stats => println!(
                    "  -> {:<28} {:<7} {:<7} {:<8} {:<8} {}",
                    r.address,
                    r.conns,
                    r.in_pkts,
                    r.out_pkts,
                    human(r.in_bytes as f64),
                    human(r.out_bytes as f64)
                ),
                ServicesView::Rate => println!(
                    "  -> {:<28} {:<7} {:<7} {:<8} {:<8} {}",
                    r.address,
                    human(r.cps),
                    human(r.in_pps),
                    human(r.out_pps),
                    human(r.in_bps),
                    human(r.out_bps)
                ),
            }
        }
    }
    if runtime && view == ServicesView::Plain {
        println!("(* weight set at run time with `rvs weight`/`rvs drain`, kept until the file changes it)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expire_is_mm_ss() {
        assert_eq!(mmss(0), "00:00");
        assert_eq!(mmss(61_500), "01:01");
        assert_eq!(mmss(900_000), "15:00");
    }

    const TWO: &str = concat!(
        r#"{"ok":true,"connections":[{"protocol":"tcp","state":"ESTABLISHED","#,
        r#""expires_in_ms":899000,"client":"198.51.100.2:40312","virtual":"203.0.113.10:80","#,
        r#""real_server":"192.0.2.11:8080","template":false},"#,
        r#"{"protocol":"udp","state":"UDP","expires_in_ms":61500,"client":"198.51.100.3:53","#,
        r#""virtual":"203.0.113.10:53","real_server":"192.0.2.12:5353","template":false}]}"#,
        "\n"
    );

    fn listing(answer: &str, json: bool) -> Result<String, CliError> {
        let mut out = Vec::new();
        print_conns(answer.as_bytes(), json, &mut out)?;
        Ok(String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn conns_are_printed_as_they_are_parsed() {
        let t = listing(TWO, false).expect("table");
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            rows[0],
            ["pro", "expire", "state", "source", "virtual", "destination"]
        );
        assert_eq!(
            rows[1],
            [
                "TCP",
                "14:59",
                "ESTABLISHED",
                "198.51.100.2:40312",
                "203.0.113.10:80",
                "192.0.2.11:8080"
            ]
        );
        assert_eq!(
            rows[2],
            [
                "UDP",
                "01:01",
                "UDP",
                "198.51.100.3:53",
                "203.0.113.10:53",
                "192.0.2.12:5353"
            ]
        );
        assert_eq!(rows.len(), 3);

        // --json: the same entries under "connections", nothing else.
        let j = listing(TWO, true).expect("json");
        let got: Value = serde_json::from_str(&j).expect("valid json");
        let sent: Value = serde_json::from_str(TWO).expect("valid json");
        assert_eq!(got, serde_json::json!({"connections": sent["connections"]}));
        assert!(j.ends_with("]}\n"));

        let empty = r#"{"ok":true,"connections":[]}"#;
        assert_eq!(
            listing(empty, true).expect("json"),
            "{\"connections\":[]}\n"
        );
        assert_eq!(
            listing(empty, false).expect("table").lines().count(),
            1,
            "header only"
        );
    }

    #[test]
    fn conns_refusals_and_cut_answers_are_errors() {
        let e = listing(
            r#"{"ok":false,"error":"no service 203.0.113.9:80/tcp"}"#,
            false,
        )
        .unwrap_err();
        assert!(
            matches!(&e, CliError::Failed(m) if m == "no service 203.0.113.9:80/tcp"),
            "{e}"
        );
        // The daemon went away mid-listing: an error, not a short table
        // passed off as the whole one.
        let cut = &TWO[..TWO.len() / 2];
        assert!(matches!(listing(cut, false), Err(CliError::Protocol(_))));
        assert!(matches!(listing("", true), Err(CliError::Protocol(m)) if m.contains("closed")));
        assert!(matches!(listing("[1,2]", true), Err(CliError::Protocol(_))));
        // "ok" but no table: an error, not an empty (non-JSON) listing.
        assert!(matches!(
            listing(r#"{"ok":true}"#, true),
            Err(CliError::Protocol(_))
        ));
    }

    #[test]
    fn conns_stop_quietly_at_a_closed_pipe() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        assert!(print_conns(TWO.as_bytes(), false, &mut Closed).is_ok());
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("no space left"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = print_conns(TWO.as_bytes(), false, &mut Full).unwrap_err();
        assert!(e.to_string().contains("no space left"), "{e}");
    }

    #[test]
    fn not_running_is_one_line() {
        let e = request(Path::new("/nonexistent/rvs.sock"), &Request::Status).unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("rvs is not running"), "{s}");
        assert!(!s.contains('\n'));
    }
}
