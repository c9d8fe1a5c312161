//! The `rvs` binary: argument parsing, logging set-up and wiring. Only the
//! real-server side (`tunnel-endpoint`) lives here for now; the daemon and
//! control commands join it when the full CLI is merged.

use std::io::IsTerminal;
use std::net::Ipv4Addr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rvs::datapath::tunnel_endpoint::{self, TunnelEndpointOptions};

#[derive(Debug, Parser)]
#[command(
    name = "rvs",
    version,
    about = "Rust Virtual Server: a user-space layer-4 load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Real-server side of VS/TUN without the kernel `ipip` module: receive
    /// IP-in-IP packets on a raw socket and hand the inner packets to a TUN
    /// device that owns the VIPs. Runs until SIGTERM or SIGINT.
    TunnelEndpoint(TunnelEndpointArgs),
}

#[derive(Debug, Args)]
struct TunnelEndpointArgs {
    /// A virtual IP this real server serves (repeat for several).
    #[arg(long = "vip", value_name = "ADDR", required = true)]
    vips: Vec<Ipv4Addr>,
    /// Name of the TUN device to create (or take over).
    #[arg(long, value_name = "NAME", default_value = tunnel_endpoint::DEFAULT_DEVICE)]
    device: String,
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::TunnelEndpoint(args) => {
            let opts = TunnelEndpointOptions {
                vips: args.vips,
                device: args.device,
            };
            tunnel_endpoint::run(&opts).context("tunnel-endpoint")
        }
    }
}
