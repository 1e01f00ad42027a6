//! `loadtest compare`: one scenario against several servers on this
//! machine, one after another on the same PostgreSQL, each seeded the same
//! way, into one report with ratios to the first target.

mod databases;
mod our_server;
mod server_process;
mod synapse;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    population::Shape,
    report::{Report, comparison},
    scenarios::{self, RunOptions, Scenario},
    seed,
};
use our_server::Layout;
use server_process::{SHARED_SECRET, ServerProcesses};

/// A server layout to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Our server, one worker, one database.
    Ours,
    /// Our server, two workers sharing Redis, one database; the load
    /// generator spreads clients over both.
    Ours2Workers,
    /// Our server, two workers, two databases (the 256 shards split).
    Ours2Workers2Shards,
    /// Synapse from PyPI in a virtualenv, on the same PostgreSQL.
    Synapse,
}

/// How our server's targets are seeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SeedPath {
    /// The admin API, as for Synapse: the same path for every target.
    Api,
    /// COPY, for populations the API would take hours for (our targets only).
    Copy,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CompareOptions {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Targets in order; the first is the baseline of the ratios.
    #[arg(long = "target", value_enum, default_values_t = [Target::Ours, Target::Synapse])]
    pub targets: Vec<Target>,
    /// Members to seed per target.
    #[arg(long, default_value_t = 1_000)]
    pub members: usize,
    #[arg(long, default_value_t = 500)]
    pub members_per_staff: usize,
    #[arg(long, value_enum, default_value_t = SeedPath::Api)]
    pub ours_seed: SeedPath,
    /// A PostgreSQL URL allowed to create databases (loadtest_* only are
    /// created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub admin_database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Our `homeserver` binary (default: beside this one).
    #[arg(long)]
    pub homeserver_bin: Option<PathBuf>,
    /// Configs, logs, populations and the Synapse virtualenv.
    #[arg(long, default_value = "target/loadtest")]
    pub work_dir: PathBuf,
    /// Keep the databases after the run.
    #[arg(long)]
    pub keep_databases: bool,
    /// The scenario's options; `--url`, `--population`, `--server-pid` and
    /// `--label` are set per target.
    #[command(flatten)]
    pub run: RunOptions,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Ours2Workers => "ours_2w",
            Self::Ours2Workers2Shards => "ours_2w_2db",
            Self::Synapse => "synapse",
        }
    }

    fn layout(self) -> Option<Layout<'static>> {
        let (workers, databases) = match self {
            Self::Ours => (1, 1),
            Self::Ours2Workers => (2, 1),
            Self::Ours2Workers2Shards => (2, 2),
            Self::Synapse => return None,
        };
        Some(Layout { name: self.name(), workers, databases, first_port: 18_008 })
    }
}

pub async fn compare(options: CompareOptions) -> anyhow::Result<()> {
    let shape = Shape { members: options.members, members_per_staff: options.members_per_staff };
    let mut reports = Vec::new();
    for &target in &options.targets {
        tracing::info!("target {}: seeding {} members", target.name(), shape.members);
        let dir = options.work_dir.join(target.name());
        std::fs::create_dir_all(&dir)?;
        let population = dir.join("population.tsv");
        let server = start_seeded(target, &options, &dir, shape, &population).await.with_context(|| format!("preparing target {}", target.name()))?;
        let run = RunOptions { urls: server.urls.clone(), population, server_pids: server.pids(), label: target.name().to_owned(), out: options.run.out.join(target.name()), ..options.run.clone() };
        let result = scenarios::run(options.scenario, run.clone()).await;
        server.stop().await;
        if !options.keep_databases {
            drop_databases(target, &options.admin_database_url).await?;
        }
        let report: Report = result.with_context(|| format!("running against {}", target.name()))?;
        report.write(&run.out)?;
        reports.push(report);
    }
    comparison::write(&reports, &options.run.out)?;
    println!("{}", comparison::markdown(&reports));
    println!("report: {}", options.run.out.join("compare.html").display());
    Ok(())
}

/// Starts `target` on fresh databases and seeds it.
async fn start_seeded(target: Target, options: &CompareOptions, dir: &Path, shape: Shape, population: &Path) -> anyhow::Result<ServerProcesses> {
    let Some(layout) = target.layout() else {
        let python = synapse::install(&options.work_dir).await?;
        let server = synapse::start(&python, dir, &options.admin_database_url, 18_108).await?;
        seed::api::seed(&server.urls[0], SHARED_SECRET, shape, population).await?;
        return Ok(server);
    };
    let binary = match &options.homeserver_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("homeserver"),
    };
    let config = our_server::prepare(&binary, dir, &layout, &options.admin_database_url, &options.redis_url).await?;
    if options.ours_seed == SeedPath::Copy {
        seed::copy::seed(&config, shape, population).await?;
    }
    let server = our_server::start(&binary, &config, &layout).await?;
    if options.ours_seed == SeedPath::Api {
        seed::api::seed(&server.urls[0], SHARED_SECRET, shape, population).await?;
    }
    Ok(server)
}

async fn drop_databases(target: Target, admin_url: &str) -> anyhow::Result<()> {
    match target.layout() {
        Some(layout) => our_server::drop_databases(&layout, admin_url).await,
        None => databases::drop(admin_url, synapse::DATABASE).await,
    }
}
