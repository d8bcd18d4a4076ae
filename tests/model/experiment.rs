//! Scenarios: every shipped one parses and runs (quick mode, on the real model); reports are well-formed;
//! a broken scenario file gets a message naming the file, the line and the field.

use std::process::Command;

use stoplab::lab::experiment::{self, Scenario, ScenarioError};

#[test]
fn every_shipped_scenario_parses() {
    let all = experiment::shipped().unwrap();
    assert!(all.len() >= 7);
    let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    names.dedup();
    assert_eq!(names.len(), all.len(), "names are unique");
    for s in &all {
        assert!(
            s.quick_runs <= s.runs && s.quick_max_tokens <= s.params.max_tokens,
            "{}",
            s.name
        );
    }
}

fn parse_err(src: &str) -> ScenarioError {
    Scenario::parse("my.toml", src).unwrap_err()
}

const GOOD: &str = r#"name = "x"
title = "X"

[prompt]
format = "transcript"
messages = [{ role = "user", content = "Hi" }]

[stop]
max_tokens = 8

[done]
contains = ["Hello"]
"#;

#[test]
fn a_scenario_error_names_the_file_line_and_field() {
    assert!(Scenario::parse("my.toml", GOOD).is_ok());

    let e = parse_err(&GOOD.replace("max_tokens = 8", "max_tokens = \"many\""));
    assert_eq!(
        (e.file.as_str(), e.line, e.field.as_str()),
        ("my.toml", 9, "stop.max_tokens"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("my.toml:9: stop.max_tokens: "),
        "{e}"
    );

    let e = parse_err(&GOOD.replace("max_tokens = 8", "max_tokenz = 8"));
    assert_eq!((e.line, e.field.as_str()), (9, "stop.max_tokenz"), "{e}");
    assert!(e.message.contains("unknown field"), "{e}");

    let e = parse_err(&GOOD.replace("\"transcript\"", "\"xml\""));
    assert_eq!((e.line, e.field.as_str()), (5, "prompt.format"), "{e}");

    let e = parse_err(&GOOD.replace("contains = [\"Hello\"]", "contains = []"));
    assert_eq!((e.line, e.field.as_str()), (12, "done.contains"), "{e}");

    let e = parse_err(&GOOD.replace("[done]\ncontains = [\"Hello\"]\n", ""));
    assert_eq!(e.field, "done", "{e}");
}

/// A setting the one validation refuses is named by the file's own key and line, down to the list element.
#[test]
fn a_bad_setting_in_a_scenario_is_named_by_its_key_and_line() {
    let with_stop = |line: &str| GOOD.replace("max_tokens = 8", &format!("max_tokens = 8\n{line}"));
    let e = parse_err(&with_stop("strings = [\"a\",\n  \"\"]"));
    assert_eq!((e.line, e.field.as_str()), (11, "stop.strings[1]"), "{e}");
    assert!(e.message.contains("empty"), "{e}");
    let e = parse_err(&with_stop("repetition = { ngram = 4, count = 1 }"));
    assert_eq!(
        (e.line, e.field.as_str()),
        (10, "stop.repetition.count"),
        "{e}"
    );
    let e = parse_err(&with_stop("natural = true").replace("\"transcript\"", "\"chat\""));
    assert_eq!((e.line, e.field.as_str()), (10, "stop.natural"), "{e}");
    let e = parse_err(&GOOD.replace("[stop]", "[sampling]\ntop_p = 0.0\n\n[stop]"));
    assert_eq!((e.line, e.field.as_str()), (9, "sampling.top_p"), "{e}");

    // Token ids are checked against the model's vocabulary, with the same naming.
    let sc = Scenario::parse("my.toml", &with_stop("token_ids = [3, 99999999]")).unwrap();
    let e = sc.check(49152).unwrap_err();
    assert_eq!(
        e.to_string(),
        "my.toml:10: stop.token_ids[1]: token id 99999999 is outside the vocabulary (0..49152)"
    );
    assert!(sc.check(100_000_000).is_ok());
}

#[test]
fn the_binary_reports_a_broken_scenario_file_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, GOOD.replace("max_tokens = 8", "max_tokens = -1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["experiment", "--list", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:9: stop.max_tokens:"), "{err}");

    // A token id outside the model's vocabulary is found once the model is loaded, before any run.
    std::fs::write(
        &path,
        GOOD.replace(
            "max_tokens = 8",
            "max_tokens = 8\nstrings = [\"x\"]\ntoken_ids = [99999999]",
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["experiment", "--quick", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml:11: stop.token_ids[0]: token id 99999999"),
        "{err}"
    );
}

/// Tag balance and escaping: enough to know a viewer will open the file.
fn well_formed_xml(s: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        let text = &rest[..open];
        if text.contains('>')
            || text
                .replace("&amp;", "")
                .replace("&lt;", "")
                .replace("&gt;", "")
                .replace("&quot;", "")
                .contains('&')
        {
            return Err(format!("unescaped text {text:?}"));
        }
        let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
        let tag = &rest[open + 1..close];
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect();
        if tag.starts_with('/') {
            if stack.pop().as_deref() != Some(name.as_str()) {
                return Err(format!("</{name}> closes nothing open"));
            }
        } else if !tag.ends_with('/') {
            stack.push(name);
        }
        rest = &rest[close + 1..];
    }
    if stack.is_empty() {
        Ok(())
    } else {
        Err(format!("unclosed {stack:?}"))
    }
}

