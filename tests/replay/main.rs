//! The replay tier: no weights and nothing downloaded. The stop matcher, the stop engine and the peers'
//! strategies against a naive reference on random texts, and the generation loop on scripted token streams
//! over a generated test vocabulary. `cargo test --release --test replay` runs it on a clean machine.

#[path = "../common/mod.rs"]
mod common;

mod bench_support;
mod loop_replay;
mod stop_props;
mod strategies;
