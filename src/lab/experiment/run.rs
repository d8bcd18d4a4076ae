//! Running a scenario: its runs (one seed each), what each wasted after the answer was complete, the summary.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::Serialize;

use crate::pipeline::batch::generate_all_with;
use crate::pipeline::settings::{GenerateParams, RepetitionStop, Speculation};
use crate::pipeline::sink::Sink;
use crate::pipeline::sink::{Outcome, TokenEvent};
use crate::{Error, LoadedModel};

use super::rules::{self, Answer, Contrast, StepRule};
use super::scenario::Scenario;

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Fewer runs and tokens (`quick_runs`, `quick_max_tokens`): a smoke test.
    pub quick: bool,
    /// Use this repetition stop in every scenario.
    pub repetition: Option<RepetitionStop>,
    /// Runs per scenario instead of each scenario's own count (`--runs`).
    pub runs: Option<usize>,
    /// Speculative decoding for every run whose scenario does not stage its own steps (`--speculate`).
    pub speculation: Option<Speculation>,
}

impl RunOptions {
    /// The settings of `sc`'s run `i` (its seed; in quick mode, fewer tokens).
    pub fn params(&self, sc: &Scenario, i: usize) -> GenerateParams {
        let mut p = sc.params.clone();
        p.sampling.seed = sc.seed + i as u64;
        if self.quick {
            p.max_tokens = p.max_tokens.min(sc.quick_max_tokens);
        }
        if let Some(r) = self.repetition {
            p.repetition = Some(r);
        }
        if p.speculation.is_none() {
            p.speculation = self.speculation;
        }
        p
    }

    /// How many runs `sc` makes.
    pub fn runs_of(&self, sc: &Scenario) -> usize {
        if let Some(n) = self.runs {
            n
        } else if self.quick {
            sc.quick_runs.min(sc.runs)
        } else {
            sc.runs
        }
    }
}

/// One run of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub seed: u64,
    /// `FinishReason::kind` and `describe`.
    pub finish: String,
    pub finish_detail: String,
    pub finish_reason: String,
    pub tokens: usize,
    /// Index of the token that completed the answer, if it was written.
    pub answered_at: Option<usize>,
    /// Tokens generated after that one.
    pub wasted: Option<usize>,
    pub run_on_turns: usize,
    pub repeated_ngrams: usize,
    pub decode_ms: f64,
    pub prefill_ms: f64,
    pub text: String,
}

/// A scenario's runs, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// The model it ran on, as the user named it (a manifest name, a path, or the server's model).
    pub model: String,
    /// The scenario replays a script (no weights ran: its timings say nothing about the model).
    pub replay: bool,
    pub name: String,
    pub title: String,
    pub file: String,
    pub about: String,
    pub runs: usize,
    /// Finish kind → number of runs.
    pub finishes: BTreeMap<String, usize>,
    pub tokens_mean: f64,
    pub tokens_max: usize,
    /// Runs in which the answer was written.
    pub answered: usize,
    /// Over answered runs.
    pub wasted_mean: f64,
    pub wasted_max: usize,
    pub run_on_turns_mean: f64,
    pub repeated_ngrams_mean: f64,
    pub ngram: usize,
    pub decode_ms: f64,
    pub decode_tokens_per_s: f64,
    /// The end tokens in force, as [`crate::lab::trace::end_set_line`] writes them (empty on a server).
    pub end_tokens: String,
    pub results: Vec<RunResult>,
    /// `[replay] contrast`: the first run's answer beside the buggy rule's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrast: Option<Contrast>,
}

/// Counts non-overlapping occurrences of each marker in `text`.
pub fn count_markers(text: &str, markers: &[String]) -> usize {
    markers
        .iter()
        .map(|m| text.matches(m.as_str()).count())
        .sum()
}

