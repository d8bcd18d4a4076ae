//! Stop matching per generated token: stoplab's matcher against the peers' strategies, on real token streams
//! (the default model's tokenizer), for 1 to 1024 stops and generations of 64 to 8192 tokens.
//!
//! `cargo bench --bench stops` (add a filter such as `-- no_match/1024` to run part of it). Throughput is in
//! tokens, so criterion prints tokens/s; the streams' bytes per token are printed first to turn that into
//! ns per byte. Every bench checks before and while it runs that it found exactly the matches expected:
//! none in `no_match`, the stop that the last token completes in `completing`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use stoplab::lab::bench::{Strategy, Workload, feed_all};
use stoplab::{LoadOptions, LoadedModel};

const STOPS: [usize; 6] = [1, 4, 16, 64, 256, 1024];
const LENGTHS: [usize; 3] = [64, 1024, 8192];

/// Full rescan is quadratic in the length: beyond this many stops × tokens one pass takes seconds and tells
/// nothing more than the smaller cases already do.
const FULL_RESCAN_LIMIT: usize = 64 * 1024;

fn workload() -> Workload {
    let engine = LoadedModel::load(&LoadOptions {
        tokenizer_only: true,
        ..Default::default()
    })
    .expect("the default model's tokenizer (run `stoplab fetch` once)");
    let w = Workload::new(&engine.vocab, &LENGTHS, 1024).expect("the corpus tokenizes");
    for s in &w.streams {
        eprintln!(
            "stream of {} tokens: {} bytes, {:.2} bytes/token",
            s.len(),
            s.byte_len(),
            s.byte_len() as f64 / s.len() as f64
        );
    }
    w
}

fn skip(strategy: Strategy, stops: usize, tokens: usize) -> bool {
    strategy == Strategy::FullRescan && stops * tokens > FULL_RESCAN_LIMIT
}

fn stops(c: &mut Criterion) {
    let w = workload();
    let sets: Vec<_> = STOPS.iter().map(|&n| (n, w.stop_set(n, false))).collect();
    for &tokens in &LENGTHS {
        let stream = w.stream(tokens);
        let mut group = c.benchmark_group(format!("no_match/{tokens}_tokens"));
        group.throughput(Throughput::Elements(tokens as u64));
        for strategy in Strategy::ALL {
            for (n, set) in &sets {
                if skip(strategy, *n, tokens) {
                    continue;
                }
                let mut s = strategy.build(set, &w.vocab);
                assert_eq!(
                    stream.run(s.as_mut()),
                    w.expected(stream, *n, false),
                    "{} with {n} stops",
                    strategy.name()
                );
                group.bench_with_input(BenchmarkId::new(strategy.name(), n), n, |b, _| {
                    b.iter(|| assert_eq!(black_box(feed_all(s.as_mut(), stream)), 0))
                });
            }
        }
        group.finish();
    }

    // The last token completes a stop: the match is found, where it should be, and costs no more.
    let tokens = 1024;
    let stream = w.stream(tokens);
    let mut group = c.benchmark_group(format!("completing/{tokens}_tokens"));
    group.throughput(Throughput::Elements(tokens as u64));
    for strategy in Strategy::ALL {
        for n in [4, 1024] {
            if skip(strategy, n, tokens) {
                continue;
            }
            let set = w.stop_set(n, true);
            let mut s = strategy.build(&set, &w.vocab);
            assert_eq!(
                stream.run(s.as_mut()),
                w.expected(stream, n, true),
                "{} with {n} stops",
                strategy.name()
            );
            group.bench_with_input(BenchmarkId::new(strategy.name(), n), &n, |b, _| {
                b.iter(|| assert_eq!(black_box(feed_all(s.as_mut(), stream)), 1))
            });
        }
    }
    group.finish();

    // What the token tables cost before the first token: one pass over the whole vocabulary per stop set.
    let mut group = c.benchmark_group("token_tables_setup");
    group.sample_size(10);
    for (n, set) in sets.iter().filter(|(n, _)| *n <= 64) {
        group.bench_with_input(BenchmarkId::from_parameter(n), n, |b, _| {
            b.iter(|| Strategy::TokenTables.build(set, &w.vocab))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10);
    targets = stops
}
criterion_main!(benches);
