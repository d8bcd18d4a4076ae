//! Every kernel set this CPU runs gives bit for bit what the scalar set gives: greedy outputs, and so the
//! agreement with llama.cpp's ids, depend on it. The scalar set in turn is held (to rounding) to ggml's
//! generic block-by-block dot product.

use half::f16;

use super::super::quant::{
    Act, ActRow, ActType, Q4_1_BYTES, Q4_1_X8_BYTES, Q4_K_X8_BYTES, Q5_0_X8_BYTES, Q6_K_X8_BYTES,
    Q8_0_BYTES, Q8_0_X8_BYTES, QK, QK_K, Repack, WType, dequant_row, f16_at, quantize,
    repack_q4_1_x8, repack_q4_k_x8, repack_q5_0_x8, repack_q6_k_x8, repack_q8_0_x8, scale_min_k4,
    unpack_q4_1_x8, unpack_q4_k_x8, unpack_q5_0_x8, unpack_q6_k_x8, unpack_q8_0_x8,
};
use super::*;
use crate::rng::SplitMix;

/// Every weight format.
const ALL: [WType; 5] = [
    WType::Q4_1,
    WType::Q5_0,
    WType::Q8_0,
    WType::Q4_K,
    WType::Q6_K,
];

/// Row lengths to test a format with: odd and even block counts, and the models' lengths.
fn col_sizes(wt: WType) -> &'static [usize] {
    if wt.block_len() == QK_K {
        &[256, 512, 768, 1024, 2048, 4864]
    } else {
        &[32, 64, 96, 128, 160, 576, 640, 896, 1536]
    }
}

fn sets() -> Vec<Kernels> {
    let sets: Vec<Kernels> = Kernels::available().collect();
    eprintln!(
        "kernel sets on this CPU: {:?}",
        sets.iter().map(|k| k.isa()).collect::<Vec<_>>()
    );
    assert_eq!(sets[0].isa(), Isa::Scalar);
    assert_eq!(Some(*sets.last().unwrap()), Some(Kernels::detect()));
    sets
}

