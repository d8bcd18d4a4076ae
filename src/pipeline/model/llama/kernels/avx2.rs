//! The AVX2 + FMA + F16C kernels (and the 256-bit VNNI form of the integer dot product, which the AVX-512
//! set reuses). Every dot product rounds as the ggml code llama.cpp runs for that format on an AVX2 CPU
//! (`ggml_vec_dot_q6_K_q8_K`: 8 float lanes, block after block,
//! then [`hsum`]; Q4_K as the repacked `ggml_gemv/gemm_q4_K_8x8_q8_K`, Q6_K over 8 or more rows as the
//! tiled matmul: one float chain per output), except Q4_1, Q5_0 and Q8_0, whose products take one float
//! chain per output (`scalar::q4_1`, `q5_0`, `q8_0`), which `scalar.rs` spells out step by step. Only the integer
//! parts, exact whatever the order, are computed differently where that is cheaper.
//!
//! The `#[target_feature]` entry points are the only functions here that are not `#[inline(always)]`: the
//! generic kernels are inlined into them and compiled with their features, whatever the build's target.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::quant::{
    Act, ActType, Q4_1_BYTES, Q4_1_X8_BYTES, Q4_K_BYTES, Q4_K_X8_BYTES, Q5_0_BYTES, Q5_0_X8_BYTES,
    Q6_K_BYTES, Q6_K_X8_BYTES, Q8_0_BYTES, Q8_0_X8_BYTES, QK, QK_K, WType,
};
use super::{TILE, Tile, WTILE_MAX};

/// See [`super::Kernels::run`].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// See [`super::Kernels::dot_rows`].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C, and the arguments satisfy the bounds `Kernels::dot_rows` asserts:
/// `rb == act.nb * wt.block_bytes()`, `w` whole rows of `rb` bytes, and Q5_0's `x16` filled.
#[target_feature(enable = "avx2,fma,f16c")]
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
            WType::Q4_1 => super::dispatch_rows!(q4_1[, false], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, false], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, false], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(q4_k_x8[, false], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(q5_0_x8[, false], w, act, r, t, out),
            WType::Q4_1_X8 => super::dispatch_x8!(q4_1_x8[, false], w, act, r, t, out),
            WType::Q8_0_X8 => super::dispatch_x8!(q8_0_x8[, false], w, act, r, t, out),
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
    // Decode's weights are asked for inside the kernels (`prefetch_tile`), spread among the arithmetic: a
    // burst of prefetches per tile, as the other sets do, waited on free fill buffers (Qwen2.5 decode 20.5
    // against 23.0 tok/s, SmolLM2 85 against 91; see BENCHMARKS.md).
    super::tiles(tile, super::shape(wt, rows), w, rb, rows, false, emit)
}

/// See [`super::Kernels::dot_tile`].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C, and the arguments satisfy the bounds `Kernels::dot_tile` asserts:
/// `1 <= t <= TILE`, `1 <= cn <= WTILE_MAX`, `w` holds `cn` rows of `rb == act.nb * wt.block_bytes()`
/// bytes, and activation rows `r..r + t` exist in `act`.
#[cfg(test)]
#[target_feature(enable = "avx2,fma,f16c")]
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
            WType::Q4_1 => super::dispatch_rows!(q4_1[, false], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, false], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, false], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(q4_k_x8[, false], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(q5_0_x8[, false], w, act, r, t, out),
            WType::Q4_1_X8 => super::dispatch_x8!(q4_1_x8[, false], w, act, r, t, out),
            WType::Q8_0_X8 => super::dispatch_x8!(q8_0_x8[, false], w, act, r, t, out),
            WType::Q6_K_X8 if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_x8!(q6_k_x8[, true], w, act, r, t, out)
            }
            WType::Q6_K_X8 => super::dispatch_x8!(q6_k_x8[, false], w, act, r, t, out),
            WType::Q6_K if act.rows() >= super::BATCHED_ROWS => {
                super::dispatch_tile!(q6_k[, true], w, rb, act, r, t, cn, out)
            }
            WType::Q6_K => super::dispatch_tile!(q6_k[, false], w, rb, act, r, t, cn, out),
        }
    }
}

/// See [`super::Kernels::score_rows`].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `q.len()` is `G * hd` with `hd` a multiple of 8, and every row
/// `kc[t * stride + koff..][..hd]` for `t` in `ts` exists (the slicing checks it).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn score_rows<const G: usize>(
    q: &[f32],
    kc: &[u16],
    stride: usize,
    koff: usize,
    ts: Range<usize>,
    mut emit: impl FnMut(usize, &[f32; G]),
) {
    let hd = q.len() / G;
    let mut t = ts.start;
    if G < 4 {
        // Fewer than 4 heads leave too few chains of fused multiply-adds to cover their latency: two
        // positions at a time, each with the sums `dots_f16` gives it.
        while t + 2 <= ts.end {
            super::prefetch(
                kc.as_ptr()
                    .wrapping_add((t + super::KV_AHEAD) * stride + koff)
                    as *const u8,
                4 * hd,
            );
            let (k0, k1) = (
                &kc[t * stride + koff..][..hd],
                &kc[(t + 1) * stride + koff..][..hd],
            );
            let mut d = [[0f32; G]; 2];
            // SAFETY: the caller's contract, and both rows are `hd` values (sliced above).
            unsafe { dots2_f16::<G>(q, k0, k1, &mut d) };
            emit(t, &d[0]);
            emit(t + 1, &d[1]);
            t += 2;
        }
    }
    // SAFETY: the caller's contract: the features, and the lengths dots_f16 reads (score_rows slices
    // every K row to hd values).
    let dot = |q: &[f32], k: &[u16], d: &mut [f32; G]| unsafe { dots_f16::<G>(q, k, d) };
    super::score_rows(dot, q, kc, stride, koff, t..ts.end, emit)
}

/// [`dots_f16`] for two cached K rows at once (their chains interleaved; each row's sums as there).
///
/// # Safety
/// As [`dots_f16`], for both rows.
#[inline(always)]
unsafe fn dots2_f16<const G: usize>(q: &[f32], k0: &[u16], k1: &[u16], out: &mut [[f32; G]; 2]) {
    // SAFETY: c + 8 <= hd, so every load is inside the rows and inside head j's part of `q`.
    unsafe {
        let hd = k0.len();
        let mut acc = [[_mm256_setzero_ps(); G]; 2];
        for c in (0..hd).step_by(8) {
            let kv = [k0, k1]
                .map(|k| _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(c) as *const __m128i)));
            for j in 0..G {
                let qv = _mm256_loadu_ps(q.as_ptr().add(j * hd + c));
                for (acc, kv) in acc.iter_mut().zip(kv) {
                    acc[j] = _mm256_fmadd_ps(qv, kv, acc[j]);
                }
            }
        }
        for (out, acc) in out.iter_mut().zip(acc) {
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum(acc);
            }
        }
    }
}

