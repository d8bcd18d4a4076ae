//! One model, several generations at once: a bounded FIFO queue in front of a thread that owns the
//! [`LoadedModel`] and schedules a [`Batch`]. A request's choices join the batch, oldest request first, as KV
//! slots free up (its prompt is read on its own, between steps); each step then decodes one token of every
//! running sequence in one pass over the weights; a finished or cancelled sequence leaves at once. Each
//! sequence keeps its own sampler, seed and stop engine, so its text is what it would be alone.
//!
//! A request takes a *place* when it is queued. The place belongs to the client's side (the handler, then
//! the streaming body), so a client that goes away gives it back at once, whether it was waiting or
//! generating; with every place taken, [`Queue::submit`] answers 429. The worker checks, before each token,
//! whether the request's receiver still exists: a client that went away ends the generation within one
//! token (`FinishReason::Cancelled`), and a request whose client left while it waited never starts.
//!
//! Each generated token reaches the handler as one [`Event::Token`]: the owned
//! [`Token`](crate::pipeline::sink::Token) (the id, what the stop engine released and held back, the finish
//! and its cut on the last one, and the model's probabilities when the request asked for them), so a route
//! can show as much of it as its API has room for: OpenAI's text deltas and logprobs, or a trace row per
//! token. A request with `n` choices runs them side by side, but its handler hears them in order, one
//! choice after another (`delivery.rs`); every event names its choice.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::pipeline::batch::{Batch, Done};
use crate::pipeline::sink::{Sink, StepProbs, StepReport, TokenEvent};
use crate::pipeline::stop::FinishReason;
use crate::pipeline::tokenizer::Vocab;
use crate::serve::delivery::Delivery;
use crate::serve::error::ApiError;
use crate::serve::request::GenRequest;
use crate::{Error, LoadedModel};

/// What the worker tells a request's handler; it lives in `delivery.rs`, with the order it is told in.
pub use crate::serve::delivery::Event;

/// Counters for `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub running: AtomicBool,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    /// Steps of speculative decoding, and the tokens they drafted and accepted (vLLM's
    /// `spec_decode_num_drafts` / `num_draft_tokens` / `num_accepted_tokens`).
    pub spec_steps: AtomicU64,
    pub drafted: AtomicU64,
    pub accepted: AtomicU64,
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
    /// Requests that may wait while `parallel` run.
    waiting: usize,
    /// Sequences generated at once.
    parallel: usize,
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
        let capacity = self.waiting + self.parallel;
        self.taken
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| ApiError::queue_full(self.parallel, self.waiting))?;
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

    /// Sequences generated at once.
    pub fn parallel(&self) -> usize {
        self.parallel
    }
}

/// Starts the worker thread (`vocab` is the engine's own, shared); it generates up to `engine.slots()`
/// sequences at once ([`LoadedModel::set_slots`]). `stopping` set: running generations are cancelled, queued
/// ones are refused.
pub fn spawn(
    mut engine: LoadedModel,
    vocab: Arc<Vocab>,
    waiting: usize,
    stopping: Arc<AtomicBool>,
) -> std::io::Result<(Queue, JoinHandle<()>)> {
    let (jobs, rx) = mpsc::channel::<Job>();
    let stats = Arc::new(Stats::default());
    let parallel = engine.slots().max(1);
    let queue = Queue {
        jobs,
        taken: Arc::new(AtomicUsize::new(0)),
        waiting,
        parallel,
        stats: stats.clone(),
        stopping: stopping.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("stoplab-model".into())
        .spawn(move || {
            Scheduler {
                engine: &mut engine,
                vocab: &vocab,
                stats: &stats,
                stopping: &stopping,
                parallel,
                requests: VecDeque::new(),
            }
            .run(rx)
        })?;
    Ok((queue, thread))
}

type Shared = Rc<RefCell<Delivery>>;

/// A request in the scheduler: its choices not yet started, and where their events go.
struct Admitted {
    request: Rc<GenRequest>,
    next_choice: usize,
    delivery: Shared,
}

/// The worker's loop: requests join the running batch between steps (after their prefill), every step
/// decodes one token of each running sequence, finished and cancelled ones leave at once.
struct Scheduler<'a> {
    engine: &'a mut LoadedModel,
    vocab: &'a Vocab,
    stats: &'a Stats,
    stopping: &'a AtomicBool,
    /// Sequences that may run at once.
    parallel: usize,
    /// Requests taken from the queue with choices still to start, oldest first.
    requests: VecDeque<Admitted>,
}

