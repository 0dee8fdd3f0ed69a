//! The bookkeeping of a resumable blockwise prediction, kept next to its output array in
//! `<array>/.dacapo/` (zarr readers ignore it; removing the array removes it):
//!
//! - `job.json`: the job ([`PredictSpec`]: run, checkpoint hash, input, normalisation, block
//!   grid, output, post-processing) and a hash of it. A rerun with the same hash resumes; a
//!   different job on the same output is refused unless the output is overwritten.
//! - `done/<index / 1000>/<index>`: one empty marker per finished block, created (and made
//!   durable) only after the block's chunks are durable. A block without marker is done again
//!   from scratch; its chunks are rewritten whole.
//! - `claims/<index>`: which worker computes a block now, created exclusively (`O_EXCL`), so
//!   two workers never write one block; removed once the block is done. A restarted worker
//!   takes over the claims of its earlier life first; a new launch clears them all.
//! - `failed/<index>`: the error of a block that failed, until a later launch retries it.
//! - `launch.json`: the current launch (workers, executor, SLURM job, start time) for
//!   `dacapo predict --status`.
//! - `coordinator.lock` / `workers.lock`: file locks (released by the OS when a process dies
//!   in any way) that keep two launches on one output apart.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dacapo_store::fsutil::{create_dir_durable, fsync_dir, write_atomic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ValidatorError;

/// Name of the bookkeeping directory inside the output array's directory.
pub const LEDGER_DIR: &str = ".dacapo";
/// Version of the `job.json` layout.
const FORMAT: u32 = 1;
/// Done markers per shard directory.
const SHARD: usize = 1000;

/// The input of a prediction job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Absolute path of the zarr container.
    pub container: PathBuf,
    /// Array path inside it.
    pub array: String,
    /// Shape of every axis.
    pub shape: Vec<u64>,
    /// Element type on disk.
    pub dtype: String,
    /// Normalisation: value mapped to 0.
    pub low: f64,
    /// Normalisation: value mapped to 1.
    pub high: f64,
}

/// The output array of a prediction job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Absolute path of the zarr container.
    pub container: PathBuf,
    /// Array path inside it.
    pub array: String,
    /// Shape of every axis.
    pub shape: Vec<u64>,
    /// Chunk shape: one block's output region per chunk.
    pub chunks: Vec<u64>,
    /// Element type (`float32` predictions, `uint64` labels).
    pub dtype: String,
}

/// The block grid of a prediction job (see [`crate::blockwise`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSpec {
    /// Spatial shape of one output block.
    pub output_block: Vec<usize>,
    /// Per-axis margin of the input block.
    pub context: Vec<usize>,
    /// Per-axis alignment of block starts.
    pub grid: Vec<usize>,
    /// Voxels cropped from each side of the network output.
    pub crop: Vec<usize>,
    /// `reflect` or `zero`.
    pub padding: String,
    /// Number of blocks.
    pub blocks: usize,
}

/// Everything that decides a prediction's output, bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictSpec {
    /// The run whose network predicts.
    pub run: String,
    /// Absolute store root holding the run's frozen config (`<root>/<run>/run.toml`).
    pub root: PathBuf,
    /// The checkpoint.
    pub iteration: u64,
    /// SHA-256 of the checkpoint's model tensors (names, shapes, bytes).
    pub checkpoint_sha256: String,
    /// Compute backend (`flex`, `wgpu`, ...): backends round differently.
    pub backend: String,
    /// Device of the backend as `run.device` writes it (`default`, `cpu`, `cuda:0`, ...).
    pub device: String,
    /// The input array and its normalisation.
    pub input: InputSpec,
    /// The output array.
    pub output: OutputSpec,
    /// The blocks.
    pub grid: GridSpec,
    /// Post-processing parameter (e.g. `threshold=0.5`) when the output holds labels.
    pub post_process: Option<String>,
}

impl PredictSpec {
    /// SHA-256 (hex) of the job's canonical JSON.
    pub fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `job.json`: the job and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JobFile {
    format: u32,
    hash: String,
    job: PredictSpec,
}

/// How a launch runs its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Number of workers.
    pub workers: usize,
    /// `local` or `slurm`.
    pub executor: String,
    /// The SLURM array job, if submitted.
    pub slurm_job: Option<String>,
    /// Seconds since the Unix epoch when the launch started.
    pub started: f64,
    /// Blocks already done when it started (for the rate and ETA).
    pub done_at_start: usize,
}

