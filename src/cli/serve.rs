//! `stoplab serve`: the OpenAI-compatible API on the local model.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;

use stoplab::EngineOptions;
use stoplab::serve::{self, Config, Limits, StartError};

use super::Failure;

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
    /// A GGUF file, a model name from `stoplab fetch --list`, or hf:OWNER/REPO/FILE.gguf (default: the default
    /// model).
    #[arg(long, short, env = "STOPLAB_MODEL")]
    model: Option<String>,
    /// A tokenizer.json to use instead of the tokenizer built from the GGUF metadata.
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,
    /// The model name /v1/models lists and requests give (default: --model, else the default model's name).
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Load only the tokenizer: no weights, every request must carry `replay` (text or token ids the model
    /// "writes"), so stop behaviour can be staged over HTTP.
    #[arg(long)]
    replay_only: bool,
    /// Requests that may wait while one generates; beyond that the answer is 429 with Retry-After.
    #[arg(long, default_value_t = Limits::default().queue)]
    queue: usize,
    /// Most stop strings in one request.
    #[arg(long, default_value_t = Limits::default().max_stops)]
    max_stops: usize,
    /// Longest stop string, in bytes.
    #[arg(long, default_value_t = Limits::default().max_stop_bytes)]
    max_stop_bytes: usize,
    /// Largest request body, in bytes (413 beyond).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
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
    let config = Config {
        engine: EngineOptions {
            model: args.model,
            tokenizer: args.tokenizer,
            tokenizer_only: args.replay_only,
            progress: true,
        },
        addr,
        api_key: args.api_key,
        model_name: args.served_model_name,
        limits: Limits {
            max_stops: args.max_stops,
            max_stop_bytes: args.max_stop_bytes,
            max_body_bytes: args.max_body_bytes,
            queue: args.queue,
        },
    };
    let handle = serve::start(config).map_err(|e| match e {
        StartError::Engine(e) => Failure::from(e),
        other => Failure {
            usage: false,
            message: other.to_string(),
        },
    })?;
    eprintln!(
        "stoplab: serving {} at http://{}/v1 (Ctrl-C to stop)",
        handle.model(),
        handle.addr()
    );
    wait_for_signal().map_err(|e| Failure {
        usage: false,
        message: format!("waiting for signals: {e}"),
    })?;
    eprintln!("stoplab: shutting down");
    handle.shutdown().map_err(|e| Failure {
        usage: false,
        message: format!("shutting down: {e}"),
    })
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    })
}
