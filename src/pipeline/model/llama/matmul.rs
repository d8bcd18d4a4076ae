//! Matrix products over the pool: `out[r][n] = w[n] · act[r]` for quantized weights in the mapped file,
//! split into runs of weight rows, several matrices that take the same input in one parallel section.

use super::kernels::{Kernels, TILE, WTILE_MAX, prefetch};
use super::parallel::{Blocks, for_each_block};
use super::quant::{Act, QK};
use super::weights::QMat;

/// Weight rows per kernel call in prefill and in decode.
const WTILE: usize = 2;
const WTILE_DECODE: usize = 4;
/// How far ahead of the weights being read decode asks for the next ones, in bytes (measured best of
/// 1, 2, 4, 8, 16 and 32 KiB on the default model: 8 and 16 KiB).
const PREFETCH: usize = 8192;
/// Weight rows per unit of parallel work.
const ROWS_PER_ITEM: usize = 16;

const _: () = assert!(WTILE <= WTILE_MAX && WTILE_DECODE <= WTILE_MAX);

/// `out[r][n] = w[n] · act[r]` for each (weight, output) pair, `rows` activation rows, all pairs in one
/// parallel section. All weights take the same activation format and have the same number of columns.
pub(super) fn matmul_many(
    kernels: Kernels,
    map: &[u8],
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
    assert_eq!(act.nb, cols / QK);
    assert_eq!(act.rows(), rows);
    let mats: Vec<QMat> = jobs.iter().map(|(w, _)| **w).collect();
    // One block per run of ROWS_PER_ITEM weight rows: the output columns of those rows, for every
    // activation row.
    let mut outs: Vec<Blocks<'_>> = jobs
        .iter_mut()
        .map(|(w, o)| Blocks::new(&mut o[..rows * w.rows], w.rows, rows, ROWS_PER_ITEM))
        .collect();
    // Decode (one activation row) reads each weight once: several weight rows per call keep more loads in
    // flight. Prefill shares each weight block between TILE activation rows.
    let wtile = if rows == 1 { WTILE_DECODE } else { WTILE };
    for_each_block(&mut outs, |j, mut out| {
        let w = mats[j];
        let rb = w.row_bytes();
        let (r0, r1) = (out.cols().start, out.cols().end);
        let mut r = 0;
        while r < rows {
            let t = TILE.min(rows - r);
            let mut c = r0;
            while c < r1 {
                let cn = wtile.min(r1 - c);
                let wrows = &map[w.offset + c * rb..][..cn * rb];
                if rows == 1 {
                    // Decode streams every weight once, and the hardware prefetcher stops at each 4 KiB
                    // page: asking for the bytes PREFETCH ahead keeps the memory bus busy (+80% decode
                    // speed measured here; see BENCHMARKS.md).
                    prefetch(
                        map.as_ptr().wrapping_add(w.offset + c * rb + PREFETCH),
                        cn * rb,
                    );
                }
                let mut d = [[0f32; TILE]; WTILE_MAX];
                kernels.dot_tile(w.wtype, wrows, rb, act, r, t, cn, &mut d);
                for (i, row) in (r..r + t).enumerate() {
                    let o = &mut out.row(row)[c - r0..][..cn];
                    for (k, o) in o.iter_mut().enumerate() {
                        *o = d[k][i];
                    }
                }
                c += cn;
            }
            r += t;
        }
    });
}