/// Token n-grams that repeat an earlier one: all windows minus distinct windows.
pub fn repeated_ngrams(tokens: &[u32], n: usize) -> usize {
    if n == 0 || tokens.len() < n {
        return 0;
    }
    let distinct: std::collections::HashSet<&[u32]> = tokens.windows(n).collect();
    tokens.windows(n).count() - distinct.len()
}

/// Runs one scenario `run_count` times; `on_run` sees each result as it comes.
pub fn run_scenario(
    engine: &mut LoadedModel,
    sc: &Scenario,
    opts: &RunOptions,
    on_run: &mut dyn FnMut(&RunResult),
) -> Result<ScenarioReport, Error> {
    sc.check(engine.vocab.len()).map_err(|e| Error::Invalid {
        field: format!("{}:{}: {}", e.file, e.line, e.field),
        message: e.message,
    })?;
    let (_, prompt) = engine.prompt(&sc.format, &sc.messages)?;
    let replay = match &sc.replay {
        Some(text) => Some(engine.vocab.encode(text, true)?),
        None => None,
    };
    let longest = sc.done.iter().map(String::len).max().unwrap_or(0);
    let mut results = Vec::new();
    let mut contrast = None;
    for i in 0..opts.runs_of(sc) {
        let mut params = opts.params(sc, i);
        params.reasoning = sc.reasoning.on(&engine.vocab);
        let mut written: Vec<u8> = Vec::new();
        let mut answered_at = None;
        let mut sink = |ev: &TokenEvent<'_>| {
            let from = written.len().saturating_sub(longest.saturating_sub(1));
            written.extend_from_slice(ev.bytes);
            if answered_at.is_none()
                && sc
                    .done
                    .iter()
                    .any(|d| contains(&written[from..], d.as_bytes()))
            {
                answered_at = Some(ev.index);
            }
            ControlFlow::Continue(())
        };
        let outcome = engine.generate(&prompt, replay.clone(), &params, &mut sink)?;
        if let (Some(rule), Some(script), 0) = (sc.contrast, &replay, i) {
            contrast = Some(contrasted(engine, sc, rule, script, &params, &outcome)?);
        }
        let result = RunResult {
            seed: params.sampling.seed,
            finish: outcome.finish.kind().into(),
            finish_detail: outcome.finish.describe(),
            finish_reason: outcome.finish.openai().into(),
            tokens: outcome.tokens.len(),
            answered_at,
            wasted: answered_at.map(|a| outcome.tokens.len() - a - 1),
            run_on_turns: count_markers(&outcome.text, &sc.turn_markers),
            repeated_ngrams: repeated_ngrams(&outcome.tokens, sc.ngram),
            decode_ms: outcome.timings.decode_ms,
            prefill_ms: outcome.timings.prefill_ms,
            text: outcome.text,
        };
        on_run(&result);
        results.push(result);
    }
    let mut report = summarise(sc, results);
    report.end_tokens = crate::lab::trace::end_set_line(&engine.vocab, &sc.params);
    report.contrast = contrast;
    Ok(report)
}

/// Stoplab's answer of a replayed run beside what `rule` gives on the same replay, staged the same way.
fn contrasted(
    engine: &LoadedModel,
    sc: &Scenario,
    rule: StepRule,
    script: &[u32],
    params: &GenerateParams,
    outcome: &Outcome,
) -> Result<Contrast, Error> {
    let ends = params.end_set(engine.vocab.end_tokens());
    let end = engine.replay_ending(script.to_vec(), &ends)?.end();
    let stream = [script, &[end]].concat();
    let k = sc.tokens_per_step.unwrap_or(1);
    let theirs = rules::apply(
        rule,
        &engine.vocab,
        &stream,
        &ends,
        &sc.settings.stops,
        params.max_tokens,
        k,
    )?;
    let carried = outcome.tokens.len() - outcome.withheld;
    let ours = Answer {
        text: outcome.text.clone(),
        finish: outcome.finish.openai().into(),
        ids: outcome.tokens[..carried].to_vec(),
        completion_tokens: outcome.tokens.len(),
    };
    Ok(Contrast::new(rule, k, ours, theirs))
}

