//! Reports of an experiment: the terminal table and the line under it, the JSON, the Markdown report (its
//! header line) and its SVG chart.

use std::path::Path;

use super::run::{RunOptions, ScenarioReport};
use super::scenario::Scenario;

fn finishes_label(r: &ScenarioReport) -> String {
    r.finishes
        .iter()
        .map(|(k, n)| format!("{k}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

const COLUMNS: [&str; 9] = [
    "scenario",
    "runs",
    "finish",
    "tokens mean/max",
    "answered",
    "wasted mean/max",
    "run-on turns",
    "repeated n-grams",
    "decode s (tok/s)",
];

fn cells(r: &ScenarioReport) -> [String; 9] {
    [
        r.name.clone(),
        r.runs.to_string(),
        finishes_label(r),
        format!("{:.1} / {}", r.tokens_mean, r.tokens_max),
        format!("{}/{}", r.answered, r.runs),
        if r.answered > 0 {
            format!("{:.1} / {}", r.wasted_mean, r.wasted_max)
        } else {
            "-".into()
        },
        format!("{:.1}", r.run_on_turns_mean),
        format!("{:.1} ({}-grams)", r.repeated_ngrams_mean, r.ngram),
        if r.replay {
            "replay".into()
        } else {
            format!("{:.1} ({:.0})", r.decode_ms / 1e3, r.decode_tokens_per_s)
        },
    ]
}

/// The terminal table.
pub fn table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 9]> = reports.iter().map(cells).collect();
    let mut width = COLUMNS.map(|c| c.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, &w))| {
                let pad = " ".repeat(w - c.chars().count());
                if i == 0 || i == 2 {
                    format!("{c}{pad}")
                } else {
                    format!("{pad}{c}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(&COLUMNS.map(String::from));
    out.push('\n');
    // Several models: each model's rows under its name, in one table so that the columns line up.
    let several = reports.iter().any(|r| r.model != reports[0].model);
    for (i, (r, cells)) in reports.iter().zip(&rows).enumerate() {
        if several && (i == 0 || reports[i - 1].model != r.model) {
            out.push_str(&format!("[{}]\n", r.model));
        }
        out.push_str(&line(cells));
        out.push('\n');
    }
    out
}

/// The scenarios that stage several tokens per step against a buggy rule (`[replay] contrast`): for
/// each, stoplab's answer and the rule's, two lines; empty when there are none.
pub fn contrast_table(reports: &[ScenarioReport]) -> String {
    let rows: Vec<[String; 7]> = reports
        .iter()
        .filter_map(|r| r.contrast.as_ref().map(|c| (r, c)))
        .flat_map(|(r, c)| {
            let line = |who: String, a: &super::rules::Answer, leaked: String| {
                [
                    r.name.clone(),
                    who,
                    a.finish.clone(),
                    a.ids.len().to_string(),
                    a.completion_tokens.to_string(),
                    leaked,
                    format!("{:?}", a.text),
                ]
            };
            [
                line(
                    format!("stoplab (K={})", c.tokens_per_step),
                    &c.stoplab,
                    "-".into(),
                ),
                line(
                    format!("{} ({})", c.rule.name(), c.source),
                    &c.rule_answer,
                    c.leaked.to_string(),
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    const HEAD: [&str; 7] = [
        "scenario", "rule", "finish", "ids", "usage", "leaked", "text",
    ];
    let mut width = HEAD.map(|c| c.chars().count());
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len() - 1;
        cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, &w))| {
                let pad = " ".repeat(w - c.chars().count());
                match i {
                    _ if i == last => c.clone(),
                    0..=2 => format!("{c}{pad}"),
                    _ => format!("{pad}{c}"),
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = String::from(
        "Several tokens per step: stoplab's answer beside the rule that broke (ids: the ids a client gets; \
         usage: completion_tokens; leaked: ids given after the token that ended stoplab's answer)\n",
    );
    out.push_str(&line(&HEAD.map(String::from)));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// The JSON of `stoplab experiment --json`.
pub fn to_json(reports: &[ScenarioReport], opts: &RunOptions, wall_s: f64) -> serde_json::Value {
    serde_json::json!({
        "quick": opts.quick,
        "repetition_override": opts.repetition,
        "wall_s": wall_s,
        "scenarios": reports,
    })
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "\\n")
}

/// The Markdown report: the table, then each scenario with its settings and a sample output.
pub fn markdown(reports: &[ScenarioReport], scenarios: &[Scenario], header: &str) -> String {
    let mut out = String::from("# stoplab experiment\n\n");
    if !header.is_empty() {
        out.push_str(header);
        out.push_str("\n\n");
    }
    out.push_str("Wasted tokens: tokens generated after the answer was complete (`done.contains`), over the runs that wrote the answer.\n\n");
    out.push_str("![wasted tokens per scenario](wasted.svg)\n\n");
    out.push_str(&format!("| {} |\n", COLUMNS.join(" | ")));
    out.push_str(&format!("|{}\n", "---|".repeat(COLUMNS.len())));
    let several = reports.iter().any(|r| r.model != reports[0].model);
    for r in reports {
        let mut c = cells(r).map(|c| md_escape(&c));
        if several {
            c[0] = format!("{} ({})", c[0], md_escape(&r.model));
        }
        out.push_str(&format!("| {} |\n", c.join(" | ")));
    }
    let contrasts = contrast_table(reports);
    if !contrasts.is_empty() {
        out.push_str(&format!("\n```text\n{contrasts}```\n"));
    }
    for r in reports {
        out.push_str(&format!("\n## {}: {}\n\n", r.name, r.title));
        if !r.about.is_empty() {
            out.push_str(&r.about);
            out.push_str("\n\n");
        }
        if let Some(sc) = scenarios.iter().find(|s| s.name == r.name) {
            let p = &sc.params;
            out.push_str(&format!(
                "- file `{}`; format `{}`; stops {:?}; max_tokens {}; temperature {}; logit_bias {:?}; repetition stop {}\n",
                sc.file,
                sc.format.name(),
                p.stops.stops(),
                p.max_tokens,
                p.sampling.temperature,
                p.sampling.logit_bias,
                p.repetition
                    .map_or("off".to_string(), |r| format!("ngram {} count {}", r.ngram, r.count)),
            ));
            out.push_str(&format!(
                "- done when the model has written any of {:?}\n",
                sc.done
            ));
            if !r.end_tokens.is_empty() {
                out.push_str(&format!("- {}\n", r.end_tokens));
            }
        }
        if let Some(first) = r.results.first() {
            let text: String = first.text.chars().take(400).collect();
            let more = if first.text.chars().count() > 400 {
                "…"
            } else {
                ""
            };
            out.push_str(&format!(
                "\nRun 1 (seed {}): {}; {} tokens; answer complete at token {}.\n\n```text\n{}{more}\n```\n",
                first.seed,
                first.finish_detail,
                first.tokens,
                first.answered_at.map_or("-".to_string(), |a| a.to_string()),
                text.replace("```", "`\u{200b}``"),
            ));
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart: mean generated tokens (grey) and mean wasted tokens (red) per scenario.
pub fn svg_chart(reports: &[ScenarioReport]) -> String {
    let (left, bar_w, row_h, top) = (300.0, 420.0, 30.0, 40.0);
    let width = left + bar_w + 120.0;
    let height = top + row_h * reports.len() as f64 + 40.0;
    let max = reports
        .iter()
        .map(|r| r.tokens_mean.max(r.wasted_mean))
        .fold(1.0, f64::max);
    let scale = bar_w / max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>Wasted tokens per scenario</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Tokens per run: generated (grey) and wasted after the answer (red)</text>\n"
    );
    for (i, r) in reports.iter().enumerate() {
        let y = top + row_h * i as f64;
        let gen_w = r.tokens_mean * scale;
        let waste_w = r.wasted_mean * scale;
        out.push_str(&format!(
            "<g>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{left}\" y=\"{}\" width=\"{gen_w:.1}\" height=\"10\" fill=\"#bbbbbb\"/>\n\
             <rect x=\"{left}\" y=\"{}\" width=\"{waste_w:.1}\" height=\"10\" fill=\"#d62728\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{:.1} / {:.1}</text>\n</g>\n",
            left - 8.0,
            y + 14.0,
            xml_escape(&r.name),
            y + 2.0,
            y + 13.0,
            left + gen_w.max(waste_w) + 6.0,
            y + 14.0,
            r.wasted_mean,
            r.tokens_mean,
        ));
    }
    out.push_str(&format!(
        "<text x=\"{left}\" y=\"{}\" fill=\"#555555\">labels: wasted / generated, mean over runs</text>\n</svg>\n",
        height - 12.0
    ));
    out
}

/// The line under the terminal table.
pub fn summary_line(runs: usize, reports: usize, wall_s: f64, quick: bool) -> String {
    format!(
        "{runs} runs of {reports} scenarios in {wall_s:.1} s{}; wasted = tokens generated after the answer was \
         complete",
        if quick { " (quick)" } else { "" }
    )
}

/// The Markdown report's first line: the models (or server) as [`crate::lab::experiment::plan::Ran`]
/// labels them, what ran, how long it took, and the threads: this process's with `parallel` runs decoded
/// together, or (None) a server's.
pub fn header(
    labels: &[String],
    runs: usize,
    reports: usize,
    wall_s: f64,
    quick: bool,
    parallel: Option<usize>,
) -> String {
    let threads = match parallel {
        Some(n) => format!(
            "{}, {n} runs decoded together",
            crate::pipeline::model::threads()
        ),
        None => "the server's".to_string(),
    };
    format!(
        "{} {}; {runs} runs of {reports} scenarios in {wall_s:.1} s wall time{}; threads: {threads}.",
        if labels.len() > 1 { "Models" } else { "Model" },
        labels.join(", "),
        if quick { " (--quick)" } else { "" },
    )
}

/// Writes `report.md`, `wasted.svg` and `report.json` into `dir`.
pub fn write_report(
    dir: &Path,
    reports: &[ScenarioReport],
    scenarios: &[Scenario],
    json: &serde_json::Value,
    header: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("report.md"), markdown(reports, scenarios, header))?;
    std::fs::write(dir.join("wasted.svg"), svg_chart(reports))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(json).expect("JSON values serialise"),
    )?;
    Ok(())
}
