//! `stoplab chat --tools FILE`: functions through the model's own template; a reply that calls one is
//! printed as OpenAI's tool_calls. Replays (no weights) of Qwen2.5-Coder's vocabulary and template.

use std::process::Command;

const TOOLS: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a given city.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

fn chat(args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let tools = dir.path().join("tools.json");
    std::fs::write(&tools, TOOLS).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .arg("chat")
        .arg("--tools")
        .arg(&tools)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_reply_that_calls_a_function_prints_tool_calls() {
    let (ok, out, err) = chat(&[
        "--model",
        "qwen2.5-coder-0.5b-instruct",
        "--replay",
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
        "What's the weather like in Paris today?",
    ]);
    assert!(ok, "{err}");
    let call: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert!(err.contains("finish_reason: tool_calls"), "{err}");

    // --json: the outcome with the calls; prose stays text.
    let (ok, out, err) = chat(&[
        "--model",
        "qwen2.5-coder-0.5b-instruct",
        "--replay",
        "It is sunny.",
        "--json",
        "Weather?",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["content"], "It is sunny.");
    assert_eq!(v["tool_calls"], serde_json::json!([]));
}

#[test]
fn a_template_without_a_tools_branch_is_a_clear_error() {
    let (ok, _, err) = chat(&["--replay", "x", "Hi"]);
    assert!(!ok);
    assert!(err.contains("no tools branch"), "{err}");
}
