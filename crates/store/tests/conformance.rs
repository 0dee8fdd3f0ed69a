//! The store conformance suite on the local stores: `FileStatsStore` and
//! `LocalWeightsStore` in a temp dir.

use std::sync::Arc;

use dacapo_store::conformance::{StatsFactory, WeightsFactory};
use dacapo_store::{FileStatsStore, LocalWeightsStore};

fn stats_setup() -> Option<StatsFactory> {
    let dir = Arc::new(tempfile::tempdir().ok()?);
    Some(Box::new(move || Box::new(FileStatsStore::new(dir.path()))))
}

fn weights_setup() -> Option<WeightsFactory> {
    let dir = Arc::new(tempfile::tempdir().ok()?);
    Some(Box::new(move || {
        Box::new(LocalWeightsStore::new(dir.path()).with_fsync(false))
    }))
}

mod stats {
    dacapo_store::stats_store_tests!(super::stats_setup);
}

mod weights {
    dacapo_store::weights_store_tests!(super::weights_setup);
}
