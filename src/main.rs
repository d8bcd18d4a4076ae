//! The `stoplab` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let threads = cli.threads.or_else(|| {
        std::env::var_os("RAYON_NUM_THREADS")
            .is_none()
            .then(idle_cores)
    });
    if let Some(n) = threads {
        use_threads(n.max(1));
    }
    match cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}

/// Gives the model `n` threads: the one place where the thread count is set, before any thread starts.
///
/// candle 0.11.1 takes no thread count as a value: its barrier pool (which runs both forward passes, see
/// `stoplab::pipeline::model::threads`) sizes itself from `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, and its rayon
/// pool (and rayon's global one) from `RAYON_NUM_THREADS`, each on first use
/// (`candle_core::utils::{barrier_pool, get_num_threads}`). So the count has to go through those two
/// variables, and only here; the library never writes them.
fn use_threads(n: usize) {
    // SAFETY: no other thread exists at this point of main, and candle's pools start later.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    }
}

/// Cores not already busy, by the 1-minute load average. candle's worker threads spin-wait for each other,
/// so one thread more than the machine can run at once costs far more than one thread fewer: measured here
/// with the other core busy, 2 threads decoded at 1.7 tok/s and 1 thread at 29 tok/s.
fn idle_cores() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    ((cores as f64 - load).round() as usize).clamp(1, cores)
}
