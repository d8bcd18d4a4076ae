//! The tools that drive the pipeline and show what it did: [`trace`] (one row per token), [`inspect`] (how
//! stops fall across tokens) and [`tokenize`] (the same, worded for `stoplab tokenize`), [`experiment`] (the
//! seed's techniques as scenarios) and [`bench`](mod@bench) (what stop matching costs, and the model's
//! speed). Each computes and renders (text, JSON); the command line only reads flags and prints.

pub mod bench;
pub mod experiment;
pub mod inspect;
pub mod tokenize;
pub mod trace;
