//! How to run the server: what it serves ([`Config`]), the bounds on what one request may ask and how many
//! may wait ([`Limits`]), and why it may fail to start ([`StartError`]).

use std::net::SocketAddr;

use crate::{Error, LoadOptions};

/// Bounds on what one request may ask and how many may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_stops: usize,
    pub max_stop_bytes: usize,
    pub max_body_bytes: usize,
    /// Requests that may wait while `parallel` generate; more are answered 429.
    pub queue: usize,
    /// Sequences generated at once (continuous batching: one pass of the weights per step decodes a token
    /// of each); each has a KV slot of its own. Candle's backend runs one at a time whatever this says.
    pub parallel: usize,
    /// Positions of KV cache shared out among the `parallel` slots (each gets `kv_budget / parallel`, at
    /// most the model's context); None: each slot gets the model's whole context. A slot's memory is
    /// reserved, and becomes resident only as its positions fill.
    pub kv_budget: Option<usize>,
    /// The most choices one request may ask for (`n`).
    pub max_n: usize,
    /// Connections open at once; a new client past them closes the one that has waited longest for its first
    /// request, or waits when every one is serving a request.
    pub max_connections: usize,
    /// How long a client may take to send a request's header (an idle kept-alive connection too), and then
    /// its body; a slower one is disconnected (header) or answered 408 (body).
    pub read_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stops: 64,
            max_stop_bytes: 1024,
            max_body_bytes: 1 << 20,
            queue: 32,
            parallel: 4,
            kv_budget: None,
            max_n: 16,
            max_connections: 64,
            read_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// How to run the server.
#[derive(Debug, Clone)]
pub struct Config {
    /// The model to load; with `tokenizer_only`, every request must carry `replay`.
    pub engine: LoadOptions,
    pub addr: SocketAddr,
    /// When set, every route but `/health` requires `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// The name `/v1/models` lists (default: the `--model` given, else the manifest's default name).
    pub model_name: Option<String>,
    pub limits: Limits,
    /// Speculative decoding for requests that do not say (`speculate` in a request overrides it).
    pub speculation: Option<crate::pipeline::speculate::Speculation>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: LoadOptions::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            model_name: None,
            limits: Limits::default(),
            speculation: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    LoadedModel(#[from] Error),
    #[error("cannot listen on {addr}: {source} (is another server on that port? try --port)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the server's threads: {0}")]
    Runtime(std::io::Error),
}
