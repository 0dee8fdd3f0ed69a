//! [`LocalWeightsStore`]: checkpoints as safetensors files in a local directory tree, committed
//! atomically.
//!
//! Layout under the store root:
//! ```text
//! <run>/checkpoints/iterations/<N>/  model.safetensors optimizer.safetensors state.json MANIFEST.json
//! <run>/checkpoints/LATEST            "<N>\n" (or "<M>\npending <N>\n" while N is being committed)
//! <run>/<dataset>/<criterion>.json    best records
//! ```
//! Commit protocol of checkpoint N: write `model.safetensors`, `optimizer.safetensors` and
//! `state.json` into `iterations/.tmp-<N>-<id>/`, then `MANIFEST.json` (format version,
//! sizes, CRC32C checksums, tensor counts, creation time); fsync all four and the temp
//! directory; make the intent `<M>\npending <N>` durable in `LATEST`; rename the directory to
//! `iterations/<N>` and fsync `iterations/`; finally rewrite `LATEST` as `<N>` (not fsynced:
//! the durable intent already names N). The rename is the commit point: a checkpoint exists
//! only if its directory has its final name and its manifest verifies. For speed, the
//! checksums are computed by helper threads while the bytes are copied into the files, each
//! file's fsync starts as soon as it is complete, and the intent is written meanwhile; no
//! tensor is copied into an intermediate buffer.
//!
//! `LATEST` is a hint. Its `latest` line only ever names a committed checkpoint; the `pending`
//! line makes a checkpoint whose commit finished just before a crash visible without listing
//! the directory. [`LocalWeightsStore::latest_iteration`] reads the hint and verifies the
//! checkpoint it names ([`Verify::Quick`]: the manifest parses and matches, every file exists
//! with its recorded size, and `state.json`'s checksum matches; tensor data checksums are only
//! checked by `retrieve_weights` or [`Verify::Full`], because reading a 300 MB checkpoint to
//! answer "which is the latest" would cost seconds). If the hint is missing or does not
//! verify, integer-named entries are scanned newest first.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use dacapo_core::{RunName, validate_name};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError, corrupt, io_err};
use crate::fsutil::{
    CompareWriter, CrcWriter, SyncBehind, create_dir_durable, file_crc, fsync_dir, read_optional,
    unique_suffix, write_atomic,
};
use crate::json;
use crate::layout;
use crate::st;
use crate::traits::{BestRecord, TrainState, Weights, WeightsStore};

/// File name of the model tensors in a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// File name of the optimizer tensors in a checkpoint directory.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File name of the train state in a checkpoint directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the manifest in a checkpoint directory.
pub const MANIFEST_FILE: &str = "MANIFEST.json";
/// Manifest format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;

/// Prefix of temp entries in `iterations/`; never a checkpoint.
const TMP_PREFIX: &str = ".tmp-";

/// How thoroughly a checkpoint is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Manifest parses and matches, files exist with their recorded sizes, `state.json`'s
    /// checksum matches. A few small reads: independent of the checkpoint size.
    Quick,
    /// Everything of `Quick` plus the CRC32C of every file (reads the whole checkpoint).
    Full,
}

/// One file of a checkpoint as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Size in bytes.
    pub size: u64,
    /// CRC32C (Castagnoli) of the whole file.
    pub crc32c: u32,
    /// Number of tensors, for safetensors files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<usize>,
}

/// `MANIFEST.json` of a checkpoint: written last, it describes and checksums every other file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The checkpoint's iteration.
    pub iteration: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Version of dacapo-store that wrote it.
    pub store_version: String,
    /// Backend that produced the weights (from the train state).
    pub backend: String,
    /// Hash of the run config (from the train state).
    pub config_hash: String,
    /// Every other file of the checkpoint by name.
    pub files: BTreeMap<String, FileEntry>,
}

