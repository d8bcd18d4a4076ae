//! A playground request, read and checked. The body names the prompt format, the messages and every stop
//! and sampling setting as a scenario file writes them (`logit_bias` as `[id, bias]` pairs, greedy and 64
//! tokens unless asked); `stop` and `replay` are read as the API reads them, and the generation is checked
//! by the same [`Fitted`] as the API's, so a prompt beyond the context is the same 400
//! (`context_length_exceeded`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::pipeline::format::{Message, PromptFormat};
use crate::pipeline::sampling::SamplingParams;
use crate::pipeline::settings::UserSettings;
use crate::pipeline::sink::StepProbs;
use crate::serve::error::ApiError;
use crate::serve::fields::{self, BiasForm, Fields, Served};
use crate::serve::http::{blocking, json_response, read_body};
use crate::serve::messages;
use crate::serve::names::Names;
use crate::serve::request::{Endpoint, Fitted, GenRequest};
use crate::serve::state::AppState;

/// The fields a playground request may carry; any other is refused by name (a typo must not be ignored).
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "format",
    "user_prefix",
    "ai_prefix",
    "separator",
    "natural_stop",
    "stop",
    "stop_token_ids",
    "include_stop",
    "ignore_eos",
    "min_tokens",
    "max_tokens",
    "repetition_stop",
    "end_tokens",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "seed",
    "replay",
    "tokens_per_step",
    "speculate",
    "reasoning_markers",
    "stop_scope",
    "end_in_reasoning",
    "max_reasoning_tokens",
];

/// The default of `max_tokens`: enough to see a model run on, few enough to watch.
const DEFAULT_MAX_TOKENS: usize = 64;

/// A playground request, read: the messages and the settings as the user gave them (unchecked); `replay`
/// stays in the fields until the check.
struct Asked {
    f: Fields,
    messages: Vec<Message>,
    user: UserSettings,
    /// `stop` was one string rather than an array.
    single_stop: bool,
}

impl Asked {
    fn names(&self) -> Names {
        Names::playground(&self.user, self.single_stop)
    }
}

/// Reads a body: with `prompt_only`, only what renders the prompt (the format and the messages).
fn read(body: &[u8], served: &Served, prompt_only: bool) -> Result<Asked, ApiError> {
    let f = Fields::parse(body)?;
    if let Some(unknown) = f.names().find(|k| !FIELDS.contains(k)) {
        return Err(ApiError::invalid(
            unknown,
            format!(
                "is not a field of this route; it takes {}",
                FIELDS.join(", ")
            ),
        ));
    }
    f.check_model(served)?;
    let messages = messages::messages(&f)?;
    let format = f
        .get::<String>("format")?
        .unwrap_or_else(|| PromptFormat::Raw.name().into());
    let mut user = UserSettings {
        format,
        user_prefix: f.get("user_prefix")?,
        ai_prefix: f.get("ai_prefix")?,
        separator: f.get("separator")?,
        ..UserSettings::default()
    };
    if prompt_only {
        return Ok(Asked {
            f,
            messages,
            user,
            single_stop: false,
        });
    }
    let (stops, single_stop) = fields::stops(&f, &served.limits)?;
    let d = SamplingParams::default();
    user.natural_stop = f.get("natural_stop")?.unwrap_or(false);
    user.stops = stops;
    user.stop_token_ids = f.get("stop_token_ids")?.unwrap_or_default();
    user.include_stop = f.get("include_stop")?.unwrap_or(false);
    user.ignore_eos = f.get("ignore_eos")?.unwrap_or(false);
    user.min_tokens = f.get("min_tokens")?.unwrap_or(0);
    user.max_tokens = f.get("max_tokens")?.unwrap_or(DEFAULT_MAX_TOKENS);
    user.repetition = f.get("repetition_stop")?;
    user.end_tokens = f.get("end_tokens")?.unwrap_or_default();
    user.sampling = SamplingParams {
        // Greedy unless asked: the command line's default, so a run is the same each time.
        temperature: f.get("temperature")?.unwrap_or(0.0),
        top_k: f.get("top_k")?.unwrap_or(d.top_k),
        top_p: f.get("top_p")?.unwrap_or(d.top_p),
        min_p: f.get("min_p")?.unwrap_or(d.min_p),
        repetition_penalty: f.get("repetition_penalty")?.unwrap_or(d.repetition_penalty),
        frequency_penalty: f.get("frequency_penalty")?.unwrap_or(d.frequency_penalty),
        presence_penalty: f.get("presence_penalty")?.unwrap_or(d.presence_penalty),
        logit_bias: fields::logit_bias(&f, BiasForm::Pairs)?,
        seed: f.get("seed")?.unwrap_or(0),
    };
    Ok(Asked {
        f,
        messages,
        user,
        single_stop,
    })
}

