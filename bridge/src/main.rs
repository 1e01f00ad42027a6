//! `kim-bridge`: a Matrix application service that carries TI-Messenger
//! rooms to KIM mailboxes and back.
//!
//! This is the skeleton the bridge issue fills in: the command line is in
//! place so packaging, CI and the workspace build it from the start.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "KIM bridge for the TI-Messenger homeserver (application service)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (not implemented yet; see the bridge issue).
    Run,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run => anyhow::bail!("the KIM bridge is not implemented yet"),
    }
}