impl Manifest {
    /// The manifest of checkpoint `iteration` with train state `state` and `files`, made now.
    pub fn new(iteration: u64, state: &TrainState, files: BTreeMap<String, FileEntry>) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            iteration,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            store_version: env!("CARGO_PKG_VERSION").to_owned(),
            backend: state.backend.clone(),
            config_hash: state.config_hash.clone(),
            files,
        }
    }

    /// The bytes of `MANIFEST.json`.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| StoreError::Invalid(format!("manifest cannot be written: {e}")))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Parses `MANIFEST.json` read from `path` (named in errors) and checks that it is of
    /// this format version, for `iteration`, and lists every file of a checkpoint.
    pub fn from_json(bytes: &[u8], iteration: u64, path: &Path) -> Result<Self> {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(path, format!("manifest check failed: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(corrupt(
                path,
                format!(
                    "format version check failed: version {} is not readable by this build (reads {FORMAT_VERSION})",
                    manifest.format_version
                ),
            ));
        }
        if manifest.iteration != iteration {
            return Err(corrupt(
                path,
                format!(
                    "iteration check failed: the manifest is for iteration {}, the directory for {iteration}",
                    manifest.iteration
                ),
            ));
        }
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            if !manifest.files.contains_key(name) {
                return Err(corrupt(
                    path,
                    format!("manifest check failed: it lists no {name}"),
                ));
            }
        }
        Ok(manifest)
    }
}

/// The `LATEST` hint: the newest committed checkpoint, and one being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The newest committed checkpoint when the hint was written.
    pub latest: Option<u64>,
    /// A newer checkpoint whose commit was under way.
    pub pending: Option<u64>,
}

impl Hint {
    /// Parses the content of a `LATEST` file; `None` if it is not a valid hint.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        let latest = match lines.next()?.trim() {
            "none" => None,
            n => Some(canonical_u64(n)?),
        };
        let pending = match lines.next() {
            None => None,
            Some(l) => Some(canonical_u64(l.trim().strip_prefix("pending ")?)?),
        };
        if lines.next().is_some() {
            return None;
        }
        Some(Self { latest, pending })
    }

    /// The content of a `LATEST` file.
    pub fn render(&self) -> String {
        let mut s = self
            .latest
            .map_or_else(|| "none".to_owned(), |n| n.to_string());
        s.push('\n');
        if let Some(p) = self.pending {
            s.push_str(&format!("pending {p}\n"));
        }
        s
    }
}

/// A decimal u64 without sign, leading zeros or anything else (`1000.tmp`, `007` are foreign).
pub fn canonical_u64(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().filter(|n| n.to_string() == s)
}

/// Checkpoints and best records in a local directory (seed: DaCapo's `LocalWeightsStore`).
///
/// Crash-safe: a process killed at any moment leaves either the previous or the new checkpoint
/// committed, never a half-written one that verifies. One writer per run at a time: hold a
/// [`RunLock`](crate::RunLock) while storing (readers need none). A writer removes leftover
/// temp entries of crashed writers the first time it stores into a run.
#[derive(Debug)]
pub struct LocalWeightsStore {
    root: PathBuf,
    fsync: bool,
    /// Runs whose directories exist and whose leftovers were cleaned by this instance.
    prepared: Mutex<HashSet<RunName>>,
}

