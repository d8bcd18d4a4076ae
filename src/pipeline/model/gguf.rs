//! The GGUF backend: stoplab's own forward pass ([`super::llama`], for the llama, qwen2 and gemma3
//! architectures) where it supports the file; candle's quantized llama or qwen2 otherwise (and as the
//! reference the tests hold the own pass to). candle's gemma3 is never used: it computes another function.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use candle_transformers::models::quantized_qwen2;

use super::llama::{self, Arch, Isa, Kernels, Llama};
use super::{Model, Next};
use crate::Error;
use crate::pipeline::tokenizer::Vocab;

/// A GGUF file opened and its header read: metadata, tensor index and vocabulary, no weights yet.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub vocab: Vocab,
}

impl GgufFile {
    /// Reads the header of a GGUF file. Errors name the file and say what is wrong with it.
    pub fn open(path: &Path, tokenizer_json: Option<&Path>) -> Result<Self, Error> {
        let mut content = read_header(path)?;
        let vocab = Vocab::from_gguf(&content, path, tokenizer_json)?;
        // The vocabulary holds what these ~100k strings said; keeping them too cost peak RSS.
        for key in [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.token_type",
        ] {
            content.metadata.remove(key);
        }
        release_free_heap();
        Ok(Self {
            path: path.to_path_buf(),
            content,
            vocab,
        })
    }

    /// A string metadata value, for reports.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }
}

/// Reads and checks the header of a GGUF file: every length bounded by the file before candle's reader
/// allocates by it, every tensor inside the file. Errors name the file and say what is wrong with it.
fn read_header(path: &Path) -> Result<Content, Error> {
    let bad = |message: String| Error::Model {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(|e| {
        bad(match e.kind() {
            std::io::ErrorKind::NotFound => {
                "no such file; check the path, or run `stoplab fetch`".into()
            }
            _ => format!("cannot open: {e}"),
        })
    })?;
    let mut magic = [0u8; 4];
    let n = file
        .read(&mut magic)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if n < 4 || &magic != b"GGUF" {
        return Err(bad(
            "not a GGUF file (it does not start with the GGUF magic bytes)".into(),
        ));
    }
    // Every length in the header checked against the file before candle allocates by it.
    let len = file
        .metadata()
        .map_err(|e| bad(format!("cannot read: {e}")))?
        .len();
    file.rewind().map_err(|e| bad(e.to_string()))?;
    super::layout::check(BufReader::new(&mut file), len)
        .map_err(|e| bad(format!("the GGUF header is corrupt or truncated: {e}")))?;
    file.rewind().map_err(|e| bad(e.to_string()))?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| {
        bad(format!(
            "the GGUF header is corrupt or truncated: {}",
            candle_message(&e)
        ))
    })?;
    check_complete(&content, &mut reader).map_err(bad)?;
    Ok(content)
}

/// Hands freed heap pages back to the kernel. Building the vocabulary leaves tens of MB of small freed
/// allocations that the allocator would otherwise keep resident, and peak RSS is a figure we hold to
/// llama.cpp's.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only returns free memory to the kernel; it is safe to call any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// candle's message without the backtrace it attaches when RUST_BACKTRACE is set.
pub(crate) fn candle_message(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => candle_message(inner),
        candle_core::Error::Context { inner, context } => {
            format!("{context}: {}", candle_message(inner))
        }
        other => other.to_string(),
    }
}