#[test]
fn every_kernel_set_gives_the_scalar_sums_bit_for_bit() {
    let sets = sets();
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let mut g = SplitMix::new(777);
    // Products of TILE and of BATCHED_ROWS activation rows: Q6_K rounds as llama.cpp's vec_dot in the
    // first and as its tiled matmul in the second.
    for (wt, rows) in ALL
        .into_iter()
        .flat_map(|wt| [(wt, TILE), (wt, BATCHED_ROWS)])
    {
        for &cols in col_sizes(wt) {
            let x: Vec<f32> = (0..cols * rows)
                .map(|_| (g.uniform() as f32 - 0.5) * 6.0)
                .collect();
            let rb = wt.row_bytes(cols);
            let w = random_weights(wt, WTILE_MAX, cols, &mut g);
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            for t in 1..=TILE {
                for cn in 1..=WTILE_MAX {
                    for r in [0, rows - t] {
                        let mut want = [[0f32; WTILE_MAX]; TILE];
                        scalar.dot_tile(wt, &w[..cn * rb], rb, &act, r, t, cn, &mut want);
                        for set in &sets {
                            let mut got = [[0f32; WTILE_MAX]; TILE];
                            set.dot_tile(wt, &w[..cn * rb], rb, &act, r, t, cn, &mut got);
                            for k in 0..cn {
                                for i in 0..t {
                                    assert_eq!(
                                        got[i][k].to_bits(),
                                        want[i][k].to_bits(),
                                        "{} {wt:?} {cols} cols, {rows} rows, tile {t}x{cn} at {r}, ({k}, {i}): {} vs {}",
                                        set.isa(),
                                        got[i][k],
                                        want[i][k]
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn every_kernel_set_gives_the_scalar_attention_bit_for_bit() {
    let sets = sets();
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let mut g = SplitMix::new(99);
    let (hd, n, kv_heads) = (64, 71, 3);
    let stride = kv_heads * hd;
    let cache: Vec<u16> = (0..n * stride)
        .map(|_| f16::from_f32(g.uniform() as f32 * 2.0).to_bits())
        .collect();
    macro_rules! check {
        ($g:literal) => {{
            let q: Vec<f32> = (0..$g * hd).map(|_| g.uniform() as f32).collect();
            let weights: Vec<[f32; $g]> = (0..n)
                .map(|_| std::array::from_fn(|_| g.uniform() as f32))
                .collect();
            for koff in [0, hd, 2 * hd, hd + hd / 2] {
                let width = if koff % hd == 0 { hd } else { hd / 2 };
                let run = |set: Kernels| {
                    let mut scores = vec![0f32; $g * n];
                    set.score_rows::<$g>(&q, &cache, stride, koff, 0..n, |t, d| {
                        for (j, &v) in d.iter().enumerate() {
                            scores[j * n + t] = v;
                        }
                    });
                    let mut o = vec![0.5f32; $g * width];
                    set.weigh_rows::<$g>(&cache, stride, koff, n, |t| weights[t], &mut o);
                    (scores, o)
                };
                let want = run(scalar);
                assert!(
                    want.0
                        .iter()
                        .chain(&want.1)
                        .all(|v| v.is_finite() && *v != 0.0)
                );
                for &set in &sets {
                    let got = run(set);
                    for (what, a, b) in [("scores", &got.0, &want.0), ("sums", &got.1, &want.1)] {
                        for (i, (x, y)) in a.iter().zip(b).enumerate() {
                            assert_eq!(
                                x.to_bits(),
                                y.to_bits(),
                                "{} G={} koff {koff}: {what}[{i}] {x} vs {y}",
                                set.isa(),
                                $g
                            );
                        }
                    }
                }
            }
        }};
    }
    check!(1);
    check!(2);
    check!(3);
    check!(4);
    check!(7);
    check!(8);
}

/// ggml's generic dot product for Q4_1 and Q8_0, block by block (a sum per block, then the blocks in
/// order); the formats added later are held to a dequantized f64 sum instead
/// (`every_format_matches_a_dequantized_f64_dot_product`).
fn dot_reference(wt: WType, w: &[u8], x: ActRow) -> f32 {
    let mut sum = 0f32;
    let xq = x.qs.chunks_exact(QK);
    match wt {
        WType::Q4_1 => {
            for (b, (wb, xq)) in w.chunks_exact(Q4_1_BYTES).zip(xq).enumerate() {
                let mut si = 0i32;
                for j in 0..QK / 2 {
                    let q = wb[4 + j];
                    si += (q & 0x0F) as i32 * xq[j] as i32;
                    si += (q >> 4) as i32 * xq[j + QK / 2] as i32;
                }
                sum += si as f32 * f16_at(wb, 0) * x.d[b] + f16_at(wb, 2) * x.s[b];
            }
        }
        WType::Q8_0 => {
            for (b, (wb, xq)) in w.chunks_exact(Q8_0_BYTES).zip(xq).enumerate() {
                let si: i32 = wb[2..]
                    .iter()
                    .zip(xq)
                    .map(|(&a, &b)| a as i8 as i32 * b as i32)
                    .sum();
                sum += si as f32 * f16_at(wb, 0) * x.d[b];
            }
        }
        _ => unreachable!("the generic reference is for Q4_1 and Q8_0 (the others: below)"),
    }
    sum
}

/// The kernels' lane order rounds differently from ggml's generic loop, but only by rounding.
#[test]
#[allow(clippy::needless_range_loop)] // k and i index weight rows and activation rows alike
fn scalar_kernels_match_ggmls_reference_to_rounding() {
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let mut g = SplitMix::new(12345);
    let close = |got: f32, want: f32| (got - want).abs() <= 1e-4 * want.abs().max(1.0);
    for cols in [128, 160] {
        let x: Vec<f32> = (0..cols * TILE).map(|_| g.uniform() as f32).collect();
        for wt in [WType::Q4_1, WType::Q8_0] {
            let rb = wt.row_bytes(cols);
            let w = random_weights(wt, WTILE_MAX, cols, &mut g);
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            let mut got = [[0f32; WTILE_MAX]; TILE];
            scalar.dot_tile(wt, &w, rb, &act, 0, TILE, WTILE_MAX, &mut got);
            for k in 0..WTILE_MAX {
                for i in 0..TILE {
                    let want = dot_reference(wt, &w[k * rb..(k + 1) * rb], act.row(i));
                    assert!(
                        close(got[i][k], want),
                        "{wt:?} {cols} cols ({k}, {i}): {} vs {want}",
                        got[i][k]
                    );
                }
            }
        }
    }
}

/// Every set quantizes activations as `quant::quantize` does, bit for bit: random rows with a zero block,
/// values on rounding ties, and the largest magnitude taken by two values of opposite sign (Q8_K keeps the
/// first one's sign).
#[test]
fn every_kernel_set_quantizes_activations_bit_for_bit() {
    let sets = sets();
    let mut g = SplitMix::new(77);
    for t in [ActType::Q8_0, ActType::Q8_1, ActType::Q8_K] {
        let cols = 2 * QK_K;
        for rows in [1, 3, 8] {
            let mut x: Vec<f32> = (0..cols * rows)
                .map(|_| (g.uniform() as f32 - 0.5) * 8.0)
                .collect();
            // A zero block, a block whose largest magnitude is tied with opposite signs, and values
            // that land halfway between two integers.
            x[..t.block_len()].fill(0.0);
            let b = &mut x[t.block_len()..2 * t.block_len()];
            b[3] = -5.0;
            b[17] = 5.0;
            for (j, v) in b.iter_mut().enumerate().skip(20) {
                *v = (j as f32 + 0.5) * 5.0 / 127.0 * if j % 2 == 0 { 1.0 } else { -1.0 };
            }
            let mut want = Act::default();
            quantize(&x, cols, t, &mut want);
            for set in &sets {
                let mut got = Act::default();
                set.quantize(&x, cols, t, &mut got);
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!((got.nb, got.qk), (want.nb, want.qk), "{} {t:?}", set.isa());
                assert_eq!(got.qs, want.qs, "{} {t:?} {rows} rows: values", set.isa());
                assert_eq!(bits(&got.d), bits(&want.d), "{} {t:?}: scales", set.isa());
                assert_eq!(bits(&got.s), bits(&want.s), "{} {t:?}: sums", set.isa());
                assert_eq!(got.x16, want.x16, "{} {t:?}: 16 x sums", set.isa());
                assert_eq!(got.bsums, want.bsums, "{} {t:?}: 16-value sums", set.isa());
            }
        }
    }
}

/// Every set's GELU-gated product is the scalar one bit for bit (Gemma 3's feed-forward): values across
/// the table's range, its edges at ±10 and past them, lengths with a tail of fewer than 8.
#[test]
fn every_kernel_set_gives_the_scalar_geglu_bit_for_bit() {
    let sets = sets();
    let table = super::super::gelu_table();
    let mut g = SplitMix::new(99);
    for n in [1, 8, 37, 2048] {
        let mut gate: Vec<f32> = (0..n).map(|_| (g.uniform() as f32 - 0.5) * 26.0).collect();
        for (j, v) in [-10.0, 10.0, -9.999, 9.999, 0.0, -0.0]
            .into_iter()
            .enumerate()
        {
            if j < n {
                gate[j] = v;
            }
        }
        let up: Vec<f32> = (0..n).map(|_| g.uniform() as f32 * 4.0 - 2.0).collect();
        let mut want = gate.clone();
        scalar::geglu(&mut want, &up, table);
        for set in &sets {
            let mut got = gate.clone();
            set.geglu(&mut got, &up, table);
            for j in 0..n {
                assert_eq!(
                    got[j].to_bits(),
                    want[j].to_bits(),
                    "{} geglu({}) × {}: {} vs {}",
                    set.isa(),
                    gate[j],
                    up[j],
                    got[j],
                    want[j]
                );
            }
        }
    }
}

/// `scalar::expf` is glibc's `expf` step by step: within one ulp of the platform's `f32::exp` over every
/// 61st f32 (about 70 million values, every sign and exponent) and at the edges of its ranges, and bit
/// for bit where the platform's libm is glibc's (the build of `expf` that attention's softmax used before).
#[test]
fn expf_is_glibcs() {
    let mut special = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
    ];
    for b in [
        scalar::EXPF_OVERFLOW,
        scalar::EXPF_MAY_UNDERFLOW,
        scalar::EXPF_UNDERFLOW,
    ] {
        special.extend([
            f32::from_bits(b - 1),
            f32::from_bits(b),
            f32::from_bits(b + 1),
        ]);
    }
    let strided = (0..u32::MAX / 61).map(|i| f32::from_bits(i * 61));
    let (mut inexact, mut n) = (0u64, 0u64);
    for x in special.into_iter().chain(strided) {
        let (got, want) = (scalar::expf(x), x.exp());
        n += 1;
        if got.to_bits() == want.to_bits() || got.is_nan() && want.is_nan() {
            continue;
        }
        inexact += 1;
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(ulps <= 1, "expf({x:e}) = {got:e}, libm's {want:e}");
    }
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert_eq!(
            inexact, 0,
            "{inexact} of {n} values differ from glibc's expf"
        );
    }
}

/// Every set's softmax numerators and sum are the scalar set's bit for bit: scores spread so that
/// `score − max` covers e^x's whole range below 0 (down past −104, where it underflows), lengths with a
/// tail of fewer than 8.
#[test]
fn every_kernel_set_gives_the_scalar_softmax_bit_for_bit() {
    let sets = sets();
    let mut g = SplitMix::new(5);
    for n in [1, 7, 8, 9, 64, 301] {
        for spread in [1.0, 30.0, 120.0] {
            let sc: Vec<f32> = (0..n).map(|_| -(g.uniform() as f32) * spread).collect();
            let mut want = sc.clone();
            let inv = scalar::softmax(&mut want);
            for set in &sets {
                let mut got = sc.clone();
                let got_inv = set.softmax(&mut got);
                assert_eq!(
                    got_inv.to_bits(),
                    inv.to_bits(),
                    "{} n {n} spread {spread}",
                    set.isa()
                );
                for (t, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{} n {n}: e^({})",
                        set.isa(),
                        sc[t]
                    );
                }
            }
        }
    }
}

#[test]
fn a_tile_outside_the_activations_is_refused_not_read() {
    let kernels = Kernels::detect();
    let mut act = Act::default();
    quantize(&[1.0; 64], 32, WType::Q8_0.act(), &mut act);
    let w = vec![0u8; Q8_0_BYTES * 2];
    let mut out = [[0f32; WTILE_MAX]; TILE];
    let read_past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kernels.dot_tile(WType::Q8_0, &w, Q8_0_BYTES, &act, 1, 2, 1, &mut out)
    }));
    assert!(read_past.is_err());
}

/// `dot_rows`, the entry the matrix products use, reaches every (activation row, weight row) pair once
/// with each set's tiles, for every tail shape, and gives the scalar set's sums bit for bit.
#[test]
fn dot_rows_covers_every_pair_with_the_scalar_sums() {
    let sets = sets();
    let mut g = SplitMix::new(4242);
    for wt in ALL {
        let cols = 3 * wt.block_len();
        let rb = wt.row_bytes(cols);
        let w = random_weights(wt, 7, cols, &mut g);
        for rows in [1, 2, 3, 4, 5, BATCHED_ROWS, BATCHED_ROWS + 1, 2 * TILE + 3] {
            let x: Vec<f32> = (0..cols * rows).map(|_| g.uniform() as f32 - 0.5).collect();
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            for set in &sets {
                let mut got = vec![f32::NAN; rows * 7];
                let mut seen = vec![0; rows * 7];
                set.dot_rows(wt, &w, rb, &act, rows == 1, |r, c, t, cn, d| {
                    for i in 0..t {
                        for k in 0..cn {
                            got[(r + i) * 7 + c + k] = d[i][k];
                            seen[(r + i) * 7 + c + k] += 1;
                        }
                    }
                });
                assert!(seen.iter().all(|&n| n == 1), "{} {rows} rows", set.isa());
                for i in 0..rows {
                    for k in 0..7 {
                        let want = scalar::dot(
                            wt,
                            &w[k * rb..(k + 1) * rb],
                            act.row(i),
                            rows >= BATCHED_ROWS,
                        );
                        assert_eq!(
                            got[i * 7 + k].to_bits(),
                            want.to_bits(),
                            "{} {wt:?} {rows} rows: ({i}, {k})",
                            set.isa()
                        );
                    }
                }
            }
        }
    }
}

/// Rows of every format repacked 8 at a time ([`WType::repacked`]) unpack to the blocks
/// they were made from, and every set's products with them equal the scalar products of the original rows
/// bit for bit, for one activation row (decode), a few (Q6_K's one-row rounding) and from
/// [`BATCHED_ROWS`] on (its batched rounding), in whole and partial tiles.
#[test]
fn repacked_rows_give_the_original_sums_bit_for_bit() {
    let sets = sets();
    let mut g = SplitMix::new(8080);
    type Unpack = fn(&[u8], usize, usize) -> Vec<u8>;
    let formats: [(WType, WType, usize, Repack, Unpack); 5] = [
        (
            WType::Q4_K,
            WType::Q4_K_X8,
            Q4_K_X8_BYTES,
            repack_q4_k_x8,
            |p, b, k| unpack_q4_k_x8(p, b, k).to_vec(),
        ),
        (
            WType::Q6_K,
            WType::Q6_K_X8,
            Q6_K_X8_BYTES,
            repack_q6_k_x8,
            |p, b, k| unpack_q6_k_x8(p, b, k).to_vec(),
        ),
        (
            WType::Q5_0,
            WType::Q5_0_X8,
            Q5_0_X8_BYTES,
            repack_q5_0_x8,
            |p, b, k| unpack_q5_0_x8(p, b, k).to_vec(),
        ),
        (
            WType::Q4_1,
            WType::Q4_1_X8,
            Q4_1_X8_BYTES,
            repack_q4_1_x8,
            |p, b, k| unpack_q4_1_x8(p, b, k).to_vec(),
        ),
        (
            WType::Q8_0,
            WType::Q8_0_X8,
            Q8_0_X8_BYTES,
            repack_q8_0_x8,
            |p, b, k| unpack_q8_0_x8(p, b, k).to_vec(),
        ),
    ];
    for (wt, x8, bytes, repack, unpack) in formats {
        let bb = wt.block_bytes();
        for &cols in col_sizes(wt) {
            let nb = cols / wt.block_len();
            let rb = wt.row_bytes(cols);
            let w = random_weights(wt, 16, cols, &mut g);
            let mut packed = vec![0u8; 16 * x8.row_bytes(cols)];
            for (src, dst) in w
                .chunks_exact(8 * rb)
                .zip(packed.chunks_exact_mut(nb * bytes))
            {
                repack(src, nb, dst);
                for k in 0..8 {
                    for b in 0..nb {
                        assert_eq!(
                            unpack(dst, b, k)[..],
                            src[k * rb + b * bb..][..bb],
                            "{wt:?} {cols} cols: row {k}, block {b}"
                        );
                    }
                }
            }
            for rows in [
                1,
                2,
                3,
                4,
                5,
                6,
                BATCHED_ROWS - 1,
                BATCHED_ROWS,
                2 * TILE + 3,
            ] {
                let x: Vec<f32> = (0..cols * rows)
                    .map(|_| (g.uniform() as f32 - 0.5) * 6.0)
                    .collect();
                let mut act = Act::default();
                quantize(&x, cols, wt.act(), &mut act);
                for set in &sets {
                    let mut got = vec![f32::NAN; rows * 16];
                    let mut seen = vec![0; rows * 16];
                    let rbx = x8.row_bytes(cols);
                    set.dot_rows(x8, &packed, rbx, &act, rows == 1, |r, c, t, cn, d| {
                        for i in 0..t {
                            for k in 0..cn {
                                got[(r + i) * 16 + c + k] = d[i][k];
                                seen[(r + i) * 16 + c + k] += 1;
                            }
                        }
                    });
                    assert!(
                        seen.iter().all(|&n| n == 1),
                        "{} {x8:?} {rows} rows",
                        set.isa()
                    );
                    for i in 0..rows {
                        for k in 0..16 {
                            let row = &w[k * rb..(k + 1) * rb];
                            let want = scalar::dot(wt, row, act.row(i), rows >= BATCHED_ROWS);
                            assert_eq!(
                                got[i * 16 + k].to_bits(),
                                want.to_bits(),
                                "{} {x8:?} {cols} cols, {rows} rows: ({i}, {k}): {} vs {want}",
                                set.isa(),
                                got[i * 16 + k]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The magnitude a dot product's rounding error is measured against: Σ |w_i x_i|, with Q4_K's values
/// split into their two terms (the kernel sums `d × scale × q` and `dmin × min` apart, so their
/// magnitudes, not their difference, bound its error).
fn magnitude(wt: WType, w: &[u8], wf: &[f32], xf: &[f64]) -> f64 {
    let mut mag: f64 = wf.iter().zip(xf).map(|(&w, &x)| (w as f64 * x).abs()).sum();
    if wt == WType::Q4_K {
        for (b, blk) in w.chunks_exact(wt.block_bytes()).enumerate() {
            for j in 0..8 {
                let (_, m) = scale_min_k4(j, &blk[4..16]);
                let dm = (f16_at(blk, 2) * m as f32) as f64;
                let xs: f64 = xf[b * QK_K + 32 * j..][..32].iter().map(|x| x.abs()).sum();
                mag += 2.0 * dm * xs;
            }
        }
    }
    mag
}

/// The dot products against the plain sum Σ w_i x_i in f64 of the dequantized weights
/// (`dequant_row`) and activations (d × q): equal to within 1e-5 of Σ |w_i x_i|. The kernels add at most
/// 8 lanes × (4864 / 256 or 896 / 32) terms, each an exact integer sum converted to f32 (2^-24 relative)
/// times a once-rounded scale product, in f32 chains of at most 28 steps: their error is below
/// 30 × 2^-24 ≈ 2e-6 of the magnitude, and `dequant_row` adds 2^-23 per value; a single value decoded
/// wrongly (a swapped nibble, a wrong scale or fifth bit) moves the sum by about 1/cols of the magnitude
/// (≥ 2e-4 here), twenty times the tolerance. Q4_1 is held to ggml's generic loop instead
/// (`scalar_kernels_match_ggmls_reference_to_rounding`): its Q8_1 activations carry each block's sum as
/// an f16, a rounding the dequantized values do not have.
#[test]
fn every_format_matches_a_dequantized_f64_dot_product() {
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let mut g = SplitMix::new(2026);
    let formats = [WType::Q5_0, WType::Q8_0, WType::Q4_K, WType::Q6_K];
    for (wt, rows) in formats
        .into_iter()
        .flat_map(|wt| [(wt, TILE), (wt, BATCHED_ROWS)])
    {
        for &cols in col_sizes(wt) {
            let x: Vec<f32> = (0..cols * rows)
                .map(|_| (g.uniform() as f32 - 0.5) * 4.0)
                .collect();
            let rb = wt.row_bytes(cols);
            let w = random_weights(wt, WTILE_MAX, cols, &mut g);
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            let mut got = [[0f32; WTILE_MAX]; TILE];
            scalar.dot_tile(wt, &w, rb, &act, 0, TILE, WTILE_MAX, &mut got);
            for k in 0..WTILE_MAX {
                let wk = &w[k * rb..(k + 1) * rb];
                let mut wf = vec![0f32; cols];
                dequant_row(wt, wk, &mut wf);
                for (i, g) in got.iter().map(|row| row[k]).enumerate() {
                    let row = act.row(i);
                    let xf: Vec<f64> = row
                        .qs
                        .iter()
                        .enumerate()
                        .map(|(j, &q)| row.d[j / act.qk] as f64 * q as f64)
                        .collect();
                    let want: f64 = wf.iter().zip(&xf).map(|(&w, &x)| w as f64 * x).sum();
                    let mag = magnitude(wt, wk, &wf, &xf);
                    let err = (g as f64 - want).abs();
                    assert!(
                        err <= 1e-5 * mag,
                        "{wt:?} {cols} cols, {rows} rows ({k}, {i}): {} vs {want} (error {:.2e} of {mag:.3e})",
                        g,
                        err / mag
                    );
                }
            }
        }
    }
}

/// The block layouts, from an independent decoder: candle's `dequantize` of blocks candle's
/// `quantize` packed (its code follows ggml's `quantize_row_*_ref` and `dequantize_row_*`), against
/// `dequant_row`, bit for bit.
#[test]
fn dequant_row_reads_every_block_layout_as_candle_does() {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    let mut g = SplitMix::new(31337);
    let cols = 512;
    let x: Vec<f32> = (0..cols * 3)
        .map(|_| (g.uniform() as f32 - 0.5) * 2.0)
        .collect();
    let t = Tensor::from_vec(x, (3, cols), &Device::Cpu).unwrap();
    for (wt, dt) in [
        (WType::Q4_1, GgmlDType::Q4_1),
        (WType::Q5_0, GgmlDType::Q5_0),
        (WType::Q8_0, GgmlDType::Q8_0),
        (WType::Q4_K, GgmlDType::Q4K),
        (WType::Q6_K, GgmlDType::Q6K),
    ] {
        assert_eq!(WType::from_ggml(dt), Some(wt));
        let q = QTensor::quantize(&t, dt).unwrap();
        let bytes = q.data().unwrap();
        let want: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let rb = wt.row_bytes(cols);
        assert_eq!(bytes.len(), 3 * rb, "{wt:?}: block size");
        for r in 0..3 {
            let mut got = vec![0f32; cols];
            dequant_row(wt, &bytes[r * rb..(r + 1) * rb], &mut got);
            for (j, (a, b)) in got.iter().zip(&want[r * cols..(r + 1) * cols]).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{wt:?} row {r} value {j}: {a} vs {b}"
                );
            }
        }
    }
}

/// Blocks written by hand as ggml's `quantize_row_*_ref` packs them (the code transcribed below), with
/// known values, read back by `dequant_row`.
#[test]
fn hand_packed_ggml_blocks_read_back() {
    // Q5_0: d = 0.5, value j = j - 16 (5-bit code j).
    let mut blk = vec![0u8; 22];
    blk[..2].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
    let mut qh = 0u32;
    for j in 0..16 {
        let (xi0, xi1) = (j as u8, (j + 16) as u8);
        blk[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
        qh |= (((xi0 & 0x10) >> 4) as u32) << j;
        qh |= (((xi1 & 0x10) >> 4) as u32) << (j + 16);
    }
    blk[2..6].copy_from_slice(&qh.to_le_bytes());
    let mut out = vec![0f32; 32];
    dequant_row(WType::Q5_0, &blk, &mut out);
    let want: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 - 16.0)).collect();
    assert_eq!(out, want);

    // Q4_K: d = 1, dmin = 0.25, sub-block j has scale j + 40 and min 63 - j (both above 15, so the high
    // bits of the 6-bit packing matter), value e has code e % 16.
    let mut blk = vec![0u8; 144];
    blk[..2].copy_from_slice(&f16::from_f32(1.0).to_bits().to_le_bytes());
    blk[2..4].copy_from_slice(&f16::from_f32(0.25).to_bits().to_le_bytes());
    let scales = &mut blk[4..16];
    for j in 0..8 {
        let (ls, lm) = (j as u8 + 40, 63 - j as u8);
        if j < 4 {
            scales[j] = ls;
            scales[j + 4] = lm;
        } else {
            scales[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            scales[j - 4] |= (ls >> 4) << 6;
            scales[j] |= (lm >> 4) << 6;
        }
    }
    let l: Vec<u8> = (0..256).map(|e| (e % 16) as u8).collect();
    for (c, j) in (0..256).step_by(64).enumerate() {
        for i in 0..32 {
            blk[16 + 32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
        }
    }
    let mut out = vec![0f32; 256];
    dequant_row(WType::Q4_K, &blk, &mut out);
    for (e, &v) in out.iter().enumerate() {
        let j = e / 32;
        let want = (j as f32 + 40.0) * (e % 16) as f32 - 0.25 * (63 - j) as f32;
        assert_eq!(v, want, "Q4_K value {e}");
    }

    // Q6_K: d = 0.5, group g (16 values) has scale g - 8, value e has code (7 e) % 64.
    let mut blk = vec![0u8; 210];
    let l: Vec<u8> = (0..256).map(|e| (7 * e % 64) as u8).collect();
    for (n, j) in (0..256).step_by(128).enumerate() {
        let (ql, qh) = (64 * n, 128 + 32 * n);
        for i in 0..32 {
            let q = |o: usize| l[j + i + o];
            blk[ql + i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            blk[ql + i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            blk[qh + i] =
                (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
    for gr in 0..16 {
        blk[192 + gr] = (gr as i8 - 8) as u8;
    }
    blk[208..].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
    let mut out = vec![0f32; 256];
    dequant_row(WType::Q6_K, &blk, &mut out);
    for (e, &v) in out.iter().enumerate() {
        let want = 0.5 * ((e / 16) as f32 - 8.0) * (l[e] as f32 - 32.0);
        assert_eq!(v, want, "Q6_K value {e}");
    }
}

/// Q8_K activations as ggml's `quantize_row_q8_K_ref` makes them: the value of largest magnitude maps to
/// -127, d = 1 / iscale unrounded, and the sums of each 16.
#[test]
fn q8_k_activations_are_quantized_as_ggml_does() {
    let mut x: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
        .collect();
    x[300] = 9.0; // the second block's largest magnitude, positive
    let mut act = Act::default();
    quantize(&x, 512, WType::Q6_K.act(), &mut act);
    assert!(act.consistent() && act.qk == QK_K && act.nb == 2 && act.rows() == 1);
    let max0 = x[..256]
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    assert_eq!(max0, -5.0);
    assert_eq!(act.d[0], 1.0 / (-127.0 / max0));
    assert_eq!(act.d[1], 1.0 / (-127.0 / 9.0));
    assert_eq!(act.qs[256 + 44], -127);
    for b in 0..2 {
        let iscale = 1.0 / act.d[b];
        for j in 0..256 {
            let want = (x[b * 256 + j] * (-127.0 / [max0, 9.0][b])).round_ties_even();
            assert_eq!(
                act.qs[b * 256 + j] as f32,
                want,
                "block {b} value {j} (iscale {iscale})"
            );
        }
        for k in 0..16 {
            let s: i32 = act.qs[b * 256 + 16 * k..][..16]
                .iter()
                .map(|&q| q as i32)
                .sum();
            assert_eq!(act.bsums[b * 16 + k] as i32, s);
        }
    }
    // All zeros: d 0, values 0.
    quantize(&[0.0; 256], 256, WType::Q4_K.act(), &mut act);
    assert_eq!((act.d[0], act.qs.iter().all(|&q| q == 0)), (0.0, true));
}

/// Gate values for `swiglu`: ordinary ones, both zeros, and each range `v_expf` treats apart (|n| > 126:
/// scaled in two steps; > 192: flushed), around where e^-x leaves f32.
fn swiglu_inputs(g: &mut SplitMix, n: usize) -> Vec<f32> {
    let edges = [
        0.0, -0.0, 1e-30, -1e-30, 87.0, -87.0, 88.5, -88.5, 95.0, -95.0, 104.5, -104.5, 150.0,
        -150.0, 3e4, -3e4,
    ];
    (0..n)
        .map(|i| match i % 4 {
            0 if i / 4 < edges.len() => edges[i / 4],
            0 | 1 => (g.uniform() as f32 - 0.5) * 16.0,
            2 => (g.uniform() as f32 - 0.5) * 240.0,
            _ => (g.uniform() as f32 - 0.5) * 0.02,
        })
        .collect()
}

#[test]
fn every_kernel_set_gives_the_scalar_swiglu_bit_for_bit() {
    let mut g = SplitMix::new(11);
    for len in [8, 13, 64, 896, 4864] {
        let gate = swiglu_inputs(&mut g, len);
        let up: Vec<f32> = (0..len).map(|_| g.uniform() as f32 * 4.0 - 2.0).collect();
        let mut want = gate.clone();
        scalar::swiglu(&mut want, &up);
        for k in sets() {
            let mut got = gate.clone();
            k.swiglu(&mut got, &up);
            for i in 0..len {
                assert_eq!(
                    got[i].to_bits(),
                    want[i].to_bits(),
                    "{}: swiglu of {} (× {}) at {i} of {len}",
                    k.isa(),
                    gate[i],
                    up[i]
                );
            }
        }
    }
}

#[test]
fn swiglu_is_silu_times_up_to_rounding() {
    let mut g = SplitMix::new(12);
    let len = 4096 + 5;
    let gate = swiglu_inputs(&mut g, len);
    let up: Vec<f32> = (0..len).map(|_| g.uniform() as f32 * 4.0 - 2.0).collect();
    let mut got = gate.clone();
    scalar::swiglu(&mut got, &up);
    for i in 0..len {
        let x = gate[i] as f64;
        let exact = x / (1.0 + (-x).exp()) * up[i] as f64;
        let err = (got[i] as f64 - exact).abs();
        assert!(
            err <= 1e-6 * exact.abs() + 1e-35,
            "swiglu({}) × {} = {} against {exact}",
            gate[i],
            up[i],
            got[i]
        );
    }
    // e^x itself, within ggml's stated 1.45 ulp + 0.5, over the range where it is a normal float.
    for i in 0..20_000 {
        let x = -87.0 + 175.0 * i as f32 / 20_000.0;
        let exact = (x as f64).exp();
        let ulp = f32::EPSILON as f64 * exact;
        assert!(
            (scalar::v_expf(x) as f64 - exact).abs() <= 2.0 * ulp,
            "v_expf({x}) = {} against {exact}",
            scalar::v_expf(x)
        );
    }
}
