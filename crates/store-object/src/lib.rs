//! dacapo-store-object: [`ObjectWeightsStore`], checkpoints and best records in object storage
//! (S3-compatible servers, a local directory or memory, through the `object_store` crate).
//!
//! The layout under the store prefix is [`LocalWeightsStore`](dacapo_store::LocalWeightsStore)'s,
//! without the `LATEST` hint:
//! ```text
//! <prefix>/<run>/checkpoints/iterations/<N>/  model.safetensors optimizer.safetensors state.json MANIFEST.json
//! <prefix>/<run>/<dataset>/<criterion>.json    best records
//! ```
//! Commit protocol of checkpoint N: upload `model.safetensors` and `optimizer.safetensors`
//! (multipart uploads for large files, parts in flight concurrently) and `state.json`, while
//! helper threads compute their CRC32C checksums; then write `MANIFEST.json` in one PUT. An
//! object store makes each object visible atomically and only when complete, so the manifest
//! PUT is the commit point: a checkpoint exists only if its manifest exists and verifies.
//! A writer killed at any moment leaves the previous checkpoint the latest; the files it
//! uploaded without a manifest are ignored, overwritten by a retry of that iteration, or
//! deleted by `apply_retention` once a newer checkpoint exists. (Parts of a killed multipart
//! upload stay on an S3 server until a bucket lifecycle rule aborts incomplete uploads.)
//! Removal deletes the manifest first, so a half-deleted checkpoint is never visible.
//!
//! `latest_iteration` lists the iteration "directories" and returns the newest that verifies
//! quickly (the manifest parses and matches, each file is listed with its recorded size, and
//! `state.json`'s checksum matches); `retrieve_weights` checks every file's CRC32C.
//!
//! ```no_run
//! use dacapo_core::RunName;
//! use dacapo_store::WeightsStore;
//! use dacapo_store_object::ObjectWeightsStore;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Credentials, endpoint and region come from AWS_* environment variables.
//! let store = ObjectWeightsStore::from_url("s3://bucket/dacapo")?;
//! println!("{:?}", store.latest_iteration(&RunName::new("my-run")?)?);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use dacapo_core::{RunName, validate_name};
use dacapo_store::layout;
use dacapo_store::local::{
    FileEntry, MANIFEST_FILE, MODEL_FILE, Manifest, OPTIMIZER_FILE, STATE_FILE, best_from_json,
    best_target_exists, best_to_json, canonical_u64, check_dataset_criterion, small_entry,
    state_json,
};
use dacapo_store::st::{self, Layout};
use dacapo_store::{
    BestRecord, Result, StoreError, StoreUrl, TrainState, Verify, Weights, WeightsStore,
};
use object_store::path::Path as Key;
use object_store::{ObjectMeta, ObjectStore, PutPayload, WriteMultipart};

pub use object_store;

