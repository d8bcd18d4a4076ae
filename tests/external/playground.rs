//! The stop playground, tested as a person uses it: a real Chromium (headless, through chromedriver) loads
//! the page from `stoplab serve`, types a prompt, adds "\nuser:" as a stop, runs, and the test reads what the
//! page shows (the chips, the held-back marking, the cut stop, the finish sentence) against `stoplab trace`
//! run in-process on the same input. Screenshots go to `target/playground/` (a CI artifact).
//!
//! Needs `chromium` and `chromedriver` (`apt-get install -y chromium chromium-driver`); without them the
//! browser tests fail and say so. The HTTP tests of the routes the page uses need no browser.

use crate::common;
use crate::common::browser;

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use browser::{Browser, ENTER, ESCAPE, TAB, Window};
use common::*;
use serde_json::{Value, json};
use stoplab::lab::trace::{self, Tracer, escape, explain};
use stoplab::pipeline::format::{Message, PromptFormat};
use stoplab::pipeline::sampling::SamplingParams;
use stoplab::pipeline::settings::UserSettings;
use stoplab::pipeline::sink::Outcome;
use stoplab::pipeline::sink::Token;
use stoplab::pipeline::stop::FinishReason;
use stoplab::serve::{Handle, Limits};
use stoplab::{LoadOptions, LoadedModel};

/// One browser at a time: each is a few hundred MB and two cores are shared with the model.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn one_browser() -> std::sync::MutexGuard<'static, ()> {
    ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

const QUESTION: &str = "What is the capital of Germany?";
const REPLAY: &str = " Berlin.\nuser: And France?";

/// What `stoplab trace` records for the same input, run in-process.
struct Expected {
    prompt: String,
    rows: Vec<Token>,
    outcome: Outcome,
}

fn expected(
    weights: bool,
    format: &str,
    messages: &[Message],
    user: UserSettings,
    replay: Option<&str>,
) -> Expected {
    let mut engine = LoadedModel::load(&LoadOptions {
        tokenizer_only: !weights,
        ..Default::default()
    })
    .expect("the default model is in the cache (`stoplab fetch`)");
    let settings = UserSettings {
        format: format.into(),
        ..user
    }
    .validate(Some(engine.vocab.len()))
    .unwrap();
    let (prompt, ids) = engine.prompt(&settings.format, messages).unwrap();
    let script = replay.map(|r| engine.vocab.encode(r, true).unwrap());
    let vocab = engine.vocab.clone();
    let mut tracer = Tracer::new(
        |id| vocab.is_special(id),
        |_: &Token| ControlFlow::Continue(()),
    );
    let outcome = engine
        .generate(&ids, script, &settings.params, &mut tracer)
        .unwrap();
    Expected {
        prompt,
        rows: std::mem::take(&mut tracer.rows),
        outcome,
    }
}

fn user(stops: &[&str], max_tokens: usize) -> UserSettings {
    UserSettings {
        stops: stops.iter().map(|s| s.to_string()).collect(),
        max_tokens,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        ..UserSettings::default()
    }
}

/// The page's finish headline for a finish (what `trace` prints in its event column).
fn headline(f: &FinishReason) -> String {
    let stop_reason = f.stop_reason();
    let mut s = format!("{} → finish_reason {}", f.describe(), f.openai());
    if !stop_reason.is_null() {
        s.push_str(&format!(", stop_reason {stop_reason}"));
    }
    s
}

/// A chip as the page shows it.
#[derive(Debug, serde::Deserialize)]
struct Chip {
    id: u32,
    class: String,
    text: String,
    meta: Vec<String>,
}

impl Chip {
    fn has(&self, class: &str) -> bool {
        self.class.split(' ').any(|c| c == class)
    }
}

fn chips(b: &Browser, run: usize) -> Vec<Chip> {
    let v = b
        .js(
            "const run = document.querySelectorAll('#runs .run')[arguments[0]];
             return [...run.querySelectorAll('.tok')].map(c => ({
               id: Number(c.dataset.id), class: c.className, text: c.querySelector('.t').textContent,
               meta: [...c.querySelectorAll('.m')].map(m => m.textContent)}));",
            vec![json!(run)],
        );
    serde_json::from_value(v).expect("chips")
}

/// The finish paragraph of run `run`: its headline, then the explanation lines.
fn finish(b: &Browser, run: usize) -> (String, Vec<String>) {
    let v = b
        .js(
            "const f = document.querySelectorAll('#runs .run')[arguments[0]].querySelector('.finish');
             return [f.querySelector('.head').textContent, [...f.querySelectorAll('.explain')].map(p => p.textContent)];",
            vec![json!(run)],
        );
    serde_json::from_value(v).expect("the finish paragraph")
}

