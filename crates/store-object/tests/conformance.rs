//! The store conformance suite on `ObjectWeightsStore`: on object_store's in-memory store and
//! local file system (always), and on an S3 server when `DACAPO_TEST_S3_URL` is set (by
//! `cargo xtask services up s3`; skipped with a printed reason otherwise).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use dacapo_store::conformance::WeightsFactory;
use dacapo_store_object::ObjectWeightsStore;
use dacapo_store_object::object_store::memory::InMemory;

fn memory_setup() -> Option<WeightsFactory> {
    let mem = Arc::new(InMemory::new());
    Some(Box::new(move || {
        Box::new(ObjectWeightsStore::new(mem.clone(), "conformance", "memory://").unwrap())
    }))
}

fn file_setup() -> Option<WeightsFactory> {
    let dir = Arc::new(tempfile::tempdir().ok()?);
    Some(Box::new(move || {
        let url = format!("file://{}", dir.path().display());
        Box::new(ObjectWeightsStore::from_url(&url).unwrap())
    }))
}

fn s3_setup() -> Option<WeightsFactory> {
    let url = common::s3_url("conformance")?;
    Some(Box::new(move || {
        Box::new(ObjectWeightsStore::from_url(&url).unwrap())
    }))
}

mod memory {
    dacapo_store::weights_store_tests!(super::memory_setup);
}

mod file {
    dacapo_store::weights_store_tests!(super::file_setup);
}

mod s3 {
    dacapo_store::weights_store_tests!(super::s3_setup);
}
