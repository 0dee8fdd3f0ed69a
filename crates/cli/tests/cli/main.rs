//! The `dacapo` command tests, in one binary: each module tests one command (or one concern)
//! through the built executable; `util` and `synthetic_runs` hold what they share, and
//! `dacapo_core::testing::TinyRun` builds every run config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod devices;
mod errors;
mod interop;
mod kill_resume;
mod plot;
mod predict_scale;
mod progress;
mod remote_stores;
mod runs;
mod submit;
mod synthetic_runs;
mod tensorboard;
mod util;
mod validate_predict;