/// The prompt the request's format renders from its messages, as text and as tokens. The settings go
/// through the one validation first, for the format (a bad setting is named before the prompt is
/// rendered); [`Fitted::validate`] checks them again with the prompt.
fn prompt(asked: &Asked, served: &Served) -> Result<(String, Vec<u32>), ApiError> {
    let vocab = &*served.vocab;
    let names = asked.names();
    let settings = asked
        .user
        .validate(Some(vocab.len()))
        .map_err(|e| ApiError::setting(&e, &names))?;
    let text = settings
        .format
        .render(&asked.messages, vocab.chat_template())
        .map_err(|e| match e {
            crate::Error::Settings(e) => ApiError::setting(&e, &names),
            crate::Error::Invalid { message, .. } => ApiError::invalid("messages", message),
            other => other.into(),
        })?;
    let prompt = vocab.encode_prompt(&text)?;
    Ok((text, prompt))
}

/// `POST /v1/stoplab/render`: `{format, messages, user_prefix?, ai_prefix?, separator?}` → `{text, tokens}`.
pub async fn render(
    State(state): State<Arc<AppState>>,
    req: Request,
) -> Result<Response, ApiError> {
    let b = read_body(&state.served.limits, req).await?;
    let st = state.clone();
    let (text, tokens) = blocking(move || {
        let asked = read(&b, &st.served, true)?;
        let (text, prompt) = prompt(&asked, &st.served)?;
        Ok((text, prompt.len()))
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"text": text, "tokens": tokens}),
    ))
}

/// Reads and checks a trace request: the generation to queue (every step's probabilities asked for), and
/// the stream's first event.
pub fn traced(body: &[u8], served: &Served) -> Result<(GenRequest, Value), ApiError> {
    let asked = read(body, served, false)?;
    let (text, prompt) = prompt(&asked, served)?;
    let checked =
        Fitted::new(prompt, "messages", served)?.validate(&asked.user, &asked.names(), &asked.f)?;
    let start = json!({
        "type": "start",
        "prompt": text,
        "prompt_tokens": checked.prompt.len(),
        "model": served.model_ids[0],
        "stops": checked.params.stops.stops(),
        "replay": checked.replay.is_some(),
        "reasoning": checked.params.reasoning.as_ref().map(|r| json!({
            "open": r.open,
            "close": r.close,
            "stop_scope": r.stop_scope.name(),
            "end_in_reasoning": r.end_in_reasoning.name(),
        })),
    });
    let request = GenRequest {
        endpoint: Endpoint::Completions,
        prompt: checked.prompt,
        replay: checked.replay,
        params: checked.params,
        stream: true,
        include_usage: false,
        n: 1,
        top_probs: Some(StepProbs::TOP),
        echo: None,
        tools: Vec::new(),
        parallel_tool_calls: true,
        return_token_ids: false,
        prompt_top: None,
        prompt_logprobs: None,
        score_only: false,
    };
    Ok((request, start))
}
