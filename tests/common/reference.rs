//! Where the facts measured with llama.cpp live: `../shared/reference/` beside the repository (as CI checks
//! it out), or the folder `STOPLAB_REFERENCE` names (a worktree or a copy elsewhere).

use std::path::{Path, PathBuf};

/// The path of reference file `name`; panics naming the folder and the variable that would fix it when the
/// file cannot be found.
pub fn path(name: &str) -> PathBuf {
    let dir = std::env::var_os("STOPLAB_REFERENCE").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference"),
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "the reference file {} is missing: check out ../shared beside the repository, or set \
         STOPLAB_REFERENCE to the folder that holds it",
        path.display()
    );
    path
}

/// Reference file `name`, parsed as JSON.
pub fn json(name: &str) -> serde_json::Value {
    let path = path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Reference file `name`, a JSON array.
pub fn array(name: &str) -> Vec<serde_json::Value> {
    json(name)
        .as_array()
        .unwrap_or_else(|| panic!("{name}: not a JSON array"))
        .clone()
}
