//! The portable kernels: the SIMD kernels' arithmetic written out lane by lane, so that a CPU without
//! AVX2 computes the very same sums (the same products, rounded in the same order) and greedy outputs do not
//! depend on the CPU. Integer products are exact, so only the float steps need to follow the SIMD order:
//! 8 lanes, each a chain of fused multiply-adds block after block, then [`hsum`].

use super::super::quant::{ActRow, Q4_1_BYTES, Q8_0_BYTES, QK, WType, f16_at};
use super::Tile;

/// The SIMD horizontal sum of 8 lanes: the halves added lane by lane, then pairs, then the last two.
#[inline(always)]
pub(super) fn hsum(v: [f32; 8]) -> f32 {
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

/// One weight row · one activation row (see `avx2::q4_1` and `avx2::q8_0`): lane l of a block takes the
/// integer sum of its values 4l..4l + 4, where Q4_1 lays out a block's low nibbles (values 0..16) and then
/// its high ones (16..32).
pub(super) fn dot(wt: WType, w: &[u8], x: ActRow) -> f32 {
    let mut acc = [0f32; 8];
    let mut summ = 0f32;
    match wt {
        WType::Q4_1 => {
            for (b, (wb, xq)) in w
                .chunks_exact(Q4_1_BYTES)
                .zip(x.qs.chunks_exact(QK))
                .enumerate()
            {
                let (dw, mw) = (f16_at(wb, 0), f16_at(wb, 2));
                let dd = dw * x.d[b];
                for (l, acc) in acc.iter_mut().enumerate() {
                    let mut lane = 0i32;
                    for p in 4 * l..4 * l + 4 {
                        let q = wb[4 + p % 16];
                        let v = if p < 16 { q & 0x0F } else { q >> 4 };
                        lane += v as i32 * xq[p] as i32;
                    }
                    *acc = dd.mul_add(lane as f32, *acc);
                }
                summ += mw * x.s[b];
            }
        }
        WType::Q8_0 => {
            for (b, (wb, xq)) in w
                .chunks_exact(Q8_0_BYTES)
                .zip(x.qs.chunks_exact(QK))
                .enumerate()
            {
                let dd = f16_at(wb, 0) * x.d[b];
                for (l, acc) in acc.iter_mut().enumerate() {
                    let lane: i32 = (4 * l..4 * l + 4)
                        .map(|p| wb[2 + p] as i8 as i32 * xq[p] as i32)
                        .sum();
                    *acc = dd.mul_add(lane as f32, *acc);
                }
            }
        }
    }
    hsum(acc) + summ
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
    for (k, out) in out[..cn].iter_mut().enumerate() {
        for (i, o) in out[..t].iter_mut().enumerate() {
            *o = dot(wt, &w[k * rb..(k + 1) * rb], act.row(r + i));
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