/// See [`super::Kernels::weigh_rows`]: the G heads' outputs in runs of 8 dimensions, held in registers
/// while every position's V values are added in (in position order, one fused multiply-add each, as
/// `scalar::axpys_f16` adds them a row at a time: the same sums), rather than loaded and stored again for
/// each position. The weights are taken once per position into a per-thread buffer.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `o.len()` is `G * width` with `width` a multiple of 8, and every
/// row `vc[t * stride + koff..][..width]` for `t < n` exists (checked below).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn weigh_rows<const G: usize>(
    vc: &[u16],
    stride: usize,
    koff: usize,
    n: usize,
    mut weights: impl FnMut(usize) -> [f32; G],
    o: &mut [f32],
) {
    thread_local! {
        static WEIGHTS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let width = o.len() / G;
    if n == 0 {
        return;
    }
    assert!(
        (n - 1) * stride + koff + width <= vc.len(),
        "weigh_rows: {n} rows of {width} at {koff}, {stride} apart, in a cache of {}",
        vc.len()
    );
    WEIGHTS.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.clear();
        for t in 0..n {
            buf.extend_from_slice(&weights(t));
        }
        // SAFETY: the features are the caller's contract; row t's values c..c + 8 lie inside `vc` (the
        // assert above), `buf` holds n × G weights and `o` G × width values.
        unsafe {
            let (v, w) = (vc.as_ptr(), buf.as_ptr());
            // W runs of 8 dimensions at a time: G × W chains of fused multiply-adds, at least 8 of them to
            // cover the instruction's latency (3 heads alone waited on it: 4 cycles a position).
            let mut c = 0;
            macro_rules! runs {
                ($w:literal) => {
                    while c + 8 * $w <= width {
                        let mut acc: [[__m256; $w]; G] = std::array::from_fn(|j| {
                            std::array::from_fn(|r| {
                                _mm256_loadu_ps(o.as_ptr().add(j * width + c + 8 * r))
                            })
                        });
                        for t in 0..n {
                            if c == 0 {
                                super::prefetch(
                                    v.wrapping_add((t + super::KV_AHEAD) * stride + koff)
                                        as *const u8,
                                    2 * width,
                                );
                            }
                            let row = v.add(t * stride + koff + c);
                            let xv: [__m256; $w] = std::array::from_fn(|r| {
                                _mm256_cvtph_ps(_mm_loadu_si128(row.add(8 * r) as *const __m128i))
                            });
                            for (j, acc) in acc.iter_mut().enumerate() {
                                let a = _mm256_set1_ps(*w.add(t * G + j));
                                for (acc, &xv) in acc.iter_mut().zip(&xv) {
                                    *acc = _mm256_fmadd_ps(a, xv, *acc);
                                }
                            }
                        }
                        for (j, acc) in acc.iter().enumerate() {
                            for (r, &acc) in acc.iter().enumerate() {
                                _mm256_storeu_ps(o.as_mut_ptr().add(j * width + c + 8 * r), acc);
                            }
                        }
                        c += 8 * $w;
                    }
                };
            }
            if G <= 2 {
                runs!(4);
            } else if G <= 4 {
                runs!(2);
            }
            runs!(1);
        }
    });
}

/// Decode's prefetch, beside the arithmetic of block `b` of a tile of C consecutive weight rows of
/// `bytes`-byte blocks: asks for the tile's next C × `bytes` bytes in memory order, [`super::PREFETCH`]
/// bytes ahead, so the tile's rows are asked for as one stream, each line once or twice. Asking for each
/// row's block where it is read sent 4 hints per step, most of them for a line already asked for, and
/// was slower: Qwen2.5 decode 21.4 against 25.4 tok/s, SmolLM2 95 against 111 (see BENCHMARKS.md).
#[inline(always)]
fn prefetch_tile<const C: usize>(w: *const u8, b: usize, bytes: usize) {
    let (at, len) = (w.wrapping_add(b * C * bytes + super::PREFETCH), C * bytes);
    super::prefetch_l2(at, len);
    // The line of the last byte, which the 64-byte steps from `at` can miss (`at` need not start a line).
    super::prefetch_l2(at.wrapping_add(len - 1), 1);
}

/// ggml's `ggml_v_expf` for AVX2 (see `scalar::v_expf`, which spells out each lane).
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[inline(always)]
unsafe fn v_expf(x: __m256) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        let f = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let r = f(0x4b40_0000);
        let z = _mm256_fmadd_ps(x, f(0x3fb8_aa3b), r);
        let n = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(n, f(0x35bf_be8e), _mm256_fnmadd_ps(n, f(0x3f31_7200), x));
        let e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
        let k = _mm256_castsi256_ps(_mm256_add_epi32(
            e,
            _mm256_castps_si256(_mm256_set1_ps(1.0)),
        ));
        let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
        let c = _mm256_cmp_ps(abs_n, _mm256_set1_ps(126.0), _CMP_GT_OQ);
        let u = _mm256_mul_ps(b, b);
        let j = _mm256_fmadd_ps(
            _mm256_fmadd_ps(
                _mm256_fmadd_ps(f(0x3c07_2010), b, f(0x3d2b_9f17)),
                u,
                _mm256_fmadd_ps(f(0x3e2a_af33), b, f(0x3eff_fedb)),
            ),
            u,
            _mm256_mul_ps(f(0x3f7f_fff6), b),
        );
        if _mm256_movemask_ps(c) == 0 {
            return _mm256_fmadd_ps(j, k, k);
        }
        let g = _mm256_and_si256(
            _mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
            _mm256_set1_epi32(0x8200_0000u32 as i32),
        );
        let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f00_0000)));
        let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
        let d = _mm256_cmp_ps(abs_n, _mm256_set1_ps(192.0), _CMP_GT_OQ);
        _mm256_or_ps(
            _mm256_and_ps(d, _mm256_mul_ps(s1, s1)),
            _mm256_andnot_ps(
                d,
                _mm256_or_ps(
                    _mm256_and_ps(c, _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1)),
                    _mm256_andnot_ps(c, _mm256_fmadd_ps(k, j, k)),
                ),
            ),
        )
    }
}

/// See `scalar::swiglu`.
///
/// # Safety
/// The CPU supports AVX2 and FMA; `up` is at least as long as `gate`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn swiglu(gate: &mut [f32], up: &[f32]) {
    let whole = gate.len() / 8 * 8;
    // SAFETY: the caller's contract; every load and store lies in the first `whole` values of both.
    unsafe {
        for i in (0..whole).step_by(8) {
            let x = _mm256_loadu_ps(gate.as_ptr().add(i));
            let e = v_expf(_mm256_sub_ps(_mm256_setzero_ps(), x));
            let silu = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e));
            let y = _mm256_mul_ps(silu, _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(gate.as_mut_ptr().add(i), y);
        }
    }
    // Fewer than 8 left: the scalar set's libm part.
    super::scalar::swiglu(&mut gate[whole..], &up[whole..]);
}

/// The sum of the 8 lanes, in the order `scalar::hsum` spells out.
///
/// # Safety
/// The CPU supports AVX (inlined into the AVX2 entry points only).
#[inline(always)]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Stores a file-layout kernel's results, `value(k, i)` for weight row k and activation row i, into the
/// tile's rows (`out[i][k]`).
#[inline(always)]
fn store_tile<const R: usize, const C: usize>(out: &mut Tile, value: impl Fn(usize, usize) -> f32) {
    for (i, out) in out.iter_mut().take(R).enumerate() {
        for (k, o) in out.iter_mut().take(C).enumerate() {
            *o = value(k, i);
        }
    }
}

/// Stores a repacked kernel's results: `v[i]`'s lane k is weight row k's product with activation row i.
///
/// # Safety
/// The CPU supports AVX.
#[inline(always)]
unsafe fn store_rows<const R: usize>(v: [__m256; R], out: &mut Tile) {
    for (v, out) in v.into_iter().zip(out.iter_mut()) {
        // SAFETY: the caller's contract; a tile row holds 8 floats.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    }
}

/// One block of a repacked 32-value kernel into its float chains: `acc[i] += s[i] × (d_w × d_x)`, with
/// `dw` the 8 rows' scales and d_x activation row r + i's scale of block `b` (one fused multiply-add).
///
/// # Safety
/// The CPU supports AVX2 and FMA; `d` holds the scales of blocks `(r + i) * nb + b`.
#[inline(always)]
unsafe fn add_block<const R: usize>(
    acc: &mut [__m256; R],
    s: &[__m256i; R],
    dw: __m256,
    d: *const f32,
    at: impl Fn(usize) -> usize,
) {
    for (i, (acc, &s)) in acc.iter_mut().zip(s).enumerate() {
        // SAFETY: the caller's contract.
        unsafe {
            let xd = _mm256_set1_ps(*d.add(at(i)));
            *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, xd), *acc);
        }
    }
}

/// The f16 at `p` and the one after it, widened (a Q4_1 block's d and m).
///
/// # Safety
/// The CPU supports F16C; 4 bytes at `p` are readable.
#[inline(always)]
pub(super) unsafe fn f16x2(p: *const u8) -> (f32, f32) {
    // SAFETY: the caller's contract.
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128((p as *const i32).read_unaligned()));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

/// The f16 at `p`, widened.
///
/// # Safety
/// The CPU supports F16C; 2 bytes at `p` are readable.
#[inline(always)]
unsafe fn f16x1(p: *const u8) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        let bits = (p as *const u16).read_unaligned();
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
    }
}

