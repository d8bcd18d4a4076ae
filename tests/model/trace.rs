//! Trace rows for replayed texts, exact: the stop machinery's behaviour token by token, on the default model's
//! tokenizer (no weights are loaded).

use std::process::Command;

use stoplab::lab::trace::{Style, Tracer, explain, render_row};
use stoplab::pipeline::settings::{GenerateParams, RepetitionStop};
use stoplab::pipeline::sink::Token;
use stoplab::pipeline::stop::FinishReason;
use stoplab::pipeline::stop::StopSet;
use stoplab::{LoadOptions, LoadedModel};

fn tokenizer() -> LoadedModel {
    LoadedModel::load(&LoadOptions {
        tokenizer_only: true,
        ..Default::default()
    })
    .expect("the default model is in the cache (stoplab fetch)")
}

fn trace(engine: &mut LoadedModel, replay: &str, params: &GenerateParams) -> Vec<Token> {
    let script = engine.vocab.encode(replay, true).unwrap();
    let prompt = engine.vocab.encode("AI:", true).unwrap();
    let vocab = engine.vocab.clone();
    let mut tracer = Tracer::new(
        |id| vocab.is_special(id),
        |_: &Token| std::ops::ControlFlow::Continue(()),
    );
    engine
        .generate(&prompt, Some(script), params, &mut tracer)
        .unwrap();
    std::mem::take(&mut tracer.rows)
}

/// (id, token bytes, held bytes, (held stop bytes, of), emitted, finish kind)
type Expected = (
    u32,
    &'static str,
    &'static str,
    Option<(usize, usize)>,
    &'static str,
    Option<&'static str>,
);

fn check(name: &str, rows: &[Token], expected: &[Expected]) {
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.id,
                String::from_utf8_lossy(&r.bytes).into_owned(),
                String::from_utf8_lossy(&r.held).into_owned(),
                r.held_for.as_ref().map(|h| (h.bytes, h.of)),
                r.text.clone(),
                r.finish.as_ref().map(|f| f.kind()),
            )
        })
        .collect();
    let want: Vec<_> = expected
        .iter()
        .map(|&(id, t, h, hf, e, f)| (id, t.to_string(), h.to_string(), hf, e.to_string(), f))
        .collect();
    assert_eq!(got, want, "{name}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.index, i, "{name}: row indices count generated tokens");
    }
}

fn with_stops(stops: &[&str]) -> GenerateParams {
    GenerateParams {
        stops: StopSet::new(stops.iter().copied()).unwrap(),
        ..Default::default()
    }
}

#[test]
fn trace_rows_for_replayed_texts_are_exact() {
    let mut engine = tokenizer();
    let user = with_stops(&["\nuser:"]);
    let cases: Vec<(&str, &str, GenerateParams, Vec<Expected>)> = vec![
        (
            "the stop spans three tokens and is cut",
            " Berlin.\nuser: What",
            user.clone(),
            vec![
                (11452, " Berlin", "", None, " Berlin", None),
                (30, ".", "", None, ".", None),
                (198, "\n", "\n", Some((1, 6)), "", None),
                (4093, "user", "\nuser", Some((5, 6)), "", None),
                (42, ":", "", None, "", Some("stop_string")),
            ],
        ),
        (
            "a false start is released when the next token rules the stop out",
            "Berlin.\nusers",
            user.clone(),
            vec![
                (24726, "Ber", "", None, "Ber", None),
                (4226, "lin", "", None, "lin", None),
                (30, ".", "", None, ".", None),
                (198, "\n", "\n", Some((1, 6)), "", None),
                (13044, "users", "", None, "\nusers", None),
                (2, "<|im_end|>", "", None, "", Some("end_token")),
            ],
        ),
        (
            "held bytes are released when an end token ends the generation",
            "a\nuse",
            user.clone(),
            vec![
                (81, "a", "", None, "a", None),
                (198, "\n", "\n", Some((1, 6)), "", None),
                (1726, "use", "\nuse", Some((4, 6)), "", None),
                (2, "<|im_end|>", "", None, "\nuse", Some("end_token")),
            ],
        ),
        (
            "the repetition stop ends a loop on its first repeat",
            "la la la la la",
            GenerateParams {
                repetition: Some(RepetitionStop { ngram: 2, count: 2 }),
                ..Default::default()
            },
            vec![
                (5825, "la", "", None, "la", None),
                (2618, " la", "", None, " la", None),
                (2618, " la", "", None, " la", None),
                (2618, " la", "", None, " la", Some("repetition")),
            ],
        ),
    ];
    for (name, replay, params, expected) in cases {
        let rows = trace(&mut engine, replay, &params);
        check(name, &rows, &expected);
    }
}

