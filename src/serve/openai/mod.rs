//! OpenAI's generation API: `POST /v1/completions` and `POST /v1/chat/completions`.
//!
//! One file per endpoint, each with its own fields ([`completions`], [`chat`]); below them what both read
//! alike ([`shared`]) and the fields neither implements ([`unsupported`]).

pub mod chat;
pub mod completions;
pub mod shared;
pub mod unsupported;

use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::request::{Endpoint, GenRequest};

/// Parses and checks a `/v1/completions` or `/v1/chat/completions` body.
pub fn generation(
    body: &[u8],
    endpoint: Endpoint,
    served: &Served,
) -> Result<GenRequest, ApiError> {
    let f = Fields::parse(body)?;
    f.check_model(served)?;
    match endpoint {
        Endpoint::Completions => completions::request(&f, served),
        Endpoint::Chat => chat::request(&f, served),
    }
}
