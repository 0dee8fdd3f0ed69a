//! The training loop: config → stores → lock → resume → steps → checkpoints → validation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dacapo_core::config::{ArchitectureConfig, Backend, RunConfig};
use dacapo_core::{TrainingIterationStats, ValidationScores};
use dacapo_data::{BatchSampler, Dataset, OpenOptions, Prefetch, SamplerSpec};
use dacapo_models::{Task, TrainStep, adam_config};
use dacapo_runtime::{Stores, Validate, backend, unet_config};
use dacapo_store::{RunLock, TrainState, Weights, WeightsStore};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::TrainerError;
use crate::tensorboard::TensorboardLog;
use crate::writer::StoreWriter;

/// Name of the frozen config file in a run's directory.
pub const FROZEN_CONFIG: &str = "run.toml";

/// How often queued training stats are handed to the store writer.
const STATS_FLUSH: Duration = Duration::from_secs(1);

/// Options of one training invocation that are not part of the run config.
#[derive(Clone)]
pub struct TrainOptions {
    /// Backend overriding `run.backend`.
    pub backend: Option<Backend>,
    /// Continue an existing run even if its frozen config differs.
    pub force_config: bool,
    /// Set (e.g. by a signal handler) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Show progress bars on a terminal.
    pub progress: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            backend: None,
            force_config: false,
            stop: Arc::new(AtomicBool::new(false)),
            progress: true,
        }
    }
}

/// What a training invocation did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Iteration training started from (the resumed checkpoint, or 0).
    pub resumed_from: u64,
    /// Iteration of the last committed checkpoint.
    pub last_checkpoint: u64,
    /// Whether training stopped on request before `train_until`.
    pub stopped: bool,
    /// Loss of the last step trained in this invocation.
    pub last_loss: Option<f64>,
}

/// Path of the frozen config of `run` under `root`.
pub fn frozen_config_path(root: &Path, run: &str) -> PathBuf {
    root.join(run).join(FROZEN_CONFIG)
}

