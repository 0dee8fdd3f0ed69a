//! Zarr v2/v3 arrays on the filesystem: opening, metadata (voxel size, offset, axis names,
//! channel axis) and typed reads of spatial regions.
//!
//! Conventions (funlib/DaCapo style): the voxel size is the `voxel_size` or `resolution`
//! attribute (default 1 per axis), the offset is the `offset` attribute in world units
//! (default 0), axis names come from the `axis_names` attribute or, in zarr v3, the array's
//! `dimension_names`, units from the `units` attribute. What these attributes leave out comes
//! from OME-Zarr `multiscales` metadata of a parent group when there is some ([`crate::ome`]).
//! A leading axis named `c^` or `c` (or any name ending in `^`) is a channel axis; without
//! names, one extra leading axis beyond the spatial dimensions is a channel axis.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::ArrayD;
use serde_json::Value;
use zarrs::array::data_type::{
    BoolDataType, Float32DataType, Float64DataType, Int8DataType, Int16DataType, Int32DataType,
    Int64DataType, UInt8DataType, UInt16DataType, UInt32DataType, UInt64DataType,
};
use zarrs::array::{Array, ArrayCreateError, ArraySubset, DataType, ElementOwned};
use zarrs::filesystem::FilesystemStore;

use crate::error::{DataError, Result};
use crate::ome::OmeGeometry;

/// Element types an array can hold on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// Booleans.
    Bool,
    /// Unsigned 8-bit integers.
    U8,
    /// Unsigned 16-bit integers.
    U16,
    /// Unsigned 32-bit integers.
    U32,
    /// Unsigned 64-bit integers.
    U64,
    /// Signed 8-bit integers.
    I8,
    /// Signed 16-bit integers.
    I16,
    /// Signed 32-bit integers.
    I32,
    /// Signed 64-bit integers.
    I64,
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
}

