//! `edgewayctl srtp decrypt|encrypt`: placeholder until the pcap tool lands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum SrtpCommand {}

pub(crate) fn run(cmd: SrtpCommand) -> anyhow::Result<()> {
    match cmd {}
}