#[test]
fn the_last_row_explains_what_was_cut_and_where_the_stop_began() {
    let mut engine = tokenizer();
    let rows = trace(
        &mut engine,
        " Berlin.\nuser: What",
        &with_stops(&["\nuser:"]),
    );
    let last = rows.last().unwrap();
    let cut = last.cut.as_ref().unwrap();
    assert_eq!(cut.bytes, b"\nuser:");
    assert_eq!(cut.began_at, 2);
    assert!(matches!(
        last.finish.as_ref().unwrap(),
        FinishReason::StopString { offset: 8, .. }
    ));
    let text = explain(&rows).join("\n");
    assert!(
        text.contains("began in token 2 (\"\\n\") and was complete in token 4 (\":\"), 3 tokens"),
        "{text}"
    );
    assert!(text.contains("output: \" Berlin.\""), "{text}");

    let plain = render_row(&rows[3], Style::PLAIN);
    assert!(plain.contains("\"\\nuser\" 5/6 of \"\\nuser:\""), "{plain}");
    assert!(!plain.contains('\x1b'));
    let coloured = render_row(&rows[3], Style { color: true });
    assert!(coloured.contains("\x1b[33m"), "{coloured}");
}

#[test]
fn repetition_is_its_own_stop_reason_but_openai_sees_stop() {
    let f = FinishReason::Repetition {
        ngram: 8,
        count: 2,
        first: 3,
    };
    assert_eq!(f.openai(), "stop");
    assert_eq!(f.stop_reason(), serde_json::json!("repetition"));
    assert_eq!(f.kind(), "repetition");
    assert!(
        GenerateParams::default().repetition.is_none(),
        "off by default"
    );
}

