//! `kim-bridge`: a Matrix application service that carries TI-Messenger
//! rooms to KIM mailboxes and back.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kim_bridge::{config, registration};

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
    /// Write a commented example config.
    GenerateConfig {
        #[arg(short, long, default_value = "config.toml")]
        output: PathBuf,
    },
    /// Give the config fresh tokens and write the homeserver's registration
    /// file (YAML) for `[appservices] registration_files`.
    GenerateRegistration {
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        #[arg(short, long, default_value = "kim-registration.yaml")]
        registration: PathBuf,
    },
    /// Run the bridge.
    Run {
        #[arg(short, long, default_value = "config.toml", env = "KIM_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Run a TEST KIM Clientmodul (software keys, never for real mail).
    TestClientmodul {
        #[arg(short, long, default_value = "clientmodul.toml")]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::GenerateConfig { output } => {
            anyhow::ensure!(
                !output.exists(),
                "{} exists; not overwriting it",
                output.display()
            );
            std::fs::write(&output, config::example())
                .with_context(|| format!("writing {}", output.display()))?;
            println!("wrote {}", output.display());
            Ok(())
        }
        Command::GenerateRegistration {
            config,
            registration,
        } => {
            registration::generate(&config, &registration)?;
            println!(
                "wrote {} and the tokens in {}",
                registration.display(),
                config.display()
            );
            Ok(())
        }
        Command::Run { config } => {
            let config = config::Config::load(&config)?;
            runtime()?.block_on(kim_bridge::bridge::run(config))
        }
        Command::TestClientmodul { config } => {
            let config = kim_bridge::clientmodul::config::ClientmodulConfig::load(&config)?;
            runtime()?.block_on(kim_bridge::clientmodul::run(config))
        }
    }
}

/// Logging, the TLS provider and the runtime of the long-running commands.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Runtime::new().context("starting the runtime")
}
