//! One model, one generation at a time: a bounded FIFO queue in front of a thread that owns the [`Engine`].
//!
//! A request takes a *place* when it is queued. The place belongs to the client's side (the handler, then
//! the streaming body), so a client that goes away gives it back at once, whether it was waiting or
//! generating; with every place taken, [`Queue::submit`] answers 429. The worker checks, before each token,
//! whether the request's receiver still exists: a client that went away ends the generation within one
//! token (`FinishReason::Cancelled`), and a request whose client left while it waited never starts.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::generate::{FinishReason, Outcome, TokenEvent};
use crate::{Engine, Error};

use super::openai::ApiError;
use super::request::GenRequest;

/// What the worker tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// The text one token released (streaming requests only; possibly empty).
    Token(String),
    /// The generation ended (an outcome, or an error of the model or the request).
    Done(Result<Outcome, Error>),
    /// The server is shutting down: the request was not run.
    ShuttingDown,
}

/// Counters for `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub running: AtomicBool,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
}

struct Job {
    request: GenRequest,
    events: UnboundedSender<Event>,
}

/// A taken place in the queue (waiting or running); dropping it gives the place back.
#[derive(Debug)]
pub struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sending side of the queue, shared by the HTTP handlers.
pub struct Queue {
    jobs: mpsc::Sender<Job>,
    taken: Arc<AtomicUsize>,
    /// Requests that may wait while one runs.
    waiting: usize,
    pub stats: Arc<Stats>,
    stopping: Arc<AtomicBool>,
}

impl Queue {
    /// Queues a request; its events arrive on the returned receiver. Keep the place while the client is
    /// there. Full: 429.
    pub fn submit(
        &self,
        request: GenRequest,
    ) -> Result<(UnboundedReceiver<Event>, Place), ApiError> {
        if self.stopping.load(Ordering::SeqCst) {
            return Err(ApiError::shutting_down());
        }
        let capacity = self.waiting + 1;
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| ApiError::queue_full(self.waiting))?;
        let place = Place(self.taken.clone());
        let (events, rx) = unbounded_channel();
        self.jobs
            .send(Job { request, events })
            .map_err(|_| ApiError::shutting_down())?;
        Ok((rx, place))
    }

    /// Requests queued or running.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::SeqCst)
    }

    pub fn waiting_capacity(&self) -> usize {
        self.waiting
    }
}

/// Starts the worker thread. `stopping` set: the running generation is cancelled, queued ones are refused.
pub fn spawn(
    mut engine: Engine,
    waiting: usize,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<(Queue, JoinHandle<()>)> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let stats = Arc::new(Stats::default());
    let queue = Queue {
        jobs,
        taken: Arc::new(AtomicUsize::new(0)),
        waiting,
        stats: stats.clone(),
        stopping: stopping.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("stoplab-model".into())
        .spawn(move || {
            // Ends when every sender is gone: the server has stopped.
            for job in rx {
                run(&mut engine, job, &stats, &stopping);
            }
        })?;
    Ok((queue, thread))
}

fn run(engine: &mut Engine, job: Job, stats: &Stats, stopping: &AtomicBool) {
    let Job { request, events } = job;
    if stopping.load(Ordering::SeqCst) {
        let _ = events.send(Event::ShuttingDown);
        return;
    }
    if events.is_closed() {
        stats.cancelled.fetch_add(1, Ordering::SeqCst);
        return;
    }
    stats.running.store(true, Ordering::SeqCst);
    let stream = request.stream;
    let mut sink = |ev: &TokenEvent<'_>| {
        if events.is_closed() || stopping.load(Ordering::SeqCst) {
            return ControlFlow::Break(());
        }
        if stream && events.send(Event::Token(ev.text.to_owned())).is_err() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    };
    // A panic in the model backend must not take the server down with it.
    let result = catch_unwind(AssertUnwindSafe(|| {
        engine.generate(
            &request.prompt,
            request.replay.clone(),
            &request.params,
            &mut sink,
        )
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Backend(format!("the model panicked: {what}")))
    });
    let counter = match &result {
        Ok(o) if o.finish == FinishReason::Cancelled => &stats.cancelled,
        Ok(_) => &stats.completed,
        Err(_) => &stats.failed,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    stats.running.store(false, Ordering::SeqCst);
    let _ = events.send(Event::Done(result));
}