impl LocalWeightsStore {
    /// A store rooted at `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            fsync: true,
            prepared: Mutex::new(HashSet::new()),
        }
    }

    /// Turns fsync off (`false`) or on (default). Without fsync a process kill still loses
    /// nothing, but a power loss can lose recent checkpoints: for tests and benchmarks only.
    pub fn with_fsync(mut self, fsync: bool) -> Self {
        self.fsync = fsync;
        self
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `run` (`<root>/<run>`).
    pub fn run_dir(&self, run: &RunName) -> PathBuf {
        layout::run_dir(&self.root, run)
    }

    /// The directory of checkpoint `iteration` of `run` (whether or not it exists).
    pub fn checkpoint_dir(&self, run: &RunName, iteration: u64) -> PathBuf {
        self.iterations_dir(run).join(iteration.to_string())
    }

    fn iterations_dir(&self, run: &RunName) -> PathBuf {
        self.run_dir(run)
            .join(layout::CHECKPOINTS_DIR)
            .join(layout::ITERATIONS_DIR)
    }

    fn latest_path(&self, run: &RunName) -> PathBuf {
        self.run_dir(run)
            .join(layout::CHECKPOINTS_DIR)
            .join(layout::LATEST_FILE)
    }

    /// Verifies checkpoint `iteration` of `run` and returns its manifest.
    ///
    /// `NotFound` if its directory does not exist; `Corrupt` naming the file and the failed
    /// check otherwise.
    pub fn verify(&self, run: &RunName, iteration: u64, level: Verify) -> Result<Manifest> {
        let dir = self.checkpoint_dir(run, iteration);
        check_dir(&dir, iteration, level).map_err(|e| not_found_as_checkpoint(e, run, iteration))
    }

    /// Like [`WeightsStore::latest_iteration`], verifying candidates at `level`.
    pub fn latest_iteration_verified(&self, run: &RunName, level: Verify) -> Result<Option<u64>> {
        let it_dir = self.iterations_dir(run);
        let latest = self.latest_path(run);
        match read_optional(&latest)? {
            Some(bytes) => match Hint::parse(&bytes) {
                Some(hint) => {
                    if let Some(p) = hint.pending.filter(|&p| hint.latest.is_none_or(|l| p > l)) {
                        match check_dir(&it_dir.join(p.to_string()), p, level) {
                            Ok(_) => return Ok(Some(p)),
                            // Crashed before the commit rename: the previous one stands.
                            Err(StoreError::NotFound { .. }) => {}
                            Err(e) => tracing::warn!("skipping checkpoint {p} of run `{run}`: {e}"),
                        }
                    }
                    if let Some(l) = hint.latest {
                        match check_dir(&it_dir.join(l.to_string()), l, level) {
                            Ok(_) => return Ok(Some(l)),
                            Err(e) => tracing::warn!(
                                "LATEST of run `{run}` names checkpoint {l}, which fails \
                                 verification ({e}); scanning for the newest good checkpoint"
                            ),
                        }
                    }
                }
                None => tracing::warn!(
                    "{} is not a valid LATEST hint; scanning for the newest good checkpoint",
                    latest.display()
                ),
            },
            None => {
                if !it_dir.exists() {
                    return Ok(None);
                }
            }
        }
        scan_latest(&it_dir, run, level)
    }

    /// Creates the run's checkpoint directories (durably) and removes leftovers of crashed
    /// writers, once per run and store instance.
    fn prepare(&self, run: &RunName) -> Result<PathBuf> {
        let it_dir = self.iterations_dir(run);
        let mut prepared = self
            .prepared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prepared.contains(run) {
            return Ok(it_dir);
        }
        create_dir_durable(&it_dir, self.fsync)?;
        let mut removed_any = false;
        for entry in fs::read_dir(&it_dir).map_err(io_err("list", &it_dir))? {
            let entry = entry.map_err(io_err("list", &it_dir))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TMP_PREFIX) {
                let path = entry.path();
                tracing::info!(
                    "removing leftover {} of an interrupted write",
                    path.display()
                );
                match fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path)) {
                    Ok(()) => removed_any = true,
                    Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
                }
            }
        }
        if let Some(cp_dir) = it_dir.parent() {
            for entry in fs::read_dir(cp_dir).map_err(io_err("list", cp_dir))? {
                let entry = entry.map_err(io_err("list", cp_dir))?;
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".LATEST.tmp-")
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        if removed_any && self.fsync {
            fsync_dir(&it_dir)?;
        }
        prepared.insert(run.clone());
        Ok(it_dir)
    }

    /// Whether checkpoint `dir` verifies and holds exactly the bytes `weights` would be
    /// written as.
    fn existing_matches(&self, dir: &Path, iteration: u64, weights: &Weights) -> Result<bool> {
        let Ok(manifest) = check_dir(dir, iteration, Verify::Quick) else {
            return Ok(false);
        };
        let state_bytes = state_json(&weights.state)?;
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            let path = dir.join(name);
            let mut w = CrcWriter::new(CompareWriter::open(&path)?);
            match name {
                MODEL_FILE => st::write_tensors(&mut w, &weights.model, &path)?,
                OPTIMIZER_FILE => st::write_tensors(&mut w, &weights.optimizer, &path)?,
                _ => w.write_all(&state_bytes).map_err(io_err("read", &path))?,
            }
            let (crc, len) = (w.crc, w.len);
            let same_bytes = w.inner.finish()?;
            let recorded = manifest.files.get(name);
            if !same_bytes || recorded.is_none_or(|e| e.crc32c != crc || e.size != len) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Moves checkpoint `dir` out of the committed namespace, then deletes it.
    fn uncommit(&self, it_dir: &Path, dir: &Path, iteration: u64) -> Result<()> {
        let trash = it_dir.join(format!("{TMP_PREFIX}rm-{iteration}-{}", unique_suffix()));
        fs::rename(dir, &trash).map_err(io_err("rename for removal", dir))?;
        if self.fsync {
            fsync_dir(it_dir)?;
        }
        if let Err(e) = fs::remove_dir_all(&trash) {
            tracing::warn!(
                "cannot delete {} (it is no longer a checkpoint and will be removed by the next \
                 writer): {e}",
                trash.display()
            );
        }
        Ok(())
    }

    /// Rewrites `LATEST` from a scan if it mentions one of `gone`.
    fn repair_hint(&self, run: &RunName, gone: &[u64]) -> Result<()> {
        let latest_path = self.latest_path(run);
        let Some(bytes) = read_optional(&latest_path)? else {
            return Ok(());
        };
        let hint = Hint::parse(&bytes);
        let stale = hint.is_none_or(|h| {
            h.latest.is_some_and(|l| gone.contains(&l))
                || h.pending.is_some_and(|p| gone.contains(&p))
        });
        if stale {
            let latest = scan_latest(&self.iterations_dir(run), run, Verify::Quick)?;
            let text = Hint {
                latest,
                pending: None,
            }
            .render();
            write_atomic(&latest_path, text.as_bytes(), false)?;
        }
        Ok(())
    }

    /// Every best record of `run`, ordered by dataset, then criterion.
    fn list_best(&self, run: &RunName) -> Result<Vec<BestRecord>> {
        let run_dir = self.run_dir(run);
        let mut datasets = Vec::new();
        let entries = match fs::read_dir(&run_dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &run_dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &run_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if layout::is_dataset_entry(&name) && entry.path().is_dir() {
                datasets.push(name);
            }
        }
        datasets.sort();
        let mut out = Vec::new();
        for dataset in datasets {
            let ds_dir = run_dir.join(&dataset);
            let mut criteria = Vec::new();
            for rec in fs::read_dir(&ds_dir).map_err(io_err("list", &ds_dir))? {
                let rec = rec.map_err(io_err("list", &ds_dir))?;
                let fname = rec.file_name().to_string_lossy().into_owned();
                if let Some(criterion) = fname.strip_suffix(".json")
                    && validate_name("criterion", criterion).is_ok()
                {
                    criteria.push(criterion.to_owned());
                }
            }
            criteria.sort();
            for criterion in criteria {
                out.push(self.retrieve_best(run, &dataset, &criterion)?);
            }
        }
        Ok(out)
    }
}

