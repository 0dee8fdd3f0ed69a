//! `dacapo runs ls|show|rm`: inspect and remove the runs under a store root.
//!
//! Everything is read through the stores a run's frozen config names (local, PostgreSQL,
//! object storage) and the layout of the store root (`dacapo_store::layout`): nothing here
//! walks store directories. The helpers that find runs and their best records are shared with
//! `dacapo plot`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use dacapo_core::{RunConfig, RunName, TrainingStats, ValidationIterationScores, ValidationScores};
use dacapo_store::{
    BestRecord, FileStatsStore, LocalWeightsStore, RunLock, StatsStore, StoreError, WeightsStore,
    layout,
};
use serde::Serialize;

use crate::RootArg;
use crate::submit::{self, SlurmJob};

/// `dacapo runs` subcommands.
#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List the runs under the root: progress, last loss, best scores and status.
    Ls {
        #[command(flatten)]
        root: RootArg,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run: config, checkpoints, best records and its last validation.
    Show {
        /// The run.
        name: String,
        #[command(flatten)]
        root: RootArg,
        /// Print a JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// List the validation snapshots (PNG per checkpoint and dataset) instead.
        #[arg(long)]
        snapshots: bool,
    },
    /// Remove a run: checkpoints, best records, config, training stats and validation scores.
    Rm {
        /// The run.
        name: String,
        /// Keep the checkpoints that best records point to, the best records, the config and
        /// the validation scores; remove the other checkpoints and the training stats.
        #[arg(long)]
        keep_best: bool,
        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
        #[command(flatten)]
        root: RootArg,
    },
}

/// Runs one `dacapo runs` subcommand.
pub fn run(cmd: RunsCommand) -> Result<()> {
    match cmd {
        RunsCommand::Ls { root, json } => ls(&root.resolve(), json),
        RunsCommand::Show {
            name,
            root,
            json,
            snapshots: true,
        } => show_snapshots(&root.resolve(), &name, json),
        RunsCommand::Show {
            name, root, json, ..
        } => show(&root.resolve(), &name, json),
        RunsCommand::Rm {
            name,
            keep_best,
            yes,
            root,
        } => rm(&root.resolve(), &name, keep_best, yes),
    }
}

// ---------------------------------------------------------------------------------------------
// Shared with `plot`.

/// The stores of one root, or of one run whose config names remote stores.
#[derive(Clone)]
pub(crate) struct Stores {
    /// The store root.
    pub root: PathBuf,
    /// Checkpoints and best records.
    pub weights: Arc<dyn WeightsStore>,
    /// Training stats and validation scores.
    pub stats: Arc<dyn StatsStore>,
    /// Remote stores opened so far, by the `[stores]` section naming them, so runs sharing a
    /// database or bucket share one connection.
    opened: Arc<Mutex<HashMap<StoresKey, Stores>>>,
}

/// The `[stores]` fields that select a run's stores: root, stats URL, weights URL.
type StoresKey = (PathBuf, Option<String>, Option<String>);

impl Stores {
    /// The local stores under `root`.
    pub fn open(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            weights: Arc::new(LocalWeightsStore::new(root)),
            stats: Arc::new(FileStatsStore::new(root)),
            opened: Arc::default(),
        }
    }

    /// The stores of a run with frozen config `config`: its PostgreSQL / object stores when
    /// it names them, else these.
    pub fn of_run(&self, config: Option<&RunConfig>) -> Result<Self> {
        match config {
            Some(c) if c.stores.stats.is_some() || c.stores.weights.is_some() => {
                let key = (
                    c.stores.root.clone(),
                    c.stores.stats.clone(),
                    c.stores.weights.clone(),
                );
                let mut opened = self.opened.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(s) = opened.get(&key) {
                    return Ok(s.clone());
                }
                let s = dacapo_runtime::Stores::open(c).with_context(|| {
                    format!("cannot open the stores of run `{}`", c.run.name.as_str())
                })?;
                let s = Self {
                    root: self.root.clone(),
                    weights: s.weights,
                    stats: s.stats,
                    opened: Arc::clone(&self.opened),
                };
                opened.insert(key, s.clone());
                Ok(s)
            }
            _ => Ok(self.clone()),
        }
    }
}

