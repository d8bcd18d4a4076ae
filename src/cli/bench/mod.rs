//! `stoplab bench`: one file per measurement, each reading its flags, calling [`stoplab::lab::bench`] and
//! printing what it returns.

pub mod bandwidth;
pub mod decode;
pub mod kernels;
pub mod overhead;
pub mod stops;

use clap::Subcommand;

use crate::cli::output::Failure;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Stop matching per token: stoplab's matcher against the peers' strategies (full rescan as in
    /// mistral.rs, tail search as in llama.cpp's server and vLLM, token tables as in HF transformers), on
    /// real token streams with stops that never match. Needs only the tokenizer.
    Stops(stops::StopsArgs),
    /// The real model generating with 0, 4, 64 and 1024 never-matching stops: decode tokens/s and the
    /// matcher's share of the time per token.
    Overhead(overhead::OverheadArgs),
    /// Prompt processing and decode speed, peak RSS and load time of the model itself (compare with
    /// llama-bench: benches/peer/llama_cpp.sh).
    Decode(decode::DecodeArgs),
    /// The memory read bandwidth that bounds decoding: a buffer far larger than the last-level cache
    /// streamed by 1 and 2 threads (`bench decode` sets its decode rate against it).
    Bandwidth(bandwidth::BandwidthArgs),
    /// The quantized matrix kernels alone: G multiply-adds per second of each weight format's products
    /// (as in the file, and repacked 8 rows at a time as the forward pass multiplies them) on one thread, by
    /// kernel set and number of activation rows.
    Kernels(kernels::KernelsArgs),
}

pub fn run(command: BenchCommand) -> Result<(), Failure> {
    match command {
        BenchCommand::Stops(args) => stops::run(args),
        BenchCommand::Overhead(args) => overhead::run(args),
        BenchCommand::Decode(args) => decode::run(args),
        BenchCommand::Bandwidth(args) => bandwidth::run(args),
        BenchCommand::Kernels(args) => kernels::run(args),
    }
}
