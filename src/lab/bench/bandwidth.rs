//! The physical limit of decoding: how fast this machine streams memory into its cores, and how much of it
//! a decode step uses.
//!
//! A decode step of one sequence reads every weight matrix once (the token embedding only for one row, but
//! the whole of it where it doubles as the output head), so tokens per second times the weights' bytes is
//! the read rate decoding achieves. [`read`] measures what the machine can do: a buffer far larger than
//! the last-level cache, summed as 64-bit words by `threads` threads each on its own slice, after one pass
//! that pages it in; the figure is the buffer's bytes over the wall time of the pass, in GB/s (10^9).

use std::hint::black_box;
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;

/// Read bandwidth in GB/s over `runs` passes (plus one unreported) of a `bytes` buffer, `threads` threads.
pub fn read(bytes: usize, threads: usize, runs: usize) -> super::decode::Stats {
    let words = (bytes / 8).max(threads.max(1) * 64);
    // Non-zero, not constant: no page may be shared or skipped.
    let buf: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9))
        .collect();
    let chunk = words.div_ceil(threads.max(1));
    let mut all = Vec::with_capacity(runs);
    for run in 0..=runs {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| s.spawn(move || sum(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a summing thread does not panic"))
                .fold(0, u64::wrapping_add)
        });
        black_box(total);
        let secs = t0.elapsed().as_secs_f64();
        if run > 0 {
            all.push((words * 8) as f64 / secs / 1e9);
        }
    }
    super::decode::Stats::of(all)
}

/// The words' wrapping sum: a plain fold, which the compiler vectorizes into wide loads and several
/// accumulators (an explicit array of eight accumulators was not vectorized, and ran at a seventh of the
/// speed).
fn sum(words: &[u64]) -> u64 {
    words.iter().fold(0u64, |a, w| a.wrapping_add(*w))
}

/// Bytes of weights one decode step reads: every tensor but the token embedding (one row of it is read),
/// which is read whole where there is no separate `output.weight` (a tied output head).
pub fn weights_per_token(content: &Content) -> u64 {
    let tied = !content.tensor_infos.contains_key("output.weight");
    content
        .tensor_infos
        .iter()
        .filter(|(name, _)| tied || name.as_str() != "token_embd.weight")
        .map(|(_, t)| {
            let (block, bytes) = (t.ggml_dtype.block_size(), t.ggml_dtype.type_size());
            (t.shape.elem_count() / block * bytes) as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sum_covers_every_word_and_the_figure_is_positive() {
        let words: Vec<u64> = (1..=21).collect();
        assert_eq!(sum(&words), 231);
        let s = read(1 << 20, 2, 2);
        assert_eq!(s.all.len(), 2);
        assert!(s.median > 0.0 && s.median.is_finite());
    }
}
