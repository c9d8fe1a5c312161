use super::*;

const F: &str = "rvs.toml";
const NAT: &str = include_str!("../../../config/nat.toml");
const TUN: &str = include_str!("../../../config/tun.toml");
const DR: &str = include_str!("../../../config/dr.toml");

/// Two lines of `[daemon]`, so the snippets below start at line 3.
const DAEMON: &str = "[daemon]\ninterfaces = [\"eth0\"]\n";

type Parsed = Result<(Config, Vec<Diagnostic>), Vec<Diagnostic>>;

fn run(text: &str, host: Option<&HostInfo>) -> Parsed {
    parse(text, Path::new(F), host)
}

fn lines(d: &[Diagnostic]) -> Vec<String> {
    d.iter().map(ToString::to_string).collect()
}

/// Every diagnostic of `text` (after the two `[daemon]` lines), as printed.
fn diags(body: &str, host: Option<&HostInfo>) -> Vec<String> {
    match run(&format!("{DAEMON}{body}"), host) {
        Ok((_, warnings)) => lines(&warnings),
        Err(all) => lines(&all),
    }
}

fn ok(body: &str) -> Config {
    match run(&format!("{DAEMON}{body}"), None) {
        Ok((config, warnings)) => {
            assert!(warnings.is_empty(), "{warnings:?}");
            config
        }
        Err(e) => panic!("{:#?}", lines(&e)),
    }
}

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn check(kind: CheckKind, interval: u64, timeout: u64) -> HealthCheck {
    HealthCheck {
        kind,
        interval: secs(interval),
        timeout: secs(timeout),
        rise: 2,
        fall: 3,
        address: None,
        port: None,
    }
}

fn real(addr: &str, weight: u32, method: Method, hc: Option<HealthCheck>) -> RealServerConfig {
    RealServerConfig {
        address: sa(addr),
        weight,
        method,
        health_check: hc,
        max_connections: 0,
        min_connections: 0,
    }
}

fn service(name: &str, scheduler: SchedulerKind, reals: Vec<RealServerConfig>) -> ServiceConfig {
    ServiceConfig {
        name: name.to_owned(),
        protocol: Protocol::Tcp,
        address: sa("203.0.113.10:80"),
        scheduler,
        persistence: None,
        on_remove: ConnPolicy::Keep,
        on_down: ConnPolicy::Keep,
        sorry_server: None,
        forwarding: Method::Nat,
        quorum: 0,
        health_check: None,
        real_servers: reals,
    }
}

fn daemon(metrics: bool) -> DaemonConfig {
    DaemonConfig {
        interfaces: vec!["eth0".to_owned()],
        metrics_address: metrics.then(|| "127.0.0.1:9477".parse().unwrap()),
        ..DaemonConfig::default()
    }
}

fn host(addr: Ipv4Addr, prefix: u8) -> HostInfo {
    HostInfo {
        interfaces: vec![
            HostInterface {
                name: "lo".to_owned(),
                addrs: vec![(Ipv4Addr::LOCALHOST, 8)],
            },
            HostInterface {
                name: "eth0".to_owned(),
                addrs: vec![(addr, prefix)],
            },
        ],
    }
}

// --- the shipped examples, one per method ---

#[test]
fn examples_parse_without_diagnostics() {
    for (name, text) in [("nat", NAT), ("tun", TUN), ("dr", DR)] {
        match run(text, None) {
            Ok((_, warnings)) => assert!(warnings.is_empty(), "{name}: {:?}", lines(&warnings)),
            Err(e) => panic!("{name}: {:#?}", lines(&e)),
        }
    }
}

/// Metrics are read-only but tell who talks to whom: the examples keep
/// them on loopback (a non-loopback address is logged as a warning by
/// `rvs run`).
#[test]
fn examples_bind_metrics_to_loopback_only() {
    for (name, text) in [("nat", NAT), ("tun", TUN), ("dr", DR)] {
        let (cfg, _) = run(text, None).unwrap_or_else(|e| panic!("{name}: {:#?}", lines(&e)));
        if let Some(addr) = cfg.daemon.metrics_address {
            assert!(addr.ip().is_loopback(), "{name}: metrics on {addr}");
        }
    }
}

