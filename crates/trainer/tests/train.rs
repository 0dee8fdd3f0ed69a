//! `train` on tiny synthetic runs without validation: what it stores, resume, stop requests,
//! changed configs, progress reports, and networks refused before they are allocated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dacapo_core::RunName;
use dacapo_core::config::ArchitectureConfig;
use dacapo_core::testing::TinyRun;
use dacapo_runtime::{NoValidation, Progress, RuntimeError, Stores, ValidationReport};
use dacapo_trainer::{TrainOptions, TrainSummary, TrainerError, train};

/// A reporter that records what it was told, and can ask for a stop after a step.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<String>>,
    stop_after: Option<(u64, Arc<AtomicBool>)>,
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

impl Progress for Recorder {
    fn training(&self, run: &str, start: u64, total: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("training {run} {start}/{total}"));
    }
    fn step(&self, iteration: u64, loss: f64) {
        assert!(loss.is_finite());
        self.events
            .lock()
            .unwrap()
            .push(format!("step {iteration}"));
        if let Some((at, stop)) = &self.stop_after
            && *at == iteration
        {
            stop.store(true, Ordering::SeqCst);
        }
    }
    fn validated(&self, _run: &str, report: &ValidationReport) {
        self.events
            .lock()
            .unwrap()
            .push(format!("validated {}", report.iteration));
    }
    fn finished(&self, iteration: u64) {
        self.events
            .lock()
            .unwrap()
            .push(format!("finished {iteration}"));
    }
}

/// `name` as a run name.
fn run(name: &str) -> RunName {
    RunName::new(name).unwrap()
}

fn options(recorder: &Arc<Recorder>) -> TrainOptions {
    TrainOptions {
        stop: recorder
            .stop_after
            .as_ref()
            .map_or_else(Default::default, |(_, s)| Arc::clone(s)),
        progress: Arc::clone(recorder) as Arc<dyn Progress>,
        ..TrainOptions::default()
    }
}

fn steps(events: &[String]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.strip_prefix("step ")?.parse().ok())
        .collect()
}

#[test]
fn trains_to_the_end_stores_everything_and_resumes_without_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = TinyRun::new("plain", dir.path())
        .schedule(6, 2)
        .keep_last(2)
        .build();
    let stores = Stores::local(&config);
    let recorder = Arc::new(Recorder::default());
    let summary = train(&config, &stores, &options(&recorder), &mut NoValidation).unwrap();
    assert_eq!(
        (
            summary.resumed_from,
            summary.last_checkpoint,
            summary.stopped
        ),
        (0, 6, false)
    );
    assert!(summary.last_loss.unwrap().is_finite());
    let events = recorder.events();
    assert_eq!(events.first().unwrap(), "training plain 0/6");
    assert_eq!(steps(&events), [0, 1, 2, 3, 4, 5]);
    assert_eq!(events.last().unwrap(), "finished 6");
    assert!(
        !events.iter().any(|e| e.starts_with("validated")),
        "{events:?}"
    );

    let stats = stores.stats.retrieve_training_stats(&run("plain")).unwrap();
    assert_eq!(stats.trained_until(), 6);
    assert_eq!(
        stats.iteration_stats().last().unwrap().loss,
        summary.last_loss.unwrap()
    );
    // keep_last = 2 and no best records: checkpoints 4 and 6.
    assert_eq!(stores.weights.iterations(&run("plain")).unwrap(), [4, 6]);
    let frozen = std::fs::read_to_string(config.stores.root.join("plain/run.toml")).unwrap();
    assert!(frozen.contains("train_until = 6"), "{frozen}");

    let again = Arc::new(Recorder::default());
    let summary = train(&config, &stores, &options(&again), &mut NoValidation).unwrap();
    assert_eq!(
        summary,
        TrainSummary {
            resumed_from: 6,
            last_checkpoint: 6,
            stopped: false,
            last_loss: None
        }
    );
    assert!(steps(&again.events()).is_empty());
}

#[test]
fn a_stop_request_checkpoints_off_schedule_and_the_run_resumes_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let config = TinyRun::new("stop", dir.path()).schedule(8, 4).build();
    let stores = Stores::local(&config);
    let recorder = Arc::new(Recorder {
        stop_after: Some((2, Arc::new(AtomicBool::new(false)))),
        ..Recorder::default()
    });
    let summary = train(&config, &stores, &options(&recorder), &mut NoValidation).unwrap();
    assert!(summary.stopped);
    assert_eq!(summary.last_checkpoint, 3);
    assert_eq!(steps(&recorder.events()), [0, 1, 2]);
    assert_eq!(
        stores.weights.latest_iteration(&run("stop")).unwrap(),
        Some(3)
    );

    let rest = Arc::new(Recorder::default());
    let summary = train(&config, &stores, &options(&rest), &mut NoValidation).unwrap();
    assert_eq!((summary.resumed_from, summary.last_checkpoint), (3, 8));
    assert_eq!(steps(&rest.events()), [3, 4, 5, 6, 7]);
    assert_eq!(stores.weights.iterations(&run("stop")).unwrap(), [3, 4, 8]);
    assert_eq!(
        stores
            .stats
            .retrieve_training_stats(&run("stop"))
            .unwrap()
            .trained_until(),
        8
    );
}

#[test]
fn a_changed_config_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let run = TinyRun::new("changed", dir.path()).schedule(2, 2);
    let stores = Stores::local(&run.clone().build());
    train(
        &run.clone().build(),
        &stores,
        &TrainOptions::default(),
        &mut NoValidation,
    )
    .unwrap();
    let changed = run
        .schedule(4, 2)
        .with(|c| c.trainer.learning_rate = 0.5)
        .build();
    let err = train(
        &changed,
        &stores,
        &TrainOptions::default(),
        &mut NoValidation,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            TrainerError::Runtime(RuntimeError::ConfigChanged { .. })
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("trainer.learning_rate"), "{text}");
    assert!(text.contains("--force-config"), "{text}");
    let forced = TrainOptions {
        force_config: true,
        ..TrainOptions::default()
    };
    let summary = train(&changed, &stores, &forced, &mut NoValidation).unwrap();
    assert_eq!((summary.resumed_from, summary.last_checkpoint), (2, 4));
}

#[test]
fn a_network_too_large_for_memory_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let config = TinyRun::new("huge", dir.path())
        .with(|c| {
            let ArchitectureConfig::Unet(u) = &mut c.architecture;
            (u.fmaps, u.input_shape) = (256, vec![4100, 4100]);
            c.trainer.batch_size = 64;
        })
        .build();
    let stores = Stores::local(&config);
    let started = std::time::Instant::now();
    let err = train(
        &config,
        &stores,
        &TrainOptions::default(),
        &mut NoValidation,
    )
    .unwrap_err();
    assert!(
        matches!(err, TrainerError::Runtime(RuntimeError::TooLarge { .. })),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("training batches of 64 × [4100, 4100]"),
        "{text}"
    );
    assert!(text.contains("GiB"), "{text}");
    assert!(text.contains("trainer.batch_size"), "{text}");
    // Refused from the estimate: nothing was allocated or trained.
    assert!(started.elapsed().as_secs() < 30);
    assert!(stores.weights.iterations(&run("huge")).unwrap().is_empty());
}