/// Watches a run's output for the scenario's "done" texts: where the answer was complete.
struct Watch<'a> {
    done: &'a [String],
    longest: usize,
    written: Vec<u8>,
    answered_at: Option<usize>,
}

impl<'a> Watch<'a> {
    fn new(sc: &'a Scenario) -> Self {
        Self {
            done: &sc.done,
            longest: sc.done.iter().map(String::len).max().unwrap_or(0),
            written: Vec::new(),
            answered_at: None,
        }
    }
}

impl Sink for Watch<'_> {
    fn token(&mut self, ev: &TokenEvent<'_>) -> Result<ControlFlow<()>, Error> {
        let from = self
            .written
            .len()
            .saturating_sub(self.longest.saturating_sub(1));
        self.written.extend_from_slice(ev.bytes);
        if self.answered_at.is_none()
            && self
                .done
                .iter()
                .any(|d| contains(&self.written[from..], d.as_bytes()))
        {
            self.answered_at = Some(ev.index);
        }
        Ok(ControlFlow::Continue(()))
    }
}

fn result_of(sc: &Scenario, seed: u64, answered_at: Option<usize>, outcome: Outcome) -> RunResult {
    RunResult {
        seed,
        finish: outcome.finish.kind().into(),
        finish_detail: outcome.finish.describe(),
        finish_reason: outcome.finish.openai().into(),
        tokens: outcome.tokens.len(),
        answered_at,
        wasted: answered_at.map(|a| outcome.tokens.len() - a - 1),
        run_on_turns: count_markers(&outcome.text, &sc.turn_markers),
        repeated_ngrams: repeated_ngrams(&outcome.tokens, sc.ngram),
        decode_ms: outcome.timings.decode_ms,
        prefill_ms: outcome.timings.prefill_ms,
        text: outcome.text,
    }
}

