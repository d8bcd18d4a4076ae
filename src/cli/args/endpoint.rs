//! `--endpoint URL` (with `--api-key`): the server that `bench overhead` and `experiment` run on instead of
//! the local model.

use std::time::Duration;

use clap::Args;
use stoplab::client::{Client, ClientOptions};

use crate::cli::output::Failure;

/// How long to wait for a server and how often to try again: the same flags on every command that talks
/// to one (`probe`, `experiment --endpoint`, `bench overhead --endpoint`).
#[derive(Args, Debug, Clone)]
pub struct Patience {
    /// Seconds to wait for one answer, connection included (a server that never answers is given up on).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub timeout: u64,
    /// Tries again after a 429, a 5xx or a lost connection, with backoff from 0.25 s, doubling.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
}

/// A client for `--endpoint URL` with the command's patience; `model` is the requests' `model` field.
pub fn client(
    url: &str,
    api_key: Option<String>,
    model: Option<String>,
    patience: &Patience,
) -> Result<Client, Failure> {
    Client::new(ClientOptions {
        url: url.into(),
        api_key,
        model,
        timeout: Duration::from_secs(patience.timeout.max(1)),
        retries: patience.retries,
    })
    .map_err(|e| Failure::usage(format!("--endpoint: {e}")))
}
