//! The TI-Messenger rules (gematik's TI-M ePA, see `shared/TI-MESSENGER.md`):
//! what this server allows beyond, or forbids within, the Matrix spec. One
//! file per family of rules, each rule's doc comment naming the gematik
//! requirement (A_xxxxx) it implements; the endpoint handlers in
//! `client_api/` call into them before they act.
//!
//! - [`accounts`]: insured persons (with a KVNR) and the insurer's staff.
//! - [`permissions`]: who may invite whom (the invitee's permission config).
//! - [`room_rules`]: room versions, room creation, state, reactions,
//!   threads, redactions, the public room directory.
//! - [`privacy`]: profile lookups.

pub mod accounts;
pub mod permissions;
pub mod privacy;
pub mod room_rules;