/// Checks every chip of run `run` against the trace's rows: id, text, and each marking.
fn assert_chips_match(b: &Browser, run: usize, e: &Expected) {
    let chips = chips(b, run);
    assert_eq!(
        chips.iter().map(|c| c.id).collect::<Vec<_>>(),
        e.rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        "one chip per generated token, in order"
    );
    let last = e.rows.last().unwrap();
    // Chips from the one that began the stop are marked cut when the match cut bytes (with include_stop
    // the stop stays in the output).
    let cut_from = last
        .cut
        .as_ref()
        .filter(|cut| !cut.bytes.is_empty())
        .map(|cut| cut.began_at);
    for (chip, row) in chips.iter().zip(&e.rows) {
        let at = format!("chip {} ({:?})", row.index, chip.text);
        if row.special {
            assert_eq!(chip.text, String::from_utf8_lossy(&row.bytes), "{at}");
        } else {
            assert_eq!(chip.text, escape(&row.bytes), "{at}");
        }
        assert_eq!(
            chip.has("emit"),
            !row.text.is_empty(),
            "{at}: released text"
        );
        assert_eq!(chip.has("holding"), !row.held.is_empty(), "{at}: held back");
        assert_eq!(chip.has("special"), row.special, "{at}: special");
        assert_eq!(chip.has("end"), row.end_token, "{at}: end token");
        let cut = cut_from.is_some_and(|from| row.index >= from);
        assert_eq!(chip.has("cut"), cut, "{at}: cut by the stop");
        if let Some(h) = &row.held_for {
            let want = format!(
                "holds \"{}\" {}/{} of \"{}\"",
                escape(&row.held),
                h.bytes,
                h.of,
                escape(h.stop.as_bytes())
            );
            assert_eq!(
                chip.meta.first(),
                Some(&want),
                "{at}: which stop the held bytes may begin"
            );
        }
    }
    let (head, lines) = finish(b, run);
    let finish = last
        .finish
        .as_ref()
        .expect("the last row ends the generation");
    assert_eq!(head, headline(finish));
    assert_eq!(
        lines,
        explain(&e.rows)[1..],
        "the finish explained as `trace` explains it"
    );
}

fn type_into(b: &Browser, selector: &str, text: &str) {
    let e = b.css(selector);
    e.clear();
    e.send_keys(text);
}

/// Waits until every run on the page has finished (or failed).
fn wait_done(b: &Browser) {
    b.wait_until(
        "every run finished",
        "return !document.getElementById('run').disabled && \
         [...document.querySelectorAll('#runs .run')].length > 0 && \
         [...document.querySelectorAll('#runs .run')].every(r => r.querySelector('.finish').children.length > 0)",
    );
}

/// Opens the playground of `h` and waits until the page shows the server's model.
fn open(b: &Browser, h: &Handle) {
    b.goto(&url_of(h));
    b.wait_until(
        "the server's model is shown",
        "return document.getElementById('model').value !== ''",
    );
}

fn url_of(h: &Handle) -> String {
    url(h, "/")
}

const CONTROL_ENTER: &str = "\u{E009}\u{E007}";

// ---------- in a browser ----------

