//! `edgewayctl srtp decrypt|encrypt`: placeholder until the pcap tool lands.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum SrtpCommand {
    /// Not implemented yet: prints what the command will do.
    Decrypt,
}

pub(crate) fn run(cmd: SrtpCommand) -> anyhow::Result<()> {
    match cmd {
        SrtpCommand::Decrypt => anyhow::bail!("srtp decrypt is not implemented yet"),
    }
}
