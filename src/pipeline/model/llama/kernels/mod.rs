//! The SIMD kernels of the forward pass, chosen at run time.
//!
//! Three sets compute the same sums: [`Isa::Scalar`] (portable, the SIMD arithmetic written lane by lane),
//! [`Isa::Avx2`] (AVX2, FMA, F16C) and [`Isa::Avx512`] (adds AVX-512 F/BW/VL/DQ/VBMI/VNNI). The model picks
//! the best set the CPU has once, at load ([`Kernels::detect`], with `is_x86_feature_detected!`), and
//! keeps it; each call then branches on that stored choice into a `#[target_feature]` function, so one
//! binary runs AVX-512 where the CPU has it and never executes an instruction the CPU lacks, whatever
//! `-C target-cpu` it was built with (the idea of memchr's run-time dispatch). The choice costs one
//! predictable branch per tile of weight rows or per attention head, not per element.
//!
//! Every set gives bit-identical results (the same products, added in the same order; `tests` below holds
//! them to it): greedy outputs, and so the agreement with llama.cpp's ids, must not depend on the CPU.
//!
//! `unsafe` here: the kernels read through raw pointers within bounds that the safe wrappers on
//! [`Kernels`] assert, and a `#[target_feature]` function may only run on a CPU with those features, which
//! a [`Kernels`] value proves: it is built only for a set the CPU supports.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod scalar;

use std::ops::Range;

use super::quant::{self, Act, ActType, WType};

/// From this many activation rows on, llama.cpp multiplies Q6_K (not repacked on x86) with its tiled
/// K-quant matmul, which rounds differently from the vec_dot it uses below (`ggml_tiled_min_batch`);
/// the kernels follow it by the rows of the activations they are given (`scalar::q6_k_batched`).
pub(super) const BATCHED_ROWS: usize = 8;

/// The most activation rows per kernel call: in prefill and batched decode, one unpacked block of a
/// 32-value format (Q4_1, Q5_0, Q8_0) in the file's layout serves 8 activation rows; the K formats (Q4_K,
/// Q6_K) and the repacked ones take 4 activation rows (the repacked ones 8 in the AVX-512 set; see
/// [`shape`]).
pub(super) const TILE: usize = 8;
/// Activation rows per kernel call for the K formats.
const TILE_K: usize = 4;
/// Weight rows per kernel call in decode: 4 rows keep more loads in flight.
const DECODE_WTILE: usize = 4;
/// The most weight rows per kernel call: a group of 8 repacked rows ([`WType::repacked`]).
pub(super) const WTILE_MAX: usize = 8;
/// A kernel call's results: `out[i][k] = w[k] · act[r + i]`, each activation row's products contiguous, as
/// in the output matrix (a repacked kernel's 8 lanes are one row of it).
pub(super) type Tile = [[f32; WTILE_MAX]; TILE];
/// How many cached positions ahead attention asks for K and V rows (measured best of 8, 16, 32, 64 and 128
/// at 1,024 positions: 64).
pub(super) const KV_AHEAD: usize = 64;

/// An instruction set the kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// Every set, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// Whether this CPU runs the set.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.supported()
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512vbmi")
                    && is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel set this CPU supports: the only way to reach the `#[target_feature]` kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels(Isa);

impl Kernels {
    /// The fastest set this CPU supports.
    pub fn detect() -> Self {
        let best = Isa::ALL.into_iter().rev().find(|i| i.supported());
        Self(best.unwrap_or(Isa::Scalar))
    }

    /// `isa`, if this CPU supports it.
    pub fn new(isa: Isa) -> Option<Self> {
        isa.supported().then_some(Self(isa))
    }

    /// Every set this CPU supports.
    #[cfg(test)]
    pub fn available() -> impl Iterator<Item = Kernels> {
        Isa::ALL.into_iter().filter_map(Self::new)
    }

    pub fn isa(self) -> Isa {
        self.0
    }