#[test]
fn nat_example_is_the_expected_config() {
    let http = check(
        CheckKind::Http {
            path: "/".to_owned(),
            host: None,
            status: 200,
            body: None,
        },
        2,
        1,
    );
    let mut third = real("192.0.2.13:8080", 1, Method::Nat, Some(http.clone()));
    third.max_connections = 10_000;
    third.min_connections = 8_000;
    let mut web = service(
        "web",
        SchedulerKind::Wlc,
        vec![
            real("192.0.2.11:8080", 3, Method::Nat, Some(http.clone())),
            real("192.0.2.12:8080", 2, Method::Nat, Some(http.clone())),
            third,
        ],
    );
    web.persistence = Some(Persistence {
        timeout: secs(300),
        netmask: Ipv4Addr::BROADCAST,
    });
    web.health_check = Some(http);
    let want = Config {
        daemon: daemon(true),
        timeouts: Timeouts::default(),
        services: vec![web],
    };
    assert_eq!(run(NAT, None).map(|(c, _)| c), Ok(want));
}

#[test]
fn tun_example_is_the_expected_config() {
    let tcp = check(CheckKind::Tcp, 2, 1);
    let mut web = service(
        "web-tun",
        SchedulerKind::Wrr,
        vec![
            real("192.0.2.11:80", 1, Method::Tun, Some(tcp.clone())),
            real("192.0.2.12:80", 1, Method::Tun, Some(tcp.clone())),
            real("192.0.2.13:80", 0, Method::Tun, Some(tcp.clone())),
        ],
    );
    web.health_check = Some(tcp);
    web.forwarding = Method::Tun;
    let want = Config {
        daemon: daemon(true),
        timeouts: Timeouts::default(),
        services: vec![web],
    };
    assert_eq!(run(TUN, None).map(|(c, _)| c), Ok(want));
}

#[test]
fn dr_example_is_the_expected_config() {
    let http = check(
        CheckKind::Http {
            path: "/healthz".to_owned(),
            host: Some("www.example.com".to_owned()),
            status: 200,
            body: None,
        },
        5,
        2,
    );
    let exec = check(
        CheckKind::Exec {
            command: "/usr/local/bin/check-web 192.0.2.13".to_owned(),
        },
        10,
        5,
    );
    let mut web = service(
        "web-dr",
        SchedulerKind::Mh,
        vec![
            real("192.0.2.11:80", 1, Method::Dr, Some(http.clone())),
            real("192.0.2.12:80", 1, Method::Dr, Some(http.clone())),
            real("192.0.2.13:80", 1, Method::Dr, Some(exec)),
        ],
    );
    web.health_check = Some(http);
    web.sorry_server = Some(sa("192.0.2.99:80"));
    web.forwarding = Method::Dr;
    web.quorum = 1;
    let want = Config {
        daemon: daemon(false),
        timeouts: Timeouts::default(),
        services: vec![web],
    };
    assert_eq!(run(DR, None).map(|(c, _)| c), Ok(want));
}

#[test]
fn dr_example_on_an_attached_subnet_has_no_warning() {
    let h = host(Ipv4Addr::new(192, 0, 2, 1), 24);
    let (_, warnings) = run(DR, Some(&h)).unwrap();
    assert!(warnings.is_empty(), "{:?}", lines(&warnings));
}

// --- every mistake of a file, each at its position ---

#[test]
fn reports_every_mistake_with_its_position() {
    let text = r#"
[daemon]
interfaces = ["eth0", "eth0"]
workers = 300
sloppy_tcp = "yes"
intrefaces = 1

[timeouts]
tcp_close = "0s"
udp = "5 min"

[[virtual_service]]
name = "web"
address = "203.0.113.10:0"
scheduler = "wlcc"

[virtual_service.health_check]
type = "tcp"
path = "/"
interval = "1s"
timeout = "2s"

[[virtual_service]]
name = "web"
forwarding = "dr"
address = "203.0.113.11:80"
health_check = { type = "exec" }

[[virtual_service.real_server]]
address = "192.0.2.11:8080"
weight = 70000
"#;
    let want = [
        "rvs.toml:3:23: error: interface `eth0` is listed twice (first at 3:15)",
        "rvs.toml:4:11: error: `workers` must be between 0 and 256, found 300",
        "rvs.toml:5:14: error: `sloppy_tcp`: expected a boolean, found a string",
        "rvs.toml:6:1: error: unknown key `intrefaces` in [daemon]; did you mean `interfaces`?",
        "rvs.toml:9:13: error: `tcp_close` must be a positive duration, found \"0s\"",
        "rvs.toml:10:7: error: `udp`: invalid duration \"5 min\"; expected a number and a unit (h, m, s, ms), e.g. \"1m30s\"",
        "rvs.toml:14:11: error: `address`: port 0 is not a valid port in \"203.0.113.10:0\"",
        "rvs.toml:15:13: error: unknown scheduler \"wlcc\"; expected one of lc, wlc, rr, wrr, sh, mh, sed, nq",
        "rvs.toml:19:1: error: `path` is not valid for a tcp health check (only for http)",
        "rvs.toml:21:11: error: health check timeout 2s is longer than its interval 1s",
        "rvs.toml:24:8: error: duplicate virtual service name `web` (first at 13:8)",
        "rvs.toml:27:16: error: an exec health check needs `command`",
        "rvs.toml:30:11: error: tun/dr forward to the virtual port; real server port 8080 differs from 80",
        "rvs.toml:31:10: error: `weight` must be between 0 and 65535, found 70000",
        "rvs.toml:12:1: warning: virtual service `web` has no real servers",
    ];
    assert_eq!(lines(&run(text, None).unwrap_err()), want);
}

