//! Scenarios over the Client-Server API against any homeserver URL(s),
//! bounded in time and requests, and what they share: the run context,
//! the sync loop of one simulated client, the run driver.

pub mod e2ee_login;
pub mod idle_sync;
pub mod insurer_chat;
pub mod monday_morning;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    client::{Client, SyncResponse},
    metrics::Metrics,
    population::{Account, Population},
    process_stats::{ProcessSampler, Processes},
    progress,
    report::Report,
};

/// The scenarios of the load-test issue.
#[derive(Clone, Copy, Debug, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Many members long-polling `/sync` with nothing happening: memory
    /// and CPU per idle connection.
    IdleSync,
    /// Members write to their staff account, staff reply, everybody syncs:
    /// send→receive latency, throughput, errors.
    InsurerChat,
    /// A login storm, each login followed by an initial sync.
    MondayMorning,
    /// What real E2EE clients do at login: key upload, query, claim and a
    /// to-device message to the staff device.
    E2ee,
}

/// How a run is driven and bounded.
#[derive(Clone, Debug, clap::Args, Serialize)]
pub struct RunOptions {
    /// Homeserver base URL (loopback only); repeat it to spread clients over
    /// several workers.
    #[arg(long = "url", default_value = "http://127.0.0.1:8008")]
    pub urls: Vec<String>,
    /// The population file written by `loadtest seed`.
    #[arg(long, default_value = "loadtest-population.tsv")]
    pub population: PathBuf,
    /// How many members take part (idle clients, chatting members, logins).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Messages per second (insurer-chat) or logins per second (monday-morning, e2ee); 0 = as fast as possible.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Requests in flight at most (monday-morning, e2ee).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The measured phase stops after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_s: u64,
    /// Time allowed for a scenario's setup (initial syncs of every client
    /// before the chat starts), on top of `duration_s`.
    #[arg(long, default_value_t = 300)]
    pub setup_timeout_s: u64,
    /// The run stops after this many requests.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Pids of the server processes to sample CPU and RSS of.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Name of the server under test in the report.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Directory for report.json, report.html and report.md.
    #[arg(long, default_value = "loadtest-report")]
    pub out: PathBuf,
}

/// What a running scenario works with.
pub struct RunContext {
    clients: Vec<Client>,
    pub metrics: Arc<Metrics>,
    pub population: Population,
    pub options: RunOptions,
    /// Cancelled at the deadline or after `max_requests`.
    pub stop: CancellationToken,
    pub started: Instant,
    /// Setup timeout plus duration until the scenario calls `measure`.
    deadline: Mutex<Instant>,
    pub sampler: ProcessSampler,
    figures: Mutex<BTreeMap<String, f64>>,
}

/// Name of the server's process group in samples and reports.
pub const SERVER: &str = "server";

impl RunContext {
    /// The client for simulated user `index`: users spread over the URLs.
    pub fn client(&self, index: usize) -> &Client {
        &self.clients[index % self.clients.len()]
    }

    /// Records a scenario-specific figure for the report.
    pub fn figure(&self, name: &str, value: f64) {
        self.figures.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_owned(), value);
    }

    /// The measured phase begins: the run stops `duration_s` from now.
    pub fn measure(&self) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now() + Duration::from_secs(self.options.duration_s);
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn seconds_since_start(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The pause between two starts at `options.rate` per second.
    pub fn start_interval(&self) -> Option<Duration> {
        (self.options.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / self.options.rate))
    }
}

/// Long-poll timeout of simulated clients (Element's is 30 s).
pub const LONG_POLL: Duration = Duration::from_secs(30);

/// One client's `/sync` loop: an initial sync, then long polls until
/// `stop`, handing every response to `on_response`. Failed requests (already
/// counted as errors) are retried after a second.
pub async fn sync_loop(client: &Client, account: &Account, stop: &CancellationToken, mut on_response: impl FnMut(&SyncResponse)) {
    let mut since: Option<String> = None;
    while !stop.is_cancelled() {
        let timeout = if since.is_some() { LONG_POLL } else { Duration::ZERO };
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = client.sync(&account.access_token, since.as_deref(), timeout) => result,
        };
        match result {
            Ok(response) => {
                on_response(&response);
                since = Some(response.next_batch);
            }
            Err(err) => {
                tracing::debug!("sync of {}: {err:#}", account.user_id);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs `scenario` with `options` and returns its report.
pub async fn run(scenario: Scenario, options: RunOptions) -> anyhow::Result<Report> {
    let population = Population::load(&options.population, options.users)?;
    let metrics = Arc::new(Metrics::default());
    let clients = options.urls.iter().map(|url| Client::new(url, metrics.clone())).collect::<anyhow::Result<Vec<_>>>()?;
    let stop = CancellationToken::new();
    let sampler_stop = CancellationToken::new();
    let mut groups = vec![("postgres".to_owned(), Processes::Command("postgres".to_owned()))];
    if !options.server_pids.is_empty() {
        groups.insert(0, (SERVER.to_owned(), Processes::Pids(options.server_pids.clone())));
    }
    let sampler = ProcessSampler::start(groups, sampler_stop.clone());
    let started_at_unix = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let ctx = Arc::new(RunContext { clients, metrics: metrics.clone(), population, options: options.clone(), stop: stop.clone(), started: Instant::now(), deadline: Mutex::new(Instant::now() + Duration::from_secs(options.setup_timeout_s + options.duration_s)), sampler, figures: Mutex::default() });

    tracing::info!("running {scenario:?} against {}: setup up to {} s, then {} s measured", options.urls.join(", "), options.setup_timeout_s, options.duration_s);
    let watchdog = tokio::spawn(watch(ctx.clone()));
    match scenario {
        Scenario::IdleSync => idle_sync::run(ctx.clone()).await?,
        Scenario::InsurerChat => insurer_chat::run(ctx.clone()).await?,
        Scenario::MondayMorning => monday_morning::run(ctx.clone()).await?,
        Scenario::E2ee => e2ee_login::run(ctx.clone()).await?,
    }
    stop.cancel();
    watchdog.await?;
    sampler_stop.cancel();

    let duration_s = ctx.seconds_since_start();
    let figures = ctx.figures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Report::new(&options, scenario, started_at_unix, duration_s, &metrics, ctx.sampler.stats(), figures))
}

/// Shows progress and cancels `stop` at the deadline or the request bound.
async fn watch(ctx: Arc<RunContext>) {
    let spinner = progress::spinner();
    let mut previous = ctx.metrics.totals();
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    while !ctx.stop.is_cancelled() {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let totals = ctx.metrics.totals();
        let server = ctx.sampler.latest_pss_mib(SERVER).map(|rss| format!(", server PSS {rss:.0} MiB")).unwrap_or_default();
        let line = format!(
            "{} requests ({}/s), {} errors, {} deliveries ({}/s){server}",
            totals.requests,
            totals.requests - previous.requests,
            totals.errors,
            totals.deliveries,
            totals.deliveries - previous.deliveries
        );
        // Without a terminal (CI, logs) the spinner is hidden: a line every 10 s instead.
        if spinner.is_hidden() && ctx.started.elapsed().as_secs().is_multiple_of(10) {
            tracing::info!("{line}");
        }
        spinner.set_message(line);
        previous = totals;
        if Instant::now() >= ctx.deadline() || totals.requests >= ctx.options.max_requests {
            ctx.stop.cancel();
        }
    }
    spinner.finish();
}
