//! Writing zarr arrays (v3 by default, v2 optional) with chunking, compression and the
//! geometry attributes `resolution`/`voxel_size`, `offset`, `axis_names` and `units`, repeated
//! as OME-Zarr `multiscales` metadata in the parent group ([`crate::ome`]).
//!
//! v3 arrays are zstd-compressed and carry `dimension_names`; v2 arrays use zarr-python's
//! default compressor (blosc lz4, level 5, byte shuffle) and `.` chunk keys. Missing parent
//! groups (the container root included) are created, so zarr-python and other readers see a
//! complete hierarchy.

use std::marker::PhantomData;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;
use serde_json::{Value, json};
use zarrs::array::builder::ArrayBuilderFillValue;
use zarrs::array::codec::ZstdCodec;
use zarrs::array::{Array, ArrayBuilder, ArrayMetadata, ArrayMetadataV2, ArraySubset, DataType};
use zarrs::filesystem::FilesystemStore;

use crate::array::node_path;
use crate::error::{DataError, Result, io};

mod private {
    pub trait Sealed {}
}

/// Element types that can be written.
pub trait WriteElement:
    zarrs::array::Element + Copy + Send + Sync + 'static + private::Sealed
{
    /// The zarr data type.
    fn data_type() -> DataType;
    /// The numpy dtype string of zarr v2 metadata.
    const V2_DTYPE: &'static str;
    /// The fill value (zero).
    fn fill_value() -> ArrayBuilderFillValue;
}

macro_rules! write_element {
    ($($t:ty => $f:ident, $v2:literal, $zero:expr;)*) => {$(
        impl private::Sealed for $t {}
        impl WriteElement for $t {
            fn data_type() -> DataType {
                zarrs::array::data_type::$f()
            }
            const V2_DTYPE: &'static str = $v2;
            fn fill_value() -> ArrayBuilderFillValue {
                let zero: $t = $zero;
                zero.into()
            }
        }
    )*};
}

write_element! {
    u8 => uint8, "|u1", 0;
    u16 => uint16, "<u2", 0;
    u32 => uint32, "<u4", 0;
    u64 => uint64, "<u8", 0;
    i8 => int8, "|i1", 0;
    i16 => int16, "<i2", 0;
    i32 => int32, "<i4", 0;
    i64 => int64, "<i8", 0;
    f32 => float32, "<f4", 0.0;
    f64 => float64, "<f8", 0.0;
}

/// Zarr format version of written arrays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ZarrVersion {
    /// Zarr v2 (`.zarray`, `.zattrs`).
    V2,
    /// Zarr v3 (`zarr.json`).
    #[default]
    V3,
}

/// How an array is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOptions {
    /// Zarr format version.
    pub version: ZarrVersion,
    /// Chunk shape over all axes (default: whole channel axes, 512² in 2D, 64³ in 3D).
    pub chunk_shape: Option<Vec<u64>>,
    /// Voxel size per spatial axis, written as `resolution` and `voxel_size`.
    pub voxel_size: Option<Vec<f64>>,
    /// Offset per spatial axis in world units, written as `offset`.
    pub offset: Option<Vec<f64>>,
    /// One name per axis (`c^` marks a channel axis), written as `axis_names` (and v3
    /// `dimension_names`).
    pub axis_names: Option<Vec<String>>,
    /// Unit per spatial axis (e.g. `nm`), written as `units` and as OME-Zarr axis units.
    pub units: Option<Vec<String>>,
    /// Further attributes.
    pub attributes: serde_json::Map<String, Value>,
    /// Replace an existing array at the same path instead of failing.
    pub overwrite: bool,
    /// Leave chunks uncompressed.
    pub uncompressed: bool,
}

impl WriteOptions {
    /// Options for an array on the spatial grid of `meta`: its voxel size, offset and, when it
    /// has any, units.
    pub fn on_grid_of(meta: &crate::ArrayMeta) -> Self {
        Self {
            voxel_size: Some(meta.voxel_size.clone()),
            offset: Some(meta.offset.clone()),
            units: meta
                .units
                .iter()
                .any(|u| !u.is_empty())
                .then(|| meta.units.clone()),
            ..Self::default()
        }
    }
}

/// A created array that regions can be written into.
#[derive(Debug)]
pub struct ArrayWriter<T> {
    container: PathBuf,
    path: String,
    array: Array<FilesystemStore>,
    _element: PhantomData<T>,
}