impl<'a> Scheduler<'a> {
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        let slots = self.engine.slots();
        let mut batch: Batch<TokenSink<'a>> = Batch::new(slots);
        loop {
            // Idle: wait for work; otherwise take what has arrived.
            if batch.is_empty() && self.requests.is_empty() {
                match rx.recv() {
                    Ok(job) => self.admit(job),
                    // Every sender is gone: the server has stopped.
                    Err(_) => return,
                }
            }
            while let Ok(job) = rx.try_recv() {
                self.admit(job);
            }
            self.start(&mut batch);
            let gone = batch.cancel_where(|s| s.gone());
            self.finished(gone);
            if !batch.is_empty() {
                let (model, _) = self.engine.batch_parts();
                let done = batch.step(model, self.vocab);
                self.finished(done);
            }
            self.stats
                .running
                .store(!batch.is_empty(), Ordering::SeqCst);
        }
    }

    fn admit(&mut self, job: Job) {
        let Job { request, events } = job;
        if self.stopping.load(Ordering::SeqCst) {
            let _ = events.send(Event::ShuttingDown);
            return;
        }
        if events.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
            return;
        }
        self.requests.push_back(Admitted {
            request: Rc::new(request),
            next_choice: 0,
            delivery: Rc::new(RefCell::new(Delivery::new(events))),
        });
    }

    /// Starts choices, oldest request first, while there is room.
    fn start(&mut self, batch: &mut Batch<TokenSink<'a>>) {
        while let Some(head) = self.requests.front_mut() {
            let n = head.request.n.max(1);
            let over = head.next_choice >= n || head.delivery.borrow().stopped;
            if over {
                self.requests.pop_front();
                continue;
            }
            let replay = head.request.replay.is_some();
            if batch.len() >= self.parallel || (!replay && !batch.has_room()) {
                return;
            }
            let stopping = self.stopping.load(Ordering::SeqCst);
            let closed = head.delivery.borrow().events.is_closed();
            if head.next_choice == 0 && stopping {
                let _ = head.delivery.borrow().events.send(Event::ShuttingDown);
                self.requests.pop_front();
                continue;
            }
            if head.next_choice == 0 && closed {
                // Its client left while it waited: it never starts.
                self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
                self.requests.pop_front();
                continue;
            }
            if stopping || closed {
                // Its choices in the batch leave at the next step; the rest never start.
                head.next_choice = n;
                continue;
            }
            let choice = head.next_choice;
            head.next_choice += 1;
            let request = head.request.clone();
            let sink = TokenSink {
                choice,
                delivery: head.delivery.clone(),
                stopping: self.stopping,
                stats: self.stats,
                vocab: self.vocab,
                top: request.top_probs,
                prompt_top: request.prompt_top,
                score_only: request.score_only,
            };
            let mut params = request.params.clone();
            params.sampling.seed = request.choice_seed(choice);
            let own = match &request.replay {
                Some(script) => match self.engine.replay(script.clone()) {
                    Ok(m) => Some(Box::new(m) as Box<dyn crate::pipeline::model::Model + Send>),
                    Err(e) => {
                        self.finished(vec![(sink, Err(e))]);
                        continue;
                    }
                },
                None => None,
            };
            self.stats.running.store(true, Ordering::SeqCst);
            let (model, _) = self.engine.batch_parts();
            if let Some(done) = batch.join(model, own, self.vocab, &request.prompt, &params, sink) {
                self.finished(vec![done]);
            }
        }
    }

    fn finished(&self, done: Vec<Done<TokenSink<'a>>>) {
        for (sink, result) in done {
            let counter = match &result {
                Ok(o) if o.finish == FinishReason::Cancelled => &self.stats.cancelled,
                Ok(_) => &self.stats.completed,
                Err(_) => &self.stats.failed,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let choice = sink.choice;
            sink.delivery
                .borrow_mut()
                .send(choice, Event::Done { choice, result });
        }
    }
}

/// Sends each step of a choice toward its handler; ends the generation when the handler or the server
/// goes away, or another choice of the request ended it.
struct TokenSink<'a> {
    choice: usize,
    delivery: Shared,
    stopping: &'a AtomicBool,
    stats: &'a Stats,
    /// The engine's vocabulary (shared: the engine is borrowed mutably while the sink runs).
    vocab: &'a Vocab,
    /// Alternatives to compute per step; None: no probabilities.
    top: Option<usize>,
    /// Alternatives per prompt token when the prompt is scored; None: not scored.
    prompt_top: Option<usize>,
    /// Nothing to generate: the choice ends once its prompt is read.
    score_only: bool,
}

impl TokenSink<'_> {
    fn gone(&self) -> bool {
        let d = self.delivery.borrow();
        d.stopped || d.events.is_closed() || self.stopping.load(Ordering::SeqCst)
    }
}

impl Sink for TokenSink<'_> {
    fn token(&mut self, ev: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        if self.gone() {
            return Ok(ControlFlow::Break(()));
        }
        let token = Box::new(ev.to_token(self.vocab.is_special(ev.id)));
        self.delivery.borrow_mut().send(
            self.choice,
            Event::Token {
                choice: self.choice,
                token,
            },
        );
        Ok(ControlFlow::Continue(()))
    }

    fn wants_probs(&self) -> bool {
        self.top.is_some()
    }

    fn step(&mut self, report: &StepReport) -> Result<(), Error> {
        let s = self.stats;
        s.spec_steps.fetch_add(1, Ordering::Relaxed);
        s.drafted
            .fetch_add(report.drafted.len() as u64, Ordering::Relaxed);
        s.accepted
            .fetch_add(report.accepted as u64, Ordering::Relaxed);
        self.delivery.borrow_mut().send(
            self.choice,
            Event::Step {
                choice: self.choice,
                report: report.clone(),
            },
        );
        Ok(())
    }

    fn top_probs(&self) -> usize {
        self.top.unwrap_or(0).max(self.prompt_top.unwrap_or(0))
    }

    fn wants_prompt_probs(&self) -> bool {
        self.prompt_top.is_some()
    }

    fn prompt(&mut self, probs: Vec<StepProbs>) -> Result<ControlFlow<()>, Error> {
        if self.prompt_top.is_some() {
            self.delivery.borrow_mut().send(
                self.choice,
                Event::Prompt {
                    choice: self.choice,
                    probs,
                },
            );
        }
        Ok(if self.score_only {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    }
}