/// Q4_1 weights in the file's layout (C rows of `rb` bytes at `w`) · Q8_1 activations (rows r..r + R),
/// rounded as `scalar::q4_1`: per block the exact integer Σ q·x (8 lanes, summed), one fused multiply-add
/// by (d_w × d_x) per output, the min terms apart. Only matrices that are not repacked ([`q4_1_x8`]) take
/// it: rows not in whole groups of 8, or `bench kernels`.
///
/// # Safety
/// As [`dot_tile`], with `R == t` and `C <= cn`; VNNI as [`dot_us8`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
pub(super) unsafe fn q4_1<const R: usize, const C: usize, const VNNI: bool>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: every pointer below stays inside `w` (C rows of nb blocks) and the activation rows r..r + R
    // (the caller's contract).
    unsafe {
        let nb = act.nb;
        let mut acc = [[0f32; R]; C];
        let mut summ = [[0f32; R]; C];
        let (qs, d, s) = (act.qs.as_ptr(), act.d.as_ptr(), act.s.as_ptr());
        for b in 0..nb {
            if R == 1 {
                prefetch_tile::<C>(w.as_ptr(), b, Q4_1_BYTES);
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q4_1_BYTES);
                let (dw, mw) = f16x2(p);
                let qw = q4_1_codes(p);
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let xq = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    let isum = hsum_i32(dot_us8::<VNNI>(qw, xq));
                    acc[k][i] = (isum as f32).mul_add(dw * *d.add(at), acc[k][i]);
                    summ[k][i] += mw * *s.add(at);
                }
            }
        }
        store_tile::<R, C>(out, |k, i| acc[k][i] + summ[k][i]);
    }
}

/// Q4_1 weights repacked 8 rows at a time ([`WType::Q4_1_X8`]) · Q8_1 activations, rounded as
/// `scalar::q4_1`, laid out as [`q5_0_x8`] takes them: a lane is one weight row's sum, a block's 8 runs
/// add into one integer vector, one fused multiply-add per block takes it into the row's float chain, and
/// the min terms (a multiply, then an add, as the scalar `summ += m_w × s_x`) go into a second vector.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C (and AVX-512 VNNI when `VNNI`); `w` holds one group of 8 rows of
/// `act.nb` blocks; activation rows `r..r + R` exist in `act`.
#[inline(always)]
pub(super) unsafe fn q4_1_x8<const R: usize, const VNNI: bool>(
    w: &[u8],
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract; every offset below lies inside block b of the group and the
    // activation rows' block b (32 values).
    unsafe {
        let nb = act.nb;
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut summ = [_mm256_setzero_ps(); R];
        let (qs, d, sx) = (act.qs.as_ptr(), act.d.as_ptr(), act.s.as_ptr());
        for b in 0..nb {
            let p = w.as_ptr().add(b * Q4_1_X8_BYTES);
            if R == 1 {
                prefetch_tile::<1>(w.as_ptr(), b, Q4_1_X8_BYTES);
            }
            let mut s = [_mm256_setzero_si256(); R];
            // Runs g and g + 4 share their nibble bytes; without VNNI, four runs' 16-bit pair sums are
            // added before they are widened (each at most 2 × 15 × 128, so four fit in 16 bits).
            let mut part = [_mm256_setzero_si256(); R];
            for g in 0..8 {
                let v = _mm256_loadu_si256(p.add(32 + 32 * (g % 4)) as *const __m256i);
                let q = if g < 4 {
                    _mm256_and_si256(v, m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)
                };
                for i in 0..R {
                    let x = qs.add(((r + i) * nb + b) * QK + 4 * g);
                    let xb = _mm256_set1_epi32((x as *const i32).read_unaligned());
                    if VNNI {
                        s[i] = _mm256_dpbusd_epi32(s[i], q, xb);
                    } else {
                        let p16 = _mm256_maddubs_epi16(q, xb);
                        part[i] = if g % 4 == 0 {
                            p16
                        } else {
                            _mm256_add_epi16(part[i], p16)
                        };
                        if g % 4 == 3 {
                            s[i] = _mm256_add_epi32(
                                s[i],
                                _mm256_madd_epi16(part[i], _mm256_set1_epi16(1)),
                            );
                        }
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
            add_block(&mut acc, &s, dw, d, |i| (r + i) * nb + b);
            for (i, summ) in summ.iter_mut().enumerate() {
                let sx = _mm256_set1_ps(*sx.add((r + i) * nb + b));
                *summ = _mm256_add_ps(*summ, _mm256_mul_ps(mw, sx));
            }
        }
        store_rows(
            std::array::from_fn::<_, R, _>(|i| _mm256_add_ps(acc[i], summ[i])),
            out,
        );
    }
}

/// Q8_0 weights in the file's layout · Q8_0 activations, rounded as `scalar::q8_0` (the weight's signs
/// moved onto the activations, as `ggml_vec_dot_q8_0_q8_0`, so the unsigned × signed product applies; the
/// 8 lanes summed per block, one fused multiply-add per output). Only matrices that are not repacked
/// ([`q8_0_x8`]) take it.
///
/// # Safety
/// As [`q4_1`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
pub(super) unsafe fn q8_0<const R: usize, const C: usize, const VNNI: bool>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: as in q4_1.
    unsafe {
        let nb = act.nb;
        let mut acc = [[0f32; R]; C];
        let (qs, d) = (act.qs.as_ptr(), act.d.as_ptr());
        for b in 0..nb {
            if R == 1 {
                prefetch_tile::<C>(w.as_ptr(), b, Q8_0_BYTES);
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q8_0_BYTES);
                let dw = f16x1(p);
                let qw = _mm256_loadu_si256(p.add(2) as *const __m256i);
                let aw = _mm256_sign_epi8(qw, qw);
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let xq = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    let isum = hsum_i32(dot_us8::<VNNI>(aw, _mm256_sign_epi8(xq, qw)));
                    acc[k][i] = (isum as f32).mul_add(dw * *d.add(at), acc[k][i]);
                }
            }
        }
        store_tile::<R, C>(out, |k, i| acc[k][i]);
    }
}

/// Q8_0 weights repacked 8 rows at a time ([`WType::Q8_0_X8`]) · Q8_0 activations, rounded as
/// `scalar::q8_0`, as [`q5_0_x8`]: a block's 8 runs add into one integer vector, one fused multiply-add per
/// block and output. With VNNI the weights are made unsigned (+ 128, the integer vector started at
/// -128·Σx); without, the signs move onto the activations (|w| · (x · sign w): the activations are within
/// ±127, so a 16-bit pair sum is at most 2 × 128 × 127 and does not saturate).
///
/// # Safety
/// As [`q5_0_x8`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // i indexes activation rows in several arrays
pub(super) unsafe fn q8_0_x8<const R: usize, const VNNI: bool>(
    w: &[u8],
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract; every offset below lies inside block b of the group and the
    // activation rows' block b (32 values).
    unsafe {
        let nb = act.nb;
        let mut acc = [_mm256_setzero_ps(); R];
        let (qs, d, x16) = (act.qs.as_ptr(), act.d.as_ptr(), act.x16.as_ptr());
        for b in 0..nb {
            let p = w.as_ptr().add(b * Q8_0_X8_BYTES);
            if R == 1 {
                prefetch_tile::<1>(w.as_ptr(), b, Q8_0_X8_BYTES);
            }
            let mut s: [__m256i; R] = std::array::from_fn(|i| {
                let off = if VNNI {
                    -8 * *x16.add((r + i) * nb + b)
                } else {
                    0
                };
                _mm256_set1_epi32(off)
            });
            for g in 0..8 {
                let q = _mm256_loadu_si256(p.add(16 + 32 * g) as *const __m256i);
                let u = if VNNI {
                    _mm256_xor_si256(q, _mm256_set1_epi8(-128))
                } else {
                    _mm256_sign_epi8(q, q)
                };
                for i in 0..R {
                    let x = qs.add(((r + i) * nb + b) * QK + 4 * g);
                    let xb = _mm256_set1_epi32((x as *const i32).read_unaligned());
                    s[i] = if VNNI {
                        _mm256_dpbusd_epi32(s[i], u, xb)
                    } else {
                        let sx = _mm256_sign_epi8(xb, q);
                        _mm256_add_epi32(s[i], dot_us8::<false>(u, sx))
                    };
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            add_block(&mut acc, &s, dw, d, |i| (r + i) * nb + b);
        }
        store_rows(acc, out);
    }
}

/// The 32 values of a Q4_1 block at `p` as unsigned bytes: its low nibbles (values 0..16), then its high
/// ones (16..32).
///
/// # Safety
/// The CPU supports AVX2; 20 bytes at `p` are readable.
#[inline(always)]
unsafe fn q4_1_codes(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let m4 = _mm_set1_epi8(0x0F);
        let q = _mm_loadu_si128(p.add(4) as *const __m128i);
        let lo = _mm_and_si128(q, m4);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        _mm256_set_m128i(hi, lo)
    }
}

/// The 32 values of a Q5_0 block at `p` as unsigned bytes, 16 above the block's values (0..32: the
/// nibble, and 16 where the fifth bit is set; ggml's `bytes_from_nibbles_32` and `bytes_from_bits_32`).
///
/// # Safety
/// The CPU supports AVX2; 22 bytes at `p` are readable.
#[inline(always)]
unsafe fn q5_0_codes(p: *const u8) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let q = _mm_loadu_si128(p.add(6) as *const __m128i);
        let nib = _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
            _mm256_set1_epi8(0x0F),
        );
        let qh = (p.add(2) as *const u32).read_unaligned();
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
        let bits = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        let set = _mm256_cmpeq_epi8(bits, _mm256_set1_epi64x(-1));
        _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
    }
}

