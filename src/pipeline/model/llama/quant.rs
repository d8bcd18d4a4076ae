//! Quantized formats: the weight blocks read from the file, and the 8-bit activation rows the matrix
//! products take (quantized as ggml quantizes them, so the results round as llama.cpp's do).

use half::f16;

/// Values per block in every quantized format used here.
pub(super) const QK: usize = 32;
/// Bytes of one Q4_1 block: f16 scale d, f16 minimum m, 16 bytes of 4-bit values.
pub(super) const Q4_1_BYTES: usize = 20;
/// Bytes of one Q8_0 block: f16 scale d, 32 signed bytes.
pub(super) const Q8_0_BYTES: usize = 34;

/// The weight formats the own pass multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WType {
    Q4_1,
    Q8_0,
}

impl WType {
    pub(super) fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => Q4_1_BYTES,
            Self::Q8_0 => Q8_0_BYTES,
        }
    }

    /// The activation format its dot product takes.
    pub(super) fn act(self) -> ActType {
        match self {
            Self::Q4_1 => ActType::Q8_1,
            Self::Q8_0 => ActType::Q8_0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActType {
    Q8_0,
    Q8_1,
}

/// Quantized activation rows in the kernels' layout: the 8-bit values of a row contiguous (`nb` blocks of
/// 32), and per block the scale d and, for Q8_1, d × Σq (the f16 values ggml stores, widened to f32 once
/// here rather than in every dot product that reads them).
#[derive(Default)]
pub(super) struct Act {
    pub(super) qs: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
    /// Blocks per row.
    pub(super) nb: usize,
}

impl Act {
    /// Rows held.
    pub(super) fn rows(&self) -> usize {
        self.d.len().checked_div(self.nb).unwrap_or(0)
    }

    pub(super) fn row(&self, r: usize) -> ActRow<'_> {
        ActRow {
            qs: &self.qs[r * self.nb * QK..][..self.nb * QK],
            d: &self.d[r * self.nb..][..self.nb],
            s: &self.s[r * self.nb..][..self.nb],
        }
    }
}

/// One row of [`Act`].
#[derive(Clone, Copy)]
pub(super) struct ActRow<'a> {
    pub(super) qs: &'a [i8],
    pub(super) d: &'a [f32],
    pub(super) s: &'a [f32],
}

/// Quantizes rows of `cols` values as ggml quantizes matmul activations (`quantize_row_q8_0/q8_1`): scale
/// amax/127 stored as f16, values rounded to nearest even, and for Q8_1 the f16 of scale × sum.
#[inline(always)]
pub(super) fn quantize(x: &[f32], cols: usize, t: ActType, out: &mut Act) {
    let rows = x.len() / cols;
    let nb = cols / QK;
    out.nb = nb;
    out.qs.clear();
    out.qs.resize(rows * nb * QK, 0);
    out.d.clear();
    out.d.resize(rows * nb, 0.0);
    out.s.clear();
    out.s.resize(rows * nb, 0.0);
    for r in 0..rows {
        for b in 0..nb {
            let xb = &x[r * cols + b * QK..][..QK];
            let qs = &mut out.qs[(r * nb + b) * QK..][..QK];
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xb) {
                let r = (v * id).round_ties_even() as i32;
                sum += r;
                *q = r as i8;
            }
            let d16 = f16::from_f32(d);
            out.d[r * nb + b] = d16.to_f32();
            if t == ActType::Q8_1 {
                out.s[r * nb + b] = f16::from_f32(d * sum as f32).to_f32();
            }
        }
    }
}

/// The little-endian f16 at byte `at` of `b`, widened.
#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// One Q8_0 row (the embedding of a token) to f32.
#[inline(always)]
pub(super) fn dequant_q8_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        for (o, &q) in o.iter_mut().zip(&blk[2..]) {
            *o = d * (q as i8) as f32;
        }
    }
}

/// One Q4_1 row (the embedding of a token) to f32, as ggml's `dequantize_row_q4_1`: a block's low nibbles
/// are its values 0..16, its high nibbles 16..32.
#[inline(always)]
pub(super) fn dequant_q4_1(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
        let (lo, hi) = o.split_at_mut(QK / 2);
        for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(&blk[4..]) {
            *lo = (q & 0x0F) as f32 * d + m;
            *hi = (q >> 4) as f32 * d + m;
        }
    }
}

/// f32 to the f16 bits the KV cache holds.
#[inline(always)]
pub(super) fn to_f16(src: &[f32], dst: &mut [u16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s).to_bits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_1_sum_is_scale_times_sum_of_quants() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let mut act = Act::default();
        quantize(&x, 32, ActType::Q8_1, &mut act);
        let d = act.d[0];
        let sum: i32 = act.qs[..32].iter().map(|&q| q as i32).sum();
        let s = d * sum as f32;
        let got = act.s[0];
        assert!((got - s).abs() <= 1e-3 * s.abs(), "{got} vs {s}");
        assert_eq!(act.nb, 1);
        assert_eq!(act.rows(), 1);
        assert!((d - 21.0 / 127.0).abs() < 1e-3);
    }
}
