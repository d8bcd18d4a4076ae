//! The open connections, so that a full house can make room for a new client.
//!
//! An idle connection costs a task and a socket, so a flood of clients that open connections and send their
//! headers a byte at a time (or nothing at all) must not keep a good client out until their read timeout
//! runs out. Every connection is *waiting* until its first request's header has arrived; when every place
//! is taken and another client connects, the connection that has waited longest is closed to let it in (a
//! slow-header defence, as nginx and HAProxy have). A connection that has sent a request is never closed
//! this way: its body and its response are bounded by the read timeout and the generation itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::AbortHandle;

/// The open connections, oldest first.
#[derive(Default)]
pub struct Open {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: BTreeMap<u64, Conn>,
}

struct Conn {
    /// Still waiting for its first request's header.
    waiting: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
}

/// One open connection's entry: marks it as no longer waiting once a request arrives, and leaves the
/// list when dropped (the connection's task ended or was aborted).
pub struct Entry {
    open: Arc<Open>,
    id: u64,
    waiting: Arc<AtomicBool>,
}

impl Open {
    /// Registers a new connection, waiting for its first request.
    pub fn add(self: &Arc<Self>) -> Entry {
        let waiting = Arc::new(AtomicBool::new(true));
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.conns.insert(
            id,
            Conn {
                waiting: waiting.clone(),
                abort: None,
            },
        );
        Entry {
            open: self.clone(),
            id,
            waiting,
        }
    }

    /// Closes the connection that has waited longest for its first request; false when every open
    /// connection has sent one.
    pub fn evict_oldest_waiting(&self) -> bool {
        let mut inner = self.lock();
        let oldest = inner
            .conns
            .iter()
            .find(|(_, c)| c.waiting.load(Ordering::SeqCst) && c.abort.is_some())
            .map(|(&id, _)| id);
        match oldest.and_then(|id| inner.conns.remove(&id)) {
            Some(c) => {
                if let Some(a) = c.abort {
                    a.abort();
                }
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The list stays consistent whatever panicked while it was held: every change is one insert or
        // remove.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Entry {
    /// Gives the entry the handle that closes its connection.
    pub fn set_abort(&self, abort: AbortHandle) {
        if let Some(c) = self.open.lock().conns.get_mut(&self.id) {
            c.abort = Some(abort);
        }
    }

    /// Marks the connection as no longer waiting: a request has arrived.
    pub fn arrived(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.open.lock().conns.remove(&self.id);
    }
}
