//! What the workers last achieved, for `/health` and `!kim status`: kept in
//! memory (a restart starts with "never", which is what it means).

use std::{sync::Mutex, time::SystemTime};

use serde::Serialize;

/// Outcome of the latest SMTP send and POP3 poll.
#[derive(Default)]
pub struct Status {
    inner: Mutex<Activity>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Activity {
    /// Unix seconds of the last mail the Clientmodul accepted.
    pub last_smtp_send: Option<u64>,
    pub last_smtp_error: Option<String>,
    /// Unix seconds of the last complete POP3 poll.
    pub last_pop3_poll: Option<u64>,
    pub last_pop3_error: Option<String>,
}

fn now() -> Option<u64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|elapsed| elapsed.as_secs())
}

impl Status {
    pub fn snapshot(&self) -> Activity {
        self.inner.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn update(&self, change: impl FnOnce(&mut Activity)) {
        if let Ok(mut activity) = self.inner.lock() {
            change(&mut activity);
        }
    }

    pub fn smtp_sent(&self) {
        self.update(|a| {
            a.last_smtp_send = now();
            a.last_smtp_error = None;
        });
    }

    pub fn smtp_failed(&self, error: String) {
        self.update(|a| a.last_smtp_error = Some(error));
    }

    pub fn pop3_polled(&self) {
        self.update(|a| {
            a.last_pop3_poll = now();
            a.last_pop3_error = None;
        });
    }

    pub fn pop3_failed(&self, error: String) {
        self.update(|a| a.last_pop3_error = Some(error));
    }
}
