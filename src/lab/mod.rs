//! The tools that drive the pipeline and show what it did: [`trace`] (one row per token), [`inspect`] (how
//! stops fall across tokens), [`experiment`] (the seed's techniques as scenarios) and [`bench`](mod@bench) (what stop
//! matching costs).

pub mod bench;
pub mod experiment;
pub mod inspect;
pub mod trace;