/// The names of the runs under `root`, sorted; empty if `root` does not exist.
pub(crate) fn list_run_names(root: &Path) -> Result<Vec<RunName>> {
    layout::list_runs(root).with_context(|| format!("cannot list the runs in {}", root.display()))
}

/// `name` as a run under `root`; the error lists the runs that exist.
pub(crate) fn require_run(root: &Path, name: &str) -> Result<RunName> {
    let run = RunName::new(name)?;
    if name != layout::STATS_DIR && layout::is_run_dir(&layout::run_dir(root, &run)) {
        return Ok(run);
    }
    let names: Vec<String> = list_run_names(root)?
        .into_iter()
        .map(String::from)
        .collect();
    let known = if names.is_empty() {
        format!("there are no runs under {}", root.display())
    } else {
        format!("runs under {}: {}", root.display(), names.join(", "))
    };
    bail!(
        "no run `{name}` under {} ({known}); list them with `dacapo runs ls --root {}`, or pass \
         the right --root (or DACAPO_ROOT)",
        root.display(),
        root.display()
    )
}

/// The frozen config of a run: its path, its text, and the parsed config (or why not).
pub(crate) struct FrozenConfig {
    /// `<root>/<run>/run.toml`.
    pub path: PathBuf,
    /// The file's text; `None` if the run has no frozen config.
    pub text: Option<String>,
    /// The parsed config.
    pub config: Option<RunConfig>,
    /// Why the file could not be read or parsed.
    pub problem: Option<String>,
}

