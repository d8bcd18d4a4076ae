//! stoplab's own forward pass against candle's reference `quantized_llama`, on the default model.
//!
//! Both quantize activations to 8 bits before each matrix product (ggml's scheme) and the own pass keeps its
//! KV cache in f16 as llama.cpp does, so the logits are close, not equal: 8-bit activations over 30 blocks
//! move logits by a few tenths from an exact f32 computation in both implementations, partly as a shift
//! common to all logits, which softmax ignores. The stated tolerance, on the logits less their mean
//! difference: every logit within 1.5 of candle's, the mean absolute difference under 0.25, and the same
//! argmax wherever candle's top two are more than 0.5 apart (closer, either choice is right, as in the greedy
//! test against llama.cpp). Measured on these prompts when written: max 1.01, mean at most 0.17, common shift
//! up to 0.68, on logits spanning about 30.

use stoplab::pipeline::model::{Backend, GgufFile, GgufLlama, Model, Next};

const MAX_ABS: f32 = 1.5;
const MEAN_ABS: f32 = 0.25;
const TIE: f32 = 0.5;

fn logits(next: Next) -> Vec<f32> {
    match next {
        Next::Logits(l) => l,
        Next::Forced(_) => panic!("a real model gives logits"),
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0
}

#[test]
fn own_forward_pass_keeps_logits_within_tolerance_of_candles() {
    let path = crate::common::model_path(None);
    let file = GgufFile::open(&path, None).unwrap();
    let mut own = GgufLlama::load_with(&file, Backend::Native).unwrap();
    let mut reference = GgufLlama::load_with(&file, Backend::Candle).unwrap();
    assert_eq!(own.backend(), Backend::Native);
    assert_eq!(reference.backend(), Backend::Candle);

    let prompts = [
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "user: What is the capital of France?\nAI: Paris.\nuser: What is the capital of Germany?\nAI:",
        "Once upon a time",
    ];
    for prompt in prompts {
        let mut ids = file.vocab.encode(prompt, true).unwrap();
        // The prompt in one pass, then a few decode steps on the reference's greedy choice, so both the
        // prefill and the cached single-token path are compared.
        let mut pos = 0;
        for step in 0..6 {
            let feed = if step == 0 {
                &ids[..]
            } else {
                &ids[ids.len() - 1..]
            };
            let a = logits(own.forward(feed, pos).unwrap());
            let b = logits(reference.forward(feed, pos).unwrap());
            pos += feed.len();
            assert_eq!(a.len(), b.len());
            // Softmax ignores a shift common to all logits: compare the logits less their mean difference.
            let shift = a.iter().zip(&b).map(|(x, y)| x - y).sum::<f32>() / a.len() as f32;
            let diffs: Vec<f32> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y - shift).abs())
                .collect();
            let max = diffs.iter().copied().fold(0f32, f32::max);
            let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
            let what =
                format!("{prompt:?} step {step}: shift {shift}, max |diff| {max}, mean {mean}");
            assert!(max < MAX_ABS, "{what}");
            assert!(mean < MEAN_ABS, "{what}");
            let mut sorted = b.clone();
            sorted.sort_by(|x, y| y.total_cmp(x));
            if sorted[0] - sorted[1] > TIE {
                assert_eq!(argmax(&a), argmax(&b), "{what}");
            }
            ids.push(argmax(&b) as u32);
        }
    }
}

#[test]
fn own_forward_pass_supports_the_files_whole_context() {
    let path = crate::common::model_path(None);
    let file = GgufFile::open(&path, None).unwrap();
    let mut own = GgufLlama::load(&file).unwrap();
    assert_eq!(own.context_length(), 8192);
    // The last position of the context is usable; one past it is a clear error.
    let l = logits(own.forward(&[1], 8191).unwrap());
    assert!(l.iter().all(|v| v.is_finite()));
    assert!(own.forward(&[1], 8192).is_err());
}

/// Every kernel set this CPU runs (scalar, AVX2, AVX-512) gives the same logits bit for bit on the real
/// model, in prefill and decode: greedy ids do not depend on the CPU or the build's target.
#[test]
fn every_kernel_set_gives_bit_identical_logits() {
    use stoplab::pipeline::model::Isa;
    let path = crate::common::model_path(None);
    let file = GgufFile::open(&path, None).unwrap();
    let mut model = GgufLlama::load_with(&file, Backend::Native).unwrap();
    let best = model.kernels().unwrap();
    let sets: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.supported()).collect();
    eprintln!("kernel sets: {sets:?} (detected {best:?})");
    assert_eq!(sets.last(), Some(&best));
    let prompt = file.vocab.encode("Once upon a time, in a", true).unwrap();
    let mut runs = Vec::new();
    for &isa in &sets {
        model.set_kernels(isa).unwrap();
        let mut ids = prompt.clone();
        let mut all = Vec::new();
        let mut pos = 0;
        for step in 0..4 {
            let feed = if step == 0 {
                &ids[..]
            } else {
                &ids[ids.len() - 1..]
            };
            let l = logits(model.forward(feed, pos).unwrap());
            pos += feed.len();
            ids.push(argmax(&l) as u32);
            all.push(l);
        }
        runs.push((isa, ids, all));
    }
    let (_, want_ids, want) = &runs[0];
    for (isa, ids, got) in &runs[1..] {
        assert_eq!(ids, want_ids, "{isa:?} greedy ids");
        for (step, (a, b)) in got.iter().zip(want).enumerate() {
            let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{isa:?} logits differ from scalar at step {step}");
        }
    }
    // An unsupported set is refused, not run.
    for isa in Isa::ALL.into_iter().filter(|i| !i.supported()) {
        assert!(model.set_kernels(isa).is_err());
    }
}
