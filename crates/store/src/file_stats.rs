//! [`FileStatsStore`]: training stats and validation scores as append-only JSON-lines files.
//!
//! Layout under the store root:
//! ```text
//! stats/training_stats/<run>/stats.jsonl           one TrainingIterationStats per line
//! stats/validation_scores/<run>/meta.json          ValidationMeta
//! stats/validation_scores/<run>/scores.jsonl       one ValidationIterationScores per line
//! ```
//! Each line is one JSON object ending in `\n` (readable by `jq` or pandas'
//! `read_json(lines=True)`); NaN is written as `null` and infinities as `"Infinity"` /
//! `"-Infinity"`.
//!
//! A store call writes only what the file lacks: the store keeps, per run, what is on disk
//! (the records and where each line ends) and an open append handle. The caller's stats are
//! compared with the stored ones at their boundaries (first record, and the record at the
//! stored length), which detects the usual divergence after a resume (stats cut back with
//! `delete_after`, then extended differently) in O(1); on a mismatch the exact common prefix
//! is found, the file is truncated to it and the rest appended. Validation scores (a few
//! hundred records at most) are compared in full. Nothing is fsynced per call: a killed
//! process loses nothing that a completed call wrote; [`StatsStore::sync`] makes it durable
//! against power loss.
//!
//! On reading, a last line without its `\n` (a write torn by a crash) is ignored, and cut off
//! when the file is next opened for writing; a bad line anywhere else is a corruption error
//! naming the file and line.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dacapo_core::{
    RunName, TrainingIterationStats, TrainingStats, ValidationIterationScores, ValidationMeta,
    ValidationScores,
};

use crate::error::{Result, StoreError, corrupt, io_err};
use crate::fsutil::{create_dir_durable, fsync_dir, read_optional, write_atomic};
use crate::json;
use crate::layout;
use crate::traits::StatsStore;

/// Reads of a file that a writer is changing before a check failure is reported.
const READ_ATTEMPTS: u32 = 8;

/// One record kind of a JSON-lines log.
trait Record: Sized + Clone {
    /// Appends the record as one line with its `\n`.
    fn write_line(&self, out: &mut String) -> Result<()>;
    /// Parses one line (without its `\n`).
    fn parse_line(line: &[u8]) -> Result<Self, String>;
    /// A fast path: the record at the start of `bytes` and its line length with the `\n`, if
    /// it is in the writer's exact format.
    fn parse_prefix(_bytes: &[u8]) -> Option<(Self, usize)> {
        None
    }
    /// Whether two records are the same (NaN equals NaN; bit-exact otherwise).
    fn same(&self, other: &Self) -> bool;
    /// Whether `next` may follow `prev` in a file; the error says why not.
    fn check_order(prev: &Self, next: &Self) -> Result<(), String>;
}

fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

impl Record for TrainingIterationStats {
    fn write_line(&self, out: &mut String) -> Result<()> {
        json::write_training_line(out, self);
        Ok(())
    }

    fn parse_line(line: &[u8]) -> Result<Self, String> {
        json::parse_training_line(line)
    }

    fn parse_prefix(bytes: &[u8]) -> Option<(Self, usize)> {
        json::parse_training_canonical(bytes)
    }

    fn same(&self, other: &Self) -> bool {
        self.iteration == other.iteration
            && same_f64(self.loss, other.loss)
            && same_f64(self.time, other.time)
    }

    fn check_order(prev: &Self, next: &Self) -> Result<(), String> {
        if next.iteration == prev.iteration + 1 {
            Ok(())
        } else {
            Err(format!(
                "iteration {} does not follow iteration {} (training stats must be consecutive)",
                next.iteration, prev.iteration
            ))
        }
    }
}

impl Record for ValidationIterationScores {
    fn write_line(&self, out: &mut String) -> Result<()> {
        let line = serde_json::to_string(self).map_err(|e| {
            StoreError::Invalid(format!(
                "validation scores of iteration {} cannot be written as JSON: {e}",
                self.iteration
            ))
        })?;
        out.push_str(&line);
        out.push('\n');
        Ok(())
    }

    fn parse_line(line: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(line).map_err(|_| "invalid UTF-8".to_owned())?;
        json::from_str_exact(text)
    }

    fn same(&self, other: &Self) -> bool {
        self == other
    }

    fn check_order(prev: &Self, next: &Self) -> Result<(), String> {
        if next.iteration > prev.iteration {
            Ok(())
        } else {
            Err(format!(
                "iteration {} does not come after iteration {} (validation scores must be in \
                 increasing iteration order)",
                next.iteration, prev.iteration
            ))
        }
    }
}

