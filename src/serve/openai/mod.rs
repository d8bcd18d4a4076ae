//! OpenAI's API: `POST /v1/completions`, `POST /v1/chat/completions` and `GET /v1/models`.
//!
//! One file per endpoint with its own fields and response parts ([`completions`], [`chat`]); below them
//! what both read alike ([`shared`]), the fields neither implements ([`unsupported`]), and the response:
//! whole or streamed ([`reply`], [`stream`]), with log probabilities ([`logprobs`]) and, while tools are
//! offered, a streamed reply held where it may be a call ([`tool_gate`]).

pub mod chat;
pub mod completions;
pub mod logprobs;
pub mod reasoning;
pub mod reply;
pub mod shared;
pub mod stream;
pub mod tool_gate;
pub mod unsupported;

use crate::pipeline::sequence::starts_inside;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::pipeline::stop::FinishReason;
use crate::serve::delivery::Event;
use crate::serve::error::ApiError;
use crate::serve::fields::{Fields, Served};
use crate::serve::http::{blocking, json_response, read_body};
use crate::serve::openai::reply::{Answered, Reply, now};
use crate::serve::request::{Endpoint, GenRequest};
use crate::serve::state::AppState;
use crate::serve::worker::Place;

/// OpenAI's routes, to merge into the server's router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/v1/completions",
            post(|State(state), req| generate(state, req, Endpoint::Completions)),
        )
        .route(
            "/v1/chat/completions",
            post(|State(state), req| generate(state, req, Endpoint::Chat)),
        )
        .route("/v1/models", get(models))
}

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

/// A generation route: the body read and checked off the runtime's threads, queued, and answered whole
/// or streamed.
async fn generate(
    state: Arc<AppState>,
    req: Request,
    endpoint: Endpoint,
) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let st = state.clone();
    let request = blocking(move || generation(&b, endpoint, &st.served)).await?;
    let n = state.next_id.fetch_add(1, Ordering::Relaxed);
    let reply = Reply {
        endpoint,
        id: match endpoint {
            Endpoint::Completions => format!("cmpl-{:x}-{n}", state.started),
            Endpoint::Chat => format!("chatcmpl-{:x}-{n}", state.started),
        },
        created: now(),
        model: state.served.model_ids[0].clone(),
        prompt_tokens: request.prompt.len(),
        echo: request.echo.clone(),
        top_probs: request.top_probs,
        tools: request.tools.clone(),
        parallel_tool_calls: request.parallel_tool_calls,
        return_token_ids: request.return_token_ids,
        prompt: request.prompt.clone(),
        prompt_logprobs: request.prompt_logprobs,
        vocab: state.served.vocab.clone(),
        reasoning: match &request.params.reasoning {
            Some(r) if endpoint == Endpoint::Chat => {
                let inside = starts_inside(r, &state.served.vocab, &request.prompt)
                    .map_err(ApiError::from)?;
                Some(reasoning::Split::new(r, inside))
            }
            _ => None,
        },
    };
    let (streamed, include_usage, choices) = (request.stream, request.include_usage, request.n);
    let (rx, place) = state.queue.submit(request)?;
    if streamed {
        stream::respond(reply, rx, place, include_usage, choices).await
    } else {
        whole(reply, rx, place, choices).await
    }
}

/// The response once every choice has finished.
async fn whole(
    reply: Reply,
    mut rx: UnboundedReceiver<Event>,
    _place: Place,
    choices: usize,
) -> Result<Response, ApiError> {
    let top = reply.top_probs.unwrap_or(0);
    let mut done: Vec<Answered> = Vec::with_capacity(choices);
    let mut lp = reply.choice_logprobs();
    let mut prompt = Vec::new();
    loop {
        match rx.recv().await {
            Some(Event::Prompt { probs, .. }) => prompt = probs,
            // OpenAI's answers say nothing of steps (`/health` counts them).
            Some(Event::Step { .. }) => {}
            Some(Event::Token { token, .. }) => {
                if reply.top_probs.is_some() {
                    lp.push(&token, top);
                }
            }
            Some(Event::Done { result: Ok(o), .. }) if o.finish == FinishReason::Cancelled => {
                return Err(ApiError::shutting_down());
            }
            Some(Event::Done { result: Ok(o), .. }) => {
                done.push(Answered {
                    outcome: o,
                    logprobs: std::mem::replace(&mut lp, reply.choice_logprobs()),
                    prompt: std::mem::take(&mut prompt),
                });
                if done.len() == choices {
                    return Ok(json_response(StatusCode::OK, &reply.response(done)));
                }
            }
            Some(Event::Done { result: Err(e), .. }) => return Err(e.into()),
            Some(Event::ShuttingDown) => return Err(ApiError::shutting_down()),
            None => return Err(ApiError::internal("the model worker stopped")),
        }
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let s = &state.served;
    json_response(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{
                "id": s.model_ids[0],
                "object": "model",
                "created": state.started,
                "owned_by": "stoplab",
                "max_model_len": s.context,
            }],
        }),
    )
}
