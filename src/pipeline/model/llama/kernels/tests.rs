//! Every kernel set this CPU runs gives bit for bit what the scalar set gives: greedy outputs, and so the
//! agreement with llama.cpp's ids, depend on it. The scalar set in turn is held (to rounding) to ggml's
//! generic block-by-block dot product.

use half::f16;

use super::super::quant::{Act, ActRow, Q4_1_BYTES, Q8_0_BYTES, QK, WType, f16_at, quantize};
use super::*;
use crate::rng::SplitMix;

/// Random weight rows of `cols` columns: an f16 scale (and min for Q4_1) and random quant bytes, every
/// byte value included (-128 for Q8_0, every nibble for Q4_1).
fn random_weights(wt: WType, rows: usize, cols: usize, g: &mut SplitMix) -> Vec<u8> {
    let mut w = Vec::new();
    for _ in 0..rows * cols / QK {
        let start = w.len();
        w.extend_from_slice(
            &f16::from_f32(g.uniform() as f32 * 0.1)
                .to_bits()
                .to_le_bytes(),
        );
        if wt == WType::Q4_1 {
            w.extend_from_slice(&f16::from_f32(g.uniform() as f32).to_bits().to_le_bytes());
        }
        while w.len() - start < wt.block_bytes() {
            w.push(g.next_u64() as u8);
        }
    }
    w
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
    // Odd and even block counts: the 512-bit Q4_1 kernel takes blocks in pairs, and reads a row's last
    // pair with a masked load.
    for cols in [32, 64, 96, 128, 160, 576, 1536] {
        let x: Vec<f32> = (0..cols * TILE).map(|_| g.uniform() as f32 * 3.0).collect();
        for wt in [WType::Q4_1, WType::Q8_0] {
            let rb = cols / QK * wt.block_bytes();
            let w = random_weights(wt, WTILE_MAX, cols, &mut g);
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            for t in 1..=TILE {
                for cn in 1..=WTILE_MAX {
                    for r in [0, TILE - t] {
                        let mut want = [[0f32; TILE]; WTILE_MAX];
                        scalar.dot_tile(wt, &w[..cn * rb], rb, &act, r, t, cn, &mut want);
                        for set in &sets {
                            let mut got = [[0f32; TILE]; WTILE_MAX];
                            set.dot_tile(wt, &w[..cn * rb], rb, &act, r, t, cn, &mut got);
                            for k in 0..cn {
                                for i in 0..t {
                                    assert_eq!(
                                        got[k][i].to_bits(),
                                        want[k][i].to_bits(),
                                        "{} {wt:?} {cols} cols, tile {t}x{cn} at {r}, ({k}, {i}): {} vs {}",
                                        set.isa(),
                                        got[k][i],
                                        want[k][i]
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
    let (hd, n, kv_heads) = (64, 70, 3);
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
}

/// ggml's generic dot product, block by block (a sum per block, then the blocks in order).
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
            let rb = cols / QK * wt.block_bytes();
            let w = random_weights(wt, WTILE_MAX, cols, &mut g);
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            let mut got = [[0f32; TILE]; WTILE_MAX];
            scalar.dot_tile(wt, &w, rb, &act, 0, TILE, WTILE_MAX, &mut got);
            for k in 0..WTILE_MAX {
                for i in 0..TILE {
                    let want = dot_reference(wt, &w[k * rb..(k + 1) * rb], act.row(i));
                    assert!(
                        close(got[k][i], want),
                        "{wt:?} {cols} cols ({k}, {i}): {} vs {want}",
                        got[k][i]
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
    let mut out = [[0f32; TILE]; WTILE_MAX];
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
    let cols = 96;
    for wt in [WType::Q4_1, WType::Q8_0] {
        let rb = cols / QK * wt.block_bytes();
        let w = random_weights(wt, 7, cols, &mut g);
        for rows in 1..=5 {
            let x: Vec<f32> = (0..cols * rows).map(|_| g.uniform() as f32).collect();
            let mut act = Act::default();
            quantize(&x, cols, wt.act(), &mut act);
            for wtile in [2, 4] {
                for set in &sets {
                    let mut got = vec![f32::NAN; rows * 7];
                    let mut seen = vec![0; rows * 7];
                    set.dot_rows(wt, &w, rb, &act, wtile, rows == 1, |r, c, t, cn, d| {
                        for i in 0..t {
                            for k in 0..cn {
                                got[(r + i) * 7 + c + k] = d[k][i];
                                seen[(r + i) * 7 + c + k] += 1;
                            }
                        }
                    });
                    assert!(seen.iter().all(|&n| n == 1), "{} {rows}x{wtile}", set.isa());
                    for i in 0..rows {
                        for k in 0..7 {
                            let want = scalar::dot(wt, &w[k * rb..(k + 1) * rb], act.row(i));
                            assert_eq!(
                                got[i * 7 + k].to_bits(),
                                want.to_bits(),
                                "{} {wt:?} {rows} rows, tile width {wtile}: ({i}, {k})",
                                set.isa()
                            );
                        }
                    }
                }
            }
        }
    }
}
