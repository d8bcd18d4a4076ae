//! The benchmark's own machinery: the stops it draws never match, its streams end with the stop the
//! "completing" case expects, and its chart is one line per series.

use stoplab::lab::bench::svg::{Series, line_chart};
use stoplab::lab::bench::{END_STOP, Strategy, Stream, feed_all, never_matching_stops};
use stoplab::pipeline::stop::{StopSet, naive_first_match};

/// A toy vocabulary: one token per word of the text, the stream built the way the benches build theirs.
fn toy_stream(n: usize) -> (Vec<Vec<u8>>, Stream) {
    let text = "the quick brown fox jumps over the lazy dog and the cat, then sleeps.\n";
    let mut vocab: Vec<Vec<u8>> = Vec::new();
    let mut ids = Vec::new();
    for word in text.split_inclusive(' ') {
        ids.push(vocab.len() as u32);
        vocab.push(word.as_bytes().to_vec());
    }
    let end: Vec<u32> = ["\n", "user", ":"]
        .iter()
        .map(|t| {
            vocab.push(t.as_bytes().to_vec());
            vocab.len() as u32 - 1
        })
        .collect();
    let stream = Stream::new(&ids, &end, &vocab, n);
    (vocab, stream)
}

#[test]
fn drawn_stops_never_match_and_the_end_stop_matches_on_the_last_token() {
    let (vocab, stream) = toy_stream(200);
    let text = stream.text();
    assert!(text.ends_with(END_STOP.as_bytes()));
    let mut stops = never_matching_stops(&text, &[&text], 64, 7);
    assert_eq!(stops.len(), 64);
    assert_eq!(naive_first_match(&text, &stops), None);

    stops.push(END_STOP.to_string());
    let set = StopSet::new(stops.iter().cloned()).unwrap();
    for strategy in Strategy::ALL {
        let mut s = strategy.build(&set, &vocab);
        let found = stream.run(s.as_mut());
        assert_eq!(found.len(), 1, "{}", strategy.name());
        assert_eq!(found[0].0, stream.len() - 1);
        assert_eq!(found[0].1.stop, 64);
        assert_eq!(found[0].1.end, text.len());
        // The timed loop counts the same match, after a reset.
        assert_eq!(feed_all(s.as_mut(), &stream), 1);
    }
}

#[test]
fn chart_has_one_line_per_series_and_skips_missing_points() {
    let series = vec![
        Series {
            name: "stoplab".into(),
            points: vec![(1.0, 20.0), (1024.0, 50.0)],
        },
        Series {
            name: "full <rescan>".into(),
            points: vec![(1.0, 200.0), (1024.0, f64::NAN)],
        },
    ];
    let svg = line_chart("t", "stops", "ns/token", &series);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    assert_eq!(svg.matches("<circle").count(), 3);
    assert!(svg.contains("full &lt;rescan&gt;"));
}
