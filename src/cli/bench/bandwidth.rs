//! `stoplab bench bandwidth`: the memory read bandwidth that bounds decoding (what is read and how is
//! [`stoplab::lab::bench::bandwidth`]'s).

use clap::Args;

use stoplab::lab::bench::bandwidth;

use crate::cli::output::{Failure, pretty};

/// The buffer `bench bandwidth` and `bench decode`'s limit line read: far beyond any last-level cache.
pub const BANDWIDTH_BYTES: usize = 512 << 20;

#[derive(Args, Debug)]
pub struct BandwidthArgs {
    /// Thread counts to measure, comma-separated.
    #[arg(
        long = "with-threads",
        value_delimiter = ',',
        default_value = "1,2",
        value_name = "N,..."
    )]
    with_threads: Vec<usize>,
    /// MiB of buffer to stream (it must be far larger than the last-level cache).
    #[arg(long, default_value_t = BANDWIDTH_BYTES >> 20)]
    mib: usize,
    /// Measured passes per thread count (the median and range are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `stoplab bench bandwidth`: the read bandwidth decoding is bounded by.
pub fn run(args: BandwidthArgs) -> Result<(), Failure> {
    if args.mib < 64 || args.runs == 0 || args.with_threads.iter().any(|&t| t == 0 || t > 256) {
        return Err(Failure::usage(
            "--mib must be at least 64, --runs at least 1, and each of --with-threads 1 to 256",
        ));
    }
    let mut rows = Vec::new();
    for &t in &args.with_threads {
        let s = bandwidth::read(args.mib << 20, t, args.runs);
        if !args.json {
            say!(
                "read bandwidth {t:>3} thread{} {:6.1} GB/s  (median of {}, {:.1} - {:.1}; {} MiB streamed)",
                if t == 1 { " " } else { "s" },
                s.median,
                args.runs,
                s.min,
                s.max,
                args.mib
            );
        }
        rows.push(serde_json::json!({"threads": t, "gb_s": s.to_json()}));
    }
    if args.json {
        say!(
            "{}",
            pretty(&serde_json::json!({"mib": args.mib, "bandwidth": rows}))
        );
    }
    Ok(())
}
