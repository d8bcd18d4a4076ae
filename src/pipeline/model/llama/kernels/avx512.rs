//! The AVX-512 kernel set: the AVX2 set's kernels compiled with AVX-512's features, so that their
//! integer products take the 256-bit VNNI instruction (one `vpdpbusd` where AVX2 needs a `vpmaddubsw`, a
//! `vpmaddwd` and an add) and the compiler may use AVX-512's extra registers and instructions. The float
//! steps are the AVX2 set's, so every sum is bit-identical to the AVX2 and scalar sets' (`kernels::tests`
//! holds them to it). A 512-bit Q4_1 kernel that took two blocks per instruction measured slower with
//! several activation rows than the 256-bit tiles on AMD Zen 5 (37.5 against 61 G multiply-adds/s on 100
//! rows) and is gone with the repacked Q4_1 ([`super::super::quant::WType::Q4_1_X8`]).

use super::super::quant::{Act, WType};
use super::avx2::{q4_1, q4_1_x8, q4_k, q4_k_x8, q5_0, q5_0_x8, q6_k, q6_k_x8, q8_0, q8_0_x8};
use super::{TILE, Tile, WTILE_MAX};

/// See [`super::Kernels::dot_rows`].
///
/// # Safety
/// The CPU supports every feature enabled here (`Isa::Avx512`), and the arguments satisfy the bounds
/// `Kernels::dot_rows` asserts, as for `avx2::dot_rows`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dot_rows(
    wt: WType,
    w: &[u8],
    rb: usize,
    act: &Act,
    emit: impl FnMut(usize, usize, usize, usize, &Tile),
) {
    let rows = act.rows();
    // SAFETY: the caller's contract, and `tiles` hands each tile whole weight rows and
    // activation rows inside `act` (`r + t <= rows`) of the shapes `shape` gives.
    let tile = |w: &[u8], r: usize, t: usize, cn: usize, out: &mut Tile| unsafe {
        match wt {
            WType::Q4_1 => super::dispatch_rows!(q4_1[, true], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, true], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, true], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(8, q4_k_x8[, true], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(8, q5_0_x8[, true], w, act, r, t, out),
            WType::Q4_1_X8 => super::dispatch_x8!(8, q4_1_x8[, true], w, act, r, t, out),
            WType::Q8_0_X8 => super::dispatch_x8!(8, q8_0_x8[, true], w, act, r, t, out),
            WType::Q6_K_X8 if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_x8!(q6_k_x8[, true], w, act, r, t, out)
            }
            WType::Q6_K_X8 => super::dispatch_x8!(q6_k_x8[, false], w, act, r, t, out),
            WType::Q6_K if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_tile!(q6_k[, true], w, rb, act, r, t, cn, out)
            }
            WType::Q6_K => super::dispatch_tile!(q6_k[, false], w, rb, act, r, t, cn, out),
        }
    };
    // The AVX2 set's kernels ask for decode's weights themselves (`avx2::prefetch_tile`).
    super::tiles(tile, shape(wt, rows), w, rb, rows, false, emit)
}

/// The AVX-512 set's tiles: [`super::shape`]'s, but a repacked format takes 8 activation rows at a time
/// (Q4_1, with its second float chain per row, 6) where the AVX2 set takes 4: with 32 vector registers an
/// unpacked run of weights serves twice the rows before it is dropped. Measured on AMD Zen 4 (`bench
/// kernels --kernels avx512 --rows 6,100`, against 4 rows): Q5_0 1.33x at 6 rows and 1.11x at 100, Q4_K
/// 1.19x and 1.12x, Q8_0 1.18x and 1.0 – 1.1x, Q4_1 (6 rows) 1.18x and 1.13x; Q6_K, whose products take
/// two instructions each, gained nothing and keeps 4.
fn shape(wt: WType, rows: usize) -> (usize, usize) {
    match (wt, super::shape(wt, rows)) {
        (WType::Q6_K_X8, s) => s,
        (WType::Q4_1_X8, (4, 8)) => (6, 8),
        (_, (4, 8)) => (8, 8),
        (_, s) => s,
    }
}

/// See [`super::Kernels::dot_tile`].
///
/// # Safety
/// The CPU supports every feature enabled here (`Isa::Avx512`), and the arguments satisfy the bounds
/// `Kernels::dot_tile` asserts, as for `avx2::dot_tile`.
#[cfg(test)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn dot_tile(
    wt: WType,
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    t: usize,
    cn: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract is each kernel's, and the features are enabled on this function.
    unsafe {
        match wt {
            WType::Q4_1 => super::dispatch_rows!(q4_1[, true], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, true], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, true], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(8, q4_k_x8[, true], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(8, q5_0_x8[, true], w, act, r, t, out),
            WType::Q4_1_X8 => super::dispatch_x8!(8, q4_1_x8[, true], w, act, r, t, out),
            WType::Q8_0_X8 => super::dispatch_x8!(8, q8_0_x8[, true], w, act, r, t, out),
            WType::Q6_K_X8 if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_x8!(8, q6_k_x8[, true], w, act, r, t, out)
            }
            WType::Q6_K_X8 => super::dispatch_x8!(8, q6_k_x8[, false], w, act, r, t, out),
            WType::Q6_K if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_tile!(q6_k[, true], w, rb, act, r, t, cn, out)
            }
            WType::Q6_K => super::dispatch_tile!(q6_k[, false], w, rb, act, r, t, cn, out),
        }
    }
}
