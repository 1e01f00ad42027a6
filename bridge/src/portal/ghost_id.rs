//! Ghost user ids: `@<prefix><encoded address>:<server>`, one per KIM
//! address.
//!
//! The encoding is reversible so a user id the homeserver asks about (or a
//! staff member invites) names its address without a lookup. KIM addresses
//! are lowercased first; then every byte that is a lowercase letter, digit,
//! `.`, `_` or `-` stays, and every other byte (`@` above all) becomes `=`
//! and two lowercase hex digits — the `=` escape the spec suggests for
//! mapping foreign ids into localparts. So
//! `praxis.mueller@praxis.kim.telematik` is
//! `@kim_praxis.mueller=40praxis.kim.telematik:example.org`.

use ruma::{OwnedUserId, ServerName, UserId};

use crate::kim::address::KimAddress;

/// The ghost of `address`.
pub fn ghost_user_id(prefix: &str, address: &KimAddress, server: &ServerName) -> OwnedUserId {
    let localpart = format!("{prefix}{}", encode(address.as_str()));
    UserId::parse_with_server_name(localpart.as_str(), server)
        .expect("the encoding only yields localpart characters")
}

/// The address a ghost stands for; `None` for users that are not ghosts of
/// this bridge (other server, other prefix, not a valid encoding).
pub fn address_of_ghost(prefix: &str, user_id: &UserId, server: &ServerName) -> Option<KimAddress> {
    if user_id.server_name() != server {
        return None;
    }
    let encoded = user_id.localpart().strip_prefix(prefix)?;
    let address: KimAddress = decode(encoded)?.parse().ok()?;
    // Only the canonical spelling names a ghost: one address, one user.
    (encode(address.as_str()) == encoded).then_some(address)
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for byte in text.bytes() {
        if byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("={byte:02x}"));
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use ruma::server_name;

    use super::*;

    #[test]
    fn ghost_ids_encode_addresses_reversibly() {
        let server = server_name!("example.org");
        let address: KimAddress = "Praxis.Mueller@praxis.kim.telematik"
            .parse()
            .expect("valid");
        let ghost = ghost_user_id("kim_", &address, server);
        assert_eq!(
            ghost,
            "@kim_praxis.mueller=40praxis.kim.telematik:example.org"
        );
        assert_eq!(address_of_ghost("kim_", &ghost, server), Some(address));
    }

    #[test]
    fn other_users_are_no_ghosts() {
        let server = server_name!("example.org");
        for user in [
            "@alice:example.org",
            "@kim_praxis=40praxis.kim.telematik:other.org",
            "@kim_no-at-sign:example.org",
            "@kim_a=4:example.org",
            "@kim_a=zz=40b.kim.telematik:example.org",
            // Not the canonical spelling of a@b.kim.telematik.
            "@kim_=61=40b.kim.telematik:example.org",
        ] {
            let user = UserId::parse(user).expect("a user id");
            assert_eq!(address_of_ghost("kim_", &user, server), None, "{user}");
        }
    }
}
