//! `!kim` commands, read in a staff member's direct chat with the bot and
//! in rooms the bridge is in: `invite <address>`, `status`, `help`.

use std::fmt::Write as _;

use ruma::{EventId, RoomId, UserId};

use super::{invites, notices};
use crate::kim::address::KimAddress;
use crate::{bridge::Bridge, store};

/// A message starting with the command prefix, from a non-bridge user.
pub async fn command(
    bridge: &Bridge,
    room_id: &RoomId,
    sender: &UserId,
    event_id: &EventId,
    arguments: &str,
) -> anyhow::Result<()> {
    let management = store::management_rooms::owner(&bridge.db, room_id)
        .await?
        .is_some();
    let portal = store::portals::addresses(&bridge.db, room_id).await?;
    // The bot speaks in its own rooms, in portals one of the ghosts does.
    let responder = match portal.first() {
        Some(address) if !management => bridge.ghost_of(address),
        _ => bridge.bot.clone(),
    };
    let answer = if !invites::is_staff(bridge, sender).await? {
        "Nur Mitarbeitende der Versicherung können die KIM-Brücke steuern. \
         (Only the insurer's staff may use KIM bridge commands.)"
            .to_owned()
    } else {
        let mut words = arguments.split_whitespace();
        match (words.next(), words.next()) {
            (Some("invite"), Some(address)) => match address.parse::<KimAddress>() {
                Ok(address) => {
                    if management {
                        "`!kim invite` gilt für den Raum, in dem es geschrieben wird: lade mich \
                         in den Raum ein und schreibe es dort. (Use it in the room the practice \
                         should join, with the bot invited.)"
                            .to_owned()
                    } else {
                        invites::invite(bridge, room_id, &responder, &address, sender).await?;
                        format!("{address} ist jetzt im Raum (KIM).")
                    }
                }
                _ => format!("{address:?} ist keine KIM-Adresse."),
            },
            (Some("status"), None) => status(bridge).await?,
            _ => help(&bridge.config.management.command_prefix),
        }
    };
    notices::notice(
        bridge,
        room_id,
        &responder,
        &format!("kim-command-{event_id}"),
        Some(event_id),
        &answer,
    )
    .await?;
    Ok(())
}

fn help(prefix: &str) -> String {
    format!(
        "KIM-Brücke, Befehle:\n\
         {prefix} invite <adresse> — die KIM-Adresse in diesen Raum holen (Portal)\n\
         {prefix} status — Portale, Warteschlange, letzter Abruf, Fehler\n\
         {prefix} help — diese Hilfe"
    )
}

async fn status(bridge: &Bridge) -> anyhow::Result<String> {
    let portals = store::portals::all(&bridge.db).await?;
    let queued = store::outbound_queue::len(&bridge.db).await?;
    let failures = store::messages::recent_failures(&bridge.db, 5).await?;
    let activity = bridge.status.snapshot();
    let mut text = format!("Portale: {}\n", portals.len());
    for portal in &portals {
        let addresses: Vec<&str> = portal.addresses.iter().map(KimAddress::as_str).collect();
        let _ = writeln!(text, "  {} — {}", portal.room_id, addresses.join(", "));
    }
    let _ = writeln!(text, "Ausgehende Warteschlange: {queued}");
    let _ = writeln!(
        text,
        "Letzter POP3-Abruf: {}",
        activity.last_pop3_poll.map_or_else(
            || "noch keiner".to_owned(),
            |at| format!("{at} (Unix-Zeit)")
        )
    );
    if let Some(error) = &activity.last_pop3_error {
        let _ = writeln!(text, "Letzter POP3-Fehler: {error}");
    }
    if let Some(error) = &activity.last_smtp_error {
        let _ = writeln!(text, "Letzter SMTP-Fehler: {error}");
    }
    let _ = writeln!(
        text,
        "Fehlgeschlagene Nachrichten (neueste {}):",
        failures.len()
    );
    for failed in &failures {
        let _ = writeln!(
            text,
            "  {} in {}: {}",
            failed.message_id,
            failed.room_id,
            failed.failure.as_deref().unwrap_or("?")
        );
    }
    Ok(text)
}
