//! The fields of OpenAI's API (and output-changing ones of vLLM's and llama.cpp's) that stoplab does not
//! implement: each is a 400 naming it (`code: "unsupported_parameter"`), never silently ignored.

use serde_json::Value;

use crate::serve::error::ApiError;
use crate::serve::fields::Fields;
use crate::serve::request::Endpoint;

/// Request fields of OpenAI's API (and output-changing ones of vLLM's and llama.cpp's) that stoplab does
/// not implement: each is refused by name when set to anything but its default, never silently ignored.
/// Fields that change nothing here (`user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
/// `safety_identifier`, `add_special_tokens` / `add_special`,
/// `spaces_between_special_tokens`, `stream_options.include_obfuscation`) are accepted and ignored.
pub fn check(f: &Fields, endpoint: Endpoint) -> Result<(), ApiError> {
    let set = |name: &str| f.raw(name).is_some();
    let refuse = |name: &str, why: &str| Err(ApiError::unsupported(name, why));
    if let Some(v) = f.raw("suffix")
        && v.as_str() != Some("")
    {
        return refuse(
            "suffix",
            "insertion (fill-in-the-middle) is not implemented; leave suffix out",
        );
    }
    if let Some(b) = f.get::<i64>("best_of")?
        && b > 1
    {
        return refuse(
            "best_of",
            "is not implemented (it would rank candidates by log probability); use n to get several choices",
        );
    }
    if endpoint == Endpoint::Chat && f.raw("prompt_logprobs").is_some_and(|v| !v.is_null()) {
        return refuse(
            "prompt_logprobs",
            "is read on /v1/completions only: send the rendered prompt there",
        );
    }
    if endpoint == Endpoint::Chat && f.get::<bool>("echo")?.unwrap_or(false) {
        return refuse(
            "echo",
            "is a completions field; vLLM's chat echo is not implemented",
        );
    }
    for name in ["functions", "function_call"] {
        if set(name) {
            return refuse(
                name,
                "is OpenAI's deprecated form of tools; send tools and tool_choice",
            );
        }
    }
    if let Some(rf) = f.raw("response_format")
        && rf.get("type").and_then(Value::as_str) != Some("text")
    {
        return refuse(
            "response_format",
            "only {\"type\": \"text\"} is implemented (no constrained decoding)",
        );
    }
    if let Some(m) = f.raw("modalities")
        && *m != serde_json::json!(["text"])
    {
        return refuse("modalities", "only [\"text\"] is implemented");
    }
    for (name, why) in [
        ("audio", "audio output is not implemented"),
        ("prediction", "predicted outputs are not implemented"),
        (
            "reasoning_effort",
            "the served model has no reasoning setting",
        ),
        ("verbosity", "the served model has no verbosity setting"),
        ("web_search_options", "web search is not implemented"),
        (
            "speculative_config",
            "is vLLM's server setting; stoplab takes `speculate` per request (\"ngram\", \"off\" or \
             {\"method\": \"ngram\", \"draft_tokens\": K}) and `stoplab serve --speculate ngram` for a default",
        ),
        (
            "grammar",
            "grammars (llama.cpp) are not implemented: stoplab does no constrained decoding",
        ),
        (
            "json_schema",
            "JSON schemas (llama.cpp) are not implemented: stoplab does no constrained decoding",
        ),
        (
            "structured_outputs",
            "structured outputs (vLLM) are not implemented",
        ),
        ("guided_json", "guided decoding (vLLM) is not implemented"),
        ("guided_regex", "guided decoding (vLLM) is not implemented"),
        ("guided_choice", "guided decoding (vLLM) is not implemented"),
        (
            "guided_grammar",
            "guided decoding (vLLM) is not implemented",
        ),
        (
            "chat_template",
            "the model's own chat template is always used",
        ),
        (
            "chat_template_kwargs",
            "the model's own chat template is rendered without extra variables",
        ),
        (
            "truncate_prompt_tokens",
            "prompts are never truncated; shorten the prompt",
        ),
        ("n_predict", "is llama.cpp's name; send max_tokens"),
        ("typical_p", "typical sampling is not implemented"),
        ("mirostat", "mirostat sampling is not implemented"),
    ] {
        // A value that asks for nothing (false, 0, an empty object; typical_p 1) is the default: accepted.
        let inert = |v: &Value| match v {
            Value::Bool(b) => !b,
            Value::Number(n) => {
                n.as_f64() == Some(0.0) || (name == "typical_p" && n.as_f64() == Some(1.0))
            }
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Null => true,
        };
        if f.raw(name).is_some_and(|v| !inert(v)) {
            return refuse(name, why);
        }
    }
    if f.get::<bool>("use_beam_search")?.unwrap_or(false) {
        return refuse("use_beam_search", "beam search is not implemented");
    }
    Ok(())
}