/// Trains `config` to `run.train_until`, resuming from the latest checkpoint.
pub fn train(
    config: &RunConfig,
    stores: &Stores,
    options: &TrainOptions,
    validator: &mut dyn Validate,
) -> Result<TrainSummary, TrainerError> {
    let run = config.run.name.as_str().to_owned();
    let backend_kind = options.backend.unwrap_or(config.run.backend);
    backend::set_cpu_threads(config.run.threads);
    let device = backend::device(backend_kind)?;

    let _lock = RunLock::acquire(&stores.root, &run)?;
    freeze_config(config, &stores.root, options.force_config)?;
    let config_hash = config.trajectory_hash();

    let ArchitectureConfig::Unet(arch) = &config.architecture;
    let task = Task::new(&config.task, arch.dims)?;
    let net = unet_config(config, &task);
    let input_shape = net.valid_input_shape(&arch.input_shape)?;
    if input_shape != arch.input_shape {
        tracing::warn!(
            "architecture.input_shape {:?} is not valid for this network; using {:?}",
            arch.input_shape,
            input_shape
        );
    }
    let output_shape = net.output_shape(&input_shape)?;
    // Only the training datasets: the validator opens the validation ones itself.
    if let Some(synthetic) = &config.datasplit.synthetic {
        dacapo_data::ensure_synthetic(synthetic)?;
    }
    let train_datasets = config
        .datasplit
        .train
        .iter()
        .map(|d| Dataset::open(d, arch.dims, &OpenOptions::default()))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = SamplerSpec::from_trainer(
        &config.trainer,
        config.run.seed,
        input_shape.clone(),
        output_shape.clone(),
    );
    let sampler = BatchSampler::new(train_datasets, spec)?;

    let model = net.init(config.run.seed, &device)?;
    let mut step = TrainStep::new(
        model,
        task.clone(),
        &adam_config(config.trainer.weight_decay),
        config.trainer.learning_rate,
    );

    // Resume from the newest checkpoint that loads and verifies.
    let resumed_from = match latest_loadable(&*stores.weights, &run)? {
        Some(w) => {
            let n = w.state.iteration;
            if w.state.config_hash != config_hash && !options.force_config {
                return Err(TrainerError::Resume {
                    run,
                    iteration: n,
                    reason: format!(
                        "it was trained with config hash {} but the config now hashes to {}; \
                         pass --force-config to continue anyway",
                        w.state.config_hash, config_hash
                    ),
                });
            }
            step.load_tensors(&w.model, &w.optimizer)?;
            tracing::info!("resuming run `{run}` from checkpoint {n}");
            n
        }
        None => 0,
    };
    let mut stats = stores.stats.retrieve_training_stats(&run)?;
    stats.delete_after(resumed_from);
    if !stats.is_empty() && stats.trained_until() < resumed_from {
        // Stats are made durable before each checkpoint commits, so only an outside change
        // gets here; replacing them would lose what is stored.
        return Err(TrainerError::Resume {
            run,
            iteration: resumed_from,
            reason: format!(
                "its training stats end at iteration {}, before the checkpoint; restore the \
                 stats file or delete the run's training stats to continue without them",
                stats.trained_until()
            ),
        });
    }
    let mut scores = stores.stats.retrieve_validation_iteration_scores(&run)?;
    // Validations of checkpoints up to the resumed one stay (DESIGN: keep `<= N`).
    scores.delete_after(resumed_from + 1);
    let meta = validator.meta();
    if scores.meta != meta {
        let kept = scores.scores().to_vec();
        scores = ValidationScores::new(meta);
        for s in kept {
            // Scores of an older validation setup are kept only if they still fit.
            if let Err(e) = scores.add_iteration_scores(s) {
                tracing::warn!("dropping stored validation scores that no longer fit: {e}");
            }
        }
    }

    let multi = MultiProgress::with_draw_target(if options.progress {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let bar = multi.add(ProgressBar::new(config.run.train_until));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} it  {msg}  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(run.clone());
    bar.set_position(resumed_from);

    let tensorboard = if config.logging.tensorboard {
        let dir = config.logging.run_dir(&stores.root, &run);
        let stride = config.logging.stride;
        Some(TensorboardLog::start(&dir, stride, resumed_from, &stats)?)
    } else {
        None
    };
    let mut writer = StoreWriter::start(
        run.clone(),
        Arc::clone(&stores.weights),
        Arc::clone(&stores.stats),
        stats,
    )?;
    let mut ctx = Ctx {
        run: &run,
        config,
        stores,
        config_hash: &config_hash,
        backend: backend_kind,
        validator,
        scores,
        multi: &multi,
        tensorboard,
    };

    // A resumed interval checkpoint that was never validated (killed during validation) is
    // validated now; checkpoints written on a stop request are off the schedule and are not.
    let on_schedule = resumed_from % config.run.validation_interval == 0
        || resumed_from == config.run.train_until;
    if resumed_from > 0 && on_schedule && ctx.scores.validated_until() <= resumed_from {
        ctx.validate_and_record(resumed_from, &step, &mut writer)?;
    } else if !ctx.scores.scores().is_empty() {
        // Best records lag the stored scores if the last trainer died between the two.
        ctx.update_best()?;
        // The restart marker made TensorBoard forget the resumed checkpoint's validation.
        ctx.log_validation(resumed_from);
    }

    let mut last_checkpoint = resumed_from;
    let mut last_loss = None;
    let mut pending: Vec<TrainingIterationStats> = Vec::new();
    let mut last_flush = Instant::now();
    let mut stopped = false;
    let mut i = resumed_from;
    let mut batches = prefetch_batches(
        sampler,
        task.clone(),
        resumed_from..config.run.train_until,
        config.trainer.prefetch,
    );
    while i < config.run.train_until {
        if options.stop.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        let t0 = Instant::now();
        let Some(prepared) = batches.next_item() else {
            break;
        };
        let (raw, target, weight) = prepared?;
        let loss = match step.step(&raw, &target, &weight) {
            Ok(loss) => loss,
            Err(dacapo_models::ModelError::NonFiniteLoss(loss)) => {
                writer.stats(std::mem::take(&mut pending))?;
                writer.finish()?;
                return Err(TrainerError::NonFiniteLoss { iteration: i, loss });
            }
            Err(e) => return Err(e.into()),
        };
        let record = TrainingIterationStats {
            iteration: i,
            loss,
            time: t0.elapsed().as_secs_f64(),
        };
        if let Some(tb) = &mut ctx.tensorboard {
            tb.step(&record, step.learning_rate());
        }
        pending.push(record);
        last_loss = Some(loss);
        i += 1;
        bar.set_position(i);
        bar.set_message(format!("loss {loss:.4e}"));
        let at_checkpoint = i % config.run.validation_interval == 0 || i == config.run.train_until;
        if at_checkpoint || last_flush.elapsed() >= STATS_FLUSH {
            writer.stats(std::mem::take(&mut pending))?;
            if let Some(tb) = &mut ctx.tensorboard {
                tb.flush();
            }
            last_flush = Instant::now();
        }
        if at_checkpoint {
            ctx.checkpoint(i, &step, &mut writer)?;
            last_checkpoint = i;
            ctx.validate_and_record(i, &step, &mut writer)?;
        }
    }
    writer.stats(std::mem::take(&mut pending))?;
    if stopped && i > last_checkpoint {
        tracing::info!("stopping: writing checkpoint {i}");
        ctx.checkpoint(i, &step, &mut writer)?;
        writer.wait_checkpoint()?;
        last_checkpoint = i;
    }
    writer.finish()?;
    // Writes what is queued, syncs and ends the event file.
    drop(ctx.tensorboard.take());
    bar.finish_and_clear();
    Ok(TrainSummary {
        resumed_from,
        last_checkpoint,
        stopped,
        last_loss,
    })
}

/// A training batch ready for the step: raw input, target and loss weight.
type Prepared = (
    ndarray::ArrayD<f32>,
    ndarray::ArrayD<f32>,
    ndarray::ArrayD<f32>,
);

/// Samples, augments and computes the targets of the batches of `iterations` on worker
/// threads, `depth` ahead of the step (each is a pure function of its iteration).
fn prefetch_batches(
    sampler: BatchSampler,
    task: Task,
    iterations: std::ops::Range<u64>,
    depth: usize,
) -> Prefetch<Result<Prepared, TrainerError>> {
    // One worker keeps up with the step for typical batches and leaves the cores to it;
    // machines with many cores get a second one.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = if cores > 4 { 2 } else { 1 };
    Prefetch::start(iterations, depth, workers, move |i| {
        let batch = sampler.batch(i)?;
        let (target, weight) =
            task.targets(batch.labels.view(), batch.mask.as_ref().map(|m| m.view()))?;
        Ok((batch.raw, target, weight))
    })
}

struct Ctx<'a> {
    run: &'a str,
    config: &'a RunConfig,
    stores: &'a Stores,
    config_hash: &'a str,
    backend: Backend,
    validator: &'a mut dyn Validate,
    scores: ValidationScores,
    multi: &'a MultiProgress,
    tensorboard: Option<TensorboardLog>,
}

