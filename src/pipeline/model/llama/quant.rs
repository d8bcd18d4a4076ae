//! Quantized formats: the weight blocks read from the file (Q4_1, Q5_0, Q8_0, Q4_K, Q6_K, laid out as
//! ggml lays them out; each also repacked 8 rows at a time, losslessly), and the 8-bit
//! activation rows the matrix products take (Q8_0, Q8_1, Q8_K, quantized as ggml quantizes them).

use half::f16;

/// Values per block in the 32-value formats (Q4_1, Q5_0, Q8_0 and the Q8_0/Q8_1 activations).
pub(super) const QK: usize = 32;
/// Values per super-block in the K formats (Q4_K, Q6_K and the Q8_K activations).
pub(super) const QK_K: usize = 256;
/// Bytes of one Q4_1 block: f16 scale d, f16 minimum m, 16 bytes of 4-bit values.
pub(super) const Q4_1_BYTES: usize = 20;
/// Bytes of one Q5_0 block: f16 scale d, 4 bytes of fifth bits (bit j for value j), 16 bytes of low
/// nibbles (byte j: value j in the low nibble, value j + 16 in the high one); a value is its 5 bits - 16.
pub(super) const Q5_0_BYTES: usize = 22;
/// Bytes of one Q8_0 block: f16 scale d, 32 signed bytes.
pub(super) const Q8_0_BYTES: usize = 34;
/// Bytes of one Q4_K super-block: f16 d, f16 dmin, 12 bytes of eight 6-bit scales and eight 6-bit mins
/// (ggml's `get_scale_min_k4` packing), 128 bytes of nibbles (each 64 values: 32 bytes, low nibbles the
/// first 32-value sub-block, high nibbles the second). A value is `d × scale × q - dmin × min`.
pub(super) const Q4_K_BYTES: usize = 144;
/// Bytes of one Q6_K super-block: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed
/// 8-bit scales (one per 16 values), f16 d. A value is `d × scale × (q - 32)`, q 6 bits.
pub(super) const Q6_K_BYTES: usize = 210;
/// Bytes of one super-block of 8 Q4_K rows repacked for the tile kernels ([`WType::Q4_K_X8`], laid out by
/// [`repack_q4_k_x8`]): the 8 rows' f16 d (16 bytes) and dmin (16), their scales unpacked to one byte each
/// (sub-block j's 8 rows at 32 + 8j), their mins unpacked and paired (at 96 + 16p, row k's mins of
/// sub-blocks 2p and 2p + 1 at bytes 2k and 2k + 1), then the nibbles interleaved 4 bytes at a time (at
/// 160 + 256c + 32g, row k's bytes 32c + 4g..32c + 4g + 4 at 4k): 32 bytes more than the 8 blocks.
pub(super) const Q4_K_X8_BYTES: usize = 1184;
/// Bytes of one super-block of 8 Q6_K rows repacked for the tile kernels ([`WType::Q6_K_X8`], laid out by
/// [`repack_q6_k_x8`]): the 8 rows' f16 d (16 bytes), their scales (16-value group h's 8 rows at 16 + 8h),
/// the low nibbles interleaved 4 bytes at a time (at 144 + 256(2j + h) + 32g, row k's bytes 64j + 32h +
/// 4g.. at 4k), then the high bits likewise (at 1168 + 256j + 32g, row k's bytes 32j + 4g.. at 4k): the
/// 8 blocks' bytes, rearranged.
pub(super) const Q6_K_X8_BYTES: usize = 8 * Q6_K_BYTES;
/// Bytes of one block of 8 Q5_0 rows repacked for the tile kernels ([`WType::Q5_0_X8`], laid out by
/// [`repack_q5_0_x8`]): the 8 rows' f16 d (16 bytes); the nibbles as 4 runs of 32 bytes (run m at
/// 16 + 32m, row k's file bytes 4m..4m + 4 at 4k, so that the low nibbles of run m are the values
/// 4m..4m + 4 of each row, the high ones 16 + 4m..16 + 4m + 4); then the fifth bits, 32 bytes at 144, byte
/// 4k + t holding in bit g the fifth bit of row k's value 4g + t: the 8 blocks' bytes, rearranged.
pub(super) const Q5_0_X8_BYTES: usize = 8 * Q5_0_BYTES;
/// Bytes of one block of 8 Q4_1 rows repacked for the tile kernels ([`WType::Q4_1_X8`], laid out by
/// [`repack_q4_1_x8`]): the 8 rows' f16 d (16 bytes) and m (16), then the nibbles as 4 runs of 32 bytes
/// (run j at 32 + 32j, row k's file bytes 4j..4j + 4 at 4k: the low nibbles of run j are the values
/// 4j..4j + 4 of each row, the high ones 16 + 4j..16 + 4j + 4): the 8 blocks' bytes, rearranged.
pub(super) const Q4_1_X8_BYTES: usize = 8 * Q4_1_BYTES;
/// Bytes of one block of 8 Q8_0 rows repacked for the tile kernels ([`WType::Q8_0_X8`], laid out by
/// [`repack_q8_0_x8`]): the 8 rows' f16 d (16 bytes), then 8 runs of 32 bytes (run g at 16 + 32g, row k's
/// values 4g..4g + 4 at 4k): the 8 blocks' bytes, rearranged.
pub(super) const Q8_0_X8_BYTES: usize = 8 * Q8_0_BYTES;

