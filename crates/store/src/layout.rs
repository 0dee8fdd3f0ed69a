//! The layout of a store root: the name and place of everything a run keeps under it, in one
//! module. The local stores, the run lock, the frozen config, `dacapo runs`, the validator's
//! predictions and `dacapo submit` all take their paths from here.
//!
//! ```text
//! <root>/<run>/run.toml                                 frozen run config
//! <root>/<run>/.lock                                    run lock
//! <root>/<run>/checkpoints/iterations/<N>/              checkpoints (LocalWeightsStore)
//! <root>/<run>/checkpoints/LATEST                       latest-checkpoint hint
//! <root>/<run>/<dataset>/<criterion>.json               best records
//! <root>/<run>/validation/<N>/<dataset>.zarr            validation predictions
//! <root>/<run>/submit/                                  sbatch scripts and job logs
//! <root>/stats/training_stats/<run>/stats.jsonl         training stats (FileStatsStore)
//! <root>/stats/validation_scores/<run>/meta.json        validation metadata
//! <root>/stats/validation_scores/<run>/scores.jsonl     validation scores
//! ```
//! An object store ([`ObjectWeightsStore`]) keeps checkpoints and best records under its
//! prefix with the same relative keys; the frozen config and the lock stay under the root.
//!
//! [`ObjectWeightsStore`]: https://docs.rs/dacapo-store-object

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use dacapo_core::{RESERVED_DATASET_NAMES, RunName, validate_name};

use crate::error::{Result, io_err};
use crate::fsutil::{create_dir_durable, read_optional, write_atomic};

/// The frozen run config in a run directory.
pub const FROZEN_CONFIG: &str = "run.toml";
/// The run lock in a run directory.
pub const LOCK_FILE: &str = ".lock";
/// The checkpoints directory in a run directory.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The committed checkpoints inside [`CHECKPOINTS_DIR`].
pub const ITERATIONS_DIR: &str = "iterations";
/// The latest-checkpoint hint inside [`CHECKPOINTS_DIR`].
pub const LATEST_FILE: &str = "LATEST";
/// The validation predictions in a run directory.
pub const PREDICTIONS_DIR: &str = "validation";
/// The job scripts and logs of `dacapo submit` in a run directory.
pub const SUBMIT_DIR: &str = "submit";
/// The file stats store's directory under the root (never a run).
pub const STATS_DIR: &str = "stats";
/// Training stats of each run inside [`STATS_DIR`].
pub const TRAINING_STATS_DIR: &str = "training_stats";
/// Validation scores of each run inside [`STATS_DIR`].
pub const VALIDATION_SCORES_DIR: &str = "validation_scores";
/// The training stats file of a run.
pub const TRAINING_STATS_FILE: &str = "stats.jsonl";
/// The validation metadata file of a run.
pub const META_FILE: &str = "meta.json";
/// The validation scores file of a run.
pub const SCORES_FILE: &str = "scores.jsonl";

/// `<root>/<run>`.
pub fn run_dir(root: &Path, run: &RunName) -> PathBuf {
    root.join(run.as_str())
}

/// `<root>/<run>/run.toml`.
pub fn frozen_config_path(root: &Path, run: &RunName) -> PathBuf {
    run_dir(root, run).join(FROZEN_CONFIG)
}

/// `<root>/<run>/.lock`.
pub fn lock_path(root: &Path, run: &RunName) -> PathBuf {
    run_dir(root, run).join(LOCK_FILE)
}

/// `<root>/<run>/validation/<N>`: the predictions of checkpoint `iteration`.
pub fn predictions_dir(root: &Path, run: &RunName, iteration: u64) -> PathBuf {
    run_dir(root, run)
        .join(PREDICTIONS_DIR)
        .join(iteration.to_string())
}

/// `<root>/<run>/submit`.
pub fn submit_dir(root: &Path, run: &RunName) -> PathBuf {
    run_dir(root, run).join(SUBMIT_DIR)
}

/// `<run>/<dataset>/<criterion>.json`, relative to a weights store's root.
pub fn best_record_key(run: &RunName, dataset: &str, criterion: &str) -> String {
    format!("{run}/{dataset}/{criterion}.json")
}

/// Whether the entry `name` of a run directory can hold best records (a dataset name that is
/// not one of the run's own entries).
pub fn is_dataset_entry(name: &str) -> bool {
    validate_name("dataset", name).is_ok()
        && !RESERVED_DATASET_NAMES.contains(&name)
        && name != SUBMIT_DIR
}

/// `<root>/stats/training_stats/<run>/stats.jsonl`.
pub fn training_stats_path(root: &Path, run: &RunName) -> PathBuf {
    root.join(STATS_DIR)
        .join(TRAINING_STATS_DIR)
        .join(run.as_str())
        .join(TRAINING_STATS_FILE)
}

/// `<root>/stats/validation_scores/<run>`.
pub fn validation_scores_dir(root: &Path, run: &RunName) -> PathBuf {
    root.join(STATS_DIR)
        .join(VALIDATION_SCORES_DIR)
        .join(run.as_str())
}

/// Whether `dir` (an entry of the root) is a run: it has a frozen config, checkpoints, or
/// was submitted (`dacapo submit` writes `submit/` before the job starts).
pub fn is_run_dir(dir: &Path) -> bool {
    dir.join(FROZEN_CONFIG).is_file()
        || dir.join(CHECKPOINTS_DIR).is_dir()
        || dir.join(SUBMIT_DIR).is_dir()
}

/// The runs under `root`, sorted; empty if `root` does not exist.
pub fn list_runs(root: &Path) -> Result<Vec<RunName>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list the runs in", root)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list the runs in", root))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name == STATS_DIR {
            continue;
        }
        if let Ok(run) = RunName::new(name)
            && is_run_dir(&entry.path())
        {
            names.push(run);
        }
    }
    names.sort();
    Ok(names)
}

/// The text of the frozen config of `run` under `root`; `None` if the run has none.
pub fn read_frozen_config(root: &Path, run: &RunName) -> Result<Option<String>> {
    let path = frozen_config_path(root, run);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    String::from_utf8(bytes).map(Some).map_err(|_| {
        crate::error::corrupt(&path, "text check failed: the frozen config is not UTF-8")
    })
}

/// Writes the frozen config of `run` under `root` atomically and durably (a crash leaves the
/// old file or the new one).
pub fn write_frozen_config(root: &Path, run: &RunName, text: &str) -> Result<()> {
    let dir = run_dir(root, run);
    create_dir_durable(&dir, true)?;
    write_atomic(&frozen_config_path(root, run), text.as_bytes(), true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn runs_are_listed_and_the_frozen_config_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(list_runs(&root.join("missing")).unwrap().is_empty());
        let a = RunName::new("a").unwrap();
        assert_eq!(read_frozen_config(root, &a).unwrap(), None);
        write_frozen_config(root, &a, "[run]\n").unwrap();
        assert_eq!(
            read_frozen_config(root, &a).unwrap().as_deref(),
            Some("[run]\n")
        );
        fs::create_dir_all(root.join("b").join(SUBMIT_DIR)).unwrap();
        fs::create_dir_all(root.join(STATS_DIR).join(CHECKPOINTS_DIR)).unwrap();
        fs::create_dir_all(root.join("data.zarr")).unwrap();
        let names: Vec<String> = list_runs(root)
            .unwrap()
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!is_dataset_entry(SUBMIT_DIR) && !is_dataset_entry(CHECKPOINTS_DIR));
        assert!(is_dataset_entry("val") && !is_dataset_entry(".hidden"));
    }
}
