//! `stoplab serve`: an OpenAI-compatible local API with exact stop semantics.
//!
//! The contract:
//!
//! * `POST /v1/completions` (`prompt`) and `POST /v1/chat/completions` (`messages`, rendered with the model's
//!   chat template) answer in OpenAI's shapes, plus vLLM's `stop_reason` on each choice: the matched stop
//!   string, the id of the token that stopped it, or null when it ran to length.
//! * With `"stream": true` the text goes out as server-sent events (`data: {chunk}` … `data: [DONE]`). A
//!   chunk carries exactly the text the generation loop released: no byte of a stop string that ends the
//!   output, no half of a UTF-8 character. The concatenated deltas equal the non-streamed text for the same
//!   request and seed.
//! * Every request is checked before it queues ([`openai::generation`], ending with [`request::Fitted`]); a
//!   bad one is a 400 naming the field in OpenAI's error body, never a 500.
//! * Up to `--parallel` generations run at once, decoded together (continuous batching, [`worker`]); others
//!   wait in a bounded FIFO queue, 429 with `Retry-After` when it is full. A client that goes away ends its
//!   generation within one token. A generation's text does not depend on what runs beside it.
//! * Defaults follow OpenAI's API (temperature 1, 16 tokens for completions, chat until the model stops)
//!   except the seed, 0 unless given, so a repeated request gives the same text.
//!
//! * Request fields: OpenAI's (`model`, `prompt` / `messages`, `max_tokens` / `max_completion_tokens`,
//!   `temperature`, `top_p`, `seed`, `stop`, `logit_bias` with -100 banning, `frequency_penalty`,
//!   `presence_penalty`, `stream`, `stream_options.include_usage` (only with `stream`), `n`, completions'
//!   `echo` and `logprobs` (0..20 alternatives; with `echo` the prompt's tokens are scored too, and
//!   `max_tokens: 0` scores the prompt alone), vLLM's `prompt_logprobs`, chat's `logprobs` / `top_logprobs` (0..20), `tools`,
//!   `tool_choice` (`auto` / `none`), `parallel_tool_calls`), vLLM's and llama.cpp's (`top_k`, `min_p`,
//!   `repetition_penalty`, `stop_token_ids`, `include_stop_str_in_output`, `skip_special_tokens` (`false`
//!   with `include_stop_str_in_output` keeps the end token's name), `ignore_eos`, `min_tokens`, chat's
//!   `add_generation_prompt` and `continue_final_message`), and stoplab's `replay`: text or token ids the
//!   replay model writes instead of sampling, so any stop scenario can be staged over HTTP, `end_tokens`
//!   (`{"replace": [ids], "add": [ids], "remove": [ids]}`: which end tokens count, as `--end-token`,
//!   `--add-end-token` and `--no-end-token`) and `repetition_stop`. A known field of the wrong type is a 400.
//!   A text prompt gets the model's BOS when its file asks for one (Gemma), as llama.cpp's does.
//! * A field the server does not implement is a 400 naming it (`code: "unsupported_parameter"`), never
//!   silently ignored: `suffix`, `best_of` > 1, `functions`, `response_format` other than text, `audio`,
//!   `prediction`, `tool_choice` `required` or a named function, grammars and guided decoding, ... (see
//!   [`openai::unsupported`]). Fields that change nothing here are ignored: `user`, `metadata`, `store`,
//!   `service_tier`, `add_special_tokens`, other unknown fields.
//! * `n` choices run one after another; choice `i` is seeded `seed + i`, as vLLM seeds the copies of a request
//!   (choice 0 is what `n` = 1 gives). Streamed, each chunk names its choice by `index`.
//! * The ledger (the stop engine's, [`StopEngine`](crate::pipeline::stop::StopEngine)): a chunk carries the
//!   whole tokens and exactly their text (the engine's `spelled`), so its ids spell its text, and the last
//!   chunk the token that a stop cut in the middle (with its kept bytes) and the token that ended the
//!   generation by its id (the end token, a stop token id), which spells nothing; the tokens that only
//!   spelled a cut stop are withheld: counted in `usage`,
//!   listed in `withheld_token_ids` with `return_token_ids` (vLLM's field, which also adds `token_ids` to
//!   every choice and chunk), never in `logprobs`.
//! * `logprobs` are the model's raw-logit softmax (before temperature, penalties and bias: the distribution
//!   `stoplab trace` shows as `p` and `p_end`), one entry per carried token, with the chunk that carries it;
//!   a replayed token has log probability 0 (the replay writes it with certainty).
//! * Function calls: with `tools`, the model's own template renders them (a template without a tools branch,
//!   SmolLM2's, is a 400 naming `tools`), and a reply that is a call (Qwen2.5 writes a bare JSON object; the
//!   template asks for `<tool_call>` tags; both are read) is returned as `message.tool_calls` with
//!   finish_reason `tool_calls`. Streamed, text that may be a call is held until the end, then sent as one
//!   `tool_calls` delta per reply (or as text).
//! * A prompt (or prompt plus `max_tokens`) beyond the context is a 400 with `code: "context_length_exceeded"`
//!   (the playground's trace route makes the same check and gives the same answer).
//! * Messages: a role must be `system`, `user`, `assistant` or `tool` (`developer` is read as `system`), so no
//!   role string reaches the template as text; user and system messages need content. Otherwise a 400 naming
//!   `messages[i].role` or `messages[i].content`.
//! * Other routes: `GET /v1/models`, `GET /health` (no key needed; queue and cancellation counters),
//!   `POST /tokenize` (vLLM's `prompt` / `messages` with `return_token_strs`, `add_generation_prompt`,
//!   `continue_final_message`; llama.cpp's `content` with `with_pieces` and `parse_special`, each answered in
//!   its server's shape), `POST /detokenize` (`tokens`), `GET /tokenizer_info` (vLLM's: the special tokens
//!   and the chat template, for clients that borrow the server's tokenizer).
//! * Connections: at most `--max-connections` open at once; a request's header (and the wait between
//!   kept-alive requests) must arrive within `--read-timeout`, and then its body. When every place is taken
//!   and another client connects, the connection that has waited longest for its first request is closed to
//!   let it in (`conns.rs`), so a flood of slow clients cannot keep others out. A body declared as anything
//!   but JSON is a 415. A `Content-Length` beyond
//!   `--max-body-bytes` is a 413 before any of the body is read. Parsing, chat templates (compiled once) and
//!   tokenizing run off the async runtime's threads.
//!
//! ```text
//! $ stoplab serve &
//! $ curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \
//!     -d '{"prompt": "user: Hi\nAI:", "stop": "\nuser:"}'
//! $ curl -sN localhost:8080/v1/completions -H 'Content-Type: application/json' \
//!     -d '{"prompt": "AI:", "replay": " Berlin.######", "stop": "######", "stream": true}'
//! ```
//!
//! [`start`] runs the server in-process (tests use it with port 0); [`Handle::shutdown`] stops it.
//!
//! The files, bottom-up (each imports only files above it in this list; no two import each other):
//!
//! * `config.rs`: [`Config`], [`Limits`], [`StartError`].
//! * `names.rs`: how a route names a setting (its JSON path), for the one validation's errors; `error.rs`:
//!   [`error::ApiError`], OpenAI's error body and the one place where an error gets its status.
//! * `http.rs`: the plumbing every route shares: a body read within the limits, CPU work off the runtime,
//!   JSON and server-sent-event responses, the body-size and API-key layers.
//! * `fields.rs`: a body's fields, the readers more than one route uses (`stop`, `logit_bias`, `replay`,
//!   counts) and [`fields::Served`], what a request is checked against; `messages.rs`: a conversation.
//! * `request.rs`: [`request::GenRequest`], and [`request::Fitted`], the one check of a prompt against the
//!   context, then of the settings and `replay`, for every route that queues a generation.
//! * `delivery.rs`: the worker's [`worker::Event`]s, a request's choices delivered in order; `worker.rs`: the
//!   queue and the model's thread.
//! * `state.rs`: what the handlers share; [`openai`]: OpenAI's routes, a file per endpoint; `tokenize.rs`:
//!   `/tokenize` and `/detokenize`; [`playground`]: the page and its routes.
//! * `conns.rs`: the open connections, and which to close when a full house must make room.
//! * `router.rs`: every route behind the layers; this file: [`start`], [`Handle`], the accept loop.