/// Reads the frozen config of `run`; a missing or bad file is reported, not an error.
pub(crate) fn read_config(root: &Path, run: &RunName) -> FrozenConfig {
    let path = layout::frozen_config_path(root, run);
    let (text, problem) = match layout::read_frozen_config(root, run) {
        Ok(text) => (text, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let (config, problem) = match &text {
        Some(t) => match RunConfig::from_toml(t, &path) {
            Ok(c) => (Some(c), problem),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, problem),
    };
    FrozenConfig {
        path,
        text,
        config,
        problem,
    }
}

/// The stored best records of a run, ordered by dataset, then criterion.
pub(crate) fn best_records(stores: &Stores, run: &RunName) -> Result<Vec<BestRecord>> {
    stores
        .weights
        .best_records(run)
        .with_context(|| format!("cannot read the best records of run `{run}`"))
}

/// Reads the training stats of a run, with context.
pub(crate) fn training_stats(stores: &Stores, name: &RunName) -> Result<TrainingStats> {
    stores
        .stats
        .retrieve_training_stats(name)
        .with_context(|| format!("cannot read the training stats of run `{name}`"))
}

/// Reads the validation scores of a run, with context.
pub(crate) fn validation_scores(stores: &Stores, name: &RunName) -> Result<ValidationScores> {
    stores
        .stats
        .retrieve_validation_iteration_scores(name)
        .with_context(|| format!("cannot read the validation scores of run `{name}`"))
}

/// Writes `text` to stdout; a closed pipe (`dacapo runs ls | head`) is not an error.
pub(crate) fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// A number in a few significant digits, scientific when very large or small.
pub(crate) fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let a = v.abs();
    if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

/// [`fmt_num`] without trailing zeros (also in an exponent's mantissa), for axis ticks.
pub(crate) fn fmt_tick(v: f64) -> String {
    let s = fmt_num(v);
    let (mantissa, exponent) = match s.split_once('e') {
        Some((m, e)) => (m, format!("e{e}")),
        None => (s.as_str(), String::new()),
    };
    if mantissa.contains('.') {
        let trimmed = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{trimmed}{exponent}")
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// ls / show

/// Whether a run is being trained, waits in a queue, is done, or stopped before `train_until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    /// A trainer holds the run lock, or the run's SLURM job runs.
    Running,
    /// The run's SLURM job waits in the queue.
    Queued,
    /// The latest checkpoint reached `train_until`.
    Finished,
    /// Neither.
    Stopped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Queued => "queued",
            Status::Finished => "finished",
            Status::Stopped => "stopped",
        }
    }
}

/// What `runs ls` shows of one run (also its `--json` form).
#[derive(Debug, Serialize)]
struct RunSummary {
    name: String,
    task: Option<String>,
    train_until: Option<u64>,
    trained_until: u64,
    latest_checkpoint: Option<u64>,
    last_loss: Option<f64>,
    best: Vec<BestRecord>,
    status: Status,
    holder: Option<String>,
    /// The run's queued or running SLURM job.
    slurm: Option<SlurmState>,
    problems: Vec<String>,
}

/// A run's SLURM job as `runs ls --json` shows it.
#[derive(Debug, Serialize)]
struct SlurmState {
    job_id: String,
    state: String,
}

impl RunSummary {
    /// The status column: `running`, `queued (slurm 12)`, `running (slurm 12)`, ...
    fn status_text(&self) -> String {
        match &self.slurm {
            Some(j) if matches!(self.status, Status::Running | Status::Queued) => {
                format!("{} (slurm {})", self.status.as_str(), j.job_id)
            }
            _ => self.status.as_str().to_owned(),
        }
    }
}

/// Everything `runs show` prints of one run.
#[derive(Debug, Serialize)]
struct RunDetails {
    #[serde(flatten)]
    summary: RunSummary,
    config_path: PathBuf,
    config: Option<RunConfig>,
    checkpoints: Vec<u64>,
    /// Filled by `show` only: reading each checkpoint's state costs a store read.
    trained_on: Vec<TrainedOn>,
    last_validation: Option<ValidationIterationScores>,
    #[serde(skip)]
    config_text: Option<String>,
    #[serde(skip)]
    criteria: Vec<String>,
}

/// The backend and device a checkpoint was trained on.
#[derive(Debug, Serialize)]
struct TrainedOn {
    iteration: u64,
    backend: String,
    /// Empty for checkpoints written before devices were recorded.
    device: String,
}

/// Where each of `checkpoints` of run `name` was trained, from their train states.
fn trained_on(stores: &Stores, name: &RunName, checkpoints: &[u64]) -> Result<Vec<TrainedOn>> {
    checkpoints
        .iter()
        .map(|&iteration| {
            let state = stores
                .weights
                .retrieve_state(name, iteration)
                .with_context(|| format!("cannot read checkpoint {iteration} of run `{name}`"))?;
            Ok(TrainedOn {
                iteration,
                backend: state.backend,
                device: state.device,
            })
        })
        .collect()
}

/// `flex cpu (2, 4), tch cuda:0 (6)`: consecutive checkpoints on one backend and device
/// grouped.
fn compact_trained_on(trained_on: &[TrainedOn]) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for t in trained_on {
        let place = format!(
            "{} {}",
            t.backend,
            opt(Some(t.device.as_str()).filter(|d| !d.is_empty()))
        );
        match groups.last_mut() {
            Some((last, its)) if *last == place => its.push(t.iteration.to_string()),
            _ => groups.push((place, vec![t.iteration.to_string()])),
        }
    }
    groups
        .iter()
        .map(|(place, its)| format!("{place} ({})", its.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything known of run `name`; `jobs` are the user's SLURM jobs (`None`: no SLURM here).
fn gather(stores: &Stores, name: &RunName, jobs: Option<&[SlurmJob]>) -> RunDetails {
    let mut problems = Vec::new();
    let frozen = read_config(&stores.root, name);
    problems.extend(frozen.problem.clone());
    let stores = &stores.of_run(frozen.config.as_ref()).unwrap_or_else(|e| {
        problems.push(format!("{e:#}"));
        stores.clone()
    });
    let mut note = |r: Result<(), anyhow::Error>| {
        if let Err(e) = r {
            problems.push(format!("{e:#}"));
        }
    };

    let mut stats = TrainingStats::new();
    note(training_stats(stores, name).map(|s| stats = s));
    let mut scores = ValidationScores::default();
    note(validation_scores(stores, name).map(|s| scores = s));
    let mut checkpoints = Vec::new();
    note(
        stores
            .weights
            .iterations(name)
            .map(|c| checkpoints = c)
            .with_context(|| format!("cannot list the checkpoints of run `{name}`")),
    );
    let mut latest = None;
    note(
        stores
            .weights
            .latest_iteration(name)
            .map(|l| latest = l)
            .with_context(|| format!("cannot find the latest checkpoint of run `{name}`")),
    );
    let mut best = Vec::new();
    note(best_records(stores, name).map(|b| best = b));
    let mut holder = None;
    note(
        RunLock::holder(&stores.root, name)
            .map(|h| holder = h)
            .with_context(|| format!("cannot probe the lock of run `{name}`")),
    );

    let train_until = frozen.config.as_ref().map(|c| c.run.train_until);
    let run_dir = std::path::absolute(layout::run_dir(&stores.root, name)).unwrap_or_default();
    let job = jobs.and_then(|jobs| submit::job_of(jobs, name.as_str(), &run_dir));
    let status = if holder.is_some() || job.is_some_and(SlurmJob::is_running) {
        Status::Running
    } else if job.is_some() {
        Status::Queued
    } else if latest.zip(train_until).is_some_and(|(l, t)| l >= t) {
        Status::Finished
    } else {
        Status::Stopped
    };
    RunDetails {
        summary: RunSummary {
            name: name.to_string(),
            task: frozen.config.as_ref().map(|c| c.task.kind().to_owned()),
            train_until,
            trained_until: stats.trained_until(),
            latest_checkpoint: latest,
            last_loss: stats.iteration_stats().last().map(|s| s.loss),
            best,
            status,
            holder,
            slurm: job.map(|j| SlurmState {
                job_id: j.id.clone(),
                state: j.state.clone(),
            }),
            problems,
        },
        config_path: frozen.path,
        config: frozen.config,
        checkpoints,
        trained_on: Vec::new(),
        last_validation: scores.scores().last().cloned(),
        config_text: frozen.text,
        criteria: scores.criteria().into_iter().map(str::to_owned).collect(),
    }
}

/// `dataset: crit value@iteration crit value@iteration; dataset2: ...`.
fn compact_best(best: &[BestRecord]) -> String {
    let mut by_dataset: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for b in best {
        if !by_dataset.contains_key(b.dataset.as_str()) {
            order.push(b.dataset.as_str());
        }
        by_dataset.entry(&b.dataset).or_default().push(format!(
            "{} {}@{}",
            b.criterion,
            fmt_num(b.value),
            b.iteration
        ));
    }
    order
        .iter()
        .map(|d| format!("{d}: {}", by_dataset[d].join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The user's SLURM jobs (one `squeue` call), or `None` without SLURM or without runs.
///
/// A SLURM that does not answer only costs the job states, with a warning.
fn slurm_jobs(names: &[RunName]) -> Option<Vec<SlurmJob>> {
    if names.is_empty() {
        return None;
    }
    // `ls` stays quick when a configured controller is down.
    match submit::squeue_jobs(std::time::Duration::from_secs(3)) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("warning: no SLURM job states: {e:#}");
            None
        }
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn ls(root: &Path, json: bool) -> Result<()> {
    let stores = Stores::open(root);
    let names = list_run_names(root)?;
    let jobs = slurm_jobs(&names);
    let runs: Vec<RunSummary> = names
        .iter()
        .map(|n| gather(&stores, n, jobs.as_deref()).summary)
        .collect();
    if json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&runs)?))?;
        return Ok(());
    }
    if runs.is_empty() {
        let hint = if root.exists() {
            ""
        } else {
            " (the directory does not exist; pass --root or set DACAPO_ROOT)"
        };
        emit(&format!("no runs under {}{hint}\n", root.display()))?;
        return Ok(());
    }
    let mut table = Table::new(&[
        "RUN",
        "TASK",
        "ITERATIONS",
        "CHECKPOINT",
        "LOSS",
        "STATUS",
        "BEST",
    ]);
    table.right_align(&[2, 3, 4]);
    for r in &runs {
        table.row(vec![
            r.name.clone(),
            opt(r.task.as_deref()),
            format!("{}/{}", r.trained_until, opt(r.train_until)),
            opt(r.latest_checkpoint),
            opt(r.last_loss.map(fmt_num)),
            r.status_text(),
            compact_best(&r.best),
        ]);
    }
    emit(&table.render())?;
    for r in &runs {
        for p in &r.problems {
            eprintln!("warning: run `{}`: {p}", r.name);
        }
    }
    Ok(())
}

/// A validation snapshot as `runs show --snapshots --json` prints it.
#[derive(Serialize)]
struct SnapshotRow {
    iteration: u64,
    dataset: String,
    path: PathBuf,
}

/// `runs show NAME --snapshots`: the run's validation snapshots, oldest first.
fn show_snapshots(root: &Path, name: &str, json: bool) -> Result<()> {
    let run = require_run(root, name)?;
    let dir = dacapo_store::layout::run_dir(root, &run).join(dacapo_store::layout::PREDICTIONS_DIR);
    let snapshots = dacapo_validator::snapshot::list_snapshots(root, &run)
        .with_context(|| format!("cannot list the snapshots in {}", dir.display()))?;
    if json {
        let rows: Vec<SnapshotRow> = snapshots
            .into_iter()
            .map(|s| SnapshotRow {
                iteration: s.iteration,
                dataset: s.dataset,
                path: s.path,
            })
            .collect();
        return emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    if snapshots.is_empty() {
        return emit(&format!(
            "no snapshots yet: each validation writes one per dataset to {}/<iteration>/\n",
            dir.display()
        ));
    }
    let mut table = Table::new(&["ITERATION", "DATASET", "FILE"]);
    table.right_align(&[0]);
    for s in snapshots {
        table.row(vec![
            s.iteration.to_string(),
            s.dataset,
            s.path.display().to_string(),
        ]);
    }
    emit(&table.render())
}

fn show(root: &Path, name: &str, json: bool) -> Result<()> {
    let run = require_run(root, name)?;
    let stores = Stores::open(root);
    let jobs = slurm_jobs(std::slice::from_ref(&run));
    let mut d = gather(&stores, &run, jobs.as_deref());
    match stores
        .of_run(d.config.as_ref())
        .and_then(|s| trained_on(&s, &run, &d.checkpoints))
    {
        Ok(t) => d.trained_on = t,
        Err(e) => d.summary.problems.push(format!("{e:#}")),
    }
    if json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&d)?))?;
        return Ok(());
    }
    let out = [
        summary_text(&d),
        best_text(&d.summary.best),
        last_validation_text(&d),
        config_text(&d),
    ]
    .concat();
    emit(&out)?;
    for p in &d.summary.problems {
        eprintln!("warning: {p}");
    }
    Ok(())
}