/// Parses the content of a JSON-lines file; returns the records, the byte offset where each
/// record's line ends, and the length of the valid part (without a torn last line).
fn parse_log<R: Record>(path: &Path, bytes: &[u8]) -> Result<(Vec<R>, Vec<u64>, u64)> {
    let mut records: Vec<R> = Vec::new();
    let mut ends = Vec::new();
    let mut start = 0usize;
    let mut line_no = 0usize;
    while start < bytes.len() {
        line_no += 1;
        let (record, next) = match R::parse_prefix(&bytes[start..]) {
            Some((record, used)) => (record, start + used),
            None => {
                // No `\n` left: a torn last line, ignored.
                let Some(rel) = bytes[start..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &bytes[start..start + rel];
                if line.iter().all(u8::is_ascii_whitespace) {
                    start += rel + 1;
                    continue;
                }
                let record = R::parse_line(line)
                    .map_err(|e| corrupt(path, format!("line {line_no} check failed: {e}")))?;
                (record, start + rel + 1)
            }
        };
        if let Some(prev) = records.last() {
            R::check_order(prev, &record)
                .map_err(|e| corrupt(path, format!("line {line_no} check failed: {e}")))?;
        }
        records.push(record);
        start = next;
        ends.push(start as u64);
    }
    Ok((records, ends, start as u64))
}

/// What is on disk of one JSON-lines file, with an append handle.
struct Log<R> {
    path: PathBuf,
    file: File,
    records: Vec<R>,
    /// Byte offset where the line of `records[i]` ends (after its `\n`).
    ends: Vec<u64>,
    /// Length of the file as this log wrote or read it.
    len: u64,
    buf: String,
}

impl<R: Record> Log<R> {
    /// Opens (creating) `path` for appending and reads what it holds, cutting off a torn
    /// last line.
    fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            create_dir_durable(dir, false)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
        let (records, ends, valid) = parse_log::<R>(path, &bytes)?;
        if valid < bytes.len() as u64 {
            tracing::warn!(
                "{}: cutting off a torn last line ({} bytes) left by an interrupted write",
                path.display(),
                bytes.len() as u64 - valid
            );
            file.set_len(valid).map_err(io_err("truncate", path))?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            records,
            ends,
            len: valid,
            buf: String::new(),
        })
    }

    /// How many leading records of `mem` are already on disk as they are.
    fn common_prefix(&self, mem: &[R], full: bool) -> usize {
        let d = self.records.len();
        let boundary_ok = d == 0
            || (mem.len() >= d
                && mem[0].same(&self.records[0])
                && mem[d - 1].same(&self.records[d - 1]));
        if boundary_ok && (!full || mem.iter().zip(&self.records).all(|(a, b)| a.same(b))) {
            return d;
        }
        mem.iter()
            .zip(&self.records)
            .take_while(|(a, b)| a.same(b))
            .count()
    }

    /// Makes the file hold exactly `mem`, writing as little as possible.
    fn sync_to(&mut self, mem: &[R], full: bool, force_rewrite: bool) -> Result<()> {
        let keep = if force_rewrite {
            0
        } else {
            self.common_prefix(mem, full)
        };
        if keep < self.records.len() {
            let at = if keep == 0 { 0 } else { self.ends[keep - 1] };
            self.file
                .set_len(at)
                .map_err(io_err("truncate", &self.path))?;
            self.records.truncate(keep);
            self.ends.truncate(keep);
            self.len = at;
        }
        if mem.len() > keep {
            self.buf.clear();
            let mut ends = Vec::with_capacity(mem.len() - keep);
            for r in &mem[keep..] {
                r.write_line(&mut self.buf)?;
                ends.push(self.len + self.buf.len() as u64);
            }
            // One write per call: the lines reach the page cache together.
            self.file
                .write_all(self.buf.as_bytes())
                .map_err(io_err("append to", &self.path))?;
            self.len += self.buf.len() as u64;
            self.ends.extend(ends);
            self.records.extend_from_slice(&mem[keep..]);
        }
        Ok(())
    }

    /// Whether the file still has the length this log left it at (nobody else wrote).
    fn unchanged(&self) -> Result<bool> {
        let len = self
            .file
            .metadata()
            .map_err(io_err("stat", &self.path))?
            .len();
        Ok(len == self.len && self.path.exists())
    }
}

/// The open validation log of a run with its metadata as on disk.
struct ValidationLog {
    meta_path: PathBuf,
    meta: Option<ValidationMeta>,
    log: Log<ValidationIterationScores>,
}

