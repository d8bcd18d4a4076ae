//! Fine-tuning: the trainable forward's gradients, training, adapters, data errors. Tiny random models, so the
//! suite stays quick; the rendering test reads the default model's vocabulary (no weights).

use std::io::Cursor;
use std::ops::ControlFlow;

use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor, Var};
use candle_transformers::models::quantized_llama::ModelWeights;
use stoplab::finetune::adapter;
use stoplab::finetune::data::{self, Conversation};
use stoplab::finetune::model::{Base, Batch, LlamaConfig, Lora, LoraConfig};
use stoplab::finetune::train::{TrainOptions, train};
use stoplab::finetune::{Example, RenderOptions};
use stoplab::pipeline::model::adapter::{Adapter, AdapterInfo, adapted_gguf};
use stoplab::{LoadOptions, LoadedModel};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab: 40,
        dim: 16,
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 2,
        ffn: 24,
        rope_base: 10000.0,
        eps: 1e-5,
    }
}

fn examples(n: usize, len: usize, vocab: u32, seed: u64) -> Vec<Example> {
    let mut rng = stoplab::finetune::model::SplitMix::new(seed);
    (0..n)
        .map(|i| {
            let len = len - i % 3;
            // A learnable pattern: each token is the previous one plus one.
            let start = rng.below(vocab as usize) as u32;
            let tokens: Vec<u32> = (0..len as u32).map(|k| (start + k) % vocab).collect();
            let labels = (0..len).map(|k| k >= len / 2).collect();
            Example { tokens, labels }
        })
        .collect()
}

fn loss_of(base: &Base, lora: &Lora, batch: &Batch) -> f64 {
    base.loss(batch, Some(lora))
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn set_entry(var: &Var, i: usize, value: f64) {
    let shape = var.shape().clone();
    let mut v: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    v[i] = value;
    var.set(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        .unwrap();
}

fn entry(t: &Tensor, i: usize) -> f64 {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()[i]
}

#[test]
fn gradients_match_finite_differences_in_every_adapted_projection() {
    // f64 so that central differences are exact to many digits; B random so A's gradient is not zero.
    let base = Base::random(tiny(), 1, DType::F64).unwrap();
    let lora = Lora::init(
        &base,
        LoraConfig {
            rank: 2,
            alpha: 4.0,
        },
        2,
        0.3,
    )
    .unwrap();
    let ex = examples(3, 7, 40, 3);
    let refs: Vec<&Example> = ex.iter().collect();
    let batch = Batch::new(&refs, 0).unwrap();
    let loss = base.loss(&batch, Some(&lora)).unwrap();
    let grads = loss.backward().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    for (bi, b) in lora.blocks.iter().enumerate() {
        for (name, var) in [
            ("q_a", &b.q_a),
            ("q_b", &b.q_b),
            ("v_a", &b.v_a),
            ("v_b", &b.v_b),
        ] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("block {bi} {name}: no gradient at all"));
            let n = var.elem_count();
            let mut largest: f64 = 0.0;
            for i in [0, n / 3, n / 2, n - 1] {
                let x = entry(var.as_tensor(), i);
                set_entry(var, i, x + h);
                let up = loss_of(&base, &lora, &batch);
                set_entry(var, i, x - h);
                let down = loss_of(&base, &lora, &batch);
                set_entry(var, i, x);
                let numeric = (up - down) / (2.0 * h);
                let analytic = entry(g, i);
                largest = largest.max(numeric.abs());
                assert!(
                    (numeric - analytic).abs() <= 1e-6 + 1e-4 * numeric.abs(),
                    "block {bi} {name}[{i}]: analytic {analytic} vs numeric {numeric}"
                );
                checked += 1;
            }
            // A dropped gradient would make both sides zero only if the loss did not depend on the factor.
            assert!(largest > 1e-7, "block {bi} {name}: the loss does not move");
        }
    }
    assert_eq!(checked, 2 * 4 * 4);
}

