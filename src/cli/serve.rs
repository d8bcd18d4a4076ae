//! `stoplab serve`: the OpenAI-compatible API on the local model.

use std::net::{SocketAddr, ToSocketAddrs};

use clap::Args;

use stoplab::serve::{self, Config, Limits, StartError};

use crate::cli::args::model::ModelArgs;
use crate::cli::args::speculate::NgramArgs;
use crate::cli::output::Failure;
use crate::cli::signals::Signals;

pub const EXAMPLES: &str = "Examples:
  stoplab --threads 1 serve                     # http://127.0.0.1:8080/v1, one model thread
  curl -s localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{\"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}]}'
  curl -sN localhost:8080/v1/completions -H 'Content-Type: application/json' \\
    -d '{\"prompt\": \"user: Capital of Germany?\\nAI:\", \"stop\": \"\\nuser:\", \"stream\": true}'
  stoplab serve --replay-only      # no weights: a request's \"replay\" is what the model writes
  stoplab serve --speculate ngram  # prompt lookup for every request that does not say \"speculate\": \"off\"
  STOPLAB_API_KEY=secret stoplab serve --host 0.0.0.0";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback exposes the model to the network: use --api-key.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "STOPLAB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// The model name /v1/models lists and requests give (default: --model, else the default model's name).
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Load only the tokenizer: no weights, every request must carry `replay` (text or token ids the model
    /// "writes"), so stop behaviour can be staged over HTTP.
    #[arg(long)]
    replay_only: bool,
    /// Requests that may wait while --parallel generate; beyond that the answer is 429 with Retry-After.
    #[arg(long, default_value_t = Limits::default().queue)]
    queue: usize,
    /// Sequences generated at once (continuous batching): each step decodes one token of every running
    /// sequence in a single pass over the weights; a new request joins between steps after its prompt is
    /// read, a finished or cancelled one leaves at once. Each has its own KV cache slot (see
    /// --kv-budget); the choices of a request with `n` run side by side too. Candle's backend
    /// (STOPLAB_BACKEND=candle) runs one at a time.
    #[arg(long, value_name = "N", default_value_t = Limits::default().parallel,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    parallel: usize,
    /// Positions of KV cache in all, shared evenly by the --parallel slots (each gets at most the model's
    /// context; a prompt plus its completion must fit in one slot). Default: every slot gets the model's
    /// whole context; memory is reserved, and becomes resident only as positions fill (the default model:
    /// 23 KB per position).
    #[arg(long, value_name = "POSITIONS")]
    kv_budget: Option<usize>,
    /// Most stop strings in one request.
    #[arg(long, default_value_t = Limits::default().max_stops)]
    max_stops: usize,
    /// Longest stop string, in bytes.
    #[arg(long, default_value_t = Limits::default().max_stop_bytes)]
    max_stop_bytes: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Most choices one request may ask for (`n`).
    #[arg(long, default_value_t = Limits::default().max_n)]
    max_n: usize,
    /// Connections open at once. When all are taken, a new client closes the one that has waited longest for
    /// its first request (a slow or idle client); if every one is serving a request, it waits until one closes.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Seconds a client may take to send a request's header (or sit idle between requests), and then its
    /// body; a slower client is disconnected, so slow clients cannot hold every connection.
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().read_timeout.as_secs_f64())]
    read_timeout: f64,
    /// The default for requests that do not give `speculate` ("ngram", "off", or {"method": "ngram",
    /// "draft_tokens": K, "ngram_max": N, "ngram_min": N}). In the batch, each sequence's draft is fed
    /// with its token in the step's one pass.
    #[command(flatten)]
    speculate: NgramArgs,
}

pub fn run(args: ServeArgs) -> Result<(), Failure> {
    let addr: SocketAddr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::usage(format!("--host: cannot resolve {:?}", args.host)))?;
    if !addr.ip().is_loopback() && args.api_key.is_none() {
        eprintln!(
            "stoplab: warning: listening on {addr} without --api-key: anyone who can reach this address can use \
             the model"
        );
    }
    if !(args.read_timeout > 0.0 && args.read_timeout.is_finite()) || args.max_connections == 0 {
        return Err(Failure::usage(
            "--read-timeout must be a positive number of seconds and --max-connections at least 1",
        ));
    }
    let config = Config {
        engine: args.model.options(args.replay_only),
        addr,
        api_key: args.api_key,
        model_name: args.served_model_name,
        limits: Limits {
            max_stops: args.max_stops,
            max_stop_bytes: args.max_stop_bytes,
            max_body_bytes: args.max_body_bytes,
            queue: args.queue,
            parallel: args.parallel,
            kv_budget: args.kv_budget,
            max_n: args.max_n,
            max_connections: args.max_connections,
            read_timeout: std::time::Duration::from_secs_f64(args.read_timeout),
        },
        speculation: args.speculate.speculation()?,
    };
    // Before the server says it is ready: a signal sent as soon as it says so must find the handlers.
    let signals = Signals::install()?;
    let handle = serve::start(config).map_err(|e| match e {
        StartError::LoadedModel(e) => Failure::from(e),
        other => Failure::other(other.to_string()),
    })?;
    eprintln!(
        "stoplab: serving {} at http://{}/v1 (Ctrl-C to stop)",
        handle.model(),
        handle.addr()
    );
    signals.wait();
    eprintln!("stoplab: shutting down");
    handle
        .shutdown()
        .map_err(|e| Failure::other(format!("shutting down: {e}")))
}