type Slot<T> = Arc<Mutex<Option<T>>>;

/// Training stats and validation scores in append-only JSON-lines files (seed: DaCapo's
/// `FileStatsStore`).
///
/// One writer per run (hold a [`RunLock`](crate::RunLock)); any number of readers.
pub struct FileStatsStore {
    root: PathBuf,
    training: Mutex<HashMap<String, Slot<Log<TrainingIterationStats>>>>,
    validation: Mutex<HashMap<String, Slot<ValidationLog>>>,
}

impl std::fmt::Debug for FileStatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStatsStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn slot<T>(map: &Mutex<HashMap<String, Slot<T>>>, run: &RunName) -> Slot<T> {
    map.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(run.as_str().to_owned())
        .or_default()
        .clone()
}

fn fsync_file_if_exists(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(io_err("fsync", path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("open", path)(e)),
    }
}

impl FileStatsStore {
    /// A store whose files live under `<root>/stats/` (created on the first write).
    pub fn new(root: impl AsRef<Path>) -> Self {
        Self {
            root: root.as_ref().to_path_buf(),
            training: Mutex::default(),
            validation: Mutex::default(),
        }
    }

    /// The training stats file of `run`.
    pub fn training_stats_path(&self, run: &RunName) -> PathBuf {
        layout::training_stats_path(&self.root, run)
    }

    /// The directory of the validation files (`meta.json`, `scores.jsonl`) of `run`.
    pub fn validation_scores_dir(&self, run: &RunName) -> PathBuf {
        layout::validation_scores_dir(&self.root, run)
    }

    fn store_validation(&self, run: &RunName, scores: &ValidationScores) -> Result<()> {
        let dir = self.validation_scores_dir(run);
        let slot = slot(&self.validation, run);
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(v) = guard.as_ref()
            && !v.log.unchanged()?
        {
            *guard = None;
        }
        let v = match guard.take() {
            Some(v) => v,
            None => ValidationLog::open(&dir, run)?,
        };
        // On error the files may hold a partial write: reopen (and cut it off) next time.
        *guard = Some(v.store(scores)?);
        Ok(())
    }
}

impl ValidationLog {
    /// Opens the validation files in `dir`.
    fn open(dir: &Path, run: &RunName) -> Result<Self> {
        let meta_path = dir.join(layout::META_FILE);
        // Unreadable metadata is rewritten by `store`, together with every score (local
        // scores take priority); a bad score line is still an error from `Log::open`.
        let meta = read_meta(&meta_path).unwrap_or_else(|e| {
            tracing::warn!("{e}; rewriting the validation scores of run `{run}`");
            None
        });
        let log = Log::open(&dir.join(layout::SCORES_FILE))?;
        Ok(Self {
            meta_path,
            meta,
            log,
        })
    }

    /// Makes the files hold `scores`. Readers read `meta.json` before and after
    /// `scores.jsonl`, so the order matters: new metadata is written before the first scores
    /// that need it, and only once the scores written for the old metadata are cut off.
    fn store(mut self, scores: &ValidationScores) -> Result<Self> {
        if self.meta.as_ref() != Some(&scores.meta) {
            self.log.sync_to(&[], true, true)?;
            let mut bytes = serde_json::to_vec_pretty(&scores.meta).map_err(|e| {
                StoreError::Invalid(format!("validation metadata cannot be written: {e}"))
            })?;
            bytes.push(b'\n');
            write_atomic(&self.meta_path, &bytes, false)?;
            self.meta = Some(scores.meta.clone());
        }
        self.log.sync_to(scores.scores(), true, false)?;
        Ok(self)
    }
}

/// Reads the validation scores in `dir` once: `Corrupt` also when `meta.json` changed while
/// `scores.jsonl` was read (a writer was half-way; [`reread_while_changing`] reads again).
fn read_validation(dir: &Path) -> Result<ValidationScores> {
    let meta_path = dir.join(layout::META_FILE);
    let scores_path = dir.join(layout::SCORES_FILE);
    let meta = read_meta(&meta_path)?;
    let records = read_log::<ValidationIterationScores>(&scores_path)?;
    if read_meta(&meta_path)? != meta {
        return Err(corrupt(&meta_path, "it changed while the scores were read"));
    }
    let Some(meta) = meta else {
        if records.is_empty() {
            return Ok(ValidationScores::default());
        }
        return Err(corrupt(
            &meta_path,
            "existence check failed: meta.json is missing but scores.jsonl has scores",
        ));
    };
    let mut out = ValidationScores::new(meta);
    for (i, r) in records.into_iter().enumerate() {
        out.add_iteration_scores(r).map_err(|e| {
            corrupt(
                &scores_path,
                format!("record {} check failed against meta.json: {e}", i + 1),
            )
        })?;
    }
    Ok(out)
}

