//! A request body's fields, and what the server knows to check them against: the ground floor of every
//! route that reads a body.
//!
//! [`Fields`] reads a field at a time, with the field's JSON path in every error; the readers below are the
//! fields more than one route takes, each read one way: `stop` within the server's limits, `logit_bias`,
//! `replay`, and counts.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::pipeline::format::ChatTemplate;
use crate::pipeline::settings::{EndInReasoning, Reasoning, Scope};
use crate::pipeline::speculate::{Drafter, Speculation};
use crate::pipeline::tokenizer::Vocab;
use crate::serve::config::Limits;
use crate::serve::error::ApiError;

/// What the server knows about its model, for checking requests before they queue.
#[derive(Debug, Clone)]
pub struct Served {
    pub vocab: Arc<Vocab>,
    /// The model's context length in tokens (prompt plus generated).
    pub context: usize,
    /// The names a request's `model` may use; the first is the one `/v1/models` lists.
    pub model_ids: Vec<String>,
    /// False when started without weights: every generation request must carry `replay`.
    pub weights: bool,
    pub limits: Limits,
    /// The model's chat template, compiled once; `Err` says why there is none (no template, or one that
    /// does not compile), for the chat route's 400.
    pub template: Result<Arc<ChatTemplate>, String>,
    /// Speculative decoding for a request that does not give `speculate` (`serve --speculate`).
    pub speculation: Option<Speculation>,
}

impl Served {
    /// What a server knows of its model; compiles the chat template.
    pub fn new(
        vocab: Arc<Vocab>,
        context: usize,
        model_ids: Vec<String>,
        weights: bool,
        limits: Limits,
    ) -> Self {
        let template = match vocab.chat_template() {
            None => Err(
                "the model has no tokenizer.chat_template; use /v1/completions with a prompt"
                    .into(),
            ),
            Some(t) => ChatTemplate::new(t)
                .map(Arc::new)
                .map_err(|e| format!("{e} (use /v1/completions with a prompt)")),
        };
        Self {
            vocab,
            context,
            model_ids,
            weights,
            limits,
            template,
            speculation: None,
        }
    }
}

/// A request body's fields, read one at a time with the field's name in every error.
#[derive(Debug)]
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_body(format!("malformed JSON in the request body: {e}")))?;
        match value {
            Value::Object(map) => Ok(Self(map)),
            other => Err(ApiError::bad_body(format!(
                "the request body must be a JSON object, not {}",
                kind(&other)
            ))),
        }
    }

    /// The names of the fields given.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A field as given; absent and `null` are `None`.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A field of type `T`; absent and `null` are `None`; any other type is an error naming the field.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.raw(name).map(|v| typed(v, name)).transpose()
    }

    /// Checks `model` against the served names: an unknown model is 404, as OpenAI answers.
    pub fn check_model(&self, served: &Served) -> Result<(), ApiError> {
        match self.get::<String>("model")? {
            Some(m) if !served.model_ids.contains(&m) => Err(ApiError::not_found(
                format!(
                    "model: `{m}` does not exist; this server serves `{}`",
                    served.model_ids[0]
                ),
                "model_not_found",
            )),
            _ => Ok(()),
        }
    }
}

/// `v` as a `T`; another type is an error naming the field `name`.
pub fn typed<T: DeserializeOwned>(v: &Value, name: &str) -> Result<T, ApiError> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(name, e))
}

/// What a JSON value is, for an error message ("a string").
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `stop`: a string or an array of strings, within the server's limits (their contents are checked with
/// the other settings). Also says whether it was a single string, which is how its errors are named.
pub fn stops(f: &Fields, limits: &Limits) -> Result<(Vec<String>, bool), ApiError> {
    let (list, single): (Vec<String>, bool) = match f.raw("stop") {
        None => (Vec::new(), false),
        Some(Value::String(s)) => (vec![s.clone()], true),
        Some(v @ Value::Array(_)) => (typed(v, "stop")?, false),
        Some(other) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "expected a string or an array of strings, got {}",
                    kind(other)
                ),
            ));
        }
    };
    if list.len() > limits.max_stops {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "{} stop strings given; at most {} are allowed (stoplab serve --max-stops)",
                list.len(),
                limits.max_stops
            ),
        ));
    }
    for (i, s) in list.iter().enumerate() {
        if s.len() > limits.max_stop_bytes {
            let at = if single {
                "stop".into()
            } else {
                format!("stop[{i}]")
            };
            return Err(ApiError::invalid(
                &at,
                format!(
                    "{} bytes; at most {} are allowed (stoplab serve --max-stop-bytes)",
                    s.len(),
                    limits.max_stop_bytes
                ),
            ));
        }
    }
    Ok((list, single))
}