// --- one case per rule ---

#[test]
fn toml_syntax_error_is_one_diagnostic_with_position() {
    let e = lines(&run("[daemon]\ninterfaces = [\"eth0\"\n", None).unwrap_err());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("rvs.toml:3:1: error: invalid TOML: "),
        "{e:?}"
    );
    let e = lines(&run("[daemon]\nworkers = 1\nworkers = 2\n", None).unwrap_err());
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("rvs.toml:3:1: error: invalid TOML: "),
        "{e:?}"
    );
    assert!(e[0].contains("duplicate key"), "{e:?}");
}

#[test]
fn wrong_types() {
    assert_eq!(
        diags(
            "[[virtual_service]]\nname = 7\naddress = \"203.0.113.10:80\"\n",
            None
        ),
        [
            "rvs.toml:4:8: error: `name`: expected a string, found an integer",
            "rvs.toml:3:1: warning: virtual service has no real servers",
        ]
    );
    assert_eq!(
        lines(&run("[daemon]\ninterfaces = \"eth0\"\n", None).unwrap_err()),
        ["rvs.toml:2:14: error: `interfaces`: expected an array of strings, found a string"]
    );
    assert_eq!(
        lines(&run("[daemon]\ninterfaces = [\"eth0\", 1]\n", None).unwrap_err()),
        ["rvs.toml:2:23: error: `interfaces`: expected a string, found an integer"]
    );
    assert_eq!(
        lines(&run("daemon = 1\n", None).unwrap_err()),
        ["rvs.toml:1:10: error: `daemon`: expected a table, found an integer"]
    );
    assert_eq!(
        lines(&run(&format!("virtual_service = 1\n{DAEMON}"), None).unwrap_err()),
        ["rvs.toml:1:19: error: `virtual_service`: expected an array of tables, found an integer"]
    );
}

#[test]
fn unknown_keys_suggest_a_close_one() {
    assert_eq!(
        diags(
            "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nschedular = \"rr\"\ncolour = 1\n\
             [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\nwieght = 2\n",
            None
        ),
        [
            "rvs.toml:6:1: error: unknown key `schedular` in [[virtual_service]]; did you mean `scheduler`?",
            "rvs.toml:7:1: error: unknown key `colour` in [[virtual_service]]; expected one of name, protocol, address, scheduler, forwarding, persistence, on_remove, on_down, sorry_server, quorum, health_check, real_server",
            "rvs.toml:10:1: error: unknown key `wieght` in [[virtual_service.real_server]]; did you mean `weight`?",
        ]
    );
    assert_eq!(
        diags("[timeout]\n", None),
        ["rvs.toml:3:2: error: unknown key `timeout` in the top level; did you mean `timeouts`?"]
    );
}

#[test]
fn bad_addresses() {
    assert_eq!(
        diags(
            "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10\"\nsorry_server = \"::1:80\"\n\
             [[virtual_service.real_server]]\naddress = \"192.0.2.300:80\"\n",
            None
        ),
        [
            "rvs.toml:5:11: error: `address`: expected an IPv4 address and port such as \"192.0.2.11:80\", found \"203.0.113.10\"",
            "rvs.toml:6:16: error: `sorry_server`: expected an IPv4 address and port such as \"192.0.2.11:80\", found \"::1:80\"",
            "rvs.toml:8:11: error: `address`: expected an IPv4 address and port such as \"192.0.2.11:80\", found \"192.0.2.300:80\"",
        ]
    );
    assert_eq!(
        diags(
            "[[virtual_service]]\nname = \"a\"\naddress = \"[2001:db8::1]:80\"\n\
             [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\n",
            None
        ),
        ["rvs.toml:5:11: error: `address`: \"[2001:db8::1]:80\" is IPv6; rvs forwards IPv4 only (no IPv6 services yet)"]
    );
    assert_eq!(
        lines(&run("[daemon]\ninterfaces = [\"eth0\"]\nmetrics_address = \"localhost\"\ncontrol_socket = \"rvs.sock\"\n", None).unwrap_err()),
        [
            "rvs.toml:3:19: error: `metrics_address`: expected an address and port such as \"127.0.0.1:9477\", found \"localhost\"",
            "rvs.toml:4:18: error: `control_socket` must be an absolute path, found \"rvs.sock\"",
        ]
    );
}