/// Through the binary, with one thread: candle's default pool spin-waits and collapses on a busy machine,
/// and CI machines are busy.
#[test]
fn every_shipped_scenario_runs_quick_and_the_report_is_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args([
            "--threads",
            "1",
            "experiment",
            "--quick",
            "--json",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = json["scenarios"].as_array().unwrap();
    // The default run: the seed's scenarios, written for the default model (the other families' name theirs).
    let scenarios: Vec<_> = experiment::shipped()
        .unwrap()
        .into_iter()
        .filter(|s| s.model.is_none())
        .collect();
    assert!(scenarios.len() >= 10);
    assert_eq!(reports.len(), scenarios.len());
    for (r, s) in reports.iter().zip(&scenarios) {
        assert_eq!(r["name"], s.name.as_str());
        assert_eq!(r["runs"], s.quick_runs, "{}", s.name);
        for run in r["results"].as_array().unwrap() {
            let tokens = run["tokens"].as_u64().unwrap() as usize;
            assert!(
                tokens >= 1 && tokens <= s.quick_max_tokens,
                "{}: {run}",
                s.name
            );
            if let Some(w) = run["wasted"].as_u64() {
                assert!((w as usize) < tokens);
            }
        }
    }
    // The seed's story in two assertions: a stop string ends the transcript, nothing ends the broken model.
    let by = |n: &str| {
        reports
            .iter()
            .find(|r| r["name"].as_str().unwrap().starts_with(n))
            .unwrap()
    };
    assert_eq!(by("2-")["finishes"]["stop_string"], 1);
    assert_eq!(by("5a-")["finishes"]["length"], 1);

    let svg = std::fs::read_to_string(dir.path().join("wasted.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    well_formed_xml(&svg).unwrap();
    assert_eq!(svg.matches("<g>").count(), reports.len());

    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(
        table.len(),
        reports.len() + 2,
        "header, rule, one row per scenario"
    );
    let cols = |l: &str| l.replace("\\|", "").matches('|').count();
    assert!(
        table.iter().all(|l| cols(l) == cols(table[0])),
        "{table:#?}"
    );
    assert!(md.contains("](wasted.svg)"));
    assert_eq!(md.matches("\n## ").count(), reports.len());

    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(back, json);
}

#[test]
fn the_svg_chart_escapes_names() {
    let mut s = experiment::shipped().unwrap().remove(0);
    s.name = "a<b & c".into();
    let r = experiment::summarise(&s, Vec::new());
    let svg = experiment::svg_chart(&[r]);
    well_formed_xml(&svg).unwrap();
    assert!(svg.contains("a&lt;b &amp; c"));
}

/// The scenarios on stoplab's own server give what they give locally: same text, same tokens, same
/// finish_reason (the server samples with the same seeds).
#[test]
fn experiment_on_an_endpoint_matches_the_local_run() {
    let server = crate::common::start(true, None, stoplab::serve::Limits::default());
    let url = format!("http://{}", server.addr());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--threads",
            "1",
            "experiment",
            "--quick",
            "--json",
            "--only",
            "2-transcript-stop",
            "--only",
            "4-chat-end-token",
            "--only",
            "5a-broken-end-token",
        ];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let local = run(&[]);
    let remote = run(&["--endpoint", &url, "--concurrency", "2"]);
    let pick = |v: &serde_json::Value| -> Vec<(String, String, u64, String)> {
        v["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["results"].as_array().unwrap().clone())
            .map(|r| {
                (
                    r["text"].as_str().unwrap().to_string(),
                    r["finish_reason"].as_str().unwrap().to_string(),
                    r["tokens"].as_u64().unwrap(),
                    r["answered_at"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(pick(&local).len(), 3);
    assert_eq!(pick(&remote), pick(&local));
    // The stop string is named by the server (stop_reason), so the finish kind is kept too.
    assert_eq!(
        remote["scenarios"][0]["results"][0]["finish"],
        "stop_string"
    );
    server.shutdown().unwrap();
}

/// The other families side by side: each model runs the scenarios written for it, and each family's way of
/// ending a turn shows (Gemma base runs on without a stop; Qwen ends a bare-JSON call on <|im_end|> and,
/// prefilled with <tool_call>, on <|endoftext|>; harmony's <|call|> against <|return|> alone; Llama 3's
/// <|eot_id|> against <|end_of_text|> alone). Greedy or replayed, so the outcomes are exact.
#[test]
fn each_family_runs_its_own_scenarios_side_by_side() {
    let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args([
            "--threads",
            "1",
            "experiment",
            "--quick",
            "--json",
            "--model",
            "gemma3-270m,qwen2.5-coder-0.5b-instruct",
            "--model",
            "gpt-oss-vocab,llama3-vocab,qwen3-vocab",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reports = json["scenarios"].as_array().unwrap();
    let families: Vec<_> = experiment::shipped()
        .unwrap()
        .into_iter()
        .filter(|s| s.model.is_some())
        .collect();
    assert_eq!(reports.len(), families.len());
    let by = |name: &str| {
        let r = reports
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no report for {name}"));
        let run = &r["results"][0];
        (
            r["model"].as_str().unwrap().to_string(),
            run["finish"].as_str().unwrap().to_string(),
            run["finish_detail"].as_str().unwrap().to_string(),
            run["text"].as_str().unwrap().to_string(),
            run["wasted"].as_u64(),
        )
    };

    let (model, finish, _, text, _) = by("gemma-1-transcript-nostop");
    assert_eq!((model.as_str(), finish.as_str()), ("gemma3-270m", "length"));
    assert!(text.starts_with(" Berlin.\nuser:"), "{text:?}");
    let (_, finish, _, text, _) = by("gemma-2-transcript-stop");
    assert_eq!(
        (finish.as_str(), text.as_str()),
        ("stop_string", " Berlin.")
    );

    let (model, finish, detail, text, _) = by("qwen-1-tool-call");
    assert_eq!(model, "qwen2.5-coder-0.5b-instruct");
    assert_eq!(finish, "end_token");
    assert!(detail.contains("151645"), "{detail}");
    assert_eq!(
        text,
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#
    );
    let (_, finish, detail, text, _) = by("qwen-2-tool-call-prefilled");
    assert_eq!((finish.as_str(), text.as_str()), ("end_token", ""));
    assert!(detail.contains("151643"), "{detail}");

    // The end-token policies on a real model inside an opened <think>: allowed, it ends there with a
    // refusal; masked, it writes on, closes the reasoning itself and ends at once; ban-after-close acts
    // only after a close marker, so it ends as allowed.
    let (model, finish, _, allow, _) = by("reasoning-4-opened-think-allow");
    assert_eq!(
        (model.as_str(), finish.as_str()),
        ("qwen2.5-coder-0.5b-instruct", "end_token")
    );
    assert!(!allow.contains("</think>"), "{allow:?}");
    let (_, finish, _, mask, _) = by("reasoning-5-opened-think-mask");
    assert_eq!(finish, "end_token");
    assert!(
        mask.starts_with(&allow) && mask.ends_with("</think>"),
        "{mask:?}"
    );
    let (_, finish, _, ban, _) = by("reasoning-6-opened-think-ban-after-close");
    assert_eq!(
        (finish.as_str(), ban.as_str()),
        ("end_token", allow.as_str())
    );

    let (model, finish, detail, text, wasted) = by("harmony-call-ends");
    assert_eq!(model, "gpt-oss-vocab");
    assert_eq!(finish, "end_token");
    assert!(detail.contains("200012"), "<|call|> ends it: {detail}");
    assert!(text.ends_with(r#"{"city":"Paris"}"#), "{text:?}");
    let short = wasted.unwrap();
    let (_, _, detail, text, wasted) = by("harmony-only-return");
    assert!(
        detail.contains("200002"),
        "only <|return|> ends it: {detail}"
    );
    assert!(text.contains(r#"{"city":"Paris"}<|call|>"#), "{text:?}");
    assert!(wasted.unwrap() > short + 10, "{wasted:?} against {short}");

    let (model, _, detail, text, _) = by("llama3-eot");
    assert_eq!(model, "llama3-vocab");
    assert!(detail.contains("128009"), "{detail}");
    assert_eq!(text, "Paris.");
    let (_, _, detail, text, _) = by("llama3-end-of-text-only");
    assert!(detail.contains("128001"), "{detail}");
    assert!(
        text.starts_with("Paris.<|eot_id|><|start_header_id|>user"),
        "{text:?}"
    );
}

/// `--speculate ngram` drafts in every run of the batch and changes no text; a scenario's bad
/// `[replay] tokens_per_step` or `contrast` is named by its key.
#[test]
fn experiment_with_speculation_gives_the_same_texts() {
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(["--threads", "1", "experiment", "--quick", "--json"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["name"].clone(), r["results"].clone()))
            .map(|(n, rs)| {
                let texts: Vec<_> = rs
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| (r["text"].clone(), r["finish"].clone(), r["tokens"].clone()))
                    .collect();
                (n, texts)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&["--speculate", "ngram"]), run(&[]));

    let src = |replay: &str| {
        format!(
            "name = \"x\"\ntitle = \"x\"\n[prompt]\nformat = \"raw\"\nmessages = [{{ role = \"user\", content = \"a\" }}]\n\
             [replay]\ntext = \"b\"\n{replay}\n[done]\ncontains = [\"b\"]\n"
        )
    };
    let e = Scenario::parse("x.toml", &src("tokens_per_step = 0")).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line),
        ("replay.tokens_per_step", 8),
        "{e}"
    );
    let e = Scenario::parse("x.toml", &src("contrast = \"one-token-window\"")).unwrap_err();
    assert_eq!(e.field, "replay.contrast");
    assert!(e.message.contains("tokens_per_step"), "{e}");
    let e =
        Scenario::parse("x.toml", &src("tokens_per_step = 4\ncontrast = \"window\"")).unwrap_err();
    assert!(
        e.message
            .contains("one-token-window, length-before-stop, cut-text-keep-ids"),
        "{e}"
    );
}