/// Sums of u8 × i8 products in 8 lanes of i32 (lane l: bytes 4l..4l + 4): one VNNI instruction, or
/// the AVX2 pair. Neither saturates on the values given here (at most 2 × 128 × 127 per 16-bit pair), so
/// both give the same integers.
///
/// # Safety
/// The CPU supports AVX2, and AVX512-VNNI with AVX512-VL when `VNNI`.
#[inline(always)]
unsafe fn dot_us8<const VNNI: bool>(a: __m256i, b: __m256i) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        if VNNI {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
        } else {
            _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
        }
    }
}

/// Q5_0 weights · Q8_0 activations in the file's layout, rounded as `scalar::q5_0`: per block the exact
/// integer Σ (q - 16)·x, computed as Σ (q + 16·bit)·x in 8 lanes, summed, less 16·Σx (the activations'
/// part, once per activation block: [`Act`]'s `x16`), then one fused multiply-add per output. Only
/// matrices that are not repacked ([`q5_0_x8`]) take it: rows not in whole groups of 8, or `bench kernels`.
///
/// # Safety
/// As [`q4_1`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
pub(super) unsafe fn q5_0<const R: usize, const C: usize, const VNNI: bool>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: as in q4_1; `x16` has one value per activation block (the caller's contract for Q5_0).
    unsafe {
        let nb = act.nb;
        let mut acc = [[0f32; R]; C];
        let (qs, d, x16) = (act.qs.as_ptr(), act.d.as_ptr(), act.x16.as_ptr());
        for b in 0..nb {
            if R == 1 {
                prefetch_tile::<C>(w.as_ptr(), b, Q5_0_BYTES);
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q5_0_BYTES);
                let dw = f16x1(p);
                let qw = q5_0_codes(p);
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let xq = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    let isum = hsum_i32(dot_us8::<VNNI>(qw, xq)) - *x16.add(at);
                    acc[k][i] = (isum as f32).mul_add(dw * *d.add(at), acc[k][i]);
                }
            }
        }
        store_tile::<R, C>(out, |k, i| acc[k][i]);
    }
}

/// Q5_0 weights repacked 8 rows at a time ([`WType::Q5_0_X8`]) · Q8_0 activations, rounded as
/// `scalar::q5_0`: each 256-bit product takes a 4-value run of the 8 rows against those 4 activation
/// values broadcast, so a lane is one weight row's sum; a block's 8 runs add into one integer vector
/// started at -16·Σx, and one fused multiply-add per block takes it into the row's float chain. A run is
/// unpacked once for the tile's R activation rows.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C (and AVX-512 VNNI when `VNNI`); `w` holds one group of 8 rows of
/// `act.nb` blocks; activation rows `r..r + R` exist in `act`, with `x16` filled.
#[inline(always)]
pub(super) unsafe fn q5_0_x8<const R: usize, const VNNI: bool>(
    w: &[u8],
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract; every offset below lies inside block b of the group and the
    // activation rows' block b (32 values).
    unsafe {
        let nb = act.nb;
        let (m4, m16) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
        let mut acc = [_mm256_setzero_ps(); R];
        let (qs, d, x16) = (act.qs.as_ptr(), act.d.as_ptr(), act.x16.as_ptr());
        for b in 0..nb {
            let p = w.as_ptr().add(b * Q5_0_X8_BYTES);
            if R == 1 {
                prefetch_tile::<1>(w.as_ptr(), b, Q5_0_X8_BYTES);
            }
            let hb = _mm256_loadu_si256(p.add(144) as *const __m256i);
            let mut s: [__m256i; R] =
                std::array::from_fn(|i| _mm256_set1_epi32(-*x16.add((r + i) * nb + b)));
            // Runs g and g + 4 share their nibble bytes; without VNNI, two runs' 16-bit pair sums are
            // added before they are widened (each at most 2 × 31 × 128, so two fit in 16 bits).
            let mut pair = [_mm256_setzero_si256(); R];
            for g in 0..8 {
                let v = _mm256_loadu_si256(p.add(16 + 32 * (g % 4)) as *const __m256i);
                let nib = if g < 4 {
                    _mm256_and_si256(v, m4)
                } else {
                    _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)
                };
                // Bit g of each byte moved to bit 4 (16-bit shifts: what crosses from the neighbouring
                // byte lands outside the mask).
                let hi = match g {
                    0 => _mm256_slli_epi16(hb, 4),
                    1 => _mm256_slli_epi16(hb, 3),
                    2 => _mm256_slli_epi16(hb, 2),
                    3 => _mm256_slli_epi16(hb, 1),
                    4 => hb,
                    5 => _mm256_srli_epi16(hb, 1),
                    6 => _mm256_srli_epi16(hb, 2),
                    _ => _mm256_srli_epi16(hb, 3),
                };
                let q = _mm256_or_si256(nib, _mm256_and_si256(hi, m16));
                for i in 0..R {
                    let x = qs.add(((r + i) * nb + b) * QK + 4 * g);
                    let xb = _mm256_set1_epi32((x as *const i32).read_unaligned());
                    if VNNI {
                        s[i] = _mm256_dpbusd_epi32(s[i], q, xb);
                    } else if g % 2 == 0 {
                        pair[i] = _mm256_maddubs_epi16(q, xb);
                    } else {
                        let p16 = _mm256_add_epi16(pair[i], _mm256_maddubs_epi16(q, xb));
                        s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            add_block(&mut acc, &s, dw, d, |i| (r + i) * nb + b);
        }
        store_rows(acc, out);
    }
}

/// The sum of 8 i32 lanes (exact, so in any order).
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    // SAFETY: the caller's contract.
    unsafe {
        hsum_i32x4(_mm_add_epi32(
            _mm256_castsi256_si128(v),
            _mm256_extracti128_si256(v, 1),
        ))
    }
}

/// The sum of 4 i32 lanes.
///
/// # Safety
/// The CPU supports SSE2 (every x86_64).
#[inline(always)]
unsafe fn hsum_i32x4(v: __m128i) -> i32 {
    // SAFETY: SSE2 is part of x86_64.
    unsafe {
        let s = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01)))
    }
}

/// A Q4_K super-block's eight 6-bit scales (bytes 0..8) and mins (8..16), unpacked from its 12 bytes at
/// `p` as ggml's kernels do (the `utmp` shuffle of `kmask1..3`).
///
/// # Safety
/// 12 bytes at `p` are readable.
#[inline(always)]
unsafe fn q4_k_scales(p: *const u8) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f3f3f;
    const KMASK2: u32 = 0x0f0f0f0f;
    const KMASK3: u32 = 0x03030303;
    // SAFETY: the caller's contract.
    let rd = |o: usize| unsafe { (p.add(o) as *const u32).read_unaligned() };
    let (u0, u1, u2) = (rd(0), rd(4), rd(8));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}