/// The weight formats the own pass multiplies (named as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WType {
    Q4_1,
    Q5_0,
    Q8_0,
    Q4_K,
    Q6_K,
    /// Q4_K rows repacked 8 at a time at load ([`repack_q4_k_x8`]), so that one 256-bit product reads a
    /// 4-value run of 8 rows and its lanes are those rows' sums (as llama.cpp repacks Q4_K for its
    /// `gemm_q4_K_8x8_q8_K`). A matrix of this type has a multiple of 8 rows; a "row" of it is
    /// [`Q4_K_X8_BYTES`] / 8 bytes per super-block, and only whole groups of 8 rows are addressed.
    Q4_K_X8,
    /// Q6_K rows repacked 8 at a time at load ([`repack_q6_k_x8`]), as [`WType::Q4_K_X8`].
    Q6_K_X8,
    /// Q5_0 rows repacked 8 at a time at load ([`repack_q5_0_x8`]), as [`WType::Q4_K_X8`].
    Q5_0_X8,
    /// Q4_1 rows repacked 8 at a time at load ([`repack_q4_1_x8`]), as [`WType::Q4_K_X8`].
    Q4_1_X8,
    /// Q8_0 rows repacked 8 at a time at load ([`repack_q8_0_x8`]), as [`WType::Q4_K_X8`].
    Q8_0_X8,
}

impl WType {
    /// The format of a GGUF tensor type, if the own pass reads it.
    pub(super) fn from_ggml(t: candle_core::quantized::GgmlDType) -> Option<Self> {
        use candle_core::quantized::GgmlDType as G;
        Some(match t {
            G::Q4_1 => Self::Q4_1,
            G::Q5_0 => Self::Q5_0,
            G::Q8_0 => Self::Q8_0,
            G::Q4K => Self::Q4_K,
            G::Q6K => Self::Q6_K,
            _ => return None,
        })
    }

    /// Bytes of one block.
    pub(super) fn block_bytes(self) -> usize {
        match self {
            Self::Q4_1 => Q4_1_BYTES,
            Self::Q5_0 => Q5_0_BYTES,
            Self::Q8_0 => Q8_0_BYTES,
            Self::Q4_K => Q4_K_BYTES,
            Self::Q6_K => Q6_K_BYTES,
            Self::Q4_K_X8 => Q4_K_X8_BYTES / 8,
            Self::Q6_K_X8 => Q6_K_BYTES,
            Self::Q5_0_X8 => Q5_0_BYTES,
            Self::Q4_1_X8 => Q4_1_BYTES,
            Self::Q8_0_X8 => Q8_0_BYTES,
        }
    }