impl Ctx<'_> {
    fn checkpoint(
        &mut self,
        iteration: u64,
        step: &TrainStep,
        writer: &mut StoreWriter,
    ) -> Result<(), TrainerError> {
        // What was logged up to the checkpoint is on disk before the checkpoint is, so a
        // resumed run's log has no gap.
        if let Some(tb) = &mut self.tensorboard {
            tb.sync();
        }
        let (model, optimizer) = step.to_tensors()?;
        let mut state = TrainState::new(
            iteration,
            self.config_hash,
            self.backend.name(),
            self.config.run.seed,
        );
        state.extra.insert(
            "learning_rate".into(),
            serde_json::json!(step.learning_rate()),
        );
        state.extra.insert(
            "dacapo_version".into(),
            serde_json::json!(env!("CARGO_PKG_VERSION")),
        );
        writer.checkpoint(
            iteration,
            Weights {
                model,
                optimizer,
                state,
            },
        )
    }

    /// Validates checkpoint `iteration` (already queued or committed), then, once it is
    /// committed, stores the scores, updates best records and applies retention.
    fn validate_and_record(
        &mut self,
        iteration: u64,
        step: &TrainStep,
        writer: &mut StoreWriter,
    ) -> Result<(), TrainerError> {
        let has_validation = !self.validator.meta().datasets.is_empty();
        let validated = if has_validation {
            Some(
                self.validator
                    .validate(iteration, step.model(), step.task(), self.multi)
                    .map_err(|e| TrainerError::Validation {
                        iteration,
                        message: e.to_string(),
                    }),
            )
        } else {
            None
        };
        // The checkpoint must be committed before best records may point at it, and before a
        // validation failure stops the run.
        writer.wait_checkpoint()?;
        if let Some(validated) = validated {
            let iteration_scores = validated?;
            self.scores.delete_after(iteration);
            self.scores.add_iteration_scores(iteration_scores)?;
            self.stores
                .stats
                .store_validation_iteration_scores(self.run, &self.scores)?;
            self.update_best()?;
            self.log_validation(iteration);
        }
        let removed = self
            .stores
            .weights
            .apply_retention(self.run, self.config.stores.keep_last)?;
        if !removed.is_empty() {
            tracing::debug!("retention removed checkpoints {removed:?}");
            self.validator.removed(&removed);
        }
        Ok(())
    }

    /// Queues the stored scores and the snapshots of the validation of `iteration` for
    /// TensorBoard (nothing if it has none).
    fn log_validation(&mut self, iteration: u64) {
        if let Some(tb) = &mut self.tensorboard {
            tb.validation(&self.scores, iteration);
            tb.snapshots(iteration, self.validator.snapshots(iteration));
        }
    }

    fn update_best(&mut self) -> Result<(), TrainerError> {
        dacapo_runtime::update_best_records(&*self.stores.weights, self.run, &self.scores)?;
        Ok(())
    }
}