/// The head of `runs show`: status, progress, last loss and checkpoints.
fn summary_text(d: &RunDetails) -> String {
    let s = &d.summary;
    let status = match &s.holder {
        Some(h) => format!("running ({h})"),
        None => s.status_text(),
    };
    let last_loss = s.last_loss.map_or("-".to_owned(), |l| {
        format!("{} (iteration {})", fmt_num(l), s.trained_until - 1)
    });
    let cps = if d.checkpoints.is_empty() {
        "none".to_owned()
    } else {
        let list: Vec<String> = d.checkpoints.iter().map(u64::to_string).collect();
        format!(
            "{} ({} stored, latest {})",
            list.join(", "),
            d.checkpoints.len(),
            opt(s.latest_checkpoint)
        )
    };
    let trained_on = if d.trained_on.is_empty() {
        String::new()
    } else {
        format!("trained on:  {}\n", compact_trained_on(&d.trained_on))
    };
    format!(
        "run:         {}\nstatus:      {status}\ntask:        {}\n\
         trained:     {} of {} iterations\nlast loss:   {last_loss}\ncheckpoints: {cps}\n\
         {trained_on}",
        s.name,
        opt(s.task.as_deref()),
        s.trained_until,
        opt(s.train_until)
    )
}

/// The best records, one row per dataset and criterion.
fn best_text(best: &[BestRecord]) -> String {
    if best.is_empty() {
        return "\nbest:\n  none yet\n".to_owned();
    }
    let mut t = Table::new(&["DATASET", "CRITERION", "VALUE", "ITERATION", "PARAMETER"]);
    t.right_align(&[2, 3]);
    for b in best {
        let dir = if b.higher_is_better { "max" } else { "min" };
        t.row(vec![
            b.dataset.clone(),
            format!("{} ({dir})", b.criterion),
            fmt_num(b.value),
            b.iteration.to_string(),
            b.parameter.clone(),
        ]);
    }
    format!("\nbest:\n{}", indent(&t.render()))
}