mod config;
mod conns;
mod delivery;
pub mod error;
pub mod fields;
mod http;
mod messages;
mod names;
pub mod openai;
pub mod playground;
pub mod request;
mod router;
mod state;
mod tokenize;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::{Error, LoadedModel};

pub use config::{Config, Limits, StartError};

use crate::serve::fields::Served;
use crate::serve::state::AppState;

/// How long open connections may take to finish once the server is stopping.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A running server. Dropping it shuts the server down too.
pub struct Handle {
    addr: SocketAddr,
    model: String,
    stopping: Arc<AtomicBool>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    worker: Option<JoinHandle<()>>,
}

impl Handle {
    /// The address the server listens on (with port 0 asked, the port it got).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The model name requests may give and `/v1/models` lists.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Stops accepting, cancels the running generation (its client gets an error event, queued requests a
    /// 503), lets open responses end, and joins the server's threads.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> std::io::Result<()> {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        let mut result = Ok(());
        if let Some(server) = self.server.take() {
            result = server
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the server thread panicked")));
        }
        // The queue's sender went with the server's state, so the worker's loop ends.
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        result
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop_now();
    }
}

/// Accepts connections until `stopped`: at most `limits.max_connections` open at once, each given
/// `limits.read_timeout` to send a request's header. When every place is taken and another client connects,
/// the connection that has waited longest for its first request is closed to make room ([`conns`]), so
/// clients that trickle their headers in (or sit idle) cannot keep a good client out; when every open
/// connection is serving a request, the new client waits for one to close. Then lets open responses end,
/// for at most [`SHUTDOWN_GRACE`].
async fn accept(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: &Limits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    use hyper::service::Service;

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(conns::Open::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors, or a connection reset before it was accepted: try again shortly.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // A full house: make room by closing the longest-waiting connection, if any is waiting.
                open.evict_oldest_waiting();
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stopped.wait_for(|s| *s) => break,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let entry = Arc::new(open.add());
        let inner = hyper_util::service::TowerToHyperService::new(app.clone());
        let arrived = entry.clone();
        let service = hyper::service::service_fn(move |req| {
            arrived.arrived();
            inner.call(req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        let conn = graceful.watch(conn);
        let task = tokio::spawn({
            let entry = entry.clone();
            async move {
                let _ = conn.await;
                drop(permit);
                drop(entry);
            }
        });
        entry.set_abort(task.abort_handle());
    }
    drop(listener);
    // Open responses end quickly once the generation is cancelled; a client that keeps a request half-sent
    // must not hold the shutdown up for ever.
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
}

/// Loads the model, binds `config.addr` and serves on background threads until [`Handle::shutdown`].
pub fn start(config: Config) -> Result<Handle, StartError> {
    let mut engine = LoadedModel::load(&config.engine)?;
    let parallel = config.limits.parallel.max(1);
    let per_slot = match config.limits.kv_budget {
        Some(budget) => budget / parallel,
        None => engine.context_length(),
    };
    if per_slot < 2 {
        return Err(StartError::LoadedModel(Error::Invalid {
            field: "--kv-budget".into(),
            message: format!(
                "{} positions shared by {parallel} slots leave {per_slot} each; give at least {} (2 per \
                 slot) or lower --parallel",
                config.limits.kv_budget.unwrap_or(0),
                2 * parallel
            ),
        }));
    }
    engine.set_slots(parallel, per_slot)?;
    let model = config
        .model_name
        .clone()
        .or_else(|| config.engine.model.clone())
        .unwrap_or_else(|| crate::fetch::Manifest::builtin().default.clone());
    let mut model_ids = vec![model.clone()];
    // The file's name works too ("SmolLM2-135M-Instruct.Q4_1"), as llama.cpp's server names a model.
    if let Some(stem) = engine
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        && !model_ids.contains(&stem)
    {
        model_ids.push(stem);
    }
    let mut served = Served::new(
        Arc::new(engine.vocab.clone()),
        engine.context_length(),
        model_ids,
        !config.engine.tokenizer_only,
        config.limits.clone(),
    );
    served.speculation = config.speculation;

    let listener = std::net::TcpListener::bind(config.addr).map_err(|source| StartError::Bind {
        addr: config.addr,
        source,
    })?;
    let addr = listener.local_addr().map_err(StartError::Runtime)?;
    listener
        .set_nonblocking(true)
        .map_err(StartError::Runtime)?;

    let stopping = Arc::new(AtomicBool::new(false));
    let (queue, worker) = worker::spawn(
        engine,
        served.vocab.clone(),
        config.limits.queue,
        stopping.clone(),
    )
    .map_err(StartError::Runtime)?;
    let state = Arc::new(AppState {
        served,
        queue,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        next_id: AtomicU64::new(0),
    });
    let app = router::router(state, config.api_key.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stoplab-http")
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let limits = config.limits.clone();
    let server = std::thread::Builder::new()
        .name("stoplab-serve".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                accept(listener, app, &limits, stopped).await;
                Ok(())
            })
        })
        .map_err(StartError::Runtime)?;
    Ok(Handle {
        addr,
        model,
        stopping,
        stop: Some(stop),
        server: Some(server),
        worker: Some(worker),
    })
}
