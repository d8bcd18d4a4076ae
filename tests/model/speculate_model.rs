//! Prompt-lookup speculation on the real models of all three families: the tokens are the ones plain
//! decoding gives, greedy on every reference prompt (`../shared/reference/*-greedy.json`) and sampled with
//! a seed, penalties, top-k / top-p and a logit bias; on a prompt that copies its context, drafts are
//! accepted (so the one-pass verification is what is being compared), and a stop inside an accepted draft
//! ends the text where plain decoding ends it.

use std::ops::ControlFlow;

use serde_json::Value;
use stoplab::Error;
use stoplab::pipeline::generate::generate;
use stoplab::pipeline::model::{Backend, GgufLlama, Model};
use stoplab::pipeline::sampling::SamplingParams;
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::{Outcome, Sink, StepReport, TokenEvent};
use stoplab::pipeline::speculate::Speculation;
use stoplab::pipeline::stop::StopSet;
use stoplab::pipeline::tokenizer::Vocab;

use crate::common::{model_path, reference};

const FAMILIES: [(Option<&str>, &str); 3] = [
    (None, "smollm2-greedy.json"),
    (
        Some("qwen2.5-coder-0.5b-instruct"),
        "qwen25-coder-0.5b-greedy.json",
    ),
    (Some("gemma3-270m"), "gemma3-270m-greedy.json"),
];

/// A prompt an n-gram drafter does well on: a list, then the request to write it again.
const COPY: &str = "Here is a list of fruits: apple, banana, cherry, date, elderberry, fig, grape, honeydew, \
                    kiwi, lemon, mango.\nRepeat the list exactly: apple, banana,";

#[derive(Default)]
struct Steps {
    accepted: usize,
    drafted: usize,
}

impl Sink for Steps {
    fn token(&mut self, _: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        Ok(ControlFlow::Continue(()))
    }
    fn step(&mut self, r: &StepReport) -> Result<(), Error> {
        self.accepted += r.accepted;
        self.drafted += r.drafted.len();
        Ok(())
    }
}

fn open(name: Option<&str>) -> (GgufLlama, Vocab) {
    let path = model_path(name);
    let vocab = stoplab::pipeline::model::GgufFile::open(&path, None)
        .unwrap()
        .vocab;
    let model = GgufLlama::open(&path, Backend::Native).unwrap();
    (model, vocab)
}

