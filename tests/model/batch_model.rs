//! Continuous batching on the real models: sequences decoded together give exactly the ids each gives
//! alone (`generate`), whatever runs beside it, on the three architectures of the own pass (SmolLM2's
//! llama, Qwen2.5's qwen2, Gemma 3's gemma3 with its sliding window).
//!
//! Each case batches more jobs than the model has slots, with different lengths, so sequences finish early
//! and others join the running batch between steps. The models are found by their manifest names through
//! stoplab's fetch resolution.

use std::ops::ControlFlow;

use stoplab::pipeline::batch::{Batch, generate_all};
use stoplab::pipeline::generate::generate;
use stoplab::pipeline::model::{Backend, GgufFile, GgufLlama, Model};
use stoplab::pipeline::sampling::SamplingParams;
use stoplab::pipeline::settings::GenerateParams;
use stoplab::pipeline::sink::Outcome;
use stoplab::pipeline::sink::{Discard, TokenEvent};
use stoplab::pipeline::stop::StopSet;

fn load(name: Option<&str>) -> (GgufFile, GgufLlama) {
    let path = crate::common::model_path(name);
    let file = GgufFile::open(&path, None).unwrap();
    let model = GgufLlama::load_with(&file, Backend::Native).unwrap();
    (file, model)
}

fn params(temperature: f32, seed: u64, max_tokens: usize, stops: &[&str]) -> GenerateParams {
    GenerateParams {
        sampling: SamplingParams {
            temperature,
            top_k: 40,
            top_p: 0.95,
            seed,
            ..SamplingParams::default()
        },
        stops: StopSet::new(stops.iter().copied()).unwrap(),
        max_tokens,
        ..GenerateParams::default()
    }
}

/// Jobs of several prompts, seeds, lengths and stop settings (a greedy one first).
fn jobs(file: &GgufFile) -> Vec<(Vec<u32>, GenerateParams)> {
    let prompts = [
        "user: What is the capital of France?\nAI:",
        "Once upon a time",
        "user: Write a list of three fruits.\nAI:",
        "The number after 41 is",
        "user: Say hi.\nAI:",
        "def fibonacci(n):",
        "user: Name a colour.\nAI:",
        "In 1969,",
        "Q: Why is the sky blue?\nA:",
    ];
    let settings = [
        params(0.0, 0, 24, &[]),
        params(0.8, 1, 9, &[]),
        params(0.8, 2, 30, &["\nuser:"]),
        params(1.0, 3, 5, &["."]),
        params(0.7, 4, 20, &["\n"]),
        params(0.0, 0, 3, &[]),
        params(0.9, 7, 16, &["AI", "!"]),
        params(0.6, 11, 12, &[]),
        params(1.2, 5, 8, &[]),
    ];
    prompts
        .iter()
        .zip(settings)
        .map(|(p, s)| (file.vocab.encode(p, true).unwrap(), s))
        .collect()
}

fn same(alone: &Outcome, batched: &Outcome, what: &str) {
    assert_eq!(alone.tokens, batched.tokens, "{what}: ids");
    assert_eq!(alone.text, batched.text, "{what}: text");
    assert_eq!(alone.finish, batched.finish, "{what}: finish");
}

/// Runs `jobs` alone (one `generate` each, in slot 0 of the same model), then batched over `slots`
/// slots, and holds every batched outcome to its alone one.
fn batched_equals_alone(name: Option<&str>, slots: usize) {
    let (file, mut model) = load(name);
    assert_eq!(model.set_slots(slots, 512).unwrap(), slots);
    assert_eq!(model.slots(), slots);
    let jobs = jobs(&file);
    let alone: Vec<Outcome> = jobs
        .iter()
        .map(|(prompt, p)| generate(&mut model, &file.vocab, prompt, p, &mut Discard).unwrap())
        .collect();
    // Something was generated, and the lengths differ: sequences leave the batch at different steps.
    assert!(alone.iter().all(|o| !o.tokens.is_empty()));
    let lens: std::collections::BTreeSet<usize> = alone.iter().map(|o| o.tokens.len()).collect();
    assert!(lens.len() > 2, "{lens:?}");

    let batched = generate_all(
        &mut model,
        &file.vocab,
        jobs.iter()
            .map(|(prompt, p)| (prompt.clone(), p.clone(), Discard))
            .collect(),
    );
    for (i, (a, (_, b))) in alone.iter().zip(batched).enumerate() {
        same(a, &b.unwrap(), &format!("{name:?} job {i}"));
    }
}

