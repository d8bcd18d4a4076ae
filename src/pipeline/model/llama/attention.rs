//! Causal attention over the f16 KV cache, in two schedules that give the same numbers: by (row, group of
//! query heads) for prefill and one thread, and by phase for a decode row on several threads.
//!
//! The query heads that share a KV head are taken G at a time, so each cached row is read and widened from
//! f16 once for all of them; rows are asked for 64 positions ahead (at 1,024 positions the cache is 24 MB
//! per token, read from memory as the weights are).

use super::Config;
use super::kernels::Kernels;
use super::parallel::{Blocks, for_each_block, threads};

/// Causal attention of the `q` rows (positions `pos..`) over the cache rows `..pos + rows` (`kc`, `vc`:
/// `[position][kv_head * head_dim]`), written to `out` (the rows of `q`'s shape). With a `window`, the
/// row at position p sees only the positions p0 with `p - p0 < window` (llama.cpp masks `p - p0 >=
/// window`): the cache is read from there, as if those were all the positions.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention(
    kernels: Kernels,
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    window: Option<usize>,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let group = cfg.n_head / cfg.n_kv_head;
    let window = window.unwrap_or(usize::MAX);
    // One decode row on several threads: the KV heads alone (3 for the default model) would not share out
    // evenly, so split the work by phase instead (same numbers).
    let split = q.len() == cfg.q_dim() && threads() > 1;
    macro_rules! run {
        ($g:literal) => {
            if split {
                // The one row's first visible position, and the cache from there.
                let start = (pos + 1).saturating_sub(window);
                let kv = cfg.n_kv_head * cfg.head_dim;
                decode_split::<$g>(
                    kernels,
                    cfg,
                    q,
                    &kc[start * kv..],
                    &vc[start * kv..],
                    pos - start,
                    out,
                    scores,
                )
            } else {
                by_groups::<$g>(kernels, cfg, q, kc, vc, pos, window, out)
            }
        };
    }
    match group {
        1 => run!(1),
        2 => run!(2),
        3 => run!(3),
        4 => run!(4),
        5 => run!(5),
        6 => run!(6),
        7 => run!(7),
        8 => run!(8),
        // Larger groups: heads handled G = 1 at a time (the same numbers, more reads of the cache).
        _ => run!(1),
    }
}

/// Attention of several sequences of one row each (a batched decode step), each against its own cache, in
/// one parallel section: row i of `q` is at position `caches[i].2` over the cache rows `caches[i].0` (K)
/// and `.1` (V) of positions `..=caches[i].2`. Work items are (row, group of heads) as in `by_groups`, so
/// each row's numbers are those `attention` gives it alone (the split schedule is bit-identical too).
pub(super) fn attention_each(
    kernels: Kernels,
    cfg: &Config,
    q: &[f32],
    caches: &[(&[u16], &[u16], usize)],
    window: Option<usize>,
    out: &mut [f32],
) {
    let group = cfg.n_head / cfg.n_kv_head;
    let window = window.unwrap_or(usize::MAX);
    match group {
        1 => each_by_groups::<1>(kernels, cfg, q, caches, window, out),
        2 => each_by_groups::<2>(kernels, cfg, q, caches, window, out),
        3 => each_by_groups::<3>(kernels, cfg, q, caches, window, out),
        4 => each_by_groups::<4>(kernels, cfg, q, caches, window, out),
        5 => each_by_groups::<5>(kernels, cfg, q, caches, window, out),
        6 => each_by_groups::<6>(kernels, cfg, q, caches, window, out),
        7 => each_by_groups::<7>(kernels, cfg, q, caches, window, out),
        8 => each_by_groups::<8>(kernels, cfg, q, caches, window, out),
        _ => each_by_groups::<1>(kernels, cfg, q, caches, window, out),
    }
}

/// `attention_each` with the query heads taken G at a time: `by_groups` with a cache per row.
fn each_by_groups<const G: usize>(
    kernels: Kernels,
    cfg: &Config,
    q: &[f32],
    caches: &[(&[u16], &[u16], usize)],
    window: usize,
    out: &mut [f32],
) {
    let (dim, hd) = (cfg.q_dim(), cfg.head_dim);
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    for_each_block(&mut [Blocks::new(out, dim, 1, G * hd)], |_, mut b| {
        let (i, h0) = (b.rows().start, b.cols().start / hd);
        let (kc, vc, pos) = caches[i];
        let start = (pos + 1).saturating_sub(window);
        let n = pos + 1 - start;
        let (kc, vc) = (&kc[start * kv..], &vc[start * kv..]);
        let qh = &q[i * dim + h0 * hd..][..G * hd];
        let koff = (h0 / group) * hd;
        let o = b.row(0);
        with_scores(G * n, |sc| {
            kernels.score_rows::<G>(qh, kc, kv, koff, 0..n, |t, d| {
                for (j, &v) in d.iter().enumerate() {
                    sc[j * n + t] = v * scale;
                }
            });
            let mut inv = [0f32; G];
            for (j, sc) in sc.chunks_exact_mut(n).enumerate() {
                inv[j] = kernels.softmax(sc);
            }
            o.fill(0.0);
            let weight = |t: usize| -> [f32; G] { std::array::from_fn(|j| sc[j * n + t] * inv[j]) };
            kernels.weigh_rows::<G>(vc, kv, koff, n, weight, o);
        });
    });
}

