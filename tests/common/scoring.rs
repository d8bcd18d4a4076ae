//! A prompt's log probabilities computed the plain way, one token at a time through the decode path: what
//! the server's one-pass scoring and the clients that read it are held to.

use stoplab::pipeline::model::{GgufLlama, Model, Next};

/// The log-softmax of `logits` at `id`.
pub fn log_prob(logits: &[f32], id: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    f64::from(logits[id as usize] - max) - sum.ln()
}

/// Each token's log probability given the ones before it (the first has none), feeding one token at a
/// time from position 0 of slot 0.
pub fn one_at_a_time(model: &mut GgufLlama, ids: &[u32]) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, pair) in ids.windows(2).enumerate() {
        let Next::Logits(l) = model.forward(&pair[..1], i).unwrap() else {
            panic!("a real model gives logits")
        };
        out.push(log_prob(&l, pair[1]));
    }
    out
}

/// The largest difference between two equally long lists.
pub fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}
