//! `stoplab bench kernels`: the quantized matrix kernels' multiply-add rate, per weight format, kernel set
//! and number of activation rows (what is measured is [`stoplab::pipeline::model::kernel_rate`]'s).

use clap::Args;

use stoplab::lab::bench::decode::Stats;
use stoplab::pipeline::model::{Isa, KERNEL_FORMATS, kernel_rate};

use crate::cli::output::{Failure, pretty};

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// Activation rows per product, comma-separated: 1 is a decode step, 2 to 7 a verification pass of
    /// a speculative draft, 8 and more prefill or a batch.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,6,100",
        value_name = "N,..."
    )]
    rows: Vec<usize>,
    /// Weight formats, comma-separated: q4_1, q5_0, q8_0, q4_k, q6_k as laid out in the file; q4_1_x8,
    /// q5_0_x8, q8_0_x8, q4_k_x8 and q6_k_x8 repacked 8 rows at a time, as the forward pass multiplies
    /// the matrices of those formats on x86-64.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q4_1,q4_1_x8,q5_0,q5_0_x8,q8_0,q8_0_x8,q4_k,q4_k_x8,q6_k,q6_k_x8"
    )]
    formats: Vec<String>,
    /// Kernel sets, comma-separated (default: every set this CPU runs but the scalar one).
    #[arg(long, value_delimiter = ',', value_parser = ["scalar", "avx2", "avx512"])]
    kernels: Vec<String>,
    /// Measured runs of about 50 ms each (the median and range are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `stoplab bench kernels`: G multiply-adds per second of each format's products, on one thread.
pub fn run(args: KernelsArgs) -> Result<(), Failure> {
    if args.runs == 0 || args.rows.iter().any(|&r| r == 0 || r > 4096) {
        return Err(Failure::usage(
            "--runs must be at least 1, and each of --rows 1 to 4096",
        ));
    }
    if let Some(f) = args
        .formats
        .iter()
        .find(|f| !KERNEL_FORMATS.contains(&f.as_str()))
    {
        return Err(Failure::usage(format!(
            "--formats: no weight format {f:?} (one of {})",
            KERNEL_FORMATS.join(", ")
        )));
    }
    let sets: Vec<Isa> = if args.kernels.is_empty() {
        Isa::ALL
            .into_iter()
            .filter(|i| *i != Isa::Scalar && i.supported())
            .collect()
    } else {
        args.kernels
            .iter()
            .map(|k| {
                *Isa::ALL
                    .iter()
                    .find(|i| i.name() == k)
                    .expect("clap's values")
            })
            .collect()
    };
    if let Some(i) = sets.iter().find(|i| !i.supported()) {
        return Err(Failure::usage(format!(
            "--kernels {i}: this CPU does not run that set"
        )));
    }
    if !args.json {
        say!(
            "G multiply-adds/s on one thread: a random 896 x 4864 matrix (Qwen2.5's ffn_down) times N \
             activation rows, median of {} runs (range)",
            args.runs
        );
    }
    let mut out = Vec::new();
    for format in &args.formats {
        for &isa in &sets {
            for &rows in &args.rows {
                let s =
                    Stats::of(kernel_rate(isa, format, rows, args.runs).map_err(Failure::usage)?);
                if !args.json {
                    say!(
                        "{format:8} {:7} {rows:>5} rows  {:7.1}  ({:.1} - {:.1})",
                        isa.name(),
                        s.median,
                        s.min,
                        s.max
                    );
                }
                out.push(serde_json::json!({
                    "format": format, "kernels": isa.name(), "rows": rows, "gmac_s": s.to_json()
                }));
            }
        }
    }
    if args.json {
        say!("{}", pretty(&serde_json::json!({"products": out})));
    }
    Ok(())
}