/// Q4_K weights · Q8_K activations, with `scalar::q4_k`'s float steps (ggml's repacked
/// `gemv/gemm_q4_K_8x8_q8_K`): per super-block the exact integer sums of scale × q·x and of min × the
/// sub-block sums of x, here in 8 i32 lanes (maddubs, then a multiply-add by the sub-block's scale) added
/// up, then two fused multiply-adds per output.
///
/// # Safety
/// As [`q4_1`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
pub(super) unsafe fn q4_k<const R: usize, const C: usize>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: as in q4_1; a super-block's 256 activation values and 16 sums lie inside the row.
    unsafe {
        let nb = act.nb;
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [[0f32; R]; C];
        let mut accm = [[0f32; R]; C];
        let (qs, d, bs) = (act.qs.as_ptr(), act.d.as_ptr(), act.bsums.as_ptr());
        for b in 0..nb {
            // Per activation row: the sums of each 32 values (8 i16) and d.
            let mut q8s = [_mm_setzero_si128(); R];
            let mut xd = [0f32; R];
            for i in 0..R {
                let at = (r + i) * nb + b;
                let s16 = _mm256_loadu_si256(bs.add(at * 16) as *const __m256i);
                q8s[i] = _mm_hadd_epi16(
                    _mm256_castsi256_si128(s16),
                    _mm256_extracti128_si256(s16, 1),
                );
                xd[i] = *d.add(at);
            }
            if R == 1 {
                prefetch_tile::<C>(w.as_ptr(), b, Q4_K_BYTES);
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q4_K_BYTES);
                let (dw, dmin) = f16x2(p);
                let u = q4_k_scales(p.add(4));
                let ms = _mm256_cvtepu8_epi16(_mm_set_epi32(
                    u[3] as i32,
                    u[2] as i32,
                    u[1] as i32,
                    u[0] as i32,
                ));
                let sc128 = _mm256_castsi256_si128(ms);
                let mins = _mm256_extracti128_si256(ms, 1);
                let scales = _mm256_set_m128i(sc128, sc128);
                let mut sumi = [_mm256_setzero_si256(); R];
                for c in 0..4 {
                    // The sub-blocks 2c and 2c + 1: their scales over all 16 i16 lanes.
                    let sl = _mm256_shuffle_epi8(
                        scales,
                        _mm256_set1_epi16((0x0100 + 0x0202 * 2 * c) as i16),
                    );
                    let sh = _mm256_shuffle_epi8(
                        scales,
                        _mm256_set1_epi16((0x0302 + 0x0202 * 2 * c) as i16),
                    );
                    let q = _mm256_loadu_si256(p.add(16 + 32 * c) as *const __m256i);
                    let ql = _mm256_and_si256(q, m4);
                    let qh = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    for i in 0..R {
                        let x = qs.add(((r + i) * nb + b) * QK_K + 64 * c);
                        let xl = _mm256_loadu_si256(x as *const __m256i);
                        let xh = _mm256_loadu_si256(x.add(32) as *const __m256i);
                        let pl = _mm256_madd_epi16(sl, _mm256_maddubs_epi16(ql, xl));
                        let ph = _mm256_madd_epi16(sh, _mm256_maddubs_epi16(qh, xh));
                        sumi[i] = _mm256_add_epi32(sumi[i], _mm256_add_epi32(pl, ph));
                    }
                }
                for i in 0..R {
                    let isum = hsum_i32(sumi[i]);
                    let imin = hsum_i32x4(_mm_madd_epi16(mins, q8s[i]));
                    acc[k][i] = (isum as f32).mul_add(dw * xd[i], acc[k][i]);
                    accm[k][i] = (imin as f32).mul_add(dmin * xd[i], accm[k][i]);
                }
            }
        }
        store_tile::<R, C>(out, |k, i| acc[k][i] - accm[k][i]);
    }
}

/// Repacked Q4_K weights (one group of 8 rows, [`WType::Q4_K_X8`]) · Q8_K activations (rows r..r + R),
/// with [`q4_k`]'s float steps (so `scalar::q4_k`'s, bit for bit), the 8 weight rows in the 8 lanes: each
/// 256-bit product takes a 4-value run of the 8 rows against those 4 activation values broadcast, so a
/// sub-block's exact integer sums come out one row per lane with no horizontal sums, and each unpacked
/// run of weights serves the R activation rows. Without VNNI the products of a sub-block add up in 16-bit
/// lanes (16 products of a nibble and a value of magnitude at most 127 stay below 2^15) and are scaled by
/// one multiply-add; with VNNI they add up in 32-bit lanes and are scaled by one multiply.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C (and AVX512-VNNI with AVX512-VL when `VNNI`); `w` holds the group's
/// `act.nb` super-blocks ([`Q4_K_X8_BYTES`] each) and activation rows r..r + R exist in `act`.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // i indexes activation rows in several arrays
pub(super) unsafe fn q4_k_x8<const R: usize, const VNNI: bool>(
    w: &[u8],
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract; every offset below lies inside super-block b of the group and the
    // activation rows' super-block b (256 values, 16 sums).
    unsafe {
        let nb = act.nb;
        let m4 = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut accm = [_mm256_setzero_ps(); R];
        let (qs, d, bs) = (act.qs.as_ptr(), act.d.as_ptr(), act.bsums.as_ptr());
        for b in 0..nb {
            let p = w.as_ptr().add(b * Q4_K_X8_BYTES);
            if R == 1 {
                prefetch_tile::<1>(w.as_ptr(), b, Q4_K_X8_BYTES);
            }
            let mut isum = [_mm256_setzero_si256(); R];
            for j in 0..8 {
                // Sub-block j: the low nibbles of chunk j / 2 for even j, the high ones for odd j.
                let mut s = [_mm256_setzero_si256(); R];
                for g in 0..8 {
                    let v =
                        _mm256_loadu_si256(p.add(160 + 256 * (j / 2) + 32 * g) as *const __m256i);
                    let q = if j % 2 == 0 {
                        _mm256_and_si256(v, m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)
                    };
                    for i in 0..R {
                        let x = qs.add(((r + i) * nb + b) * QK_K + 32 * j + 4 * g);
                        let xb = _mm256_set1_epi32((x as *const i32).read_unaligned());
                        s[i] = if VNNI {
                            _mm256_dpbusd_epi32(s[i], q, xb)
                        } else {
                            _mm256_add_epi16(s[i], _mm256_maddubs_epi16(q, xb))
                        };
                    }
                }
                let sc8 = _mm_loadl_epi64(p.add(32 + 8 * j) as *const __m128i);
                if VNNI {
                    let sc = _mm256_cvtepu8_epi32(sc8);
                    for i in 0..R {
                        isum[i] = _mm256_add_epi32(isum[i], _mm256_mullo_epi32(s[i], sc));
                    }
                } else {
                    // Row k's scale in 16-bit lanes 2k and 2k + 1, the two sums of row k.
                    let sc = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(sc8, sc8));
                    for i in 0..R {
                        isum[i] = _mm256_add_epi32(isum[i], _mm256_madd_epi16(s[i], sc));
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(p.add(16) as *const __m128i));
            for i in 0..R {
                let at = (r + i) * nb + b;
                // The sums of the 8 sub-blocks' activations, paired as the mins are.
                let s16 = _mm256_loadu_si256(bs.add(at * 16) as *const __m256i);
                let mut sums = [0i32; 4];
                _mm_storeu_si128(
                    sums.as_mut_ptr() as *mut __m128i,
                    _mm_hadd_epi16(
                        _mm256_castsi256_si128(s16),
                        _mm256_extracti128_si256(s16, 1),
                    ),
                );
                let mut imin = _mm256_setzero_si256();
                for (pair, &sum) in sums.iter().enumerate() {
                    let mins = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                        p.add(96 + 16 * pair) as *const __m128i
                    ));
                    imin = _mm256_add_epi32(imin, _mm256_madd_epi16(mins, _mm256_set1_epi32(sum)));
                }
                let xd = _mm256_set1_ps(*d.add(at));
                acc[i] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(dw, xd), acc[i]);
                accm[i] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(dmin, xd), accm[i]);
            }
        }
        store_rows(
            std::array::from_fn::<_, R, _>(|i| _mm256_sub_ps(acc[i], accm[i])),
            out,
        );
    }
}