#[test]
fn replay_run_shows_chips_held_back_bytes_the_cut_stop_and_the_finish() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window::DESKTOP);
    open(&b, &h);

    type_into(&b, "#prompt", QUESTION);
    b.select("#format", "transcript");
    // The stop typed as a person types it: backslash, n.
    type_into(&b, "#stop-input", "\\nuser:");
    b.css("#stop-input").send_keys(ENTER);
    let chip = b.text("#stops .chip");
    assert!(chip.starts_with("\"\\nuser:\""), "{chip:?}");
    type_into(&b, "#replay", " Berlin.\\nuser: And France?");

    let messages = [Message::new("user", QUESTION)];
    let e = expected(
        false,
        "transcript",
        &messages,
        user(&["\nuser:"], 64),
        Some(REPLAY),
    );
    b.wait_until(
        "the rendered prompt",
        &format!(
            "return document.getElementById('rendered').textContent === {}",
            json!(e.prompt)
        ),
    );

    // Run from the keyboard.
    b.css("#replay").send_keys(CONTROL_ENTER);
    wait_done(&b);
    assert_eq!(b.text("#error"), "");
    assert_chips_match(&b, 0, &e);
    assert!(
        matches!(e.outcome.finish, FinishReason::StopString { .. }),
        "the replay ends on the stop: {:?}",
        e.outcome.finish
    );
    assert!(
        chips(&b, 0).iter().any(|c| c.has("holding")),
        "some bytes were held back"
    );
    let output = b.js(
        "const o = document.querySelector('#runs .run .output');
             return [o.firstChild.textContent, o.querySelector('.cutout').textContent];",
        vec![],
    );
    assert_eq!(
        output,
        json!([e.outcome.text, "\nuser:"]),
        "the output, and the stop it cut"
    );
    let chart = b.text("#runs .run .chart");
    assert!(chart.contains("No probabilities"), "{chart}");
    // The wire: the completions chunks as they went out, the last with the finish and the stop's tokens
    // withheld.
    let wire = b.js(
        "return [...document.querySelectorAll('#runs .run .wire-list li')].map((li) => li.textContent)",
        vec![],
    );
    let wire: Vec<String> = serde_json::from_value(wire).unwrap();
    assert!(wire.len() >= 2, "{wire:?}");
    assert!(wire[0].starts_with("after token #0: text"), "{wire:?}");
    let last = wire.last().unwrap();
    assert!(
        last.starts_with(
            "after finish: text \"\", ids [], logprobs [], finish_reason stop, withheld ["
        ),
        "{last}"
    );
    assert!(last.contains("data: {"), "{last}");

    // Hovering a chip shows its details; Escape hides them; Tab (the keyboard) onto a chip shows them too.
    let held = e.rows.iter().find(|r| !r.held.is_empty()).unwrap();
    assert!(held.index > 0);
    let chip = |i: usize| b.css(&format!("#runs .run .tok:nth-child({})", i + 1));
    chip(held.index).click();
    let tip = b.text("#tip");
    assert!(tip.contains(&format!("id {}", held.id)), "{tip}");
    assert!(tip.contains("held back"), "{tip}");
    assert!(tip.contains("replayed: no alternatives"), "{tip}");
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("replay.png");
    chip(held.index).send_keys(ESCAPE);
    assert_eq!(
        b.js("return document.getElementById('tip').hidden", vec![]),
        json!(true)
    );
    chip(held.index - 1).send_keys(TAB);
    assert_eq!(
        b.js("return document.activeElement.dataset.index", vec![]),
        json!(held.index.to_string()),
        "Tab moves from chip to chip"
    );
    let tip = b.text("#tip");
    assert!(tip.contains(&format!("id {}", held.id)), "{tip}");

    // The stop chip's × removes it.
    b.css("#stops .chip button").click();
    assert!(b.all("#stops .chip").is_empty());
    b.close();
    h.shutdown().unwrap();
}

/// A replay staged 3 tokens a step: the chips are those of one token a step, each step's chips share a
/// band (the first marked), and the list under them says what each step drafted and kept; the stop that
/// ends the text in the middle of a step discards the rest of it.
#[test]
fn steps_of_several_tokens_show_as_groups_of_chips() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window::DESKTOP);
    open(&b, &h);
    type_into(&b, "#prompt", QUESTION);
    b.select("#format", "transcript");
    type_into(&b, "#stop-input", "\\nuser:");
    b.css("#stop-input").send_keys(ENTER);
    type_into(&b, "#replay", " Berlin.\\nuser: And France?");
    type_into(&b, "#tokens-per-step", "3");
    b.css("#run").click();
    wait_done(&b);
    assert_eq!(b.text("#error"), "");
    let e = expected(
        false,
        "transcript",
        &[Message::new("user", QUESTION)],
        user(&["\nuser:"], 64),
        Some(REPLAY),
    );
    assert_chips_match(&b, 0, &e);
    let chips = chips(&b, 0);
    assert!(
        !chips[0].has("step"),
        "the first token comes from the prompt's pass"
    );
    let steps: Vec<usize> = chips[1..]
        .iter()
        .map(|c| {
            assert!(c.has("step"), "{c:?}");
            usize::from(c.has("step-first"))
        })
        .collect();
    assert_eq!(steps[0], 1, "a step begins at the second token");
    let lines: Vec<String> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#runs .run .steps li')].map((li) => li.textContent)",
        vec![],
    ))
    .unwrap();
    assert_eq!(lines.len(), steps.iter().sum::<usize>(), "{lines:?}");
    assert!(
        lines[0].starts_with("step 0: 3 tokens #1–#3; drafted ["),
        "{lines:?}"
    );
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("steps.png");
    b.close();
    h.shutdown().unwrap();
}