const ONE_REAL: &str = "[[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\n";

#[test]
fn duplicate_virtual_services_by_protocol_and_address() {
    let body = format!(
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n{ONE_REAL}\
         [[virtual_service]]\nname = \"b\"\naddress = \"203.0.113.10:80\"\n{ONE_REAL}"
    );
    assert_eq!(
        diags(&body, None),
        ["rvs.toml:10:11: error: duplicate virtual service tcp 203.0.113.10:80 (first at 5:11)"]
    );
    // The same address over UDP is another service.
    let body = body.replacen("name = \"b\"", "name = \"b\"\nprotocol = \"udp\"", 1);
    let config = ok(&body);
    assert_eq!(config.services[1].protocol, Protocol::Udp);
}

#[test]
fn duplicate_names() {
    let body = format!(
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n{ONE_REAL}\
         [[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:443\"\n{ONE_REAL}"
    );
    assert_eq!(
        diags(&body, None),
        ["rvs.toml:9:8: error: duplicate virtual service name `a` (first at 4:8)"]
    );
}

#[test]
fn duplicate_real_servers() {
    let body = format!(
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n{ONE_REAL}{ONE_REAL}"
    );
    assert_eq!(
        diags(&body, None),
        ["rvs.toml:9:11: error: duplicate real server 192.0.2.11:80 in virtual service `a` (first at 7:11)"]
    );
}

#[test]
fn weights() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\nweight = -1\n";
    assert_eq!(
        diags(body, None),
        ["rvs.toml:8:10: error: `weight` must be between 0 and 65535, found -1"]
    );
    let config = ok(&body.replace("-1", "0"));
    assert_eq!(config.services[0].real_servers[0].weight, 0);
    let config = ok(&body.replace("-1", "65535"));
    assert_eq!(config.services[0].real_servers[0].weight, 65_535);
    let config = ok(&body.replace("weight = -1\n", ""));
    assert_eq!(config.services[0].real_servers[0].weight, 1);
}

#[test]
fn unknown_scheduler_method_protocol_and_policies() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nscheduler = \"fifo\"\n\
                forwarding = \"masq\"\nprotocol = \"sctp\"\non_remove = \"keep\"\non_down = \"drain\"\n{ONE_REAL}";
    assert_eq!(
        diags(&body.replace("{ONE_REAL}", ONE_REAL), None),
        [
            "rvs.toml:6:13: error: unknown scheduler \"fifo\"; expected one of lc, wlc, rr, wrr, sh, mh, sed, nq",
            "rvs.toml:7:14: error: unknown forwarding method \"masq\"; expected one of nat, tun, dr",
            "rvs.toml:8:12: error: unknown protocol \"sctp\"; expected one of tcp, udp",
            "rvs.toml:9:13: error: unknown on_remove policy \"keep\"; expected one of drain, reset",
            "rvs.toml:10:11: error: unknown on_down policy \"drain\"; expected one of keep, reset",
        ]
    );
    let config = ok(&format!(
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nscheduler = \"sed\"\n\
         on_remove = \"reset\"\non_down = \"reset\"\n{ONE_REAL}"
    ));
    let s = &config.services[0];
    assert_eq!(
        (s.scheduler, s.on_remove, s.on_down),
        (SchedulerKind::Sed, ConnPolicy::Reset, ConnPolicy::Reset)
    );
    let config = ok(&format!(
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n{ONE_REAL}"
    ));
    let s = &config.services[0];
    assert_eq!(
        (s.scheduler, s.on_remove, s.on_down),
        (SchedulerKind::Wlc, ConnPolicy::Keep, ConnPolicy::Keep)
    );
    assert_eq!(s.real_servers[0].method, Method::Nat);
}