/// Runs every run of every scenario through one batch of up to `parallel` sequences decoded together
/// (continuous batching: runs of a scenario and of different scenarios share each pass over the weights;
/// a finished run's slot goes to the next run at once). Each run's text is the one
/// [`run_scenario`] gives it alone. `on_run` sees each result as it comes (scenario index, result);
/// the reports are in the order of `scenarios`, each its scenario's result or its first error.
/// `decode_ms` of a run is its wall time in the batch, shared with the runs beside it.
pub fn run_scenarios(
    engine: &mut LoadedModel,
    scenarios: &[Scenario],
    opts: &RunOptions,
    parallel: usize,
    on_run: &mut dyn FnMut(usize, &RunResult),
) -> Vec<Result<ScenarioReport, Error>> {
    let mut jobs = Vec::new();
    // Per job: (scenario, seed).
    let mut whose = Vec::new();
    let mut failed: Vec<Option<Error>> = scenarios.iter().map(|_| None).collect();
    // A replay needs no weights and no slot: it runs on its own, beside the batch.
    let mut replayed: Vec<Option<Result<ScenarioReport, Error>>> =
        scenarios.iter().map(|_| None).collect();
    for (k, sc) in scenarios.iter().enumerate() {
        if sc.replay.is_some() {
            replayed[k] = Some(run_scenario(engine, sc, opts, &mut |r| on_run(k, r)));
            continue;
        }
        let prompt = sc
            .check(engine.vocab.len())
            .map_err(|e| Error::Invalid {
                field: format!("{}:{}: {}", e.file, e.line, e.field),
                message: e.message,
            })
            .and_then(|_| engine.prompt(&sc.format, &sc.messages));
        let prompt = match prompt {
            Ok((_, p)) => p,
            Err(e) => {
                failed[k] = Some(e);
                continue;
            }
        };
        for i in 0..opts.runs_of(sc) {
            let mut params = opts.params(sc, i);
            params.reasoning = sc.reasoning.on(&engine.vocab);
            whose.push((k, params.sampling.seed));
            jobs.push((prompt.clone(), params, Watch::new(sc)));
        }
    }
    // Each slot holds what the longest run can need, not the whole context.
    let context = engine.context_length();
    let need = jobs
        .iter()
        .map(|(p, params, _)| match params.max_tokens {
            0 => context,
            m => p.len() + m + 1,
        })
        .max()
        .unwrap_or(2)
        .min(context);
    let mut results: Vec<Vec<RunResult>> = scenarios.iter().map(|_| Vec::new()).collect();
    if !jobs.is_empty() {
        if let Err(e) = engine.set_slots(parallel.max(1), need) {
            return scenarios
                .iter()
                .map(|_| Err(Error::Backend(e.to_string())))
                .collect();
        }
        let (model, vocab) = engine.batch_parts();
        let done = generate_all_with(model, vocab, jobs, &mut |i, watch, result| {
            if let Ok(o) = result {
                let (k, seed) = whose[i];
                on_run(
                    k,
                    &result_of(&scenarios[k], seed, watch.answered_at, o.clone()),
                );
            }
        });
        for (i, (watch, result)) in done.into_iter().enumerate() {
            let (k, seed) = whose[i];
            match result {
                Ok(o) => results[k].push(result_of(&scenarios[k], seed, watch.answered_at, o)),
                Err(e) => {
                    failed[k].get_or_insert(e);
                }
            }
        }
    }
    let vocab = &engine.vocab;
    scenarios
        .iter()
        .zip(results)
        .zip(failed)
        .zip(replayed)
        .map(|(((sc, r), f), replay)| match (replay, f) {
            (Some(report), _) => report,
            (None, Some(e)) => Err(e),
            (None, None) => {
                let mut report = summarise(sc, r);
                report.end_tokens = crate::lab::trace::end_set_line(vocab, &sc.params);
                Ok(report)
            }
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (n, sum) = xs.fold((0usize, 0.0), |(n, s), x| (n + 1, s + x));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// The summary of a scenario's results.
pub fn summarise(sc: &Scenario, results: Vec<RunResult>) -> ScenarioReport {
    let mut finishes = BTreeMap::new();
    for r in &results {
        *finishes.entry(r.finish.clone()).or_insert(0) += 1;
    }
    let decode_ms: f64 = results.iter().map(|r| r.decode_ms).sum();
    let decode_tokens: usize = results.iter().map(|r| r.tokens.saturating_sub(1)).sum();
    ScenarioReport {
        model: sc.model.clone().unwrap_or_default(),
        replay: sc.replay.is_some(),
        name: sc.name.clone(),
        title: sc.title.clone(),
        file: sc.file.clone(),
        about: sc.about.clone(),
        runs: results.len(),
        finishes,
        tokens_mean: mean(results.iter().map(|r| r.tokens as f64)),
        tokens_max: results.iter().map(|r| r.tokens).max().unwrap_or(0),
        answered: results.iter().filter(|r| r.answered_at.is_some()).count(),
        wasted_mean: mean(results.iter().filter_map(|r| r.wasted).map(|w| w as f64)),
        wasted_max: results.iter().filter_map(|r| r.wasted).max().unwrap_or(0),
        run_on_turns_mean: mean(results.iter().map(|r| r.run_on_turns as f64)),
        repeated_ngrams_mean: mean(results.iter().map(|r| r.repeated_ngrams as f64)),
        ngram: sc.ngram,
        end_tokens: String::new(),
        decode_ms,
        decode_tokens_per_s: if decode_ms > 0.0 {
            decode_tokens as f64 * 1e3 / decode_ms
        } else {
            0.0
        },
        results,
        contrast: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ngrams_count_repeats_not_distinct() {
        assert_eq!(repeated_ngrams(&[1, 2, 1, 2, 1, 2], 2), 3);
        assert_eq!(repeated_ngrams(&[1, 2, 3], 2), 0);
    }
}
