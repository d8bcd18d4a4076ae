//! The replay tier: no weights and nothing downloaded. The stop matcher, the stop engine and the peers'
//! strategies against a naive reference on random texts, the generation loop on scripted token streams
//! over a generated test vocabulary, and the OpenAI-compatible server (HTTP, replayed answers) over a
//! generated chat vocabulary. `cargo test --release --test replay` runs it on a clean machine.

#[path = "../common/mod.rs"]
mod common;

mod bench_support;
mod client;
mod ledger;
mod loop_replay;
mod reasoning;
mod serve;
mod serve_api;
mod steps;
mod stop_props;
mod strategies;
