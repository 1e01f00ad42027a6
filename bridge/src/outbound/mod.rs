//! Room messages to KIM mail: queued per event (`queue`), built with the
//! file downloaded (`mail`), sent by a worker with retries, results
//! recorded and failures shown in the room (`worker`).

pub mod mail;
pub mod queue;
pub mod worker;