    /// Values per block (a row's length must be a multiple of it).
    pub(super) fn block_len(self) -> usize {
        match self {
            Self::Q4_1
            | Self::Q5_0
            | Self::Q8_0
            | Self::Q5_0_X8
            | Self::Q4_1_X8
            | Self::Q8_0_X8 => QK,
            Self::Q4_K | Self::Q6_K | Self::Q4_K_X8 | Self::Q6_K_X8 => QK_K,
        }
    }

    /// Bytes of a row of `cols` values (`cols` a multiple of [`WType::block_len`]).
    pub(super) fn row_bytes(self, cols: usize) -> usize {
        cols / self.block_len() * self.block_bytes()
    }

    /// Whether its rows are repacked 8 at a time (multiplied a group of 8 at a time).
    pub(super) fn repacked(self) -> bool {
        matches!(
            self,
            Self::Q4_K_X8 | Self::Q6_K_X8 | Self::Q5_0_X8 | Self::Q4_1_X8 | Self::Q8_0_X8
        )
    }

    /// For a format the tile kernels repack: the repacked format and the function that repacks 8 rows.
    pub(super) fn repacking(self) -> Option<(Self, Repack)> {
        match self {
            Self::Q4_K => Some((Self::Q4_K_X8, repack_q4_k_x8)),
            Self::Q6_K => Some((Self::Q6_K_X8, repack_q6_k_x8)),
            Self::Q5_0 => Some((Self::Q5_0_X8, repack_q5_0_x8)),
            Self::Q4_1 => Some((Self::Q4_1_X8, repack_q4_1_x8)),
            Self::Q8_0 => Some((Self::Q8_0_X8, repack_q8_0_x8)),
            _ => None,
        }
    }

    /// For a repacked format, the file's format it was made from; any other, itself.
    pub(super) fn file_format(self) -> Self {
        match self {
            Self::Q4_K_X8 => Self::Q4_K,
            Self::Q6_K_X8 => Self::Q6_K,
            Self::Q5_0_X8 => Self::Q5_0,
            Self::Q4_1_X8 => Self::Q4_1,
            Self::Q8_0_X8 => Self::Q8_0,
            t => t,
        }
    }

    /// The activation format its dot product takes (ggml's `vec_dot_type`).
    pub(super) fn act(self) -> ActType {
        match self {
            Self::Q4_1 | Self::Q4_1_X8 => ActType::Q8_1,
            Self::Q5_0 | Self::Q8_0 | Self::Q5_0_X8 | Self::Q8_0_X8 => ActType::Q8_0,
            Self::Q4_K | Self::Q6_K | Self::Q4_K_X8 | Self::Q6_K_X8 => ActType::Q8_K,
        }
    }
}

#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActType {
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActType {
    /// Values per block.
    pub(super) fn block_len(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q8_1 => QK,
            Self::Q8_K => QK_K,
        }
    }
}

/// Quantized activation rows in the kernels' layout: the 8-bit values of a row contiguous (`nb` blocks of
/// `qk`), and per block the scale d (for Q8_0/Q8_1 the f16 value ggml stores, widened to f32 once here
/// rather than in every dot product that reads it; for Q8_K ggml's f32), for Q8_1 d × Σq (f16, widened),
/// and for Q8_K the sums of each 16 values (`bsums`, 16 per block; empty otherwise). For Q8_0, `x16`
/// holds per block 16 × the sum of its values: the part of a Q5_0 product that the values' offset of 16
/// contributes, computed once per activation block rather than once per weight row.
#[derive(Default)]
pub(super) struct Act {
    pub(super) qs: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) s: Vec<f32>,
    pub(super) bsums: Vec<i16>,
    pub(super) x16: Vec<i32>,
    /// Blocks per row.
    pub(super) nb: usize,
    /// Values per block: 32, or 256 for Q8_K.
    pub(super) qk: usize,
}