/// The 6-bit values (0..64) of 32-value run `n` (0..8), values 4g..4g + 4, of the 8 rows of a repacked
/// Q6_K super-block at `p`: row k's in bytes 4k..4k + 4.
///
/// # Safety
/// The CPU supports AVX2; `p` starts a [`Q6_K_X8_BYTES`] super-block.
#[inline(always)]
unsafe fn q6_k_x8_codes(p: *const u8, n: usize, g: usize) -> __m256i {
    // SAFETY: the caller's contract; both offsets lie inside the super-block.
    unsafe {
        let (j, k4) = (n / 4, n % 4);
        let ql = _mm256_loadu_si256(p.add(144 + 256 * (2 * j + k4 % 2) + 32 * g) as *const __m256i);
        let qh = _mm256_loadu_si256(p.add(1168 + 256 * j + 32 * g) as *const __m256i);
        let m15 = _mm256_set1_epi8(15);
        let lo = if k4 < 2 {
            _mm256_and_si256(ql, m15)
        } else {
            _mm256_and_si256(_mm256_srli_epi16(ql, 4), m15)
        };
        // Bits 2·k4 and 2·k4 + 1 of each byte moved to bits 4 and 5 (16-bit shifts: what crosses from the
        // neighbouring byte lands outside the mask).
        let hi = match k4 {
            0 => _mm256_slli_epi16(qh, 4),
            1 => _mm256_slli_epi16(qh, 2),
            2 => qh,
            _ => _mm256_srli_epi16(qh, 2),
        };
        _mm256_or_si256(lo, _mm256_and_si256(hi, _mm256_set1_epi8(0x30)))
    }
}

/// Products of 4-value runs of 8 rows (`q`, u8) with 4 activation values broadcast (`x`, i8), each row's
/// sum times its scale (`sc`, row k's in 16-bit lanes 2k and 2k + 1), in 32-bit lanes.
///
/// # Safety
/// The CPU supports AVX2.
#[inline(always)]
unsafe fn scaled_dot_x8(q: __m256i, x: __m256i, sc: __m256i) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), sc) }
}

/// The scales of 16-value group h of a repacked Q6_K super-block at `p`, as [`scaled_dot_x8`] takes them.
///
/// # Safety
/// As [`q6_k_x8_codes`].
#[inline(always)]
unsafe fn q6_k_x8_scale(p: *const u8, h: usize) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let s8 = _mm_loadl_epi64(p.add(16 + 8 * h) as *const __m128i);
        _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s8, s8))
    }
}

/// Σ over the 16-value groups 2l and 2l + 1 of scale × the group's activation sum, for each of the 8 rows
/// (32-bit lane k): the part of ggml's lane l that the values' offset of 32 scales.
///
/// # Safety
/// As [`q6_k_x8_codes`]; `bs` holds the activation super-block's 16 sums.
#[inline(always)]
unsafe fn q6_k_x8_offset(p: *const u8, bs: *const i16, l: usize) -> __m256i {
    // SAFETY: the caller's contract.
    unsafe {
        let pair = _mm_loadu_si128(p.add(16 + 16 * l) as *const __m128i);
        let sc = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(pair, _mm_srli_si128(pair, 8)));
        let sums = (bs.add(2 * l) as *const i32).read_unaligned();
        _mm256_madd_epi16(sc, _mm256_set1_epi32(sums))
    }
}

/// Repacked Q6_K weights (one group of 8 rows, [`WType::Q6_K_X8`]) · Q8_K activations (rows r..r + R),
/// the 8 weight rows in the 8 lanes. `BATCHED` (at least [`super::BATCHED_ROWS`] activation rows), as
/// [`q6_k`]'s batched form: each row's exact integer sum per super-block, times d_w, one fused
/// multiply-add by d_x. Otherwise as ggml's vec_dot: its 8 integer lanes per row are formed here one lane at a time
/// across the 8 rows (lane l: values 4l..4l + 4 of every run), each kept in its own float accumulator,
/// and the accumulators summed at the end in [`hsum`]'s order, so every row gets the products and sums of
/// `scalar::q6_k`, bit for bit. Each 4-value run is scaled with `maddubs` and `madd` in both SIMD sets:
/// VNNI products summed over a 16-value group and one 32-bit multiply by its scale measured slower (76
/// against 96 G multiply-adds/s on 100 rows, AMD EPYC Zen 4).
///
/// # Safety
/// As [`q4_k_x8`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // i indexes activation rows in several arrays
pub(super) unsafe fn q6_k_x8<const R: usize, const BATCHED: bool>(
    w: &[u8],
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the caller's contract; every offset below lies inside super-block b of the group and the
    // activation rows' super-block b.
    unsafe {
        let nb = act.nb;
        let (qs, d, bs) = (act.qs.as_ptr(), act.d.as_ptr(), act.bsums.as_ptr());
        let xq = |i: usize, b: usize, at: usize| {
            let x = qs.add(((r + i) * nb + b) * QK_K + at);
            _mm256_set1_epi32((x as *const i32).read_unaligned())
        };
        let mut acc = [_mm256_setzero_ps(); R];
        let mut lanes = [[_mm256_setzero_ps(); 8]; R];
        for b in 0..nb {
            let p = w.as_ptr().add(b * Q6_K_X8_BYTES);
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i));
            if R == 1 {
                prefetch_tile::<1>(w.as_ptr(), b, Q6_K_X8_BYTES);
            }
            if BATCHED {
                let mut isum = [_mm256_setzero_si256(); R];
                for n in 0..8 {
                    for half in 0..2 {
                        let sc = q6_k_x8_scale(p, 2 * n + half);
                        for g in 4 * half..4 * half + 4 {
                            let q = q6_k_x8_codes(p, n, g);
                            for i in 0..R {
                                let v = scaled_dot_x8(q, xq(i, b, 32 * n + 4 * g), sc);
                                isum[i] = _mm256_add_epi32(isum[i], v);
                            }
                        }
                    }
                }
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let mut off = _mm256_setzero_si256();
                    for l in 0..8 {
                        off = _mm256_add_epi32(off, q6_k_x8_offset(p, bs.add(at * 16), l));
                    }
                    let isum = _mm256_sub_epi32(isum[i], _mm256_slli_epi32(off, 5));
                    let wsum = _mm256_mul_ps(dw, _mm256_cvtepi32_ps(isum));
                    acc[i] = _mm256_fmadd_ps(wsum, _mm256_set1_ps(*d.add(at)), acc[i]);
                }
            } else {
                for l in 0..8 {
                    let mut lane: [__m256i; R] = std::array::from_fn(|i| {
                        let off = q6_k_x8_offset(p, bs.add(((r + i) * nb + b) * 16), l);
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5))
                    });
                    for n in 0..8 {
                        let q = q6_k_x8_codes(p, n, l);
                        let sc = q6_k_x8_scale(p, 2 * n + l / 4);
                        for i in 0..R {
                            let v = scaled_dot_x8(q, xq(i, b, 32 * n + 4 * l), sc);
                            lane[i] = _mm256_add_epi32(lane[i], v);
                        }
                    }
                    for i in 0..R {
                        let dd = _mm256_mul_ps(_mm256_set1_ps(*d.add((r + i) * nb + b)), dw);
                        lanes[i][l] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lane[i]), lanes[i][l]);
                    }
                }
            }
        }
        store_rows(
            std::array::from_fn::<_, R, _>(|i| {
                if BATCHED {
                    acc[i]
                } else {
                    // hsum's order: (0 + 4), (1 + 5), (2 + 6), (3 + 7), then (a + c) + (b + d), in every lane.
                    let l = &lanes[i];
                    let s: [__m256; 4] = std::array::from_fn(|j| _mm256_add_ps(l[j], l[j + 4]));
                    _mm256_add_ps(_mm256_add_ps(s[0], s[2]), _mm256_add_ps(s[1], s[3]))
                }
            }),
            out,
        );
    }
}

