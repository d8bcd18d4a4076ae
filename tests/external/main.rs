//! The external tier: real peers outside the crate. The playground in a headless Chromium (through
//! chromedriver), the official `openai` Python client against the server, and `stoplab probe` against
//! llama.cpp's own server (the `xllamacpp` wheel). `tests/run.sh` installs what these need.

#[path = "../common/mod.rs"]
mod common;

mod lm_eval;
mod playground;
mod probe;
mod serve_openai;