#[test]
fn batched_sequences_give_the_ids_they_give_alone_on_smollm2() {
    batched_equals_alone(None, 4);
}

#[test]
fn batched_sequences_give_the_ids_they_give_alone_on_qwen2() {
    batched_equals_alone(Some("qwen2.5-coder-0.5b-instruct"), 3);
}

/// Gemma 3 (the vocabulary of its SentencePiece tokenizer is not built here, so at the model level): nine
/// sequences from token ids, two of them longer than the 512-position sliding window, decoded greedily
/// alone and then batched over nine slots (joining at different steps), give bit-identical logits at every
/// step. Nine is more than the 7 rows below which Q6_K products round as one row does, so the batched step
/// is split into passes (the kernels' 8-row form, llama.cpp's tiled one, must not reach a batched decode).
#[test]
fn batched_sequences_give_the_logits_they_give_alone_on_gemma3() {
    let path = crate::common::model_path(Some("gemma3-270m"));
    let mut model = GgufLlama::open(&path, Backend::Native).unwrap();
    let slots = 9;
    model.set_slots(slots, 700).unwrap();
    let steps = 6;
    let prompts: Vec<Vec<u32>> = (0..slots as u32)
        .map(|i| {
            let len = if i < 2 {
                515 + i as usize * 40
            } else {
                3 + i as usize * 5
            };
            std::iter::once(2)
                .chain((0..len as u32).map(|j| 200 + (i * 977 + j * 31) % 20_000))
                .collect()
        })
        .collect();
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32
    };
    let bits = |n: stoplab::pipeline::model::Next| match n {
        stoplab::pipeline::model::Next::Logits(l) => {
            l.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        }
        stoplab::pipeline::model::Next::Forced(_) => panic!("a real model's logits"),
    };
    // Alone: each sequence in slot 0, greedy, its logits at every step.
    let alone: Vec<Vec<Vec<u32>>> = prompts
        .iter()
        .map(|p| {
            let mut out = vec![bits(model.forward(p, 0).unwrap())];
            for k in 0..steps {
                let id = argmax(
                    &out[k]
                        .iter()
                        .map(|&b| f32::from_bits(b))
                        .collect::<Vec<_>>(),
                );
                out.push(bits(model.forward(&[id], p.len() + k).unwrap()));
            }
            out
        })
        .collect();
    // Batched: sequence i joins before step i / 2 (so the batch grows while others run).
    let mut got: Vec<Vec<Vec<u32>>> = vec![Vec::new(); slots];
    let mut step = 0;
    while got.iter().any(|g| g.len() < steps + 1) {
        for (i, p) in prompts.iter().enumerate() {
            if got[i].is_empty() && i / 2 <= step {
                got[i].push(bits(model.forward_in(i, p, 0).unwrap()));
            }
        }
        let running: Vec<usize> = (0..slots)
            .filter(|&i| !got[i].is_empty() && got[i].len() < steps + 1)
            .collect();
        let feed: Vec<(usize, u32, usize)> = running
            .iter()
            .map(|&i| {
                let last: Vec<f32> = got[i]
                    .last()
                    .unwrap()
                    .iter()
                    .map(|&b| f32::from_bits(b))
                    .collect();
                (i, argmax(&last), prompts[i].len() + got[i].len() - 1)
            })
            .collect();
        for (&i, next) in running.iter().zip(model.decode(&feed).unwrap()) {
            got[i].push(bits(next));
        }
        step += 1;
    }
    for (i, (a, b)) in alone.iter().zip(&got).enumerate() {
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                x == y,
                "sequence {i} (prompt of {}), step {k}: logits differ",
                prompts[i].len()
            );
        }
    }
}

