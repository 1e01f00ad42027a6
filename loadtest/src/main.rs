//! `loadtest`: drives any Matrix homeserver over the Client-Server API and
//! reports latency and throughput.
//!
//! This is the skeleton the load-test issue fills in.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Load generator for Matrix homeservers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (not implemented yet; see the load-test issue).
    Run,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run => anyhow::bail!("load scenarios are not implemented yet"),
    }
}