/// Maps a bare `NotFound` from `check_dir` to one naming the checkpoint and run.
fn not_found_as_checkpoint(e: StoreError, run: &RunName, iteration: u64) -> StoreError {
    match e {
        StoreError::NotFound { path, .. } => StoreError::NotFound {
            what: format!(
                "checkpoint {iteration} of run `{run}` (list the stored ones with `iterations`)"
            ),
            path,
        },
        other => other,
    }
}

/// Verifies the checkpoint directory `dir` of `iteration` at `level`.
fn check_dir(dir: &Path, iteration: u64, level: Verify) -> Result<Manifest> {
    let mpath = dir.join(MANIFEST_FILE);
    let Some(bytes) = read_optional(&mpath)? else {
        if dir.exists() {
            return Err(corrupt(
                &mpath,
                "manifest check failed: MANIFEST.json is missing",
            ));
        }
        return Err(StoreError::NotFound {
            what: format!("checkpoint {iteration}"),
            path: dir.to_path_buf(),
        });
    };
    let manifest = Manifest::from_json(&bytes, iteration, &mpath)?;
    for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
        let Some(entry) = manifest.files.get(name) else {
            continue;
        };
        let path = dir.join(name);
        let size = match fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(corrupt(
                    &path,
                    "existence check failed: the file is missing",
                ));
            }
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        if size != entry.size {
            return Err(corrupt(
                &path,
                format!(
                    "size check failed: the manifest says {} bytes, the file has {size}",
                    entry.size
                ),
            ));
        }
        if level == Verify::Full || name == STATE_FILE {
            let (_, crc) = file_crc(&path)?;
            if crc != entry.crc32c {
                return Err(corrupt(
                    &path,
                    format!(
                        "crc32c check failed: the manifest says {:#010x}, the file has {crc:#010x}",
                        entry.crc32c
                    ),
                ));
            }
        }
    }
    Ok(manifest)
}

