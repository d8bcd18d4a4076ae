//! The `stoplab` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Some(n) = cli.threads {
        // Read by candle's and rayon's thread pools on first use, which has not happened yet.
        // SAFETY: no other thread exists at this point of main.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
    match cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(if f.usage { 2 } else { 1 })
        }
    }
}