/// The two ways a route may write `logit_bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasForm {
    /// OpenAI's `{"token id": bias}`, bias from -100 to 100; -100 bans the token. An error names the entry
    /// `logit_bias.ID`.
    Map,
    /// A scenario file's `[[id, bias], ...]` (the playground's), bias a number or "-inf" (a ban). An error
    /// names the pair `logit_bias[i]`.
    Pairs,
}

/// `logit_bias` as `(id, bias)` in the order given, a ban as `-inf` (the ids are checked against the
/// vocabulary with the other settings).
pub fn logit_bias(f: &Fields, form: BiasForm) -> Result<Vec<(u32, f32)>, ApiError> {
    match form {
        BiasForm::Map => {
            let Some(map) = f.get::<Map<String, Value>>("logit_bias")? else {
                return Ok(Vec::new());
            };
            // Every bad entry is named, not only the first.
            let (ok, bad): (Vec<_>, Vec<_>) = map
                .iter()
                .map(|(key, value)| {
                    let at = format!("logit_bias.{key}");
                    let id: u32 = key.trim().parse().map_err(|_| {
                        ApiError::invalid(&at, format!("key {key:?} is not a token id"))
                    })?;
                    let bias: f64 = typed(value, &at)?;
                    if !(-100.0..=100.0).contains(&bias) {
                        return Err(ApiError::invalid(
                            &at,
                            format!("bias {bias} for token {id} is outside -100..100"),
                        ));
                    }
                    let bias = if bias <= -100.0 {
                        f32::NEG_INFINITY
                    } else {
                        bias as f32
                    };
                    Ok((id, bias))
                })
                .partition(Result::is_ok);
            let mut bad: Vec<ApiError> = bad.into_iter().filter_map(Result::err).collect();
            match bad.len() {
                0 => Ok(ok.into_iter().filter_map(Result::ok).collect()),
                1 => Err(bad.remove(0)),
                n => Err(ApiError::invalid(
                    "logit_bias",
                    format!(
                        "{n} entries are wrong: {}",
                        bad.iter()
                            .map(|e| e.message.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                )),
            }
        }
        BiasForm::Pairs => {
            let Some(list) = f.get::<Vec<Value>>("logit_bias")? else {
                return Ok(Vec::new());
            };
            list.iter()
                .enumerate()
                .map(|(i, pair)| {
                    let at = format!("logit_bias[{i}]");
                    let bad = || {
                        ApiError::invalid(
                            &at,
                            "expected [token id, bias], bias a number or \"-inf\"",
                        )
                    };
                    let [id, bias] = pair.as_array().map(Vec::as_slice).ok_or_else(bad)? else {
                        return Err(bad());
                    };
                    let id = id
                        .as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(bad)?;
                    let bias = match bias {
                        Value::String(s) if s == "-inf" => f32::NEG_INFINITY,
                        Value::Number(n) => n.as_f64().ok_or_else(bad)? as f32,
                        _ => return Err(bad()),
                    };
                    Ok((id, bias))
                })
                .collect()
        }
    }
}

/// `replay`: text (special tokens parsed) or token ids that the replay model writes instead of sampling.
pub fn replay(f: &Fields, vocab: &Vocab) -> Result<Option<Vec<u32>>, ApiError> {
    Ok(match f.raw("replay") {
        None => None,
        Some(Value::String(s)) => Some(vocab.encode(s, true)?),
        Some(v @ Value::Array(_)) => {
            let ids: Vec<u32> = typed(v, "replay")?;
            for &id in &ids {
                vocab.check_id(id, "replay")?;
            }
            Some(ids)
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "replay",
                format!(
                    "expected a string or an array of token ids, got {}",
                    kind(other)
                ),
            ));
        }
    })
}

