//! What the model worker tells a request's handler ([`Event`]), and how: a request's choices run side by
//! side, but its handler hears them one after another ([`Delivery`]).

use std::collections::BTreeMap;

use tokio::sync::mpsc::UnboundedSender;

use crate::Error;
use crate::pipeline::sink::{Outcome, StepProbs, StepReport, Token};
use crate::pipeline::stop::FinishReason;

/// What the worker tells a request's handler.
#[derive(Debug)]
pub enum Event {
    /// A choice's prompt was read: the probabilities of its tokens after the first, when the request scores
    /// the prompt (else none). It comes before the choice's first token.
    Prompt {
        choice: usize,
        probs: Vec<StepProbs>,
    },
    /// One generated token of a choice, as the engine stepped it.
    Token { choice: usize, token: Box<Token> },
    /// A step of several tokens ended (speculative decoding, or a replay's staged steps), after its
    /// tokens' events: what was drafted, accepted and discarded.
    Step { choice: usize, report: StepReport },
    /// A choice's generation ended (an outcome, or an error of the model or the request). After an error no
    /// further choice runs.
    Done {
        choice: usize,
        result: Result<Outcome, Error>,
    },
    /// The server is shutting down: the request was not run.
    ShuttingDown,
}

/// A request's choices on their way to its handler. Choices run side by side, but the handler hears
/// them in order, as if they ran one after another: the steps of a choice after the one being delivered
/// wait here until its turn. Once a choice ends in an error or a cancellation, no further choice is
/// delivered (or started).
pub struct Delivery {
    /// Where the handler hears them; closed when its client has gone.
    pub events: UnboundedSender<Event>,
    /// The choice whose events go straight to the handler.
    current: usize,
    /// Events of later choices, in order, per choice.
    later: BTreeMap<usize, Vec<Event>>,
    /// A choice ended in an error or was cancelled: the request is over.
    pub stopped: bool,
}

impl Delivery {
    pub fn new(events: UnboundedSender<Event>) -> Self {
        Self {
            events,
            current: 0,
            later: BTreeMap::new(),
            stopped: false,
        }
    }

    /// Passes on an event of choice `choice`, or keeps it until that choice's turn.
    pub fn send(&mut self, choice: usize, event: Event) {
        if self.stopped {
            return;
        }
        if choice != self.current {
            self.later.entry(choice).or_default().push(event);
            return;
        }
        let mut event = Some(event);
        while let Some(ev) = event.take() {
            let ends = match &ev {
                Event::Done { result, .. } => {
                    Some(matches!(result, Ok(o) if o.finish != FinishReason::Cancelled))
                }
                _ => None,
            };
            let _ = self.events.send(ev);
            match ends {
                None => {}
                Some(false) => {
                    self.stopped = true;
                    self.later.clear();
                    return;
                }
                Some(true) => {
                    // The next choice's turn: what it said so far, and on, up to its end if it ended.
                    self.current += 1;
                    let Some(evs) = self.later.remove(&self.current) else {
                        return;
                    };
                    let mut evs = evs.into_iter();
                    for ev in evs.by_ref() {
                        if matches!(ev, Event::Done { .. }) {
                            event = Some(ev);
                            break;
                        }
                        let _ = self.events.send(ev);
                    }
                }
            }
        }
    }
}
