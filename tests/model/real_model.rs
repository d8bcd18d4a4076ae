//! The default model (SmolLM2-135M-Instruct Q4_1), checked against facts measured with llama.cpp
//! (`../shared/reference/`). The model is fetched on first use like any user's would be.

use crate::common::reference;

use std::sync::{Mutex, OnceLock};

use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::Discard;
use stoplab::pipeline::stop::FinishReason;
use stoplab::pipeline::stop::StopSet;
use stoplab::{LoadOptions, LoadedModel};

fn engine() -> std::sync::MutexGuard<'static, LoadedModel> {
    static ENGINE: OnceLock<Mutex<LoadedModel>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            Mutex::new(LoadedModel::load(&LoadOptions::default()).expect("the default model loads"))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

#[test]
fn tokenizer_gives_llama_cpp_ids_and_decodes_back() {
    let e = engine();
    let cases = reference::json("smollm2-tokenize.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 170);
    let mut wrong = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let got = e.vocab.encode(text, true).unwrap();
        if got != want {
            wrong.push(format!("{text:?}: got {got:?}, llama.cpp {want:?}"));
        }
        assert_eq!(e.vocab.decode(&want).unwrap(), text, "decoding {want:?}");
    }
    assert!(
        wrong.is_empty(),
        "{} of {} strings differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[test]
fn digits_are_split_one_by_one_and_special_tokens_parse_as_one_id() {
    let e = engine();
    assert_eq!(e.vocab.encode("12345", true).unwrap().len(), 5);
    assert_eq!(e.vocab.encode("<|im_end|>", true).unwrap(), vec![2]);
    assert!(
        e.vocab.encode("<|im_end|>", false).unwrap().len() > 1,
        "without parsing it is plain text"
    );
    assert_eq!(
        e.vocab.end_tokens().iter().copied().collect::<Vec<_>>(),
        vec![0, 2]
    );
}

#[test]
fn greedy_ids_match_llama_cpp_up_to_the_first_near_tie() {
    let mut e = engine();
    for case in reference::json("smollm2-greedy.json").as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = e
            .vocab
            .encode(case["prompt"].as_str().unwrap(), true)
            .unwrap();
        let stops: Vec<String> = serde_json::from_value(case["stop"].clone()).unwrap();
        let params = GenerateParams {
            stops: StopSet::new(stops).unwrap(),
            max_tokens: case["n_predict"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let out = e.generate(&prompt, None, &params, &mut Discard).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["tokens"].clone()).unwrap();
        match case["first_small_margin_index"].as_u64() {
            Some(tie) => {
                let n = tie as usize;
                assert_eq!(
                    out.tokens[..n],
                    want[..n],
                    "{name}: ids before the near-tie at {n}"
                );
            }
            None => {
                assert_eq!(out.tokens, want, "{name}");
                assert_eq!(out.text, case["content"].as_str().unwrap(), "{name}");
                let kind = match out.finish {
                    FinishReason::EndToken { .. } => "eos",
                    FinishReason::StopString { .. } => "word",
                    FinishReason::Length => "limit",
                    ref other => panic!("{name}: unexpected {other:?}"),
                };
                assert_eq!(kind, case["stop_type"].as_str().unwrap(), "{name}");
            }
        }
    }
}

fn germany() -> Vec<Message> {
    vec![
        Message::new("user", "What is the capital of France?"),
        Message::new("assistant", "Paris."),
        Message::new("user", "What is the capital of Germany?"),
    ]
}

#[test]
fn transcript_runs_on_without_a_stop_and_halts_with_one() {
    let mut e = engine();
    let format = PromptFormat::named("transcript").unwrap();
    let (text, prompt) = e.prompt(&format, &germany()).unwrap();
    assert!(text.ends_with("Germany?\nAI:"));
    let run_on = e.generate(
        &prompt,
        None,
        &GenerateParams {
            max_tokens: 40,
            ..Default::default()
        },
        &mut Discard,
    );
    let run_on = run_on.unwrap();
    assert_eq!(run_on.finish, FinishReason::Length);
    assert!(
        run_on.text.starts_with(" Berlin.\nuser:"),
        "{:?}",
        run_on.text
    );

    let stop = format.natural_stop().unwrap();
    let params = GenerateParams {
        stops: StopSet::new([stop.clone()]).unwrap(),
        max_tokens: 40,
        ..Default::default()
    };
    let out = e.generate(&prompt, None, &params, &mut Discard).unwrap();
    assert_eq!(out.text, " Berlin.");
    assert_eq!(
        out.finish,
        FinishReason::StopString {
            index: 0,
            stop,
            offset: 8
        }
    );
    assert_eq!(
        out.tokens[2..],
        [198, 4093, 42],
        "the stop's tokens are generated and counted"
    );
}

#[test]
fn chatml_hi_ends_on_its_own_end_token() {
    let mut e = engine();
    let (text, prompt) = e
        .prompt(&PromptFormat::Chat, &[Message::new("user", "Hi!")])
        .unwrap();
    let greedy = reference::json("smollm2-greedy.json");
    assert_eq!(
        text,
        greedy[0]["prompt"].as_str().unwrap(),
        "the model's own chat template, default system message"
    );
    let out = e
        .generate(&prompt, None, &GenerateParams::default(), &mut Discard)
        .unwrap();
    assert_eq!(out.text, "Hello! How can I assist you today?");
    assert_eq!(out.finish, FinishReason::EndToken { id: 2 });
}

#[test]
fn banning_the_end_tokens_makes_the_model_run_to_max_tokens() {
    let mut e = engine();
    let (_, prompt) = e
        .prompt(&PromptFormat::Chat, &[Message::new("user", "Hi!")])
        .unwrap();
    let mut params = GenerateParams {
        max_tokens: 30,
        ..Default::default()
    };
    params.sampling.logit_bias = vec![(0, f32::NEG_INFINITY), (2, f32::NEG_INFINITY)];
    let out = e.generate(&prompt, None, &params, &mut Discard).unwrap();
    assert_eq!(out.finish, FinishReason::Length);
    assert!(out.text.starts_with("Hello! How can I assist you today?"));
    assert!(!out.tokens.contains(&2));
}

#[test]
fn same_seed_same_tokens_when_sampling() {
    let mut e = engine();
    let (_, prompt) = e
        .prompt(
            &PromptFormat::Chat,
            &[Message::new("user", "Tell me a story.")],
        )
        .unwrap();
    let mut params = GenerateParams {
        max_tokens: 20,
        ..Default::default()
    };
    params.sampling.temperature = 1.0;
    params.sampling.top_p = 0.95;
    params.sampling.seed = 42;
    let a = e.generate(&prompt, None, &params, &mut Discard).unwrap();
    let b = e.generate(&prompt, None, &params, &mut Discard).unwrap();
    assert_eq!(a.tokens, b.tokens);
    params.sampling.seed = 43;
    let c = e.generate(&prompt, None, &params, &mut Discard).unwrap();
    assert_ne!(a.tokens, c.tokens, "another seed, another story");
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let mut e = engine();
    let prompt = e.vocab.encode(&"hello ".repeat(10000), true).unwrap();
    let err = e
        .generate(&prompt, None, &GenerateParams::default(), &mut Discard)
        .unwrap_err();
    assert!(err.is_user_input());
    assert!(
        err.to_string().contains("do not fit the context of 8192"),
        "{err}"
    );
}