/// Checks that every tensor the header lists lies inside the file, with checked arithmetic, and that no
/// two overlap (a type or offset changed in the header makes them). A truncated download is the commonest
/// broken model: say so before a backend fails on a tensor read.
fn check_complete<R: Seek>(content: &Content, reader: &mut R) -> Result<(), String> {
    let file_size = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|e| e.to_string())?;
    let corrupt =
        |name: &str, what: String| format!("tensor {name}: {what}; the GGUF header is corrupt");
    let mut spans = Vec::with_capacity(content.tensor_infos.len());
    for (name, t) in &content.tensor_infos {
        let (block, bytes) = (t.ggml_dtype.block_size(), t.ggml_dtype.type_size());
        let elems = t.shape.elem_count();
        if !elems.is_multiple_of(block) {
            return Err(corrupt(
                name,
                format!(
                    "{elems} values do not fill whole {:?} blocks of {block}",
                    t.ggml_dtype
                ),
            ));
        }
        let span = (elems / block)
            .checked_mul(bytes)
            .and_then(|b| u64::try_from(b).ok())
            .and_then(|b| {
                let start = content.tensor_data_offset.checked_add(t.offset)?;
                Some((start, start.checked_add(b)?))
            });
        let Some((start, end)) = span else {
            return Err(corrupt(
                name,
                format!("its offset {} and size overflow", t.offset),
            ));
        };
        spans.push((start, end, name));
    }
    spans.sort();
    // A truncated download cuts the file inside (or at the start of) the first tensor it lacks; a tensor
    // that starts beyond the end of a file that holds the others has a corrupt offset.
    if let Some(&(start, _, name)) = spans.iter().find(|s| s.1 > file_size) {
        let needed = spans.iter().map(|s| s.1).max().unwrap_or(0);
        if start > file_size {
            return Err(corrupt(
                name,
                format!(
                    "its data would start at byte {start}, past the end of the file ({file_size} bytes)"
                ),
            ));
        }
        return Err(format!(
            "the file is truncated: it has {file_size} bytes but its tensors need {needed} (tensor {name} \
             is cut). Download it again (for the default model: `stoplab fetch --force`)"
        ));
    }
    for pair in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(format!(
                "tensors {a} and {b} overlap in the file (bytes {start}..{end}); the GGUF header's \
                 tensor types, shapes or offsets are corrupt"
            ));
        }
    }
    Ok(())
}

/// Which forward pass runs a GGUF model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// stoplab's own (memory-mapped weights, in-place f16 KV cache); for llama and qwen2 files it does not
    /// support (other tensor types, mixtures of experts, rope scaling) it falls back to candle's, and for
    /// gemma3 files it refuses them.
    #[default]
    Native,
    /// candle-transformers' `quantized_llama` and `quantized_qwen2`: the reference. Not for gemma3:
    /// candle 0.11.1's `quantized_gemma3` gates the feed-forward with SiLU where Gemma 3 uses GELU (candle
    /// #3745) and its sliding window sees one position more than llama.cpp's.
    Candle,
}

impl Backend {
    /// The backend `STOPLAB_BACKEND` asks for (`native`, the default, or `candle`, for comparisons): the
    /// one place that reads it.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("STOPLAB_BACKEND") {
            Err(std::env::VarError::NotPresent) => Ok(Self::Native),
            Ok(v) if v.is_empty() || v == "native" => Ok(Self::Native),
            Ok(v) if v == "candle" => Ok(Self::Candle),
            Ok(v) => Err(Error::Backend(format!(
                "STOPLAB_BACKEND={v:?} is not a backend: use native (the default) or candle"
            ))),
            Err(e) => Err(Error::Backend(format!("STOPLAB_BACKEND: {e}"))),
        }
    }
}

// One value per loaded model: the size of the candle variant does not matter.
#[allow(clippy::large_enum_variant)]
enum Weights {
    Native(Box<Llama>),
    Candle {
        weights: CandleWeights,
        device: Device,
    },
}

enum CandleWeights {
    Llama(ModelWeights),
    Qwen2(quantized_qwen2::ModelWeights),
}

/// A GGUF model of one of the architectures in [`llama::Arch`] (llama, qwen2, gemma3) on the CPU.
pub struct GgufLlama {
    weights: Weights,
    path: PathBuf,
    vocab_size: usize,
    context: usize,
    name: String,
}