impl Act {
    /// Sized, zeroed and shaped for `len` values in rows of `cols` quantized as `t`: (rows, blocks per row).
    pub(super) fn reset(&mut self, len: usize, cols: usize, t: ActType) -> (usize, usize) {
        let qk = t.block_len();
        let (rows, nb) = (len / cols, cols / qk);
        self.nb = nb;
        self.qk = qk;
        self.qs.clear();
        self.qs.resize(rows * nb * qk, 0);
        self.d.clear();
        self.d.resize(rows * nb, 0.0);
        self.s.clear();
        self.s.resize(rows * nb, 0.0);
        self.bsums.clear();
        self.x16.clear();
        if t == ActType::Q8_0 {
            self.x16.resize(rows * nb, 0);
        }
        if t == ActType::Q8_K {
            self.bsums.resize(rows * nb * QK_K / 16, 0);
        }
        (rows, nb)
    }

    /// Rows held.
    pub(super) fn rows(&self) -> usize {
        self.d.len().checked_div(self.nb).unwrap_or(0)
    }

    /// Whether the vectors have the lengths `nb` and `qk` give them (the kernels' bounds rely on it).
    pub(super) fn consistent(&self) -> bool {
        let blocks = self.d.len();
        (self.qk == QK || self.qk == QK_K)
            && self.qs.len() == blocks * self.qk
            && self.s.len() == blocks
            && (self.bsums.len() == blocks * QK_K / 16 || self.qk == QK && self.bsums.is_empty())
            && (self.x16.len() == blocks || self.x16.is_empty())
    }

    pub(super) fn row(&self, r: usize) -> ActRow<'_> {
        let bsums = if self.bsums.is_empty() {
            &[][..]
        } else {
            &self.bsums[r * self.nb * 16..][..self.nb * 16]
        };
        ActRow {
            qs: &self.qs[r * self.nb * self.qk..][..self.nb * self.qk],
            d: &self.d[r * self.nb..][..self.nb],
            s: &self.s[r * self.nb..][..self.nb],
            bsums,
        }
    }
}

/// One row of [`Act`].
#[derive(Clone, Copy)]
pub(super) struct ActRow<'a> {
    pub(super) qs: &'a [i8],
    pub(super) d: &'a [f32],
    pub(super) s: &'a [f32],
    pub(super) bsums: &'a [i16],
}

