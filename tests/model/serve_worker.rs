//! The server's model worker on its own: each token reaches the handler as the whole engine step (what
//! the playground's trace stream and the OpenAI routes are built on). Replay model, no weights.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::json;
use stoplab::lab::trace;
use stoplab::pipeline::sink::Token;
use stoplab::pipeline::stop::FinishReason;
use stoplab::serve::Limits;
use stoplab::serve::fields::Served;
use stoplab::serve::openai::generation;
use stoplab::serve::request::Endpoint;
use stoplab::serve::worker::{self, Event};
use stoplab::{LoadOptions, LoadedModel};

fn engine() -> LoadedModel {
    LoadedModel::load(&LoadOptions {
        tokenizer_only: true,
        ..Default::default()
    })
    .expect("the default model is in the cache (`stoplab fetch`)")
}

/// Runs one request through a worker and collects its events.
fn run(body: serde_json::Value) -> (Vec<Token>, Vec<(usize, stoplab::pipeline::sink::Outcome)>) {
    let engine = engine();
    let vocab = Arc::new(engine.vocab.clone());
    let served = Served::new(
        vocab.clone(),
        engine.context_length(),
        vec!["m".into()],
        false,
        Limits::default(),
    );
    let request = generation(body.to_string().as_bytes(), Endpoint::Completions, &served).unwrap();
    let (queue, thread) =
        worker::spawn(engine, vocab, 1, Arc::new(AtomicBool::new(false))).unwrap();
    let (mut rx, place) = queue.submit(request).unwrap();
    let (mut steps, mut done) = (Vec::new(), Vec::new());
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            Event::Token { choice, token } => {
                assert_eq!(choice, 0, "one choice");
                steps.push(*token)
            }
            Event::Step { .. } => panic!("a request that does not speculate has no steps"),
            Event::Done { choice, result } => {
                done.push((choice, result.unwrap()));
                break;
            }
            Event::Prompt { .. } => panic!("the prompt is not scored here"),
            Event::ShuttingDown => panic!("not shutting down"),
        }
    }
    drop(place);
    drop(queue);
    thread.join().unwrap();
    (steps, done)
}

#[test]
fn each_event_carries_the_engine_step_held_bytes_and_the_cut() {
    let (steps, done) = run(json!({"prompt": "AI:", "replay": " Berlin.\nuser: more",
                                  "stop": "\nuser:", "max_tokens": 40}));
    let (choice, outcome) = &done[0];
    assert_eq!(*choice, 0);
    assert_eq!(outcome.text, " Berlin.");
    // The released texts add up to the output; indices count up; only the last step finishes.
    assert_eq!(
        steps.iter().map(|s| s.text.as_str()).collect::<String>(),
        " Berlin."
    );
    assert!(steps.iter().enumerate().all(|(i, s)| s.index == i));
    assert_eq!(steps.iter().filter(|s| s.finish.is_some()).count(), 1);
    let last = steps.last().unwrap();
    assert_eq!(
        last.finish,
        Some(FinishReason::StopString {
            index: 0,
            stop: "\nuser:".into(),
            offset: 8
        })
    );
    assert_eq!(
        last.finish.as_ref().unwrap().stop_reason(),
        json!("\nuser:")
    );
    let cut = last.cut.as_ref().expect("a stop string's cut");
    assert!(cut.bytes.starts_with(b"\nuser:"), "{:?}", cut.bytes);
    // The newline was held back for the stop before the match: the step says which stop.
    let held = steps
        .iter()
        .find(|s| s.held == b"\n")
        .expect("a step holding the newline");
    let hf = held.held_for.as_ref().expect("held for a stop");
    assert_eq!((hf.stop.as_str(), hf.bytes, hf.of), ("\nuser:", 1, 6));
    // The trace row of a step is the one `stoplab trace` records.
    assert_eq!(trace::row_json(last)["finish"]["stop_reason"], "\nuser:");
    // A replay chose every token: no probabilities, even when asked.
    assert!(steps.iter().all(|s| s.probs.is_none()));
}

#[test]
fn the_end_token_step_is_marked_special_and_end() {
    let (steps, done) = run(json!({"prompt": "AI:", "replay": " Hi.", "max_tokens": 10}));
    let last = steps.last().unwrap();
    assert!(last.end_token && last.special, "{last:?}");
    assert!(last.text.is_empty());
    assert!(
        steps[..steps.len() - 1]
            .iter()
            .all(|s| !s.special && !s.end_token)
    );
    assert_eq!(done[0].1.tokens.len(), steps.len());
}
