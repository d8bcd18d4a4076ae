//! `stoplab chat --tools FILE`: the conversation rendered with the functions through the model's own
//! template (a template without a tools branch is an error), and a reply that calls one printed as
//! OpenAI's `tool_calls`, one JSON object per line, with finish_reason `tool_calls`.

use serde_json::{Value, json};

use stoplab::pipeline::format::{
    ChatOptions, ChatTemplate, Message, PromptFormat, parse_tool_calls,
};
use stoplab::pipeline::sink::Discard;

use crate::cli::args::generate::GenArgs;
use crate::cli::output::{Failure, pretty};

/// Reads OpenAI's `tools` from a file: an array of `{"type": "function", "function": {...}}`, or an object
/// with a `tools` array.
fn read_tools(path: &std::path::Path) -> Result<Vec<Value>, Failure> {
    let at = format!("--tools {}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{at}: {e}")))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| Failure::usage(format!("{at}: not JSON ({e})")))?;
    let list = match value {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("tools") {
            Some(Value::Array(a)) => a,
            _ => {
                return Err(Failure::usage(format!(
                    "{at}: expected an array of tools or {{\"tools\": [...]}}"
                )));
            }
        },
        _ => {
            return Err(Failure::usage(format!(
                "{at}: expected an array of tools or {{\"tools\": [...]}}"
            )));
        }
    };
    for (i, t) in list.iter().enumerate() {
        let named = t
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str);
        if t.get("type").and_then(Value::as_str) != Some("function")
            || named.is_none_or(str::is_empty)
        {
            return Err(Failure::usage(format!(
                "{at}: tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}}"
            )));
        }
    }
    if list.is_empty() {
        return Err(Failure::usage(format!("{at}: holds no tools")));
    }
    Ok(list)
}

pub fn run(
    messages: Vec<Message>,
    tools_file: &std::path::Path,
    opts: GenArgs,
) -> Result<(), Failure> {
    let tools = read_tools(tools_file)?;
    let engine = opts.load_engine()?;
    let (format, params) = opts.params(PromptFormat::Chat.name(), &engine.vocab)?;
    if format != PromptFormat::Chat {
        return Err(Failure::usage(
            "--tools: functions are shown to the model through its chat template; use the chat format",
        ));
    }
    let template = engine
        .vocab
        .chat_template()
        .ok_or_else(|| Failure::usage("--tools: the model has no chat template"))?;
    let template = ChatTemplate::new(template)?;
    if !template.has_tools() {
        return Err(Failure::usage(
            "--tools: the model's chat template has no tools branch, so it cannot be shown functions; use a model \
             whose template takes tools (--model qwen2.5-coder-0.5b-instruct)",
        ));
    }
    let text = template.render(
        &messages,
        &ChatOptions {
            tools: &tools,
            ..ChatOptions::default()
        },
    )?;
    let prompt = engine.vocab.encode(&text, true)?;
    let replay = opts.replay_script(&engine)?;
    let mut engine = engine;
    let outcome = engine.generate(&prompt, replay, &params, &mut Discard)?;
    let reply = parse_tool_calls(&outcome.text, &tools, "0");
    let finish = if reply.is_some() {
        "tool_calls"
    } else {
        outcome.finish.openai()
    };
    let calls: Vec<Value> = reply
        .iter()
        .flat_map(|r| r.calls.iter().map(|c| c.to_openai()))
        .collect();
    if opts.json {
        let mut out = outcome.to_json();
        out["finish_reason"] = finish.into();
        out["tool_calls"] = json!(calls);
        out["content"] = match &reply {
            Some(r) => json!(r.content),
            None => json!(outcome.text),
        };
        println!("{}", pretty(&out));
        return Ok(());
    }
    match &reply {
        Some(r) => {
            if let Some(c) = &r.content {
                println!("{c}");
            }
            for call in &calls {
                println!("{call}");
            }
        }
        None => println!("{}", outcome.text),
    }
    eprintln!(
        "[finish_reason: {finish} ({}) | {} prompt + {} generated tokens]",
        outcome.finish.describe(),
        outcome.prompt_tokens,
        outcome.tokens.len(),
    );
    Ok(())
}