/// Reasoning markers given on the page: the reasoning's chips are marked, the chips where the stops are
/// not armed are outlined, the run's line says where the stops are armed, and the blank-line stop ends the
/// answer, not the thinking (with "both", it ends the thinking).
#[test]
fn the_reasoning_region_and_the_armed_stops_are_shown() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window::DESKTOP);
    open(&b, &h);
    type_into(&b, "#prompt", QUESTION);
    type_into(&b, "#stop-input", "\\n\\n");
    b.css("#stop-input").send_keys(ENTER);
    type_into(&b, "#replay", "<r>plan\\n\\nmore</r>Answer.\\n\\nMore.");
    type_into(&b, "#reasoning-markers", "<r>,</r>");
    b.css("#run").click();
    wait_done(&b);
    assert_eq!(b.text("#error"), "");
    let shown = chips(&b, 0);
    let inside: Vec<bool> = shown.iter().map(|c| c.has("reasoning")).collect();
    // The open marker is written over three tokens ("<", "r", ">"): the reasoning begins with the token that
    // completes it, and ends with the one that completes the close marker.
    let begins = inside.iter().position(|&i| i).expect("a reasoning");
    assert_eq!(shown[begins].text, ">", "{shown:?}");
    let first_answer = begins + inside[begins..].iter().position(|i| !i).expect("an answer");
    assert!(inside[first_answer..].iter().all(|i| !i), "{shown:?}");
    for c in &shown {
        assert_eq!(c.has("unarmed"), c.has("reasoning"), "scope answer: {c:?}");
    }
    let answer: String = shown[first_answer..]
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert!(answer.starts_with("Answer."), "{answer:?}");
    let summary = b.text("#runs .run .summary");
    assert!(
        summary.contains("reasoning between \"<r>\" and \"</r>\"")
            && summary.contains("armed in the answer"),
        "{summary}"
    );
    let (headline, _) = finish(&b, 0);
    assert!(headline.contains("stop"), "{headline}");
    // Armed everywhere: the stop ends the thinking, and no chip is outlined.
    b.select("#stop-scope", "all");
    b.css("#run").click();
    wait_done(&b);
    let all = chips(&b, 0);
    assert_eq!(all.len(), 6, "<, r, >, plan, \\n, \\n: {all:?}");
    assert!(all[2..].iter().all(|c| c.has("reasoning")), "{all:?}");
    assert!(all.iter().all(|c| !c.has("unarmed")), "{all:?}");
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("reasoning.png");
    b.close();
    h.shutdown().unwrap();
}

#[test]
fn side_by_side_shows_the_tokens_a_run_without_the_stop_wastes() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window::DESKTOP);
    b.goto(&url_of(&h));
    type_into(&b, "#prompt", QUESTION);
    b.select("#format", "transcript");
    type_into(&b, "#stop-input", "\\nuser:");
    b.css("#stop-add").click();
    type_into(&b, "#replay", " Berlin.\\nuser: And France?");
    b.css("#compare").click();
    // The seed's "without / with a stop": A loses its stops to B, and both run.
    b.css("#without-with").click();
    wait_done(&b);

    let messages = [Message::new("user", QUESTION)];
    let without = expected(false, "transcript", &messages, user(&[], 64), Some(REPLAY));
    let with = expected(
        false,
        "transcript",
        &messages,
        user(&["\nuser:"], 64),
        Some(REPLAY),
    );
    assert_chips_match(&b, 0, &without);
    assert_chips_match(&b, 1, &with);
    let wasted = without.rows.len() - with.rows.len();
    assert!(wasted > 0);
    let text = b.text("#wasted");
    assert!(
        text.contains(&format!("A's last {wasted} tokens")),
        "{text}"
    );
    let a = chips(&b, 0);
    for (i, c) in a.iter().enumerate() {
        assert_eq!(c.has("wasted"), i >= with.rows.len(), "chip {i}");
    }
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("side-by-side.png");
    b.close();
    h.shutdown().unwrap();
}

#[test]
fn the_default_model_streams_and_shows_p_end_and_alternatives() {
    let _one = one_browser();
    let h = start(true, None, Limits::default());
    let b = Browser::start(Window::DESKTOP);
    b.goto(&url_of(&h));
    let prompt = "user: What is the capital of France?\nAI: Paris.\nuser: What is the capital of Germany?\nAI:";
    // Typed with real line breaks (Enter in the text box), in the raw format: the text is the prompt.
    type_into(&b, "#prompt", prompt);
    type_into(&b, "#stop-input", "\\nuser:");
    b.css("#stop-input").send_keys(ENTER);
    type_into(&b, "#max-tokens", "48");
    b.css("#run").click();
    wait_done(&b);
    assert_eq!(b.text("#error"), "");

    let messages = [Message::new("user", prompt)];
    let with = expected(
        true,
        PromptFormat::Raw.name(),
        &messages,
        user(&["\nuser:"], 48),
        None,
    );
    assert_chips_match(&b, 0, &with);
    let bars = b.all("#runs .run .chart rect.bar").len();
    assert_eq!(bars, with.rows.len(), "one bar of p(end) per step");
    b.css("#runs .run .tok").click();
    let alternatives = b.all("#tip .alts tr").len();
    assert_eq!(alternatives, 5, "the top alternatives of the first step");
    assert!(b.text("#tip").contains("← chosen"));
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("model.png");

    // Side by side with the model; a screenshot while the run without the stop is still streaming.
    b.css("#compare").click();
    b.css("#without-with").click();
    b.wait_until(
        "the run without the stop has streamed a while",
        "const runs = document.querySelectorAll('#runs .run');
         return runs.length === 2 && runs[0].querySelectorAll('.tok').length >= 12 || \
                !document.getElementById('run').disabled",
    );
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("mid-generation.png");
    wait_done(&b);
    let without = expected(
        true,
        PromptFormat::Raw.name(),
        &messages,
        user(&[], 48),
        None,
    );
    assert_chips_match(&b, 0, &without);
    assert_chips_match(&b, 1, &with);
    let text = b.text("#wasted");
    let wasted = without.rows.len() - with.rows.len();
    assert!(
        text.contains(&format!("A's last {wasted} tokens")),
        "{text}"
    );
    b.close();
    h.shutdown().unwrap();
}

