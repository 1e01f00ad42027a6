//! `loadtest`: seeds a homeserver with a realistic insurer population,
//! drives it over the Client-Server API and reports latency, throughput,
//! CPU and memory; `compare` runs one scenario against our server (in
//! several layouts) and Synapse side by side. See loadtest/README.md.

mod client;
mod compare;
mod metrics;
mod population;
mod process_stats;
mod progress;
mod report;
mod scenarios;
mod seed;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use population::Shape;

#[derive(Parser)]
#[command(version, about = "Load generator for Matrix homeservers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create members (each with a room shared with a staff account), staff,
    /// devices and access tokens; writes the population file.
    Seed {
        #[command(subcommand)]
        path: SeedCommand,
    },
    /// Run one scenario against a running server.
    Run {
        #[arg(value_enum)]
        scenario: scenarios::Scenario,
        #[command(flatten)]
        options: scenarios::RunOptions,
    },
    /// Run one scenario against our server and Synapse (and our server with
    /// more workers and databases), one report with the ratios.
    Compare(compare::CompareOptions),
}

#[derive(Subcommand)]
enum SeedCommand {
    /// Straight into our server's databases with COPY (server stopped).
    Copy {
        /// The homeserver's config (databases, server name, signing key).
        #[arg(long)]
        homeserver_config: PathBuf,
        #[command(flatten)]
        shape: ShapeArgs,
    },
    /// Through the shared-secret admin API of any running server.
    Api {
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        url: String,
        #[arg(long, env = "LOADTEST_SHARED_SECRET")]
        shared_secret: String,
        #[command(flatten)]
        shape: ShapeArgs,
    },
}

#[derive(clap::Args)]
struct ShapeArgs {
    #[arg(long, default_value_t = 1_000_000)]
    members: usize,
    /// Rooms (members) each staff account serves.
    #[arg(long, default_value_t = 2_000)]
    members_per_staff: usize,
    /// Where to write the population file.
    #[arg(long, default_value = "loadtest-population.tsv")]
    population: PathBuf,
}

impl ShapeArgs {
    fn shape(&self) -> Shape {
        Shape { members: self.members, members_per_staff: self.members_per_staff.max(1) }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_writer(std::io::stderr).init();
    match Cli::parse().command {
        Command::Seed { path: SeedCommand::Copy { homeserver_config, shape } } => seed::copy::seed(&homeserver_config, shape.shape(), &shape.population).await,
        Command::Seed { path: SeedCommand::Api { url, shared_secret, shape } } => seed::api::seed(&url, &shared_secret, shape.shape(), &shape.population).await,
        Command::Run { scenario, options } => {
            let report = scenarios::run(scenario, options.clone()).await?;
            report.write(&options.out)?;
            print!("{}", report::markdown_summary(&report));
            println!("report: {}", options.out.join("report.html").display());
            Ok(())
        }
        Command::Compare(options) => compare::compare(options).await,
    }
}
