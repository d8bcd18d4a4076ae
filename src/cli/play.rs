//! `stoplab play`: the stop playground, served on a free loopback port and (with --open) opened in a browser.

use std::net::SocketAddr;

use clap::Args;

use stoplab::serve::{self, Config, Limits, StartError};

use crate::cli::args::model::ModelArgs;
use crate::cli::output::Failure;
use crate::cli::signals::Signals;

pub const EXAMPLES: &str = "Examples:
  stoplab play --open                   # the default model; the page opens in your browser
  stoplab play --replay-only            # no weights: runs replay the text you type
  stoplab play --model qwen2.5-coder-0.5b-instruct --port 8090

The page shows one chip per generated token: the text it released, the bytes held back because they may
begin a stop, the bytes a stop cut, special and end tokens, and p(end token) at each step. It talks to the
server's HTTP API (POST /v1/stoplab/trace, server-sent events); `stoplab serve` serves the same page at /.";

#[derive(Args, Debug)]
pub struct PlayArgs {
    /// Port on 127.0.0.1 (0: any free port). The playground listens on loopback only; for other hosts use
    /// `stoplab serve --host ... --api-key ...`, which serves the same page at /.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Open the page in the default browser once the server is up.
    #[arg(long)]
    open: bool,
    /// Require `Authorization: Bearer KEY` on the API (the page asks for it).
    #[arg(long, env = "STOPLAB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
    /// The model name the page shows and requests give (default: --model, else the default model's name).
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Load only the tokenizer: no weights; every run replays the text typed in the page's Replay box.
    #[arg(long)]
    replay_only: bool,
    /// Runs that may wait while one generates (a side-by-side run is two).
    #[arg(long, default_value_t = Limits::default().queue)]
    queue: usize,
}

pub fn run(args: PlayArgs) -> Result<(), Failure> {
    let config = Config {
        engine: args.model.options(args.replay_only),
        addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
        api_key: args.api_key,
        model_name: args.served_model_name,
        limits: Limits {
            queue: args.queue,
            ..Limits::default()
        },
        speculation: None,
    };
    // Before the URL is printed: a signal sent as soon as it appears must find the handlers.
    let signals = Signals::install()?;
    let handle = serve::start(config).map_err(|e| match e {
        StartError::LoadedModel(e) => Failure::from(e),
        other => Failure::other(other.to_string()),
    })?;
    let url = format!("http://{}/", handle.addr());
    eprintln!(
        "stoplab: the stop playground for {} (Ctrl-C to stop):",
        handle.model()
    );
    // The URL alone on stdout, for scripts and tests.
    say!("{url}");
    if args.open
        && let Err(e) = open_browser(&url)
    {
        eprintln!("stoplab: warning: could not open a browser ({e}); open {url} yourself");
    }
    signals.wait();
    eprintln!("stoplab: shutting down");
    handle
        .shutdown()
        .map_err(|e| Failure::other(format!("shutting down: {e}")))
}

/// Starts the platform's opener on `url` (it returns at once; the browser is its own process).
fn open_browser(url: &str) -> std::io::Result<()> {
    let mut command = if cfg!(target_os = "macos") {
        std::process::Command::new("open")
    } else if cfg!(windows) {
        let mut c = std::process::Command::new("cmd");
        c.args(["/C", "start", ""]);
        c
    } else {
        std::process::Command::new("xdg-open")
    };
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
}