#[test]
fn tun_and_dr_keep_the_virtual_port_nat_may_rewrite_it() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nforwarding = \"tun\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:8080\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.12:8080\"\nforwarding = \"dr\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.13:8080\"\nforwarding = \"nat\"\n";
    assert_eq!(
        diags(body, None),
        [
            "rvs.toml:8:11: error: tun/dr forward to the virtual port; real server port 8080 differs from 80",
            "rvs.toml:10:11: error: tun/dr forward to the virtual port; real server port 8080 differs from 80",
        ]
    );
    let config = ok(&body
        .replace("forwarding = \"tun\"", "forwarding = \"nat\"")
        .replace("forwarding = \"dr\"", ""));
    let methods: Vec<Method> = config.services[0]
        .real_servers
        .iter()
        .map(|r| r.method)
        .collect();
    assert_eq!(methods, [Method::Nat; 3]);
}

#[test]
fn dr_real_server_off_the_attached_subnets_is_a_warning_with_host_info() {
    let body =
        "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nforwarding = \"dr\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\n\
                [[virtual_service.real_server]]\naddress = \"198.51.100.7:80\"\n";
    let h = host(Ipv4Addr::new(192, 0, 2, 1), 24);
    let (config, warnings) = run(&format!("{DAEMON}{body}"), Some(&h)).unwrap();
    assert_eq!(config.services[0].real_servers.len(), 2);
    assert_eq!(
        lines(&warnings),
        ["rvs.toml:10:11: warning: dr real server 198.51.100.7 is not on a directly attached subnet of eth0 (192.0.2.1/24 on eth0); DR needs the real server on the same link"]
    );
    // Without host information nothing can be said.
    assert_eq!(diags(body, None), Vec::<String>::new());
}

#[test]
fn unknown_interface_with_host_info() {
    let h = host(Ipv4Addr::new(192, 0, 2, 1), 24);
    assert_eq!(
        lines(&run("[daemon]\ninterfaces = [\"eth0\", \"eth9\"]\n", Some(&h)).unwrap_err()),
        ["rvs.toml:2:23: error: unknown interface `eth9`; this host has lo, eth0"]
    );
    assert!(run("[daemon]\ninterfaces = [\"eth9\"]\n", None).is_ok());
    assert_eq!(
        lines(&run("[daemon]\ninterfaces = []\n", None).unwrap_err()),
        ["rvs.toml:2:14: error: `interfaces` must name at least one interface"]
    );
}

#[test]
fn service_without_real_servers_is_a_warning() {
    let (config, warnings) = run(
        &format!("{DAEMON}[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n"),
        None,
    )
    .unwrap();
    assert!(config.services[0].real_servers.is_empty());
    assert_eq!(
        lines(&warnings),
        ["rvs.toml:3:1: warning: virtual service `a` has no real servers"]
    );
}

#[test]
fn missing_required_keys_point_at_their_table() {
    assert_eq!(
        lines(&run("# nothing\n", None).unwrap_err()),
        ["rvs.toml:1:1: error: missing required table [daemon]"]
    );
    assert_eq!(
        lines(&run("\n[daemon]\nworkers = 2\n", None).unwrap_err()),
        ["rvs.toml:2:1: error: [daemon] is missing required key `interfaces`"]
    );
    assert_eq!(
        diags(
            "[[virtual_service]]\nprotocol = \"udp\"\npersistence = { netmask = \"255.255.255.0\" }\n\
             [[virtual_service.real_server]]\nweight = 1\n",
            None
        ),
        [
            "rvs.toml:3:1: error: [[virtual_service]] is missing required key `name`",
            "rvs.toml:3:1: error: [[virtual_service]] is missing required key `address`",
            "rvs.toml:5:15: error: persistence is missing required key `timeout`",
            "rvs.toml:6:1: error: [[virtual_service.real_server]] is missing required key `address`",
        ]
    );
}

#[test]
fn persistence() {
    let base = format!("[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\npersistence = PERSIST\n{ONE_REAL}");
    let with = |p: &str| base.replace("PERSIST", p);
    let config = ok(&with("{ timeout = \"5m\", netmask = \"255.255.255.0\" }"));
    assert_eq!(
        config.services[0].persistence,
        Some(Persistence {
            timeout: secs(300),
            netmask: Ipv4Addr::new(255, 255, 255, 0)
        })
    );
    let config = ok(&with("{ timeout = \"30s\" }"));
    assert_eq!(
        config.services[0].persistence.unwrap().netmask,
        Ipv4Addr::BROADCAST
    );
    assert_eq!(
        diags(&with("{ timeout = \"0m\", netmask = \"255.0.255.0\" }"), None),
        [
            "rvs.toml:6:27: error: `timeout` must be a positive duration, found \"0m\"",
            "rvs.toml:6:43: error: `netmask`: 255.0.255.0 is not a contiguous netmask (such as 255.255.255.0)",
        ]
    );
}

