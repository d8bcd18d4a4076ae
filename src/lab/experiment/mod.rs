//! Experiments: the seed's techniques as scenario files, run several times, measured.
//!
//! A scenario (TOML) gives a prompt format and messages, sampling settings, stop settings, how many runs
//! (seeds), and what "done" means: the texts whose appearance completes the answer. Every token generated
//! after that point is *wasted*, the cost the seed complains about; the report also counts run-on turns
//! that reached the output and repeated n-grams. The shipped scenarios are compiled into the library
//! ([`shipped`]), so the binary works anywhere.
//!
//! ```toml
//! name = "transcript-stop"
//! title = "Transcript, stop \"\\nuser:\""
//!
//! [prompt]
//! format = "transcript"            # raw | transcript | separator | chat
//! messages = [
//!   { role = "user", content = "What is the capital of France?" },
//!   { role = "assistant", content = "Paris." },
//!   { role = "user", content = "What is the capital of Germany?" },
//! ]
//!
//! [sampling]                       # as `SamplingParams`; logit_bias = [[2, -inf]]
//! temperature = 0.6
//!
//! [stop]
//! strings = ["\nuser:"]
//! max_tokens = 96
//! # repetition = { ngram = 8, count = 2 }
//!
//! [runs]
//! runs = 3                         # seeds seed, seed+1, ...
//!
//! [done]
//! contains = ["Berlin"]            # the answer is complete once the model has written any of these
//! ```
//!
//! The parts: [`scenario`] (a file becomes a checked [`Scenario`]: the settings through the one validation,
//! every error at its file, line and key), [`run`] (runs and measures: wasted tokens, run-on turns,
//! repeats), [`remote`] (the same runs on an OpenAI-compatible server), [`plan`] (which scenarios run on
//! which model, and running them all), [`report`] (the terminal table, JSON, Markdown and the SVG chart).

pub mod plan;
pub mod remote;
pub mod report;
pub mod rules;
pub mod run;
pub mod scenario;

pub use report::{markdown, svg_chart, table, to_json, write_report};
pub use run::{
    RunOptions, RunResult, ScenarioReport, count_markers, repeated_ngrams, run_scenario,
    run_scenarios, summarise,
};
pub use scenario::{Scenario, ScenarioError};

/// The scenarios that ship with stoplab: (file name, TOML text).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "scenarios/1-transcript-nostop.toml",
        include_str!("../../../scenarios/1-transcript-nostop.toml"),
    ),
    (
        "scenarios/2-transcript-stop.toml",
        include_str!("../../../scenarios/2-transcript-stop.toml"),
    ),
    (
        "scenarios/3a-separator-nostop.toml",
        include_str!("../../../scenarios/3a-separator-nostop.toml"),
    ),
    (
        "scenarios/3b-separator-stop.toml",
        include_str!("../../../scenarios/3b-separator-stop.toml"),
    ),
    (
        "scenarios/4-chat-end-token.toml",
        include_str!("../../../scenarios/4-chat-end-token.toml"),
    ),
    (
        "scenarios/5a-broken-end-token.toml",
        include_str!("../../../scenarios/5a-broken-end-token.toml"),
    ),
    (
        "scenarios/5b-broken-end-token-repetition-stop.toml",
        include_str!("../../../scenarios/5b-broken-end-token-repetition-stop.toml"),
    ),
    (
        "scenarios/6-remedy-custom-stop.toml",
        include_str!("../../../scenarios/6-remedy-custom-stop.toml"),
    ),
    (
        "scenarios/7a-function-call-nostop.toml",
        include_str!("../../../scenarios/7a-function-call-nostop.toml"),
    ),
    (
        "scenarios/7b-function-call-stop.toml",
        include_str!("../../../scenarios/7b-function-call-stop.toml"),
    ),
    // Other families: each scenario names its model.
    (
        "scenarios/families/gemma-1-transcript-nostop.toml",
        include_str!("../../../scenarios/families/gemma-1-transcript-nostop.toml"),
    ),
    (
        "scenarios/families/gemma-2-transcript-stop.toml",
        include_str!("../../../scenarios/families/gemma-2-transcript-stop.toml"),
    ),
    (
        "scenarios/families/qwen-1-tool-call.toml",
        include_str!("../../../scenarios/families/qwen-1-tool-call.toml"),
    ),
    (
        "scenarios/families/qwen-2-tool-call-prefilled.toml",
        include_str!("../../../scenarios/families/qwen-2-tool-call-prefilled.toml"),
    ),
    (
        "scenarios/families/steps-1-stop-outside-window.toml",
        include_str!("../../../scenarios/families/steps-1-stop-outside-window.toml"),
    ),
    (
        "scenarios/families/steps-2-length-before-stop.toml",
        include_str!("../../../scenarios/families/steps-2-length-before-stop.toml"),
    ),
    (
        "scenarios/families/steps-3-text-cut-ids-kept.toml",
        include_str!("../../../scenarios/families/steps-3-text-cut-ids-kept.toml"),
    ),
    (
        "scenarios/families/reasoning-1-blank-line-stop.toml",
        include_str!("../../../scenarios/families/reasoning-1-blank-line-stop.toml"),
    ),
    (
        "scenarios/families/reasoning-2-blank-line-stop-unscoped.toml",
        include_str!("../../../scenarios/families/reasoning-2-blank-line-stop-unscoped.toml"),
    ),
    (
        "scenarios/families/reasoning-3-end-token-in-thinking.toml",
        include_str!("../../../scenarios/families/reasoning-3-end-token-in-thinking.toml"),
    ),
    (
        "scenarios/families/reasoning-4-opened-think-allow.toml",
        include_str!("../../../scenarios/families/reasoning-4-opened-think-allow.toml"),
    ),
    (
        "scenarios/families/reasoning-5-opened-think-mask.toml",
        include_str!("../../../scenarios/families/reasoning-5-opened-think-mask.toml"),
    ),
    (
        "scenarios/families/reasoning-6-opened-think-ban-after-close.toml",
        include_str!("../../../scenarios/families/reasoning-6-opened-think-ban-after-close.toml"),
    ),
    (
        "scenarios/families/harmony-call-ends.toml",
        include_str!("../../../scenarios/families/harmony-call-ends.toml"),
    ),
    (
        "scenarios/families/harmony-only-return.toml",
        include_str!("../../../scenarios/families/harmony-only-return.toml"),
    ),
    (
        "scenarios/families/llama3-eot.toml",
        include_str!("../../../scenarios/families/llama3-eot.toml"),
    ),
    (
        "scenarios/families/llama3-end-of-text-only.toml",
        include_str!("../../../scenarios/families/llama3-end-of-text-only.toml"),
    ),
];

/// All shipped scenarios, parsed.
pub fn shipped() -> Result<Vec<Scenario>, ScenarioError> {
    SHIPPED.iter().map(|(f, s)| Scenario::parse(f, s)).collect()
}