/// A per-thread buffer of attention scores.
fn with_scores<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCORES.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < n {
            s.resize(n, 0.0);
        }
        f(&mut s[..n])
    })
}

/// Decode attention in three parallel phases, each one split evenly whatever the number of KV heads:
/// scores by (KV head, run of positions); softmax by query head; the weighted sum of V by (KV head, half of
/// the head's dimensions). Every value is computed with the same operations in the same order as in
/// `by_groups`, so the results are identical.
#[allow(clippy::too_many_arguments)]
fn decode_split<const G: usize>(
    kernels: Kernels,
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    const RUN: usize = 128;
    let hd = cfg.head_dim;
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    let n = pos + 1;
    let per_kv = group / G;
    // Per head, the n scores and then the inverse of their sum.
    let w = n + 1;
    scores.resize(cfg.n_head * w, 0.0);
    let scores = &mut scores[..cfg.n_head * w];
    for_each_block(&mut [Blocks::new(scores, w, G, RUN)], |_, mut b| {
        let h0 = b.rows().start;
        let koff = (h0 / G / per_kv) * hd;
        let (t0, t1) = (b.cols().start, b.cols().end.min(n));
        kernels.score_rows::<G>(&q[h0 * hd..][..G * hd], kc, kv, koff, t0..t1, |t, d| {
            for (j, &v) in d.iter().enumerate() {
                b.row(j)[t - t0] = v * scale;
            }
        });
    });
    for_each_block(&mut [Blocks::new(scores, w, 1, w)], |_, mut b| {
        let (sc, inv) = b.row(0).split_at_mut(n);
        inv[0] = kernels.softmax(sc);
    });
    let scores: &[f32] = scores;
    let half = hd / 2;
    let halves = if half.is_multiple_of(8) { 2 } else { 1 };
    let width = hd / halves;
    for_each_block(&mut [Blocks::new(out, hd, G, width)], |_, mut b| {
        let h0 = b.rows().start;
        let c0 = b.cols().start;
        let koff = (h0 / G / per_kv) * hd + c0;
        with_scores(G * width, |o| {
            o.fill(0.0);
            let weight = |t: usize| -> [f32; G] {
                std::array::from_fn(|j| scores[(h0 + j) * w + t] * scores[(h0 + j) * w + n])
            };
            kernels.weigh_rows::<G>(vc, kv, koff, n, weight, o);
            for j in 0..G {
                b.row(j).copy_from_slice(&o[j * width..(j + 1) * width]);
            }
        });
    });
}