#[test]
fn health_checks() {
    let base = format!("[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\nhealth_check = CHECK\n{ONE_REAL}");
    let with = |c: &str| base.replace("CHECK", c);
    // Defaults.
    let config = ok(&with("{ type = \"tcp\" }"));
    assert_eq!(
        config.services[0].health_check,
        Some(check(CheckKind::Tcp, 2, 1))
    );
    assert_eq!(
        config.services[0].real_servers[0].health_check,
        Some(check(CheckKind::Tcp, 2, 1))
    );
    // Every field.
    let config = ok(&with(
        "{ type = \"udp\", interval = \"500ms\", timeout = \"500ms\", rise = 1, fall = 5, payload = \"ping\", \
         expect = \"pong\", check_address = \"192.0.2.50\", check_port = 5353 }",
    ));
    assert_eq!(
        config.services[0].health_check,
        Some(HealthCheck {
            kind: CheckKind::Udp {
                payload: b"ping".to_vec(),
                expect: Some(b"pong".to_vec())
            },
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            rise: 1,
            fall: 5,
            address: Some(Ipv4Addr::new(192, 0, 2, 50)),
            port: Some(5353),
        })
    );
    let config = ok(&with("{ type = \"http\", body = \"ok\", status = 204 }"));
    assert_eq!(
        config.services[0].health_check.as_ref().map(|c| &c.kind),
        Some(&CheckKind::Http {
            path: "/".to_owned(),
            host: None,
            status: 204,
            body: Some("ok".to_owned())
        })
    );
    assert_eq!(
        diags(&with("{ type = \"icmp\" }"), None),
        ["rvs.toml:6:25: error: unknown health check type \"icmp\"; expected one of tcp, http, udp, exec"]
    );
    assert_eq!(
        diags(&with("{ type = \"exec\", command = \"true\", status = 200, payload = \"x\", rise = 0, check_port = 0 }"), None),
        [
            "rvs.toml:6:51: error: `status` is not valid for a exec health check (only for http)",
            "rvs.toml:6:65: error: `payload` is not valid for a exec health check (only for udp)",
            "rvs.toml:6:87: error: `rise` must be between 1 and 4294967295, found 0",
            "rvs.toml:6:103: error: `check_port` must be between 1 and 65535, found 0",
        ]
    );
    assert_eq!(
        diags(&with("{ interval = \"5s\", timeout = \"10s\" }"), None),
        [
            "rvs.toml:6:16: error: health_check is missing required key `type`",
            "rvs.toml:6:45: error: health check timeout 10s is longer than its interval 5s",
        ]
    );
    assert_eq!(
        diags(&with("{ type = \"tcp\", interval = \"500ms\" }"), None),
        ["rvs.toml:6:43: error: health check interval 500ms is shorter than the default timeout 1s; set `timeout`"]
    );
    assert_eq!(
        diags(&with("{ type = \"exec\", command = \" \" }"), None),
        ["rvs.toml:6:43: error: `command` must not be empty"]
    );
}

#[test]
fn health_check_as_a_table_and_per_server_override() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n\
                [virtual_service.health_check]\ntype = \"tcp\"\ninterval = \"3s\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.12:80\"\n\
                [virtual_service.real_server.health_check]\ntype = \"http\"\npath = \"/up\"\n";
    let config = ok(body);
    let s = &config.services[0];
    assert_eq!(s.health_check, Some(check(CheckKind::Tcp, 3, 1)));
    assert_eq!(s.real_servers[0].health_check, s.health_check);
    assert_eq!(
        s.real_servers[1].health_check,
        Some(check(
            CheckKind::Http {
                path: "/up".to_owned(),
                host: None,
                status: 200,
                body: None
            },
            2,
            1
        ))
    );
    assert_eq!(
        diags(&body.replace("path = \"/up\"", "command = \"x\""), None),
        ["rvs.toml:15:1: error: `command` is not valid for a http health check (only for exec)"]
    );
}

