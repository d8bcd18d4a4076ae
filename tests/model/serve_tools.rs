//! Function calls through Qwen2.5-Coder's own template on the replay model (no weights): tools and tool
//! turns rendered as llama.cpp and jinja2 render them, and a reply that calls a function returned as
//! OpenAI's tool_calls, streamed and not. They load the cached Qwen2.5-Coder file for its vocabulary and its
//! tools template; the rest of the OpenAI API is tested in the replay tier (`serve_api`).

use crate::common;

use std::net::SocketAddr;

use common::*;
use serde_json::{Value, json};
use stoplab::LoadOptions;
use stoplab::serve::{self, Config, Handle, Limits};

/// A server without weights for a model named as `stoplab --model` takes it.
fn replay_model(model: &str) -> Handle {
    serve::start(Config {
        engine: LoadOptions {
            model: Some(model.into()),
            tokenizer_only: true,
            ..Default::default()
        },
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        api_key: None,
        model_name: None,
        limits: Limits::default(),
        speculation: None,
    })
    .unwrap_or_else(|e| panic!("{model} is in the cache (`stoplab fetch {model}`): {e}"))
}

const WEATHER: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name, e.g. Paris"}}, "required": ["city"]}}}]"#;

/// The tools prompt llama.cpp's /apply-template rendered for Qwen2.5-Coder (the reference's
/// `tool_call_weather`), then an assistant call and a tool result as jinja2 renders them.
const QWEN_TOOLS_PROMPT: &str = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Get the current weather in a given city.\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": \"The city name, e.g. Paris\"}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWhat's the weather like in Paris today?<|im_end|>\n<|im_start|>assistant\n";
const QWEN_AFTER_CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"°C\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n";

#[test]
fn qwen_renders_tools_and_tool_turns_as_llama_cpp_and_jinja2_do() {
    let h = replay_model("qwen2.5-coder-0.5b-instruct");
    let tools: Value = serde_json::from_str(WEATHER).unwrap();
    let question = json!({"role": "user", "content": "What's the weather like in Paris today?"});
    let detok = |r: &Value| {
        ok(&h, "/detokenize", &json!({"tokens": r["tokens"]}))["prompt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let text = detok(&ok(
        &h,
        "/tokenize",
        &json!({"messages": [question], "tools": tools}),
    ));
    assert_eq!(text, QWEN_TOOLS_PROMPT);
    let turns = json!([question,
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"°C\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21}"}]);
    let text = detok(&ok(
        &h,
        "/tokenize",
        &json!({"messages": turns, "tools": tools}),
    ));
    assert_eq!(text, format!("{QWEN_TOOLS_PROMPT}{QWEN_AFTER_CALL}"));
    // Arguments that are not JSON text are refused by their path.
    let (status, param, _) = refused(
        &h,
        "/tokenize",
        json!({"messages": [question,
        {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "get_weather", "arguments": "{city: Paris"}}]}], "tools": tools}),
    );
    assert_eq!(
        (status, param.as_str()),
        (400, Some("messages[1].tool_calls[0]"))
    );
    h.shutdown().unwrap();
}

#[test]
fn a_reply_that_calls_a_function_is_returned_as_tool_calls_streamed_and_not() {
    let h = replay_model("qwen2.5-coder-0.5b-instruct");
    let tools: Value = serde_json::from_str(WEATHER).unwrap();
    let question = json!([{"role": "user", "content": "What's the weather like in Paris today?"}]);
    // As Qwen2.5 answers (a bare object), in its template's tags, and in a fence.
    for reply in [
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
    ] {
        let body = json!({"messages": question, "tools": tools, "replay": reply, "max_tokens": 60});
        let r = ok(&h, "/v1/chat/completions", &body);
        let c = &r["choices"][0];
        assert_eq!(c["finish_reason"], "tool_calls", "{reply}");
        assert!(c["message"]["content"].is_null());
        let call = &c["message"]["tool_calls"][0];
        assert_eq!(call["type"], "function");
        assert_eq!(call["function"]["name"], "get_weather");
        let args: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args, json!({"city": "Paris"}));
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        let mut s = body.clone();
        s["stream"] = true.into();
        let events = stream(&h, "/v1/chat/completions", &s);
        assert_eq!(
            deltas(&events).concat(),
            "",
            "no call text leaks as content"
        );
        let calls: Vec<&Value> = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["tool_calls"].get(0))
            .collect();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0]["index"], 0);
        assert_eq!(calls[0]["function"], call["function"]);
        assert_eq!(stream_finish(&events).0, "tool_calls");
    }
    // Prose, a call of an unknown function, or tool_choice none: text, as usual; streamed the same.
    for (reply, choice) in [
        ("It is sunny in Paris. {\"a\": 1}", "auto"),
        (r#"{"name": "get_time", "arguments": {}}"#, "auto"),
        (
            r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
            "none",
        ),
        (
            "Let me check. <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            "auto",
        ),
        (
            "{Let me check.} <tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            "auto",
        ),
    ] {
        let body =
            json!({"messages": question, "tools": tools, "tool_choice": choice, "replay": reply});
        let r = ok(&h, "/v1/chat/completions", &body);
        let c = &r["choices"][0];
        let mut s = body.clone();
        s["stream"] = true.into();
        let events = stream(&h, "/v1/chat/completions", &s);
        if c["finish_reason"] == "tool_calls" {
            // Text before the tag is the content (streamed the same, even when it began like a call); the
            // call, its closing tag cut off by the end, is read.
            let before = &reply[..reply.find("<tool_call>").unwrap()];
            assert_eq!(c["message"]["content"], before);
            assert_eq!(deltas(&events).concat(), before);
        } else {
            assert_eq!(c["message"]["content"], reply);
            assert!(c["message"]["tool_calls"].is_null());
            assert_eq!(deltas(&events).concat(), reply);
        }
        assert_eq!(stream_finish(&events).0, c["finish_reason"]);
    }
    h.shutdown().unwrap();
}