/// The newest integer-named entry of `it_dir` that verifies at `level`.
fn scan_latest(it_dir: &Path, run: &RunName, level: Verify) -> Result<Option<u64>> {
    let mut candidates = list_iterations(it_dir)?;
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    for n in candidates {
        match check_dir(&it_dir.join(n.to_string()), n, level) {
            Ok(_) => return Ok(Some(n)),
            Err(e) => tracing::warn!("skipping checkpoint {n} of run `{run}`: {e}"),
        }
    }
    Ok(None)
}

/// Integer-named entries of `it_dir` (unverified, unordered); empty if it does not exist.
fn list_iterations(it_dir: &Path) -> Result<Vec<u64>> {
    let entries = match fs::read_dir(it_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", it_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", it_dir))?;
        if let Some(n) = entry.file_name().to_str().and_then(canonical_u64) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The `state.json` of checkpoint directory `dir`, checked against its `manifest` entry.
fn read_state(dir: &Path, manifest: &Manifest) -> Result<TrainState> {
    let e = manifest.files.get(STATE_FILE).ok_or_else(|| {
        corrupt(
            &dir.join(MANIFEST_FILE),
            format!("it lists no {STATE_FILE}"),
        )
    })?;
    let path = dir.join(STATE_FILE);
    let bytes = fs::read(&path).map_err(io_err("read", &path))?;
    let crc = crc32c::crc32c(&bytes);
    if crc != e.crc32c || bytes.len() as u64 != e.size {
        return Err(corrupt(
            &path,
            format!(
                "crc32c check failed: the manifest says {:#010x}, the file has {crc:#010x}",
                e.crc32c
            ),
        ));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| corrupt(&path, "state check failed: not UTF-8"))?;
    json::from_str_exact(text).map_err(|e| corrupt(&path, format!("state check failed: {e}")))
}

/// The bytes of `state.json` for `state`.
pub fn state_json(state: &TrainState) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(state)
        .map_err(|e| StoreError::Invalid(format!("train state cannot be written as JSON: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn read_best(path: &Path) -> Result<BestRecord> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    best_from_json(&bytes, path)
}

/// Passes when `verified`, the quick verification of the checkpoint `record` points to,
/// found it; a missing checkpoint becomes an error saying to store its weights first.
pub fn best_target_exists<T>(
    run: &RunName,
    record: &BestRecord,
    verified: Result<T>,
) -> Result<()> {
    match verified {
        Ok(_) => Ok(()),
        Err(StoreError::NotFound { path, .. }) => Err(StoreError::NotFound {
            what: format!(
                "checkpoint {} of run `{run}` (a best record must point to a committed \
                 checkpoint: store its weights first)",
                record.iteration
            ),
            path,
        }),
        Err(e) => Err(e),
    }
}

/// The bytes of a best record file.
pub fn best_to_json(record: &BestRecord) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| StoreError::Invalid(format!("best record cannot be written: {e}")))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Parses a best record file read from `path` (named in errors).
pub fn best_from_json(bytes: &[u8], path: &Path) -> Result<BestRecord> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| corrupt(path, "best record check failed: not UTF-8"))?;
    json::from_str_exact(text).map_err(|e| corrupt(path, format!("best record check failed: {e}")))
}

/// Checks a dataset and a criterion name of a best record.
pub fn check_dataset_criterion(dataset: &str, criterion: &str) -> Result<()> {
    validate_name("dataset", dataset)?;
    validate_name("criterion", criterion)?;
    if dacapo_core::RESERVED_DATASET_NAMES.contains(&dataset) {
        return Err(StoreError::Invalid(format!(
            "dataset name `{dataset}` is reserved (it is used by the run directory); rename the dataset"
        )));
    }
    Ok(())
}

