//! The generation loop driven by the replay model over a synthetic vocabulary: every stop condition,
//! hold-back and release, and the stream always equal to the final text.

use crate::common;

use common::{END, TestVocab, stops};
use stoplab::pipeline::sampling::SamplingParams;
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::stop::FinishReason;

fn vocab() -> TestVocab {
    TestVocab::new(&[
        " Berlin",
        ".",
        "\n",
        "user",
        ":",
        " What",
        "abc###def",
        "###",
        "ü",
        "done",
    ])
}

fn streamed(events: &[common::Event]) -> String {
    events.iter().map(|e| e.text.as_str()).collect()
}

#[test]
fn end_token_ends_the_generation_and_is_not_in_the_text() {
    let v = vocab();
    let (out, events) = v.run(v.ids(&[" Berlin", "."]), &GenerateParams::default());
    assert_eq!(out.text, " Berlin.");
    assert_eq!(out.finish, FinishReason::EndToken { id: END });
    assert_eq!(
        out.tokens,
        vec![v.id(" Berlin"), v.id("."), END],
        "the end token is counted"
    );
    assert!(events.last().unwrap().end_token && events.last().unwrap().finished);
    assert_eq!(streamed(&events), out.text);
}

#[test]
fn endoftext_is_an_end_token_too_but_im_start_is_not() {
    let v = vocab();
    let out = v.outcome(
        v.ids(&["done", "<|im_start|>", "<|endoftext|>"]),
        &GenerateParams::default(),
    );
    assert_eq!(out.finish, FinishReason::EndToken { id: 0 });
    assert_eq!(out.text, "done<|im_start|>");
    assert_eq!(
        v.vocab.end_tokens().iter().copied().collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn stop_string_over_three_tokens_is_held_back_then_cut() {
    let v = vocab();
    let params = GenerateParams {
        stops: stops(&["\nuser:"]),
        ..Default::default()
    };
    let (out, events) = v.run(
        v.ids(&[" Berlin", ".", "\n", "user", ":", " What"]),
        &params,
    );
    assert_eq!(out.text, " Berlin.");
    assert_eq!(
        out.finish,
        FinishReason::StopString {
            index: 0,
            stop: "\nuser:".into(),
            offset: 8
        }
    );
    assert_eq!(
        out.tokens.len(),
        5,
        "the three stop tokens are generated and counted"
    );
    let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(
        texts,
        [" Berlin", ".", "", "", ""],
        "no byte of the stop is ever released"
    );
    let held: Vec<&[u8]> = events.iter().map(|e| e.held.as_slice()).collect();
    assert_eq!(held[..4], [&b""[..], b"", b"\n", b"\nuser"]);
}

#[test]
fn false_start_is_released_as_soon_as_it_cannot_be_a_stop() {
    let v = vocab();
    let params = GenerateParams {
        stops: stops(&["\nuser:"]),
        ..Default::default()
    };
    let (out, events) = v.run(v.ids(&["\n", "user", " What"]), &params);
    assert_eq!(out.text, "\nuser What");
    let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["", "", "\nuser What", ""]);
    assert_eq!(out.finish, FinishReason::EndToken { id: END });
}

#[test]
fn token_running_past_a_stop_is_cut_at_the_stop() {
    let v = vocab();
    let params = GenerateParams {
        stops: stops(&["###"]),
        ..Default::default()
    };
    let out = v.outcome(v.ids(&["done", "abc###def"]), &params);
    assert_eq!(out.text, "doneabc");
    assert_eq!(
        out.finish,
        FinishReason::StopString {
            index: 0,
            stop: "###".into(),
            offset: 7
        }
    );
    let keep = GenerateParams {
        include_stop: true,
        ..params
    };
    assert_eq!(
        v.outcome(v.ids(&["done", "abc###def"]), &keep).text,
        "doneabc###",
        "the overrun is dropped"
    );
}

#[test]
fn earliest_match_wins_whatever_the_list_order() {
    let v = vocab();
    let script = v.ids(&[" Berlin", ".", "\n", "user", ":"]);
    for list in [["\nuser:", "lin."], ["lin.", "\nuser:"]] {
        let out = v.outcome(
            script.clone(),
            &GenerateParams {
                stops: stops(&list),
                ..Default::default()
            },
        );
        assert_eq!(out.text, " Ber", "{list:?}");
        assert_eq!(out.finish.stop_reason(), "lin.");
    }
}

#[test]
fn stop_token_id_stops_and_its_text_is_kept_only_with_include_stop() {
    let v = vocab();
    let params = GenerateParams {
        stop_token_ids: vec![v.id(":")],
        ..Default::default()
    };
    let out = v.outcome(v.ids(&["user", ":", "done"]), &params);
    assert_eq!(
        (out.text.as_str(), &out.finish),
        ("user", &FinishReason::StopToken { id: v.id(":") })
    );
    let keep = GenerateParams {
        include_stop: true,
        ..params
    };
    assert_eq!(
        v.outcome(v.ids(&["user", ":", "done"]), &keep).text,
        "user:"
    );
}

#[test]
fn ignore_eos_runs_past_end_tokens_while_user_stops_still_work() {
    let v = vocab();
    let params = GenerateParams {
        ignore_eos: true,
        max_tokens: 4,
        ..Default::default()
    };
    let out = v.outcome(v.ids(&["done"]), &params);
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.tokens, vec![v.id("done"), END, END, END]);
    let params = GenerateParams {
        ignore_eos: true,
        stops: stops(&["im_end"]),
        ..Default::default()
    };
    let out = v.outcome(v.ids(&["done"]), &params);
    assert_eq!(out.text, "done<|");
    assert!(matches!(out.finish, FinishReason::StopString { .. }));
}

