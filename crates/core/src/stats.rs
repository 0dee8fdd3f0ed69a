//! Training statistics: one record per optimizer step.

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

/// Loss and wall time of one training step (`iteration` is the 0-based step index).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingIterationStats {
    /// The step that produced these stats.
    pub iteration: u64,
    /// The loss of this step.
    pub loss: f64,
    /// Seconds the step took.
    pub time: f64,
}

/// The ordered, gap-free training stats of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingStats {
    iteration_stats: Vec<TrainingIterationStats>,
}

impl TrainingStats {
    /// Empty stats.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stats from records, checking that they are consecutive.
    pub fn from_records(
        records: impl IntoIterator<Item = TrainingIterationStats>,
    ) -> Result<Self, CoreError> {
        let mut stats = Self::new();
        for record in records {
            stats.add_iteration_stats(record)?;
        }
        Ok(stats)
    }

    /// Appends the stats of the next step.
    ///
    /// The iteration must be [`trained_until`](Self::trained_until); anything else is an error,
    /// never a silent reorder. Empty stats accept any first iteration, so a run whose stats were
    /// deleted can resume from a checkpoint.
    pub fn add_iteration_stats(&mut self, stats: TrainingIterationStats) -> Result<(), CoreError> {
        if let Some(last) = self.iteration_stats.last() {
            let expected = last.iteration + 1;
            if stats.iteration != expected {
                return Err(CoreError::IterationOrder {
                    expected,
                    found: stats.iteration,
                });
            }
        }
        self.iteration_stats.push(stats);
        Ok(())
    }

    /// Keeps only the stats of iterations `< iteration`.
    pub fn delete_after(&mut self, iteration: u64) {
        let keep = self
            .iteration_stats
            .partition_point(|s| s.iteration < iteration);
        self.iteration_stats.truncate(keep);
    }

    /// Last stored iteration + 1, or 0 when empty.
    pub fn trained_until(&self) -> u64 {
        self.iteration_stats.last().map_or(0, |s| s.iteration + 1)
    }

    /// All records, in iteration order.
    pub fn iteration_stats(&self) -> &[TrainingIterationStats] {
        &self.iteration_stats
    }

    /// The records from `iteration` on (empty if none).
    pub fn since(&self, iteration: u64) -> &[TrainingIterationStats] {
        let start = self
            .iteration_stats
            .partition_point(|s| s.iteration < iteration);
        &self.iteration_stats[start..]
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.iteration_stats.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.iteration_stats.is_empty()
    }

    /// The loss curve as `(iteration, loss)` pairs, for plotting.
    pub fn loss_series(&self) -> Vec<(u64, f64)> {
        self.iteration_stats
            .iter()
            .map(|s| (s.iteration, s.loss))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(iteration: u64) -> TrainingIterationStats {
        TrainingIterationStats {
            iteration,
            loss: iteration as f64 * 0.5,
            time: 0.1,
        }
    }

    #[test]
    fn add_requires_next_iteration() {
        let mut stats = TrainingStats::new();
        assert_eq!(stats.trained_until(), 0);
        stats.add_iteration_stats(rec(0)).unwrap();
        stats.add_iteration_stats(rec(1)).unwrap();
        assert_eq!(stats.trained_until(), 2);
        let err = stats.add_iteration_stats(rec(1)).unwrap_err();
        assert!(matches!(
            err,
            CoreError::IterationOrder {
                expected: 2,
                found: 1
            }
        ));
        assert!(stats.add_iteration_stats(rec(5)).is_err());
        assert_eq!(stats.len(), 2);
    }

    #[test]
    fn empty_stats_accept_a_resumed_start() {
        let stats = TrainingStats::from_records([rec(100), rec(101)]).unwrap();
        assert_eq!(stats.trained_until(), 102);
        assert_eq!(stats.since(101), &[rec(101)]);
    }

    #[test]
    fn delete_after_keeps_earlier_iterations() {
        let mut stats = TrainingStats::from_records((0..10).map(rec)).unwrap();
        stats.delete_after(4);
        assert_eq!(stats.trained_until(), 4);
        assert_eq!(stats.loss_series().last(), Some(&(3, 1.5)));
        stats.delete_after(100);
        assert_eq!(stats.trained_until(), 4);
        stats.delete_after(0);
        assert!(stats.is_empty());
    }
}