#[test]
fn piped_trace_has_no_colour_and_jsonl_has_one_row_per_token() {
    let bin = env!("CARGO_BIN_EXE_stoplab");
    let out = Command::new(bin)
        .args([
            "trace",
            "--replay",
            r" Berlin.\nuser: What",
            "--stop",
            r"\nuser:",
            "AI:",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no colour when piped:\n{text}");
    assert!(text.contains("cut \"\\nuser:\""), "{text}");

    let out = Command::new(bin)
        .args([
            "trace",
            "--jsonl",
            "--replay",
            r" Berlin.\nuser: What",
            "--stop",
            r"\nuser:",
            "AI:",
        ])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[3]["held_for"]["stop"], "\nuser:");
    assert_eq!(lines[4]["finish"]["kind"], "stop_string");
    assert_eq!(lines[4]["finish"]["finish_reason"], "stop");
    assert_eq!(lines[4]["finish"]["cut"], "\nuser:");
}

#[test]
fn tokenize_shows_why_stops_are_matched_on_bytes() {
    let engine = tokenizer();
    let c = stoplab::lab::inspect::stop_carriers(&engine.vocab, "\nuser:").unwrap();
    assert_eq!(c.ids, vec![198, 4093, 42], "llama.cpp's ids for the stop");
    assert!(c.heads.iter().any(|h| h.bytes == b"\n\n" && h.carries == 1));
    assert!(c.tails.iter().any(|t| t.bytes == b"://" && t.carries == 1));

    let hashes = stoplab::lab::inspect::find_single(&engine.vocab, "#");
    assert!(
        hashes.windows(2).all(|w| w[0].1.len() >= w[1].1.len()),
        "longest first"
    );
    assert!(hashes[0].1.len() > 6 && hashes[0].1.chars().all(|c| c == '#'));
}

#[test]
fn a_model_trace_shows_how_close_the_model_came_to_its_end_token() {
    let mut engine = LoadedModel::load(&LoadOptions::default()).expect("the default model loads");
    let (_, prompt) = engine
        .prompt(
            &stoplab::pipeline::format::PromptFormat::Chat,
            &[stoplab::pipeline::format::Message::new(
                "user",
                "Name a colour.",
            )],
        )
        .unwrap();
    let vocab = engine.vocab.clone();
    let params = GenerateParams {
        max_tokens: 64,
        ..Default::default()
    };
    let mut tracer = Tracer::new(
        |id| vocab.is_special(id),
        |_: &Token| std::ops::ControlFlow::Continue(()),
    );
    let out = engine
        .generate(&prompt, None, &params, &mut tracer)
        .unwrap();
    assert!(
        matches!(out.finish, FinishReason::EndToken { .. }),
        "{:?}",
        out.finish
    );
    for row in &tracer.rows {
        let p = row.probs.as_ref().expect("a model step has probabilities");
        // Greedy: the chosen token is the most likely one.
        assert_eq!(p.top[0].0, row.id, "row {}", row.index);
        assert_eq!(p.top[0].1, p.chosen);
        assert!(p.end >= 0.0 && p.end <= 1.0 && p.chosen > 0.0);
    }
    let last = tracer.rows.last().unwrap();
    let p = last.probs.as_ref().unwrap();
    assert!(
        p.end >= p.chosen,
        "the end set includes the chosen end token"
    );
    let lines = explain(&tracer.rows).join("\n");
    assert!(lines.contains("p(end)"), "{lines}");
    // A replay has no model probabilities.
    let rows = trace(&mut engine, " Blue.", &GenerateParams::default());
    assert!(rows.iter().all(|r| r.probs.is_none()));
}

/// `--tokens-per-step K` on a replay: the same rows as one token at a time, a line per step under its rows
/// (and a JSON line with --jsonl), the drafted token after the stop discarded; without --replay it is a
/// usage error naming the flag.
#[test]
fn trace_shows_the_steps_of_a_replay_staged_k_tokens_at_a_time() {
    let bin = env!("CARGO_BIN_EXE_stoplab");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "trace",
            "--replay",
            r" Berlin.\nuser: next turn",
            "--stop",
            r"\nuser:",
        ];
        args.extend_from_slice(extra);
        args.push("AI:");
        Command::new(bin).args(&args).output().unwrap()
    };
    let plain = run(&["--jsonl"]);
    let steps = run(&["--jsonl", "--tokens-per-step", "3"]);
    assert!(
        steps.status.success(),
        "{}",
        String::from_utf8_lossy(&steps.stderr)
    );
    let lines = |o: &std::process::Output| -> Vec<serde_json::Value> {
        String::from_utf8(o.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (plain, steps) = (lines(&plain), lines(&steps));
    let rows: Vec<&serde_json::Value> = steps.iter().filter(|l| l.get("step").is_none()).collect();
    assert_eq!(rows.len(), plain.len());
    for (a, b) in rows.iter().zip(&plain) {
        assert_eq!(*a, b, "a row differs with steps of 3");
    }
    let reports: Vec<&serde_json::Value> =
        steps.iter().filter(|l| l.get("step").is_some()).collect();
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0]["accepted"], 2);
    assert_eq!(reports[1]["discarded"].as_array().map(Vec::len), Some(1));

    let table = run(&["--tokens-per-step", "3"]);
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("   step 1: drafted 2"), "{text}");
    assert!(text.contains("discarded after the finish"), "{text}");

    let o = Command::new(bin)
        .args(["trace", "--tokens-per-step", "3", "AI:"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tokens-per-step"));
}

/// Qwen2.5-Coder with its answer opened by a plain-text `<think>` (it knows no such token): asked for a
/// ChatML example, it refuses and writes its end token inside the reasoning, ending with no answer
/// (`allow`); with `mask` it cannot end there, so it writes `</think>` itself and then ends at once (the
/// empty answer sglang's ban-after-close answers); `close` needs a close marker that is one token, which
/// `</think>` is not in this vocabulary, and is refused naming the flag.
#[test]
fn a_real_model_ends_inside_an_opened_reasoning_and_mask_moves_the_end_past_it() {
    let bin = env!("CARGO_BIN_EXE_stoplab");
    let prompt = "<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\
                  <|im_end|>\\n<|im_start|>user\\nShow me an example of a ChatML conversation: one user turn and \
                  one assistant turn, with the special tokens written out.<|im_end|>\\n<|im_start|>assistant\\n\
                  <think>\\n";
    // The trace under a policy, as JSON lines or (`jsonl` false) as the table.
    let run_as = |policy: &str, jsonl: bool| {
        let mut args = vec![
            "trace",
            "-m",
            "qwen2.5-coder-0.5b-instruct",
            "--reasoning-markers",
            "<think>,</think>",
            "--end-in-reasoning",
            policy,
            "-n",
            "120",
        ];
        if jsonl {
            args.push("--jsonl");
        }
        args.push(prompt);
        Command::new(bin).args(&args).output().unwrap()
    };
    let run = |policy: &str| run_as(policy, true);
    let rows = |o: &std::process::Output| -> Vec<serde_json::Value> {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let allow = rows(&run("allow"));
    let last = allow.last().unwrap();
    assert_eq!(last["finish"]["kind"], "end_token", "{last}");
    assert_eq!(last["reasoning"], true, "the end came inside the reasoning");
    assert!(last["p_end"].as_f64().unwrap() > 0.5, "{last}");
    let mask = rows(&run("mask"));
    let closed = mask
        .iter()
        .position(|r| r["marker"] == "closed")
        .expect("with the end masked, the model closes its reasoning");
    assert!(closed > allow.len() - 1, "it wrote more reasoning first");
    assert!(mask[..closed].iter().all(|r| r["end_token"] == false));
    // Where allow ended, mask reports the end token it kept out, with p(end).
    let kept = &mask[allow.len() - 1]["forced"];
    assert_eq!(kept["why"], "end_masked_in_reasoning", "{kept}");
    assert!(kept["p_end"].as_f64().unwrap() > 0.5, "{kept}");
    let last = mask.last().unwrap();
    assert_eq!(last["finish"]["kind"], "end_token");
    assert_eq!(last["reasoning"], false);
    let close = run("close");
    assert!(!close.status.success());
    // As a table too: the refusal comes before any header is printed.
    let table = run_as("close", false);
    assert!(!table.status.success());
    assert!(
        table.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
    assert!(
        String::from_utf8_lossy(&close.stderr).contains("--reasoning-markers"),
        "{}",
        String::from_utf8_lossy(&close.stderr)
    );
}