#[test]
fn scenarios_load_with_one_click_and_experiment_reports_open() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window::DESKTOP);
    b.goto(&url_of(&h));
    b.wait_for("#scenarios button[data-name='2-transcript-stop']");
    assert_eq!(
        b.all("#scenarios button").len(),
        stoplab::lab::experiment::SHIPPED.len()
    );
    b.css("#scenarios button[data-name='2-transcript-stop']")
        .click();
    let sc = stoplab::lab::experiment::shipped()
        .unwrap()
        .into_iter()
        .find(|s| s.name == "2-transcript-stop")
        .unwrap();
    assert_eq!(b.css("#format").prop("value"), "transcript");
    let chips: Vec<String> = serde_json::from_value(b.js(
        "return [...document.querySelectorAll('#stops .chip')].map(c => c.firstChild.textContent)",
        vec![],
    ))
    .unwrap();
    let want: Vec<String> = sc
        .settings
        .stops
        .iter()
        .map(|s| format!("\"{}\"", escape(s.as_bytes())))
        .collect();
    assert_eq!(chips, want);
    assert_eq!(
        b.css("#max-tokens").prop("value"),
        sc.settings.max_tokens.to_string()
    );
    // No weights here: the page asks for the replay rather than failing.
    assert!(b.text("#status").contains("no weights"));
    b.wait_until(
        "the scenario's conversation rendered",
        "return document.getElementById('rendered').textContent.includes('AI: Paris.')",
    );

    // A setting the one validation refuses comes back naming its field.
    type_into(&b, "#replay", " Berlin.");
    type_into(&b, "#max-tokens", "0");
    b.css("#run").click();
    b.wait_until(
        "an error",
        "return document.getElementById('error').textContent !== ''",
    );
    let error = b.text("#error");
    assert!(
        error.contains("max_tokens") && error.contains("at least 1"),
        "{error}"
    );

    // An experiment report opens as a table.
    let report = report_json(&sc);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    b.css("#report-file").send_keys(&path.display().to_string());
    b.wait_for("#report:not([hidden]) table.report tbody tr");
    let cells: Vec<String> = serde_json::from_value(
        b.js(
            "return [...document.querySelectorAll('#report tbody tr:first-child td')].map(td => td.textContent)",
            vec![],
        ),
    )
    .unwrap();
    assert!(cells[0].starts_with("2-transcript-stop"), "{cells:?}");
    assert_eq!(cells[1], "2");
    assert_eq!(cells[4], "1/2", "answered");
    assert_eq!(cells[5], "3.0 / 3", "wasted mean / max");
    b.js("window.scrollTo(0, 0)", vec![]);
    b.screenshot("report.png");

    // A file that is not a report says what it expected.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"hello\": 1}").unwrap();
    b.css("#report-file").send_keys(&bad.display().to_string());
    b.wait_until(
        "the report error",
        "return document.getElementById('error').textContent.includes('not a stoplab experiment report')",
    );
    b.close();
    h.shutdown().unwrap();
}

/// A report as `stoplab experiment --report` writes it, from two made-up runs of a scenario.
fn report_json(sc: &stoplab::lab::experiment::Scenario) -> Value {
    use stoplab::lab::experiment::{RunOptions, RunResult, summarise, to_json};
    let run = |seed, answered: Option<usize>, tokens| RunResult {
        seed,
        finish: "length".into(),
        finish_detail: "length: 8 tokens".into(),
        finish_reason: "length".into(),
        tokens,
        answered_at: answered,
        wasted: answered.map(|a| tokens - a - 1),
        run_on_turns: 0,
        repeated_ngrams: 0,
        decode_ms: 10.0,
        prefill_ms: 1.0,
        text: " Berlin. And".into(),
    };
    let report = summarise(sc, vec![run(0, Some(4), 8), run(1, None, 8)]);
    to_json(&[report], &RunOptions::default(), 1.0)
}