/// The newest checkpoint of `run` that loads with every checksum verified.
///
/// `latest_iteration` checks checkpoints cheaply; a checkpoint whose tensor data was damaged
/// after its commit only fails the full check on load, and resuming then falls back to the
/// previous one instead of stopping.
fn latest_loadable(store: &dyn WeightsStore, run: &str) -> Result<Option<Weights>, TrainerError> {
    let Some(latest) = store.latest_iteration(run)? else {
        return Ok(None);
    };
    let mut candidates = store.iterations(run)?;
    candidates.retain(|&i| i <= latest);
    for &iteration in candidates.iter().rev() {
        match store.retrieve_weights(run, iteration) {
            Ok(w) => return Ok(Some(w)),
            Err(e @ dacapo_store::StoreError::Corrupt { .. }) => {
                tracing::warn!("skipping checkpoint {iteration} of run `{run}`: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// Writes the frozen config of a new run, or checks an existing run's against `config`.
fn freeze_config(config: &RunConfig, root: &Path, force: bool) -> Result<(), TrainerError> {
    let run = config.run.name.as_str();
    let path = frozen_config_path(root, run);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let frozen = RunConfig::from_toml(&text, &path)?;
        if frozen.trajectory_hash() != config.trajectory_hash() {
            if !force {
                return Err(TrainerError::ConfigChanged {
                    run: run.to_owned(),
                    frozen: path,
                    differences: differences(&frozen, config),
                });
            }
            tracing::warn!(
                "run `{run}`: continuing with a changed config (--force-config): {}",
                differences(&frozen, config)
            );
        }
        if frozen == *config {
            return Ok(());
        }
    }
    let dir = root.join(run);
    std::fs::create_dir_all(&dir).map_err(|source| TrainerError::Io {
        path: dir.clone(),
        source,
    })?;
    let tmp = dir.join(format!(".{FROZEN_CONFIG}.tmp"));
    let io = |source| TrainerError::Io {
        path: path.clone(),
        source,
    };
    std::fs::write(&tmp, config.to_toml()).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(())
}

/// Dotted keys whose values differ between two configs.
fn differences(a: &RunConfig, b: &RunConfig) -> String {
    fn walk(prefix: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
        match (a, b) {
            (toml::Value::Table(x), toml::Value::Table(y)) => {
                let keys: std::collections::BTreeSet<_> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match (x.get(k), y.get(k)) {
                        (Some(va), Some(vb)) => walk(&p, va, vb, out),
                        (va, vb) => out.push(format!(
                            "{p}: {} -> {}",
                            va.map_or("(unset)".into(), ToString::to_string),
                            vb.map_or("(unset)".into(), ToString::to_string)
                        )),
                    }
                }
            }
            _ if a != b => out.push(format!("{prefix}: {a} -> {b}")),
            _ => {}
        }
    }
    let (Ok(a), Ok(b)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return "(cannot compare)".into();
    };
    let mut out = Vec::new();
    walk("", &a, &b, &mut out);
    out.join("; ")
}