/// Q6_K weights · Q8_K activations, as ggml's AVX2 `ggml_vec_dot_q6_K_q8_K` (which `scalar::q6_k` spells
/// out): the same 8 integer lanes per super-block, one fused multiply-add by d_x × d_w, then [`hsum`];
/// `BATCHED`, as `scalar::q6_k_batched`: the lanes' sum × d_w, one scalar fused multiply-add by d_x.
///
/// # Safety
/// As [`q4_1`].
#[inline(always)]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
pub(super) unsafe fn q6_k<const R: usize, const C: usize, const BATCHED: bool>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: as in q4_k.
    unsafe {
        let nb = act.nb;
        let m3 = _mm256_set1_epi8(3);
        let m15 = _mm256_set1_epi8(15);
        let mut acc = [[_mm256_setzero_ps(); R]; C];
        let mut accb = [[0f32; R]; C];
        let (qs, d, bs) = (act.qs.as_ptr(), act.d.as_ptr(), act.bsums.as_ptr());
        for b in 0..nb {
            if R == 1 {
                prefetch_tile::<C>(w.as_ptr(), b, Q6_K_BYTES);
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q6_K_BYTES);
                let dw = f16x1(p.add(208));
                let scales = _mm_loadu_si128(p.add(192) as *const __m128i);
                let scales16 = _mm256_cvtepi8_epi16(scales);
                let mut sumi = [_mm256_setzero_si256(); R];
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let s16 = _mm256_loadu_si256(bs.add(at * 16) as *const __m256i);
                    sumi[i] = _mm256_sub_epi32(
                        sumi[i],
                        _mm256_slli_epi32(_mm256_madd_epi16(s16, scales16), 5),
                    );
                }
                for j in 0..2 {
                    let ql1 = _mm256_loadu_si256(p.add(64 * j) as *const __m256i);
                    let ql2 = _mm256_loadu_si256(p.add(64 * j + 32) as *const __m256i);
                    let qh = _mm256_loadu_si256(p.add(128 + 32 * j) as *const __m256i);
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                    let h1 = _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(12)), 2);
                    let h2 = _mm256_and_si256(qh, _mm256_set1_epi8(48));
                    let h3 = _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(-64)), 2);
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(ql1, m15), h0),
                        _mm256_or_si256(_mm256_and_si256(ql2, m15), h1),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15), h2),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql2, 4), m15), h3),
                    ];
                    // The scales of the 32-value runs 4j..4j + 4: run n's two groups, each over 8 i16
                    // lanes (ggml's get_scale_shuffle).
                    let mut sc = [_mm256_setzero_si256(); 4];
                    for (n, sc) in sc.iter_mut().enumerate() {
                        let g = (2 * (4 * j + n)) as i8;
                        let sel = _mm_set_epi8(
                            g + 1,
                            g + 1,
                            g + 1,
                            g + 1,
                            g + 1,
                            g + 1,
                            g + 1,
                            g + 1,
                            g,
                            g,
                            g,
                            g,
                            g,
                            g,
                            g,
                            g,
                        );
                        *sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, sel));
                    }
                    for i in 0..R {
                        let x = qs.add(((r + i) * nb + b) * QK_K + 128 * j);
                        let mut s = sumi[i];
                        let mut p16 = [_mm256_setzero_si256(); 4];
                        for n in 0..4 {
                            let xv = _mm256_loadu_si256(x.add(32 * n) as *const __m256i);
                            p16[n] = _mm256_madd_epi16(sc[n], _mm256_maddubs_epi16(q[n], xv));
                        }
                        s = _mm256_add_epi32(s, _mm256_add_epi32(p16[0], p16[1]));
                        s = _mm256_add_epi32(s, _mm256_add_epi32(p16[2], p16[3]));
                        sumi[i] = s;
                    }
                }
                for i in 0..R {
                    let dx = *d.add((r + i) * nb + b);
                    if BATCHED {
                        let isum = hsum_i32(sumi[i]);
                        accb[k][i] = (dw * isum as f32).mul_add(dx, accb[k][i]);
                    } else {
                        let dd = _mm256_set1_ps(dx * dw);
                        acc[k][i] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(sumi[i]), acc[k][i]);
                    }
                }
            }
        }
        store_tile::<R, C>(
            out,
            |k, i| if BATCHED { accb[k][i] } else { hsum(acc[k][i]) },
        );
    }
}

/// `out[j] = q[j] · k` for the G query heads in `q` and one cached f16 K row (8 lanes, then `hsum`).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `q.len() == G * k.len()` and `k.len()` is a multiple of 8.
#[inline(always)]
pub(super) unsafe fn dots_f16<const G: usize>(q: &[f32], k: &[u16], out: &mut [f32; G]) {
    // SAFETY: c + 8 <= hd, so every load is inside `k` and inside head j's part of `q`.
    unsafe {
        let hd = k.len();
        let mut acc = [_mm256_setzero_ps(); G];
        for c in (0..hd).step_by(8) {
            let kv = _mm256_cvtph_ps(_mm_loadu_si128(k.as_ptr().add(c) as *const __m128i));
            for (j, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(j * hd + c)), kv, *acc);
            }
        }
        if G >= 4 {
            // Eight heads' sums at a time, transposed into one vector.
            for (j0, out) in (0..G).step_by(8).zip(out.chunks_mut(8)) {
                let v: [__m256; 8] = std::array::from_fn(|k| {
                    if j0 + k < G {
                        acc[j0 + k]
                    } else {
                        _mm256_setzero_ps()
                    }
                });
                let mut sums = [0f32; 8];
                _mm256_storeu_ps(sums.as_mut_ptr(), hsum8(v));
                out.copy_from_slice(&sums[..out.len()]);
            }
        } else {
            for (o, acc) in out.iter_mut().zip(acc) {
                *o = hsum(acc);
            }
        }
    }
}

/// [`hsum`] of 8 vectors at once: lane k of the result is `hsum(v[k])`, with the same additions in the
/// same order (the lanes' halves, then lanes 0 + 2 and 1 + 3, then those two), done across the vectors
/// with shuffles: 7 additions and 14 shuffles where 8 `hsum`s take 24 additions and 24 shuffles.
///
/// # Safety
/// The CPU supports AVX.
#[inline(always)]
unsafe fn hsum8(v: [__m256; 8]) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        // s[k]: lanes 0..4 v[k]'s halves added (lane i: v_i + v_(i+4)), lanes 4..8 v[k + 4]'s.
        let s: [__m256; 4] = std::array::from_fn(|k| {
            _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(v[k], v[k + 4]),
                _mm256_permute2f128_ps::<0x31>(v[k], v[k + 4]),
            )
        });
        // Per 128-bit half: (0 + 2, 1 + 3) of the first vector, then of the second.
        let pair = |a: __m256, b: __m256| {
            _mm256_add_ps(
                _mm256_shuffle_ps::<0x44>(a, b),
                _mm256_shuffle_ps::<0xEE>(a, b),
            )
        };
        let (t01, t23) = (pair(s[0], s[1]), pair(s[2], s[3]));
        _mm256_add_ps(
            _mm256_shuffle_ps::<0x88>(t01, t23),
            _mm256_shuffle_ps::<0xDD>(t01, t23),
        )
    }
}