/// The context a backend gives a file: the declared one, capped at candle's rope table for candle's
/// llama.
pub(crate) fn context_for(content: &Content) -> usize {
    let arch = content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .and_then(|a| Arch::from_name(a))
        .unwrap_or(Arch::Llama);
    let declared = content
        .metadata
        .get(&format!("{}.context_length", arch.name()))
        .and_then(|v| v.to_u32().ok())
        .map_or(MAX_SEQ_LEN, |c| c as usize);
    if llama::unsupported(content).is_none() || arch != Arch::Llama {
        declared
    } else {
        // candle's rope table stops at MAX_SEQ_LEN positions.
        declared.min(MAX_SEQ_LEN)
    }
}

impl GgufLlama {
    /// Loads the weights of an opened GGUF file with the backend `STOPLAB_BACKEND` names (see
    /// [`Backend::from_env`]; by default the fastest that supports the file).
    pub fn load(file: &GgufFile) -> Result<Self, Error> {
        Self::load_with(file, Backend::from_env()?)
    }

    /// Loads the weights with the given backend ([`Backend::Native`] falls back to candle's when needed).
    pub fn load_with(file: &GgufFile, backend: Backend) -> Result<Self, Error> {
        let f = File::open(&file.path).map_err(|e| Error::Model {
            path: file.path.clone(),
            message: e.to_string(),
        })?;
        Self::load_file(
            &file.path,
            &file.content,
            Some(&file.vocab),
            f,
            None,
            backend,
        )
    }

    /// Loads a model file's weights without building its vocabulary (for callers that feed token ids,
    /// such as the tests that hold a model to llama.cpp's ids): the header is read and checked as by
    /// [`GgufFile::open`], and the model's ids are the rows of its embedding.
    pub fn open(path: &Path, backend: Backend) -> Result<Self, Error> {
        let content = read_header(path)?;
        let f = File::open(path).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::load_file(path, &content, None, f, None, backend)
    }

    /// Loads the weights of `file`'s model from another GGUF image of it, `weights`: the same model with some
    /// tensors replaced (an adapter applied). It is written to an unnamed temporary file so that the native
    /// backend can map it like any model file.
    pub fn load_from(file: &GgufFile, weights: &[u8], backend: Backend) -> Result<Self, Error> {
        let bad = |message: String| Error::Model {
            path: file.path.clone(),
            message,
        };
        let mut tmp = tempfile::tempfile()
            .map_err(|e| bad(format!("cannot create a temporary file: {e}")))?;
        std::io::Write::write_all(&mut tmp, weights)
            .map_err(|e| bad(format!("cannot write the adapted model: {e}")))?;
        tmp.rewind().map_err(|e| bad(e.to_string()))?;
        let content =
            Content::read(&mut BufReader::new(&tmp)).map_err(|e| bad(candle_message(&e)))?;
        Self::load_file(
            &file.path,
            &file.content,
            Some(&file.vocab),
            tmp,
            Some(&content),
            backend,
        )
    }