/// `speculate`: `"ngram"` (prompt lookup, the server's sizes when it speculates, else the defaults), an
/// object `{"method": "ngram", "draft_tokens": K, "ngram_max": N, "ngram_min": N}` (each size optional),
/// or `"off"` / `false` / `null`; absent: what the server was started with (`serve --speculate`). Or
/// `tokens_per_step`: a replay's steps of K tokens (`--tokens-per-step`), for a request with `replay`.
pub fn speculation(f: &Fields, served: &Served) -> Result<Option<Speculation>, ApiError> {
    if let Some(k) = count_at_least_one(f, "tokens_per_step")? {
        if f.raw("replay").is_none() {
            return Err(ApiError::invalid(
                "tokens_per_step",
                "stages steps of a replay: give `replay` too (a model's own steps are `speculate`)",
            ));
        }
        if f.raw("speculate").is_some() {
            return Err(ApiError::invalid(
                "tokens_per_step",
                "give `tokens_per_step` (a replay's steps) or `speculate` (prompt lookup), not both",
            ));
        }
        if k > 16 {
            return Err(ApiError::invalid(
                "tokens_per_step",
                format!("{k} is more than 16, the most positions a step feeds"),
            ));
        }
        return Ok(Some(Speculation::tokens_per_step(k)));
    }
    let base = served.speculation.unwrap_or_else(Speculation::ngram);
    let (max0, min0) = match base.drafter {
        Drafter::Ngram { max, min } => (max, min),
        Drafter::Script => (Speculation::NGRAM_MAX, Speculation::NGRAM_MIN),
    };
    let method = |v: &Value| -> Result<(), ApiError> {
        match v {
            Value::String(s) if s == "ngram" => Ok(()),
            other => Err(ApiError::invalid(
                "speculate",
                format!(
                    "unknown method {other}: stoplab drafts by prompt lookup, \"ngram\" (or \"off\")"
                ),
            )),
        }
    };
    let spec = match f.raw("speculate") {
        None => return Ok(served.speculation),
        Some(Value::Null | Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) if s == "off" => return Ok(None),
        Some(Value::Bool(true)) => base,
        Some(v @ Value::String(_)) => {
            method(v)?;
            base
        }
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| {
                !["method", "draft_tokens", "ngram_max", "ngram_min"].contains(&k.as_str())
            }) {
                return Err(ApiError::invalid(
                    &format!("speculate.{k}"),
                    "unknown; the fields are method, draft_tokens, ngram_max and ngram_min",
                ));
            }
            if let Some(m) = o.get("method") {
                method(m)?;
            }
            let size = |name: &str, default: usize| -> Result<usize, ApiError> {
                match o.get(name) {
                    None => Ok(default),
                    Some(v) => match v.as_u64() {
                        Some(n) if n >= 1 => Ok(n as usize),
                        _ => Err(ApiError::invalid(
                            &format!("speculate.{name}"),
                            format!("{v} is not a whole number of at least 1"),
                        )),
                    },
                }
            };
            Speculation {
                drafter: Drafter::Ngram {
                    max: size("ngram_max", max0)?,
                    min: size("ngram_min", min0)?,
                },
                draft_tokens: size("draft_tokens", base.draft_tokens)?,
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "speculate",
                format!(
                    "expected \"ngram\", \"off\", a boolean or an object, got {}",
                    kind(other)
                ),
            ));
        }
    };
    spec.check().map_err(|e| {
        let field = match &e {
            crate::Error::Invalid { field, .. } => {
                format!(
                    "speculate.{}",
                    field.trim_start_matches("--").replace('-', "_")
                )
            }
            _ => "speculate".into(),
        };
        let message = match e {
            crate::Error::Invalid { message, .. } => message,
            other => other.to_string(),
        };
        ApiError::invalid(&field, message)
    })?;
    Ok(Some(spec))
}

