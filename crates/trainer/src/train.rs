//! The training loop: config → stores → lock → resume → steps → checkpoints → validation.
//!
//! [`train`] is a list of named steps: [`Setup::new`] checks the network and data (and that
//! they fit in memory) before anything is allocated, [`resume`] loads the newest loadable
//! checkpoint, [`resumed_stats`] and [`resumed_scores`] cut the stored stats and scores back
//! to it, and [`Loop::run`] trains, checkpoints and validates to `run.train_until`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use dacapo_core::config::{ArchitectureConfig, Backend, DeviceSpec, RunConfig};
use dacapo_core::{
    RunName, TrainingIterationStats, TrainingStats, ValidationMeta, ValidationScores,
};
use dacapo_data::{BatchSampler, Dataset, OpenOptions, Prefetch, SamplerSpec};
use dacapo_models::{Task, TrainStep, UNetConfig, adam_config};
use dacapo_runtime::memory::{self, Pass};
use dacapo_runtime::{
    NoProgress, Progress, Stores, Validate, ValidationReport, backend, unet_config,
};
use dacapo_store::{RunLock, StatsStore, TrainState, Weights, WeightsStore};

use crate::error::TrainerError;
use crate::tensorboard::TensorboardLog;
use crate::writer::StoreWriter;

/// How often queued training stats are handed to the store writer.
const STATS_FLUSH: Duration = Duration::from_secs(1);

/// Options of one training invocation that are not part of the run config.
#[derive(Clone)]
pub struct TrainOptions {
    /// Backend overriding `run.backend`.
    pub backend: Option<Backend>,
    /// Device overriding `run.device`.
    pub device: Option<DeviceSpec>,
    /// Continue an existing run even if its frozen config differs.
    pub force_config: bool,
    /// Set (e.g. by a signal handler) to stop after the current step with a checkpoint.
    pub stop: Arc<AtomicBool>,
    /// Where progress is reported (default: nowhere).
    pub progress: Arc<dyn Progress>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            backend: None,
            device: None,
            force_config: false,
            stop: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(NoProgress),
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

/// Trains `config` to `run.train_until`, resuming from the latest checkpoint.
pub fn train(
    config: &RunConfig,
    stores: &Stores,
    options: &TrainOptions,
    validator: &mut dyn Validate,
) -> Result<TrainSummary, TrainerError> {
    let run = &config.run.name;
    let chosen = backend::for_run(config, options.backend, options.device)?;
    let backend_kind = chosen.backend;
    tracing::info!("training on backend {backend_kind}, device {}", chosen.name);
    let device = chosen.device;
    let _lock = RunLock::acquire(&stores.root, run)?;
    dacapo_runtime::frozen::freeze(config, &stores.root, options.force_config)?;
    let setup = Setup::new(config, backend_kind)?;
    let mut step = setup.train_step(config, &device)?;
    let resumed_from = resume(&*stores.weights, config, options.force_config, &mut step)?;
    let stats = resumed_stats(&*stores.stats, run, resumed_from)?;
    let scores = resumed_scores(&*stores.stats, run, resumed_from, validator.meta())?;
    let tensorboard = if config.logging.tensorboard {
        let dir = config.logging.run_dir(&stores.root, run.as_str());
        let stride = config.logging.stride;
        Some(TensorboardLog::start(&dir, stride, resumed_from, &stats)?)
    } else {
        None
    };
    let writer = StoreWriter::start(
        run.clone(),
        Arc::clone(&stores.weights),
        Arc::clone(&stores.stats),
        stats,
    )?;
    let batches = prefetch_batches(
        setup.sampler,
        setup.task,
        resumed_from..config.run.train_until,
        config.trainer.prefetch,
    );
    let training = Loop {
        run,
        config,
        stores,
        config_hash: config.trajectory_hash(),
        backend: backend_kind,
        device_name: &chosen.name,
        validator,
        scores,
        progress: &*options.progress,
        writer,
        tensorboard,
    };
    options
        .progress
        .training(run.as_str(), resumed_from, config.run.train_until);
    let summary = training.run(&mut step, batches, resumed_from, &options.stop);
    options
        .progress
        .finished(summary.as_ref().map_or(resumed_from, |s| s.last_checkpoint));
    summary
}

/// The network and the training data of a run, checked before anything is allocated.
struct Setup {
    task: Task,
    net: UNetConfig,
    sampler: BatchSampler,
}

impl Setup {
    /// Checks the network's input shape and memory needs, then opens the training data.
    fn new(config: &RunConfig, backend: Backend) -> Result<Self, TrainerError> {
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
        if matches!(backend, Backend::Flex) {
            let batch = config.trainer.batch_size;
            memory::check(
                memory::estimate(&net, &input_shape, batch, Pass::Training),
                &format!("training batches of {batch} × {input_shape:?}"),
            )?;
        }
        // Only the training datasets: the validator opens the validation ones itself.
        if let Some(synthetic) = &config.datasplit.synthetic {
            dacapo_data::ensure_synthetic(synthetic)?;
        }
        let datasets = config
            .datasplit
            .train
            .iter()
            .map(|d| Dataset::open(d, arch.dims, &OpenOptions::default()))
            .collect::<Result<Vec<_>, _>>()?;
        let spec =
            SamplerSpec::from_trainer(&config.trainer, config.run.seed, input_shape, output_shape);
        Ok(Self {
            sampler: BatchSampler::new(datasets, spec)?,
            task,
            net,
        })
    }