/// A sequence that finishes early leaves at once and a new one joins the running batch in its slot,
/// mid-generation of the others; the cancelled one ends `Cancelled`; everyone's ids are still their own.
#[test]
fn a_sequence_that_leaves_frees_its_slot_for_one_that_joins() {
    let (file, mut model) = load(None);
    model.set_slots(2, 256).unwrap();
    let vocab = &file.vocab;
    let long = (
        vocab.encode("Once upon a time", true).unwrap(),
        params(0.0, 0, 20, &[]),
    );
    let short = (
        vocab.encode("user: Say hi.\nAI:", true).unwrap(),
        params(0.8, 9, 3, &[]),
    );
    let joiner = (
        vocab.encode("In 1969,", true).unwrap(),
        params(0.7, 4, 10, &[]),
    );
    let alone: Vec<Outcome> = [&long, &short, &joiner]
        .iter()
        .map(|(p, s)| generate(&mut model, vocab, p, s, &mut Discard).unwrap())
        .collect();
    assert_eq!(alone[1].tokens.len(), 3);

    // Sinks count their tokens; the tag says which job.
    struct Count(&'static str, usize);
    impl stoplab::pipeline::sink::Sink for Count {
        fn token(&mut self, _: &TokenEvent<'_>) -> Result<ControlFlow<()>, stoplab::Error> {
            self.1 += 1;
            Ok(ControlFlow::Continue(()))
        }
    }
    let mut batch: Batch<Count> = Batch::new(model.slots());
    assert!(
        batch
            .join(&mut model, None, vocab, &long.0, &long.1, Count("long", 0))
            .is_none()
    );
    assert!(
        batch
            .join(
                &mut model,
                None,
                vocab,
                &short.0,
                &short.1,
                Count("short", 0)
            )
            .is_none()
    );
    assert!(!batch.has_room());
    let mut done = Vec::new();
    let mut steps = 0;
    while done.is_empty() {
        done = batch.step(&mut model, vocab);
        steps += 1;
    }
    assert_eq!(
        steps, 2,
        "the short one's 3 tokens: one from its prefill, two steps"
    );
    let (sink, short_out) = done.pop().unwrap();
    assert_eq!(sink.0, "short");
    same(&alone[1], &short_out.unwrap(), "short");
    // Its slot is free at once: the joiner takes it while the long one is 3 tokens in.
    assert!(batch.has_room());
    assert!(
        batch
            .join(
                &mut model,
                None,
                vocab,
                &joiner.0,
                &joiner.1,
                Count("joiner", 0)
            )
            .is_none()
    );
    let mut finished = Vec::new();
    while !batch.is_empty() {
        finished.extend(batch.step(&mut model, vocab));
    }
    for (sink, out) in finished {
        let want = if sink.0 == "long" {
            &alone[0]
        } else {
            &alone[2]
        };
        let out = out.unwrap();
        assert_eq!(sink.1, out.tokens.len());
        same(want, &out, sink.0);
    }

    // Cancelling: a running sequence leaves at once, its slot free.
    let mut batch: Batch<Count> = Batch::new(model.slots());
    assert!(
        batch
            .join(&mut model, None, vocab, &long.0, &long.1, Count("long", 0))
            .is_none()
    );
    batch.step(&mut model, vocab);
    let gone = batch.cancel_where(|s| s.0 == "long");
    assert_eq!(gone.len(), 1);
    let out = gone.into_iter().next().unwrap().1.unwrap();
    assert_eq!(out.finish, stoplab::pipeline::stop::FinishReason::Cancelled);
    assert_eq!(out.tokens, alone[0].tokens[..2]);
    assert!(batch.is_empty() && batch.has_room());
}

/// A prompt that does not fit a slot's context is refused when the sequence joins (the slot is given
/// back), not in the middle of a batched step.
#[test]
fn a_prompt_longer_than_a_slot_is_refused_at_join() {
    let (file, mut model) = load(None);
    model.set_slots(2, 16).unwrap();
    assert_eq!(model.context_length(), 16);
    let prompt: Vec<u32> = file.vocab.encode(&"word ".repeat(40), true).unwrap();
    let mut batch: Batch<Discard> = Batch::new(model.slots());
    let (_, r) = batch
        .join(
            &mut model,
            None,
            &file.vocab,
            &prompt,
            &params(0.0, 0, 4, &[]),
            Discard,
        )
        .expect("refused at once");
    assert!(
        matches!(r, Err(stoplab::Error::PromptTooLong { context: 16, .. })),
        "{r:?}"
    );
    assert!(batch.is_empty() && batch.has_room());
    // A sequence that reaches the end of its slot ends "context full", as alone.
    let short = file.vocab.encode("Once upon a time", true).unwrap();
    let p = params(0.0, 0, 100, &[]);
    let alone = generate(&mut model, &file.vocab, &short, &p, &mut Discard).unwrap();
    let batched = generate_all(&mut model, &file.vocab, vec![(short.clone(), p, Discard)]);
    let b = batched.into_iter().next().unwrap().1.unwrap();
    same(&alone, &b, "context full");
    assert_eq!(short.len() + b.tokens.len(), 16);
}

/// Runs `jobs` through one batch of `model`'s slots; returns each job's outcome, in order, and the prompt
/// positions the batch took from the cache.
fn through_batch(
    model: &mut GgufLlama,
    vocab: &stoplab::pipeline::tokenizer::Vocab,
    jobs: &[(Vec<u32>, GenerateParams)],
) -> (Vec<Outcome>, usize) {
    struct Tag(usize);
    impl stoplab::pipeline::sink::Sink for Tag {
        fn token(&mut self, _: &TokenEvent<'_>) -> Result<ControlFlow<()>, stoplab::Error> {
            Ok(ControlFlow::Continue(()))
        }
    }
    let mut batch: Batch<Tag> = Batch::new(model.slots());
    let mut out: Vec<Option<Outcome>> = jobs.iter().map(|_| None).collect();
    let mut pending = jobs.iter().enumerate();
    loop {
        while batch.has_room() {
            let Some((i, (prompt, p))) = pending.next() else {
                break;
            };
            if let Some((tag, r)) = batch.join(model, None, vocab, prompt, p, Tag(i)) {
                out[tag.0] = Some(r.unwrap());
            }
        }
        if batch.is_empty() {
            break;
        }
        for (tag, r) in batch.step(model, vocab) {
            out[tag.0] = Some(r.unwrap());
        }
    }
    let reused = batch.reused_positions();
    (out.into_iter().map(Option::unwrap).collect(), reused)
}

/// Prompt caching: a sequence whose prompt begins as a cached one's (the same prompt with another seed,
/// the same system turn with another question) starts from a copy of those KV positions, in a free slot
/// or from a running sequence's, and still gets exactly the ids it gets alone.
#[test]
fn prompts_that_begin_alike_start_from_the_cached_positions_with_the_ids_they_give_alone() {
    let (file, mut model) = load(None);
    model.set_slots(2, 256).unwrap();
    let vocab = &file.vocab;
    let system = "system: You answer in one short sentence.\nuser: ";
    let enc = |s: &str| vocab.encode(s, true).unwrap();
    let jobs = vec![
        (
            enc(&format!("{system}What is the capital of France?\nAI:")),
            params(0.8, 1, 12, &[]),
        ),
        (
            enc(&format!("{system}What is the capital of France?\nAI:")),
            params(0.8, 2, 12, &[]),
        ),
        (
            enc(&format!("{system}Name a colour.\nAI:")),
            params(0.0, 0, 8, &["\n"]),
        ),
        (enc("Once upon a time"), params(0.7, 3, 6, &[])),
        (
            enc(&format!("{system}What is the capital of France?\nAI:")),
            params(0.0, 0, 10, &[]),
        ),
    ];
    let alone: Vec<Outcome> = jobs
        .iter()
        .map(|(prompt, p)| generate(&mut model, vocab, prompt, p, &mut Discard).unwrap())
        .collect();
    let (batched, reused) = through_batch(&mut model, vocab, &jobs);
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        same(a, b, &format!("job {i}"));
    }
    // Job 1 repeats job 0's prompt (all but its last token copied), job 2 shares the system turn, job 4
    // repeats job 0's prompt again, after job 3 (another prompt) ran in between.
    let full = jobs[0].0.len() - 1;
    let system_len = jobs[0]
        .0
        .iter()
        .zip(&jobs[2].0)
        .take_while(|(a, b)| a == b)
        .count();
    assert!(system_len > 10, "{system_len}");
    assert!(
        reused >= 2 * full + system_len,
        "{reused} positions reused, {full} per repeat and {system_len} of the system turn expected"
    );
}

/// A model with Q6_K matrices rounds a prompt's rows by how many it takes at once, so its cached positions
/// are never copied (the numbers would change): the repeated prompt is computed again, with the same ids.
#[test]
fn a_model_whose_numbers_depend_on_the_rows_at_once_copies_no_positions() {
    let (file, mut model) = load(Some("qwen2.5-coder-0.5b-instruct"));
    model.set_slots(2, 128).unwrap();
    let vocab = &file.vocab;
    let prompt = vocab
        .encode(
            "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
            true,
        )
        .unwrap();
    let jobs = vec![
        (prompt.clone(), params(0.0, 0, 4, &[])),
        (prompt, params(0.8, 5, 4, &[])),
    ];
    let alone: Vec<Outcome> = jobs
        .iter()
        .map(|(prompt, p)| generate(&mut model, vocab, prompt, p, &mut Discard).unwrap())
        .collect();
    let (batched, reused) = through_batch(&mut model, vocab, &jobs);
    assert_eq!(reused, 0);
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        same(a, b, &format!("job {i}"));
    }
}
