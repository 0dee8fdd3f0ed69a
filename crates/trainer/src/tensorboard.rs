//! TensorBoard event files of a training run (`[logging]`), written off the training thread.
//!
//! Tags: `train/loss`, `train/learning_rate` and `train/iterations_per_second` every
//! `logging.stride` steps (at steps `i` with `i % stride == 0`; iterations/s over the last
//! `stride` steps' stored times); per validation of checkpoint N, at step N,
//! `validation/<dataset>/<criterion>` (the best parameter set's value) and
//! `validation/<dataset>/<criterion>/<parameter>`, and a snapshot image per dataset under
//! `snapshot/<dataset>`.
//!
//! Each training process writes a new file that starts with a `SessionLog` START at the step
//! it resumes from, so TensorBoard drops what an interrupted process had logged past its last
//! checkpoint; the validation of that checkpoint is then logged again. Files are synced at
//! every checkpoint. A failed write is reported once and ends the logging, not the training.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use dacapo_core::{BestDim, TrainingIterationStats, TrainingStats, ValidationScores};
use dacapo_tensorboard::{EventWriter, summary, wall_time_now};

use crate::error::TrainerError;

/// Tag of the training loss.
pub const LOSS: &str = "train/loss";
/// Tag of the learning rate.
pub const LEARNING_RATE: &str = "train/learning_rate";
/// Tag of the training speed.
pub const ITERATIONS_PER_SECOND: &str = "train/iterations_per_second";

/// Tag of the best parameter set's value of a criterion.
pub fn best_tag(dataset: &str, criterion: &str) -> String {
    format!("validation/{dataset}/{criterion}")
}

/// Tag of one parameter set's value of a criterion.
pub fn parameter_tag(dataset: &str, criterion: &str, parameter: &str) -> String {
    format!("validation/{dataset}/{criterion}/{parameter}")
}

/// Tag of a validation dataset's snapshots.
pub fn snapshot_tag(dataset: &str) -> String {
    format!("snapshot/{dataset}")
}

/// Scalar values of one step.
type Scalars = (u64, f64, Vec<(String, f32)>);

enum Msg {
    Scalars(Vec<Scalars>),
    Image {
        step: u64,
        wall_time: f64,
        tag: String,
        path: PathBuf,
    },
    Sync(SyncSender<()>),
}

/// The training thread's handle on the run's event file.
pub struct TensorboardLog {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    stride: u64,
    /// Times of the last `stride` steps, for iterations/s.
    times: VecDeque<f64>,
    pending: Vec<Scalars>,
}

impl TensorboardLog {
    /// Creates a new event file in `dir` for a process resuming at step `resumed_from` with
    /// the stored `stats` (trimmed to it), and starts its writer thread.
    pub fn start(
        dir: &Path,
        stride: u64,
        resumed_from: u64,
        stats: &TrainingStats,
    ) -> Result<Self, TrainerError> {
        let host = dacapo_store::lock::hostname();
        let logging = |source| TrainerError::Logging {
            dir: dir.to_owned(),
            source,
        };
        let mut writer = EventWriter::create(dir, &host).map_err(logging)?;
        let checkpoint = format!("checkpoint {resumed_from}");
        writer
            .session_start(step_i64(resumed_from), wall_time_now(), &checkpoint)
            .and_then(|()| writer.flush())
            .map_err(logging)?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("dacapo-tensorboard".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|source| TrainerError::Thread {
                name: "TensorBoard writer",
                source,
            })?;
        let stride = stride.max(1);
        let keep = usize::try_from(stride).unwrap_or(usize::MAX);
        let records = stats.iteration_stats();
        let times = records[records.len().saturating_sub(keep)..]
            .iter()
            .map(|r| r.time)
            .collect();
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            stride,
            times,
            pending: Vec::new(),
        })
    }

    /// Records a finished training step; every `stride`-th is queued for the file.
    pub fn step(&mut self, record: &TrainingIterationStats, learning_rate: f64) {
        self.times.push_back(record.time);
        while self.times.len() as u64 > self.stride {
            self.times.pop_front();
        }
        if !record.iteration.is_multiple_of(self.stride) {
            return;
        }
        let values = vec![
            (LOSS.to_owned(), record.loss as f32),
            (LEARNING_RATE.to_owned(), learning_rate as f32),
            (
                ITERATIONS_PER_SECOND.to_owned(),
                iterations_per_second(self.times.iter().copied()) as f32,
            ),
        ];
        self.pending
            .push((record.iteration, wall_time_now(), values));
    }

    /// Hands the queued training scalars to the writer thread.
    pub fn flush(&mut self) {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            self.send(Msg::Scalars(pending));
        }
    }

    /// Queues the scores of the validation of checkpoint `iteration` from `scores`.
    pub fn validation(&mut self, scores: &ValidationScores, iteration: u64) {
        self.flush();
        let values = validation_values(scores, iteration);
        if !values.is_empty() {
            self.send(Msg::Scalars(vec![(iteration, wall_time_now(), values)]));
        }
    }

    /// Queues snapshot images (`(dataset, PNG file)`) of checkpoint `iteration`.
    pub fn snapshots(&mut self, iteration: u64, snapshots: Vec<(String, PathBuf)>) {
        for (dataset, path) in snapshots {
            self.send(Msg::Image {
                step: iteration,
                wall_time: wall_time_now(),
                tag: snapshot_tag(&dataset),
                path,
            });
        }
    }

    /// Writes everything queued and waits until it is on disk.
    pub fn sync(&mut self) {
        self.flush();
        let (done, rx) = mpsc::sync_channel(1);
        self.send(Msg::Sync(done));
        // An error closes the channel: the writer has already reported it.
        let _ = rx.recv();
    }

    fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            // A stopped writer has reported why; logging just ends.
            let _ = tx.send(msg);
        }
    }
}

