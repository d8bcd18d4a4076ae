//! Python clients and peers for the external tests: each in its own virtual environment under the target
//! directory, made and installed from PyPI once (later runs reuse it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The python of a virtual environment `name` in which `import {module}` works, installing `requirement`
/// with pip when it does not yet. Err (why) when python3 cannot make a virtual environment with pip, which
/// CI must be able to (it fails there); a failed install panics with pip's message.
pub fn venv(name: &str, module: &str, requirement: &str) -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let python = dir.join("bin").join("python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists() && ready(&python) {
        return Ok(python);
    }
    let why = match Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&dir)
        .output()
    {
        Err(e) => Some(format!("python3 does not run ({e})")),
        Ok(o) if !o.status.success() || !python.exists() => Some(format!(
            "python3 cannot make a virtual environment with pip (install python3-venv): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => None,
    };
    if let Some(why) = why {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to make a python3 virtual environment for {requirement}: {why}"
        );
        return Err(why);
    }
    let install = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(requirement)
        .output()
        .expect("the virtual environment's python runs");
    assert!(
        install.status.success(),
        "pip install {requirement} failed (PyPI must be reachable):\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(
        ready(&python),
        "{requirement} installed but `import {module}` fails"
    );
    Ok(python)
}