#[test]
fn min_tokens_suppresses_every_stop_before_it() {
    let v = vocab();
    let script = v.ids(&["###", "<|im_end|>", "user", "###", "done"]);
    let params = GenerateParams {
        stops: stops(&["###"]),
        stop_token_ids: vec![v.id("user")],
        min_tokens: 3,
        ..Default::default()
    };
    let out = v.outcome(script, &params);
    assert_eq!(
        out.finish,
        FinishReason::StopString {
            index: 0,
            stop: "###".into(),
            offset: 17
        }
    );
    assert_eq!(out.text, "###<|im_end|>user");
    assert_eq!(out.tokens.len(), 4);
}

#[test]
fn max_tokens_releases_everything_held() {
    let v = vocab();
    let params = GenerateParams {
        stops: stops(&["\nuser:"]),
        max_tokens: 3,
        ..Default::default()
    };
    let (out, events) = v.run(v.ids(&["done", "\n", "user", ":"]), &params);
    assert_eq!(out.finish, FinishReason::Length);
    assert_eq!(out.text, "done\nuser");
    assert_eq!(events.last().unwrap().text, "\nuser");
    assert_eq!(streamed(&events), out.text);
}

#[test]
fn utf8_character_split_across_tokens_is_never_split_in_the_stream() {
    let v = vocab();
    let u = "ü".as_bytes();
    let script = vec![v.id("done"), v.byte(u[0]), v.byte(u[1]), v.id("done")];
    let (out, events) = v.run(script, &GenerateParams::default());
    assert_eq!(out.text, "doneüdone");
    let texts: Vec<&str> = events.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["done", "", "ü", "done", ""]);
}

#[test]
fn multibyte_stop_is_matched_across_a_split_character() {
    let v = vocab();
    let u = "ü".as_bytes();
    let params = GenerateParams {
        stops: stops(&["üd"]),
        ..Default::default()
    };
    let out = v.outcome(
        vec![v.id("."), v.byte(u[0]), v.byte(u[1]), v.id("done")],
        &params,
    );
    assert_eq!(out.text, ".");
}

#[test]
fn invalid_utf8_is_replaced_identically_in_stream_and_text() {
    let v = vocab();
    let script = vec![
        v.id("done"),
        v.byte(0xE2),
        v.byte(0x82),
        v.id("."),
        v.byte(0xFF),
        v.id("done"),
    ];
    let (out, events) = v.run(script, &GenerateParams::default());
    assert_eq!(out.text, "done\u{FFFD}.\u{FFFD}done");
    assert_eq!(streamed(&events), out.text);
}

#[test]
fn context_full_is_reported_and_prompt_too_long_is_an_error() {
    let v = vocab();
    let mut model =
        stoplab::pipeline::model::Replay::new(v.ids(&["done"; 10]), END, v.vocab.len(), 4);
    let prompt = [v.byte(b'a'), v.byte(b'b')];
    let out = stoplab::pipeline::generate::generate(
        &mut model,
        &v.vocab,
        &prompt,
        &GenerateParams::default(),
        &mut stoplab::pipeline::sink::Discard,
    )
    .unwrap();
    assert_eq!(out.finish, FinishReason::ContextFull);
    assert_eq!(out.tokens.len(), 2);
    let long = [v.byte(b'a'); 4];
    let err = stoplab::pipeline::generate::generate(
        &mut model,
        &v.vocab,
        &long,
        &GenerateParams::default(),
        &mut stoplab::pipeline::sink::Discard,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("4 tokens do not fit the context of 4"),
        "{err}"
    );
}

#[test]
fn bad_settings_are_errors_naming_the_field() {
    let v = vocab();
    let mut model = stoplab::pipeline::model::Replay::new(vec![], END, v.vocab.len(), 64);
    let run = |params: GenerateParams, model: &mut stoplab::pipeline::model::Replay| {
        stoplab::pipeline::generate::generate(
            model,
            &v.vocab,
            &[5],
            &params,
            &mut stoplab::pipeline::sink::Discard,
        )
        .unwrap_err()
        .to_string()
    };
    let err = run(
        GenerateParams {
            max_tokens: 0,
            ..Default::default()
        },
        &mut model,
    );
    assert!(err.starts_with("max_tokens"), "{err}");
    let bias = SamplingParams {
        logit_bias: vec![(1_000_000, -1.0)],
        ..Default::default()
    };
    let err = run(
        GenerateParams {
            sampling: bias,
            ..Default::default()
        },
        &mut model,
    );
    assert!(
        err.starts_with("logit_bias") && err.contains("1000000"),
        "{err}"
    );
    let err = run(
        GenerateParams {
            stop_token_ids: vec![999_999],
            ..Default::default()
        },
        &mut model,
    );
    assert!(err.starts_with("stop_token_ids"), "{err}");
    let err = stoplab::pipeline::generate::generate(
        &mut model,
        &v.vocab,
        &[999_999],
        &GenerateParams::default(),
        &mut stoplab::pipeline::sink::Discard,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("unknown token id 999999"), "{err}");
}

#[test]
fn a_sink_can_cancel() {
    let v = vocab();
    let mut model =
        stoplab::pipeline::model::Replay::new(v.ids(&["done"; 10]), END, v.vocab.len(), 64);
    let mut n = 0;
    let mut sink = |_: &stoplab::pipeline::sink::TokenEvent<'_>| {
        n += 1;
        if n == 3 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    };
    let out = stoplab::pipeline::generate::generate(
        &mut model,
        &v.vocab,
        &[5],
        &GenerateParams::default(),
        &mut sink,
    )
    .unwrap();
    assert_eq!((out.finish, out.tokens.len()), (FinishReason::Cancelled, 3));
}