fn default_chunk(shape: &[u64], opts: &WriteOptions) -> Vec<u64> {
    let channel_axes = opts.axis_names.as_ref().map_or(0, |n| {
        n.iter()
            .take_while(|a| *a == "c" || a.ends_with('^'))
            .count()
    });
    let spatial = shape.len().saturating_sub(channel_axes);
    let edge = match spatial {
        0 | 1 => 1 << 16,
        2 => 512,
        _ => 64,
    };
    shape
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if i < channel_axes {
                s.max(1)
            } else {
                s.clamp(1, edge)
            }
        })
        .collect()
}

/// Rejects array paths that are empty or leave the container.
fn array_dir(container: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_matches('/'));
    if path.trim_matches('/').is_empty()
        || rel.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(DataError::Array {
            container: container.to_owned(),
            array: path.to_owned(),
            message: "is not a valid array path: use names like `raw` or `predictions/iter_10` \
                      without `..`"
                .into(),
        });
    }
    Ok(container.join(rel))
}

/// Whether `dir` holds nothing but hidden entries (e.g. a tool's bookkeeping such as
/// `.dacapo/`): no zarr node, so an array may be created there.
pub fn only_hidden_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().all(|e| {
            e.file_name().to_string_lossy().starts_with('.')
                && e.file_name() != ".zarray"
                && e.file_name() != ".zgroup"
                && e.file_name() != ".zattrs"
        })
    })
}

/// Writes group metadata into `dir` unless it already is a zarr node.
fn ensure_group(dir: &Path, version: ZarrVersion) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    if dir.join("zarr.json").exists() || dir.join(".zgroup").exists() {
        return Ok(());
    }
    let (file, text) = match version {
        ZarrVersion::V3 => (
            "zarr.json",
            json!({"zarr_format": 3, "node_type": "group", "attributes": {}}),
        ),
        ZarrVersion::V2 => (".zgroup", json!({"zarr_format": 2})),
    };
    let path = dir.join(file);
    std::fs::write(&path, format!("{text:#}\n")).map_err(io("write", &path))
}

/// Creates an array of `shape` (all axes) at `path` inside `container`.
pub fn create_array<T: WriteElement>(
    container: &Path,
    path: &str,
    shape: &[u64],
    opts: &WriteOptions,
) -> Result<ArrayWriter<T>> {
    let dir = array_dir(container, path)?;
    let err = |message: String| DataError::Array {
        container: container.to_owned(),
        array: path.to_owned(),
        message,
    };
    let zerr = |message: String| DataError::Zarr {
        container: container.to_owned(),
        array: path.to_owned(),
        action: "create",
        message,
    };
    let chunk = chunk_shape(shape, opts).map_err(err)?;
    clear_existing(&dir, opts, err)?;
    ensure_parent_groups(container, path, opts.version)?;
    let store = Arc::new(FilesystemStore::new(container).map_err(|e| zerr(e.to_string()))?);
    let array = match opts.version {
        ZarrVersion::V3 => array_v3::<T>(store, path, shape, &chunk, opts),
        ZarrVersion::V2 => array_v2::<T>(store, path, shape, &chunk, opts),
    }
    .map_err(zerr)?;
    array.store_metadata().map_err(|e| zerr(e.to_string()))?;
    record_ome(container, path, shape.len(), opts)?;
    Ok(ArrayWriter {
        container: container.to_owned(),
        path: path.to_owned(),
        array,
        _element: PhantomData,
    })
}

/// The chunk shape of a new array of `shape` (given, or the default), checked against the
/// shape together with the axis names; else what is wrong.
fn chunk_shape(shape: &[u64], opts: &WriteOptions) -> std::result::Result<Vec<u64>, String> {
    if shape.is_empty() {
        return Err("cannot write a 0-dimensional array".into());
    }
    let chunk = opts
        .chunk_shape
        .clone()
        .unwrap_or_else(|| default_chunk(shape, opts));
    if chunk.len() != shape.len() || chunk.contains(&0) {
        return Err(format!(
            "chunk shape {chunk:?} must have {} non-zero entries",
            shape.len()
        ));
    }
    if let Some(names) = &opts.axis_names
        && names.len() != shape.len()
    {
        return Err(format!(
            "axis_names {names:?} must have one name per axis ({} axes)",
            shape.len()
        ));
    }
    Ok(chunk)
}

/// Makes room for a new array at `dir`: nothing there (hidden entries such as a prediction
/// ledger do not count), or an array that `opts.overwrite`
/// allows to replace (removed); a group or other directory is never replaced (`refused`
/// makes the error that says so).
fn clear_existing(
    dir: &Path,
    opts: &WriteOptions,
    refused: impl Fn(String) -> DataError,
) -> Result<()> {
    if !dir.exists() || only_hidden_entries(dir) {
        return Ok(());
    }
    let is_array = dir.join("zarr.json").is_file() || dir.join(".zarray").is_file();
    if !is_array || !opts.overwrite {
        let what = if is_array {
            "an array"
        } else {
            "a directory or group"
        };
        return Err(refused(format!(
            "already exists as {what}; remove it or choose another path"
        )));
    }
    std::fs::remove_dir_all(dir).map_err(io("remove", dir))
}