/// Creates `path` and writes it through a buffered writer; with `fsync`, returns the
/// background sync that makes it durable (it starts as soon as the file is complete).
fn create_file(
    path: &Path,
    fsync: bool,
    body: impl FnOnce(&mut BufWriter<&File>) -> Result<()>,
) -> Result<Option<SyncBehind>> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    let mut sync = if fsync {
        Some(SyncBehind::start(&file, path)?)
    } else {
        None
    };
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    body(&mut w)?;
    w.flush().map_err(io_err("write", path))?;
    if let Some(s) = sync.as_mut() {
        s.close();
    }
    Ok(sync)
}

/// The manifest entry of a small file written from `bytes`.
pub fn small_entry(bytes: &[u8]) -> FileEntry {
    FileEntry {
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(bytes),
        tensors: None,
    }
}

impl WeightsStore for LocalWeightsStore {
    fn latest_iteration(&self, run: &RunName) -> Result<Option<u64>> {
        self.latest_iteration_verified(run, Verify::Quick)
    }

    fn store_weights(&self, run: &RunName, iteration: u64, weights: &Weights) -> Result<()> {
        if weights.state.iteration != iteration {
            return Err(StoreError::Invalid(format!(
                "the train state says iteration {} but the checkpoint is stored as iteration \
                 {iteration}; set state.iteration to the checkpoint's iteration",
                weights.state.iteration
            )));
        }
        st::check_tensors(&weights.model, "model")?;
        st::check_tensors(&weights.optimizer, "optimizer")?;
        let it_dir = self.prepare(run)?;
        let final_dir = it_dir.join(iteration.to_string());
        if fs::symlink_metadata(&final_dir).is_ok() {
            if self.existing_matches(&final_dir, iteration, weights)? {
                return Ok(());
            }
            match check_dir(&final_dir, iteration, Verify::Full) {
                Ok(_) => {
                    return Err(StoreError::Exists {
                        run: run.to_string(),
                        iteration,
                        path: final_dir,
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        "replacing checkpoint {iteration} of run `{run}`, which fails verification: {e}"
                    );
                    self.uncommit(&it_dir, &final_dir, iteration)?;
                }
            }
        }

        let current = self.latest_iteration(run)?;
        let tmp = it_dir.join(format!("{TMP_PREFIX}{iteration}-{}", unique_suffix()));
        fs::create_dir(&tmp).map_err(io_err("create directory", &tmp))?;
        let written = self.write_checkpoint(&tmp, iteration, weights, current, run);
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        let intent = written?;

        if let Err(e) = fs::rename(&tmp, &final_dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io_err("commit (rename) checkpoint", &final_dir)(e));
        }
        if self.fsync {
            fsync_dir(&it_dir)?;
        }
        if intent {
            // Not fsynced: if this is lost, the durable "pending" line still names `iteration`.
            let hint = Hint {
                latest: Some(iteration),
                pending: None,
            };
            write_atomic(&self.latest_path(run), hint.render().as_bytes(), false)?;
        }
        Ok(())
    }

    fn retrieve_weights(&self, run: &RunName, iteration: u64) -> Result<Weights> {
        let dir = self.checkpoint_dir(run, iteration);
        let manifest = self.verify(run, iteration, Verify::Quick)?;
        let entry = |name: &str| {
            manifest
                .files
                .get(name)
                .cloned()
                .ok_or_else(|| corrupt(&dir.join(MANIFEST_FILE), format!("it lists no {name}")))
        };
        let mut maps = Vec::with_capacity(2);
        for name in [MODEL_FILE, OPTIMIZER_FILE] {
            let e = entry(name)?;
            let path = dir.join(name);
            let map = st::read_tensors(&path, e.size, e.crc32c)?;
            if let Some(count) = e.tensors
                && count != map.len()
            {
                return Err(corrupt(
                    &path,
                    format!(
                        "tensor count check failed: the manifest says {count}, the file has {}",
                        map.len()
                    ),
                ));
            }
            maps.push(map);
        }
        let state = read_state(&dir, &manifest)?;
        let optimizer = maps.pop().unwrap_or_default();
        let model = maps.pop().unwrap_or_default();
        Ok(Weights {
            model,
            optimizer,
            state,
        })
    }

