//! KIM mail into rooms: the mailbox is polled by POP3 UIDL. Each UIDL is
//! recorded before RETR, posted (`post`) with transaction ids derived from
//! it, recorded as posted, and only then deleted (DELE, unless
//! keep-on-server). A crash between RETR and the post, or between the post
//! and the record, redoes the post with the same transaction ids, which the
//! homeserver answers with the events it already has: every mail appears
//! exactly once.

pub mod post;

use crate::{
    bridge::Bridge,
    kim::pop3::Pop3Session,
    store::inbound_mails::{self, MailState},
};

pub async fn run(bridge: Bridge) {
    loop {
        match poll(&bridge).await {
            Ok(()) => bridge.status.pop3_polled(),
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "POP3 poll failed");
                bridge.status.pop3_failed(format!("{error:#}"));
            }
        }
        tokio::time::sleep(bridge.config.poll_interval()).await;
    }
}

/// One poll: every mail in the listing not done yet.
pub async fn poll(bridge: &Bridge) -> anyhow::Result<()> {
    let keep = bridge.config.bridge.keep_on_server;
    let mut session = Pop3Session::connect(&bridge.config.mailbox.pop3).await?;
    let mut deleted = Vec::new();
    for (number, uidl) in session.uidl().await? {
        let state = match inbound_mails::record(&bridge.db, &uidl).await? {
            MailState::Fetched => {
                let raw = session.retr(number).await?;
                post::post(bridge, &uidl, &raw).await?
            }
            state => state,
        };
        // `Deleted` seen again: the DELE of a session that never reached QUIT.
        if matches!(state, MailState::Posted | MailState::Deleted) && !keep {
            session.dele(number).await?;
            deleted.push(uidl);
        }
    }
    // DELE takes effect at QUIT only.
    session.quit().await?;
    for uidl in deleted {
        inbound_mails::set_state(&bridge.db, &uidl, MailState::Deleted, None, None, None).await?;
    }
    Ok(())
}