/// Creates the groups from the container root down to the parent of the array at `path`.
fn ensure_parent_groups(container: &Path, path: &str, version: ZarrVersion) -> Result<()> {
    ensure_group(container, version)?;
    let mut parent = container.to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    for part in &parts[..parts.len() - 1] {
        parent.push(part);
        ensure_group(&parent, version)?;
    }
    Ok(())
}

/// The attributes of a new array: `opts.attributes` with the voxel size (as `resolution`
/// and `voxel_size`), offset and axis names that are given.
fn array_attributes(opts: &WriteOptions) -> serde_json::Map<String, Value> {
    let mut attributes = opts.attributes.clone();
    if let Some(vs) = &opts.voxel_size {
        attributes.insert("resolution".into(), json!(vs));
        attributes.insert("voxel_size".into(), json!(vs));
    }
    if let Some(offset) = &opts.offset {
        attributes.insert("offset".into(), json!(offset));
    }
    if let Some(names) = &opts.axis_names {
        attributes.insert("axis_names".into(), json!(names));
    }
    if let Some(units) = &opts.units {
        attributes.insert("units".into(), json!(units));
    }
    attributes
}

/// A zarr v3 array (zstd-compressed unless `opts.uncompressed`); its metadata is not stored
/// yet.
fn array_v3<T: WriteElement>(
    store: Arc<FilesystemStore>,
    path: &str,
    shape: &[u64],
    chunk: &[u64],
    opts: &WriteOptions,
) -> std::result::Result<Array<FilesystemStore>, String> {
    let mut builder = ArrayBuilder::new(shape.to_vec(), chunk, T::data_type(), T::fill_value());
    if !opts.uncompressed {
        builder.bytes_to_bytes_codecs(vec![Arc::new(ZstdCodec::new(3, false))]);
    }
    builder
        .dimension_names(opts.axis_names.clone())
        .attributes(array_attributes(opts))
        .build(store, &node_path(path))
        .map_err(|e| e.to_string())
}

/// A zarr v2 array (blosc lz4, as zarr-python writes it, unless `opts.uncompressed`); its
/// metadata is not stored yet.
fn array_v2<T: WriteElement>(
    store: Arc<FilesystemStore>,
    path: &str,
    shape: &[u64],
    chunk: &[u64],
    opts: &WriteOptions,
) -> std::result::Result<Array<FilesystemStore>, String> {
    let compressor = if opts.uncompressed {
        Value::Null
    } else {
        json!({"id": "blosc", "cname": "lz4", "clevel": 5, "shuffle": 1, "blocksize": 0})
    };
    let fill = if T::V2_DTYPE.contains('f') {
        json!(0.0)
    } else {
        json!(0)
    };
    let meta: ArrayMetadataV2 = serde_json::from_value(json!({
        "zarr_format": 2,
        "shape": shape,
        "chunks": chunk,
        "dtype": T::V2_DTYPE,
        "compressor": compressor,
        "fill_value": fill,
        "order": "C",
        "filters": null,
        "dimension_separator": ".",
    }))
    .map_err(|e| e.to_string())?;
    Array::new_with_metadata(
        store,
        &node_path(path),
        ArrayMetadata::V2(meta.with_attributes(array_attributes(opts))),
    )
    .map_err(|e| e.to_string())
}

/// Records an array with a geometry in its parent group's OME-Zarr metadata.
fn record_ome(container: &Path, path: &str, ndim: usize, opts: &WriteOptions) -> Result<()> {
    if opts.voxel_size.is_none() && opts.offset.is_none() && opts.axis_names.is_none() {
        return Ok(());
    }
    let names = opts.axis_names.clone().unwrap_or_else(|| {
        let spatial = opts
            .voxel_size
            .as_ref()
            .or(opts.offset.as_ref())
            .map_or(ndim, Vec::len);
        let mut n = vec!["c^".to_owned(); ndim.saturating_sub(spatial)];
        n.extend(
            ["z", "y", "x"][3usize.saturating_sub(spatial.min(3))..]
                .iter()
                .map(|s| (*s).to_owned()),
        );
        n
    });
    if names.len() != ndim {
        return Ok(());
    }
    let spatial = ndim
        - names
            .iter()
            .take_while(|n| *n == "c" || n.ends_with('^'))
            .count();
    let scale = opts
        .voxel_size
        .clone()
        .unwrap_or_else(|| vec![1.0; spatial]);
    let offset = opts.offset.clone().unwrap_or_else(|| vec![0.0; spatial]);
    let units = opts.units.clone().unwrap_or_default();
    if scale.len() != spatial || offset.len() != spatial {
        return Ok(());
    }
    crate::ome::record_array(container, path, &names, &scale, &offset, &units)
}