#[test]
fn connection_limits() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\nmax_connections = 5\nmin_connections = 10\n";
    assert_eq!(
        diags(body, None),
        ["rvs.toml:9:19: error: `min_connections` 10 is greater than `max_connections` 5"]
    );
    let config = ok(&body.replace("max_connections = 5", "max_connections = 0"));
    assert_eq!(config.services[0].real_servers[0].min_connections, 10);
    assert_eq!(
        lines(
            &run(
                "[daemon]\ninterfaces = [\"eth0\"]\nmax_connections = 0\nseed = -1\n",
                None
            )
            .unwrap_err()
        ),
        [
            "rvs.toml:3:19: error: `max_connections` must be between 1 and 1073741824, found 0",
            "rvs.toml:4:8: error: `seed` must be between 0 and 9223372036854775807, found -1",
        ]
    );
    let (config, _) = run(
        "[daemon]\ninterfaces = [\"eth0\"]\nmax_connections = 1073741824\nworkers = 256\nsloppy_tcp = true\nseed = 42\n",
        None,
    )
    .unwrap();
    let d = &config.daemon;
    assert_eq!(
        (d.max_connections, d.workers, d.sloppy_tcp, d.seed),
        (1 << 30, 256, true, 42)
    );
    // One more is refused: slot indexes must stay below 2^31.
    let err = run(
        "[daemon]\ninterfaces = [\"eth0\"]\nmax_connections = 1073741825\n",
        None,
    )
    .unwrap_err();
    let err = lines(&err);
    assert!(
        err.iter().any(|e| e.contains("between 1 and 1073741824")),
        "{err:?}"
    );
}

#[test]
fn busy_poll_is_bounded_microseconds_and_off_by_default() {
    assert_eq!(
        lines(
            &run(
                "[daemon]\ninterfaces = [\"eth0\"]\nbusy_poll_us = 10001\n",
                None
            )
            .unwrap_err()
        ),
        ["rvs.toml:3:16: error: `busy_poll_us` must be between 0 and 10000, found 10001"]
    );
    let (config, _) = run(
        "[daemon]\ninterfaces = [\"eth0\"]\nbusy_poll_us = 50\n",
        None,
    )
    .unwrap();
    assert_eq!(config.daemon.busy_poll_us, 50);
    assert_eq!(ok("").daemon.busy_poll_us, 0);
}

#[test]
fn timeouts_override_only_what_they_name() {
    let config = ok("[timeouts]\ntcp_established = \"1h\"\nudp = \"1m30s\"\n");
    assert_eq!(
        config.timeouts,
        Timeouts {
            tcp_established: secs(3600),
            udp: secs(90),
            ..Timeouts::default()
        }
    );
    assert_eq!(
        diags("[timeouts]\ntcp_close = 10\ntcp_last_ack = \"-1s\"\n", None),
        [
            "rvs.toml:4:13: error: `tcp_close`: expected a string, found an integer",
            "rvs.toml:5:16: error: `tcp_last_ack`: duration \"-1s\" is negative",
        ]
    );
}

#[test]
fn state_dir_defaults_to_var_lib_rvs_and_must_be_absolute() {
    let (config, _) = run(DAEMON, None).unwrap();
    assert_eq!(config.daemon.state_dir, PathBuf::from("/var/lib/rvs"));
    let (config, _) = run(
        "[daemon]\ninterfaces = [\"eth0\"]\nstate_dir = \"/tmp/rvs-state\"\n",
        None,
    )
    .unwrap();
    assert_eq!(config.daemon.state_dir, PathBuf::from("/tmp/rvs-state"));
    assert_eq!(
        lines(
            &run(
                "[daemon]\ninterfaces = [\"eth0\"]\nstate_dir = \"state\"\n",
                None
            )
            .unwrap_err()
        ),
        ["rvs.toml:3:13: error: `state_dir` must be an absolute path, found \"state\""]
    );
}

// --- diagnostics and loading ---

#[test]
fn diagnostic_display() {
    let d = Diagnostic {
        severity: Severity::Warning,
        file: PathBuf::from("/etc/rvs/rvs.toml"),
        line: 3,
        column: 7,
        message: "x".to_owned(),
    };
    assert_eq!(d.to_string(), "/etc/rvs/rvs.toml:3:7: warning: x");
    let whole = Diagnostic {
        severity: Severity::Error,
        line: 0,
        column: 0,
        ..d
    };
    assert_eq!(whole.to_string(), "/etc/rvs/rvs.toml: error: x");
}

