//! The stages a generation goes through, in order: [`format`](mod@format) → [`tokenizer`] → [`model`] → [`sampling`] →
//! [`stop`], tied together by [`generate`].

pub mod batch;
pub mod field;
pub mod format;
pub mod generate;
pub mod model;
pub mod sampling;
pub mod sequence;
pub mod settings;
pub mod sink;
pub mod speculate;
pub mod stop;
pub mod tokenizer;