impl<T: WriteElement> ArrayWriter<T> {
    /// Writes `data` at `begin` (all axes); the region must lie inside the array. Writes
    /// from several threads are safe when they touch disjoint chunks; writes that share a
    /// chunk must not run concurrently (a partial chunk update reads, modifies and rewrites it).
    pub fn write(&self, begin: &[u64], data: &ArrayD<T>) -> Result<()> {
        let shape: Vec<u64> = data.shape().iter().map(|&s| s as u64).collect();
        let fits = begin.len() == shape.len()
            && begin.len() == self.array.shape().len()
            && begin
                .iter()
                .zip(&shape)
                .zip(self.array.shape())
                .all(|((b, s), n)| b.saturating_add(*s) <= *n);
        let err = |message: String| DataError::Array {
            container: self.container.clone(),
            array: self.path.clone(),
            message,
        };
        if !fits {
            return Err(err(format!(
                "cannot write a block of shape {shape:?} at {begin:?} into shape {:?}",
                self.array.shape()
            )));
        }
        let subset = ArraySubset::new_with_start_shape(begin.to_vec(), shape)
            .map_err(|e| err(e.to_string()))?;
        self.array
            .store_array_subset(&subset, data)
            .map_err(|e| DataError::Zarr {
                container: self.container.clone(),
                array: self.path.clone(),
                action: "write",
                message: e.to_string(),
            })
    }

    /// Makes the chunk files of a region written with [`ArrayWriter::write`] durable: the
    /// store already syncs each file's content, this syncs the directories that name them
    /// (new and removed all-zero chunks), so a marker written afterwards never outlives them.
    pub fn sync_region(&self, begin: &[u64], shape: &[u64]) -> Result<()> {
        let err = |message: String| DataError::Array {
            container: self.container.clone(),
            array: self.path.clone(),
            message,
        };
        let subset = ArraySubset::new_with_start_shape(begin.to_vec(), shape.to_vec())
            .map_err(|e| err(e.to_string()))?;
        let chunks = self
            .array
            .chunks_in_array_subset(&subset)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("no chunks for region {begin:?} {shape:?}")))?;
        let mut dirs = std::collections::BTreeSet::new();
        for indices in &chunks.indices() {
            let key = self.array.chunk_key(&indices);
            if let Some(dir) = self.container.join(key.as_str()).parent() {
                dirs.insert(dir.to_owned());
            }
        }
        for dir in dirs {
            match std::fs::File::open(&dir) {
                Ok(d) => d.sync_all().map_err(io("fsync directory", &dir))?,
                // No chunk was stored below it (all fill value): nothing to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("open directory", &dir)(e)),
            }
        }
        Ok(())
    }

    /// Shape of the array (all axes).
    pub fn shape(&self) -> &[u64] {
        self.array.shape()
    }
}

/// Opens an existing array for writing (e.g. by one of several worker processes); its
/// element type must be `T`.
pub fn open_writer<T: WriteElement>(container: &Path, path: &str) -> Result<ArrayWriter<T>> {
    let zerr = |message: String| DataError::Zarr {
        container: container.to_owned(),
        array: path.to_owned(),
        action: "open for writing",
        message,
    };
    let store = Arc::new(FilesystemStore::new(container).map_err(|e| zerr(e.to_string()))?);
    let array = Array::open(store, &node_path(path)).map_err(|e| zerr(e.to_string()))?;
    if array.data_type() != &T::data_type() {
        return Err(DataError::Dtype {
            container: container.to_owned(),
            array: path.to_owned(),
            found: array.data_type().to_string(),
            expected: format!("expected {} for this output", T::data_type()),
        });
    }
    Ok(ArrayWriter {
        container: container.to_owned(),
        path: path.to_owned(),
        array,
        _element: PhantomData,
    })
}

/// Creates an array at `path` inside `container` holding `data`.
pub fn write_array<T: WriteElement>(
    container: &Path,
    path: &str,
    data: &ArrayD<T>,
    opts: &WriteOptions,
) -> Result<()> {
    let shape: Vec<u64> = data.shape().iter().map(|&s| s as u64).collect();
    let writer = create_array::<T>(container, path, &shape, opts)?;
    writer.write(&vec![0; shape.len()], data)
}