    /// The network initialised from `run.seed` on `device`, with its optimizer.
    fn train_step(&self, config: &RunConfig, device: &Device) -> Result<TrainStep, TrainerError> {
        let model = self.net.init(config.run.seed, device)?;
        Ok(TrainStep::new(
            model,
            self.task.clone(),
            &adam_config(config.trainer.weight_decay),
            config.trainer.learning_rate,
        ))
    }
}

/// Loads the newest checkpoint that loads and verifies into `step`; returns its iteration
/// (0 for a new run). A checkpoint trained with another config is refused unless `force`.
fn resume(
    weights: &dyn WeightsStore,
    config: &RunConfig,
    force: bool,
    step: &mut TrainStep,
) -> Result<u64, TrainerError> {
    let run = &config.run.name;
    let Some(w) = latest_loadable(weights, run)? else {
        return Ok(0);
    };
    let n = w.state.iteration;
    let config_hash = config.trajectory_hash();
    if w.state.config_hash != config_hash && !force {
        return Err(TrainerError::Resume {
            run: run.clone(),
            iteration: n,
            reason: format!(
                "it was trained with config hash {} but the config now hashes to {}; pass \
                 --force-config to continue anyway",
                w.state.config_hash, config_hash
            ),
        });
    }
    step.load_tensors(&w.model, &w.optimizer)?;
    tracing::info!("resuming run `{run}` from checkpoint {n}");
    Ok(n)
}

/// The stored training stats of `run`, cut back to the resumed checkpoint.
fn resumed_stats(
    stats: &dyn StatsStore,
    run: &RunName,
    resumed_from: u64,
) -> Result<TrainingStats, TrainerError> {
    let mut stored = stats.retrieve_training_stats(run)?;
    stored.delete_after(resumed_from);
    if !stored.is_empty() && stored.trained_until() < resumed_from {
        // Stats are made durable before each checkpoint commits, so only an outside change
        // gets here; replacing them would lose what is stored.
        return Err(TrainerError::Resume {
            run: run.clone(),
            iteration: resumed_from,
            reason: format!(
                "its training stats end at iteration {}, before the checkpoint; restore the \
                 stats file or delete the run's training stats to continue without them",
                stored.trained_until()
            ),
        });
    }
    Ok(stored)
}

/// The stored validation scores of `run` up to the resumed checkpoint (DESIGN: keep `<= N`),
/// in the validator's metadata.
fn resumed_scores(
    stats: &dyn StatsStore,
    run: &RunName,
    resumed_from: u64,
    meta: ValidationMeta,
) -> Result<ValidationScores, TrainerError> {
    let mut stored = stats.retrieve_validation_iteration_scores(run)?;
    stored.delete_after(resumed_from + 1);
    Ok(dacapo_runtime::validate::scores_for(meta, stored))
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
    Prefetch::start(iterations, depth, prefetch_workers(), move |i| {
        let batch = sampler.batch(i)?;
        let (target, weight) =
            task.targets(batch.labels.view(), batch.mask.as_ref().map(|m| m.view()))?;
        Ok((batch.raw, target, weight))
    })
}

/// Threads that prepare batches ahead of the step: none when the step's thread pool already
/// uses every core (measured on 2 cores: a worker thread then slows the step by ~16 %, more
/// than preparing the batch inline costs), one while a core is free, two on many cores.
fn prefetch_workers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    match cores.saturating_sub(rayon::current_num_threads()) {
        0 => 0,
        1..=3 => 1,
        _ => 2,
    }
}

/// The training loop of one invocation and what it writes through.
struct Loop<'a> {
    run: &'a RunName,
    config: &'a RunConfig,
    stores: &'a Stores,
    config_hash: String,
    backend: Backend,
    device_name: &'a str,
    validator: &'a mut dyn Validate,
    scores: ValidationScores,
    progress: &'a dyn Progress,
    writer: StoreWriter,
    tensorboard: Option<TensorboardLog>,
}