/// The reasoning settings of a request: `reasoning_markers` (`"OPEN,CLOSE"`, `["OPEN", "CLOSE"]`, or
/// `"none"` / `null`; absent: the vocabulary's own, Qwen3's `<think>` and `</think>`, harmony's channels),
/// `stop_scope`
/// (`"answer"`, the default with markers; `"reasoning"`, `"all"`) and `end_in_reasoning` (`"allow"`, the
/// default; `"mask"`, refused on a replay, which writes its tokens as given).
pub fn reasoning(f: &Fields, vocab: &Vocab) -> Result<Option<Reasoning>, ApiError> {
    let bad_markers = |e: crate::pipeline::field::SettingsError| {
        ApiError::invalid("reasoning_markers", e.message)
    };
    let own = vocab.reasoning_markers();
    let markers = match f.raw("reasoning_markers") {
        None => Reasoning::from_markers(None, own).map_err(bad_markers)?,
        Some(Value::Null) => None,
        Some(Value::String(s)) => Reasoning::from_markers(Some(s), own).map_err(bad_markers)?,
        Some(v @ Value::Array(_)) => {
            let pair: Vec<String> = typed(v, "reasoning_markers")?;
            match <[String; 2]>::try_from(pair) {
                Ok([o, c]) => Some(Reasoning::new(&o, &c).map_err(bad_markers)?),
                Err(p) => {
                    return Err(ApiError::invalid(
                        "reasoning_markers",
                        format!("{} markers: give two, [\"OPEN\", \"CLOSE\"]", p.len()),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "reasoning_markers",
                format!(
                    "expected \"OPEN,CLOSE\" or [\"OPEN\", \"CLOSE\"], got {}",
                    kind(other)
                ),
            ));
        }
    };
    let named = |name: &str, names: &[&str]| -> Result<Option<String>, ApiError> {
        match f.get::<String>(name)? {
            Some(v) if !names.contains(&v.as_str()) => Err(ApiError::invalid(
                name,
                format!("{v:?} is not one of {}", names.join(", ")),
            )),
            v => Ok(v),
        }
    };
    let scope = named("stop_scope", &Scope::NAMES)?;
    let end = f
        .get::<String>("end_in_reasoning")?
        .map(|v| {
            EndInReasoning::parse_or_explain(&v)
                .map_err(|m| ApiError::invalid("end_in_reasoning", m))
        })
        .transpose()?;
    let budget = count(f, "max_reasoning_tokens")?;
    let Some(mut r) = markers else {
        if scope.is_some() || end.is_some() || budget.is_some() {
            let which = if scope.is_some() {
                "stop_scope"
            } else if end.is_some() {
                "end_in_reasoning"
            } else {
                "max_reasoning_tokens"
            };
            return Err(ApiError::invalid(
                which,
                "needs reasoning markers: this model's vocabulary declares none; give reasoning_markers \
                 (\"OPEN,CLOSE\")",
            ));
        }
        return Ok(None);
    };
    if let Some(s) = scope.as_deref().and_then(Scope::parse) {
        r.stop_scope = s;
    }
    if let Some(e) = end {
        if e.needs_sampler() && f.raw("replay").is_some() {
            return Err(ApiError::invalid(
                "end_in_reasoning",
                format!(
                    "{:?} acts on the sampler's choice, and a replay samples nothing: it writes its tokens as \
                     given (use \"allow\", or drop replay)",
                    e.name()
                ),
            ));
        }
        r.end_in_reasoning = e;
    }
    if let Some(n) = budget {
        if f.raw("replay").is_some() {
            return Err(ApiError::invalid(
                "max_reasoning_tokens",
                "writes the close marker in place of the model's choice, and a replay writes its tokens as given",
            ));
        }
        r.max_tokens = Some(n);
    }
    Ok(Some(r))
}

/// A count: absent, or an integer of at least 0.
pub fn count(f: &Fields, name: &str) -> Result<Option<usize>, ApiError> {
    match f.get::<i64>(name)? {
        Some(n) if n < 0 => Err(ApiError::invalid(name, format!("{n} is negative"))),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

/// A count of tokens: absent, or an integer of at least 1.
pub fn count_at_least_one(f: &Fields, name: &str) -> Result<Option<usize>, ApiError> {
    match f.get::<i64>(name)? {
        Some(n) if n < 1 => Err(ApiError::invalid(
            name,
            format!("{n} is below 1; ask for at least one token"),
        )),
        Some(n) => Ok(Some(n as usize)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use crate::serve::fields::Fields;
    use axum::http::StatusCode;

    #[test]
    fn wrong_types_name_the_field() {
        let f = Fields::parse(br#"{"temperature": "hot", "stream": 1}"#).unwrap();
        let e = f.get::<f32>("temperature").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
        assert!(e.message.starts_with("temperature: "), "{}", e.message);
        assert_eq!(
            f.get::<bool>("stream").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        assert!(
            Fields::parse(b"[1]")
                .unwrap_err()
                .message
                .contains("JSON object")
        );
        assert!(
            Fields::parse(b"{")
                .unwrap_err()
                .message
                .contains("malformed JSON")
        );
    }

    #[test]
    fn null_counts_as_absent() {
        let f = Fields::parse(br#"{"seed": null}"#).unwrap();
        assert_eq!(f.get::<u64>("seed").unwrap(), None);
    }
}