/// Progress of a prediction job, as `dacapo predict --status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The job.
    pub job: PredictSpec,
    /// Total number of blocks.
    pub total: usize,
    /// Blocks done.
    pub done: usize,
    /// Blocks being computed now: index and worker.
    pub claimed: Vec<(usize, String)>,
    /// Failed blocks and their errors.
    pub failed: Vec<(usize, String)>,
    /// The current launch, if any.
    pub launch: Option<Launch>,
    /// Blocks per second since the launch started (`None`: too early to tell).
    pub rate: Option<f64>,
}

impl Status {
    /// Estimated time until every block is done at the current rate.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate.filter(|r| *r > 0.0)?;
        Some(Duration::from_secs_f64(
            (self.total - self.done) as f64 / rate,
        ))
    }
}

/// The bookkeeping directory of one output array (see the module docs).
#[derive(Debug, Clone)]
pub struct Ledger {
    dir: PathBuf,
}

/// Seconds since the Unix epoch.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ValidatorError {
    let path = path.to_owned();
    move |source| ValidatorError::Ledger {
        action,
        path,
        source,
    }
}

/// The entries of `dir` whose names are block indices, with their paths (none if missing).
fn indexed_entries(dir: &Path) -> Result<Vec<(usize, PathBuf)>, ValidatorError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(i) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push((i, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn remove_file(path: &Path) -> Result<(), ValidatorError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

impl Ledger {
    /// The ledger of array `array` in `container`.
    pub fn new(container: &Path, array: &str) -> Self {
        Self {
            dir: container.join(array.trim_matches('/')).join(LEDGER_DIR),
        }
    }

    /// The bookkeeping directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn job_path(&self) -> PathBuf {
        self.dir.join("job.json")
    }

    fn done_path(&self, index: usize) -> PathBuf {
        self.dir
            .join("done")
            .join((index / SHARD).to_string())
            .join(index.to_string())
    }

    fn claim_path(&self, index: usize) -> PathBuf {
        self.dir.join("claims").join(index.to_string())
    }

    fn failed_path(&self, index: usize) -> PathBuf {
        self.dir.join("failed").join(index.to_string())
    }

    /// The stored job and its hash, `None` when there is no ledger; an unreadable one is an
    /// error that says how to start over.
    pub fn job(&self) -> Result<Option<(PredictSpec, String)>, ValidatorError> {
        let path = self.job_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let file: JobFile = serde_json::from_str(&text).map_err(|e| ValidatorError::Job {
            path: path.clone(),
            message: format!(
                "is not a dacapo-rs prediction job ({e}); predict again with --overwrite"
            ),
        })?;
        if file.format != FORMAT || file.hash != file.job.hash() {
            return Err(ValidatorError::Job {
                path,
                message: "has another format version or a hash that does not match its job; \
                          predict again with --overwrite"
                    .into(),
            });
        }
        Ok(Some((file.job, file.hash)))
    }

    /// Stores `job` durably (replacing any stored one).
    pub fn write_job(&self, job: &PredictSpec) -> Result<(), ValidatorError> {
        create_dir_durable(&self.dir, true)?;
        let file = JobFile {
            format: FORMAT,
            hash: job.hash(),
            job: job.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        write_atomic(&self.job_path(), &bytes, true)?;
        Ok(())
    }

    /// Whether block `index` is done.
    pub fn is_done(&self, index: usize) -> bool {
        self.done_path(index).exists()
    }

    /// Which of `total` blocks are done.
    pub fn done_blocks(&self, total: usize) -> Result<Vec<bool>, ValidatorError> {
        let mut done = vec![false; total];
        for (_, shard) in indexed_entries(&self.dir.join("done"))? {
            for (i, _) in indexed_entries(&shard)? {
                if i < total {
                    done[i] = true;
                }
            }
        }
        Ok(done)
    }

    /// Marks block `index` done, durably (call only after its chunks are durable).
    pub fn mark_done(&self, index: usize) -> Result<(), ValidatorError> {
        let path = self.done_path(index);
        let shard = path.parent().unwrap_or(&self.dir).to_owned();
        create_dir_durable(&shard, true)?;
        let file = File::create(&path).map_err(io_err("create", &path))?;
        file.sync_all().map_err(io_err("fsync", &path))?;
        fsync_dir(&shard)?;
        Ok(())
    }

    /// Claims block `index` for `worker`; `false` when another claim exists.
    pub fn try_claim(&self, index: usize, worker: &str) -> Result<bool, ValidatorError> {
        let path = self.claim_path(index);
        create_dir_durable(path.parent().unwrap_or(&self.dir), false)?;
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(worker.as_bytes())
                    .map_err(io_err("write", &path))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err("create", &path)(e)),
        }
    }

    /// The claimed blocks and who claimed them.
    pub fn claims(&self) -> Result<Vec<(usize, String)>, ValidatorError> {
        indexed_entries(&self.dir.join("claims"))?
            .into_iter()
            .map(|(i, path)| match fs::read_to_string(&path) {
                Ok(owner) => Ok(Some((i, owner))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err("read", &path)(e)),
            })
            .filter_map(Result::transpose)
            .collect()
    }

    /// Removes the claim of block `index`.
    pub fn release(&self, index: usize) -> Result<(), ValidatorError> {
        remove_file(&self.claim_path(index))
    }

    /// Records that block `index` failed with `message`.
    pub fn record_failure(&self, index: usize, message: &str) -> Result<(), ValidatorError> {
        let path = self.failed_path(index);
        create_dir_durable(path.parent().unwrap_or(&self.dir), false)?;
        write_atomic(&path, message.as_bytes(), false)?;
        Ok(())
    }

    /// The failed blocks and their errors.
    pub fn failures(&self) -> Result<Vec<(usize, String)>, ValidatorError> {
        indexed_entries(&self.dir.join("failed"))?
            .into_iter()
            .map(|(i, path)| {
                fs::read_to_string(&path)
                    .map(|m| (i, m))
                    .map_err(io_err("read", &path))
            })
            .collect()
    }

    /// Forgets every claim and failure (at a new launch, when no worker runs).
    pub fn reset_workers(&self) -> Result<(), ValidatorError> {
        for sub in ["claims", "failed"] {
            for (_, path) in indexed_entries(&self.dir.join(sub))? {
                remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Stores the current launch.
    pub fn write_launch(&self, launch: &Launch) -> Result<(), ValidatorError> {
        create_dir_durable(&self.dir, true)?;
        let bytes = serde_json::to_vec_pretty(launch).unwrap_or_default();
        write_atomic(&self.dir.join("launch.json"), &bytes, true)?;
        Ok(())
    }

    /// The current launch, if one was stored and is readable.
    pub fn launch(&self) -> Option<Launch> {
        let text = fs::read_to_string(self.dir.join("launch.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Progress of the job; `None` when there is no ledger.
    pub fn status(&self) -> Result<Option<Status>, ValidatorError> {
        let Some((job, _)) = self.job()? else {
            return Ok(None);
        };
        let total = job.grid.blocks;
        let done = self.done_blocks(total)?.iter().filter(|d| **d).count();
        let launch = self.launch();
        let rate = launch.as_ref().and_then(|l| {
            let elapsed = now() - l.started;
            let since = done.saturating_sub(l.done_at_start);
            (elapsed > 1.0 && since > 0).then(|| since as f64 / elapsed)
        });
        let failed = self.failures()?;
        let claimed = self.claims()?;
        Ok(Some(Status {
            job,
            total,
            done,
            claimed,
            failed,
            launch,
            rate,
        }))
    }

    fn lock_file(&self, name: &str) -> Result<File, ValidatorError> {
        create_dir_durable(&self.dir, false)?;
        let path = self.dir.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open lock file", &path))
    }

    /// The coordinator's exclusive lock, held while it prepares and watches a launch; an
    /// error when another coordinator holds it.
    pub fn lock_coordinator(&self) -> Result<File, ValidatorError> {
        let file = self.lock_file("coordinator.lock")?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(fs::TryLockError::WouldBlock) => Err(ValidatorError::Busy {
                output: self.output_dir(),
                who: "another `dacapo predict` prepares or watches it".into(),
            }),
            Err(fs::TryLockError::Error(e)) => {
                Err(io_err("lock", &self.dir.join("coordinator.lock"))(e))
            }
        }
    }

    /// Fails when a worker of an earlier launch still runs on this machine or file system.
    pub fn check_no_workers(&self) -> Result<(), ValidatorError> {
        let file = self.lock_file("workers.lock")?;
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(fs::TryLockError::WouldBlock) => Err(ValidatorError::Busy {
                output: self.output_dir(),
                who: "workers of an earlier launch still run (wait for them, or end them)".into(),
            }),
            Err(fs::TryLockError::Error(e)) => {
                Err(io_err("lock", &self.dir.join("workers.lock"))(e))
            }
        }
    }

    /// A shared lock that a worker holds while it runs (`None` where the file system has no
    /// locks; the SLURM queue then tells whether workers run).
    pub fn lock_worker(&self) -> Result<Option<File>, ValidatorError> {
        let file = self.lock_file("workers.lock")?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Err(ValidatorError::Busy {
                output: self.output_dir(),
                who: "a launch is being prepared".into(),
            }),
            Err(fs::TryLockError::Error(_)) => Ok(None),
        }
    }

    fn output_dir(&self) -> PathBuf {
        self.dir.parent().unwrap_or(&self.dir).to_owned()
    }
}

/// Groups the blocks of `claims` by worker.
pub fn claims_by_worker(claims: &[(usize, String)]) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, w) in claims {
        out.entry(w.clone()).or_default().push(*i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PredictSpec {
        PredictSpec {
            run: "r".into(),
            root: "/runs".into(),
            iteration: 10,
            checkpoint_sha256: "ab".into(),
            backend: "flex".into(),
            device: "default".into(),
            input: InputSpec {
                container: "/in.zarr".into(),
                array: "raw".into(),
                shape: vec![64, 64],
                dtype: "uint8".into(),
                low: 0.0,
                high: 255.0,
            },
            output: OutputSpec {
                container: "/out.zarr".into(),
                array: "prediction".into(),
                shape: vec![1, 64, 64],
                chunks: vec![1, 32, 32],
                dtype: "float32".into(),
            },
            grid: GridSpec {
                output_block: vec![36, 36],
                context: vec![20, 20],
                grid: vec![4, 4],
                crop: vec![0, 0],
                padding: "reflect".into(),
                blocks: 2500,
            },
            post_process: None,
        }
    }

    #[test]
    fn job_round_trip_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path(), "out/prediction");
        assert!(ledger.job().unwrap().is_none());
        let job = spec();
        ledger.write_job(&job).unwrap();
        let (read, hash) = ledger.job().unwrap().unwrap();
        assert_eq!(read, job);
        assert_eq!(hash, job.hash());
        let mut other = job.clone();
        other.input.low = 0.5;
        assert_ne!(other.hash(), hash);
        // A tampered job no longer matches its hash.
        let path = ledger.dir().join("job.json");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("\"iteration\": 10", "\"iteration\": 11");
        fs::write(&path, text).unwrap();
        let e = ledger.job().unwrap_err().to_string();
        assert!(e.contains("--overwrite"), "{e}");
        fs::write(&path, "{").unwrap();
        assert!(ledger.job().is_err());
    }

    #[test]
    fn done_claims_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path(), "prediction");
        ledger.write_job(&spec()).unwrap();
        for i in [0, 7, 1999, 2001] {
            ledger.mark_done(i).unwrap();
        }
        let done = ledger.done_blocks(2500).unwrap();
        assert_eq!(done.iter().filter(|d| **d).count(), 4);
        assert!(done[1999] && done[2001] && !done[2000]);
        assert!(ledger.is_done(7) && !ledger.is_done(8));

        assert!(ledger.try_claim(3, "worker 0").unwrap());
        assert!(!ledger.try_claim(3, "worker 1").unwrap());
        assert!(ledger.try_claim(4, "worker 1").unwrap());
        assert_eq!(
            ledger.claims().unwrap(),
            [(3, "worker 0".to_owned()), (4, "worker 1".to_owned())]
        );
        assert_eq!(claims_by_worker(&ledger.claims().unwrap())["worker 1"], [4]);
        ledger.release(3).unwrap();
        ledger.release(3).unwrap();
        ledger.record_failure(4, "out of memory").unwrap();
        let status = ledger.status().unwrap().unwrap();
        assert_eq!((status.done, status.total), (4, 2500));
        assert_eq!(status.claimed.len(), 1);
        assert_eq!(status.failed, [(4, "out of memory".to_owned())]);
        assert_eq!(status.rate, None);
        ledger.reset_workers().unwrap();
        assert!(ledger.claims().unwrap().is_empty());
        assert!(ledger.failures().unwrap().is_empty());

        ledger
            .write_launch(&Launch {
                workers: 2,
                executor: "local".into(),
                slurm_job: None,
                started: now() - 10.0,
                done_at_start: 2,
            })
            .unwrap();
        let status = ledger.status().unwrap().unwrap();
        let rate = status.rate.unwrap();
        assert!((rate - 0.2).abs() < 0.01, "{rate}");
        let eta = status.eta().unwrap().as_secs_f64();
        assert!((eta - 2496.0 / rate).abs() < 1.0, "{eta}");
    }

    #[test]
    fn locks_keep_launches_apart() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path(), "prediction");
        let held = ledger.lock_coordinator().unwrap();
        let e = ledger.lock_coordinator().unwrap_err().to_string();
        assert!(e.contains("another `dacapo predict`"), "{e}");
        drop(held);
        ledger.lock_coordinator().unwrap();
        ledger.check_no_workers().unwrap();
        let worker = ledger.lock_worker().unwrap();
        assert!(worker.is_some());
        let e = ledger.check_no_workers().unwrap_err().to_string();
        assert!(e.contains("still run"), "{e}");
        drop(worker);
        ledger.check_no_workers().unwrap();
    }
}
