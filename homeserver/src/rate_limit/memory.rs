//! Rate limits of one process: the GCRA's arrival times in a map. Used
//! without Redis, and by a worker while its Redis is away (its limits then
//! hold per worker).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Cells, Class};

/// Keys kept before expired ones are swept: a sweep walks the whole map,
/// so it runs only when the map has grown this much since the last.
const SWEEP_EVERY: usize = 10_000;

pub struct MemoryLimits {
    start: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (class, key) → theoretical arrival time, in µs since `start`.
    arrivals: HashMap<(Class, String), u64>,
    sweep_at: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        Self { start: Instant::now(), state: Mutex::new(State { arrivals: HashMap::new(), sweep_at: SWEEP_EVERY }) }
    }
}

impl MemoryLimits {
    /// `None` when the request is within the limit (counted if `take`),
    /// else how long to wait.
    pub fn decide(&self, class: Class, key: &str, cells: Cells, take: bool) -> Option<Duration> {
        let now = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = (class, key.to_owned());
        let stored = state.arrivals.get(&entry).copied();
        let (wait, next) = gcra(stored, now, cells);
        if let (None, true) = (wait, take) {
            state.arrivals.insert(entry, next);
            if state.arrivals.len() >= state.sweep_at {
                // An arrival time in the past is the same as no entry.
                state.arrivals.retain(|_, arrival| *arrival > now);
                state.sweep_at = state.arrivals.len() + SWEEP_EVERY;
            }
        }
        wait
    }
}

/// One GCRA step: from the stored arrival time (if any) and `now`, the wait
/// (`None`: allowed) and the arrival time to store if the request is
/// taken. The Lua script in `redis_store.rs` is the same computation.
fn gcra(stored: Option<u64>, now: u64, cells: Cells) -> (Option<Duration>, u64) {
    let arrival = stored.unwrap_or(now).max(now);
    let next = arrival + cells.interval_us;
    let tolerance = cells.interval_us * u64::from(cells.burst);
    let ahead = next - now;
    let wait = (ahead > tolerance).then(|| Duration::from_micros(ahead - tolerance));
    (wait, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELLS: Cells = Cells { interval_us: 1_000_000, burst: 3 };

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut stored = None;
        for _ in 0..3 {
            let (wait, next) = gcra(stored, 0, CELLS);
            assert_eq!(wait, None);
            stored = Some(next);
        }
        let (wait, _) = gcra(stored, 0, CELLS);
        assert_eq!(wait, Some(Duration::from_secs(1)), "the fourth at once waits one interval");
        let (wait, _) = gcra(stored, 400_000, CELLS);
        assert_eq!(wait, Some(Duration::from_millis(600)));
        let (wait, _) = gcra(stored, 1_000_000, CELLS);
        assert_eq!(wait, None, "one interval later one more is allowed");
    }

    #[test]
    fn checking_does_not_count_and_keys_are_separate() {
        let limits = MemoryLimits::default();
        for _ in 0..10 {
            assert_eq!(limits.decide(Class::FailedLogins, "@a:x", CELLS, false), None);
        }
        for _ in 0..3 {
            assert_eq!(limits.decide(Class::FailedLogins, "@a:x", CELLS, true), None);
        }
        assert!(limits.decide(Class::FailedLogins, "@a:x", CELLS, false).is_some());
        assert_eq!(limits.decide(Class::FailedLogins, "@b:x", CELLS, true), None);
        assert_eq!(limits.decide(Class::Requests, "@a:x", CELLS, true), None);
    }
}