impl Dtype {
    /// The zarr v3 name of the type (`uint8`, `float32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bool => "bool",
            Dtype::U8 => "uint8",
            Dtype::U16 => "uint16",
            Dtype::U32 => "uint32",
            Dtype::U64 => "uint64",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::I32 => "int32",
            Dtype::I64 => "int64",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Whether the type is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    fn of(dt: &DataType) -> Option<Self> {
        Some(if dt.is::<BoolDataType>() {
            Dtype::Bool
        } else if dt.is::<UInt8DataType>() {
            Dtype::U8
        } else if dt.is::<UInt16DataType>() {
            Dtype::U16
        } else if dt.is::<UInt32DataType>() {
            Dtype::U32
        } else if dt.is::<UInt64DataType>() {
            Dtype::U64
        } else if dt.is::<Int8DataType>() {
            Dtype::I8
        } else if dt.is::<Int16DataType>() {
            Dtype::I16
        } else if dt.is::<Int32DataType>() {
            Dtype::I32
        } else if dt.is::<Int64DataType>() {
            Dtype::I64
        } else if dt.is::<Float32DataType>() {
            Dtype::F32
        } else if dt.is::<Float64DataType>() {
            Dtype::F64
        } else {
            return None;
        })
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shape, type and geometry of an array.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayMeta {
    /// Shape of every axis, the channel axis (if any) first.
    pub shape: Vec<u64>,
    /// Shape of one chunk (the first chunk for irregular grids).
    pub chunk_shape: Vec<u64>,
    /// Element type on disk.
    pub dtype: Dtype,
    /// Zarr format version: 2 or 3.
    pub zarr_format: u8,
    /// One name per axis (defaults: `c^` for the channel axis, then `z`, `y`, `x`).
    pub axis_names: Vec<String>,
    /// Whether axis 0 is a channel axis.
    pub channel_axis: bool,
    /// Size of a voxel in world units, per spatial axis.
    pub voxel_size: Vec<f64>,
    /// World coordinate of the first voxel's corner, per spatial axis.
    pub offset: Vec<f64>,
    /// Unit of the voxel size and offset per spatial axis (e.g. `nm`), empty when unknown.
    pub units: Vec<String>,
}

impl ArrayMeta {
    /// Number of spatial axes.
    pub fn spatial_dims(&self) -> usize {
        self.shape.len() - usize::from(self.channel_axis)
    }

    /// Shape of the spatial axes.
    pub fn spatial_shape(&self) -> &[u64] {
        &self.shape[usize::from(self.channel_axis)..]
    }

    /// Number of channels (1 without a channel axis).
    pub fn channels(&self) -> u64 {
        if self.channel_axis { self.shape[0] } else { 1 }
    }

    /// Number of elements of the whole array.
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// An open zarr array: metadata plus typed reads of spatial regions.
#[derive(Debug, Clone)]
pub struct ZarrArray {
    container: PathBuf,
    path: String,
    array: Arc<Array<FilesystemStore>>,
    meta: ArrayMeta,
}

/// `"/a/b"` for `"a/b"`, `"/a/b/"` or `"/a/b"`: the node path form zarrs expects.
pub(crate) fn node_path(path: &str) -> String {
    format!("/{}", path.trim_matches('/'))
}

impl ZarrArray {
    /// Opens array `path` of the zarr (v2 or v3) container `container`.
    ///
    /// With `spatial_dims = Some(d)` the array must have `d` spatial axes, optionally after one
    /// leading channel axis; with `None` the layout is inferred from axis names and attributes.
    pub fn open(container: &Path, path: &str, spatial_dims: Option<usize>) -> Result<Self> {
        if !container.is_dir() {
            return Err(DataError::MissingContainer {
                container: container.to_owned(),
            });
        }
        let store = FilesystemStore::new(container).map_err(|e| DataError::Zarr {
            container: container.to_owned(),
            array: path.to_owned(),
            action: "open",
            message: e.to_string(),
        })?;
        let array = Array::open(Arc::new(store), &node_path(path)).map_err(|e| match e {
            ArrayCreateError::MissingMetadata => DataError::MissingArray {
                container: container.to_owned(),
                array: path.to_owned(),
                available: describe_container(container),
            },
            e => DataError::Zarr {
                container: container.to_owned(),
                array: path.to_owned(),
                action: "open",
                message: e.to_string(),
            },
        })?;
        let err = |message: String| DataError::Array {
            container: container.to_owned(),
            array: path.to_owned(),
            message,
        };
        let dtype = Dtype::of(array.data_type()).ok_or_else(|| DataError::Dtype {
            container: container.to_owned(),
            array: path.to_owned(),
            found: array.data_type().to_string(),
            expected: "supported are bool, (u)int8/16/32/64, float32 and float64: convert the \
                       array (e.g. with numpy's astype) and write it again"
                .into(),
        })?;
        let shape = array.shape().to_vec();
        if shape.is_empty() {
            return Err(err(
                "is a scalar (0-dimensional); expected a 2D or 3D image".into(),
            ));
        }
        let chunk_shape = array
            .chunk_shape(&vec![0; shape.len()])
            .map(|c| c.iter().map(|n| n.get()).collect())
            .unwrap_or_else(|_| shape.clone());
        let attrs = array.attributes().clone();
        let zarr_format = match array.metadata() {
            zarrs::array::ArrayMetadata::V2(_) => 2,
            zarrs::array::ArrayMetadata::V3(_) => 3,
        };
        let names = axis_names_from(&attrs, array.dimension_names(), shape.len()).map_err(err)?;
        let geometry_complete = names.is_some()
            && ["voxel_size", "resolution"]
                .iter()
                .any(|k| attrs.contains_key(*k))
            && attrs.contains_key("offset");
        let ome = if geometry_complete {
            None
        } else {
            crate::ome::find_geometry(container, path, shape.len()).map_err(err)?
        };
        let meta = resolve_layout(
            Layout {
                shape,
                chunk_shape,
                dtype,
                zarr_format,
            },
            names,
            &attrs,
            ome.as_ref(),
            spatial_dims,
        )
        .map_err(err)?;
        Ok(Self {
            container: container.to_owned(),
            path: path.to_owned(),
            array: Arc::new(array),
            meta,
        })
    }

    /// The container path.
    pub fn container(&self) -> &Path {
        &self.container
    }

    /// The array path inside the container.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Shape, type and geometry.
    pub fn meta(&self) -> &ArrayMeta {
        &self.meta
    }

    pub(crate) fn err(&self, message: String) -> DataError {
        DataError::Array {
            container: self.container.clone(),
            array: self.path.clone(),
            message,
        }
    }

    fn subset(&self, begin: &[u64], shape: &[u64]) -> Result<ArraySubset> {
        let spatial = self.meta.spatial_shape();
        if begin.len() != spatial.len()
            || shape.len() != spatial.len()
            || begin
                .iter()
                .zip(shape)
                .zip(spatial)
                .any(|((b, s), n)| b.saturating_add(*s) > *n)
        {
            return Err(self.err(format!(
                "region begin {begin:?} shape {shape:?} is outside the spatial shape {spatial:?}"
            )));
        }
        let mut start = Vec::with_capacity(self.meta.shape.len());
        let mut extent = Vec::with_capacity(self.meta.shape.len());
        if self.meta.channel_axis {
            start.push(0);
            extent.push(self.meta.shape[0]);
        }
        start.extend_from_slice(begin);
        extent.extend_from_slice(shape);
        ArraySubset::new_with_start_shape(start, extent).map_err(|e| self.err(e.to_string()))
    }

    fn retrieve<T: ElementOwned>(&self, subset: &ArraySubset) -> Result<ArrayD<T>> {
        self.array
            .retrieve_array_subset::<ArrayD<T>>(subset)
            .map_err(|e| DataError::Zarr {
                container: self.container.clone(),
                array: self.path.clone(),
                action: "read",
                message: e.to_string(),
            })
    }

    /// Reads a spatial region as `f32`; the result has the array's axes (channel axis whole).
    pub fn read_f32(&self, begin: &[u64], shape: &[u64]) -> Result<ArrayD<f32>> {
        let subset = self.subset(begin, shape)?;
        // Precision loss for 64-bit integers is accepted: these are intensities.
        #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
        Ok(match self.meta.dtype {
            Dtype::Bool => self
                .retrieve::<bool>(&subset)?
                .mapv(|v| f32::from(u8::from(v))),
            Dtype::U8 => self.retrieve::<u8>(&subset)?.mapv(f32::from),
            Dtype::U16 => self.retrieve::<u16>(&subset)?.mapv(f32::from),
            Dtype::U32 => self.retrieve::<u32>(&subset)?.mapv(|v| v as f32),
            Dtype::U64 => self.retrieve::<u64>(&subset)?.mapv(|v| v as f32),
            Dtype::I8 => self.retrieve::<i8>(&subset)?.mapv(f32::from),
            Dtype::I16 => self.retrieve::<i16>(&subset)?.mapv(f32::from),
            Dtype::I32 => self.retrieve::<i32>(&subset)?.mapv(|v| v as f32),
            Dtype::I64 => self.retrieve::<i64>(&subset)?.mapv(|v| v as f32),
            Dtype::F32 => self.retrieve::<f32>(&subset)?,
            Dtype::F64 => self.retrieve::<f64>(&subset)?.mapv(|v| v as f32),
        })
    }

    /// Checks that the array can hold instance labels (integer or bool dtype).
    pub fn check_label_dtype(&self) -> Result<()> {
        if self.meta.dtype.is_float() {
            return Err(DataError::Dtype {
                container: self.container.clone(),
                array: self.path.clone(),
                found: self.meta.dtype.to_string(),
                expected: "labels must be a non-negative integer type (uint8..uint64, or int \
                           without negative values): convert the label array"
                    .into(),
            });
        }
        Ok(())
    }

    /// Reads a spatial region of instance labels as `u64`; float dtypes and negative values
    /// are errors.
    pub fn read_labels(&self, begin: &[u64], shape: &[u64]) -> Result<ArrayD<u64>> {
        self.check_label_dtype()?;
        let subset = self.subset(begin, shape)?;
        fn signed<T: Copy + Into<i64>>(a: &ZarrArray, data: ArrayD<T>) -> Result<ArrayD<u64>> {
            let mut bad = None;
            let out = data.mapv(|v| {
                let v: i64 = v.into();
                u64::try_from(v).unwrap_or_else(|_| {
                    bad.get_or_insert(v);
                    0
                })
            });
            match bad {
                Some(v) => Err(a.err(format!(
                    "contains the negative label {v}; labels must be >= 0 (0 = background)"
                ))),
                None => Ok(out),
            }
        }
        match self.meta.dtype {
            Dtype::Bool => Ok(self.retrieve::<bool>(&subset)?.mapv(u64::from)),
            Dtype::U8 => Ok(self.retrieve::<u8>(&subset)?.mapv(u64::from)),
            Dtype::U16 => Ok(self.retrieve::<u16>(&subset)?.mapv(u64::from)),
            Dtype::U32 => Ok(self.retrieve::<u32>(&subset)?.mapv(u64::from)),
            Dtype::U64 => self.retrieve::<u64>(&subset),
            Dtype::I8 => signed(self, self.retrieve::<i8>(&subset)?),
            Dtype::I16 => signed(self, self.retrieve::<i16>(&subset)?),
            Dtype::I32 => signed(self, self.retrieve::<i32>(&subset)?),
            Dtype::I64 => signed(self, self.retrieve::<i64>(&subset)?),
            Dtype::F32 | Dtype::F64 => Err(self.err("labels cannot be float".into())),
        }
    }

    /// Reads a spatial region as a boolean mask (non-zero = true).
    pub fn read_mask(&self, begin: &[u64], shape: &[u64]) -> Result<ArrayD<bool>> {
        let subset = self.subset(begin, shape)?;
        Ok(match self.meta.dtype {
            Dtype::Bool => self.retrieve::<bool>(&subset)?,
            Dtype::U8 => self.retrieve::<u8>(&subset)?.mapv(|v| v != 0),
            Dtype::U16 => self.retrieve::<u16>(&subset)?.mapv(|v| v != 0),
            Dtype::U32 => self.retrieve::<u32>(&subset)?.mapv(|v| v != 0),
            Dtype::U64 => self.retrieve::<u64>(&subset)?.mapv(|v| v != 0),
            Dtype::I8 => self.retrieve::<i8>(&subset)?.mapv(|v| v != 0),
            Dtype::I16 => self.retrieve::<i16>(&subset)?.mapv(|v| v != 0),
            Dtype::I32 => self.retrieve::<i32>(&subset)?.mapv(|v| v != 0),
            Dtype::I64 => self.retrieve::<i64>(&subset)?.mapv(|v| v != 0),
            Dtype::F32 => self.retrieve::<f32>(&subset)?.mapv(|v| v != 0.0),
            Dtype::F64 => self.retrieve::<f64>(&subset)?.mapv(|v| v != 0.0),
        })
    }
}

/// Axis names from the `axis_names` attribute, else from v3 `dimension_names` (if all named).
fn axis_names_from(
    attrs: &serde_json::Map<String, Value>,
    dimension_names: &Option<Vec<Option<String>>>,
    ndim: usize,
) -> std::result::Result<Option<Vec<String>>, String> {
    if let Some(v) = attrs.get("axis_names") {
        let names: Option<Vec<String>> = v
            .as_array()
            .and_then(|a| a.iter().map(|n| n.as_str().map(str::to_owned)).collect());
        return match names {
            Some(n) if n.len() == ndim => Ok(Some(n)),
            _ => Err(format!(
                "attribute `axis_names` is {v}; expected a list of {ndim} strings, one per axis"
            )),
        };
    }
    Ok(dimension_names
        .as_ref()
        .and_then(|names| names.iter().cloned().collect::<Option<Vec<String>>>())
        .filter(|n| n.len() == ndim && n.iter().all(|s| !s.is_empty())))
}

fn is_channel_name(name: &str) -> bool {
    name == "c" || name.ends_with('^')
}

fn default_spatial_names(n: usize) -> Vec<String> {
    match n {
        1 => vec!["x".into()],
        2 => vec!["y".into(), "x".into()],
        3 => vec!["z".into(), "y".into(), "x".into()],
        _ => (0..n).map(|i| format!("d{i}")).collect(),
    }
}

/// A per-spatial-axis list of positive numbers (`voxel_size`/`resolution`) or any numbers
/// (`offset`) from an attribute; a list of `ndim` entries drops the channel entry.
fn spatial_attr(
    attrs: &serde_json::Map<String, Value>,
    keys: &[&str],
    spatial: usize,
    channel_axis: bool,
    positive: bool,
    default: f64,
) -> std::result::Result<Vec<f64>, String> {
    let Some((key, value)) = keys.iter().find_map(|k| attrs.get(*k).map(|v| (*k, v))) else {
        return Ok(vec![default; spatial]);
    };
    let numbers: Option<Vec<f64>> = value
        .as_array()
        .and_then(|a| a.iter().map(Value::as_f64).collect());
    let what = if positive {
        "positive numbers"
    } else {
        "numbers"
    };
    let Some(mut numbers) = numbers else {
        return Err(format!(
            "attribute `{key}` is {value}; expected a list of {what}"
        ));
    };
    if channel_axis && numbers.len() == spatial + 1 {
        numbers.remove(0);
    }
    if numbers.len() != spatial {
        return Err(format!(
            "attribute `{key}` is {value}; expected {spatial} {what} (one per spatial axis)"
        ));
    }
    if numbers
        .iter()
        .any(|v| !v.is_finite() || (positive && *v <= 0.0))
    {
        return Err(format!(
            "attribute `{key}` is {value}; expected finite {what}"
        ));
    }
    Ok(numbers)
}

/// What the array's own metadata says, before attributes are interpreted.
struct Layout {
    shape: Vec<u64>,
    chunk_shape: Vec<u64>,
    dtype: Dtype,
    zarr_format: u8,
}

/// Units per spatial axis from the `units` attribute, else from OME-Zarr axes, else empty.
fn units_from(
    attrs: &serde_json::Map<String, Value>,
    ome: Option<&OmeGeometry>,
    spatial: usize,
) -> std::result::Result<Vec<String>, String> {
    if let Some(v) = attrs.get("units") {
        let units: Option<Vec<String>> = v
            .as_array()
            .and_then(|a| a.iter().map(|u| u.as_str().map(str::to_owned)).collect());
        return match units {
            Some(mut u) if u.len() == spatial + 1 => Ok(u.split_off(1)),
            Some(u) if u.len() == spatial => Ok(u),
            _ => Err(format!(
                "attribute `units` is {v}; expected {spatial} strings (one per spatial axis)"
            )),
        };
    }
    Ok(match ome {
        Some(g) => g.units[g.units.len() - spatial..].to_vec(),
        None => vec![String::new(); spatial],
    })
}

fn resolve_layout(
    layout: Layout,
    names: Option<Vec<String>>,
    attrs: &serde_json::Map<String, Value>,
    ome: Option<&OmeGeometry>,
    spatial_dims: Option<usize>,
) -> std::result::Result<ArrayMeta, String> {
    let Layout {
        shape,
        chunk_shape,
        dtype,
        zarr_format,
    } = layout;
    let names = names.or_else(|| ome.map(|g| g.axis_names.clone()));
    let ndim = shape.len();
    if let Some(names) = &names
        && let Some(i) = names.iter().skip(1).position(|n| is_channel_name(n))
    {
        return Err(format!(
            "axis {} ({:?}) of axis names {names:?} is a channel axis; only a leading channel \
             axis is supported",
            i + 1,
            names[i + 1]
        ));
    }
    let vs_len = ["voxel_size", "resolution"]
        .iter()
        .find_map(|k| attrs.get(*k).and_then(Value::as_array).map(Vec::len));
    let channel_axis = match (&names, spatial_dims) {
        (Some(n), _) => is_channel_name(&n[0]),
        (None, Some(d)) => ndim == d + 1,
        (None, None) => ndim > 1 && vs_len == Some(ndim - 1),
    };
    let spatial = ndim - usize::from(channel_axis);
    if spatial == 0 {
        return Err(format!("has shape {shape:?} with no spatial axis"));
    }
    if let Some(d) = spatial_dims
        && spatial != d
    {
        let named = names
            .as_ref()
            .map(|n| format!(" named {n:?}"))
            .unwrap_or_default();
        return Err(format!(
            "has {ndim} axes{named} (shape {shape:?}), i.e. {spatial} spatial axes; a {d}D \
             network needs {d} spatial axes, optionally after one leading channel axis \
             (named `c^` in `axis_names`)"
        ));
    }
    let axis_names = names.unwrap_or_else(|| {
        let mut n = Vec::with_capacity(ndim);
        if channel_axis {
            n.push("c^".to_owned());
        }
        n.extend(default_spatial_names(spatial));
        n
    });
    let ome_spatial = |all: &[f64]| all[ndim - spatial..].to_vec();
    let voxel_size = match ome {
        Some(g)
            if !["voxel_size", "resolution"]
                .iter()
                .any(|k| attrs.contains_key(*k)) =>
        {
            let v = ome_spatial(&g.scale);
            if v.iter().any(|s| *s <= 0.0) {
                return Err(format!(
                    "OME-Zarr scale {:?} must be positive on the spatial axes",
                    g.scale
                ));
            }
            v
        }
        _ => spatial_attr(
            attrs,
            &["voxel_size", "resolution"],
            spatial,
            channel_axis,
            true,
            1.0,
        )?,
    };
    let offset = match ome {
        Some(g) if !attrs.contains_key("offset") => ome_spatial(&g.translation),
        _ => spatial_attr(attrs, &["offset"], spatial, channel_axis, false, 0.0)?,
    };
    let units = units_from(attrs, ome, spatial)?;
    Ok(ArrayMeta {
        shape,
        chunk_shape,
        dtype,
        zarr_format,
        axis_names,
        channel_axis,
        voxel_size,
        offset,
        units,
    })
}

/// A short description of the arrays inside a container, for "no such array" errors.
fn describe_container(container: &Path) -> String {
    let is_node = |dir: &Path| dir.join("zarr.json").is_file() || dir.join(".zgroup").is_file();
    if !is_node(container) && !container.join(".zarray").is_file() {
        return "it is not a zarr container (no zarr.json or .zgroup at its root): check the \
                `zarr` path"
            .into();
    }
    let mut found = Vec::new();
    find_arrays(container, container, 0, &mut found);
    found.sort();
    if found.is_empty() {
        "the container holds no arrays".into()
    } else {
        const SHOWN: usize = 20;
        let more = found.len().saturating_sub(SHOWN);
        let mut list = found.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            list.push_str(&format!(" and {more} more"));
        }
        format!("arrays in this container: {list}")
    }
}

fn find_arrays(root: &Path, dir: &Path, depth: usize, found: &mut Vec<String>) {
    const MAX_DEPTH: usize = 4;
    const MAX_FOUND: usize = 200;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if found.len() >= MAX_FOUND || !path.is_dir() {
            continue;
        }
        let is_array = path.join(".zarray").is_file()
            || std::fs::read_to_string(path.join("zarr.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v.get("node_type").and_then(Value::as_str) == Some("array"));
        if is_array {
            if let Ok(rel) = path.strip_prefix(root) {
                found.push(rel.to_string_lossy().replace('\\', "/"));
            }
        } else if depth + 1 < MAX_DEPTH {
            find_arrays(root, &path, depth + 1, found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(shape: Vec<u64>, dtype: Dtype, zarr_format: u8) -> Layout {
        Layout {
            chunk_shape: shape.clone(),
            shape,
            dtype,
            zarr_format,
        }
    }

    fn attrs(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn channel_axis_from_names_and_shape() {
        let m = resolve_layout(
            layout(vec![2, 10, 12], Dtype::U8, 3),
            Some(vec!["c^".into(), "y".into(), "x".into()]),
            &attrs(serde_json::json!({"resolution": [4, 2]})),
            None,
            None,
        )
        .unwrap();
        assert!(m.channel_axis);
        assert_eq!(m.spatial_shape(), &[10, 12]);
        assert_eq!(m.voxel_size, vec![4.0, 2.0]);
        assert_eq!(m.offset, vec![0.0, 0.0]);

        // No names: an extra leading axis for a 2D network is a channel axis.
        let m = resolve_layout(
            layout(vec![3, 10, 12], Dtype::U8, 2),
            None,
            &attrs(serde_json::json!({})),
            None,
            Some(2),
        )
        .unwrap();
        assert!(m.channel_axis);
        assert_eq!(m.axis_names, vec!["c^", "y", "x"]);
        assert_eq!(m.channels(), 3);

        // Names say three spatial axes: a 2D network cannot use it.
        let e = resolve_layout(
            layout(vec![3, 10, 12], Dtype::U8, 2),
            Some(vec!["z".into(), "y".into(), "x".into()]),
            &attrs(serde_json::json!({})),
            None,
            Some(2),
        )
        .unwrap_err();
        assert!(
            e.contains("3 spatial axes") && e.contains("2D network"),
            "{e}"
        );
    }

    #[test]
    fn voxel_size_and_offset_attributes() {
        let a = attrs(serde_json::json!({"voxel_size": [1, 8, 8, 8], "offset": [0, 16, 8, 4]}));
        let m = resolve_layout(
            layout(vec![1, 4, 4, 4], Dtype::F32, 2),
            None,
            &a,
            None,
            Some(3),
        )
        .unwrap();
        assert_eq!(m.voxel_size, vec![8.0, 8.0, 8.0]);
        assert_eq!(m.offset, vec![16.0, 8.0, 4.0]);

        let bad = attrs(serde_json::json!({"resolution": [0, 1]}));
        let e = resolve_layout(layout(vec![4, 4], Dtype::F32, 2), None, &bad, None, Some(2))
            .unwrap_err();
        assert!(e.contains("`resolution`"), "{e}");
        let bad = attrs(serde_json::json!({"offset": [1, 2, 3]}));
        let e = resolve_layout(layout(vec![4, 4], Dtype::F32, 2), None, &bad, None, Some(2))
            .unwrap_err();
        assert!(e.contains("`offset`"), "{e}");
    }

    #[test]
    fn non_leading_channel_axis_is_rejected() {
        let e = resolve_layout(
            layout(vec![10, 12, 2], Dtype::U8, 3),
            Some(vec!["y".into(), "x".into(), "c^".into()]),
            &attrs(serde_json::json!({})),
            None,
            None,
        )
        .unwrap_err();
        assert!(e.contains("leading channel"), "{e}");
    }
}