    /// Loads from an open GGUF file `f` whose header is `content` (None: `header`, the header of the file
    /// at `path`). `vocab`, where there is one, must fit the embedding.
    fn load_file(
        path: &Path,
        header: &Content,
        vocab: Option<&Vocab>,
        f: File,
        content: Option<&Content>,
        backend: Backend,
    ) -> Result<Self, Error> {
        let bad = |message: String| Error::Model {
            path: path.to_path_buf(),
            message,
        };
        let arch_name = header
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map_or("", |s| s.as_str());
        let Some(arch) = Arch::from_name(arch_name) else {
            return Err(bad(format!(
                "architecture {arch_name:?} (general.architecture) is not supported; stoplab runs {} \
                 GGUF models",
                Arch::ALL.map(|a| a.name()).join(", ")
            )));
        };
        let name = path
            .file_name()
            .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
        let content = content.unwrap_or(header);
        llama::check_header(content).map_err(bad)?;
        let why_not = llama::unsupported(content);
        let native = match (backend, &why_not, arch) {
            (Backend::Native, None, _) => true,
            (Backend::Candle, _, Arch::Gemma3) => {
                return Err(Error::Backend(format!(
                    "{}: candle's backend cannot run gemma3 models: candle-transformers 0.11.1's \
                     quantized_gemma3 gates the feed-forward with SiLU where Gemma 3 uses GELU (candle \
                     #3745), so its output would be wrong. Unset STOPLAB_BACKEND to use stoplab's own \
                     forward pass",
                    path.display()
                )));
            }
            (Backend::Native, Some(why), Arch::Gemma3) => {
                return Err(bad(format!(
                    "stoplab's own forward pass cannot run this gemma3 file ({why}), and candle's \
                     gemma3 is not used (it computes Gemma 3's feed-forward with SiLU instead of GELU)"
                )));
            }
            _ => false,
        };
        let weights = if native {
            let model = Llama::load(&f, content).map_err(bad)?;
            Weights::Native(Box::new(model))
        } else {
            let device = Device::Cpu;
            let mut reader = BufReader::new(f);
            reader.rewind().map_err(|e| bad(e.to_string()))?;
            // `from_gguf` consumes the header; re-read it rather than clone a 49k-entry metadata table.
            let content = Content::read(&mut reader).map_err(|e| bad(candle_message(&e)))?;
            let loaded = match arch {
                Arch::Qwen2 => {
                    quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &device)
                        .map(CandleWeights::Qwen2)
                }
                _ => {
                    ModelWeights::from_gguf(content, &mut reader, &device).map(CandleWeights::Llama)
                }
            };
            let weights = loaded
                .map_err(|e| bad(format!("cannot load the weights: {}", candle_message(&e))))?;
            Weights::Candle { weights, device }
        };
        let (context, rows) = match &weights {
            Weights::Native(m) => (m.config().context, m.config().vocab),
            Weights::Candle { .. } => (
                context_for(header).min(if arch == Arch::Llama {
                    MAX_SEQ_LEN
                } else {
                    usize::MAX
                }),
                content
                    .tensor_infos
                    .get("token_embd.weight")
                    .and_then(|t| t.shape.dims().first().copied())
                    .unwrap_or(0),
            ),
        };
        // Every id the tokenizer can produce needs an embedding (a model may pad its table beyond).
        let vocab_size = match vocab {
            Some(v) if v.len() > rows => {
                return Err(bad(format!(
                    "the tokenizer has {} tokens but tensor token_embd.weight has rows for {rows}: the \
                     tokenizer is not this model's (or the file is corrupt)",
                    v.len()
                )));
            }
            Some(v) => v.len(),
            None => rows,
        };
        Ok(Self {
            weights,
            path: path.to_path_buf(),
            vocab_size,
            context,
            name,
        })
    }

    /// The kernel set of the own forward pass (None on candle's).
    pub fn kernels(&self) -> Option<Isa> {
        match &self.weights {
            Weights::Native(m) => Some(m.kernels().isa()),
            Weights::Candle { .. } => None,
        }
    }

    /// Runs the own forward pass on another kernel set (every set gives the same results; for tests and
    /// benchmarks). An error if this CPU lacks it, or on candle's backend.
    pub fn set_kernels(&mut self, isa: Isa) -> Result<(), String> {
        let kernels =
            Kernels::new(isa).ok_or_else(|| format!("this CPU cannot run the {isa} kernels"))?;
        match &mut self.weights {
            Weights::Native(m) => {
                m.set_kernels(kernels);
                Ok(())
            }
            Weights::Candle { .. } => Err("candle's backend has no kernel sets to choose".into()),
        }
    }

    /// The backend that actually runs.
    pub fn backend(&self) -> Backend {
        match self.weights {
            Weights::Native(_) => Backend::Native,
            Weights::Candle { .. } => Backend::Candle,
        }
    }
}

