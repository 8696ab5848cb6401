//! `edgeway-control --config node.toml [--check] [--ready-file PATH]`: runs an edge or core
//! node (see the library docs); `--check` validates the configuration and certificates and
//! exits.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// edgeway's control-plane process (edge or core, from the configuration).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The node's TOML configuration file.
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration and certificates, print the result, and exit.
    #[arg(long)]
    check: bool,
    /// Write the `ready` JSON line (bound addresses) here once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = edgeway_control::config::Config::load(&args.config)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    edgeway_control::run::check_tls(&cfg)
        .with_context(|| format!("configuration {}", args.config.display()))?;
    if args.check {
        println!(
            "{}: valid ({:?} node {})",
            args.config.display(),
            cfg.role,
            cfg.node_name
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(edgeway_control::run::run(cfg, args.ready_file))?;
    Ok(())
}
