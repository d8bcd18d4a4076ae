//! The official `openai` Python package against `stoplab serve`: the seed's recipe end to end.
//!
//! The test installs `openai` from PyPI into a virtual environment under `target/tmp/` (once; later runs
//! reuse it) and runs a script that makes completions and chat calls with `stop`, streamed and not. It is
//! skipped, with a message, only when python3 or its venv/pip are missing.

use crate::common;

use std::process::Command;

use stoplab::serve::Limits;

const SCRIPT: &str = include_str!("serve_openai.py");

#[test]
fn the_official_openai_client_runs_the_seeds_recipe() {
    let python = match common::venv("openai-venv", "openai", "openai") {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED serve_openai: {why}");
            return;
        }
    };
    let key = "stoplab-test-key";
    let h = common::start(true, Some(key), Limits::default());
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(format!("http://{}/v1", h.addr()))
        .arg(key)
        .arg(h.model())
        .output()
        .expect("the venv's python runs");
    h.shutdown().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the openai script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}