#[test]
fn the_page_asks_for_the_api_key_and_then_runs() {
    let _one = one_browser();
    let h = start(false, Some("sekret"), Limits::default());
    let b = Browser::start(Window::DESKTOP);
    b.goto(&url_of(&h));
    b.wait_for("#key-box:not([hidden])");
    assert!(b.text("#server").contains("API key"));
    type_into(&b, "#api-key", "sekret");
    b.css("#key-save").click();
    b.wait_until(
        "the model is shown",
        "return document.getElementById('model').value !== ''",
    );
    type_into(&b, "#prompt", QUESTION);
    type_into(&b, "#replay", " Berlin.");
    b.css("#run").click();
    wait_done(&b);
    assert_eq!(b.text("#error"), "");
    assert!(!chips(&b, 0).is_empty());
    b.close();
    h.shutdown().unwrap();
}

#[test]
fn a_phone_width_dark_page_fits_and_is_dark() {
    let _one = one_browser();
    let h = replay_server();
    let b = Browser::start(Window {
        dark: true,
        ..Window::PHONE
    });
    b.goto(&url_of(&h));
    type_into(&b, "#prompt", QUESTION);
    b.select("#format", "transcript");
    type_into(&b, "#stop-input", "\\nuser:");
    b.css("#stop-input").send_keys(ENTER);
    type_into(&b, "#replay", " Berlin.\\nuser: And France?");
    b.css("#run").click();
    wait_done(&b);
    let layout = b.js(
        "const s = document.getElementById('settings').getBoundingClientRect();
             const r = document.getElementById('results').getBoundingClientRect();
             const bg = getComputedStyle(document.body).backgroundColor.match(/\\d+/g).map(Number);
             return {overflow: document.documentElement.scrollWidth - window.innerWidth,
                     stacked: r.top >= s.bottom, width: window.innerWidth, bg};",
        vec![],
    );
    assert_eq!(layout["width"], 390, "{layout}");
    assert!(
        layout["overflow"].as_i64().unwrap() <= 0,
        "no sideways scrolling: {layout}"
    );
    assert_eq!(
        layout["stacked"], true,
        "one column: the generation under the settings: {layout}"
    );
    let bg: Vec<u32> = serde_json::from_value(layout["bg"].clone()).unwrap();
    assert!(
        bg[..3].iter().sum::<u32>() < 150,
        "prefers-color-scheme: dark gives a dark page: {layout}"
    );
    b.js(
        "document.getElementById('results').scrollIntoView()",
        vec![],
    );
    b.screenshot("phone-dark.png");
    b.close();
    h.shutdown().unwrap();
}

// ---------- the routes the page uses, over plain HTTP ----------

fn trace_events(h: &Handle, body: &Value) -> Vec<Value> {
    stream(h, "/v1/stoplab/trace", body)
}

#[test]
fn the_trace_stream_carries_the_rows_of_trace_and_its_explanation() {
    let h = replay_server();
    let body = json!({
        "format": "transcript",
        "messages": [{"role": "user", "content": QUESTION}],
        "stop": ["\nuser:"],
        "replay": REPLAY,
    });
    let events = trace_events(&h, &body);
    let e = expected(
        false,
        "transcript",
        &[Message::new("user", QUESTION)],
        user(&["\nuser:"], 64),
        Some(REPLAY),
    );
    assert_eq!(events[0]["type"], "start");
    assert_eq!(events[0]["prompt"], e.prompt);
    let tokens: Vec<&Value> = events.iter().filter(|ev| ev["type"] == "token").collect();
    assert_eq!(tokens.len(), e.rows.len());
    for (ev, row) in tokens.iter().zip(&e.rows) {
        let want = trace::row_json(row);
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&ev[k], v, "token {}: {k}", row.index);
        }
        assert_eq!(ev["token_esc"], escape(&row.bytes));
        assert_eq!(ev["held_esc"], escape(&row.held));
    }
    let fin = events.last().unwrap();
    assert_eq!(fin["type"], "finish");
    assert_eq!(fin["text"], e.outcome.text);
    assert_eq!(fin["finish_reason"], "stop");
    assert_eq!(fin["stop_reason"], "\nuser:");
    assert_eq!(fin["cut"], "\nuser:");
    let lines: Vec<String> = serde_json::from_value(fin["explain"].clone()).unwrap();
    assert_eq!(lines, explain(&e.rows));

    // The wire beside the rows: the chunks /v1/completions streams for the same prompt and tokens.
    let wire: Vec<Value> = events
        .iter()
        .flat_map(|ev| ev["wire"].as_array().cloned().unwrap_or_default())
        .map(|c| c["choices"].clone())
        .collect();
    let api = stream(
        &h,
        "/v1/completions",
        &json!({"prompt": e.prompt, "replay": REPLAY, "stop": ["\nuser:"], "max_tokens": 64,
            "stream": true, "logprobs": 1, "return_token_ids": true}),
    );
    let api: Vec<Value> = api.iter().map(|c| c["choices"].clone()).collect();
    assert_eq!(wire, api);
    h.shutdown().unwrap();
}

