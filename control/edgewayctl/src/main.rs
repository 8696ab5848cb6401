//! `edgewayctl`: the operator's command line for an edgeway node.
//!
//! Each subcommand lives in its own module; `main` only parses and dispatches.

use clap::{Parser, Subcommand};

mod allowlist;
mod calls;
mod control;
mod flow;
mod flows;
mod srtp;
mod status;

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
    /// The live XDP view: flows, their latches and counters, top talkers, drops, events.
    Flows(flows::FlowsArgs),
    /// Whether the node's data plane is running, and how XDP sits in front of it.
    Status(status::StatusArgs),
    /// The core's HTTP allow list: upload rules, run tests, check one request.
    #[command(subcommand)]
    Allowlist(allowlist::AllowlistCommand),
    /// A running edgeway-control node: status, registrations, maintenance on|off.
    Control(control::ControlArgs),
    /// A running node's current calls (legs, flows, packets) or its call history.
    Calls(calls::CallsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Srtp(cmd) => srtp::run(cmd),
        Command::Flow(args) => flow::run(args),
        Command::Flows(args) => flows::run(args),
        Command::Status(args) => status::run(args),
        Command::Allowlist(cmd) => allowlist::run(cmd),
        Command::Control(args) => control::run(args),
        Command::Calls(args) => calls::run(args),
    }
}
