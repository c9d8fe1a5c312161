//! The `rvs` binary: argument parsing, logging and wiring. The daemon lives
//! in `control::daemon`, the client commands in `cli`, the real-server
//! helpers in `datapath`.

use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use rvs::cli::{self, ServicesView};
use rvs::control::config::{self as cfg, HostInfo, Severity};
use rvs::control::protocol::Request;
use rvs::datapath::tunnel_endpoint::{self, TunnelEndpointOptions};

const DEFAULT_CONFIG: &str = "/etc/rvs/rvs.toml";
const DEFAULT_SOCKET: &str = "/run/rvs/control.sock";

#[derive(Debug, Parser)]
#[command(
    name = "rvs",
    version,
    about = "Rust Virtual Server: a user-space layer-4 load balancer (LVS/IPVS semantics)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Find the control socket in this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the director daemon.
    Run {
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file without touching the system.
    Check {
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// The live connection table (like `ipvsadm -L -n -c`).
    Conns {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this service (VIP:PORT[/tcp|/udp]).
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Virtual services and real servers (like `ipvsadm -L -n`).
    Services {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long, conflicts_with = "rate")]
        stats: bool,
        #[arg(long)]
        rate: bool,
        #[arg(long)]
        json: bool,
    },
    /// Reload the config file (same as SIGHUP); prints every error.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a real server's weight at run time (kept until the file changes it).
    Weight {
        #[command(flatten)]
        client: ClientArgs,
        /// VIP:PORT[/tcp|/udp]
        service: String,
        /// RIP:PORT
        real: String,
        weight: u32,
    },
    /// Weight 0: no new connections; existing ones finish. With RIP:PORT
    /// alone, in every service that has that real server.
    Drain {
        #[command(flatten)]
        client: ClientArgs,
        /// [VIP:PORT[/tcp|/udp]] RIP:PORT
        #[arg(num_args = 1..=2, required = true, value_name = "[VIP:PORT] RIP:PORT")]
        targets: Vec<String>,
    },
    /// Zero the packet/byte/connection counters.
    Zero {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Prepare (or undo) a real server for VS/DR or VS/TUN, idempotently.
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
    /// Real-server side of VS/TUN without the kernel `ipip` module: IP-in-IP
    /// from a raw socket into a TUN device that owns the VIPs.
    TunnelEndpoint {
        #[arg(long = "vip", value_name = "ADDR", required = true)]
        vips: Vec<Ipv4Addr>,
        #[arg(long, value_name = "NAME", default_value = tunnel_endpoint::DEFAULT_DEVICE)]
        device: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Dr,
    Tun,
}

#[derive(Debug, Args)]
struct RealserverArgs {
    #[arg(long, value_enum)]
    mode: ModeArg,
    #[arg(long)]
    vip: Ipv4Addr,
    /// The interface facing the director (for arp_ignore/arp_announce).
    #[arg(long, default_value = "eth0")]
    interface: String,
}

#[derive(Debug, Subcommand)]
enum RealserverAction {
    /// VIP on lo (DR) or tunl0 (TUN), ARP and rp_filter sysctls.
    Setup(RealserverArgs),
    /// Remove the VIP again.
    Teardown(RealserverArgs),
}

fn realserver(action: RealserverAction) -> ExitCode {
    use rvs::datapath::realserver::{self, Mode};
    let mode = |m: ModeArg| match m {
        ModeArg::Dr => Mode::Dr,
        ModeArg::Tun => Mode::Tun,
    };
    let result = match &action {
        RealserverAction::Setup(a) => realserver::setup(mode(a.mode), a.vip, &a.interface),
        RealserverAction::Teardown(a) => realserver::teardown(mode(a.mode), a.vip),
    };
    match result {
        Ok(changes) if changes.is_empty() => {
            println!("nothing to change");
            ExitCode::SUCCESS
        }
        Ok(changes) => {
            for c in changes {
                println!("{c}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rvs: realserver: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// The daemon's socket: `--socket`, else the `control_socket` of
/// `--config` (read even from a file with other mistakes, so that a
/// broken edit does not lose the running daemon), else the default. A
/// `--config` that cannot be read, or is not TOML, is an error rather
/// than a silent fall back to the default path.
fn socket_path(c: &ClientArgs) -> Result<PathBuf, String> {
    if let Some(s) = &c.socket {
        return Ok(s.clone());
    }
    let Some(f) = &c.config else {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    };
    cfg::control_socket_in(f)
}

/// `socket_path`, its error reported as a client command's.
fn socket_or_exit(c: &ClientArgs) -> Result<PathBuf, ExitCode> {
    socket_path(c).map_err(|e| {
        eprintln!("rvs: {e}");
        ExitCode::FAILURE
    })
}

fn check(path: &Path) -> ExitCode {
    let host = HostInfo::from_system();
    match cfg::load(path, Some(&host)) {
        Ok((config, warnings)) => {
            for w in &warnings {
                eprintln!("{w}");
            }
            let reals: usize = config.services.iter().map(|s| s.real_servers.len()).sum();
            println!(
                "{}: ok: {} virtual services, {} real servers{}",
                path.display(),
                config.services.len(),
                reals,
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warnings", warnings.len())
                }
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            let n = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            eprintln!("{}: {n} errors", path.display());
            ExitCode::FAILURE
        }
    }
}

fn client(
    c: &ClientArgs,
    req: Request,
    print: impl FnOnce(&serde_json::Value) -> Result<(), cli::CliError>,
) -> ExitCode {
    let sock = match socket_or_exit(c) {
        Ok(s) => s,
        Err(code) => return code,
    };
    report(cli::request(&sock, &req).and_then(|v| print(&v)))
}

/// The exit code of a client command, its error printed.
fn report(r: Result<(), cli::CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // "rvs is not running (…)" already names the program.
        Err(e @ cli::CliError::NotRunning { .. }) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("rvs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Run { config } => match rvs::control::daemon::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rvs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => check(&config),
        Command::Conns {
            client: c,
            service,
            json,
        } => {
            let sock = match socket_or_exit(&c) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            report(cli::conns(
                &sock,
                &Request::Conns { service },
                json,
                &mut out,
            ))
        }
        Command::Services {
            client: c,
            stats,
            rate,
            json,
        } => {
            let view = if stats {
                ServicesView::Stats
            } else if rate {
                ServicesView::Rate
            } else {
                ServicesView::Plain
            };
            client(&c, Request::Services, |v| {
                cli::print_services(v, view, json)
            })
        }
        Command::Reload { client: c } => client(&c, Request::Reload, |_| {
            println!("reloaded");
            Ok(())
        }),
        Command::Weight {
            client: c,
            service,
            real,
            weight,
        } => client(
            &c,
            Request::Weight {
                service,
                real,
                weight,
            },
            |_| Ok(()),
        ),
        Command::Drain {
            client: c,
            mut targets,
        } => {
            let real = targets.pop().unwrap_or_default();
            let service = targets.pop();
            client(&c, Request::Drain { service, real }, |_| Ok(()))
        }
        Command::Zero { client: c } => client(&c, Request::Zero, |_| Ok(())),
        Command::Realserver { action } => realserver(action),
        Command::TunnelEndpoint { vips, device } => {
            match tunnel_endpoint::run(&TunnelEndpointOptions { vips, device }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rvs: tunnel-endpoint: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
