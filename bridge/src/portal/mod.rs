//! Portals (one room ↔ one KIM conversation) and ghosts (one Matrix user
//! per KIM address), and the bot's management commands.

pub mod encryption;
pub mod ghost_id;
pub mod ghosts;
pub mod invites;
pub mod management;
pub mod notices;
pub mod room_state;
