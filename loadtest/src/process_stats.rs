//! CPU and memory of the processes under test, sampled from `/proc` once
//! a second: the server's own processes (by pid) and all PostgreSQL
//! backends (by command name), whose work the server causes.
//!
//! Memory is the proportional set size (PSS: resident pages, shared ones
//! divided among the processes sharing them), so that PostgreSQL's shared
//! buffers count once for the group, not once per backend; for a process
//! sharing nothing it equals RSS.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Which processes make up one group.
#[derive(Clone, Debug)]
pub enum Processes {
    Pids(Vec<u32>),
    /// Every process whose `/proc/<pid>/comm` is this name.
    Command(String),
}

/// One sample of a group.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    pub t_s: f64,
    /// Percent of one core (200 = both cores of a 2-core machine).
    pub cpu_percent: f64,
    pub pss_mib: f64,
}

/// The samples of one group and their summary.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStats {
    pub name: String,
    pub mean_cpu_percent: f64,
    pub max_pss_mib: f64,
    pub samples: Vec<Sample>,
}

/// Kernel clock ticks per second of `utime`/`stime` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Samples groups of processes until cancelled.
pub struct ProcessSampler {
    groups: Arc<Mutex<Vec<GroupStats>>>,
}

impl ProcessSampler {
    pub fn start(groups: Vec<(String, Processes)>, stop: CancellationToken) -> Self {
        let stats = Arc::new(Mutex::new(groups.iter().map(|(name, _)| GroupStats { name: name.clone(), mean_cpu_percent: 0.0, max_pss_mib: 0.0, samples: Vec::new() }).collect::<Vec<_>>()));
        let shared = stats.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut previous: Vec<(Instant, u64)> = groups.iter().map(|(_, p)| (Instant::now(), usage(p).0)).collect();
            let mut interval = tokio::time::interval(Duration::from_secs(1));
            interval.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = interval.tick() => {}
                }
                let mut stats = shared.lock().unwrap_or_else(|p| p.into_inner());
                for (i, (_, processes)) in groups.iter().enumerate() {
                    let (ticks, pss_kib) = usage(processes);
                    let now = Instant::now();
                    let (then, old_ticks) = previous[i];
                    let cpu_percent = ticks.saturating_sub(old_ticks) as f64 / TICKS_PER_SECOND / now.duration_since(then).as_secs_f64() * 100.0;
                    previous[i] = (now, ticks);
                    stats[i].samples.push(Sample { t_s: started.elapsed().as_secs_f64(), cpu_percent, pss_mib: pss_kib as f64 / 1024.0 });
                }
            }
        });
        Self { groups: stats }
    }

    /// The newest PSS of the group named `name`, in MiB.
    pub fn latest_pss_mib(&self, name: &str) -> Option<f64> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.iter().find(|g| g.name == name)?.samples.last().map(|s| s.pss_mib)
    }

    /// Mean CPU of the group named `name` over samples taken in `[from_s, to_s]`.
    pub fn mean_cpu_between(&self, name: &str, from_s: f64, to_s: f64) -> Option<f64> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        let samples: Vec<f64> = groups.iter().find(|g| g.name == name)?.samples.iter().filter(|s| s.t_s >= from_s && s.t_s <= to_s).map(|s| s.cpu_percent).collect();
        (!samples.is_empty()).then(|| samples.iter().sum::<f64>() / samples.len() as f64)
    }

    /// Every group with its summary.
    pub fn stats(&self) -> Vec<GroupStats> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for group in &mut groups {
            let n = group.samples.len().max(1) as f64;
            group.mean_cpu_percent = group.samples.iter().map(|s| s.cpu_percent).sum::<f64>() / n;
            group.max_pss_mib = group.samples.iter().map(|s| s.pss_mib).fold(0.0, f64::max);
        }
        groups
    }
}

/// CPU ticks (user + system) and PSS (KiB) summed over the group.
fn usage(processes: &Processes) -> (u64, u64) {
    let pids: Vec<u32> = match processes {
        Processes::Pids(pids) => pids.clone(),
        Processes::Command(name) => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == name))
            .collect(),
    };
    pids.iter().filter_map(|pid| process_usage(*pid)).fold((0, 0), |(t, r), (ticks, rss)| (t + ticks, r + rss))
}

fn process_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let pss_kib = rollup.lines().find_map(|line| line.strip_prefix("Pss:"))?.split_whitespace().next()?.parse().ok()?;
    Some((ticks, pss_kib))
}
