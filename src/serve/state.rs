//! What every route's handler shares: the served model, the queue in front of its worker, and the
//! response ids' parts.

use std::sync::atomic::AtomicU64;

use crate::serve::fields::Served;
use crate::serve::worker::Queue;

pub struct AppState {
    pub served: Served,
    pub queue: Queue,
    /// When the server started (seconds since the epoch): `/v1/models`' `created`, and the ids' prefix.
    pub started: u64,
    /// The next response id's number.
    pub next_id: AtomicU64,
}
