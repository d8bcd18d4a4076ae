//! The flags more than one subcommand takes, each declared once, and how their raw values become the
//! settings the library checks.
//!
//! * [`values`]: text values (a leading hyphen, escapes);
//! * [`model`]: `--model`, `--tokenizer`, `--adapter`;
//! * [`stopping`], [`sampling`]: the generation flags by help heading;
//! * [`generate`]: [`GenArgs`](generate::GenArgs), everything `complete`, `chat` and `trace` take, checked
//!   into a prompt format and generation settings;
//! * [`chat`]: the conversation of `chat` and `trace --chat`;
//! * [`endpoint`]: the server of `--endpoint`;
//! * [`speculate`]: `--speculate ngram` and its sizes (generating commands, `bench decode`);
//! * [`reasoning`]: the reasoning's markers and the stops' scope (generating commands).

pub mod chat;
pub mod endpoint;
pub mod generate;
pub mod model;
pub mod reasoning;
pub mod sampling;
pub mod speculate;
pub mod stopping;
pub mod values;
