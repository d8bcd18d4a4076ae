//! Matrix products over the pool: `out[r][n] = w[n] · act[r]` for quantized weights in the mapped file,
//! split into runs of weight rows, several matrices that take the same input in one parallel section.

use super::kernels::Kernels;
use super::parallel::{Blocks, for_each_block};
use super::quant::Act;
use super::weights::{QMat, Weights};

/// Weight rows per unit of parallel work with several activation rows (prefill, batched decode).
const ROWS_PER_ITEM: usize = 16;
/// The fewest weight rows per unit of parallel work in single-row decode, whose units are split as the
/// pool splits sections: about 8 per thread ([`decode_item_rows`]).
const DECODE_ROWS_MIN: usize = 16;

/// Weight rows per unit of parallel work for a matrix of `n` rows in single-row decode: the pool hands
/// each thread about 8 ranges of units, so units of about `n / (8 × threads)` rows cost one dispatch per
/// range instead of one per 16 rows (the output matrix of Qwen2.5 has 151,936 rows) and balance the
/// threads as well.
fn decode_item_rows(n: usize) -> usize {
    n.div_ceil(8 * super::parallel::threads())
        .next_multiple_of(DECODE_ROWS_MIN)
        .max(DECODE_ROWS_MIN)
}

/// `out[r][n] = w[n] · act[r]` for each (weight, output) pair, `rows` activation rows, all pairs in one
/// parallel section. All weights take the same activation format and have the same number of columns.
#[allow(clippy::needless_range_loop)] // i and k index activation rows and weight rows alike
pub(super) fn matmul_many(
    kernels: Kernels,
    weights: &Weights,
    jobs: &mut [(&QMat, &mut [f32])],
    act: &Act,
    rows: usize,
) {
    let cols = jobs[0].0.cols;
    let at = jobs[0].0.wtype.act();
    assert!(
        jobs.iter()
            .all(|(w, _)| w.cols == cols && w.wtype.act() == at)
    );
    assert_eq!(act.nb * act.qk, cols);
    assert_eq!(act.rows(), rows);
    let mats: Vec<QMat> = jobs.iter().map(|(w, _)| **w).collect();
    // One block per run of ROWS_PER_ITEM weight rows: the output columns of those rows, for every
    // activation row.
    let mut outs: Vec<Blocks<'_>> = jobs
        .iter_mut()
        .map(|(w, o)| {
            let per_item = if rows == 1 {
                decode_item_rows(w.rows)
            } else {
                ROWS_PER_ITEM
            };
            Blocks::new(&mut o[..rows * w.rows], w.rows, rows, per_item)
        })
        .collect();
    for_each_block(&mut outs, |j, mut out| {
        let w = mats[j];
        let rb = w.wtype.row_bytes(w.cols);
        let c0 = out.cols().start;
        let wrows = &weights.bytes(&w)[c0 * rb..][..out.cols().len() * rb];
        // Decode streams every weight once, and the hardware prefetcher stops at each 4 KiB page: asking
        // for the bytes ahead keeps the memory bus busy (+80% decode speed measured here; see
        // BENCHMARKS.md).
        let ahead = rows == 1;
        kernels.dot_rows(w.wtype, wrows, rb, act, ahead, |r, c, t, cn, d| {
            out.write_tile(r, c, t, cn, d)
        });
    });
}
