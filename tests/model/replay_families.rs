//! The weight-free families (`gpt-oss-vocab`, `llama3-vocab`, `qwen3-vocab`, from the PyPI package
//! quicktok-v1) against `../shared/reference/replay-families.json`: every sequence tokenizes to its ids and
//! decodes back to its pieces; each family's end set; and the real stop machinery on replays: a special
//! spelled as plain text is caught by a stop string in both forms, the harmony tool call stops at
//! `<|call|>` unless only `<|return|>` counts, and Llama 3's `<|eot_id|>` against `<|end_of_text|>`.

use crate::common::reference;

use std::collections::BTreeSet;
use std::path::Path;

use stoplab::pipeline::sink::{Discard, Outcome};

use stoplab::pipeline::stop::FinishReason;

use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::settings::{EndTokenChoice, UserSettings};
use stoplab::pipeline::stop::StopSet;
use stoplab::{LoadOptions, LoadedModel};

/// The families as the reference names them, and the model names stoplab knows them by.
const FAMILIES: [(&str, &str); 3] = [
    ("gpt-oss", "gpt-oss-vocab"),
    ("llama3", "llama3-vocab"),
    ("qwen3", "qwen3-vocab"),
];

fn engine(name: &str) -> LoadedModel {
    LoadedModel::load(&LoadOptions {
        model: Some(name.into()),
        tokenizer_only: true,
        ..LoadOptions::default()
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn run(e: &mut LoadedModel, script: &[u32], params: &GenerateParams) -> Outcome {
    let prompt = e.vocab.encode("x", true).unwrap();
    e.generate(&prompt, Some(script.to_vec()), params, &mut Discard)
        .unwrap()
}

fn params(stops: &[&str], end_tokens: EndTokenChoice) -> GenerateParams {
    GenerateParams {
        stops: StopSet::new(stops.iter().copied()).unwrap(),
        end_tokens,
        max_tokens: 64,
        ..GenerateParams::default()
    }
}

#[test]
fn every_sequence_tokenizes_to_its_ids_and_decodes_to_its_pieces() {
    let r = reference::json("replay-families.json");
    for (family, name) in FAMILIES {
        let e = engine(name);
        let v = &e.vocab;
        let f = &r["families"][family];
        assert_eq!(v.len() as u64, f["n_vocab"].as_u64().unwrap(), "{name}");
        for s in f["sequences"].as_array().unwrap() {
            let label = s["name"].as_str().unwrap();
            let text = s["text"].as_str().unwrap();
            let want = ids(&s["ids"]);
            let got = if !label.ends_with("_as_text") {
                v.encode(text, true).unwrap()
            } else if family == "qwen3" {
                // The text between <think> and <|im_end|> was encoded as ordinary text.
                let inner = text
                    .strip_prefix("<think>")
                    .and_then(|t| t.strip_suffix("<|im_end|>"))
                    .unwrap();
                let mut ids = v.encode("<think>", true).unwrap();
                ids.extend(v.encode(inner, false).unwrap());
                ids.extend(v.encode("<|im_end|>", true).unwrap());
                ids
            } else {
                v.encode(text, false).unwrap()
            };
            assert_eq!(got, want, "{name} {label}");
            let pieces: Vec<String> = want
                .iter()
                .map(|&id| String::from_utf8(v.token_bytes(id).unwrap().to_vec()).unwrap())
                .collect();
            let expect: Vec<&str> = s["pieces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(pieces, expect, "{name} {label}");
            assert_eq!(v.decode(&want).unwrap(), text, "{name} {label}");
            let specials: Vec<u32> = want.iter().copied().filter(|&i| v.is_special(i)).collect();
            assert_eq!(
                specials,
                ids(&s["special_ids_in_sequence"]),
                "{name} {label}"
            );
        }
    }
}

#[test]
fn each_family_ends_on_its_own_set_with_reasons() {
    let r = reference::json("replay-families.json");
    let cases: [(&str, &[u32], &[u32]); 3] = [
        // gpt-oss: <|endoftext|>, <|return|>, <|call|>; not <|end|> (one message, the turn goes on).
        (
            "gpt-oss-vocab",
            &[199999, 200002, 200012],
            &[199999, 200002, 200012],
        ),
        // Llama 3: <|end_of_text|>, 128008 (3.1's <|eom_id|>, a reserved name here), <|eot_id|>.
        ("llama3-vocab", &[128001, 128008, 128009], &[128001, 128009]),
        // Qwen3: <|endoftext|>, <|im_end|>; llama.cpp adds the FIM markers and, as in Qwen2.5's GGUF, the
        // ordinary token `</s>` 128247 by its spelling (the reference lists only the specials' matches).
        (
            "qwen3-vocab",
            &[151643, 151645],
            &[128247, 151643, 151645, 151662, 151663, 151664],
        ),
    ];
    for (name, ours, theirs) in cases {
        let e = engine(name);
        let ends = e.vocab.end_set();
        assert_eq!(
            e.vocab.end_tokens(),
            &ours.iter().copied().collect::<BTreeSet<_>>(),
            "{name}"
        );
        assert_eq!(
            ends.llama_cpp_ids(),
            theirs.iter().copied().collect::<BTreeSet<_>>(),
            "{name}"
        );
        assert!(ends.tokens.iter().all(|t| !t.reasons.is_empty()), "{name}");
    }
    // The reference's spelling matches are llama.cpp's set less its removal of <|end|>.
    let f = &r["families"]["gpt-oss"];
    assert_eq!(f["llama_cpp_eog_spelling_matches"]["<|end|>"], 200007);
    let e = engine("gpt-oss-vocab");
    assert!(!e.vocab.end_tokens().contains(&200007));
    let why = &e.vocab.end_set().tokens;
    assert!(
        why.iter()
            .any(|t| t.id == 200012 && t.reasons[0].contains("tool call"))
    );
}

/// `<|return|>` written as the special token and spelled as ordinary pieces (` <`, `|`, `return`, `|`,
/// `>`): the end token catches only the first; a stop string catches both, with the same text out.
#[test]
fn a_stop_string_catches_a_special_in_both_forms() {
    let r = reference::json("replay-families.json");
    let cases = [
        (
            "gpt-oss",
            "gpt-oss-vocab",
            "harmony_return_as_text",
            "<|return|>",
            200002,
        ),
        (
            "llama3",
            "llama3-vocab",
            "llama3_eot_as_text",
            "<|eot_id|>",
            128009,
        ),
    ];
    for (family, name, seq, marker, id) in cases {
        let mut e = engine(name);
        let s = r["families"][family]["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == seq)
            .unwrap();
        let text = s["text"].as_str().unwrap();
        let as_text = ids(&s["ids"]);
        let as_special = e.vocab.encode(text, true).unwrap();
        assert!(as_special.contains(&id) && !as_text.contains(&id), "{name}");
        let before = &text[..text.find(marker).unwrap()];

        // By default the end token ends the special form; the spelled form runs on to the end.
        let by_end = run(&mut e, &as_special, &params(&[], EndTokenChoice::default()));
        assert_eq!(by_end.finish, FinishReason::EndToken { id }, "{name}");
        let spelled = run(&mut e, &as_text, &params(&[], EndTokenChoice::default()));
        assert!(spelled.text.contains(marker), "{name}: {:?}", spelled.text);

        // A stop string on the marker's spelling: both forms end at the same place, with the same text.
        let no_end = EndTokenChoice {
            remove: vec![id],
            ..EndTokenChoice::default()
        };
        for (form, script) in [("special", &as_special), ("text", &as_text)] {
            let out = run(&mut e, script, &params(&[marker], no_end.clone()));
            assert!(
                matches!(&out.finish, FinishReason::StopString { stop, .. } if stop == marker),
                "{name} {form}: {:?}",
                out.finish
            );
            assert_eq!(out.text, before, "{name} {form}");
        }
    }
}

/// The seed's failure: a model trained to end only after function calls. By default the harmony tool
/// call ends at `<|call|>`; with only `<|return|>` counting it runs past it (and the replay's next token,
/// `<|return|>`, ends it).
#[test]
fn harmony_tool_call_stops_at_call_unless_only_return_counts() {
    let r = reference::json("replay-families.json");
    let mut e = engine("gpt-oss-vocab");
    let s = &r["families"]["gpt-oss"]["sequences"][1];
    assert_eq!(s["name"], "harmony_tool_call");
    let script = ids(&s["ids"]);
    let calls = script.iter().position(|&i| i == 200012).unwrap();

    let out = run(&mut e, &script, &params(&[], EndTokenChoice::default()));
    assert_eq!(out.finish, FinishReason::EndToken { id: 200012 });
    assert_eq!(out.tokens.len(), calls + 1);
    assert!(out.text.ends_with("{\"city\":\"Paris\"}"), "{:?}", out.text);

    // Chosen the way a user does: by the token's text, validated once.
    let only_return = UserSettings {
        end_tokens: EndTokenChoice {
            replace: Some(vec![e.vocab.token_id("<|return|>").unwrap()]),
            ..EndTokenChoice::default()
        },
        max_tokens: 64,
        ..UserSettings::default()
    }
    .validate(Some(e.vocab.len()))
    .unwrap()
    .params;
    let out = run(&mut e, &script, &only_return);
    assert_eq!(out.finish, FinishReason::EndToken { id: 200002 });
    assert_eq!(out.tokens.len(), calls + 2);
    assert!(
        out.text.ends_with("{\"city\":\"Paris\"}<|call|>"),
        "{:?}",
        out.text
    );

    // Removing <|call|> has the same effect here; removing both and ignoring nothing else runs to the limit.
    let none = params(
        &[],
        EndTokenChoice {
            replace: Some(vec![]),
            ..EndTokenChoice::default()
        },
    );
    let out = run(&mut e, &script, &none);
    assert_eq!(out.finish, FinishReason::Length);
}

/// Llama 3 ends a turn with `<|eot_id|>`; a server that stops only on the tokenizer's EOS
/// `<|end_of_text|>` runs into the next header and writes the user's turn.
#[test]
fn llama3_eot_ends_the_turn_end_of_text_alone_runs_on() {
    let r = reference::json("replay-families.json");
    let mut e = engine("llama3-vocab");
    let s = r["families"]["llama3"]["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "llama3_runon_header")
        .unwrap()
        .clone();
    let script = ids(&s["ids"]);
    let out = run(&mut e, &script, &params(&[], EndTokenChoice::default()));
    assert_eq!(out.finish, FinishReason::EndToken { id: 128009 });
    assert_eq!(out.text, "Paris.");

    let eos_only = EndTokenChoice {
        replace: Some(vec![128001]),
        ..EndTokenChoice::default()
    };
    let out = run(&mut e, &script, &params(&[], eos_only));
    assert_eq!(out.finish, FinishReason::EndToken { id: 128001 });
    assert!(
        out.text
            .contains("<|start_header_id|>user<|end_header_id|>\n\nAnd Germany?"),
        "{:?}",
        out.text
    );
}

/// A vocabulary has no weights: a command that needs the model says so.
#[test]
fn a_vocabulary_without_weights_asks_for_a_replay() {
    let err = LoadedModel::load(&LoadOptions {
        model: Some("gpt-oss-vocab".into()),
        ..LoadOptions::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("gpt-oss-vocab has no weights: use --replay"),
        "{err}"
    );
}

/// The weight-free scenarios (`scenarios/families/`), as `stoplab experiment --model NAME --scenario FILE`
/// runs them: the end set in force decides where each run ends and how many tokens it wastes.
#[test]
fn family_scenarios_end_where_their_end_set_says() {
    use stoplab::lab::experiment::{RunOptions, Scenario, run_scenario};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/families");
    // (file, model, finish, wasted tokens (the end token counts as one), run-on turns: invented tool
    // answers for harmony, further headers for Llama 3)
    let cases = [
        ("harmony-call-ends.toml", "gpt-oss-vocab", "end_token", 1, 0),
        (
            "harmony-only-return.toml",
            "gpt-oss-vocab",
            "end_token",
            33,
            1,
        ),
        ("llama3-eot.toml", "llama3-vocab", "end_token", 1, 0),
        (
            "llama3-end-of-text-only.toml",
            "llama3-vocab",
            "end_token",
            17,
            2,
        ),
    ];
    for (file, model, finish, wasted, turns) in cases {
        let sc = Scenario::load(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
        assert!(sc.replay.is_some(), "{file}");
        let mut e = engine(model);
        let report = run_scenario(&mut e, &sc, &RunOptions::default(), &mut |_| {}).unwrap();
        let r = &report.results[0];
        assert_eq!(r.finish, finish, "{file}: {}", r.finish_detail);
        assert_eq!(r.wasted, Some(wasted), "{file}: {:?}", r.text);
        assert_eq!(r.run_on_turns, turns, "{file}: {:?}", r.text);
        assert!(
            report.end_tokens.starts_with("end tokens in force"),
            "{file}"
        );
    }
}

/// A replay-only server of a weight-free family, on a free loopback port.
fn family_server(name: &str) -> stoplab::serve::Handle {
    stoplab::serve::start(stoplab::serve::Config {
        engine: LoadOptions {
            model: Some(name.into()),
            tokenizer_only: true,
            ..LoadOptions::default()
        },
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    })
    .unwrap()
}

fn stoplab(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The flags, by token text: `--no-end-token '<|call|>'` runs past the call; the trace says which set was
/// in force; a text that is no token, a clash, and a command that needs weights are refused with exit 2.
#[test]
fn end_token_flags_choose_the_set_by_text_on_the_command_line() {
    let call = r#"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>"#;
    let (rc, out, err) = stoplab(&[
        "complete",
        "--model",
        "gpt-oss-vocab",
        "--json",
        "--replay",
        call,
        "<|start|>assistant",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["text"],
        r#"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}"#
    );

    let (rc, out, err) = stoplab(&[
        "trace",
        "--model",
        "gpt-oss-vocab",
        "--no-end-token",
        "<|call|>",
        "--replay",
        call,
        "<|start|>assistant",
    ]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("end tokens in force: {199999 <|endoftext|>, 200002 <|return|>} (removed 200012 <|call|>)"),
        "{out}"
    );
    assert!(out.contains("token 18 (id 200002)"), "{out}");

    let (rc, _, err) = stoplab(&[
        "complete",
        "--model",
        "gpt-oss-vocab",
        "--add-end-token",
        "<|nope|>",
        "--replay",
        "x",
        "y",
    ]);
    assert_eq!(rc, 2);
    assert!(
        err.contains("--add-end-token #1: \"<|nope|>\" is not a token of this vocabulary"),
        "{err}"
    );
    let (rc, _, err) = stoplab(&[
        "complete",
        "--model",
        "gpt-oss-vocab",
        "--add-end-token",
        "7",
        "--no-end-token",
        "7",
        "--replay",
        "x",
        "y",
    ]);
    assert_eq!(rc, 2);
    assert!(
        err.contains("--no-end-token #1: token 7 is both added and removed"),
        "{err}"
    );
    let (rc, _, err) = stoplab(&[
        "complete",
        "--model",
        "llama3-vocab",
        "--end-token",
        "999999",
        "--replay",
        "x",
        "y",
    ]);
    assert_eq!(rc, 2);
    assert!(
        err.contains("--end-token #1: token id 999999 is outside the vocabulary"),
        "{err}"
    );
    let (rc, _, err) = stoplab(&["complete", "--model", "gpt-oss-vocab", "hi"]);
    assert_eq!(rc, 2);
    assert!(
        err.contains("gpt-oss-vocab has no weights: use --replay"),
        "{err}"
    );
}

#[test]
fn tokenize_end_tokens_lists_reasons_spellings_and_llama_cpps_difference() {
    let (rc, out, err) = stoplab(&[
        "tokenize",
        "--model",
        "qwen3-vocab",
        "--end-tokens",
        "--json",
    ]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = &v["end_tokens"];
    assert_eq!(e["set"], serde_json::json!([151643, 151645]));
    let im_end = &e["tokens"][1];
    assert_eq!(im_end["text"], "<|im_end|>");
    assert_eq!(im_end["plain_text_is_this_token"], false);
    assert_eq!(
        im_end["plain_text_pieces"].as_array().unwrap().concat_str(),
        "<|im_end|>"
    );
    let extra: Vec<u64> = e["llama_cpp_extra"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_u64().unwrap())
        .collect();
    assert_eq!(extra, [128247, 151662, 151663, 151664]);

    let (rc, out, err) = stoplab(&["tokenize", "--model", "llama3-vocab", "--end-tokens"]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("llama.cpp lacks 128008"), "{out}");
    assert!(
        out.contains(
            "beginning of sequence: 128000 <|begin_of_text|> (put before a text prompt, once)"
        ),
        "{out}"
    );
}

trait ConcatStr {
    fn concat_str(&self) -> String;
}

impl ConcatStr for Vec<serde_json::Value> {
    fn concat_str(&self) -> String {
        self.iter().filter_map(|v| v.as_str()).collect()
    }
}

/// The three bugs of multi-token steps, staged on `qwen3-vocab` replays 6 tokens a step: stoplab's answer
/// is the one a step of one token gives (text, finish, ids), and beside it the buggy rule's shows the bug:
/// the stop missed and the text run on (sglang PR #23802), `length` with the stop and what follows it
/// returned (sglang #31599), the text cut but ids after the stop returned (vLLM PR #47616).
#[test]
fn the_step_scenarios_show_each_buggy_rule_beside_stoplab() {
    use stoplab::lab::experiment::{self, run::RunOptions, run::run_scenario};

    let mut e = engine("qwen3-vocab");
    let opts = RunOptions::default();
    let steps: Vec<_> = experiment::shipped()
        .unwrap()
        .into_iter()
        .filter(|s| s.name.starts_with("steps-"))
        .collect();
    assert_eq!(steps.len(), 3);
    for sc in &steps {
        let staged = run_scenario(&mut e, sc, &opts, &mut |_| {}).unwrap();
        let mut one = sc.clone();
        one.params.speculation = None;
        one.contrast = None;
        let plain = run_scenario(&mut e, &one, &opts, &mut |_| {}).unwrap();
        let (a, b) = (&staged.results[0], &plain.results[0]);
        assert_eq!(
            (&a.text, &a.finish, a.tokens),
            (&b.text, &b.finish, b.tokens),
            "{}: 6 tokens a step give what 1 does",
            sc.name
        );
        let c = staged.contrast.as_ref().expect("a contrast");
        assert_eq!(c.tokens_per_step, 6);
        assert_eq!(c.stoplab.text, a.text);
        assert_eq!(c.stoplab.finish, "stop");
        let rule = &c.rule_answer;
        match sc.name.as_str() {
            "steps-1-stop-outside-window" => {
                assert_eq!(a.text, "Berlin.");
                assert!(
                    rule.text.contains("\nuser: And what about France?"),
                    "{rule:?}"
                );
                assert!(c.leaked > 10, "{c:?}");
            }
            "steps-2-length-before-stop" => {
                assert_eq!(a.text, "Berlin.");
                assert_eq!(rule.finish, "length");
                assert!(rule.text.contains("######"), "{rule:?}");
                assert_eq!(rule.ids.len(), sc.params.max_tokens);
                assert!(c.leaked > 0);
            }
            "steps-3-text-cut-ids-kept" => {
                assert_eq!(a.text, "He laughed:");
                assert_eq!(rule.text, a.text, "the text is cut alike");
                assert!(c.leaked > 0, "{c:?}");
                // Stoplab's ids spell its text exactly; the rule's spell more.
                let spelled = e.vocab.decode(&c.stoplab.ids).unwrap();
                assert_eq!(spelled, a.text);
                let theirs = e.vocab.decode(&rule.ids).unwrap();
                assert!(
                    theirs.len() > a.text.len() + " ha ha ha".len(),
                    "{theirs:?}"
                );
            }
            other => panic!("an unexpected scenario {other}"),
        }
    }
}

/// Qwen3's vocabulary declares its reasoning markers (`<think>`, `</think>` are special tokens), so a stop
/// meant for the answer (lm-evaluation-harness's `"\n\n"`) is not armed in the thinking by default; `--stop-scope
/// all` brings the bug back, `reasoning` arms it in the thinking only; the trace says where the reasoning
/// begins and ends; `--end-in-reasoning mask` with a replay, and a scope on a vocabulary without markers,
/// are refused by name.
#[test]
fn qwen3_stops_are_scoped_to_the_answer_by_default() {
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args([
                "complete",
                "--json",
                "--model",
                "qwen3-vocab",
                "--stop",
                "\\n\\n",
            ])
            .args([
                "--replay",
                "<think>Plan.\\n\\nDone.</think>Four.\\n\\nMore.",
            ])
            .args(extra)
            .arg("Q")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["text"].as_str().unwrap().to_string()
    };
    assert_eq!(run(&[]), "<think>Plan.\n\nDone.</think>Four.");
    assert_eq!(
        run(&["--stop-scope", "answer"]),
        "<think>Plan.\n\nDone.</think>Four."
    );
    assert_eq!(run(&["--stop-scope", "all"]), "<think>Plan.");
    assert_eq!(run(&["--stop-scope", "reasoning"]), "<think>Plan.");
    assert_eq!(run(&["--reasoning-markers", "none"]), "<think>Plan.");

    let trace = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["trace", "--model", "qwen3-vocab", "--stop", "\\n\\n"])
        .args([
            "--replay",
            "<think>Plan.\\n\\nDone.</think>Four.\\n\\nMore.",
            "Q",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&trace.stdout);
    assert!(table.contains("reasoning begins"), "{table}");
    assert!(
        table.contains("reasoning ends: the answer begins"),
        "{table}"
    );

    for (args, says) in [
        (
            vec![
                "--model",
                "qwen3-vocab",
                "--end-in-reasoning",
                "mask",
                "--replay",
                "x",
            ],
            "--end-in-reasoning mask",
        ),
        (
            vec![
                "--model",
                "llama3-vocab",
                "--stop-scope",
                "all",
                "--replay",
                "x",
            ],
            "--reasoning-markers",
        ),
        (
            vec![
                "--model",
                "llama3-vocab",
                "--reasoning-markers",
                "<r>",
                "--replay",
                "x",
            ],
            "OPEN,CLOSE",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .arg("complete")
            .args(&args)
            .arg("Q")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // Plain-text markers on a vocabulary without its own.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args([
            "complete",
            "--json",
            "--model",
            "llama3-vocab",
            "--stop",
            "\\n\\n",
        ])
        .args(["--reasoning-markers", "<r>,</r>"])
        .args(["--replay", "<r>a\\n\\nb</r>c\\n\\nd", "Q"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["text"], "<r>a\n\nb</r>c");
}

/// The weight-free families chat through their own formats, and Qwen3's chat answers split its thinking
/// from its answer with the default markers: `"\n\n"` (lm-evaluation-harness's stop) does not end the
/// thinking, and an end token inside the thinking leaves an empty answer, as the model chose (`allow`).
#[test]
fn weight_free_families_chat_and_qwen3_and_harmony_split_their_thinking() {
    use serde_json::json;
    for (model, rendered) in [
        (
            "qwen3-vocab",
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
        ),
        (
            "llama3-vocab",
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        (
            "gpt-oss-vocab",
            "<|start|>user<|message|>Hi<|end|><|start|>assistant",
        ),
    ] {
        let e = engine(model);
        let (_, prompt) = e
            .prompt(
                &stoplab::pipeline::format::PromptFormat::Chat,
                &[stoplab::pipeline::format::Message::new("user", "Hi")],
            )
            .unwrap_or_else(|err| panic!("{model}: {err}"));
        let text = e.vocab.decode(&prompt).unwrap();
        assert!(text.ends_with(rendered), "{model}: {text:?}");
    }
    let h = family_server("qwen3-vocab");
    let chat = |body: serde_json::Value| -> serde_json::Value {
        let r = ureq::post(&format!("http://{}/v1/chat/completions", h.addr()))
            .send_json(body)
            .unwrap();
        r.into_json().unwrap()
    };
    let r = chat(json!({
        "messages": [{"role": "user", "content": "What is 2+2?"}],
        "replay": "<think>2+2 is 4.\n\nCheck: yes.</think>4.\n\nAnything else?", "stop": "\n\n",
    }));
    let c = &r["choices"][0];
    assert_eq!(
        c["message"]["reasoning_content"],
        "2+2 is 4.\n\nCheck: yes."
    );
    assert_eq!(c["message"]["content"], "4.");
    assert_eq!(c["finish_reason"], "stop");
    let r = chat(
        json!({"messages": [{"role": "user", "content": "Hi"}], "replay": "<think>hm<|im_end|>"}),
    );
    let c = &r["choices"][0];
    assert_eq!(
        (&c["message"]["content"], &c["message"]["reasoning_content"]),
        (&json!(""), &json!("hm"))
    );
    h.shutdown().unwrap();

    // Harmony: the analysis channel is the reasoning, the final channel the answer; the framing between
    // them (<|end|><|start|>assistant<|channel|>final<|message|>) is the close marker, in neither field.
    let h = family_server("gpt-oss-vocab");
    let body = json!({
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "replay": "<|channel|>analysis<|message|>The user asks.\n\nIt is Paris.<|end|><|start|>assistant\
                   <|channel|>final<|message|>Paris.\n\nYes.<|return|>",
        "stop": "\n\n",
    });
    let r = ureq::post(&format!("http://{}/v1/chat/completions", h.addr()))
        .send_json(body.clone())
        .unwrap()
        .into_json::<serde_json::Value>()
        .unwrap();
    let c = &r["choices"][0];
    assert_eq!(
        (&c["message"]["reasoning_content"], &c["message"]["content"]),
        (&json!("The user asks.\n\nIt is Paris."), &json!("Paris."))
    );
    assert_eq!(c["finish_reason"], "stop");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let text = ureq::post(&format!("http://{}/v1/chat/completions", h.addr()))
        .send_json(streamed)
        .unwrap()
        .into_string()
        .unwrap();
    let (mut reasoning, mut content) = (String::new(), String::new());
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            break;
        }
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let d = &v["choices"][0]["delta"];
        reasoning.push_str(d["reasoning_content"].as_str().unwrap_or(""));
        content.push_str(d["content"].as_str().unwrap_or(""));
    }
    assert_eq!(
        (reasoning.as_str(), content.as_str()),
        ("The user asks.\n\nIt is Paris.", "Paris.")
    );
    h.shutdown().unwrap();
}

/// The reasoning scenarios: the blank-line stop scoped to the answer lets the thinking run and ends the
/// answer; armed everywhere it ends the thinking with no answer; an end token inside the thinking ends
/// the turn with no answer (allowed, as the model chose).
#[test]
fn the_reasoning_scenarios_show_the_scope_and_the_end_inside_the_thinking() {
    use stoplab::lab::experiment::{self, run::RunOptions, run::run_scenario};
    let mut e = engine("qwen3-vocab");
    let opts = RunOptions::default();
    let by = |name: &str, e: &mut LoadedModel| {
        let sc = experiment::shipped()
            .unwrap()
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is shipped"));
        run_scenario(e, &sc, &opts, &mut |_| {}).unwrap()
    };
    let r = by("reasoning-1-blank-line-stop", &mut e);
    assert_eq!(r.answered, 1);
    assert!(
        r.results[0].text.ends_with("</think>42."),
        "{:?}",
        r.results[0].text
    );
    let r = by("reasoning-2-blank-line-stop-unscoped", &mut e);
    assert_eq!(
        (r.answered, r.results[0].finish.as_str()),
        (0, "stop_string")
    );
    assert!(
        r.results[0].text.starts_with("<think>17 + 25"),
        "{:?}",
        r.results[0].text
    );
    let r = by("reasoning-3-end-token-in-thinking", &mut e);
    assert_eq!((r.answered, r.results[0].finish.as_str()), (0, "end_token"));
    assert!(
        !r.results[0].text.contains("</think>"),
        "{:?}",
        r.results[0].text
    );
}