impl GgufLlama {
    /// Gives the model `slots` KV slots of `context` positions each (capped at the file's context), so
    /// that many sequences can be decoded together ([`Model::decode`]); returns the slots it has. Candle's
    /// backend keeps one sequence: it stays at one slot (its sequences run one at a time).
    /// [`Model::context_length`] is then a slot's context.
    pub fn set_slots(&mut self, slots: usize, context: usize) -> Result<usize, Error> {
        match &mut self.weights {
            Weights::Native(m) => {
                m.set_slots(slots, context)
                    .map_err(|message| Error::Model {
                        path: self.path.clone(),
                        message,
                    })?;
                self.context = m.slot_context();
                Ok(m.slots())
            }
            Weights::Candle { .. } => Ok(1),
        }
    }

    /// Fails on a logit that is not finite: a corrupt weight (a NaN or infinite scale) spreads to the
    /// logits, and the sampler would read them as banned tokens.
    fn check_logits(&self, logits: &[f32], pos: usize) -> Result<(), Error> {
        match non_finite(logits) {
            Some((id, v)) => Err(self.corrupt(id, v, pos)),
            None => Ok(()),
        }
    }

    /// The error of a logit `v` of token `id` at position `pos` that is not finite.
    fn corrupt(&self, id: usize, v: f32, pos: usize) -> Error {
        Error::Model {
            path: self.path.clone(),
            message: format!(
                "the model computed a logit of {v} (token {id}) at position {pos}: its weights are \
                 corrupt, or the {:?} backend cannot run them",
                self.backend()
            ),
        }
    }
}

/// The first logit that is not finite, with its token.
fn non_finite(logits: &[f32]) -> Option<(usize, f32)> {
    logits
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
        .map(|(id, &v)| (id, v))
}

impl Model for GgufLlama {
    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn context_length(&self) -> usize {
        self.context
    }

