//! The official `openai` Python package against `stoplab serve`: the seed's recipe end to end.
//!
//! The test installs `openai` from PyPI into a virtual environment under `target/tmp/` (once; later runs
//! reuse it) and runs a script that makes completions and chat calls with `stop`, streamed and not. It is
//! skipped, with a message, only when python3 or its venv/pip are missing.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use stoplab::serve::Limits;

const SCRIPT: &str = include_str!("serve_openai.py");

fn skip(why: &str) {
    println!("SKIPPED serve_openai: {why}");
    eprintln!("SKIPPED serve_openai: {why}");
}

/// A virtual environment with `openai` installed, or None (with the reason printed) when python is missing.
fn venv_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openai-venv");
    let python = venv.join("bin").join("python");
    let has_openai = |py: &Path| {
        Command::new(py)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && has_openai(&python) {
        return Some(python);
    }
    if Command::new("python3").arg("--version").output().is_err() {
        skip("python3 is not installed");
        return None;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 runs");
    if !made.status.success() || !python.exists() {
        skip(&format!(
            "python3 cannot make a virtual environment with pip (install python3-venv): {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
        return None;
    }
    let pip = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .output()
        .expect("the venv's python runs");
    if !pip.status.success() {
        skip("pip is not available in the virtual environment");
        return None;
    }
    let install = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openai",
        ])
        .output()
        .expect("pip runs");
    assert!(
        install.status.success(),
        "pip install openai failed (PyPI must be reachable):\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(has_openai(&python), "openai installed but not importable");
    Some(python)
}

#[test]
fn the_official_openai_client_runs_the_seeds_recipe() {
    let Some(python) = venv_python() else { return };
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