/// `attention` with the query heads taken G at a time (G divides the group of heads per KV head), one
/// work item per (row, G heads).
#[allow(clippy::too_many_arguments)]
fn by_groups<const G: usize>(
    kernels: Kernels,
    cfg: &Config,
    q: &[f32],
    kc: &[u16],
    vc: &[u16],
    pos: usize,
    window: usize,
    out: &mut [f32],
) {
    let (dim, hd) = (cfg.q_dim(), cfg.head_dim);
    let kv = cfg.n_kv_head * hd;
    let group = cfg.n_head / cfg.n_kv_head;
    let scale = 1.0 / (hd as f32).sqrt();
    for_each_block(&mut [Blocks::new(out, dim, 1, G * hd)], |_, mut b| {
        // Heads h0..h0 + G, consecutive in q and out, all reading KV head h0 / group.
        let (i, h0) = (b.rows().start, b.cols().start / hd);
        // The positions this row sees: start..pos + i + 1, renumbered from 0.
        let start = (pos + i + 1).saturating_sub(window);
        let n = pos + i + 1 - start;
        let (kc, vc) = (&kc[start * kv..], &vc[start * kv..]);
        let qh = &q[i * dim + h0 * hd..][..G * hd];
        let koff = (h0 / group) * hd;
        let o = b.row(0);
        with_scores(G * n, |sc| {
            // sc[j * n + t]: head h0 + j, position t.
            kernels.score_rows::<G>(qh, kc, kv, koff, 0..n, |t, d| {
                for (j, &v) in d.iter().enumerate() {
                    sc[j * n + t] = v * scale;
                }
            });
            let mut inv = [0f32; G];
            for (j, sc) in sc.chunks_exact_mut(n).enumerate() {
                inv[j] = kernels.softmax(sc);
            }
            o.fill(0.0);
            let weight = |t: usize| -> [f32; G] { std::array::from_fn(|j| sc[j * n + t] * inv[j]) };
            kernels.weigh_rows::<G>(vc, kv, koff, n, weight, o);
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::Arch;
    use super::*;
    use half::f16;

    fn config(n_head: usize, n_kv_head: usize, head_dim: usize) -> Config {
        Config {
            arch: Arch::Llama,
            n_layer: 1,
            dim: n_head * head_dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn: 0,
            vocab: 0,
            context: 512,
            eps: 1e-5,
            rope_base: 10_000.0,
            swa: None,
        }
    }

    fn random_cache(rnd: &mut dyn FnMut() -> f32, n: usize) -> Vec<u16> {
        (0..n)
            .map(|_| f16::from_f32(rnd() * 2.0).to_bits())
            .collect()
    }

    /// Decode attention split by phase (used with several threads) gives bit for bit what the one-pass
    /// version gives, for every head grouping (Gemma 3's 4 heads of 256 on one KV head, Qwen2's 7 per KV
    /// head among them) and every kernel set, with and without a sliding window.
    #[test]
    fn split_decode_attention_is_bit_identical() {
        let mut g = crate::rng::SplitMix::new(99);
        let mut rnd = || g.uniform() as f32;
        for kernels in Kernels::available() {
            for (n_head, n_kv_head, hd) in [
                (9, 3, 64),
                (8, 8, 64),
                (8, 4, 64),
                (8, 2, 64),
                (16, 2, 64),
                (14, 2, 64),
                (4, 1, 256),
            ] {
                for window in [usize::MAX, 100] {
                    let cfg = config(n_head, n_kv_head, hd);
                    let pos = 300;
                    let kv = n_kv_head * hd;
                    let q: Vec<f32> = (0..cfg.q_dim()).map(|_| rnd()).collect();
                    let kc = random_cache(&mut rnd, (pos + 1) * kv);
                    let vc = random_cache(&mut rnd, (pos + 1) * kv);
                    let (mut a, mut b) = (vec![0f32; cfg.q_dim()], vec![0f32; cfg.q_dim()]);
                    let mut scores = Vec::new();
                    let start = (pos + 1).saturating_sub(window);
                    let (ks, vs) = (&kc[start * kv..], &vc[start * kv..]);
                    macro_rules! both {
                        ($g:literal) => {{
                            by_groups::<$g>(kernels, &cfg, &q, &kc, &vc, pos, window, &mut a);
                            decode_split::<$g>(
                                kernels,
                                &cfg,
                                &q,
                                ks,
                                vs,
                                pos - start,
                                &mut b,
                                &mut scores,
                            );
                        }};
                    }
                    match n_head / n_kv_head {
                        1 => both!(1),
                        2 => both!(2),
                        3 => both!(3),
                        4 => both!(4),
                        7 => both!(7),
                        8 => both!(8),
                        _ => both!(1),
                    }
                    assert!(a.iter().any(|&v| v != 0.0));
                    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                        assert_eq!(
                            x.to_bits(),
                            y.to_bits(),
                            "{:?} {n_head}/{n_kv_head} heads of {hd}, window {window}, element {i}",
                            kernels.isa()
                        );
                    }
                }
            }
        }
    }

    /// Prefill attention with a sliding window against a plain f64 computation: row p sees exactly the
    /// positions p0 with p - p0 < window (llama.cpp masks p - p0 >= window).
    #[test]
    fn sliding_window_attention_matches_a_naive_reference() {
        let mut g = crate::rng::SplitMix::new(7);
        let mut rnd = || g.uniform() as f32 - 0.5;
        let (n_head, n_kv_head, hd) = (4, 1, 256);
        let cfg = config(n_head, n_kv_head, hd);
        let (pos, rows, window) = (10, 6, 5);
        let kv = n_kv_head * hd;
        let n = pos + rows;
        let kc = random_cache(&mut rnd, n * kv);
        let vc = random_cache(&mut rnd, n * kv);
        let q: Vec<f32> = (0..rows * cfg.q_dim()).map(|_| rnd()).collect();
        for kernels in Kernels::available() {
            let mut out = vec![0f32; rows * cfg.q_dim()];
            let mut scores = Vec::new();
            attention(
                kernels,
                &cfg,
                &q,
                &kc,
                &vc,
                pos,
                Some(window),
                &mut out,
                &mut scores,
            );
            let at = |c: &[u16], t: usize, d: usize| f16::from_bits(c[t * kv + d]).to_f32() as f64;
            for i in 0..rows {
                let p = pos + i;
                for h in 0..n_head {
                    let qh = &q[i * cfg.q_dim() + h * hd..][..hd];
                    let seen: Vec<usize> = (0..=p).filter(|&t| p - t < window).collect();
                    assert_eq!(seen.len(), window);
                    let sc: Vec<f64> = seen
                        .iter()
                        .map(|&t| {
                            (0..hd).map(|d| qh[d] as f64 * at(&kc, t, d)).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let max = sc.iter().copied().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for d in 0..hd {
                        let want: f64 = seen
                            .iter()
                            .zip(&e)
                            .map(|(&t, w)| w / sum * at(&vc, t, d))
                            .sum();
                        let got = out[i * cfg.q_dim() + h * hd + d] as f64;
                        assert!(
                            (got - want).abs() < 1e-4,
                            "{:?} row {i} head {h} dim {d}: {got} vs {want}",
                            kernels.isa()
                        );
                    }
                }
            }
        }
    }
}