/// The trace stream of a replay staged 3 tokens a step: the same rows as one a step, and after each step
/// an event naming its rows (contiguous from the second token) and what was drafted, accepted and
/// discarded; `tokens_per_step` without a replay is refused by name.
#[test]
fn the_trace_stream_reports_each_step_after_its_rows() {
    let h = replay_server();
    let body = json!({
        "format": "transcript",
        "messages": [{"role": "user", "content": QUESTION}],
        "stop": ["\nuser:"],
        "replay": REPLAY,
    });
    let one = trace_events(&h, &body);
    let mut staged = body.clone();
    staged["tokens_per_step"] = json!(3);
    let events = trace_events(&h, &staged);
    let rows = |evs: &[Value]| -> Vec<Value> {
        evs.iter()
            .filter(|ev| ev["type"] == "token")
            .map(|ev| {
                let mut ev = ev.clone();
                ev.as_object_mut().unwrap().remove("wire");
                ev
            })
            .collect()
    };
    assert_eq!(rows(&events), rows(&one));
    let finish = |evs: &[Value]| {
        let mut f = evs.last().unwrap().clone();
        f.as_object_mut().unwrap().remove("wire");
        f
    };
    assert_eq!(finish(&events), finish(&one), "the same finish");
    let mut next = 1;
    let mut seen = 0;
    for ev in &events {
        match ev["type"].as_str().unwrap() {
            "token" => seen += 1,
            "step" => {
                assert_eq!(ev["first_row"], next, "{ev}");
                let n = ev["rows"].as_u64().unwrap() as usize;
                assert_eq!(next + n, seen, "a step's event follows its rows: {ev}");
                next += n;
                assert!(ev["drafted"].as_array().unwrap().len() <= 2, "{ev}");
            }
            _ => {}
        }
    }
    assert_eq!(next, seen, "every token after the first is in a step");
    let last_step = events.iter().rev().find(|ev| ev["type"] == "step").unwrap();
    assert!(
        !last_step["discarded"].as_array().unwrap().is_empty(),
        "the stop ends the text inside a step: {last_step}"
    );

    let mut bad = body.clone();
    bad.as_object_mut().unwrap().remove("replay");
    bad["tokens_per_step"] = json!(3);
    let r = post(&h, "/v1/stoplab/trace", &bad);
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "tokens_per_step", "{:?}", r.body);
    h.shutdown().unwrap();
}

#[test]
fn trace_settings_errors_name_their_json_path() {
    let h = replay_server();
    let base = json!({"messages": [{"role": "user", "content": "hi"}], "replay": " x"});
    let cases = [
        (json!({"stops": ["x"]}), "stops"),
        (json!({"stop": ["a", ""]}), "stop[1]"),
        (json!({"natural_stop": true}), "natural_stop"),
        (json!({"format": "xml"}), "format"),
        (json!({"max_tokens": 0}), "max_tokens"),
        (json!({"min_tokens": 9, "max_tokens": 8}), "min_tokens"),
        (json!({"temperature": -1}), "temperature"),
        (
            json!({"stop_token_ids": [1, 99999999]}),
            "stop_token_ids[1]",
        ),
        (
            json!({"logit_bias": [[2, "-inf"], [3, "lots"]]}),
            "logit_bias[1]",
        ),
        (
            json!({"repetition_stop": {"ngram": 0}}),
            "repetition_stop.ngram",
        ),
        (json!({"replay": null}), "replay"),
        (json!({"messages": []}), "messages"),
    ];
    for (patch, param) in cases {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = post(&h, "/v1/stoplab/trace", &body);
        assert_eq!(r.status, 400, "{body} -> {:?}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{body} -> {:?}", r.body);
    }
    h.shutdown().unwrap();
}

/// The trace route checks its prompt against the context with the API's own check, so it answers as the
/// API does: a 400 with `context_length_exceeded`, naming `messages` or `max_tokens`.
#[test]
fn trace_beyond_the_context_is_context_length_exceeded_as_in_the_api() {
    let h = replay_server();
    let context = get(&h, "/v1/stoplab/info").body["context"]
        .as_u64()
        .unwrap() as usize;
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": context}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x ".repeat(context)}]}),
            "messages",
        ),
    ];
    for (mut body, param) in cases {
        body["replay"] = json!(" x");
        let r = post(&h, "/v1/stoplab/trace", &body);
        assert_eq!(r.status, 400, "{param}: {:?}", r.body);
        assert_eq!(
            r.body["error"]["code"], "context_length_exceeded",
            "{param}: {:?}",
            r.body
        );
        assert_eq!(r.body["error"]["param"], param, "{:?}", r.body);
    }
    h.shutdown().unwrap();
}

