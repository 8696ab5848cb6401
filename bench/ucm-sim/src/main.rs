//! `ucm-sim`: a Unified CM stand-in (SIP registrar with digest authentication over TCP and
//! TLS, call routing, simulated inside phones) for edgeway's tests and benchmarks. The logic
//! is the sans-IO library
//! `edgeway_ucm_sim`; this binary is its tokio/rustls IO layer (`server.rs`) and the
//! command line. The interfaces (options, ready file, users file, admin API) are documented
//! in the library's crate docs.
#![forbid(unsafe_code)]

mod http;
mod oauth;
mod server;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use edgeway_ucm_sim::Settings;

/// A Unified CM stand-in: SIP registrar with digest authentication over TCP and TLS, a user
/// directory, call routing between registered users, simulated inside phones (users with
/// phone = "sim") that answer and place calls with RTP/SRTP, and a JSON-lines admin API on
/// 127.0.0.1.
///
/// Admin API commands, one JSON object per line: {"cmd":"bindings"}, {"cmd":"counters"},
/// {"cmd":"send","method":"OPTIONS"|"MESSAGE","to":"alice","body":"...","timeout_ms":N},
/// {"cmd":"call","from":"1001","to":"alice"}, {"cmd":"hangup","call":N}, {"cmd":"calls"},
/// {"cmd":"answer_mode","user":"1001","mode":"auto|busy|ring|early"}.
#[derive(Debug, Parser)]
#[command(name = "ucm-sim", version)]
struct Cli {
    /// Read settings from this TOML file (same names as the flags, with `_`); flags win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: Settings,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let base = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            Settings::from_toml(&text)?
        }
        None => Settings::default(),
    };
    let settings = cli.settings.over(base);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.threads.unwrap_or(2).max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(server::run(settings))
}
