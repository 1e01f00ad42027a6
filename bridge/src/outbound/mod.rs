//! Room messages to KIM mail: queued per event (`queue`), sent by a worker
//! with retries, results recorded and failures shown in the room.

pub mod queue;
