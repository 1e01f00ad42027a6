//! Seeding: the accounts, devices, tokens and rooms a run needs, in the
//! realistic shape (each insured member has one direct room with a staff
//! account; each staff account serves `members_per_staff` rooms), written
//! to the server plus a population file the scenarios read.

pub mod api;
pub mod copy;
mod copy_rows;
mod room_events;
