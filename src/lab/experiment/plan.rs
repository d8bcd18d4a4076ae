//! Which scenarios run ([`choose`]) on which model ([`Plan`]), and running a plan: on local models, one after
//! another, each model's runs decoded together ([`Plan::run_local`]), or on a server ([`run_remote`]).

use std::path::PathBuf;

use crate::client::Client;
use crate::fetch::Manifest;
use crate::lab::experiment::remote::run_scenario_remote;
use crate::lab::experiment::run::{RunOptions, ScenarioReport, run_scenarios};
use crate::lab::experiment::scenario::{Scenario, ScenarioError};
use crate::lab::experiment::shipped;
use crate::{Error, LoadOptions, LoadedModel};

/// Why no scenarios could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    /// A scenario file is wrong.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A name matches no scenario; `names` are the scenarios there are.
    #[error("no scenario named {missing:?}; there are {}", names.join(", "))]
    Unknown { missing: String, names: Vec<String> },
}

/// The scenarios in `files` (none: the shipped ones), only those named in `only` if it names any.
pub fn choose(files: &[PathBuf], only: &[String]) -> Result<Vec<Scenario>, ChooseError> {
    let mut scenarios = if files.is_empty() {
        shipped()?
    } else {
        files
            .iter()
            .map(|p| Scenario::load(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(missing) = only
        .iter()
        .find(|n| !scenarios.iter().any(|s| &s.name == *n))
    {
        return Err(ChooseError::Unknown {
            missing: missing.clone(),
            names: scenarios.iter().map(|s| s.name.clone()).collect(),
        });
    }
    if !only.is_empty() {
        scenarios.retain(|s| only.contains(&s.name));
    }
    Ok(scenarios)
}

/// Scenarios to run on one model: `model` as named, None for the default model.
pub struct Group {
    pub model: Option<String>,
    pub scenarios: Vec<Scenario>,
}

/// The groups, in the order they run.
pub struct Plan {
    pub groups: Vec<Group>,
}

/// What a running plan reports, for a progress display.
pub enum Progress {
    /// What runs now (a model and how many runs at once, or a scenario).
    Now(String),
    /// A run has finished.
    Run,
}

/// What a plan produced: a report per scenario, and which models (or server) ran them.
pub struct Ran {
    pub reports: Vec<ScenarioReport>,
    pub labels: Vec<String>,
}

/// Why a plan stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// A model could not be loaded.
    #[error(transparent)]
    Load(Error),
    /// A scenario does not fit its model (a token id beyond the vocabulary).
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A run failed; `file` is its scenario's.
    #[error("{file}: {error}")]
    Run { file: String, error: Error },
}

impl Plan {
    /// The seed's scenarios (those written for no model) go to every model in `models` that has none of its
    /// own. With no `models`: the default run (`explicit` false) is the seed's scenarios on the default model;
    /// named scenarios (`--only`, `--scenario`) each run on the model they were written for.
    pub fn new(scenarios: Vec<Scenario>, models: &[String], explicit: bool) -> Self {
        let default = Manifest::builtin().default;
        let is_default = |m: &Option<String>| m.as_deref().is_none_or(|m| m == default);
        if models.is_empty() && !explicit {
            let mine = scenarios
                .into_iter()
                .filter(|s| is_default(&s.model))
                .collect();
            return Self::one(None, mine);
        }
        if models.is_empty() {
            let mut groups: Vec<Group> = Vec::new();
            for s in scenarios {
                let key = s.model.clone().filter(|m| *m != default);
                match groups.iter_mut().find(|g| g.model == key) {
                    Some(g) => g.scenarios.push(s),
                    None => groups.push(Group {
                        model: key,
                        scenarios: vec![s],
                    }),
                }
            }
            return Self { groups };
        }
        let groups = models
            .iter()
            .map(|m| {
                let written: Vec<Scenario> = scenarios
                    .iter()
                    .filter(|s| {
                        s.model.as_deref() == Some(m.as_str())
                            || (m == &default && s.model.is_none())
                    })
                    .cloned()
                    .collect();
                let list = if written.is_empty() {
                    scenarios
                        .iter()
                        .filter(|s| s.model.is_none())
                        .cloned()
                        .collect()
                } else {
                    written
                };
                Group {
                    model: Some(m.clone()),
                    scenarios: list,
                }
            })
            .collect();
        Self { groups }
    }

    /// Every scenario on one model (a server runs what it is sent).
    pub fn one(model: Option<String>, scenarios: Vec<Scenario>) -> Self {
        Self {
            groups: vec![Group { model, scenarios }],
        }
    }

    /// Runs in all.
    pub fn total_runs(&self, opts: &RunOptions) -> usize {
        self.groups
            .iter()
            .flat_map(|g| &g.scenarios)
            .map(|s| opts.runs_of(s))
            .sum()
    }

    /// One line per scenario: name, runs, title, file and model.
    pub fn list(&self, opts: &RunOptions) -> Vec<String> {
        let mut lines = Vec::new();
        for g in &self.groups {
            let model = g.model.as_deref().unwrap_or("the default model");
            for s in &g.scenarios {
                lines.push(format!(
                    "{:<40} {:>2} runs  {}  ({}; {model})",
                    s.name,
                    opts.runs_of(s),
                    s.title,
                    s.file
                ));
            }
        }
        lines
    }

    /// Loads each group's model in turn (`load` gives the tokenizer and adapter; only the tokenizer when
    /// every scenario of the group is a replay) and decodes up to `parallel` runs together.
    pub fn run_local(
        &self,
        load: &LoadOptions,
        opts: &RunOptions,
        parallel: usize,
        progress: &dyn Fn(Progress),
    ) -> Result<Ran, PlanError> {
        let mut ran = Ran {
            reports: Vec::new(),
            labels: Vec::new(),
        };
        for g in self.groups.iter().filter(|g| !g.scenarios.is_empty()) {
            let mut engine = LoadedModel::load(&LoadOptions {
                model: g.model.clone(),
                tokenizer_only: g.scenarios.iter().all(|s| s.replay.is_some()),
                ..load.clone()
            })
            .map_err(PlanError::Load)?;
            for s in &g.scenarios {
                s.check(engine.vocab.len())?;
            }
            let name = g
                .model
                .clone()
                .unwrap_or_else(|| Manifest::builtin().default);
            ran.labels
                .push(format!("`{name}` ({})", engine.path.display()));
            progress(Progress::Now(format!("{name}: {parallel} at once")));
            let results = run_scenarios(&mut engine, &g.scenarios, opts, parallel, &mut |_, _| {
                progress(Progress::Run)
            });
            for (s, report) in g.scenarios.iter().zip(results) {
                let mut report = report.map_err(|error| PlanError::Run {
                    file: s.file.clone(),
                    error,
                })?;
                report.model = name.clone();
                ran.reports.push(report);
            }
        }
        Ok(ran)
    }
}

/// Runs `scenarios` on the server behind `client`, `concurrency` runs at a time; `model` is the requests'
/// `model` field, if any.
pub fn run_remote(
    client: &Client,
    model: Option<&str>,
    scenarios: &[Scenario],
    opts: &RunOptions,
    concurrency: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Ran, PlanError> {
    let mut reports = Vec::new();
    for s in scenarios {
        progress(Progress::Now(s.name.clone()));
        let mut report =
            run_scenario_remote(client, s, opts, concurrency, &|_| progress(Progress::Run))
                .map_err(|error| PlanError::Run {
                    file: s.file.clone(),
                    error,
                })?;
        report.model = model.unwrap_or_default().to_string();
        reports.push(report);
    }
    Ok(Ran {
        reports,
        labels: vec![format!(
            "{} at {}",
            model.unwrap_or("the served model"),
            client.base()
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(g: &Group) -> Vec<&str> {
        g.scenarios.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn each_model_gets_its_own_scenarios_or_the_seeds() {
        let all = shipped().unwrap();
        let seeds = all.iter().filter(|s| s.model.is_none()).count();
        let default = Plan::new(all.clone(), &[], false);
        assert_eq!(default.groups.len(), 1);
        assert_eq!(default.groups[0].model, None);
        assert_eq!(default.groups[0].scenarios.len(), seeds);

        let qwen = "qwen2.5-coder-0.5b-instruct".to_string();
        let plan = Plan::new(all.clone(), &[qwen.clone(), "my.gguf".into()], false);
        assert_eq!(plan.groups[0].model.as_ref(), Some(&qwen));
        let own = names(&plan.groups[0]);
        assert!(
            own.iter()
                .all(|n| n.starts_with("qwen-") || n.starts_with("reasoning-"))
                && own.iter().any(|n| n.starts_with("qwen-")),
            "{own:?}"
        );
        assert_eq!(
            plan.groups[1].scenarios.len(),
            seeds,
            "no scenarios of its own"
        );

        // Named scenarios, no --model: each on the model it was written for, the seed's on the default.
        let by_model = Plan::new(all.clone(), &[], true);
        assert_eq!(by_model.groups[0].model, None);
        let every_run: usize = all.iter().map(|s| s.runs).sum();
        assert_eq!(by_model.total_runs(&RunOptions::default()), every_run);
        assert!(by_model.groups.iter().skip(1).all(|g| g.model.is_some()));
    }

    #[test]
    fn an_unknown_name_lists_the_scenarios_there_are() {
        let err = choose(&[], &["nope".into()]).unwrap_err();
        assert!(
            matches!(&err, ChooseError::Unknown { missing, names } if missing == "nope" && names.len() > 1)
        );
        let one = choose(&[], &["4-chat-end-token".into()]).unwrap();
        assert_eq!(one.len(), 1);
    }
}