fn both(
    model: &mut GgufLlama,
    vocab: &Vocab,
    prompt: &[u32],
    params: &GenerateParams,
) -> (Outcome, Outcome, Steps) {
    let plain = generate(model, vocab, prompt, params, &mut Steps::default()).unwrap();
    let mut p = params.clone();
    p.speculation = Some(Speculation::ngram());
    let mut steps = Steps::default();
    let spec = generate(model, vocab, prompt, &p, &mut steps).unwrap();
    (plain, spec, steps)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_ids_are_the_same_with_and_without_speculation_on_every_reference_prompt() {
    for (name, file) in FAMILIES {
        let (mut model, vocab) = open(name);
        let mut accepted = 0;
        let mut prompts: Vec<(String, Vec<u32>)> = reference::array(file)
            .iter()
            .map(|c| {
                let prompt = match c.get("prompt_ids") {
                    Some(v) => ids(v),
                    None => vocab.encode(c["prompt"].as_str().unwrap(), true).unwrap(),
                };
                (c["name"].as_str().unwrap().to_string(), prompt)
            })
            .collect();
        prompts.push(("copy".into(), vocab.encode(COPY, true).unwrap()));
        for (case, prompt) in &prompts {
            let params = GenerateParams {
                max_tokens: 48,
                ..Default::default()
            };
            let (plain, spec, steps) = both(&mut model, &vocab, prompt, &params);
            assert_eq!(spec.tokens, plain.tokens, "{name:?} {case}");
            assert_eq!(spec.text, plain.text, "{name:?} {case}");
            assert_eq!(spec.finish, plain.finish, "{name:?} {case}");
            accepted += steps.accepted;
        }
        assert!(accepted > 0, "{name:?}: no draft was ever accepted");
    }
}

#[test]
fn sampled_ids_are_the_same_for_the_same_seed_with_penalties_top_k_top_p_and_bias() {
    for (name, _) in FAMILIES {
        let (mut model, vocab) = open(name);
        let prompt = vocab.encode(COPY, true).unwrap();
        let comma = vocab.encode(",", false).unwrap()[0];
        for seed in [1, 2, 3] {
            let params = GenerateParams {
                max_tokens: 40,
                sampling: SamplingParams {
                    temperature: 0.7,
                    top_k: 40,
                    top_p: 0.95,
                    repetition_penalty: 1.05,
                    frequency_penalty: 0.1,
                    presence_penalty: 0.1,
                    logit_bias: vec![(comma, 0.5)],
                    seed,
                    ..SamplingParams::default()
                },
                ..Default::default()
            };
            let (plain, spec, _) = both(&mut model, &vocab, &prompt, &params);
            assert_eq!(spec.tokens, plain.tokens, "{name:?} seed {seed}");
            assert_eq!(spec.text, plain.text, "{name:?} seed {seed}");
        }
    }
}

#[test]
fn a_stop_inside_an_accepted_draft_ends_the_text_where_plain_decoding_does() {
    let (mut model, vocab) = open(None);
    let prompt = vocab.encode(COPY, true).unwrap();
    let greedy = GenerateParams {
        max_tokens: 40,
        ..Default::default()
    };
    let (plain, _, steps) = both(&mut model, &vocab, &prompt, &greedy);
    assert!(steps.accepted > 0, "the copy is drafted");
    // A stop in the middle of the copied list, and the length limit just past it.
    let stop = "date, elder";
    assert!(plain.text.contains(stop), "{:?}", plain.text);
    for max_tokens in [40, 12, 13, 14] {
        let params = GenerateParams {
            stops: StopSet::new([stop]).unwrap(),
            max_tokens,
            ..Default::default()
        };
        let (plain, spec, _) = both(&mut model, &vocab, &prompt, &params);
        assert_eq!(spec.text, plain.text, "max_tokens {max_tokens}");
        assert_eq!(spec.tokens, plain.tokens, "max_tokens {max_tokens}");
        assert_eq!(spec.finish, plain.finish, "max_tokens {max_tokens}");
        assert_eq!(spec.withheld, plain.withheld, "max_tokens {max_tokens}");
    }
    let _ = model.context_length();
}

#[test]
fn a_batch_feeds_each_sequence_its_draft_in_one_pass_and_gives_what_each_gives_alone() {
    for (name, file) in FAMILIES {
        let (mut model, vocab) = open(name);
        let copy = vocab.encode(COPY, true).unwrap();
        let first = reference::array(file)[0].clone();
        let other = match first.get("prompt_ids") {
            Some(v) => ids(v),
            None => vocab
                .encode(first["prompt"].as_str().unwrap(), true)
                .unwrap(),
        };
        // Long enough for the pacer's probe: in a batch a draft makes every sequence's pass longer, so it
        // drafts only where drafts have been accepted.
        let greedy = GenerateParams {
            max_tokens: 40,
            ..Default::default()
        };
        let sampled = GenerateParams {
            sampling: SamplingParams {
                temperature: 0.7,
                top_k: 40,
                repetition_penalty: 1.05,
                seed: 7,
                ..SamplingParams::default()
            },
            ..greedy.clone()
        };
        let stopped = GenerateParams {
            stops: StopSet::new(["date, elder"]).unwrap(),
            max_tokens: 13,
            ..Default::default()
        };
        // Plain, one at a time.
        let jobs = [
            (copy.clone(), greedy.clone()),
            (other.clone(), greedy),
            (copy.clone(), sampled),
            (copy.clone(), stopped),
            (other, GenerateParams::default()),
        ];
        let alone: Vec<Outcome> = jobs
            .iter()
            .map(|(p, params)| {
                generate(&mut model, &vocab, p, params, &mut Steps::default()).unwrap()
            })
            .collect();
        // Speculating, four at a time (a fifth joins when a slot frees).
        let context = copy.len().max(jobs[1].0.len()) + GenerateParams::default().max_tokens + 8;
        model.set_slots(4, context).unwrap();
        let batched = stoplab::pipeline::batch::generate_all(
            &mut model,
            &vocab,
            jobs.iter()
                .map(|(p, params)| {
                    let mut params = params.clone();
                    params.speculation = Some(Speculation::ngram());
                    (p.clone(), params, Steps::default())
                })
                .collect(),
        );
        let mut accepted = 0;
        for (i, ((steps, result), plain)) in batched.into_iter().zip(&alone).enumerate() {
            let spec = result.unwrap();
            assert_eq!(spec.tokens, plain.tokens, "{name:?} job {i}");
            assert_eq!(spec.text, plain.text, "{name:?} job {i}");
            assert_eq!(spec.finish, plain.finish, "{name:?} job {i}");
            assert_eq!(spec.withheld, plain.withheld, "{name:?} job {i}");
            accepted += steps.accepted;
        }
        assert!(accepted > 0, "{name:?}: no draft was accepted in the batch");
    }
}

#[test]
#[ignore]
fn timing_of_a_verification_pass() {
    for name in [None, Some("qwen2.5-coder-0.5b-instruct")] {
        let (mut model, vocab) = open(name);
        let prompt = vocab.encode(COPY, true).unwrap();
        let _ = model.forward(&prompt, 0).unwrap();
        let pos = prompt.len();
        for k in [1usize, 2, 3, 4, 6] {
            let toks: Vec<u32> = prompt[..k].to_vec();
            let t0 = std::time::Instant::now();
            for _ in 0..20 {
                if k == 1 {
                    let _ = model.forward(&toks, pos).unwrap();
                } else {
                    let _ = model.forward_all(0, &toks, pos).unwrap();
                }
            }
            eprintln!(
                "{name:?} rows {k}: {:.2} ms per pass",
                t0.elapsed().as_secs_f64() * 1e3 / 20.0
            );
        }
    }
}