    /// Dot products of `cn` weight rows (`rb` bytes each, consecutive in `w`) with the `t` activation rows
    /// `r..r + t`: `out[i][k] = w[k] · act[r + i]` (one tile of [`Kernels::dot_rows`], for the tests).
    #[cfg(test)]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dot_tile(
        self,
        wt: WType,
        w: &[u8],
        rb: usize,
        act: &Act,
        r: usize,
        t: usize,
        cn: usize,
        out: &mut Tile,
    ) {
        assert!(
            (1..=TILE).contains(&t)
                && (1..=WTILE_MAX).contains(&cn)
                && (!wt.repacked() || cn == 8)
                && w.len() >= cn * rb
                && rb == act.nb * wt.block_bytes()
                && act.qk == wt.block_len()
                && r + t <= act.rows()
                && act.consistent(),
            "dot_tile: a tile outside its weights or activations"
        );
        match self.0 {
            Isa::Scalar => scalar::dot_tile(wt, w, rb, act, r, t, cn, out),
            // SAFETY: `self` proves the CPU supports the set; the bounds are asserted above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { avx2::dot_tile(wt, w, rb, act, r, t, cn, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::dot_tile(wt, w, rb, act, r, t, cn, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// Runs `f` inside a function compiled for this set's features (AVX2, FMA and F16C for both SIMD sets),
    /// so that the code `f` inlines (the pass's norms, activation quantization, rope, residual sums) is
    /// compiled as under `-C target-cpu=native`, whatever the build's target. The results do not change:
    /// Rust neither fuses nor reorders float operations, whatever instructions are available.
    #[inline(always)]
    pub(super) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        match self.0 {
            // SAFETY: `self` proves the CPU supports AVX2, FMA and F16C (both SIMD sets include them).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::run(f) },
            _ => f(),
        }
    }

    /// The products of a run of weight rows (`w`, `rb` bytes each) with every activation row of `act`, a
    /// tile ([`shape`]: activation rows × weight rows) at a time: `emit(r, c, t, cn, tile)` gets
    /// `tile[i][k] = w[c + k] · act[r + i]`. With `prefetch`, each tile first asks for the weights
    /// [`PREFETCH`] bytes ahead (decode streams every weight once; the hardware prefetcher stops at each
    /// page). One dispatch per run, so the tiles run inside the set's `#[target_feature]` code.
    pub(super) fn dot_rows(
        self,
        wt: WType,
        w: &[u8],
        rb: usize,
        act: &Act,
        prefetch: bool,
        emit: impl FnMut(usize, usize, usize, usize, &Tile),
    ) {
        assert!(
            rb > 0
                && rb == act.nb * wt.block_bytes()
                && act.qk == wt.block_len()
                && w.len().is_multiple_of(rb)
                && (!wt.repacked() || w.len().is_multiple_of(8 * rb))
                && act.consistent()
                && (!matches!(wt, WType::Q5_0 | WType::Q5_0_X8) || act.x16.len() == act.d.len()),
            "dot_rows: weights of {} bytes in rows of {rb}, activations of {} blocks",
            w.len(),
            act.nb
        );
        match self.0 {
            Isa::Scalar => tiles(
                |w, r, t, cn, out| scalar::dot_tile(wt, w, rb, act, r, t, cn, out),
                shape(wt, act.rows()),
                w,
                rb,
                act.rows(),
                prefetch,
                emit,
            ),
            // SAFETY: `self` proves the CPU supports the set; the bounds are asserted above, and `tiles`
            // keeps every tile inside them.
            #[cfg(target_arch = "x86_64")]
            // The AVX2 kernels prefetch decode's weights themselves, beside their arithmetic.
            Isa::Avx2 => unsafe { avx2::dot_rows(wt, w, rb, act, emit) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { avx512::dot_rows(wt, w, rb, act, emit) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// Quantizes rows of `cols` values into `out` as [`quant::quantize`] does, bit for bit.
    pub(super) fn quantize(self, x: &[f32], cols: usize, t: ActType, out: &mut Act) {
        assert!(
            cols > 0 && cols.is_multiple_of(t.block_len()) && x.len().is_multiple_of(cols),
            "quantize: {} values in rows of {cols}",
            x.len()
        );
        match self.0 {
            Isa::Scalar => quant::quantize(x, cols, t, out),
            // SAFETY: `self` proves the CPU supports the set; the lengths are asserted above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::quantize(x, cols, t, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// `gate[i] = silu(gate[i]) × up[i]` for one row, as llama.cpp's CPU `swiglu` (`ggml_vec_swiglu_f32`
    /// on AVX2): ggml's polynomial e^x in groups of 8 values, libm's `expf` for the rest.
    pub(super) fn swiglu(self, gate: &mut [f32], up: &[f32]) {
        assert_eq!(
            gate.len(),
            up.len(),
            "swiglu: gate and up of different lengths"
        );
        match self.0 {
            Isa::Scalar => scalar::swiglu(gate, up),
            // SAFETY: `self` proves the CPU supports the set; the lengths are asserted above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::swiglu(gate, up) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// One head's attention weights before the division: `sc[t] = e^(sc[t] − max)` with glibc's `expf`
    /// (`scalar::expf`, the same in every set), and 1 / their sum, added in order in f32.
    pub(super) fn softmax(self, sc: &mut [f32]) -> f32 {
        match self.0 {
            Isa::Scalar => scalar::softmax(sc),
            // SAFETY: `self` proves the CPU supports the set.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::softmax(sc) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// `gate[i] = gelu(gate[i]) × up[i]` as ggml's CPU `geglu` (`ggml_vec_geglu_f32` with its f16 table):
    /// 0 at or below −10, `gate × up` at or above 10, otherwise `table[f16(gate)]` widened × up. `table`
    /// holds one value per f16 and one more.
    pub(super) fn geglu(self, gate: &mut [f32], up: &[f32], table: &[u16]) {
        assert!(
            gate.len() == up.len() && table.len() > u16::MAX as usize + 1,
            "geglu: gate of {}, up of {}, a table of {}",
            gate.len(),
            up.len(),
            table.len()
        );
        match self.0 {
            Isa::Scalar => scalar::geglu(gate, up, table),
            // SAFETY: `self` proves the CPU supports the set; the lengths are asserted above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe { avx2::geglu(gate, up, table) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// Attention scores of the G query heads in `q` (each `hd = q.len() / G` long, a multiple of 8)
    /// against the cached K rows of the positions `ts`: `emit(t, [q_j · K_t for each head j])`, where
    /// `K_t = kc[t * stride + koff..][..hd]`. Each dot product adds in the same order whatever G, so
    /// grouping heads changes no result.
    pub(super) fn score_rows<const G: usize>(
        self,
        q: &[f32],
        kc: &[u16],
        stride: usize,
        koff: usize,
        ts: Range<usize>,
        emit: impl FnMut(usize, &[f32; G]),
    ) {
        let hd = q.len() / G;
        assert!(
            G > 0 && q.len() == G * hd && hd.is_multiple_of(8),
            "score_rows: {G} heads in {} values",
            q.len()
        );
        match self.0 {
            Isa::Scalar => score_rows(scalar::dots_f16::<G>, q, kc, stride, koff, ts, emit),
            // SAFETY: `self` proves the CPU supports the set; the lengths are asserted above and every
            // cached row is sliced (bounds-checked) before a kernel reads it.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe {
                avx2::score_rows::<G>(q, kc, stride, koff, ts, emit)
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }

    /// The weighted sum of cached V rows for G heads: for t in 0..n in order, `o_j += weights(t)[j] × V_t`
    /// with `V_t = vc[t * stride + koff..][..width]` and `o` the G heads' outputs, `width` apart
    /// (`width` a multiple of 8).
    pub(super) fn weigh_rows<const G: usize>(
        self,
        vc: &[u16],
        stride: usize,
        koff: usize,
        n: usize,
        weights: impl FnMut(usize) -> [f32; G],
        o: &mut [f32],
    ) {
        let width = o.len() / G;
        assert!(
            G > 0 && o.len() == G * width && width.is_multiple_of(8),
            "weigh_rows: {G} heads in {} values",
            o.len()
        );
        match self.0 {
            Isa::Scalar => weigh_rows(scalar::axpys_f16::<G>, vc, stride, koff, n, weights, o),
            // SAFETY: as in score_rows.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 | Isa::Avx512 => unsafe {
                avx2::weigh_rows::<G>(vc, stride, koff, n, weights, o)
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("Kernels::new admits only supported sets"),
        }
    }
}

/// How far ahead of the weights being read decode asks for the next ones, in bytes (measured best of
/// 1, 2, 4, 8, 16 and 32 KiB on the default model: 8 and 16 KiB; on Qwen2.5, 4 to 16 KiB alike).
pub(super) const PREFETCH: usize = 8192;

/// A product's tile: (activation rows, weight rows) per kernel call. Decode (one activation row) reads
/// each weight once: 4 weight rows per call keep more loads in flight. With more activation rows, a
/// 32-value format's unpacked weight block serves 8 of them (measured against 4 × 2 on Qwen2.5's prefill:
/// the 4 × 2 tile kept 16 vectors live and spilled them); a K format's tile stays 4 × 2. A repacked
/// format goes by its groups of 8 rows, 4 activation rows at a time (8 in the AVX-512 set:
/// `avx512::shape`).
#[inline(always)]
pub(super) fn shape(wt: WType, rows: usize) -> (usize, usize) {
    match wt {
        _ if wt.repacked() && rows == 1 => (1, 8),
        _ if wt.repacked() => (TILE_K, 8),
        _ if rows == 1 => (1, DECODE_WTILE),
        WType::Q4_K | WType::Q6_K => (TILE_K, 2),
        _ => (TILE, 1),
    }
}

/// Instantiates a repacked format's kernel `$k::<R $extra>` for a tile of `t` (1 to 4) activation rows
/// and one group of 8 weight rows. Used inside the sets' `unsafe` entry points, whose contract it relies
/// on.
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_x8 {
    ($k:ident [$($extra:tt)*], $w:ident, $act:ident, $r:ident, $t:ident, $out:ident) => {
        match $t {
            1 => $k::<1 $($extra)*>($w, $act, $r, $out),
            2 => $k::<2 $($extra)*>($w, $act, $r, $out),
            3 => $k::<3 $($extra)*>($w, $act, $r, $out),
            _ => $k::<4 $($extra)*>($w, $act, $r, $out),
        }
    };
    (8, $k:ident [$($extra:tt)*], $w:ident, $act:ident, $r:ident, $t:ident, $out:ident) => {
        match $t {
            1 => $k::<1 $($extra)*>($w, $act, $r, $out),
            2 => $k::<2 $($extra)*>($w, $act, $r, $out),
            3 => $k::<3 $($extra)*>($w, $act, $r, $out),
            4 => $k::<4 $($extra)*>($w, $act, $r, $out),
            5 => $k::<5 $($extra)*>($w, $act, $r, $out),
            6 => $k::<6 $($extra)*>($w, $act, $r, $out),
            7 => $k::<7 $($extra)*>($w, $act, $r, $out),
            _ => $k::<8 $($extra)*>($w, $act, $r, $out),
        }
    };
}

/// The loop of [`Kernels::dot_rows`] around one set's tile kernel `tile(w, r, t, cn, out)`, inlined into
/// that set's entry point.
#[inline(always)]
fn tiles(
    mut tile: impl FnMut(&[u8], usize, usize, usize, &mut Tile),
    (tr, wtile): (usize, usize),
    w: &[u8],
    rb: usize,
    rows: usize,
    ahead: bool,
    mut emit: impl FnMut(usize, usize, usize, usize, &Tile),
) {
    let n = w.len() / rb;
    let mut r = 0;
    while r < rows {
        let t = tr.min(rows - r);
        let mut c = 0;
        while c < n {
            let cn = wtile.min(n - c);
            if ahead {
                prefetch_l2(w.as_ptr().wrapping_add(c * rb + PREFETCH), cn * rb);
            }
            let mut out = [[0f32; WTILE_MAX]; TILE];
            tile(&w[c * rb..][..cn * rb], r, t, cn, &mut out);
            emit(r, c, t, cn, &out);
            c += cn;
        }
        r += t;
    }
}

/// The loop of [`Kernels::score_rows`] around one set's dot product, inlined into that set's entry point.
#[inline(always)]
fn score_rows<const G: usize>(
    dot: impl Fn(&[f32], &[u16], &mut [f32; G]),
    q: &[f32],
    kc: &[u16],
    stride: usize,
    koff: usize,
    ts: Range<usize>,
    mut emit: impl FnMut(usize, &[f32; G]),
) {
    let hd = q.len() / G;
    let mut d = [0f32; G];
    for t in ts {
        // The rows of one KV head are `stride` values apart: ask for them a few ahead, since the
        // hardware prefetcher stops at each page (see PREFETCH).
        prefetch(
            kc.as_ptr().wrapping_add((t + KV_AHEAD) * stride + koff) as *const u8,
            2 * hd,
        );
        dot(q, &kc[t * stride + koff..][..hd], &mut d);
        emit(t, &d);
    }
}

/// The loop of [`Kernels::weigh_rows`] around one set's multiply-add, inlined into that set's entry point.
#[inline(always)]
fn weigh_rows<const G: usize>(
    axpys: impl Fn(&[f32; G], &[u16], &mut [f32]),
    vc: &[u16],
    stride: usize,
    koff: usize,
    n: usize,
    mut weights: impl FnMut(usize) -> [f32; G],
    o: &mut [f32],
) {
    let width = o.len() / G;
    for t in 0..n {
        let a = weights(t);
        prefetch(
            vc.as_ptr().wrapping_add((t + KV_AHEAD) * stride + koff) as *const u8,
            2 * width,
        );
        axpys(&a, &vc[t * stride + koff..][..width], o);
    }
}

/// Hints the cache lines of `len` bytes at `p` into the L2 cache only (`prefetcht1`): decode's weights,
/// read once per token. Into L1 (`prefetcht0`) the hints competed with the kernels' own loads: on
/// Qwen2.5 at one thread, alternated in one run, 15.0 tok/s with T0 against 19.6 with T1 (SmolLM2: 75
/// against 82; see BENCHMARKS.md).
#[inline(always)]
pub(super) fn prefetch_l2(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: as in `prefetch`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                p.wrapping_add(off) as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Hints the cache lines of `len` bytes at `p` into the cache (a hint: never faults, any address).
#[inline(always)]
pub(super) fn prefetch(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(64) {
        // SAFETY: a prefetch of any address is allowed and has no architectural effect (SSE, part of
        // x86_64).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                p.wrapping_add(off) as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// Instantiates a K-format kernel `$k::<R, C $extra>` for a tile's shape (`t` activation rows, `cn`
/// weight rows): the shapes [`shape`] gives, and otherwise one weight row and up to 4 activation rows at a
/// time. Used inside the sets' `unsafe` entry points, whose contract it relies on.
macro_rules! dispatch_tile {
    ($k:ident [$($extra:tt)*], $w:ident, $rb:ident, $act:ident, $r:ident, $t:ident, $cn:ident, $out:ident) => {
        match ($t, $cn) {
            (4, 2) => $k::<4, 2 $($extra)*>($w, $rb, $act, $r, $out),
            (3, 2) => $k::<3, 2 $($extra)*>($w, $rb, $act, $r, $out),
            (2, 2) => $k::<2, 2 $($extra)*>($w, $rb, $act, $r, $out),
            (1, 4) => $k::<1, 4 $($extra)*>($w, $rb, $act, $r, $out),
            _ => {
                for k in 0..$cn {
                    let wk = &$w[k * $rb..(k + 1) * $rb];
                    let mut i0 = 0;
                    while i0 < $t {
                        let n = ($t - i0).min(4);
                        let mut o = [[0f32; WTILE_MAX]; TILE];
                        let r = $r + i0;
                        match n {
                            1 => $k::<1, 1 $($extra)*>(wk, $rb, $act, r, &mut o),
                            2 => $k::<2, 1 $($extra)*>(wk, $rb, $act, r, &mut o),
                            3 => $k::<3, 1 $($extra)*>(wk, $rb, $act, r, &mut o),
                            _ => $k::<4, 1 $($extra)*>(wk, $rb, $act, r, &mut o),
                        }
                        for i in 0..n {
                            $out[i0 + i][k] = o[i][0];
                        }
                        i0 += n;
                    }
                }
            }
        }
    };
}

/// As [`dispatch_tile`] for a 32-value format's kernel: one weight row × 1 to 8 activation rows, or 1 × 4.
macro_rules! dispatch_rows {
    ($k:ident [$($extra:tt)*], $w:ident, $rb:ident, $act:ident, $r:ident, $t:ident, $cn:ident, $out:ident) => {
        match ($t, $cn) {
            (1, 4) => $k::<1, 4 $($extra)*>($w, $rb, $act, $r, $out),
            _ => {
                for k in 0..$cn {
                    let wk = &$w[k * $rb..(k + 1) * $rb];
                    let mut o = [[0f32; WTILE_MAX]; TILE];
                    match $t {
                        1 => $k::<1, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        2 => $k::<2, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        3 => $k::<3, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        4 => $k::<4, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        5 => $k::<5, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        6 => $k::<6, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        7 => $k::<7, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                        _ => $k::<8, 1 $($extra)*>(wk, $rb, $act, $r, &mut o),
                    }
                    for i in 0..$t {
                        $out[i][k] = o[i][0];
                    }
                }
            }
        }
    };
}
#[cfg(target_arch = "x86_64")]
use {dispatch_rows, dispatch_tile, dispatch_x8};

/// Random weight rows of `cols` columns: random bytes (every byte value, so every nibble, fifth bit, scale
/// and 6-bit code occurs; -128 for Q8_0 and as a Q6_K scale), with the f16 scales (and Q4_1's min, Q4_K's
/// dmin) set to ordinary values. For a repacked format, its format's rows repacked.
pub(super) fn random_weights(
    wt: WType,
    rows: usize,
    cols: usize,
    g: &mut crate::rng::SplitMix,
) -> Vec<u8> {
    let from = wt.file_format();
    if let Some((_, repack)) = from.repacking().filter(|_| wt.repacked()) {
        let w = random_weights(from, rows, cols, g);
        let (rb, nb) = (from.row_bytes(cols), cols / wt.block_len());
        let mut out = vec![0u8; rows * wt.row_bytes(cols)];
        for (src, dst) in w
            .chunks_exact(8 * rb)
            .zip(out.chunks_exact_mut(8 * wt.row_bytes(cols)))
        {
            repack(src, nb, dst);
        }
        return out;
    }
    let f16s: &[usize] = match wt {
        WType::Q4_1 | WType::Q4_K => &[0, 2],
        WType::Q5_0 | WType::Q8_0 => &[0],
        WType::Q6_K => &[208],
        _ => unreachable!("repacked above"),
    };
    let mut w = Vec::new();
    for _ in 0..rows * cols / wt.block_len() {
        let start = w.len();
        w.extend((0..wt.block_bytes()).map(|_| g.next_u64() as u8));
        for (i, &at) in f16s.iter().enumerate() {
            let v = g.uniform() as f32 * if i == 0 { 0.1 } else { 0.01 };
            w[start + at..start + at + 2]
                .copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
        }
    }
    w
}

/// The weight formats `stoplab bench kernels` measures, by name: the file's layouts, and the repacked ones
/// the layers' matrices and the output matrix are multiplied in.
pub const KERNEL_FORMATS: [&str; 10] = [
    "q4_1", "q4_1_x8", "q5_0", "q5_0_x8", "q8_0", "q8_0_x8", "q4_k", "q4_k_x8", "q6_k", "q6_k_x8",
];

/// Multiply-adds per second (10^9) of one kernel set's products of `rows` activation rows with a random
/// matrix of `format` ([`KERNEL_FORMATS`]) of Qwen2.5's `ffn_down` shape (896 rows of 4,864), on the calling
/// thread: one figure per run, each timing enough products to take about 50 ms, after one unreported
/// product. Decode's prefetch is on for one row, as in the forward pass.
pub fn kernel_rate(isa: Isa, format: &str, rows: usize, runs: usize) -> Result<Vec<f64>, String> {
    let kernels =
        Kernels::new(isa).ok_or_else(|| format!("this CPU does not run the {isa} kernels"))?;
    let wt = match format {
        "q4_1" => WType::Q4_1,
        "q4_1_x8" => WType::Q4_1_X8,
        "q5_0" => WType::Q5_0,
        "q5_0_x8" => WType::Q5_0_X8,
        "q8_0" => WType::Q8_0,
        "q8_0_x8" => WType::Q8_0_X8,
        "q4_k" => WType::Q4_K,
        "q4_k_x8" => WType::Q4_K_X8,
        "q6_k" => WType::Q6_K,
        "q6_k_x8" => WType::Q6_K_X8,
        other => {
            return Err(format!(
                "no weight format {other:?} (one of {})",
                KERNEL_FORMATS.join(", ")
            ));
        }
    };
    if rows == 0 || rows > 4096 {
        return Err(format!("{rows} activation rows: 1 to 4096"));
    }
    let (n, cols) = (896, 4864);
    let mut g = crate::rng::SplitMix::new(1);
    let w = random_weights(wt, n, cols, &mut g);
    let x: Vec<f32> = (0..rows * cols).map(|_| g.uniform() as f32 - 0.5).collect();
    let mut act = super::quant::Act::default();
    super::quant::quantize(&x, cols, wt.act(), &mut act);
    let rb = wt.row_bytes(cols);
    let mut sink = 0f32;
    let mut product = || {
        kernels.dot_rows(wt, &w, rb, &act, rows == 1, |_, _, _, _, d| sink += d[0][0]);
    };
    let t0 = std::time::Instant::now();
    product();
    let reps = (0.05 / t0.elapsed().as_secs_f64().max(1e-6))
        .ceil()
        .clamp(1.0, 10_000.0) as usize;
    let macs = (n * cols * rows * reps) as f64;
    let rates = (0..runs)
        .map(|_| {
            let t0 = std::time::Instant::now();
            for _ in 0..reps {
                product();
            }
            macs / t0.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    std::hint::black_box(sink);
    Ok(rates)
}

#[cfg(test)]
mod tests;
