//! `--endpoint URL` (with `--api-key`): the server that `bench overhead` and `experiment` run on instead of
//! the local model.

use std::time::Duration;

use stoplab::client::{Client, ClientOptions};

use crate::cli::output::Failure;

/// A client for `--endpoint URL`, patient with slow generations (300 s, 3 retries); `model` is the requests'
/// `model` field.
pub fn client(
    url: &str,
    api_key: Option<String>,
    model: Option<String>,
) -> Result<Client, Failure> {
    Client::new(ClientOptions {
        url: url.into(),
        api_key,
        model,
        timeout: Duration::from_secs(300),
        retries: 3,
    })
    .map_err(|e| Failure::usage(format!("--endpoint: {e}")))
}
