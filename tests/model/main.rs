//! The model tier: the cached models (`stoplab fetch`, which `tests/run.sh` runs first). The tokenizers and
//! greedy decoding against ids measured with llama.cpp (`../shared/reference`), the own forward pass against
//! candle's, broken GGUF headers, the server, the scenarios, fine-tuning and the command line as a user runs it.

#[path = "../common/mod.rs"]
mod common;

mod batch_model;
mod chat_tools;
mod cli;
mod experiment;
mod families_model;
mod finetune;
mod ledger_model;
mod llama_logits;
mod model_headers;
mod prompt_logprobs;
mod real_model;
mod replay_families;
mod serve_batch;
mod serve_model;
mod serve_tools;
mod serve_worker;
mod speculate_model;
mod tokenize_families;
mod trace;
