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
//! - [`federation_list`]: the signed list of TI-M domains: which remote
//!   users may be invited, and which are insured persons.
//! - [`retention`]: the background job that deletes inactive and orphaned
//!   rooms and takes local users out of insured-only rooms.

pub mod accounts;
pub mod federation_list;
pub mod permissions;
pub mod privacy;
pub mod retention;
pub mod room_rules;