/// Every score of the last validation, one row per dataset and parameter set.
fn last_validation_text(d: &RunDetails) -> String {
    let Some(v) = &d.last_validation else {
        return "\nlast validation: none yet\n".to_owned();
    };
    let mut header = vec!["DATASET".to_owned(), "PARAMETER".to_owned()];
    header.extend(d.criteria.iter().cloned());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(&header);
    t.right_align(&(2..header.len()).collect::<Vec<_>>());
    for (dataset, per_param) in &v.scores {
        for (param, per_crit) in per_param {
            let mut row = vec![dataset.clone(), param.clone()];
            row.extend(
                d.criteria
                    .iter()
                    .map(|c| opt(per_crit.get(c).map(|s| fmt_num(s.0)))),
            );
            t.row(row);
        }
    }
    format!(
        "\nlast validation (iteration {}):\n{}",
        v.iteration,
        indent(&t.render())
    )
}

/// The frozen config, or why there is none.
fn config_text(d: &RunDetails) -> String {
    match &d.config_text {
        None => format!("\nconfig: none ({} is missing)\n", d.config_path.display()),
        Some(text) => format!("\nconfig ({}):\n{}", d.config_path.display(), indent(text)),
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("  {l}\n")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// rm

fn rm(root: &Path, name: &str, keep_best: bool, yes: bool) -> Result<()> {
    let run = RunName::new(name)?;
    let run_dir = layout::run_dir(root, &run);
    // A trainer killed before it froze its config leaves a directory with only its lock file:
    // removable too. Any other directory is not a run and is never removed.
    if name == layout::STATS_DIR || !(layout::is_run_dir(&run_dir) || only_lock_file(&run_dir)) {
        require_run(root, name)?;
    }
    // Held until everything is removed, so no trainer starts on the run meanwhile.
    let lock = lock_for_removal(root, &run)?;
    let stores = Stores::open(root).of_run(read_config(root, &run).config.as_ref())?;
    let contents = RunContents::read(&stores, &run)?;
    if keep_best {
        remove_keeping_best(&stores, &run, &contents, yes)?;
    } else {
        remove_run(&stores, &run, &contents, yes)?;
    }
    drop(lock);
    Ok(())
}

/// The run lock of `run`, or an error naming the trainer that holds it.
fn lock_for_removal(root: &Path, run: &RunName) -> Result<RunLock> {
    match RunLock::acquire(root, run) {
        Ok(l) => Ok(l),
        Err(StoreError::Locked { holder, path }) => bail!(
            "run `{run}` is being trained by {holder} (lock {}); stop that trainer first, then \
             remove the run",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot lock run `{run}`")),
    }
}

/// What a run has stored, for the removal plan.
struct RunContents {
    checkpoints: Vec<u64>,
    best: Vec<BestRecord>,
    validations: usize,
    /// `training stats of N iterations`, or `no training stats`.
    trained: String,
}

impl RunContents {
    fn read(stores: &Stores, run: &RunName) -> Result<Self> {
        let stats = training_stats(stores, run)?;
        Ok(Self {
            checkpoints: stores
                .weights
                .iterations(run)
                .with_context(|| format!("cannot list the checkpoints of run `{run}`"))?,
            best: best_records(stores, run)?,
            validations: validation_scores(stores, run)?.scores().len(),
            trained: if stats.is_empty() {
                "no training stats".to_owned()
            } else {
                format!("training stats of {} iterations", stats.len())
            },
        })
    }
}

/// Removes everything of `run`: checkpoints, best records, stats and scores through its
/// stores (local or remote), then its directory under the root (config, lock, predictions).
fn remove_run(stores: &Stores, run: &RunName, contents: &RunContents, yes: bool) -> Result<()> {
    let run_dir = layout::run_dir(&stores.root, run);
    let plan = format!(
        "Remove run `{run}`: {}, best records, config, {} and {} validations ({} and its \
         stats)",
        list_or_none("checkpoints", &contents.checkpoints),
        contents.trained,
        contents.validations,
        run_dir.display()
    );
    confirm(&plan, yes)?;
    let failed = |what: &str| format!("cannot delete the {what} of run `{run}`");
    stores
        .stats
        .delete_training_stats(run)
        .with_context(|| failed("training stats"))?;
    stores
        .stats
        .delete_validation_scores(run)
        .with_context(|| failed("validation scores"))?;
    for b in &contents.best {
        stores
            .weights
            .remove_best(run, &b.dataset, &b.criterion)
            .with_context(|| failed(&format!("best record {}/{}", b.dataset, b.criterion)))?;
    }
    remove_checkpoints(stores, run, &contents.checkpoints)?;
    // Removed while the lock is held; the lock file goes with the directory.
    remove_dir_if_exists(&run_dir)?;
    println!("removed run `{run}`");
    Ok(())
}

/// Removes the checkpoints of `run` that no best record points to, and its training stats;
/// keeps the best records, their checkpoints, the config and the validation scores.
fn remove_keeping_best(
    stores: &Stores,
    run: &RunName,
    contents: &RunContents,
    yes: bool,
) -> Result<()> {
    if contents.best.is_empty() {
        bail!(
            "run `{run}` has no best records, so --keep-best would keep no checkpoint; remove \
             the whole run with `dacapo runs rm {run}` instead"
        );
    }
    let keep: BTreeSet<u64> = contents.best.iter().map(|b| b.iteration).collect();
    let remove: Vec<u64> = contents
        .checkpoints
        .iter()
        .copied()
        .filter(|n| !keep.contains(n))
        .collect();
    let kept: Vec<String> = keep
        .iter()
        .map(|n| {
            let why: Vec<String> = contents
                .best
                .iter()
                .filter(|b| b.iteration == *n)
                .map(|b| format!("{}/{}", b.dataset, b.criterion))
                .collect();
            format!("{n} (best {})", why.join(", "))
        })
        .collect();
    let plan = format!(
        "Remove {} of run `{run}` and its {}, keeping checkpoints {}, the best records, the \
         config and the validation scores",
        list_or_none("checkpoints", &remove),
        contents.trained,
        kept.join("; ")
    );
    confirm(&plan, yes)?;
    remove_checkpoints(stores, run, &remove)?;
    stores
        .stats
        .delete_training_stats(run)
        .with_context(|| format!("cannot delete the training stats of run `{run}`"))?;
    println!(
        "removed {} and the training stats of run `{run}`; kept checkpoints {}",
        list_or_none("checkpoints", &remove),
        keep.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Removes the checkpoints `iterations` of `run`.
fn remove_checkpoints(stores: &Stores, run: &RunName, iterations: &[u64]) -> Result<()> {
    for n in iterations {
        stores
            .weights
            .remove(run, *n)
            .with_context(|| format!("cannot remove checkpoint {n} of run `{run}`"))?;
    }
    Ok(())
}

/// Whether `dir` is a directory holding nothing but a `.lock` file.
fn only_lock_file(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        let names: Vec<_> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        names.len() == 1 && names[0] == ".lock"
    })
}

fn list_or_none(what: &str, items: &[u64]) -> String {
    if items.is_empty() {
        format!("no {what}")
    } else {
        let list: Vec<String> = items.iter().map(u64::to_string).collect();
        format!("{what} {}", list.join(", "))
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot remove {}; check its permissions and remove it by hand",
                dir.display()
            )
        }),
    }
}