impl Drop for TensorboardLog {
    fn drop(&mut self) {
        self.flush();
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            // The writer reports its own errors; a panic there has nothing more to say.
            let _ = thread.join();
        }
    }
}

/// Steps per second over steps that took `times` seconds each (0 when they took no time).
pub fn iterations_per_second(times: impl Iterator<Item = f64>) -> f64 {
    let (count, total) = times.fold((0u32, 0.0), |(n, t), time| (n + 1, t + time));
    if total > 0.0 {
        f64::from(count) / total
    } else {
        0.0
    }
}

/// The scalars of the validation of checkpoint `iteration`: per dataset and criterion the best
/// parameter set's value (left out when every value is NaN), then every parameter set's.
pub fn validation_values(scores: &ValidationScores, iteration: u64) -> Vec<(String, f32)> {
    let Some(at) = scores.scores().iter().find(|s| s.iteration == iteration) else {
        return Vec::new();
    };
    let Ok(one) = scores.subscores([at.clone()]) else {
        return Vec::new();
    };
    let mut values: Vec<(String, f32)> = one
        .get_best(BestDim::Parameter)
        .into_iter()
        .map(|b| (best_tag(&b.dataset, &b.criterion), b.value as f32))
        .collect();
    for dataset in &scores.meta.datasets {
        for criterion in &scores.meta.criteria {
            for parameter in &scores.meta.parameters {
                if let Some(v) = at.get(dataset, &parameter.id, &criterion.name) {
                    let tag = parameter_tag(dataset, &criterion.name, &parameter.id);
                    values.push((tag, v as f32));
                }
            }
        }
    }
    values
}

fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

