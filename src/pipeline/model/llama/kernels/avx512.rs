//! The AVX-512 kernel set: Q4_1 decode with 512-bit integer work (two blocks per unpack and per VNNI
//! instruction; with several activation rows the AVX2 kernel's 8-row tiles with the 256-bit VNNI product,
//! which measured 1.6x the 512-bit kernel on AMD Zen 5: 61 against 37.5 G multiply-adds/s on 100 rows,
//! `stoplab bench kernels --formats q4_1`), Q8_0 and Q5_0 (file layout and repacked) with the 256-bit VNNI
//! product, Q4_K and Q6_K (file layout and repacked) as the AVX2 kernels, compiled with this set's
//! features; attention as the AVX2 set. The float accumulation still goes block after block as there, so every sum is
//! bit-identical to the AVX2 and scalar sets' (`kernels::tests` holds them to it): a 512-bit accumulation
//! would add the blocks in another order, and that alone flipped a greedy id of llama.cpp's reference on a
//! 0.04-nat margin.

use std::arch::x86_64::*;

use super::super::quant::{Act, Q4_1_BYTES, QK, WType};
use super::avx2::{
    f16x2, hsum, mul_sum_us8, q4_1, q4_k, q4_k_x8, q5_0, q5_0_x8, q6_k, q6_k_x8, q8_0,
};
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
    prefetch: bool,
    emit: impl FnMut(usize, usize, usize, usize, &Tile),
) {
    let rows = act.rows();
    // SAFETY: the caller's contract, and `tiles` hands each tile whole weight rows and
    // activation rows inside `act` (`r + t <= rows`) of the shapes `shape` gives.
    let tile = |w: &[u8], r: usize, t: usize, cn: usize, out: &mut Tile| unsafe {
        match wt {
            WType::Q4_1 if act.rows() > 1 => {
                super::dispatch_rows!(q4_1[, true], w, rb, act, r, t, cn, out)
            }
            WType::Q4_1 => super::dispatch_rows!(q4_1_x2[], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, true], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, true], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(q4_k_x8[, true], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(q5_0_x8[, true], w, act, r, t, out),
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
    // The kernels borrowed from the AVX2 set ask for decode's weights themselves (`avx2::prefetch_tile`);
    // only Q4_1's own kernel takes the burst per tile.
    super::tiles(tile, wt, w, rb, rows, prefetch && wt == WType::Q4_1, emit)
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
            WType::Q4_1 if act.rows() > 1 => {
                super::dispatch_rows!(q4_1[, true], w, rb, act, r, t, cn, out)
            }
            WType::Q4_1 => super::dispatch_rows!(q4_1_x2[], w, rb, act, r, t, cn, out),
            WType::Q8_0 => super::dispatch_rows!(q8_0[, true], w, rb, act, r, t, cn, out),
            WType::Q5_0 => super::dispatch_rows!(q5_0[, true], w, rb, act, r, t, cn, out),
            WType::Q4_K => super::dispatch_tile!(q4_k[], w, rb, act, r, t, cn, out),
            WType::Q4_K_X8 => super::dispatch_x8!(q4_k_x8[, true], w, act, r, t, out),
            WType::Q5_0_X8 => super::dispatch_x8!(q5_0_x8[, true], w, act, r, t, out),
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

/// `avx2::q4_1` with 512-bit integer work: two blocks per unpack and per VNNI instruction, their float
/// accumulation still block after block in 8 lanes (the two halves added in turn), so the results are
/// bit-identical to `q4_1`'s. Decode is mostly this loop: the weights come prefetched, so its instruction
/// count sets the pace.
///
/// # Safety
/// The CPU supports the features of [`dot_tile`]; otherwise as `avx2::q4_1`.
#[inline(always)]
pub(super) unsafe fn q4_1_x2<const R: usize, const C: usize>(
    w: &[u8],
    rb: usize,
    act: &Act,
    r: usize,
    out: &mut Tile,
) {
    // SAFETY: the 64-byte load of a pair of blocks is used only while 4 blocks (80 bytes) remain in the
    // row, and a 40-byte masked load at its end; every other pointer stays inside `w` (C rows of nb
    // blocks) and the activation rows r..r + R (the caller's contract).
    unsafe {
        let nb = act.nb;
        let m4 = _mm512_set1_epi8(0x0F);
        // Two raw blocks (bytes 0..40: d, m and 16 bytes of nibbles, each) to [the first block's 16
        // bytes of nibbles twice, the second's twice]; the shift and mask below then leave the low
        // nibbles of a block in its first 16 bytes and the high ones in the next 16, as `q4_1` has them.
        let mut sb = [0u8; 64];
        for (j, v) in sb.iter_mut().enumerate() {
            *v = (if j < 32 { 4 } else { 24 } + j % 16) as u8;
        }
        let shuf = _mm512_loadu_si512(sb.as_ptr() as *const __m512i);
        // The f16 words of the blocks' d (0 and 10), each over 8 lanes, and of their m (1 and 11).
        let dsel = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10, 10);
        let msel = _mm256_setr_epi16(1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11, 1, 11);
        let pair = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
        let mut acc = [[_mm256_setzero_ps(); R]; C];
        let mut summ = [[_mm_setzero_ps(); R]; C];
        let (qs, d, s) = (act.qs.as_ptr(), act.d.as_ptr(), act.s.as_ptr());
        let mut b = 0;
        while b + 1 < nb {
            let mut xq = [_mm512_setzero_si512(); R];
            let mut xd = [_mm512_setzero_ps(); R];
            let mut xs = [_mm_setzero_ps(); R];
            for i in 0..R {
                let at = (r + i) * nb + b;
                xq[i] = _mm512_loadu_si512(qs.add(at * QK) as *const __m512i);
                let d2 = _mm_castpd_ps(_mm_load_sd(d.add(at) as *const f64));
                xd[i] = _mm512_permutexvar_ps(pair, _mm512_castps128_ps512(d2));
                xs[i] = _mm_castpd_ps(_mm_load_sd(s.add(at) as *const f64));
            }
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q4_1_BYTES);
                // The pair's 40 bytes read as 64: a plain load while that stays inside the row, a
                // masked one at its end (only there: masked loads do not train the prefetcher).
                let raw = if b + 3 < nb {
                    _mm512_loadu_si512(p as *const __m512i)
                } else {
                    _mm512_maskz_loadu_epi8((1 << 40) - 1, p as *const i8)
                };
                let z = _mm512_permutexvar_epi8(shuf, raw);
                let z = _mm512_mask_blend_epi64(0b1100_1100, z, _mm512_srli_epi16(z, 4));
                let q = _mm512_and_si512(z, m4);
                let raw = _mm512_castsi512_si256(raw);
                let dw = _mm512_cvtph_ps(_mm256_permutexvar_epi16(dsel, raw));
                let mw = _mm_cvtph_ps(_mm256_castsi256_si128(_mm256_permutexvar_epi16(msel, raw)));
                for i in 0..R {
                    let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xq[i]);
                    let pr = _mm512_cvtepi32_ps(dot);
                    let sc = _mm512_mul_ps(dw, xd[i]);
                    let a = _mm256_fmadd_ps(
                        _mm512_castps512_ps256(sc),
                        _mm512_castps512_ps256(pr),
                        acc[k][i],
                    );
                    acc[k][i] = _mm256_fmadd_ps(
                        _mm512_extractf32x8_ps::<1>(sc),
                        _mm512_extractf32x8_ps::<1>(pr),
                        a,
                    );
                    let m = _mm_mul_ps(mw, xs[i]);
                    let t = _mm_add_ss(summ[k][i], m);
                    summ[k][i] = _mm_add_ss(t, _mm_movehdup_ps(m));
                }
            }
            b += 2;
        }
        if b < nb {
            // An odd row's last block, as `q4_1` does it.
            let m4 = _mm_set1_epi8(0x0F);
            for k in 0..C {
                let p = w.as_ptr().add(k * rb + b * Q4_1_BYTES);
                let (dw, mw) = f16x2(p);
                let q = _mm_loadu_si128(p.add(4) as *const __m128i);
                let lo = _mm_and_si128(q, m4);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
                let qw = _mm256_set_m128i(hi, lo);
                for i in 0..R {
                    let at = (r + i) * nb + b;
                    let xq = _mm256_loadu_si256(qs.add(at * QK) as *const __m256i);
                    let dd = _mm256_set1_ps(dw * *d.add(at));
                    acc[k][i] = _mm256_fmadd_ps(dd, mul_sum_us8::<true>(qw, xq), acc[k][i]);
                    summ[k][i] = _mm_add_ss(summ[k][i], _mm_set_ss(mw * *s.add(at)));
                }
            }
        }
        for k in 0..C {
            for i in 0..R {
                out[k][i] = hsum(acc[k][i]) + _mm_cvtss_f32(summ[k][i]);
            }
        }
    }
}