    fn forward(&mut self, tokens: &[u32], pos: usize) -> Result<Next, Error> {
        self.forward_in(0, tokens, pos)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn slots(&self) -> usize {
        match &self.weights {
            Weights::Native(m) => m.slots(),
            Weights::Candle { .. } => 1,
        }
    }

    fn forward_in(&mut self, slot: usize, tokens: &[u32], pos: usize) -> Result<Next, Error> {
        if tokens.is_empty() {
            return Err(Error::Invalid {
                field: "prompt".into(),
                message: "nothing to feed the model".into(),
            });
        }
        if pos + tokens.len() > self.context {
            return Err(Error::ContextFull {
                needed: pos + tokens.len(),
                context: self.context,
            });
        }
        let logits = match &mut self.weights {
            Weights::Native(m) => m
                .forward_in(slot, tokens, pos)
                .map_err(|message| Error::Model {
                    path: self.path.clone(),
                    message,
                })?
                .to_vec(),
            Weights::Candle { weights, device } => {
                if slot != 0 {
                    return Err(Error::Backend(format!(
                        "candle's backend holds one sequence (slot 0), not slot {slot}"
                    )));
                }
                let mut run = || -> candle_core::Result<Vec<f32>> {
                    let input = Tensor::new(tokens, device)?.unsqueeze(0)?;
                    let logits = match weights {
                        CandleWeights::Llama(w) => w.forward(&input, pos)?,
                        CandleWeights::Qwen2(w) => w.forward(&input, pos)?,
                    };
                    logits
                        .squeeze(0)?
                        .to_dtype(candle_core::DType::F32)?
                        .to_vec1::<f32>()
                };
                run().map_err(|e| Error::Backend(candle_message(&e)))?
            }
        };
        self.check_logits(&logits, pos + tokens.len() - 1)?;
        Ok(Next::Logits(logits))
    }

    fn forward_each(
        &mut self,
        slot: usize,
        tokens: &[u32],
        pos: usize,
        each: &mut dyn FnMut(&[f32]),
    ) -> Result<(), Error> {
        let Weights::Native(m) = &mut self.weights else {
            // Candle's forward gives the last position's logits only: one token at a time.
            for (i, &t) in tokens.iter().enumerate() {
                if let Next::Logits(logits) = self.forward_in(slot, &[t], pos + i)? {
                    each(&logits);
                }
            }
            return Ok(());
        };
        if pos + tokens.len() > self.context {
            return Err(Error::ContextFull {
                needed: pos + tokens.len(),
                context: self.context,
            });
        }
        let mut bad = None;
        let mut at = pos;
        m.forward_rows(slot, tokens, pos, &mut |logits| {
            if bad.is_none() {
                match non_finite(logits) {
                    Some((id, v)) => bad = Some((id, v, at)),
                    None => each(logits),
                }
            }
            at += 1;
        })
        .map_err(|message| Error::Model {
            path: self.path.clone(),
            message,
        })?;
        match bad {
            Some((id, v, at)) => Err(self.corrupt(id, v, at)),
            None => Ok(()),
        }
    }

    fn forward_all(&mut self, slot: usize, tokens: &[u32], pos: usize) -> Result<Vec<Next>, Error> {
        let mut rows = Vec::with_capacity(tokens.len());
        self.forward_each(slot, tokens, pos, &mut |logits| {
            rows.push(Next::Logits(logits.to_vec()))
        })?;
        Ok(rows)
    }

    fn copy_prefix(&mut self, from: usize, to: usize, n: usize) -> Result<bool, Error> {
        match &mut self.weights {
            Weights::Native(m) => m.copy_prefix(from, to, n).map_err(|message| Error::Model {
                path: self.path.clone(),
                message,
            }),
            Weights::Candle { .. } => Ok(false),
        }
    }

    fn decode_rows(&mut self, steps: &[(usize, &[u32], usize)]) -> Result<Vec<Vec<Next>>, Error> {
        let Weights::Native(m) = &mut self.weights else {
            return steps
                .iter()
                .map(|&(slot, tokens, pos)| self.forward_all(slot, tokens, pos))
                .collect();
        };
        if let Some(&(_, t, pos)) = steps.iter().find(|s| s.2 + s.1.len() > self.context) {
            return Err(Error::ContextFull {
                needed: pos + t.len(),
                context: self.context,
            });
        }
        let vocab = m.config().vocab;
        let all = m.decode_rows(steps).map_err(|message| Error::Model {
            path: self.path.clone(),
            message,
        })?;
        let mut rows = all.chunks_exact(vocab);
        let mut out = Vec::with_capacity(steps.len());
        for &(_, tokens, pos) in steps {
            let mut proposals = Vec::with_capacity(tokens.len());
            for i in 0..tokens.len() {
                let logits = rows.next().ok_or_else(|| {
                    Error::Backend("the model gave fewer rows than it was fed".into())
                })?;
                self.check_logits(logits, pos + i)?;
                proposals.push(Next::Logits(logits.to_vec()));
            }
            out.push(proposals);
        }
        Ok(out)
    }

    fn decode(&mut self, steps: &[(usize, u32, usize)]) -> Result<Vec<Next>, Error> {
        let Weights::Native(m) = &mut self.weights else {
            return steps
                .iter()
                .map(|&(slot, t, pos)| self.forward_in(slot, &[t], pos))
                .collect();
        };
        if let Some(&(_, _, pos)) = steps.iter().find(|s| s.2 >= self.context) {
            return Err(Error::ContextFull {
                needed: pos + 1,
                context: self.context,
            });
        }
        let vocab = m.config().vocab;
        let all = m.decode(steps).map_err(|message| Error::Model {
            path: self.path.clone(),
            message,
        })?;
        let mut out = Vec::with_capacity(steps.len());
        for (logits, &(_, _, pos)) in all.chunks_exact(vocab).zip(steps) {
            self.check_logits(logits, pos)?;
            out.push(Next::Logits(logits.to_vec()));
        }
        Ok(out)
    }
}