fn writer_loop(mut writer: EventWriter, rx: Receiver<Msg>) {
    let path = writer.path().to_owned();
    while let Ok(msg) = rx.recv() {
        let result = match msg {
            Msg::Scalars(steps) => steps.into_iter().try_for_each(|(step, wall, values)| {
                let values: Vec<(&str, f32)> =
                    values.iter().map(|(t, v)| (t.as_str(), *v)).collect();
                writer.scalars(step_i64(step), wall, &values)
            }),
            Msg::Image {
                step,
                wall_time,
                tag,
                path,
            } => match std::fs::read(&path).ok().and_then(summary::Image::from_png) {
                Some(image) => writer.image(step_i64(step), wall_time, &tag, image),
                None => {
                    tracing::warn!("snapshot {} is not a readable PNG", path.display());
                    Ok(())
                }
            },
            Msg::Sync(done) => {
                let result = writer.sync();
                // The trainer may have stopped waiting; nothing to tell then.
                let _ = done.send(());
                result
            }
        };
        if let Err(e) = result {
            tracing::warn!(
                "TensorBoard logging to {} stopped (training goes on): {e}",
                path.display()
            );
            return;
        }
    }
    if let Err(e) = writer.sync() {
        tracing::warn!("TensorBoard log {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use dacapo_core::{Criterion, ParameterSet, Score, ValidationIterationScores, ValidationMeta};
    use dacapo_tensorboard::{event_files, read_events};
    use std::collections::BTreeMap;

    fn rec(i: u64, time: f64) -> TrainingIterationStats {
        TrainingIterationStats {
            iteration: i,
            loss: 1.0 / (i + 1) as f64,
            time,
        }
    }

    /// `(step, tag, value)` of every scalar in `dir`'s event files, in file order.
    fn scalars(dir: &Path) -> Vec<(i64, String, f32)> {
        let mut out = Vec::new();
        for file in event_files(dir).unwrap() {
            for e in read_events(&file).unwrap() {
                for v in e.values() {
                    if let Some(x) = v.as_scalar() {
                        out.push((e.step, v.tag.clone(), x));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_stride_th_step_is_logged_with_the_speed_of_the_last_stride_steps() {
        let dir = tempfile::tempdir().unwrap();
        // Resumed at 4 with stored steps 0..4 taking 0.5 s each.
        let stored = TrainingStats::from_records((0..4).map(|i| rec(i, 0.5))).unwrap();
        let mut log = TensorboardLog::start(dir.path(), 3, 4, &stored).unwrap();
        for i in 4..8 {
            log.step(&rec(i, 0.25), 1e-3);
        }
        drop(log);
        let logged = scalars(dir.path());
        let at = |step: i64, tag: &str| {
            logged
                .iter()
                .find(|(s, t, _)| *s == step && t == tag)
                .map(|x| x.2)
        };
        assert_eq!(at(6, LOSS), Some(1.0 / 7.0));
        assert_eq!(at(6, LEARNING_RATE), Some(1e-3));
        // Steps 4, 5, 6: 3 steps in 0.75 s.
        assert_eq!(at(6, ITERATIONS_PER_SECOND), Some(4.0));
        assert_eq!(at(4, LOSS), None);
        assert_eq!(at(7, LOSS), None);
        // The file starts with the restart marker at 4.
        let file = &event_files(dir.path()).unwrap()[0];
        let events = read_events(file).unwrap();
        assert!(matches!(
            events[1].what,
            Some(dacapo_tensorboard::proto::event::What::SessionLog(_))
        ));
        assert_eq!(events[1].step, 4);
    }

    #[test]
    fn validation_values_hold_the_best_and_every_parameter() {
        let meta = ValidationMeta {
            parameters: ["t=0", "t=1"]
                .iter()
                .map(|id| ParameterSet {
                    id: (*id).to_owned(),
                    values: BTreeMap::new(),
                })
                .collect(),
            datasets: vec!["val".into()],
            criteria: vec![Criterion::new("dice", true), Criterion::new("voi", false)],
        };
        let mut scores = ValidationScores::new(meta);
        let table = |dice: [f64; 2], voi: [f64; 2]| {
            let per = |i: usize| {
                BTreeMap::from([
                    ("dice".to_owned(), Score(dice[i])),
                    ("voi".to_owned(), Score(voi[i])),
                ])
            };
            BTreeMap::from([(
                "val".to_owned(),
                BTreeMap::from([("t=0".to_owned(), per(0)), ("t=1".to_owned(), per(1))]),
            )])
        };
        for (iteration, dice, voi) in [
            (10, [0.5, 0.7], [1.0, 2.0]),
            (20, [0.9, 0.1], [f64::NAN; 2]),
        ] {
            scores
                .add_iteration_scores(ValidationIterationScores {
                    iteration,
                    scores: table(dice, voi),
                })
                .unwrap();
        }
        let values: BTreeMap<String, f32> = validation_values(&scores, 20).into_iter().collect();
        assert_eq!(values["validation/val/dice"], 0.9);
        assert!(
            !values.contains_key("validation/val/voi"),
            "all NaN: no best"
        );
        assert_eq!(values["validation/val/dice/t=1"], 0.1);
        assert!(values["validation/val/voi/t=0"].is_nan());
        assert_eq!(values.len(), 5);
        let at10: BTreeMap<String, f32> = validation_values(&scores, 10).into_iter().collect();
        assert_eq!(at10["validation/val/voi"], 1.0);
        assert!(validation_values(&scores, 30).is_empty());
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let err = TensorboardLog::start(&file, 1, 0, &TrainingStats::new())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("[logging] dir"), "{err}");
    }
}
