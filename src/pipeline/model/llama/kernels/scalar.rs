//! The portable kernels: the SIMD kernels' arithmetic written out lane by lane, so that a CPU without
//! AVX2 computes the very same sums (the same products, rounded in the same order) and greedy outputs do not
//! depend on the CPU. Integer products are exact, so only the float steps need to follow the SIMD order:
//! for Q4_1, Q5_0, Q8_0, Q4_K and batched Q6_K one chain of fused multiply-adds per output, block after
//! block (as the ggml kernels llama.cpp uses for Q4_K and batched Q6_K); for Q6_K below 8 rows 8 lanes,
//! each such a chain, then [`hsum`] (ggml's vec_dot).

use super::super::quant::{
    ActRow, Q4_1_BYTES, Q4_K_BYTES, Q5_0_BYTES, Q6_K_BYTES, Q8_0_BYTES, QK, QK_K, WType, f16_at,
    q6_k_value, scale_min_k4, unpack_q4_1_x8, unpack_q4_k_x8, unpack_q5_0_x8, unpack_q6_k_x8,
    unpack_q8_0_x8,
};
use super::Tile;

/// The SIMD horizontal sum of 8 lanes: the halves added lane by lane, then pairs, then the last two.
#[inline(always)]
pub(super) fn hsum(v: [f32; 8]) -> f32 {
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// ggml's `ggml_v_expf` (AVX2), one lane: e^x by a degree-5 polynomial after ARM's optimized routine
/// (within 1.5 ulp), each fused multiply-add as there. A lane's result does not depend on the others'.
#[inline(always)]
pub(super) fn v_expf(x: f32) -> f32 {
    let f = f32::from_bits;
    let r = f(0x4b40_0000); // 0x1.8p23: adding it rounds to an integer in the low mantissa bits
    let z = x.mul_add(f(0x3fb8_aa3b), r); // x · log2(e) + r
    let n = z - r;
    // x − n·ln 2, with ln 2 in two parts.
    let b = (-n).mul_add(f(0x35bf_be8e), (-n).mul_add(f(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits())); // 2^n
    let u = b * b;
    let j = f(0x3c07_2010)
        .mul_add(b, f(0x3d2b_9f17))
        .mul_add(u, f(0x3e2a_af33).mul_add(b, f(0x3eff_fedb)))
        .mul_add(u, f(0x3f7f_fff6) * b); // e^b − 1
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    // 2^n out of the exponent's range: scaled in two steps, or flushed to 0 or infinity.
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// glibc's `expf` (2.28 and later, from ARM's optimized routines; its FMA build, `__expf_fma`), step by
/// step: x · 32/ln 2 = k + r by adding 1.5 · 2^52, 2^(k/32) from a 32-entry table with k/32's integer part
/// in the exponent, 2^(r/32) by a cubic, all in double, rounded once to f32. Outside [−103.28, 88.72]:
/// infinity above, the smallest subnormal down to −103.97 and 0 below (as glibc returns them), NaN for NaN.
/// [`super::avx2::expf8`] computes the same, 8 lanes at a time.
pub(super) fn expf(x: f32) -> f32 {
    if x.is_nan() {
        return x + x;
    }
    if x > f32::from_bits(EXPF_OVERFLOW) {
        return f32::INFINITY;
    }
    if x < f32::from_bits(EXPF_MAY_UNDERFLOW) {
        return if x < f32::from_bits(EXPF_UNDERFLOW) {
            0.0
        } else {
            f32::from_bits(1)
        };
    }
    let xd = x as f64;
    let kd = EXPF_INV_LN2_N.mul_add(xd, EXPF_SHIFT);
    let ki = kd.to_bits();
    let kd = kd - EXPF_SHIFT;
    let r = EXPF_INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(EXPF_TABLE[(ki % 32) as usize].wrapping_add(ki << 47));
    let z = r.mul_add(EXPF_POLY[0], EXPF_POLY[1]);
    let y = r.mul_add(EXPF_POLY[2], 1.0);
    (z.mul_add(r * r, y) * s) as f32
}

/// [`expf`]'s constants (glibc's `__exp2f_data`): 32/ln 2, 1.5 · 2^52, the cubic's coefficients (scaled
/// for r in units of 1/32), and 2^(i/32)'s bits less i << 47.
pub(super) const EXPF_INV_LN2_N: f64 = f64::from_bits(0x4047_1547_652b_82fe);
pub(super) const EXPF_SHIFT: f64 = f64::from_bits(0x4338_0000_0000_0000);
pub(super) const EXPF_POLY: [f64; 3] = [
    f64::from_bits(0x3ebc_6af8_4b91_2394),
    f64::from_bits(0x3f2e_bfce_50fa_c4f3),
    f64::from_bits(0x3f96_2e42_ff0c_52d6),
];
pub(super) const EXPF_TABLE: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];
/// Above this (88.72, ln 2^128) e^x overflows.
pub(super) const EXPF_OVERFLOW: u32 = 0x42b1_7217;
/// Below this (−103.28) glibc returns its "may underflow" value, the smallest subnormal.
pub(super) const EXPF_MAY_UNDERFLOW: u32 = 0xc2ce_8ecf;
/// Below this (−103.97, ln 2^−150) glibc returns 0.
pub(super) const EXPF_UNDERFLOW: u32 = 0xc2cf_f1b4;

/// One head's softmax numerators in place, `sc[t] = expf(sc[t] − max)`, and 1 / their sum (added in order,
/// in f32). See [`super::Kernels::softmax`].
pub(super) fn softmax(sc: &mut [f32]) -> f32 {
    let max = sc.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    let mut sum = 0f32;
    for s in sc.iter_mut() {
        *s = expf(*s - max);
        sum += *s;
    }
    1.0 / sum
}

/// `gate[i] = silu(gate[i]) × up[i]`, as ggml's `ggml_vec_swiglu_f32` on AVX2: `x / (1 + e^(0 − x))` with
/// [`v_expf`] in groups of 8, and libm's `expf` for the last `len % 8` values.
pub(super) fn swiglu(gate: &mut [f32], up: &[f32]) {
    let whole = gate.len() / 8 * 8;
    for (g, &u) in gate[..whole].iter_mut().zip(up) {
        *g = *g / (1.0 + v_expf(0.0 - *g)) * u;
    }
    for (g, &u) in gate[whole..].iter_mut().zip(&up[whole..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Value `j` (0..32) of a Q5_0 block: its nibble, its fifth bit from `qh`, less 16.
#[inline(always)]
pub(super) fn q5_0_value(blk: &[u8], j: usize) -> i32 {
    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    let q = blk[6 + j % 16];
    let nib = if j < 16 { q & 0x0F } else { q >> 4 };
    (nib as i32 | (((qh >> j) & 1) << 4) as i32) - 16
}

/// One weight row · one activation row: see [`q4_1`], [`q5_0`], [`q8_0`], [`q4_k`] and [`q6_k`];
/// `batched` (the product has at least [`super::BATCHED_ROWS`] activation rows) picks Q6_K's batched form.
pub(super) fn dot(wt: WType, w: &[u8], x: ActRow, batched: bool) -> f32 {
    match wt {
        WType::Q4_K => q4_k(w, x),
        WType::Q6_K if batched => q6_k_batched(w, x),
        WType::Q6_K => q6_k(w, x),
        WType::Q5_0 => q5_0(w, x),
        WType::Q4_1 => q4_1(w, x),
        WType::Q8_0 => q8_0(w, x),
        _ => unreachable!("repacked rows are multiplied 8 at a time (dot_tile)"),
    }
}

/// Q8_0 weights · Q8_0 activations, one float chain per output (where llama.cpp's `ggml_vec_dot_q8_0_q8_0`
/// keeps 8 lanes): per block the exact integer Σ w·x, then one fused multiply-add by (d_w × d_x).
#[inline(always)]
pub(super) fn q8_0(w: &[u8], x: ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, (wb, xq)) in w
        .chunks_exact(Q8_0_BYTES)
        .zip(x.qs.chunks_exact(QK))
        .enumerate()
    {
        let isum: i32 = wb[2..]
            .iter()
            .zip(xq)
            .map(|(&w, &x)| w as i8 as i32 * x as i32)
            .sum();
        acc = (isum as f32).mul_add(f16_at(wb, 0) * x.d[b], acc);
    }
    acc
}

/// Q4_1 weights · Q8_1 activations, one float chain per output (where llama.cpp's `ggml_vec_dot_q4_1_q8_1`
/// keeps 8 lanes and sums them at the end): per block the exact integer Σ q·x (q the 4-bit code; a
/// block's low nibbles are its values 0..16, its high ones 16..32), one fused multiply-add by
/// (d_w × d_x), and the min terms m_w × s_x (s_x = d_x × Σx, stored as f16) as a separate sum of
/// separately rounded products, as there, added at the end.
#[inline(always)]
pub(super) fn q4_1(w: &[u8], x: ActRow) -> f32 {
    let (mut acc, mut summ) = (0f32, 0f32);
    for (b, (wb, xq)) in w
        .chunks_exact(Q4_1_BYTES)
        .zip(x.qs.chunks_exact(QK))
        .enumerate()
    {
        let isum: i32 = (0..QK)
            .map(|p| {
                let q = wb[4 + p % 16];
                (if p < 16 { q & 0x0F } else { q >> 4 }) as i32 * xq[p] as i32
            })
            .sum();
        acc = (isum as f32).mul_add(f16_at(wb, 0) * x.d[b], acc);
        summ += f16_at(wb, 2) * x.s[b];
    }
    acc + summ
}

/// Q5_0 weights · Q8_0 activations, one float chain per output (where llama.cpp's `ggml_vec_dot_q5_0_q8_0`
/// keeps 8 lanes, each rounded apart, and sums them at the end): per block the exact integer
/// Σ (q - 16)·x, then one fused multiply-add by (d_w × d_x). One chain per output lets the repacked kernels keep a weight row per lane
/// with no horizontal sums ([`WType::Q5_0_X8`]); the file-layout kernels sum their lanes per block.
#[inline(always)]
pub(super) fn q5_0(w: &[u8], x: ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, (wb, xq)) in w
        .chunks_exact(Q5_0_BYTES)
        .zip(x.qs.chunks_exact(QK))
        .enumerate()
    {
        let isum: i32 = (0..QK).map(|p| q5_0_value(wb, p) * xq[p] as i32).sum();
        acc = (isum as f32).mul_add(f16_at(wb, 0) * x.d[b], acc);
    }
    acc
}

/// The integer sums of a Q4_K super-block with 256 Q8_K values: (Σ over the eight 32-value sub-blocks of
/// scale × Σ q·x, Σ of min × the sub-block's Σ x). Exact, so any order gives them.
#[inline(always)]
pub(super) fn q4_k_sums(blk: &[u8], xq: &[i8], bsums: &[i16]) -> (i32, i32) {
    let scales = &blk[4..16];
    let (mut isum, mut imin) = (0i32, 0i32);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        let q = &blk[16 + 32 * (j / 2)..][..32];
        let x = &xq[32 * j..][..32];
        let s: i32 = q
            .iter()
            .zip(x)
            .map(|(&q, &x)| (if j % 2 == 0 { q & 0x0F } else { q >> 4 }) as i32 * x as i32)
            .sum();
        isum += sc as i32 * s;
        imin += m as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32);
    }
    (isum, imin)
}

/// Q4_K weights · Q8_K activations as llama.cpp computes them on an AVX2 CPU: there ggml repacks every
/// Q4_K matrix whose row count is a multiple of 8 (all of them in these models) and multiplies with
/// `ggml_gemv/gemm_q4_K_8x8_q8_K`, which give each output one float lane: per super-block, the exact
/// integer sums of [`q4_k_sums`] times (d_w × d_x) and (dmin_w × d_x), each chain of fused multiply-adds
/// apart, and their difference at the end.
#[inline(always)]
pub(super) fn q4_k(w: &[u8], x: ActRow) -> f32 {
    let (mut acc, mut accm) = (0f32, 0f32);
    for (b, (wb, xq)) in w
        .chunks_exact(Q4_K_BYTES)
        .zip(x.qs.chunks_exact(QK_K))
        .enumerate()
    {
        let (isum, imin) = q4_k_sums(wb, xq, &x.bsums[16 * b..][..16]);
        let (dw, dmin) = (f16_at(wb, 0), f16_at(wb, 2));
        acc = (isum as f32).mul_add(dw * x.d[b], acc);
        accm = (imin as f32).mul_add(dmin * x.d[b], accm);
    }
    acc - accm
}

/// The 8 integer lanes of ggml's AVX2 `ggml_vec_dot_q6_K_q8_K` for one super-block: lane l sums, over the
/// eight 32-value runs of the block, scale × q × x for the run's values 4l..4l + 4 (q unsigned, 0..64),
/// less 32 × the scaled sums of the 16-value groups 2l and 2l + 1.
#[inline(always)]
pub(super) fn q6_k_lanes(blk: &[u8], xq: &[i8], bsums: &[i16]) -> [i32; 8] {
    let mut lanes = [0i32; 8];
    for (l, lane) in lanes.iter_mut().enumerate() {
        for run in 0..8 {
            for p in 4 * l..4 * l + 4 {
                let e = 32 * run + p;
                let sc = blk[192 + e / 16] as i8 as i32;
                *lane += sc * q6_k_value(blk, e) as i32 * xq[e] as i32;
            }
        }
        let sc = |g: usize| blk[192 + g] as i8 as i32;
        *lane -= 32 * (bsums[2 * l] as i32 * sc(2 * l) + bsums[2 * l + 1] as i32 * sc(2 * l + 1));
    }
    lanes
}

/// Q6_K weights · Q8_K activations as ggml's AVX2 `ggml_vec_dot_q6_K_q8_K` (llama.cpp does not repack
/// Q6_K on x86): 8 float lanes, per super-block one fused multiply-add of (d_x × d_w) × lane, then
/// [`hsum`].
#[inline(always)]
pub(super) fn q6_k(w: &[u8], x: ActRow) -> f32 {
    let mut acc = [0f32; 8];
    for (b, (wb, xq)) in w
        .chunks_exact(Q6_K_BYTES)
        .zip(x.qs.chunks_exact(QK_K))
        .enumerate()
    {
        let d = x.d[b] * f16_at(wb, 208);
        let lanes = q6_k_lanes(wb, xq, &x.bsums[16 * b..][..16]);
        for (acc, &lane) in acc.iter_mut().zip(&lanes) {
            *acc = d.mul_add(lane as f32, *acc);
        }
    }
    hsum(acc)
}

/// Q6_K weights · Q8_K activations as llama.cpp computes a product of at least 8 activation rows on an
/// AVX2 CPU (ggml's tiled K-quant matmul, `tiled_run_microtile_avx2`, which takes over from the vec_dot
/// at 8 rows): per super-block the exact integer Σ scale × (q - 32) × x (the sum of [`q6_k_lanes`]),
/// times d_w, then one fused multiply-add by d_x into a single float chain.
#[inline(always)]
pub(super) fn q6_k_batched(w: &[u8], x: ActRow) -> f32 {
    let mut acc = 0f32;
    for (b, (wb, xq)) in w
        .chunks_exact(Q6_K_BYTES)
        .zip(x.qs.chunks_exact(QK_K))
        .enumerate()
    {
        let isum: i32 = q6_k_lanes(wb, xq, &x.bsums[16 * b..][..16]).iter().sum();
        acc = (f16_at(wb, 208) * isum as f32).mul_add(x.d[b], acc);
    }
    acc
}

/// See `Kernels::dot_tile`.
#[allow(clippy::too_many_arguments)]
pub(super) fn dot_tile(
    wt: WType,
    w: &[u8],
    rb: usize,
    act: &super::Act,
    r: usize,
    t: usize,
    cn: usize,
    out: &mut Tile,
) {
    if wt.repacked() {
        // Each row's blocks as they were in the file, then their format's product.
        let nb = act.nb;
        for k in 0..cn {
            let row: Vec<u8> = match wt {
                WType::Q4_K_X8 => (0..nb).flat_map(|b| unpack_q4_k_x8(w, b, k)).collect(),
                WType::Q6_K_X8 => (0..nb).flat_map(|b| unpack_q6_k_x8(w, b, k)).collect(),
                WType::Q5_0_X8 => (0..nb).flat_map(|b| unpack_q5_0_x8(w, b, k)).collect(),
                WType::Q8_0_X8 => (0..nb).flat_map(|b| unpack_q8_0_x8(w, b, k)).collect(),
                _ => (0..nb).flat_map(|b| unpack_q4_1_x8(w, b, k)).collect(),
            };
            let wt = wt.file_format();
            for (i, out) in out[..t].iter_mut().enumerate() {
                let batched = act.rows() >= super::BATCHED_ROWS;
                out[k] = dot(wt, &row, act.row(r + i), batched);
            }
        }
        return;
    }
    for (i, out) in out[..t].iter_mut().enumerate() {
        for (k, o) in out[..cn].iter_mut().enumerate() {
            *o = dot(
                wt,
                &w[k * rb..(k + 1) * rb],
                act.row(r + i),
                act.rows() >= super::BATCHED_ROWS,
            );
        }
    }
}

/// `out[j] = q[j] · k` for the G query heads in `q` and one cached f16 K row, as `avx2::dots_f16`.
#[inline(always)]
pub(super) fn dots_f16<const G: usize>(q: &[f32], k: &[u16], out: &mut [f32; G]) {
    let hd = k.len();
    for (o, q) in out.iter_mut().zip(q.chunks_exact(hd)) {
        let mut acc = [0f32; 8];
        for (q, k) in q.chunks_exact(8).zip(k.chunks_exact(8)) {
            for l in 0..8 {
                acc[l] = q[l].mul_add(half::f16::from_bits(k[l]).to_f32(), acc[l]);
            }
        }
        *o = hsum(acc);
    }
}

/// `y[j] += a[j] × x` for the G heads' outputs in `y` and one cached f16 V row, as `avx2::axpys_f16`.
#[inline(always)]
pub(super) fn axpys_f16<const G: usize>(a: &[f32; G], x: &[u16], y: &mut [f32]) {
    let hd = x.len();
    for (&a, y) in a.iter().zip(y.chunks_exact_mut(hd)) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = a.mul_add(half::f16::from_bits(x).to_f32(), *y);
        }
    }
}

/// See [`super::Kernels::geglu`].
pub(super) fn geglu(gate: &mut [f32], up: &[f32], table: &[u16]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            let i = half::f16::from_f32(x).to_bits() as usize;
            half::f16::from_bits(table[i]).to_f32() * u
        };
    }
}