    fn retrieve_state(&self, run: &RunName, iteration: u64) -> Result<TrainState> {
        let manifest = self.verify(run, iteration, Verify::Quick)?;
        read_state(&self.checkpoint_dir(run, iteration), &manifest)
    }

    fn remove(&self, run: &RunName, iteration: u64) -> Result<()> {
        let it_dir = self.iterations_dir(run);
        let dir = it_dir.join(iteration.to_string());
        if !dir.is_dir() {
            return Err(StoreError::NotFound {
                what: format!(
                    "checkpoint {iteration} of run `{run}` (list the stored ones with `iterations`)"
                ),
                path: dir,
            });
        }
        self.uncommit(&it_dir, &dir, iteration)?;
        self.repair_hint(run, &[iteration])
    }

    fn store_best(&self, run: &RunName, record: &BestRecord) -> Result<()> {
        let run_dir = self.run_dir(run);
        check_dataset_criterion(&record.dataset, &record.criterion)?;
        best_target_exists(
            run,
            record,
            self.verify(run, record.iteration, Verify::Quick),
        )?;
        let dir = run_dir.join(&record.dataset);
        create_dir_durable(&dir, self.fsync)?;
        let bytes = best_to_json(record)?;
        write_atomic(
            &dir.join(format!("{}.json", record.criterion)),
            &bytes,
            self.fsync,
        )
    }

    fn retrieve_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<BestRecord> {
        let run_dir = self.run_dir(run);
        check_dataset_criterion(dataset, criterion)?;
        let path = run_dir.join(dataset).join(format!("{criterion}.json"));
        if !path.exists() {
            return Err(StoreError::NotFound {
                what: format!(
                    "best record for dataset `{dataset}` and criterion `{criterion}` of run `{run}`"
                ),
                path,
            });
        }
        let record = read_best(&path)?;
        if record.dataset != dataset || record.criterion != criterion {
            return Err(corrupt(
                &path,
                format!(
                    "best record check failed: it is for dataset `{}` and criterion `{}`",
                    record.dataset, record.criterion
                ),
            ));
        }
        Ok(record)
    }

    fn best_records(&self, run: &RunName) -> Result<Vec<BestRecord>> {
        self.list_best(run)
    }

    fn remove_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<()> {
        check_dataset_criterion(dataset, criterion)?;
        let dir = self.run_dir(run).join(dataset);
        let path = dir.join(format!("{criterion}.json"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("delete", &path)(e)),
        }
        // The dataset directory goes with its last record.
        let _ = fs::remove_dir(&dir);
        if self.fsync {
            fsync_dir(&self.run_dir(run))?;
        }
        Ok(())
    }

    fn iterations(&self, run: &RunName) -> Result<Vec<u64>> {
        let it_dir = self.iterations_dir(run);
        let mut out: Vec<u64> = list_iterations(&it_dir)?
            .into_iter()
            .filter(
                |&n| match check_dir(&it_dir.join(n.to_string()), n, Verify::Quick) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!("skipping checkpoint {n} of run `{run}`: {e}");
                        false
                    }
                },
            )
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn apply_retention(&self, run: &RunName, keep_last: usize) -> Result<Vec<u64>> {
        let it_dir = self.iterations_dir(run);
        let all = self.iterations(run)?;
        let best: BTreeSet<u64> = self.list_best(run)?.iter().map(|b| b.iteration).collect();
        let newest: HashSet<u64> = all.iter().rev().take(keep_last.max(1)).copied().collect();
        let removed: Vec<u64> = all
            .into_iter()
            .filter(|n| !newest.contains(n) && !best.contains(n))
            .collect();
        let mut trash = Vec::with_capacity(removed.len());
        for &n in &removed {
            let dir = it_dir.join(n.to_string());
            let t = it_dir.join(format!("{TMP_PREFIX}rm-{n}-{}", unique_suffix()));
            fs::rename(&dir, &t).map_err(io_err("rename for removal", &dir))?;
            trash.push(t);
        }
        if !removed.is_empty() && self.fsync {
            fsync_dir(&it_dir)?;
        }
        for t in trash {
            if let Err(e) = fs::remove_dir_all(&t) {
                tracing::warn!("cannot delete {}: {e}", t.display());
            }
        }
        if !removed.is_empty() {
            self.repair_hint(run, &removed)?;
        }
        Ok(removed)
    }
}

