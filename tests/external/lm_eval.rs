//! lm-evaluation-harness (PyPI `lm-eval`), unchanged, against `stoplab serve`, offline: its
//! `local-completions` model with the server's own tokenizer (`tokenizer_backend=remote`, which reads
//! `/tokenizer_info`, `/tokenize` and `/detokenize`) runs the two tiny tasks in `tests/lm_eval/`:
//! * `stoplab_choice`, multiple choice by loglikelihood (echo with logprobs, a batch of one prompt of ids):
//!   each logged loglikelihood equals the decode path's own within 1e-3, and the accuracy is far above the
//!   25 % of chance;
//! * `stoplab_until`, `generate_until`: its `until` list goes out as `stop`, so no answer runs past a
//!   newline.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use stoplab::pipeline::model::{Backend, GgufFile, GgufLlama};
use stoplab::serve::Limits;

use common::scoring::one_at_a_time;

/// The harness's version the tasks and this test were written against.
const LM_EVAL: &str = "lm-eval[api]==0.4.13";

/// The one file in `dir` whose name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .unwrap_or_else(|| panic!("lm_eval wrote no {prefix}* in {}", dir.display()))
}

/// The lines of that file, as JSON.
fn json_lines(dir: &Path, prefix: &str) -> Vec<Value> {
    std::fs::read_to_string(find(dir, prefix))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn lm_evaluation_harness_scores_both_tiny_tasks_against_the_server() {
    let python = match common::venv("lm-eval-venv", "lm_eval, tenacity", LM_EVAL) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED lm_eval: {why}");
            return;
        }
    };
    let h = common::start(true, None, Limits::default());
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lm-eval-out-{}", h.addr().port()));
    let _ = std::fs::remove_dir_all(&out);
    let tasks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lm_eval");
    let run = Command::new(&python)
        .args(["-m", "lm_eval", "--model", "local-completions"])
        .args([
            "--tasks",
            "stoplab_choice,stoplab_until",
            "--include_path",
            ".",
        ])
        .arg("--model_args")
        .arg(format!(
            "model={},base_url=http://{}/v1/completions,tokenizer_backend=remote,num_concurrent=1,\
             max_retries=1",
            h.model(),
            h.addr()
        ))
        .arg("--output_path")
        .arg(&out)
        .arg("--log_samples")
        // The tasks' data files are named relative to their folder; nothing is fetched.
        .current_dir(&tasks)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HOME", out.join("hf"))
        .output()
        .expect("the virtual environment's python runs");
    h.shutdown().unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "lm_eval failed:\n{}\n{log}",
        String::from_utf8_lossy(&run.stdout)
    );
    let results_dir = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir() && p.file_name().is_some_and(|n| n != "hf"))
        .expect("lm_eval wrote a folder per model");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(find(&results_dir, "results_")).unwrap())
            .unwrap();
    let acc = results["results"]["stoplab_choice"]["acc,none"]
        .as_f64()
        .unwrap();
    let exact = results["results"]["stoplab_until"]["exact_match,none"]
        .as_f64()
        .unwrap();
    println!("lm_eval: stoplab_choice acc {acc:.4}, stoplab_until exact_match {exact:.4}");
    assert!(
        acc >= 0.75,
        "accuracy {acc}: four choices give 0.25 by chance"
    );
    assert!(exact >= 0.5, "exact match {exact}");

    // Every loglikelihood the harness logged is the sum of the continuation's log probabilities, as the
    // decode path computes them one token at a time, within 1e-3.
    let path = common::model_path(None);
    let file = GgufFile::open(&path, None).unwrap();
    let mut model = GgufLlama::load_with(&file, Backend::Native).unwrap();
    let mut checked = 0;
    for sample in json_lines(&results_dir, "samples_stoplab_choice") {
        let args = sample["arguments"].as_object().unwrap();
        for (i, resp) in sample["resps"].as_array().unwrap().iter().enumerate() {
            let arg = &args[&format!("gen_args_{i}")];
            let context = file
                .vocab
                .encode(arg["arg_0"].as_str().unwrap(), true)
                .unwrap();
            let continuation = file
                .vocab
                .encode(arg["arg_1"].as_str().unwrap(), true)
                .unwrap();
            let ids: Vec<u32> = context.iter().chain(&continuation).copied().collect();
            let want: f64 = one_at_a_time(&mut model, &ids)[context.len() - 1..]
                .iter()
                .sum();
            let got: f64 = resp[0][0].as_str().unwrap().parse().unwrap();
            assert!(
                (want - got).abs() < 1e-3,
                "{arg}: lm_eval logged {got}, the decode path gives {want}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 12 * 4, "every choice of every question");
    // `until` was sent as `stop`: no answer holds a newline or the next question.
    for sample in json_lines(&results_dir, "samples_stoplab_until") {
        let answer = sample["resps"][0][0].as_str().unwrap();
        assert!(
            !answer.contains('\n') && !answer.contains("Question:"),
            "{answer:?} runs past the stop"
        );
    }
}