/// Runs `read` again, after a short pause, while it finds the files corrupt, and returns the
/// first whole result (or the last error).
///
/// A writer of the same run changes the files in steps (metadata, then scores; a cut, then
/// an append), so a reader running meanwhile can see a state between two steps that fails a
/// check; read again, it sees the writer's next whole state. Damage that is really on disk
/// fails every attempt and is reported (after about 0.13 s).
fn reread_while_changing<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    let mut pause = Duration::from_millis(1);
    for _ in 1..READ_ATTEMPTS {
        match read() {
            Err(StoreError::Corrupt { .. }) => {
                std::thread::sleep(pause);
                pause *= 2;
            }
            result => return result,
        }
    }
    read()
}

fn read_meta(path: &Path) -> Result<Option<ValidationMeta>> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| corrupt(path, "metadata check failed: not UTF-8"))?;
    json::from_str_exact(text)
        .map(Some)
        .map_err(|e| corrupt(path, format!("metadata check failed: {e}")))
}

/// Reads the records of a JSON-lines file, or none if it does not exist.
fn read_log<R: Record>(path: &Path) -> Result<Vec<R>> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    Ok(parse_log::<R>(path, &bytes)?.0)
}

impl StatsStore for FileStatsStore {
    fn store_training_stats(&self, run: &RunName, stats: &TrainingStats) -> Result<()> {
        let path = self.training_stats_path(run);
        let slot = slot(&self.training, run);
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(log) = guard.as_ref()
            && !log.unchanged()?
        {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(Log::open(&path)?);
        }
        let Some(log) = guard.as_mut() else {
            return Ok(());
        };
        let result = log.sync_to(stats.iteration_stats(), false, false);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    fn retrieve_training_stats(&self, run: &RunName) -> Result<TrainingStats> {
        let path = self.training_stats_path(run);
        reread_while_changing(|| {
            let records = read_log::<TrainingIterationStats>(&path)?;
            // `parse_log` checked the order already.
            TrainingStats::from_records(records).map_err(|e| corrupt(&path, e.to_string()))
        })
    }

    fn store_validation_iteration_scores(
        &self,
        run: &RunName,
        scores: &ValidationScores,
    ) -> Result<()> {
        self.store_validation(run, scores)
    }

    fn retrieve_validation_iteration_scores(&self, run: &RunName) -> Result<ValidationScores> {
        let dir = self.validation_scores_dir(run);
        reread_while_changing(|| read_validation(&dir))
    }

    fn delete_training_stats(&self, run: &RunName) -> Result<()> {
        let path = self.training_stats_path(run);
        let slot = slot(&self.training, run);
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = None;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &path)(e)),
        }
        if let Some(dir) = path.parent() {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    fn delete_validation_scores(&self, run: &RunName) -> Result<()> {
        let dir = self.validation_scores_dir(run);
        let slot = slot(&self.validation, run);
        let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = None;
        // Scores before metadata: a reader meanwhile sees metadata without scores, or nothing.
        for name in [layout::SCORES_FILE, layout::META_FILE] {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("delete", &path)(e)),
            }
        }
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    fn sync(&self, run: &RunName) -> Result<()> {
        let training = self.training_stats_path(run);
        let vdir = self.validation_scores_dir(run);
        // Hold the run's slots so no append is half-way while syncing.
        let tslot = slot(&self.training, run);
        let _t = tslot.lock().unwrap_or_else(PoisonError::into_inner);
        let vslot = slot(&self.validation, run);
        let _v = vslot.lock().unwrap_or_else(PoisonError::into_inner);
        for file in [
            training.clone(),
            vdir.join(layout::META_FILE),
            vdir.join(layout::SCORES_FILE),
        ] {
            fsync_file_if_exists(&file)?;
        }
        // Directory entries (new files, meta.json renames) and the directories themselves.
        for dir in [
            training.parent().map(Path::to_path_buf),
            Some(vdir.clone()),
            Some(
                self.root
                    .join(layout::STATS_DIR)
                    .join(layout::TRAINING_STATS_DIR),
            ),
            Some(
                self.root
                    .join(layout::STATS_DIR)
                    .join(layout::VALIDATION_SCORES_DIR),
            ),
            Some(self.root.join(layout::STATS_DIR)),
        ]
        .into_iter()
        .flatten()
        {
            if dir.is_dir() {
                fsync_dir(&dir)?;
            }
        }
        Ok(())
    }
}