#[test]
fn a_few_steps_lower_the_loss() {
    let base = Base::random(tiny(), 4, DType::F32).unwrap();
    let lora = Lora::new(
        &base,
        LoraConfig {
            rank: 4,
            alpha: 8.0,
        },
        5,
    )
    .unwrap();
    let ex = examples(8, 10, 40, 6);
    let refs: Vec<&Example> = ex.iter().collect();
    let all = Batch::new(&refs, 0).unwrap();
    let before = loss_of(&base, &lora, &all);
    let opts = TrainOptions {
        steps: 15,
        batch: 4,
        lr: 2e-2,
        seed: 7,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let summary = train(&base, &lora, &ex, 0, &opts, |r| {
        losses.push(r.loss);
        ControlFlow::Continue(())
    })
    .unwrap();
    let after = loss_of(&base, &lora, &all);
    assert_eq!(summary.steps_done, 15);
    assert!(
        after < before - 0.05,
        "loss {before} -> {after} ({losses:?})"
    );
}

#[test]
fn training_is_deterministic_for_a_seed() {
    let run = || {
        let base = Base::random(tiny(), 4, DType::F32).unwrap();
        let lora = Lora::new(
            &base,
            LoraConfig {
                rank: 2,
                alpha: 4.0,
            },
            5,
        )
        .unwrap();
        let mut losses = Vec::new();
        let opts = TrainOptions {
            steps: 3,
            batch: 2,
            seed: 9,
            ..Default::default()
        };
        train(&base, &lora, &examples(5, 8, 40, 1), 0, &opts, |r| {
            losses.push(r.loss);
            ControlFlow::Continue(())
        })
        .unwrap();
        losses
    };
    assert_eq!(run(), run());
}

#[test]
fn stopping_early_keeps_what_was_trained() {
    let base = Base::random(tiny(), 4, DType::F32).unwrap();
    let lora = Lora::new(
        &base,
        LoraConfig {
            rank: 2,
            alpha: 4.0,
        },
        5,
    )
    .unwrap();
    let opts = TrainOptions {
        steps: 10,
        batch: 2,
        ..Default::default()
    };
    let s = train(&base, &lora, &examples(4, 8, 40, 1), 0, &opts, |r| {
        if r.step == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(s.steps_done, 2);
    assert!(s.interrupted);
    let b = lora.blocks[0].q_b.as_tensor();
    assert!(
        b.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

/// The tiny base written as a GGUF the way llama.cpp lays one out (f32 tensors).
fn gguf_bytes(base: &Base) -> Vec<u8> {
    let c = &base.cfg;
    let q = |t: &Tensor| QTensor::quantize(t, GgmlDType::F32).unwrap();
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), q(&base.embed)),
        ("output_norm.weight".into(), q(&base.norm)),
    ];
    for (i, b) in base.blocks.iter().enumerate() {
        for (n, t) in [
            ("attn_norm", &b.attn_norm),
            ("attn_q", &b.wq),
            ("attn_k", &b.wk),
            ("attn_v", &b.wv),
            ("attn_output", &b.wo),
            ("ffn_norm", &b.ffn_norm),
            ("ffn_gate", &b.w_gate),
            ("ffn_up", &b.w_up),
            ("ffn_down", &b.w_down),
        ] {
            tensors.push((format!("blk.{i}.{n}.weight"), q(t)));
        }
    }
    let md: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(c.dim as u32)),
        ("llama.block_count", Value::U32(c.n_layers as u32)),
        ("llama.attention.head_count", Value::U32(c.n_heads as u32)),
        (
            "llama.attention.head_count_kv",
            Value::U32(c.n_kv_heads as u32),
        ),
        ("llama.feed_forward_length", Value::U32(c.ffn as u32)),
        (
            "llama.rope.dimension_count",
            Value::U32(c.head_dim() as u32),
        ),
        ("llama.rope.freq_base", Value::F32(c.rope_base)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(c.eps as f32),
        ),
    ];
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md_refs, &t_refs).unwrap();
    out.into_inner()
}