#[test]
fn render_shows_what_each_format_makes_of_the_messages() {
    let h = replay_server();
    let messages = json!([{"role": "user", "content": "Hi"}]);
    for (format, want) in [
        ("raw", "Hi"),
        ("transcript", "user: Hi\nAI:"),
        ("separator", "Hi\n- - -\n"),
    ] {
        let r = post(
            &h,
            "/v1/stoplab/render",
            &json!({"format": format, "messages": messages}),
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.body["text"], want);
        assert_eq!(r.body["tokens"], tokenize(&h, want).len());
    }
    let r = post(
        &h,
        "/v1/stoplab/render",
        &json!({"format": "chat", "messages": messages}),
    );
    assert!(
        r.body["text"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>user\nHi<|im_end|>"),
        "{:?}",
        r.body
    );
    let r = post(
        &h,
        "/v1/stoplab/render",
        &json!({"format": "transcript", "user_prefix": "Q:", "ai_prefix": "A:", "messages": messages}),
    );
    assert_eq!(r.body["text"], "Q: Hi\nA:");
    h.shutdown().unwrap();
}

#[test]
fn the_page_needs_no_key_and_the_api_does() {
    let h = start(false, Some("sekret"), Limits::default());
    for (path, kind) in [
        ("/", "text/html"),
        ("/playground/app.js", "text/javascript"),
        ("/playground/style.css", "text/css"),
    ] {
        let r = ureq::get(&url(&h, path)).call().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.header("Content-Type").unwrap().starts_with(kind),
            "{path}"
        );
        let csp = r.header("Content-Security-Policy").unwrap().to_string();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
    }
    let page = ureq::get(&url(&h, "/"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(page.contains("stoplab playground"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "nothing is loaded from elsewhere"
    );
    for path in ["/v1/stoplab/info", "/v1/stoplab/scenarios"] {
        assert_eq!(get(&h, path).status, 401, "{path}");
    }
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "replay": " x"});
    assert_eq!(post(&h, "/v1/stoplab/trace", &body).status, 401);
    let r = post_bytes(
        &h,
        "/v1/stoplab/trace",
        body.to_string().as_bytes(),
        &[("Authorization", "Bearer sekret")],
    );
    assert_eq!(r.status, 200);
    h.shutdown().unwrap();
}

#[test]
fn info_and_scenarios_describe_the_server_and_the_shipped_files() {
    let h = replay_server();
    let info = get(&h, "/v1/stoplab/info").body;
    assert_eq!(info["model"], h.model());
    assert_eq!(info["weights"], false);
    assert!(
        info["end_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["token"] == "<|im_end|>"),
        "{info}"
    );
    let list = get(&h, "/v1/stoplab/scenarios").body;
    let list = list["scenarios"].as_array().unwrap();
    let shipped = stoplab::lab::experiment::shipped().unwrap();
    assert_eq!(list.len(), shipped.len());
    for (json, sc) in list.iter().zip(&shipped) {
        assert_eq!(json["name"], sc.name);
        assert_eq!(json["format"], sc.settings.format);
        assert_eq!(json["stops"], json!(sc.settings.stops));
        assert_eq!(json["max_tokens"], sc.settings.max_tokens);
        // As the file writes it: 0.3, not 0.30000001192092896.
        let written: f64 = sc
            .settings
            .sampling
            .temperature
            .to_string()
            .parse()
            .unwrap();
        assert_eq!(json["temperature"].as_f64(), Some(written));
        assert_eq!(
            json["messages"].as_array().unwrap().len(),
            sc.messages.len()
        );
    }
    let broken = list
        .iter()
        .find(|s| s["name"] == "5a-broken-end-token")
        .unwrap();
    assert_eq!(broken["logit_bias"], json!([[0, "-inf"], [2, "-inf"]]));
    h.shutdown().unwrap();
}

/// Ends a child process (by its pid) if the test fails before it does.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `stoplab play` prints the URL of a page it serves, and stops cleanly on SIGTERM.
#[test]
fn play_prints_the_url_of_the_page() {
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_stoplab"))
            .args(["--threads", "1", "play", "--replay-only"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{line:?}"
    );
    let page = ureq::get(url).call().unwrap().into_string().unwrap();
    assert!(page.contains("<title>stoplab playground"));
    let info: Value = ureq::get(&format!("{url}v1/stoplab/info"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(info["weights"], false);
    let term = Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}