/// Asks on the terminal unless `yes`; refuses when stdin is not a terminal.
fn confirm(plan: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{plan}?\nrefusing without confirmation: stdin is not a terminal; pass --yes");
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{plan}? [y/N] ")?;
    stderr.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        bail!("cancelled; nothing was removed")
    }
}

// ---------------------------------------------------------------------------------------------

/// A plain text table: a header row and aligned columns separated by two spaces.
pub(crate) struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    right: Vec<bool>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            right: vec![false; header.len()],
        }
    }

    /// Right-aligns the given columns (numbers).
    pub fn right_align(&mut self, columns: &[usize]) {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let cell = |row: &[String], i: usize| row.get(i).cloned().unwrap_or_default();
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, w) in widths.iter_mut().enumerate() {
                *w = (*w).max(width(&cell(row, i)));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (&w, &right)) in widths.iter().zip(&self.right).enumerate() {
                let c = cell(row, i);
                let pad = " ".repeat(w - width(&c));
                if i > 0 {
                    line += "  ";
                }
                if right {
                    line += &pad;
                    line += &c;
                } else {
                    line += &c;
                    line += &pad;
                }
            }
            out += line.trim_end();
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(fmt_num(0.912345), "0.9123");
        assert_eq!(fmt_num(12.3456), "12.35");
        assert_eq!(fmt_num(0.00123456), "0.001235");
        assert_eq!(fmt_num(1234.4), "1234");
        assert_eq!(fmt_num(1.5e-5), "1.500e-5");
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(f64::NAN), "nan");
        assert_eq!(fmt_num(f64::NEG_INFINITY), "-inf");
        assert_eq!(fmt_tick(0.01), "0.01");
        assert_eq!(fmt_tick(120.0), "120");
        assert_eq!(fmt_tick(1.5e-5), "1.5e-5");
        assert_eq!(fmt_tick(5e-4), "5e-4");
        assert_eq!(fmt_tick(-2.5e7), "-2.5e7");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "NUM", "C"]);
        t.right_align(&[1]);
        t.row(vec!["long-name".into(), "5".into(), "x".into()]);
        t.row(vec!["b".into(), "1234".into()]);
        assert_eq!(
            t.render(),
            "A           NUM  C\nlong-name     5  x\nb          1234\n"
        );
    }

    #[test]
    fn best_is_grouped_by_dataset() {
        let rec = |d: &str, c: &str, v: f64, i: u64| BestRecord {
            iteration: i,
            dataset: d.into(),
            criterion: c.into(),
            parameter: "p".into(),
            value: v,
            higher_is_better: true,
        };
        let best = [
            rec("val0", "dice", 0.9, 400),
            rec("val0", "voi", 0.51, 300),
            rec("val1", "dice", 0.8, 200),
        ];
        assert_eq!(
            compact_best(&best),
            "val0: dice 0.9000@400 voi 0.5100@300; val1: dice 0.8000@200"
        );
    }
}