/// Quantizes rows of `cols` values as ggml quantizes matmul activations. Q8_0/Q8_1
/// (`quantize_row_q8_0/q8_1`): scale amax/127 stored as f16, values rounded to nearest even, and for Q8_1
/// the f16 of scale × sum. Q8_K (`quantize_row_q8_K_ref`, which the x86 build uses as it is, and which
/// its 4-row AVX2 form for repacked Q4_K matches up to a sign flip that changes no product): per 256
/// values, iscale = -127 / (the value of largest magnitude, the first if tied), q = round-to-even(iscale ×
/// x) capped at 127, d = 1 / iscale in f32, and the sums of each 16 q. `cols` is a multiple of the
/// format's block.
#[inline(always)]
pub(super) fn quantize(x: &[f32], cols: usize, t: ActType, out: &mut Act) {
    let (rows, nb) = out.reset(x.len(), cols, t);
    if t == ActType::Q8_K {
        for (i, xb) in x[..rows * cols].chunks_exact(QK_K).enumerate() {
            let qs = &mut out.qs[i * QK_K..][..QK_K];
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in xb {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                // d stays 0 and the values 0, as ggml leaves them.
                continue;
            }
            let iscale = -127.0 / max;
            for (q, &v) in qs.iter_mut().zip(xb) {
                *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
            }
            for (s, q16) in out.bsums[i * 16..][..16]
                .iter_mut()
                .zip(qs.chunks_exact(16))
            {
                *s = q16.iter().map(|&q| q as i16).sum();
            }
            out.d[i] = 1.0 / iscale;
        }
        return;
    }
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
            if t == ActType::Q8_0 {
                out.x16[r * nb + b] = 16 * sum;
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

/// One Q5_0 row to f32, as ggml's `dequantize_row_q5_0`.
#[inline(always)]
pub(super) fn dequant_q5_0(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q5_0_BYTES).zip(out.chunks_exact_mut(QK)) {
        let d = f16_at(blk, 0);
        let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
        let (lo, hi) = o.split_at_mut(QK / 2);
        for (j, ((lo, hi), &q)) in lo.iter_mut().zip(hi).zip(&blk[6..]).enumerate() {
            let h0 = ((qh >> j) & 1) << 4;
            let h1 = ((qh >> (j + 16)) & 1) << 4;
            *lo = ((q as u32 & 0x0F | h0) as i32 - 16) as f32 * d;
            *hi = ((q as u32 >> 4 | h1) as i32 - 16) as f32 * d;
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K super-block's 12 scale bytes (ggml's
/// `get_scale_min_k4`).
#[inline(always)]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A repacking of 8 rows of `nb` blocks ([`repack_q4_k_x8`], [`repack_q6_k_x8`], [`repack_q5_0_x8`],
/// [`repack_q4_1_x8`], [`repack_q8_0_x8`]).
pub(super) type Repack = fn(&[u8], usize, &mut [u8]);

/// Repacks 8 Q4_K rows of `nb` super-blocks each (`src`, the rows one after another) into `dst`
/// ([`Q4_K_X8_BYTES`] per super-block, see there). Lossless: [`unpack_q4_k_x8`] gives the blocks back.
pub(super) fn repack_q4_k_x8(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert!(src.len() == 8 * nb * Q4_K_BYTES && dst.len() == nb * Q4_K_X8_BYTES);
    let rb = nb * Q4_K_BYTES;
    for (b, out) in dst.chunks_exact_mut(Q4_K_X8_BYTES).enumerate() {
        for k in 0..8 {
            let blk = &src[k * rb + b * Q4_K_BYTES..][..Q4_K_BYTES];
            out[2 * k..2 * k + 2].copy_from_slice(&blk[0..2]);
            out[16 + 2 * k..16 + 2 * k + 2].copy_from_slice(&blk[2..4]);
            for j in 0..8 {
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                out[32 + 8 * j + k] = sc;
                out[96 + 16 * (j / 2) + 2 * k + j % 2] = m;
            }
            for c in 0..4 {
                for g in 0..8 {
                    let at = 160 + 256 * c + 32 * g + 4 * k;
                    out[at..at + 4].copy_from_slice(&blk[16 + 32 * c + 4 * g..][..4]);
                }
            }
        }
    }
}

/// Row `k` (0..8) of super-block `b` of a group of 8 repacked Q4_K rows, as the Q4_K block it was.
pub(super) fn unpack_q4_k_x8(group: &[u8], b: usize, k: usize) -> [u8; Q4_K_BYTES] {
    let p = &group[b * Q4_K_X8_BYTES..][..Q4_K_X8_BYTES];
    let mut blk = [0u8; Q4_K_BYTES];
    blk[0..2].copy_from_slice(&p[2 * k..2 * k + 2]);
    blk[2..4].copy_from_slice(&p[16 + 2 * k..16 + 2 * k + 2]);
    // ggml's 6-bit packing (`quantize_row_q4_K_ref`), which `scale_min_k4` reads.
    let q = &mut blk[4..16];
    for j in 0..8 {
        let (sc, m) = (p[32 + 8 * j + k], p[96 + 16 * (j / 2) + 2 * k + j % 2]);
        if j < 4 {
            q[j] |= sc;
            q[j + 4] |= m;
        } else {
            q[j + 4] = (sc & 0xF) | ((m & 0xF) << 4);
            q[j - 4] |= (sc >> 4) << 6;
            q[j] |= (m >> 4) << 6;
        }
    }
    for c in 0..4 {
        for g in 0..8 {
            let at = 160 + 256 * c + 32 * g + 4 * k;
            blk[16 + 32 * c + 4 * g..][..4].copy_from_slice(&p[at..at + 4]);
        }
    }
    blk
}

/// Where byte `at` of a Q6_K block (row `k` of 8) lies in its repacked super-block ([`Q6_K_X8_BYTES`]).
fn q6_k_x8_at(at: usize, k: usize) -> usize {
    match at {
        0..128 => 144 + 256 * (at / 32) + 32 * (at % 32 / 4) + 4 * k + at % 4,
        128..192 => 1168 + 256 * ((at - 128) / 32) + 32 * ((at - 128) % 32 / 4) + 4 * k + at % 4,
        192..208 => 16 + 8 * (at - 192) + k,
        _ => 2 * k + (at - 208),
    }
}

/// Repacks 8 Q6_K rows of `nb` super-blocks each (`src`, the rows one after another) into `dst`
/// ([`Q6_K_X8_BYTES`] per super-block, see there). Lossless: [`unpack_q6_k_x8`] gives the blocks back.
pub(super) fn repack_q6_k_x8(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert!(src.len() == 8 * nb * Q6_K_BYTES && dst.len() == nb * Q6_K_X8_BYTES);
    let rb = nb * Q6_K_BYTES;
    for (b, out) in dst.chunks_exact_mut(Q6_K_X8_BYTES).enumerate() {
        for k in 0..8 {
            let blk = &src[k * rb + b * Q6_K_BYTES..][..Q6_K_BYTES];
            // The nibbles and high bits 4 bytes at a time (they move together), then the rest.
            for at in (0..192).step_by(4) {
                let to = q6_k_x8_at(at, k);
                out[to..to + 4].copy_from_slice(&blk[at..at + 4]);
            }
            for (at, &v) in blk.iter().enumerate().skip(192) {
                out[q6_k_x8_at(at, k)] = v;
            }
        }
    }
}

/// Row `k` (0..8) of super-block `b` of a group of 8 repacked Q6_K rows, as the Q6_K block it was.
pub(super) fn unpack_q6_k_x8(group: &[u8], b: usize, k: usize) -> [u8; Q6_K_BYTES] {
    let p = &group[b * Q6_K_X8_BYTES..][..Q6_K_X8_BYTES];
    std::array::from_fn(|at| p[q6_k_x8_at(at, k)])
}

/// Where byte `at` of a Q5_0 block (row `k` of 8) lies in its repacked block ([`Q5_0_X8_BYTES`]), for the
/// scale and the nibbles (the fifth bits are spread bit by bit: [`repack_q5_0_x8`]).
fn q5_0_x8_at(at: usize, k: usize) -> usize {
    match at {
        0..2 => 2 * k + at,
        _ => 16 + 32 * ((at - 6) / 4) + 4 * k + (at - 6) % 4,
    }
}

/// For each byte v of a Q5_0 block's fifth bits (values 8n..8n + 8 for byte n), the two bits it gives
/// each of the 4 repacked bytes ([`Q5_0_X8_BYTES`]): byte t of the entry holds bit t of v at bit 0 and bit
/// 4 + t at bit 1, the bits of runs 2n and 2n + 1 (values 8n + t and 8n + 4 + t).
const Q5_0_X8_BITS: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut v = 0;
    while v < 256 {
        let mut t = 0;
        while t < 4 {
            table[v] |= ((((v >> t) & 1) | (((v >> (4 + t)) & 1) << 1)) as u32) << (8 * t);
            t += 1;
        }
        v += 1;
    }
    table
};

/// Repacks 8 Q5_0 rows of `nb` blocks each (`src`, the rows one after another) into `dst`
/// ([`Q5_0_X8_BYTES`] per block, see there). Lossless: [`unpack_q5_0_x8`] gives the blocks back.
pub(super) fn repack_q5_0_x8(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert!(src.len() == 8 * nb * Q5_0_BYTES && dst.len() == nb * Q5_0_X8_BYTES);
    let rb = nb * Q5_0_BYTES;
    for (b, out) in dst.chunks_exact_mut(Q5_0_X8_BYTES).enumerate() {
        for k in 0..8 {
            let blk = &src[k * rb + b * Q5_0_BYTES..][..Q5_0_BYTES];
            out[2 * k..2 * k + 2].copy_from_slice(&blk[0..2]);
            for m in 0..4 {
                let at = 16 + 32 * m + 4 * k;
                out[at..at + 4].copy_from_slice(&blk[6 + 4 * m..][..4]);
            }
            // Byte t: bit g the fifth bit of value 4g + t.
            let bits = (0..4).fold(0u32, |acc, n| {
                acc | Q5_0_X8_BITS[blk[2 + n] as usize] << (2 * n)
            });
            out[144 + 4 * k..144 + 4 * k + 4].copy_from_slice(&bits.to_le_bytes());
        }
    }
}

/// Row `k` (0..8) of block `b` of a group of 8 repacked Q5_0 rows, as the Q5_0 block it was.
pub(super) fn unpack_q5_0_x8(group: &[u8], b: usize, k: usize) -> [u8; Q5_0_BYTES] {
    let p = &group[b * Q5_0_X8_BYTES..][..Q5_0_X8_BYTES];
    let mut blk = [0u8; Q5_0_BYTES];
    for at in (0..2).chain(6..Q5_0_BYTES) {
        blk[at] = p[q5_0_x8_at(at, k)];
    }
    let qh = (0..QK).fold(0u32, |qh, j| {
        qh | (((p[144 + 4 * k + j % 4] >> (j / 4)) & 1) as u32) << j
    });
    blk[2..6].copy_from_slice(&qh.to_le_bytes());
    blk
}

/// Where byte `at` of a Q4_1 block (row `k` of 8) lies in its repacked block ([`Q4_1_X8_BYTES`]).
fn q4_1_x8_at(at: usize, k: usize) -> usize {
    match at {
        0..4 => 16 * (at / 2) + 2 * k + at % 2,
        _ => 32 + 32 * ((at - 4) / 4) + 4 * k + (at - 4) % 4,
    }
}

/// Repacks 8 Q4_1 rows of `nb` blocks each (`src`, the rows one after another) into `dst`
/// ([`Q4_1_X8_BYTES`] per block, see there). Lossless: [`unpack_q4_1_x8`] gives the blocks back.
pub(super) fn repack_q4_1_x8(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert!(src.len() == 8 * nb * Q4_1_BYTES && dst.len() == nb * Q4_1_X8_BYTES);
    let rb = nb * Q4_1_BYTES;
    for (b, out) in dst.chunks_exact_mut(Q4_1_X8_BYTES).enumerate() {
        for k in 0..8 {
            let blk = &src[k * rb + b * Q4_1_BYTES..][..Q4_1_BYTES];
            // The f16 d and m, then the nibbles 4 bytes at a time.
            for at in (0..Q4_1_BYTES).step_by(2) {
                let to = q4_1_x8_at(at, k);
                out[to..to + 2].copy_from_slice(&blk[at..at + 2]);
            }
        }
    }
}

/// Row `k` (0..8) of block `b` of a group of 8 repacked Q4_1 rows, as the Q4_1 block it was.
pub(super) fn unpack_q4_1_x8(group: &[u8], b: usize, k: usize) -> [u8; Q4_1_BYTES] {
    let p = &group[b * Q4_1_X8_BYTES..][..Q4_1_X8_BYTES];
    std::array::from_fn(|at| p[q4_1_x8_at(at, k)])
}

/// Repacks 8 Q8_0 rows of `nb` blocks each (`src`, the rows one after another) into `dst`
/// ([`Q8_0_X8_BYTES`] per block, see there). Lossless: [`unpack_q8_0_x8`] gives the blocks back.
pub(super) fn repack_q8_0_x8(src: &[u8], nb: usize, dst: &mut [u8]) {
    assert!(src.len() == 8 * nb * Q8_0_BYTES && dst.len() == nb * Q8_0_X8_BYTES);
    let rb = nb * Q8_0_BYTES;
    for (b, out) in dst.chunks_exact_mut(Q8_0_X8_BYTES).enumerate() {
        for k in 0..8 {
            let blk = &src[k * rb + b * Q8_0_BYTES..][..Q8_0_BYTES];
            out[2 * k..2 * k + 2].copy_from_slice(&blk[0..2]);
            for g in 0..8 {
                let at = 16 + 32 * g + 4 * k;
                out[at..at + 4].copy_from_slice(&blk[2 + 4 * g..][..4]);
            }
        }
    }
}

/// Row `k` (0..8) of block `b` of a group of 8 repacked Q8_0 rows, as the Q8_0 block it was.
pub(super) fn unpack_q8_0_x8(group: &[u8], b: usize, k: usize) -> [u8; Q8_0_BYTES] {
    let p = &group[b * Q8_0_X8_BYTES..][..Q8_0_X8_BYTES];
    std::array::from_fn(|at| match at {
        0..2 => p[2 * k + at],
        _ => p[16 + 32 * ((at - 2) / 4) + 4 * k + (at - 2) % 4],
    })
}

/// One Q4_K row to f32, as ggml's `dequantize_row_q4_K` written in C: `d1 × q - m1`, the product and the
/// difference rounded apart (a compiler allowed to contract it into a fused multiply-add would differ in
/// the last bit; neither model file here has a Q4_K embedding, so only the tests reach this).
#[inline(always)]
pub(super) fn dequant_q4_k(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q4_K_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
        let scales = &blk[4..16];
        for (c, (q, o)) in blk[16..]
            .chunks_exact(32)
            .zip(o.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc, m) = scale_min_k4(2 * c, scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let (sc, m) = scale_min_k4(2 * c + 1, scales);
            let (d2, m2) = (d * sc as f32, dmin * m as f32);
            let (lo, hi) = o.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0x0F) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

/// Value `e` (0..256) of a Q6_K super-block, unsigned (0..64; the value is this - 32).
#[inline(always)]
pub(super) fn q6_k_value(blk: &[u8], e: usize) -> u8 {
    let (j, r) = (e / 128, e % 128);
    let (k, p) = (r / 32, r % 32);
    let ql = blk[64 * j + 32 * (k & 1) + p];
    let lo = if k < 2 { ql & 0x0F } else { ql >> 4 };
    let hi = (blk[128 + 32 * j + p] >> (2 * k)) & 3;
    lo | hi << 4
}

/// One Q6_K row to f32, as ggml's `dequantize_row_q6_K`: `d × scale × (q - 32)`, rounded left to right.
#[inline(always)]
pub(super) fn dequant_q6_k(row: &[u8], out: &mut [f32]) {
    for (blk, o) in row.chunks_exact(Q6_K_BYTES).zip(out.chunks_exact_mut(QK_K)) {
        let d = f16_at(blk, 208);
        for (e, o) in o.iter_mut().enumerate() {
            let sc = blk[192 + e / 16] as i8;
            *o = d * sc as f32 * (q6_k_value(blk, e) as i32 - 32) as f32;
        }
    }
}

/// One row of `t` (an embedding lookup) to f32, as ggml dequantizes it; `out` holds the row's values.
#[inline(always)]
pub(super) fn dequant_row(t: WType, row: &[u8], out: &mut [f32]) {
    match t {
        WType::Q4_1 => dequant_q4_1(row, out),
        WType::Q5_0 => dequant_q5_0(row, out),
        WType::Q8_0 => dequant_q8_0(row, out),
        WType::Q4_K => dequant_q4_k(row, out),
        WType::Q6_K => dequant_q6_k(row, out),
        // A repacked matrix is only multiplied: the embedding rows stay in the file's layout.
        _ => unreachable!("a repacked matrix is never read by row"),
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
