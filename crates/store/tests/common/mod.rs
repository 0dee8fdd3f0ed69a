//! Test data shared by the store tests: the conformance suite's generators.

pub use dacapo_store::conformance::data::*;