#[test]
fn columns_count_characters() {
    assert_eq!(
        lines(&run("# é\n[daemon]\ninterfaces = [\"é\", 1]\n", None).unwrap_err()),
        ["rvs.toml:3:20: error: `interfaces`: expected a string, found an integer"]
    );
    assert_eq!(
        diags(
            "[[virtual_service]]\n\"naïve\" = 1\nname = \"é\"\naddress = 1\n",
            None
        ),
        [
            "rvs.toml:4:1: error: unknown key `naïve` in [[virtual_service]]; did you mean `name`?",
            "rvs.toml:6:11: error: `address`: expected a string, found an integer",
            "rvs.toml:3:1: warning: virtual service `é` has no real servers",
        ]
    );
}

/// A file under the temp dir that is removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str, mode: u32) -> TempFile {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "rvs-config-test-{tag}-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_reads_a_file() {
    let f = TempFile::new("ok", NAT, 0o644);
    let (config, warnings) = load(&f.0, None).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(config.services[0].name, "web");
}

#[test]
fn load_refuses_a_world_writable_file() {
    let f = TempFile::new("ww", NAT, 0o666);
    let e = load(&f.0, None).unwrap_err();
    assert_eq!(
        lines(&e),
        [format!(
            "{}: error: refusing a world-writable config file (mode 0666); anyone could change the \
             virtual-service table; run `chmod o-w {}`",
            f.0.display(),
            f.0.display()
        )]
    );
    assert_eq!((e[0].line, e[0].column), (0, 0));
}

#[test]
fn load_reports_a_missing_file() {
    let path = Path::new("/nonexistent/rvs/rvs.toml");
    let e = load(path, None).unwrap_err();
    assert_eq!(
        lines(&e),
        ["/nonexistent/rvs/rvs.toml: error: cannot read: No such file or directory"]
    );
}

#[test]
fn load_keeps_the_file_name_in_diagnostics() {
    let f = TempFile::new(
        "bad",
        "[daemon]\ninterfaces = [\"eth0\"]\nworkers = \"2\"\n",
        0o600,
    );
    let e = load(&f.0, None).unwrap_err();
    assert_eq!(
        lines(&e),
        [format!(
            "{}:3:11: error: `workers`: expected an integer, found a string",
            f.0.display()
        )]
    );
}

#[test]
fn suggestions() {
    assert_eq!(suggest("intrefaces", DAEMON_KEYS), Some("interfaces"));
    assert_eq!(suggest("seeed", DAEMON_KEYS), Some("seed"));
    assert_eq!(suggest("colour", SERVICE_KEYS), None);
    assert_eq!(levenshtein("kitten", "sitting"), 3);
}

#[test]
fn a_real_server_at_the_vip_or_at_the_director_is_an_error() {
    let body = "[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n\
                [[virtual_service.real_server]]\naddress = \"203.0.113.10:8080\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.1:80\"\n\
                [[virtual_service.real_server]]\naddress = \"127.0.0.1:80\"\n\
                [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\n";
    let h = host(Ipv4Addr::new(192, 0, 2, 1), 24);
    let errs = lines(&run(&format!("{DAEMON}{body}"), Some(&h)).unwrap_err());
    assert_eq!(
        errs,
        [
            "rvs.toml:7:11: error: real server 203.0.113.10 is the virtual service's own address",
            "rvs.toml:9:11: error: real server 192.0.2.1 is an address of this director (on eth0); rvs forwards only to other hosts",
            "rvs.toml:11:11: error: real server 127.0.0.1 is an address of this director (on lo); rvs forwards only to other hosts",
        ]
    );
}

#[test]
fn the_sorry_server_takes_the_services_method_and_tun_dr_keep_the_port() {
    let svc = |forwarding: &str, sorry: &str| {
        format!(
            "{DAEMON}[[virtual_service]]\nname = \"a\"\naddress = \"203.0.113.10:80\"\n\
             forwarding = \"{forwarding}\"\nsorry_server = \"{sorry}\"\n\
             [[virtual_service.real_server]]\naddress = \"192.0.2.11:80\"\nforwarding = \"nat\"\n"
        )
    };
    let (cfg, _) = run(&svc("dr", "192.0.2.20:80"), None).unwrap();
    assert_eq!(
        cfg.services[0].forwarding,
        Method::Dr,
        "not the first server's nat"
    );
    assert_eq!(
        lines(&run(&svc("tun", "192.0.2.20:8080"), None).unwrap_err()),
        ["rvs.toml:7:16: error: tun/dr forward to the virtual port; sorry server port 8080 differs from 80"]
    );
    assert!(run(&svc("nat", "192.0.2.20:8080"), None).is_ok());
}