/// See [`super::Kernels::quantize`]: `quant::quantize`'s steps, 8 values at a time. The largest magnitude
/// is exact in any order; `v × id` and `iscale × v` are the same single roundings, converted to integers
/// with the default rounding mode (to nearest, ties to even, as `round_ties_even`); the scales are
/// computed as there, one value at a time.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C; `cols` is a multiple of `t`'s block and `x.len()` of `cols`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize(x: &[f32], cols: usize, t: ActType, out: &mut Act) {
    let (rows, nb) = out.reset(x.len(), cols, t);
    let blocks = rows * nb;
    let qk = t.block_len();
    // SAFETY: the caller's contract; `reset` sized `qs` to blocks × qk values, `d`, `s` and `x16` (for
    // Q8_0) to `blocks`, `bsums` (for Q8_K) to 16 per block, and `x` holds blocks × qk values.
    unsafe {
        let sign = _mm256_set1_ps(-0.0);
        let absmax = |p: *const f32, n: usize| {
            let mut m = _mm256_setzero_ps();
            for j in (0..n).step_by(8) {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(j))));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)))
        };
        // 8 values times `scale`, rounded to integers, stored as i8 at `q`; their i32 sum.
        let round8 = |p: *const f32, scale: __m256, q: *mut i8, cap: bool| {
            let mut v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(p), scale));
            if cap {
                v = _mm256_min_epi32(v, _mm256_set1_epi32(127));
            }
            let w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64(q as *mut __m128i, _mm_packs_epi16(w, w));
            v
        };
        let (xp, qs) = (x.as_ptr(), out.qs.as_mut_ptr());
        for blk in 0..blocks {
            let (p, q) = (xp.add(blk * qk), qs.add(blk * qk));
            let amax = absmax(p, qk);
            if t == ActType::Q8_K {
                if amax == 0.0 {
                    // d stays 0 and the values 0, as ggml leaves them.
                    continue;
                }
                // The first value of that magnitude, with its sign.
                let target = _mm256_set1_ps(amax);
                let mut j = 0;
                let max = loop {
                    let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(j)));
                    let hit = _mm256_movemask_ps(_mm256_cmp_ps(a, target, _CMP_EQ_OQ));
                    if hit != 0 {
                        break *p.add(j + hit.trailing_zeros() as usize);
                    }
                    j += 8;
                };
                let iscale = -127.0 / max;
                let bs = out.bsums.as_mut_ptr().add(blk * 16);
                for g in 0..16 {
                    let a = round8(p.add(16 * g), _mm256_set1_ps(iscale), q.add(16 * g), true);
                    let b = round8(
                        p.add(16 * g + 8),
                        _mm256_set1_ps(iscale),
                        q.add(16 * g + 8),
                        true,
                    );
                    *bs.add(g) = hsum_i32(_mm256_add_epi32(a, b)) as i16;
                }
                *out.d.as_mut_ptr().add(blk) = 1.0 / iscale;
            } else {
                let d = amax / 127.0;
                let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
                let mut sum = _mm256_setzero_si256();
                for j in (0..QK).step_by(8) {
                    let v = round8(p.add(j), _mm256_set1_ps(id), q.add(j), false);
                    sum = _mm256_add_epi32(sum, v);
                }
                let sum = hsum_i32(sum);
                if t == ActType::Q8_0 {
                    *out.x16.as_mut_ptr().add(blk) = 16 * sum;
                }
                *out.d.as_mut_ptr().add(blk) = f16_round(d);
                if t == ActType::Q8_1 {
                    *out.s.as_mut_ptr().add(blk) = f16_round(d * sum as f32);
                }
            }
        }
    }
}

/// `v` rounded to f16 (to nearest, ties to even) and widened back.
///
/// # Safety
/// The CPU supports F16C.
#[inline(always)]
unsafe fn f16_round(v: f32) -> f32 {
    // SAFETY: the caller's contract.
    unsafe {
        let h = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(v));
        _mm_cvtss_f32(_mm_cvtph_ps(h))
    }
}

/// See [`super::Kernels::geglu`]: 8 values at a time, the table read with a gather (4 bytes at each f16
/// index, the low 2 kept), the rest one at a time as `scalar::geglu`.
///
/// # Safety
/// The CPU supports AVX2 and F16C; `gate` and `up` have the same length and `table` more than 65,536
/// entries.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn geglu(gate: &mut [f32], up: &[f32], table: &[u16]) {
    let n8 = gate.len() / 8 * 8;
    // SAFETY: the caller's contract; every index is an f16's bits (at most 65,535), so each 4-byte read
    // ends inside the table.
    unsafe {
        let (lo, hi) = (_mm256_set1_ps(-10.0), _mm256_set1_ps(10.0));
        let t = table.as_ptr() as *const i32;
        for j in (0..n8).step_by(8) {
            let x = _mm256_loadu_ps(gate.as_ptr().add(j));
            let u = _mm256_loadu_ps(up.as_ptr().add(j));
            let h = _mm256_cvtepu16_epi32(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
            let g = _mm256_i32gather_epi32::<2>(t, h);
            let y = _mm256_cvtph_ps(_mm_packus_epi32(
                _mm256_castsi256_si128(_mm256_and_si256(g, _mm256_set1_epi32(0xFFFF))),
                _mm256_extracti128_si256(_mm256_and_si256(g, _mm256_set1_epi32(0xFFFF)), 1),
            ));
            let y = _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, hi, _CMP_GE_OQ));
            let y = _mm256_mul_ps(y, u);
            let y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LE_OQ), y);
            _mm256_storeu_ps(gate.as_mut_ptr().add(j), y);
        }
    }
    super::scalar::geglu(&mut gate[n8..], &up[n8..], table);
}

/// [`scalar::expf`] (glibc's `expf`) for 8 lanes: the same double steps and fused multiply-adds, each
/// half of 4 lanes in double, the table read with a gather; the out-of-range lanes blended in as there.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn expf8(x: __m256) -> __m256 {
    use super::scalar::{
        EXPF_INV_LN2_N, EXPF_MAY_UNDERFLOW, EXPF_OVERFLOW, EXPF_POLY, EXPF_SHIFT, EXPF_TABLE,
        EXPF_UNDERFLOW,
    };
    // SAFETY: the caller's contract; every table index is masked to 0..32.
    unsafe {
        let half = |xd: __m256d| {
            let kd = _mm256_fmadd_pd(
                _mm256_set1_pd(EXPF_INV_LN2_N),
                xd,
                _mm256_set1_pd(EXPF_SHIFT),
            );
            let ki = _mm256_castpd_si256(kd);
            let kd = _mm256_sub_pd(kd, _mm256_set1_pd(EXPF_SHIFT));
            let r = _mm256_fmsub_pd(_mm256_set1_pd(EXPF_INV_LN2_N), xd, kd);
            let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
            let t = _mm256_i64gather_epi64::<8>(EXPF_TABLE.as_ptr() as *const i64, idx);
            let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
            let z = _mm256_fmadd_pd(
                r,
                _mm256_set1_pd(EXPF_POLY[0]),
                _mm256_set1_pd(EXPF_POLY[1]),
            );
            let y = _mm256_fmadd_pd(r, _mm256_set1_pd(EXPF_POLY[2]), _mm256_set1_pd(1.0));
            let y = _mm256_fmadd_pd(z, _mm256_mul_pd(r, r), y);
            _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
        };
        let lo = half(_mm256_cvtps_pd(_mm256_castps256_ps128(x)));
        let hi = half(_mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x)));
        let y = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(lo), hi);
        let bound = |b: u32| _mm256_castsi256_ps(_mm256_set1_epi32(b as i32));
        let y = _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps::<_CMP_GT_OQ>(x, bound(EXPF_OVERFLOW)),
        );
        let tiny = _mm256_blendv_ps(
            bound(1),
            _mm256_setzero_ps(),
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, bound(EXPF_UNDERFLOW)),
        );
        let y = _mm256_blendv_ps(
            y,
            tiny,
            _mm256_cmp_ps::<_CMP_LT_OQ>(x, bound(EXPF_MAY_UNDERFLOW)),
        );
        _mm256_blendv_ps(y, _mm256_add_ps(x, x), _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
    }
}

/// See [`super::Kernels::softmax`]: the numerators 8 at a time with [`expf8`], the rest as
/// `scalar::softmax`, the sum added in order.
///
/// # Safety
/// The CPU supports AVX2 and FMA.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn softmax(sc: &mut [f32]) -> f32 {
    let max = sc.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let n8 = sc.len() / 8 * 8;
    // SAFETY: the features are the caller's contract; j + 8 <= n8 <= sc.len().
    unsafe {
        let m = _mm256_set1_ps(max);
        for j in (0..n8).step_by(8) {
            let p = sc.as_mut_ptr().add(j);
            _mm256_storeu_ps(p, expf8(_mm256_sub_ps(_mm256_loadu_ps(p), m)));
        }
    }
    for s in &mut sc[n8..] {
        *s = super::scalar::expf(*s - max);
    }
    let mut sum = 0f32;
    for &s in sc.iter() {
        sum += s;
    }
    1.0 / sum
}