impl Loop<'_> {
    /// Trains from `resumed_from` to `run.train_until` (or until `stop` is set), with a
    /// checkpoint and a validation every `validation_interval` steps.
    fn run(
        mut self,
        step: &mut TrainStep,
        mut batches: Prefetch<Result<Prepared, TrainerError>>,
        resumed_from: u64,
        stop: &AtomicBool,
    ) -> Result<TrainSummary, TrainerError> {
        self.catch_up(resumed_from, step)?;
        let (train_until, interval) = (
            self.config.run.train_until,
            self.config.run.validation_interval,
        );
        let mut summary = TrainSummary {
            resumed_from,
            last_checkpoint: resumed_from,
            stopped: false,
            last_loss: None,
        };
        let mut pending: Vec<TrainingIterationStats> = Vec::new();
        let mut last_flush = Instant::now();
        let mut i = resumed_from;
        while i < train_until {
            if stop.load(Ordering::SeqCst) {
                summary.stopped = true;
                break;
            }
            let Some(prepared) = batches.next_item() else {
                break;
            };
            let record = self.step(step, i, prepared?, &mut pending)?;
            if let Some(tb) = &mut self.tensorboard {
                tb.step(&record, step.learning_rate());
            }
            summary.last_loss = Some(record.loss);
            pending.push(record);
            i += 1;
            let at_checkpoint = i.is_multiple_of(interval) || i == train_until;
            if at_checkpoint || last_flush.elapsed() >= STATS_FLUSH {
                self.writer.stats(std::mem::take(&mut pending))?;
                if let Some(tb) = &mut self.tensorboard {
                    tb.flush();
                }
                last_flush = Instant::now();
            }
            if at_checkpoint {
                self.checkpoint(i, step)?;
                summary.last_checkpoint = i;
                self.validate_and_record(i, step)?;
            }
        }
        self.writer.stats(pending)?;
        if summary.stopped && i > summary.last_checkpoint {
            tracing::info!("stopping: writing checkpoint {i}");
            self.checkpoint(i, step)?;
            self.writer.wait_checkpoint()?;
            summary.last_checkpoint = i;
        }
        self.writer.finish()?;
        // Writes what is queued, syncs and ends the event file.
        drop(self.tensorboard.take());
        Ok(summary)
    }

    /// One optimizer step on a prepared batch; a non-finite loss stops the run after the
    /// stats so far are written.
    fn step(
        &mut self,
        step: &mut TrainStep,
        iteration: u64,
        (raw, target, weight): Prepared,
        pending: &mut Vec<TrainingIterationStats>,
    ) -> Result<TrainingIterationStats, TrainerError> {
        let t0 = Instant::now();
        let loss = match step.step(&raw, &target, &weight) {
            Ok(loss) => loss,
            Err(dacapo_models::ModelError::NonFiniteLoss(loss)) => {
                self.writer.stats(std::mem::take(pending))?;
                self.writer.sync()?;
                return Err(TrainerError::NonFiniteLoss { iteration, loss });
            }
            Err(e) => return Err(e.into()),
        };
        self.progress.step(iteration, loss);
        Ok(TrainingIterationStats {
            iteration,
            loss,
            time: t0.elapsed().as_secs_f64(),
        })
    }

    /// A resumed interval checkpoint that was never validated (killed during validation) is
    /// validated now; checkpoints written on a stop request are off the schedule and are not.
    /// Best records lag the stored scores if the last trainer died between the two.
    fn catch_up(&mut self, resumed_from: u64, step: &TrainStep) -> Result<(), TrainerError> {
        let run = &self.config.run;
        let on_schedule =
            resumed_from.is_multiple_of(run.validation_interval) || resumed_from == run.train_until;
        if resumed_from > 0 && on_schedule && self.scores.validated_until() <= resumed_from {
            self.validate_and_record(resumed_from, step)
        } else if !self.scores.scores().is_empty() {
            self.update_best()?;
            // The restart marker made TensorBoard forget the resumed checkpoint's validation.
            self.log_validation(resumed_from);
            Ok(())
        } else {
            Ok(())
        }
    }

    /// Queues checkpoint `iteration` (model, optimizer and train state) for writing.
    fn checkpoint(&mut self, iteration: u64, step: &TrainStep) -> Result<(), TrainerError> {
        // What was logged up to the checkpoint is on disk before the checkpoint is, so a
        // resumed run's log has no gap.
        if let Some(tb) = &mut self.tensorboard {
            tb.sync();
        }
        let (model, optimizer) = step.to_tensors()?;
        let mut state = TrainState::new(
            iteration,
            &self.config_hash,
            self.backend.name(),
            self.config.run.seed,
        )
        .with_device(self.device_name);
        state.extra.insert(
            "learning_rate".into(),
            serde_json::json!(step.learning_rate()),
        );
        state.extra.insert(
            "dacapo_version".into(),
            serde_json::json!(env!("CARGO_PKG_VERSION")),
        );
        self.writer.checkpoint(
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
    ) -> Result<(), TrainerError> {
        let validated = if self.validator.meta().datasets.is_empty() {
            None
        } else {
            Some(
                self.validator
                    .validate(iteration, step.model(), step.task(), self.progress)
                    .map_err(|source| TrainerError::Validation { iteration, source }),
            )
        };
        // The checkpoint must be committed before best records may point at it, and before a
        // validation failure stops the run.
        self.writer.wait_checkpoint()?;
        if let Some(validated) = validated {
            let iteration_scores = validated?;
            self.scores.delete_after(iteration);
            self.scores.add_iteration_scores(iteration_scores.clone())?;
            self.stores
                .stats
                .store_validation_iteration_scores(self.run, &self.scores)?;
            self.update_best()?;
            self.log_validation(iteration);
            let report = ValidationReport::new(&self.scores, &iteration_scores);
            self.progress.validated(self.run.as_str(), &report);
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
fn latest_loadable(
    store: &dyn WeightsStore,
    run: &RunName,
) -> Result<Option<Weights>, TrainerError> {
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