fn info(sha: &str) -> AdapterInfo {
    AdapterInfo {
        rank: 2,
        alpha: 4.0,
        targets: vec!["attn_q".into(), "attn_v".into()],
        base_sha256: sha.into(),
        base_file: "tiny.gguf".into(),
        settings: vec![("append_stop".into(), "######".into())],
    }
}

#[test]
fn adapter_saves_loads_and_gives_the_same_logits_on_the_quantized_loader() {
    let base = Base::random(tiny(), 8, DType::F32).unwrap();
    let lora = Lora::init(
        &base,
        LoraConfig {
            rank: 2,
            alpha: 4.0,
        },
        9,
        0.5,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    adapter::save(&path, &lora, &info("abc")).unwrap();
    let loaded = Adapter::load(&path).unwrap();
    assert_eq!(loaded.info, info("abc"));
    assert_eq!(loaded.setting("append_stop"), Some("######"));
    loaded.check_base("abc", "tiny.gguf").unwrap();

    let tokens = [3u32, 17, 5, 9, 33, 1];
    let input = Tensor::new(&tokens[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want: Vec<f32> = base
        .all_logits(&input, Some(&lora))
        .unwrap()
        .get(0)
        .unwrap()
        .get(tokens.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();

    // The same logits from the trainable forward with the adapter read back ...
    let relora = adapter::to_lora(&loaded, 2).unwrap();
    let again: Vec<f32> = base
        .all_logits(&input, Some(&relora))
        .unwrap()
        .get(0)
        .unwrap()
        .get(tokens.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(want, again);

    // ... and from candle's quantized llama, on the GGUF with the adapter merged into q and v.
    let bytes = gguf_bytes(&base);
    let mut r = Cursor::new(bytes);
    let content = Content::read(&mut r).unwrap();
    let adapted = adapted_gguf(&content, &mut r, &loaded).unwrap();
    let mut r = Cursor::new(adapted);
    let content = Content::read(&mut r).unwrap();
    let mut weights = ModelWeights::from_gguf(content, &mut r, &Device::Cpu).unwrap();
    let got: Vec<f32> = weights
        .forward(&input, 0)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-3,
        "largest logit difference {worst}: {want:?} vs {got:?}"
    );

    // Without the adapter the logits differ: the test would notice an adapter that is not applied.
    let plain: Vec<f32> = base
        .all_logits(&input, None)
        .unwrap()
        .get(0)
        .unwrap()
        .get(tokens.len() - 1)
        .unwrap()
        .to_vec1()
        .unwrap();
    let moved = want
        .iter()
        .zip(&plain)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-3, "the adapter changes nothing");
}

#[test]
fn an_adapter_for_another_model_is_refused_with_both_names() {
    let base = Base::random(tiny(), 8, DType::F32).unwrap();
    let lora = Lora::new(
        &base,
        LoraConfig {
            rank: 2,
            alpha: 4.0,
        },
        9,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.safetensors");
    adapter::save(&path, &lora, &info("abc")).unwrap();
    let err = Adapter::load(&path)
        .unwrap()
        .check_base("def", "other.gguf")
        .unwrap_err()
        .to_string();
    for part in ["tiny.gguf", "abc", "other.gguf", "def", "a.safetensors"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[test]
fn a_file_that_is_not_an_adapter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    std::fs::write(&path, b"not safetensors").unwrap();
    let err = Adapter::load(&path).unwrap_err().to_string();
    assert!(err.contains("x.safetensors"), "{err}");
}

#[test]
fn a_malformed_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.jsonl");
    std::fs::write(
        &path,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}\n\
         \n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}\n",
    )
    .unwrap();
    let err = data::read_jsonl(&path).unwrap_err().to_string();
    assert!(err.contains("train.jsonl line 3"), "{err}");
    let err = data::parse_jsonl(
        "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}",
        "d.jsonl",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("d.jsonl line 1") && err.contains("robot"),
        "{err}"
    );
}

#[test]
fn an_empty_data_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.jsonl");
    std::fs::write(&path, "\n\n").unwrap();
    let err = data::read_jsonl(&path).unwrap_err().to_string();
    assert!(
        err.contains("empty.jsonl") && err.contains("no conversations"),
        "{err}"
    );
}

const CALL: &str = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": null, "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}, {"role": "function", "name": "get_weather", "content": "{\"temp_c\": 4}"}, {"role": "assistant", "content": "4°C in Oslo."}], "functions": [{"name": "get_weather"}]}"#;

