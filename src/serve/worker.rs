//! One model, one generation at a time: a bounded FIFO queue in front of a thread that owns the [`Engine`].
//!
//! A request takes a *place* when it is queued. The place belongs to the client's side (the handler, then
//! the streaming body), so a client that goes away gives it back at once, whether it was waiting or
//! generating; with every place taken, [`Queue::submit`] answers 429. The worker checks, before each token,
//! whether the request's receiver still exists: a client that went away ends the generation within one
//! token (`FinishReason::Cancelled`), and a request whose client left while it waited never starts.
//!
//! Each generated token reaches the handler as one [`Step`]: the whole engine step (the token, what the stop
//! engine released and held back, the finish and its cut on the last one, and the model's probabilities when
//! the request asked for them), so a route can show as much of it as its API has room for: OpenAI's text
//! deltas and logprobs, or a trace row per token ([`Step::trace_row`]). A request with `n` choices runs them
//! one after another; every event names its choice.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::generate::{FinishReason, Outcome, Sink, StepProbs, TokenEvent};
use crate::stop::{HeldFor, StopCut};
use crate::tokenizer::Vocab;
use crate::trace::{TraceEnd, TraceRow};
use crate::{Engine, Error};

use super::openai::ApiError;
use super::request::GenRequest;

/// What the worker tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// One generated token of a choice, as the engine stepped it.
    Step(Box<Step>),
    /// A choice's generation ended (an outcome, or an error of the model or the request). After an error no
    /// further choice runs.
    Done {
        choice: usize,
        result: Result<Outcome, Error>,
    },
    /// The server is shutting down: the request was not run.
    ShuttingDown,
}

/// One step of the generation loop for one token: everything [`TokenEvent`] says, owned, so it can cross to
/// the handler's task.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Which of the request's `n` choices (0-based).
    pub choice: usize,
    /// 0-based index among the choice's generated tokens.
    pub index: usize,
    pub id: u32,
    /// The bytes the token stands for (a special token's name).
    pub bytes: Vec<u8>,
    /// A special (control) token: `bytes` is its name, not text the model spelled.
    pub special: bool,
    /// The id is in the model's end-of-generation set.
    pub end_token: bool,
    /// Text released to the output by this token (possibly empty; possibly text held back earlier).
    pub text: String,
    /// Bytes held back after this token: the beginning of a stop, or an unfinished character.
    pub held: Vec<u8>,
    /// Which stop the held bytes may begin.
    pub held_for: Option<HeldFor>,
    /// On the last token of the choice: how it ended.
    pub finish: Option<FinishReason>,
    /// On the last token, for a stop string: the bytes the match cut and the tokens that wrote them.
    pub cut: Option<StopCut>,
    /// The model's probabilities at this step (raw-logit softmax), when the request asked for them and a
    /// model, not a replay, chose the token.
    pub probs: Option<StepProbs>,
}

impl Step {
    fn of(choice: usize, ev: &TokenEvent<'_>, special: bool) -> Self {
        Self {
            choice,
            index: ev.index,
            id: ev.id,
            bytes: ev.bytes.to_vec(),
            special,
            end_token: ev.end_token,
            text: ev.text.to_owned(),
            held: ev.held.to_vec(),
            held_for: ev.held_for(),
            finish: ev.finish.cloned(),
            cut: ev.cut.cloned(),
            probs: ev.probs.cloned(),
        }
    }

    /// The step as `stoplab trace` records it ([`TraceRow::to_json`] gives its JSON line).
    pub fn trace_row(&self) -> TraceRow {
        TraceRow {
            index: self.index,
            id: self.id,
            bytes: self.bytes.clone(),
            special: self.special,
            end_token: self.end_token,
            held: self.held.clone(),
            held_for: self.held_for.clone(),
            emitted: self.text.clone(),
            end: self.finish.as_ref().map(|f| TraceEnd {
                finish: f.clone(),
                cut: self
                    .cut
                    .as_ref()
                    .map(|c| c.bytes.clone())
                    .unwrap_or_default(),
                stop_began_at: self.cut.as_ref().map(|c| c.began_at),
            }),
            probs: self.probs.clone(),
        }
    }
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

/// Starts the worker thread (`vocab` is the engine's own, shared). `stopping` set: the running generation is cancelled, queued ones are refused.
pub fn spawn(
    mut engine: Engine,
    vocab: Arc<Vocab>,
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
                run(&mut engine, &vocab, job, &stats, &stopping);
            }
        })?;
    Ok((queue, thread))
}

fn run(engine: &mut Engine, vocab: &Vocab, job: Job, stats: &Stats, stopping: &AtomicBool) {
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
    for choice in 0..request.n.max(1) {
        let mut params = request.params.clone();
        params.sampling.seed = request.choice_seed(choice);
        let result = run_choice(engine, &request, &params, choice, vocab, &events, stopping);
        let counter = match &result {
            Ok(o) if o.finish == FinishReason::Cancelled => &stats.cancelled,
            Ok(_) => &stats.completed,
            Err(_) => &stats.failed,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        let go_on = matches!(&result, Ok(o) if o.finish != FinishReason::Cancelled);
        let _ = events.send(Event::Done { choice, result });
        if !go_on {
            break;
        }
    }
    stats.running.store(false, Ordering::SeqCst);
}

/// Sends each step to the handler; ends the generation when the handler or the server goes away.
struct StepSink<'a> {
    choice: usize,
    events: &'a UnboundedSender<Event>,
    stopping: &'a AtomicBool,
    /// The engine's vocabulary (shared: the engine is borrowed mutably while the sink runs).
    vocab: &'a Vocab,
    /// Alternatives to compute per step; None: no probabilities.
    top: Option<usize>,
}

impl Sink for StepSink<'_> {
    fn token(&mut self, ev: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        if self.events.is_closed() || self.stopping.load(Ordering::SeqCst) {
            return Ok(ControlFlow::Break(()));
        }
        let step = Step::of(self.choice, ev, self.vocab.is_special(ev.id));
        if self.events.send(Event::Step(Box::new(step))).is_err() {
            return Ok(ControlFlow::Break(()));
        }
        Ok(ControlFlow::Continue(()))
    }

    fn wants_probs(&self) -> bool {
        self.top.is_some()
    }

    fn top_probs(&self) -> usize {
        self.top.unwrap_or(0)
    }
}

fn run_choice(
    engine: &mut Engine,
    request: &GenRequest,
    params: &crate::generate::GenerateParams,
    choice: usize,
    vocab: &Vocab,
    events: &UnboundedSender<Event>,
    stopping: &AtomicBool,
) -> Result<Outcome, Error> {
    let mut sink = StepSink {
        choice,
        events,
        stopping,
        vocab,
        top: request.top_probs,
    };
    // A panic in the model backend must not take the server down with it.
    catch_unwind(AssertUnwindSafe(|| {
        engine.generate(&request.prompt, request.replay.clone(), params, &mut sink)
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Error::Backend(format!("the model panicked: {what}")))
    })
}
