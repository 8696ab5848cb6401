//! `edgewayctl`: the operator's command line for an edgeway node.
//!
//! Each subcommand lives in its own module; `main` only parses and dispatches.

use clap::{Parser, Subcommand};

mod flow;
mod srtp;

/// Operate and troubleshoot an edgeway node.
#[derive(Debug, Parser)]
#[command(name = "edgewayctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decrypt an SRTP capture to RTP, or encrypt RTP to SRTP, with keys from `a=crypto` lines.
    #[command(subcommand)]
    Srtp(srtp::SrtpCommand),
    /// Read and program a node's flow table: entries, state, counters, ports, liveness.
    Flow(flow::FlowArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Srtp(cmd) => srtp::run(cmd),
        Command::Flow(args) => flow::run(args),
    }
}
