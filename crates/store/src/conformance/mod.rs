//! The store conformance suite: the documented semantics of [`StatsStore`] and
//! [`WeightsStore`] as checks that any implementation must pass (local files, PostgreSQL, S3).
//!
//! Each check takes a *factory* that opens a new handle on the same storage (a new handle
//! plays a new process: it must see what earlier handles stored) and panics with a message
//! when the store misbehaves. Checks use their own run names, so they may share one storage;
//! [`stats_store_tests!`](crate::stats_store_tests) and
//! [`weights_store_tests!`](crate::weights_store_tests) expand into one `#[test]` per check.
//! Compiled with the `conformance` feature (enable it in `[dev-dependencies]`).
//!
//! ```ignore
//! fn setup() -> Option<dacapo_store::conformance::StatsFactory> {
//!     let dir = std::sync::Arc::new(tempfile::tempdir().ok()?);
//!     Some(Box::new(move || Box::new(dacapo_store::FileStatsStore::new(dir.path()))))
//! }
//! dacapo_store::stats_store_tests!(setup);
//! ```
// Checks exist to panic with a message when a store misbehaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod data;
pub mod stats;
pub mod weights;

use crate::traits::{StatsStore, WeightsStore};

/// Opens a new handle on one stats storage.
pub type StatsFactory = Box<dyn Fn() -> Box<dyn StatsStore>>;

/// Opens a new handle on one weights storage.
pub type WeightsFactory = Box<dyn Fn() -> Box<dyn WeightsStore>>;

/// Expands into one `#[test]` per stats check, each calling `$setup()` for a
/// `Option<StatsFactory>`; `None` skips the test (print why in `$setup`).
#[macro_export]
macro_rules! stats_store_tests {
    ($setup:path) => {
        $crate::__conformance_tests!($setup, stats;
            training_round_trip,
            training_special_values,
            training_divergence_takes_priority,
            training_delete,
            training_handles_take_turns,
            training_random_sequences,
            validation_round_trip,
            validation_meta_only_and_meta_change,
            validation_inserted_in_the_middle,
            validation_sparse_and_empty_tables,
            validation_random_sequences,
            runs_are_independent,
            validation_delete,
            concurrent_writers_and_readers,
            readers_see_whole_validations,
        );
    };
}

/// Expands into one `#[test]` per weights check, each calling `$setup()` for a
/// `Option<WeightsFactory>`; `None` skips the test (print why in `$setup`).
#[macro_export]
macro_rules! weights_store_tests {
    ($setup:path) => {
        $crate::__conformance_tests!($setup, weights;
            round_trip_all_dtypes,
            missing_run_and_iteration,
            duplicate_iteration_is_idempotent_or_an_error,
            invalid_weights_are_rejected,
            invalid_names_are_rejected,
            remove_updates_latest,
            best_records,
            best_records_are_listed_and_removed,
            retention_keeps_newest_and_best,
            large_and_empty_checkpoints,
            concurrent_runs,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($setup:path, $module:ident; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if let Some(factory) = $setup() {
                    $crate::conformance::$module::$case(&*factory);
                }
            }
        )*
    };
}