impl LocalWeightsStore {
    /// Writes the four files of checkpoint `iteration` into `tmp` and makes them durable,
    /// together with the `LATEST` intent when `iteration` is newer than `current`. Returns
    /// whether the intent was written.
    fn write_checkpoint(
        &self,
        tmp: &Path,
        iteration: u64,
        weights: &Weights,
        current: Option<u64>,
        run: &RunName,
    ) -> Result<bool> {
        let fsync = self.fsync;
        let layouts = [
            (MODEL_FILE, st::Layout::new(&weights.model)?),
            (OPTIMIZER_FILE, st::Layout::new(&weights.optimizer)?),
        ];
        let state_bytes = state_json(&weights.state)?;
        let intent = current.is_none_or(|c| iteration > c);
        let latest_path = self.latest_path(run);
        let write_intent = || -> Result<()> {
            if !intent {
                return Ok(());
            }
            let hint = Hint {
                latest: current,
                pending: Some(iteration),
            };
            write_atomic(&latest_path, hint.render().as_bytes(), fsync)
        };
        // Everything that does not depend on the file contents runs beside the writing: the
        // checksums (CPU) while this thread copies the bytes into the files, each file's
        // fsync as soon as the file is complete, and the durable LATEST intent. Only the
        // manifest waits for the checksums, and only the commit rename waits for the syncs.
        let mut syncs = Vec::with_capacity(4);
        let result = std::thread::scope(|s| -> Result<()> {
            let intent_job = s.spawn(write_intent);
            let crc_jobs: Vec<_> = layouts
                .iter()
                .map(|(_, layout)| s.spawn(|| layout.size_and_crc()))
                .collect();
            let mut write = || -> Result<()> {
                for (name, layout) in &layouts {
                    let path = tmp.join(name);
                    syncs.extend(create_file(&path, fsync, |w| layout.write_to(w, &path))?);
                }
                let state_path = tmp.join(STATE_FILE);
                syncs.extend(create_file(&state_path, fsync, |w| {
                    w.write_all(&state_bytes)
                        .map_err(io_err("write", &state_path))
                })?);
                Ok(())
            };
            let written = write();
            let mut files = BTreeMap::new();
            for ((name, layout), job) in layouts.iter().zip(crc_jobs) {
                let (size, crc32c) = job.join().unwrap_or((0, 0));
                files.insert(
                    (*name).to_owned(),
                    FileEntry {
                        size,
                        crc32c,
                        tensors: Some(layout.tensors()),
                    },
                );
            }
            files.insert(STATE_FILE.to_owned(), small_entry(&state_bytes));
            let intent_done = intent_job.join().unwrap_or_else(|_| {
                Err(StoreError::Invalid(
                    "the LATEST writer thread panicked".to_owned(),
                ))
            });
            written?;
            intent_done?;
            let manifest_bytes = Manifest::new(iteration, &weights.state, files).to_json()?;
            let manifest_path = tmp.join(MANIFEST_FILE);
            syncs.extend(create_file(&manifest_path, fsync, |w| {
                w.write_all(&manifest_bytes)
                    .map_err(io_err("write", &manifest_path))
            })?);
            // The temp directory's entries, beside the file syncs still running.
            let dir_job = fsync.then(|| s.spawn(|| fsync_dir(tmp)));
            let mut result = Ok(());
            for sync in syncs.drain(..) {
                let r = sync.finish();
                if result.is_ok() {
                    result = r;
                }
            }
            if let Some(job) = dir_job {
                let r = job.join().unwrap_or_else(|_| {
                    Err(StoreError::Invalid(
                        "the directory fsync thread panicked".to_owned(),
                    ))
                });
                if result.is_ok() {
                    result = r;
                }
            }
            result
        });
        // After an early error, syncs still pending finish on their own (their threads own
        // file handles); the temp directory is removed by the caller.
        result?;
        Ok(intent)
    }
}
