//! `stoplab fetch`.

use stoplab::fetch::{self, Manifest, Progress};

use super::Failure;

pub fn run(name: Option<String>, force: bool, list: bool) -> Result<(), Failure> {
    let manifest = Manifest::builtin();
    if list {
        for m in &manifest.models {
            let path = fetch::cached_path(m);
            let mark = if m.name == manifest.default {
                " (default)"
            } else {
                ""
            };
            let state = if path.exists() {
                "cached"
            } else {
                "not fetched"
            };
            say!(
                "{}{mark}\n  {}\n  {} bytes, sha256 {}\n  {state}: {}",
                m.name,
                m.description,
                m.size,
                m.sha256,
                path.display()
            );
        }
        return Ok(());
    }
    let entry = match &name {
        None => manifest.default_model(),
        Some(n) => manifest.get(n).ok_or_else(|| Failure {
            usage: true,
            message: format!(
                "fetch: unknown model {n:?}; `stoplab fetch --list` shows the known ones"
            ),
        })?,
    };
    let path = fetch::fetch(entry, force, Progress::Show)?;
    eprintln!("stoplab: {} is ready (sha256 verified)", entry.name);
    say!("{}", path.display());
    Ok(())
}