/// Default size of one multipart upload part (S3 needs at least 5 MiB per part but the last).
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Smallest part size accepted by [`ObjectWeightsStore::with_part_size`] (S3's minimum).
pub const MIN_PART_SIZE: usize = 5 << 20;
/// Parts of one file uploaded at once.
const PARTS_IN_FLIGHT: usize = 8;

/// Checkpoints and best records in an object store (seed: DaCapo's S3 weights storage).
///
/// Crash-safe like [`LocalWeightsStore`](dacapo_store::LocalWeightsStore): a writer killed
/// mid-upload leaves the previous checkpoint the latest and nothing half-visible. One writer
/// per run at a time (there is no lock: the scheduler runs one trainer per run); readers
/// need nothing. Methods block on an internal tokio runtime, so they must not be called from
/// inside an async runtime's worker thread.
pub struct ObjectWeightsStore {
    store: Arc<dyn ObjectStore>,
    /// Key prefix of the store inside `store` (empty for the root).
    prefix: Key,
    /// The object store's root as a URL without credentials, e.g. `s3://bucket`.
    base: String,
    rt: tokio::runtime::Runtime,
    part_size: usize,
}

impl fmt::Debug for ObjectWeightsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectWeightsStore")
            .field("url", &self.url())
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

/// The checks a checkpoint passed: its manifest and `state.json`'s bytes.
struct Checked {
    manifest: Manifest,
    state: Vec<u8>,
}

impl ObjectWeightsStore {
    /// Opens the store at `url`: `s3://bucket/prefix` (credentials, endpoint and region from
    /// the `AWS_*` environment variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...), `file:///dir` (created if
    /// missing) or `memory://` (a new, empty store private to this handle).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::open(&StoreUrl::parse(url)?)
    }

    /// Opens the store `url` names (see [`from_url`](Self::from_url)); a `postgres://` URL
    /// is an error (it names a stats store).
    pub fn open(url: &StoreUrl) -> Result<Self> {
        match url {
            StoreUrl::S3 { bucket, prefix } => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(|e| StoreError::Remote {
                        store: url.to_string(),
                        op: "configure the S3 client (check the AWS_* environment variables)"
                            .to_owned(),
                        source: Box::new(e),
                    })?;
                Self::new(Arc::new(s3), prefix, format!("s3://{bucket}"))
            }
            StoreUrl::File(path) => {
                std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
                    op: "create the store directory",
                    path: path.clone(),
                    source,
                })?;
                let fs =
                    object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|e| {
                        StoreError::Remote {
                            store: url.to_string(),
                            op: "open the store directory".to_owned(),
                            source: Box::new(e),
                        }
                    })?;
                let base = url.to_string();
                Self::new(Arc::new(fs), "", base.trim_end_matches('/'))
            }
            StoreUrl::Memory(prefix) => Self::new(
                Arc::new(object_store::memory::InMemory::new()),
                prefix,
                "memory://",
            ),
            StoreUrl::Postgres(_) => Err(StoreError::Invalid(format!(
                "weights store URL {url} names a PostgreSQL database, which keeps stats only; \
                 use s3://bucket/prefix, file:///path or memory://"
            ))),
        }
    }

    /// A store on `store` under key `prefix` (`""` for the root); `base` is `store`'s root as
    /// a URL without credentials, used in error messages (e.g. `s3://bucket`).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, base: impl Into<String>) -> Result<Self> {
        let prefix = Key::parse(prefix.trim_matches('/')).map_err(|e| {
            StoreError::Invalid(format!(
                "object store prefix {prefix:?} is not a valid key: {e}"
            ))
        })?;
        let base = base.into();
        // `memory://` keeps its slashes: keys are appended to it directly.
        let base = if base.ends_with("://") {
            base
        } else {
            base.trim_end_matches('/').to_owned()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dacapo-object-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Remote {
                store: base.clone(),
                op: "start the object store client's runtime".to_owned(),
                source: Box::new(e),
            })?;
        Ok(Self {
            store,
            prefix,
            base,
            rt,
            part_size: DEFAULT_PART_SIZE,
        })
    }

    /// Sets the multipart part size (at least [`MIN_PART_SIZE`]); files up to one part are
    /// uploaded in a single request.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The store as a URL without credentials, e.g. `s3://bucket/prefix`.
    pub fn url(&self) -> String {
        self.location(&self.prefix).to_string_lossy().into_owned()
    }

    /// Verifies checkpoint `iteration` of `run` and returns its manifest.
    ///
    /// `NotFound` if it has no objects; `Corrupt` naming the object and the failed check
    /// otherwise (a missing manifest included); `Remote` if the store cannot be reached.
    pub fn verify(&self, run: &RunName, iteration: u64, level: Verify) -> Result<Manifest> {
        self.rt
            .block_on(self.check(run, iteration, level))
            .map(|c| c.manifest)
    }

    /// Where `key` is, for messages: the base URL joined with the key.
    fn location(&self, key: &Key) -> PathBuf {
        if key.as_ref().is_empty() {
            PathBuf::from(&self.base)
        } else if self.base.ends_with('/') {
            PathBuf::from(format!("{}{key}", self.base))
        } else {
            PathBuf::from(format!("{}/{key}", self.base))
        }
    }

    /// Wraps an object store error of `op`.
    fn remote(&self, op: impl Into<String>) -> impl FnOnce(object_store::Error) -> StoreError {
        let store = self.url();
        let op = op.into();
        move |e| StoreError::Remote {
            store,
            op,
            source: Box::new(e),
        }
    }

    fn run_key(&self, run: &RunName) -> Key {
        self.prefix.child(run.as_str())
    }

    fn iterations_key(&self, run: &RunName) -> Key {
        self.run_key(run)
            .child(layout::CHECKPOINTS_DIR)
            .child(layout::ITERATIONS_DIR)
    }

    fn checkpoint_key(&self, run: &RunName, iteration: u64) -> Key {
        self.iterations_key(run).child(iteration.to_string())
    }

    fn not_found_checkpoint(&self, run: &RunName, iteration: u64, dir: &Key) -> StoreError {
        StoreError::NotFound {
            what: format!(
                "checkpoint {iteration} of run `{run}` (list the stored ones with `iterations`)"
            ),
            path: self.location(dir),
        }
    }

    /// The objects directly under `dir` (empty if there are none). A `NotFound` from a
    /// listing is an error: S3 answers it only for a missing bucket, which must not pass
    /// for a run without checkpoints.
    async fn list_dir(&self, dir: &Key, op: impl FnOnce() -> String) -> Result<Vec<ObjectMeta>> {
        match self.store.list_with_delimiter(Some(dir)).await {
            Ok(l) => Ok(l.objects),
            Err(e) => Err(self.remote(op())(e)),
        }
    }

    /// The names of the "directories" directly under `dir` (empty if there are none).
    async fn list_subdirs(&self, dir: &Key, op: impl FnOnce() -> String) -> Result<Vec<String>> {
        match self.store.list_with_delimiter(Some(dir)).await {
            Ok(l) => Ok(l
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_owned))
                .collect()),
            Err(e) => Err(self.remote(op())(e)),
        }
    }

    /// The whole content of `key`, or `None` if it does not exist.
    async fn get_optional(
        &self,
        key: &Key,
        op: impl FnOnce() -> String,
    ) -> Result<Option<Vec<u8>>> {
        let result = match self.store.get(key).await {
            Ok(r) => r.bytes().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote(op())(e)),
        }
    }

    /// Verifies checkpoint `iteration` of `run` at `level`.
    async fn check(&self, run: &RunName, iteration: u64, level: Verify) -> Result<Checked> {
        let dir = self.checkpoint_key(run, iteration);
        let what = || format!("checkpoint {iteration} of run `{run}`");
        let mkey = dir.child(MANIFEST_FILE);
        let mpath = self.location(&mkey);
        let Some(bytes) = self
            .get_optional(&mkey, || format!("read the manifest of {}", what()))
            .await?
        else {
            let listed = self.list_dir(&dir, || format!("list {}", what())).await?;
            if listed.is_empty() {
                return Err(self.not_found_checkpoint(run, iteration, &dir));
            }
            return Err(corrupt(
                mpath,
                "manifest check failed: MANIFEST.json is missing (an interrupted upload)",
            ));
        };
        let manifest = Manifest::from_json(&bytes, iteration, &mpath)?;
        let skey = dir.child(STATE_FILE);
        let (listed, state) = tokio::join!(
            self.list_dir(&dir, || format!("list {}", what())),
            self.get_optional(&skey, || format!("read state.json of {}", what())),
        );
        let listed = listed?;
        let sizes: BTreeMap<&str, u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().map(|f| (f, m.size)))
            .collect();
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            let Some(entry) = manifest.files.get(name) else {
                continue;
            };
            let path = self.location(&dir.child(name));
            let Some(&size) = sizes.get(name) else {
                return Err(corrupt(
                    path,
                    "existence check failed: the object is missing",
                ));
            };
            if size != entry.size {
                return Err(corrupt(
                    path,
                    format!(
                        "size check failed: the manifest says {} bytes, the object has {size}",
                        entry.size
                    ),
                ));
            }
        }
        let state = state?.ok_or_else(|| {
            corrupt(
                self.location(&skey),
                "existence check failed: the object is missing",
            )
        })?;
        let entry = file_entry(&manifest, STATE_FILE, &mpath)?;
        check_crc(&state, &entry, self.location(&skey))?;
        if level == Verify::Full {
            for name in [MODEL_FILE, OPTIMIZER_FILE] {
                let bytes = self.get_file(run, iteration, &dir, name).await?;
                let entry = file_entry(&manifest, name, &mpath)?;
                check_crc(&bytes, &entry, self.location(&dir.child(name)))?;
            }
        }
        Ok(Checked { manifest, state })
    }

    /// The content of file `name` of a verified checkpoint.
    async fn get_file(
        &self,
        run: &RunName,
        iteration: u64,
        dir: &Key,
        name: &str,
    ) -> Result<Vec<u8>> {
        let key = dir.child(name);
        self.get_optional(&key, || {
            format!("download {name} of checkpoint {iteration} of run `{run}`")
        })
        .await?
        .ok_or_else(|| {
            corrupt(
                self.location(&key),
                "existence check failed: the object is missing",
            )
        })
    }

    /// Integer-named iteration "directories" of `run` (unverified, unordered).
    async fn candidates(&self, run: &RunName) -> Result<Vec<u64>> {
        let it = self.iterations_key(run);
        Ok(self
            .list_subdirs(&it, || format!("list the checkpoints of run `{run}`"))
            .await?
            .iter()
            .filter_map(|n| canonical_u64(n))
            .collect())
    }

    /// Quick verification for listing: `Ok(true)` if the checkpoint verifies, `Ok(false)`
    /// (with a warning) if it does not, an error only if the store cannot be reached.
    async fn is_committed(&self, run: &RunName, iteration: u64) -> Result<bool> {
        match self.check(run, iteration, Verify::Quick).await {
            Ok(_) => Ok(true),
            Err(e @ StoreError::Remote { .. }) => Err(e),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => {
                tracing::warn!("skipping checkpoint {iteration} of run `{run}`: {e}");
                Ok(false)
            }
        }
    }

    /// Uploads `layout` as `key`: one PUT up to a part size, a multipart upload above.
    async fn upload(&self, key: &Key, layout: &Layout<'_>, op: &str) -> Result<()> {
        let size: usize = layout.chunks().map(<[u8]>::len).sum();
        if size <= self.part_size {
            let mut buf = Vec::with_capacity(size);
            for chunk in layout.chunks() {
                buf.extend_from_slice(chunk);
            }
            self.store
                .put(key, PutPayload::from(buf))
                .await
                .map_err(self.remote(op))?;
            return Ok(());
        }
        let upload = self
            .store
            .put_multipart(key)
            .await
            .map_err(self.remote(op))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        let mut failed = None;
        'outer: for chunk in layout.chunks() {
            for piece in chunk.chunks(self.part_size) {
                if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    failed = Some(e);
                    break 'outer;
                }
                w.write(piece);
            }
        }
        match failed {
            None => w.finish().await.map(|_| ()).map_err(self.remote(op)),
            Some(e) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!("cannot abort the multipart upload of {key}: {abort}");
                }
                Err(self.remote(op)(e))
            }
        }
    }

    /// Deletes the objects `listed` of checkpoint `dir`, the manifest first.
    async fn delete_checkpoint(
        &self,
        run: &RunName,
        iteration: u64,
        dir: &Key,
        mut listed: Vec<ObjectMeta>,
    ) -> Result<()> {
        let mkey = dir.child(MANIFEST_FILE);
        listed.sort_by_key(|m| m.location != mkey);
        for m in listed {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(self.remote(format!(
                        "delete {} of checkpoint {iteration} of run `{run}`",
                        m.location.filename().unwrap_or_default()
                    ))(e));
                }
            }
        }
        Ok(())
    }

    /// Removes checkpoint `iteration` of `run`; `NotFound` if it has no objects.
    async fn remove_async(&self, run: &RunName, iteration: u64) -> Result<()> {
        let dir = self.checkpoint_key(run, iteration);
        let listed = self
            .list_dir(&dir, || {
                format!("list checkpoint {iteration} of run `{run}` for removal")
            })
            .await?;
        if listed.is_empty() {
            return Err(self.not_found_checkpoint(run, iteration, &dir));
        }
        self.delete_checkpoint(run, iteration, &dir, listed).await
    }

    /// Every best record of `run`, ordered by dataset, then criterion.
    async fn list_best(&self, run: &RunName) -> Result<Vec<BestRecord>> {
        let run_key = self.run_key(run);
        let mut out = Vec::new();
        let mut datasets = self
            .list_subdirs(&run_key, || format!("list the best records of run `{run}`"))
            .await?;
        datasets.retain(|ds| layout::is_dataset_entry(ds));
        datasets.sort();
        for ds in datasets {
            let ds_key = run_key.child(ds.as_str());
            let records = self
                .list_dir(&ds_key, || {
                    format!("list the best records of dataset `{ds}` of run `{run}`")
                })
                .await?;
            let mut keys: Vec<&Key> = records
                .iter()
                .map(|rec| &rec.location)
                .filter(|key| {
                    let name = key.filename().unwrap_or_default();
                    name.strip_suffix(".json")
                        .is_some_and(|c| validate_name("criterion", c).is_ok())
                })
                .collect();
            keys.sort();
            for key in keys {
                let Some(bytes) = self
                    .get_optional(key, || format!("read best record {key} of run `{run}`"))
                    .await?
                else {
                    continue;
                };
                out.push(best_from_json(&bytes, &self.location(key))?);
            }
        }
        Ok(out)
    }

    /// Whether the verified checkpoint described by `manifest` holds what `weights` would be
    /// stored as (same sizes, checksums and tensor counts).
    fn same_content(manifest: &Manifest, weights: &Weights) -> Result<bool> {
        let state = small_entry(&state_json(&weights.state)?);
        let mut expected = vec![(STATE_FILE, state)];
        for (name, map) in [
            (MODEL_FILE, &weights.model),
            (OPTIMIZER_FILE, &weights.optimizer),
        ] {
            let layout = Layout::new(map)?;
            let (size, crc32c) = layout.size_and_crc();
            expected.push((
                name,
                FileEntry {
                    size,
                    crc32c,
                    tensors: Some(layout.tensors()),
                },
            ));
        }
        Ok(expected
            .iter()
            .all(|(name, e)| manifest.files.get(*name) == Some(e)))
    }

    /// Uploads the files of checkpoint `iteration` under `dir`, then its manifest.
    fn write_checkpoint(
        &self,
        run: &RunName,
        iteration: u64,
        dir: &Key,
        weights: &Weights,
    ) -> Result<()> {
        let layouts = [
            (MODEL_FILE, Layout::new(&weights.model)?),
            (OPTIMIZER_FILE, Layout::new(&weights.optimizer)?),
        ];
        let state_bytes = state_json(&weights.state)?;
        let what = format!("checkpoint {iteration} of run `{run}`");
        // The checksums (CPU) are computed by helper threads while this thread feeds the
        // uploads; only the manifest waits for both.
        let (sums, uploaded) = std::thread::scope(|s| {
            let jobs: Vec<_> = layouts
                .iter()
                .map(|(_, layout)| s.spawn(|| layout.size_and_crc()))
                .collect();
            let uploaded = self.rt.block_on(async {
                let [(m_name, m_layout), (o_name, o_layout)] = &layouts;
                let m_op = format!("upload {m_name} of {what}");
                let o_op = format!("upload {o_name} of {what}");
                let s_op = format!("upload {STATE_FILE} of {what}");
                let state = async {
                    self.store
                        .put(
                            &dir.child(STATE_FILE),
                            PutPayload::from(state_bytes.clone()),
                        )
                        .await
                        .map(|_| ())
                        .map_err(self.remote(s_op.as_str()))
                };
                let (m_key, o_key) = (dir.child(*m_name), dir.child(*o_name));
                tokio::try_join!(
                    self.upload(&m_key, m_layout, &m_op),
                    self.upload(&o_key, o_layout, &o_op),
                    state,
                )
                .map(|_| ())
            });
            let sums: Vec<Option<(u64, u32)>> = jobs.into_iter().map(|j| j.join().ok()).collect();
            (sums, uploaded)
        });
        uploaded?;
        let mut files = BTreeMap::new();
        for ((name, layout), sum) in layouts.iter().zip(sums) {
            let (size, crc32c) =
                sum.ok_or_else(|| StoreError::Invalid("the checksum thread panicked".to_owned()))?;
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
        let bytes = Manifest::new(iteration, &weights.state, files).to_json()?;
        // The commit point: the checkpoint becomes visible when this PUT completes.
        self.rt
            .block_on(
                self.store
                    .put(&dir.child(MANIFEST_FILE), PutPayload::from(bytes)),
            )
            .map(|_| ())
            .map_err(self.remote(format!("commit (write the manifest of) {what}")))
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

/// A corruption error for the object at `path` where `check` failed.
fn corrupt(path: PathBuf, check: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path,
        check: check.into(),
    }
}

/// The manifest entry of `name` (the manifest was checked to list it).
fn file_entry(manifest: &Manifest, name: &str, mpath: &std::path::Path) -> Result<FileEntry> {
    manifest.files.get(name).cloned().ok_or_else(|| {
        corrupt(
            mpath.to_path_buf(),
            format!("manifest check failed: it lists no {name}"),
        )
    })
}

/// Checks size and CRC32C of downloaded `bytes` against `entry`.
fn check_crc(bytes: &[u8], entry: &FileEntry, path: PathBuf) -> Result<()> {
    if bytes.len() as u64 != entry.size {
        return Err(corrupt(
            path,
            format!(
                "size check failed: the manifest says {} bytes, the object has {}",
                entry.size,
                bytes.len()
            ),
        ));
    }
    let crc = crc32c::crc32c(bytes);
    if crc != entry.crc32c {
        return Err(corrupt(
            path,
            format!(
                "crc32c check failed: the manifest says {:#010x}, the object has {crc:#010x}",
                entry.crc32c
            ),
        ));
    }
    Ok(())
}

impl WeightsStore for ObjectWeightsStore {
    fn latest_iteration(&self, run: &RunName) -> Result<Option<u64>> {
        self.block_on(async {
            let mut candidates = self.candidates(run).await?;
            candidates.sort_unstable_by(|a, b| b.cmp(a));
            for n in candidates {
                if self.is_committed(run, n).await? {
                    return Ok(Some(n));
                }
            }
            Ok(None)
        })
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
        let dir = self.checkpoint_key(run, iteration);
        match self.block_on(self.check(run, iteration, Verify::Quick)) {
            Ok(existing) => {
                if Self::same_content(&existing.manifest, weights)? {
                    return Ok(());
                }
                return Err(StoreError::Exists {
                    run: run.to_string(),
                    iteration,
                    path: self.location(&dir),
                });
            }
            Err(StoreError::NotFound { .. }) => {}
            Err(e @ (StoreError::Remote { .. } | StoreError::Core(_))) => return Err(e),
            Err(e) => {
                tracing::warn!(
                    "replacing checkpoint {iteration} of run `{run}`, which fails verification: {e}"
                );
                // Uncommit first: the checkpoint must not verify while its files change.
                let mkey = dir.child(MANIFEST_FILE);
                match self.block_on(self.store.delete(&mkey)) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => {
                        return Err(self.remote(format!(
                            "delete the bad manifest of checkpoint {iteration} of run `{run}`"
                        ))(e));
                    }
                }
            }
        }
        self.write_checkpoint(run, iteration, &dir, weights)
    }

    fn retrieve_weights(&self, run: &RunName, iteration: u64) -> Result<Weights> {
        let dir = self.checkpoint_key(run, iteration);
        self.block_on(async {
            let checked = self.check(run, iteration, Verify::Quick).await?;
            let mpath = self.location(&dir.child(MANIFEST_FILE));
            let read = |name: &'static str| {
                let dir = &dir;
                let mpath = &mpath;
                let manifest = &checked.manifest;
                async move {
                    let entry = file_entry(manifest, name, mpath)?;
                    let bytes = self.get_file(run, iteration, dir, name).await?;
                    let path = self.location(&dir.child(name));
                    if bytes.len() as u64 != entry.size {
                        return Err(corrupt(
                            path,
                            format!(
                                "size check failed: the manifest says {} bytes, the object has {}",
                                entry.size,
                                bytes.len()
                            ),
                        ));
                    }
                    let map = st::read_tensors_from(&mut bytes.as_slice(), entry.size, entry.crc32c, &path)?;
                    if let Some(count) = entry.tensors
                        && count != map.len()
                    {
                        return Err(corrupt(
                            path,
                            format!(
                                "tensor count check failed: the manifest says {count}, the file has {}",
                                map.len()
                            ),
                        ));
                    }
                    Ok(map)
                }
            };
            let (model, optimizer) = tokio::try_join!(read(MODEL_FILE), read(OPTIMIZER_FILE))?;
            let spath = self.location(&dir.child(STATE_FILE));
            let state: TrainState = serde_json::from_slice(&checked.state)
                .map_err(|e| corrupt(spath, format!("state check failed: {e}")))?;
            Ok(Weights {
                model,
                optimizer,
                state,
            })
        })
    }

    fn remove(&self, run: &RunName, iteration: u64) -> Result<()> {
        self.block_on(self.remove_async(run, iteration))
    }

    fn store_best(&self, run: &RunName, record: &BestRecord) -> Result<()> {
        let run_key = self.run_key(run);
        check_dataset_criterion(&record.dataset, &record.criterion)?;
        best_target_exists(
            run,
            record,
            self.block_on(self.check(run, record.iteration, Verify::Quick)),
        )?;
        let bytes = best_to_json(record)?;
        let key = run_key
            .child(record.dataset.as_str())
            .child(format!("{}.json", record.criterion));
        self.block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(self.remote(format!(
                "store the best record for dataset `{}` and criterion `{}` of run `{run}`",
                record.dataset, record.criterion
            )))
    }

    fn retrieve_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<BestRecord> {
        let run_key = self.run_key(run);
        check_dataset_criterion(dataset, criterion)?;
        let key = run_key.child(dataset).child(format!("{criterion}.json"));
        let what = format!(
            "best record for dataset `{dataset}` and criterion `{criterion}` of run `{run}`"
        );
        let path = self.location(&key);
        let Some(bytes) = self.block_on(self.get_optional(&key, || format!("read the {what}")))?
        else {
            return Err(StoreError::NotFound { what, path });
        };
        let record = best_from_json(&bytes, &path)?;
        if record.dataset != dataset || record.criterion != criterion {
            return Err(corrupt(
                path,
                format!(
                    "best record check failed: it is for dataset `{}` and criterion `{}`",
                    record.dataset, record.criterion
                ),
            ));
        }
        Ok(record)
    }

    fn best_records(&self, run: &RunName) -> Result<Vec<BestRecord>> {
        self.block_on(self.list_best(run))
    }

    fn remove_best(&self, run: &RunName, dataset: &str, criterion: &str) -> Result<()> {
        check_dataset_criterion(dataset, criterion)?;
        let key = self
            .run_key(run)
            .child(dataset)
            .child(format!("{criterion}.json"));
        match self.block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote(format!(
                "delete the best record for dataset `{dataset}` and criterion `{criterion}` of \
                 run `{run}`"
            ))(e)),
        }
    }

    fn iterations(&self, run: &RunName) -> Result<Vec<u64>> {
        self.block_on(async {
            let mut candidates = self.candidates(run).await?;
            candidates.sort_unstable();
            let mut out = Vec::with_capacity(candidates.len());
            for n in candidates {
                if self.is_committed(run, n).await? {
                    out.push(n);
                }
            }
            Ok(out)
        })
    }

    fn apply_retention(&self, run: &RunName, keep_last: usize) -> Result<Vec<u64>> {
        let all = self.iterations(run)?;
        self.block_on(async {
            let best: BTreeSet<u64> = self
                .list_best(run)
                .await?
                .iter()
                .map(|b| b.iteration)
                .collect();
            let newest: HashSet<u64> = all.iter().rev().take(keep_last.max(1)).copied().collect();
            let removed: Vec<u64> = all
                .iter()
                .copied()
                .filter(|n| !newest.contains(n) && !best.contains(n))
                .collect();
            // Files of interrupted uploads older than the newest checkpoint: a retry would
            // have replaced them, so nothing will; they are no checkpoint (no manifest).
            let newest_committed = all.last().copied();
            let leftovers: Vec<u64> = self
                .candidates(run)
                .await?
                .into_iter()
                .filter(|n| newest_committed.is_some_and(|c| *n < c) && !all.contains(n))
                .collect();
            for &n in &leftovers {
                let dir = self.checkpoint_key(run, n);
                let listed = self
                    .list_dir(&dir, || format!("list checkpoint {n} of run `{run}`"))
                    .await?;
                if listed
                    .iter()
                    .any(|m| m.location.filename() == Some(MANIFEST_FILE))
                {
                    // A manifest that fails verification: damage to report, not to delete.
                    continue;
                }
                tracing::info!(
                    "removing the files of an interrupted upload of checkpoint {n} of run `{run}`"
                );
                self.delete_checkpoint(run, n, &dir, listed).await?;
            }
            for &n in &removed {
                match self.remove_async(run, n).await {
                    Ok(()) | Err(StoreError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(removed)
        })
    }
}
