//! `stoplab fetch`: models and vocabularies into the cache (the manifest and the downloads are
//! [`stoplab::fetch`]'s).

use clap::Args;

use stoplab::fetch::{self, Manifest, Progress};

use crate::cli::output::Failure;

#[derive(Args, Debug)]
pub struct FetchArgs {
    /// Model or vocabulary names from the manifest (see --list).
    names: Vec<String>,
    /// Fetch again even if the cached file is fine.
    #[arg(long)]
    force: bool,
    /// List the models the manifest knows, with where they are cached.
    #[arg(long)]
    list: bool,
}

pub fn run(args: FetchArgs) -> Result<(), Failure> {
    if args.list {
        return show_list();
    }
    if args.names.is_empty() {
        return run_one(None, args.force);
    }
    let force = args.force;
    args.names
        .into_iter()
        .try_for_each(|n| run_one(Some(n), force))
}

fn show_list() -> Result<(), Failure> {
    let manifest = Manifest::builtin();
    {
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
                "{}{mark}\n  {}\n  licence: {}\n  {} bytes, sha256 {}\n  {state}: {}",
                m.name,
                m.description,
                m.license.as_deref().unwrap_or("not stated"),
                m.size,
                m.sha256,
                path.display()
            );
        }
        for v in &manifest.vocabs {
            let dir = fetch::vocab_dir();
            let state = if dir.join(&v.vocab.file).exists() && dir.join(&v.special.file).exists() {
                "cached"
            } else {
                "not fetched"
            };
            say!(
                "{} (vocabulary only: tokenize and --replay)\n  {}\n  licence: {}\n  {state}: {}",
                v.name,
                v.description,
                v.license,
                dir.join(&v.vocab.file).display()
            );
        }
        Ok(())
    }
}

fn run_one(name: Option<String>, force: bool) -> Result<(), Failure> {
    let manifest = Manifest::builtin();
    if let Some(v) = name.as_deref().and_then(|n| manifest.get_vocab(n)) {
        let files = fetch::fetch_vocab(v, force, Progress::Show)?;
        eprintln!("stoplab: {} is ready (sha256 verified)", v.name);
        say!("{}\n{}", files.vocab.display(), files.special.display());
        return Ok(());
    }
    let entry = match &name {
        None => manifest.default_model(),
        Some(n) => manifest.get(n).ok_or_else(|| {
            Failure::usage(format!(
                "fetch: unknown model {n:?}; `stoplab fetch --list` shows the known ones"
            ))
        })?,
    };
    let path = fetch::fetch(entry, force, Progress::Show)?;
    eprintln!("stoplab: {} is ready (sha256 verified)", entry.name);
    say!("{}", path.display());
    Ok(())
}