#[test]
fn function_calls_are_written_as_json_and_get_the_stop_appended() {
    let conv = Conversation::parse(CALL, "x").unwrap();
    let msgs = conv.template_messages(Some("######"));
    let texts: Vec<(&str, &str)> = msgs
        .iter()
        .map(|(m, _)| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert!(
        texts[0]
            .1
            .starts_with("Be brief.\n\nYou can call these functions")
    );
    assert!(texts[0].1.ends_with("\nget_weather()"), "{}", texts[0].1);
    assert_eq!(
        texts[2],
        (
            "assistant",
            "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}######"
        )
    );
    assert_eq!(texts[3], ("tool", "{\"temp_c\": 4}"));
    assert_eq!(texts[4], ("assistant", "4°C in Oslo.######"));
}

#[test]
fn labels_cover_assistant_tokens_and_the_end_token_unless_masked() {
    let engine = LoadedModel::load(&LoadOptions {
        tokenizer_only: true,
        ..Default::default()
    })
    .expect("the default model's vocabulary loads");
    let vocab = &engine.vocab;
    let conv = Conversation::parse(CALL, "x").unwrap();
    let opts = RenderOptions {
        append_stop: Some("######".into()),
        ..Default::default()
    };
    let ex = conv.to_example(vocab, &opts, "x").unwrap();
    // The tokens are exactly the template's rendering of the whole conversation.
    let text = vocab.decode(&ex.tokens).unwrap();
    assert!(text.starts_with("<|im_start|>system\nBe brief."), "{text}");
    assert!(text.ends_with("4°C in Oslo.######<|im_end|>\n"), "{text}");
    let labelled: Vec<u32> = ex
        .tokens
        .iter()
        .zip(&ex.labels)
        .filter(|(_, l)| **l)
        .map(|(t, _)| *t)
        .collect();
    let labelled_text = vocab.decode(&labelled).unwrap();
    assert_eq!(
        labelled_text,
        "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}######<|im_end|>4°C in Oslo.######<|im_end|>"
    );
    let masked = conv
        .to_example(
            vocab,
            &RenderOptions {
                mask_end_token: true,
                ..opts
            },
            "x",
        )
        .unwrap();
    assert_eq!(masked.tokens, ex.tokens);
    let ends = |e: &Example| {
        e.tokens
            .iter()
            .zip(&e.labels)
            .filter(|(t, l)| **l && **t == 2)
            .count()
    };
    assert_eq!((ends(&ex), ends(&masked)), (2, 0));
}

#[test]
fn answers_are_matched_as_whole_words_and_repeats_are_seen() {
    use stoplab::finetune::eval::{contains_word, repeats};
    assert!(contains_word("The capital is Paris.", "paris"));
    assert!(!contains_word("The first letter is 'E'.", "a"));
    assert!(contains_word("It is H2O", "H2O"));
    assert!(!contains_word("reimagined", "ice"));
    assert!(repeats(&[1, 2, 3, 1, 2, 3], 3));
    assert!(!repeats(&[1, 2, 3, 4, 5, 6], 3));
}

#[test]
fn the_command_names_the_bad_line_and_exits_with_usage_status() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n{\"messages\": [\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["finetune", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("a.safetensors"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bad.jsonl line 2"), "{err}");
    assert!(!dir.path().join("a.safetensors").exists());
}
