//! Store writes off the training thread: stats appends and checkpoint commits.
//!
//! The training thread hands finished work to one writer thread and goes on. At most one
//! checkpoint is in flight: [`StoreWriter::checkpoint`] first waits for the previous commit,
//! so memory holds at most two serialised checkpoints and `LATEST` (moved by the store only
//! after a commit) never runs ahead of what is on disk. The first store error stops the
//! writer; the training thread sees it at its next call and stops the run.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use dacapo_core::{RunName, TrainingIterationStats, TrainingStats};
use dacapo_store::{StatsStore, StoreError, Weights, WeightsStore};

use crate::error::TrainerError;

enum Msg {
    Stats(Vec<TrainingIterationStats>),
    Checkpoint {
        iteration: u64,
        weights: Box<Weights>,
        done: SyncSender<Result<(), Failure>>,
    },
    Sync(SyncSender<Result<(), Failure>>),
}

/// A store error, shared between the writer's record and whoever waits for that write.
type Failure = Arc<StoreError>;

/// The handle the training thread uses to write through the stores.
pub struct StoreWriter {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    pending: Option<(u64, Receiver<Result<(), Failure>>)>,
    failed: Arc<std::sync::Mutex<Option<Failure>>>,
}

impl StoreWriter {
    /// Starts the writer thread for `run`; `stats` are the stats already trained (after a
    /// resume, trimmed to the checkpoint) and are what the first store call makes the file equal to.
    pub fn start(
        run: RunName,
        weights: Arc<dyn WeightsStore>,
        stats_store: Arc<dyn StatsStore>,
        stats: TrainingStats,
    ) -> Result<Self, TrainerError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let failed = Arc::new(std::sync::Mutex::new(None));
        let failed_in_thread = Arc::clone(&failed);
        let thread = std::thread::Builder::new()
            .name("dacapo-store-writer".into())
            .spawn(move || {
                writer_loop(&run, &*weights, &*stats_store, stats, rx, &failed_in_thread);
            })
            .map_err(|source| TrainerError::Thread {
                name: "store writer",
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            pending: None,
            failed,
        })
    }

    fn send(&self, msg: Msg) -> Result<(), TrainerError> {
        self.check()?;
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(msg).ok())
            .ok_or_else(|| self.stopped())
    }

    fn stopped(&self) -> TrainerError {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(source) => TrainerError::StoreWrite { source },
            None => TrainerError::WriterStopped,
        }
    }

    /// An error if an earlier write failed.
    pub fn check(&self) -> Result<(), TrainerError> {
        match self.failed.lock().ok().and_then(|f| f.clone()) {
            Some(source) => Err(TrainerError::StoreWrite { source }),
            None => Ok(()),
        }
    }

    /// Queues training stats of steps after those already queued.
    pub fn stats(&self, records: Vec<TrainingIterationStats>) -> Result<(), TrainerError> {
        if records.is_empty() {
            return self.check();
        }
        self.send(Msg::Stats(records))
    }

    /// Queues checkpoint `iteration`, after waiting for the previous one to commit.
    pub fn checkpoint(&mut self, iteration: u64, weights: Weights) -> Result<(), TrainerError> {
        self.wait_checkpoint()?;
        let (done, rx) = mpsc::sync_channel(1);
        self.send(Msg::Checkpoint {
            iteration,
            weights: Box::new(weights),
            done,
        })?;
        self.pending = Some((iteration, rx));
        Ok(())
    }

    /// Waits until the checkpoint in flight (if any) is committed; returns its iteration.
    pub fn wait_checkpoint(&mut self) -> Result<Option<u64>, TrainerError> {
        let Some((iteration, rx)) = self.pending.take() else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(Ok(())) => Ok(Some(iteration)),
            Ok(Err(source)) => Err(TrainerError::StoreWrite { source }),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Waits for everything queued to be written and made durable.
    pub fn sync(&mut self) -> Result<(), TrainerError> {
        self.wait_checkpoint()?;
        let (done, rx) = mpsc::sync_channel(1);
        self.send(Msg::Sync(done))?;
        match rx.recv() {
            Ok(result) => result.map_err(|source| TrainerError::StoreWrite { source }),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Writes everything queued, makes it durable and stops the thread.
    pub fn finish(mut self) -> Result<(), TrainerError> {
        let result = self.sync();
        self.shutdown();
        result
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            // A panicking writer already recorded nothing useful; its error surfaced through
            // the closed channel.
            let _ = thread.join();
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn writer_loop(
    run: &RunName,
    weights: &dyn WeightsStore,
    stats_store: &dyn StatsStore,
    mut stats: TrainingStats,
    rx: Receiver<Msg>,
    failed: &std::sync::Mutex<Option<Failure>>,
) {
    let fail = |error: Failure| {
        if let Ok(mut f) = failed.lock() {
            f.get_or_insert(error);
        }
    };
    // Store the (possibly trimmed) resumed stats first, so a resumed run's file is cut back
    // to the checkpoint before anything new is appended.
    if let Err(e) = stats_store.store_training_stats(run, &stats) {
        fail(Arc::new(e));
        return;
    }
    while let Ok(msg) = rx.recv() {
        let (result, done) = match msg {
            Msg::Stats(records) => (
                records
                    .into_iter()
                    .try_for_each(|r| stats.add_iteration_stats(r).map_err(StoreError::from))
                    .and_then(|()| stats_store.store_training_stats(run, &stats)),
                None,
            ),
            // Stats up to the checkpoint were queued before it; make them durable with it.
            Msg::Checkpoint {
                iteration,
                weights: w,
                done,
            } => (
                stats_store
                    .sync(run)
                    .and_then(|()| weights.store_weights(run, iteration, &w)),
                Some(done),
            ),
            Msg::Sync(done) => (stats_store.sync(run), Some(done)),
        };
        let result = result.map_err(Arc::new);
        let error = result.as_ref().err().cloned();
        if let Some(done) = done {
            // The receiver is gone only if the trainer stopped waiting; nothing to tell then.
            let _ = done.send(result);
        }
        if let Some(error) = error {
            fail(error);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dacapo_core::{NamedTensor, TensorMap};
    use dacapo_store::{FileStatsStore, LocalWeightsStore, TrainState};

    fn r() -> RunName {
        RunName::new("r").unwrap()
    }

    fn rec(i: u64) -> TrainingIterationStats {
        TrainingIterationStats {
            iteration: i,
            loss: 1.0 / (i + 1) as f64,
            time: 0.01,
        }
    }

    fn weights(i: u64) -> Weights {
        let t = NamedTensor::from_f32(vec![2], &[i as f32, 1.0]).unwrap();
        Weights {
            model: TensorMap::from([("w".to_owned(), t)]),
            optimizer: TensorMap::new(),
            state: TrainState::new(i, "h", "flex", 1),
        }
    }

    #[test]
    fn writes_stats_and_checkpoints_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ws: Arc<dyn WeightsStore> = Arc::new(LocalWeightsStore::new(dir.path()));
        let ss: Arc<dyn StatsStore> = Arc::new(FileStatsStore::new(dir.path()));
        let mut w = StoreWriter::start(r(), ws.clone(), ss.clone(), TrainingStats::new()).unwrap();
        w.stats((0..5).map(rec).collect()).unwrap();
        w.checkpoint(5, weights(5)).unwrap();
        w.stats((5..10).map(rec).collect()).unwrap();
        w.checkpoint(10, weights(10)).unwrap();
        assert_eq!(w.wait_checkpoint().unwrap(), Some(10));
        w.finish().unwrap();
        assert_eq!(ws.latest_iteration(&r()).unwrap(), Some(10));
        assert_eq!(
            ss.retrieve_training_stats(&r()).unwrap().trained_until(),
            10
        );
    }

    #[test]
    fn resumed_stats_cut_the_file_back() {
        let dir = tempfile::tempdir().unwrap();
        let ws: Arc<dyn WeightsStore> = Arc::new(LocalWeightsStore::new(dir.path()));
        let ss: Arc<dyn StatsStore> = Arc::new(FileStatsStore::new(dir.path()));
        let all = TrainingStats::from_records((0..20).map(rec)).unwrap();
        ss.store_training_stats(&r(), &all).unwrap();
        let mut resumed = all.clone();
        resumed.delete_after(8);
        let w = StoreWriter::start(r(), ws, ss.clone(), resumed).unwrap();
        w.stats(vec![rec(8)]).unwrap();
        w.finish().unwrap();
        assert_eq!(ss.retrieve_training_stats(&r()).unwrap().trained_until(), 9);
    }

    #[test]
    fn out_of_order_stats_stop_the_writer_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ws: Arc<dyn WeightsStore> = Arc::new(LocalWeightsStore::new(dir.path()));
        let ss: Arc<dyn StatsStore> = Arc::new(FileStatsStore::new(dir.path()));
        let mut w = StoreWriter::start(r(), ws, ss, TrainingStats::new()).unwrap();
        w.stats(vec![rec(0)]).unwrap();
        w.stats(vec![rec(5)]).unwrap();
        let err = w.sync().unwrap_err().to_string();
        assert!(err.contains("iteration 5"), "{err}");
    }
}
