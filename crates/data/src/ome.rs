//! OME-Zarr (NGFF) `multiscales` metadata, so that viewers (neuroglancer, napari,
//! BigDataViewer) place arrays in world coordinates.
//!
//! Writing: [`crate::create_array`] records an array with a geometry as a one-level multiscale
//! image in its parent group: OME-Zarr 0.5 (`attributes.ome.multiscales` of `zarr.json`) for
//! zarr v3 groups, 0.4 (`multiscales` in `.zattrs`) for v2 groups. The dataset `path` is the
//! array's last path component (`out.zarr/prediction` gives the container root an entry with
//! dataset `prediction`; `out.zarr/pred/s0` gives group `pred` one with dataset `s0`); an entry
//! that already lists that path is updated in place, otherwise one is appended, so other
//! images of the group keep theirs.
//!
//! Reading: [`ZarrArray::open`](crate::ZarrArray::open) takes the voxel size, offset, axis
//! names and units that the array's own attributes do not give from the first ancestor group
//! whose multiscales list the array as a dataset (e.g. `data.zarr/raw` for `raw/s0`).
//!
//! Scale maps to the voxel size and translation to the offset, as funlib does: both describe
//! where voxel index 0 lies, in the same units.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{DataError, Result, io};

/// Axis names that OME-Zarr calls time axes (dacapo-rs arrays have none).
const TIME_NAMES: &[&str] = &["t", "time"];

/// The geometry that OME-Zarr metadata gives one array, one entry per axis of the array.
#[derive(Debug, Clone, PartialEq)]
pub struct OmeGeometry {
    /// Axis names; the channel axis is named `c^` (the crate's convention).
    pub axis_names: Vec<String>,
    /// Scale (voxel size) per axis, channel axis included.
    pub scale: Vec<f64>,
    /// Translation (offset) per axis, channel axis included.
    pub translation: Vec<f64>,
    /// Unit per axis, empty when the metadata names none.
    pub units: Vec<String>,
}

/// The OME-Zarr version written into a group of this zarr format.
fn ome_version(zarr_v3: bool) -> &'static str {
    if zarr_v3 { "0.5" } else { "0.4" }
}

/// The long (UDUNITS-2) name OME-Zarr requires for a short unit such as `nm`.
pub fn ome_unit(unit: &str) -> String {
    match unit {
        "nm" => "nanometer",
        "um" | "µm" | "μm" => "micrometer",
        "mm" => "millimeter",
        "cm" => "centimeter",
        "m" => "meter",
        "pm" => "picometer",
        "Å" | "A" => "angstrom",
        "s" => "second",
        "ms" => "millisecond",
        other => other,
    }
    .to_owned()
}

fn is_channel(name: &str) -> bool {
    name == "c" || name.ends_with('^')
}

/// Whether these axes fit OME-Zarr's layout: an optional leading channel axis, then 2 or 3
/// space axes.
fn fits_ome(axis_names: &[String]) -> bool {
    let channels = axis_names.iter().take_while(|n| is_channel(n)).count();
    let space = axis_names.len() - channels;
    channels <= 1
        && (2..=3).contains(&space)
        && !axis_names[channels..].iter().any(|n| is_channel(n))
}

/// The OME `axes` list for `axis_names` (spatial `units` may be empty strings: no unit).
fn axes_json(axis_names: &[String], units: &[String]) -> Vec<Value> {
    let channels = usize::from(axis_names.first().is_some_and(|n| is_channel(n)));
    axis_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            if i < channels {
                return json!({"name": name.trim_end_matches('^'), "type": "channel"});
            }
            let mut axis = json!({"name": name, "type": "space"});
            if let Some(unit) = units.get(i - channels).filter(|u| !u.is_empty()) {
                axis["unit"] = json!(ome_unit(unit));
            }
            axis
        })
        .collect()
}

/// Paths of the group that holds an array's OME entry and of the array inside that group.
fn split_parent(path: &str) -> (String, String) {
    let trimmed = path.trim_matches('/');
    match trimmed.rsplit_once('/') {
        Some((parent, name)) => (parent.to_owned(), name.to_owned()),
        None => (String::new(), trimmed.to_owned()),
    }
}

/// The attributes file of the group at `dir` and whether it is zarr v3 (`None`: no group).
fn group_attributes_file(dir: &Path) -> Option<(PathBuf, bool)> {
    if dir.join("zarr.json").is_file() {
        Some((dir.join("zarr.json"), true))
    } else if dir.join(".zgroup").is_file() {
        Some((dir.join(".zattrs"), false))
    } else {
        None
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", path)(e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DataError::Io {
            action: "parse JSON",
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
}

/// Replaces `path` with `value` through a temporary file, so readers never see half a file.
fn write_json(path: &Path, value: &Value) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, format!("{value:#}\n")).map_err(io("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

/// Records array `path` of `container` in its parent group's OME-Zarr multiscales (see the
/// module docs). `axis_names` covers every axis; `scale`, `translation` and `units` the
/// spatial ones. Arrays whose axes OME-Zarr cannot describe are left out.
pub(crate) fn record_array(
    container: &Path,
    path: &str,
    axis_names: &[String],
    scale: &[f64],
    translation: &[f64],
    units: &[String],
) -> Result<()> {
    if !fits_ome(axis_names) {
        return Ok(());
    }
    let (parent, name) = split_parent(path);
    let group = if parent.is_empty() {
        container.to_owned()
    } else {
        container.join(&parent)
    };
    let Some((file, v3)) = group_attributes_file(&group) else {
        return Ok(());
    };
    let channels = axis_names.len() - scale.len();
    let full = |spatial: &[f64], fill: f64| {
        let mut all = vec![fill; channels];
        all.extend_from_slice(spatial);
        all
    };
    let dataset = json!({
        "path": name,
        "coordinateTransformations": [
            {"type": "scale", "scale": full(scale, 1.0)},
            {"type": "translation", "translation": full(translation, 0.0)},
        ],
    });
    let axes = axes_json(axis_names, units);
    let mut doc = read_json(&file)?.unwrap_or_else(|| json!({}));
    let attributes = if v3 {
        if !doc.get("attributes").is_some_and(Value::is_object) {
            doc["attributes"] = json!({});
        }
        &mut doc["attributes"]
    } else {
        &mut doc
    };
    let list_owner = if v3 {
        if !attributes.get("ome").is_some_and(Value::is_object) {
            attributes["ome"] = json!({});
        }
        attributes["ome"]["version"] = json!(ome_version(true));
        &mut attributes["ome"]
    } else {
        &mut *attributes
    };
    if !list_owner.get("multiscales").is_some_and(Value::is_array) {
        list_owner["multiscales"] = json!([]);
    }
    let Some(list) = list_owner["multiscales"].as_array_mut() else {
        return Ok(());
    };
    let lists_path = |entry: &Value| {
        entry["datasets"].as_array().and_then(|d| {
            d.iter()
                .position(|d| d["path"].as_str() == Some(name.as_str()))
        })
    };
    match list.iter().position(|e| lists_path(e).is_some()) {
        Some(i) => {
            let entry = &mut list[i];
            if let Some(at) = lists_path(entry)
                && let Some(datasets) = entry["datasets"].as_array_mut()
            {
                datasets[at] = dataset;
            }
            entry["axes"] = json!(axes);
        }
        None => {
            let mut entry = json!({"name": name, "axes": axes, "datasets": [dataset]});
            if !v3 {
                entry["version"] = json!(ome_version(false));
            }
            list.push(entry);
        }
    }
    write_json(&file, &doc)
}

/// The multiscales list of a group's attributes: 0.5 (`ome.multiscales`) or 0.4.
fn multiscales_of(attributes: &Value) -> Option<&Vec<Value>> {
    attributes
        .get("ome")
        .and_then(|o| o.get("multiscales"))
        .or_else(|| attributes.get("multiscales"))
        .and_then(Value::as_array)
}

/// The OME-Zarr geometry of array `path` in `container`, from the nearest ancestor group
/// whose multiscales list it; `Ok(None)` when none does. `ndim` is the array's axis count.
pub(crate) fn find_geometry(
    container: &Path,
    path: &str,
    ndim: usize,
) -> std::result::Result<Option<OmeGeometry>, String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    for cut in (0..parts.len()).rev() {
        let group = parts[..cut]
            .iter()
            .fold(container.to_owned(), |p, s| p.join(s));
        let relative = parts[cut..].join("/");
        let Some((file, v3)) = group_attributes_file(&group) else {
            continue;
        };
        let Ok(Some(doc)) = read_json(&file) else {
            continue;
        };
        let attributes = if v3 { &doc["attributes"] } else { &doc };
        let Some(list) = multiscales_of(attributes) else {
            continue;
        };
        for entry in list {
            let Some(dataset) = entry["datasets"].as_array().and_then(|d| {
                d.iter().find(|d| {
                    d["path"].as_str().map(|p| p.trim_matches('/')) == Some(relative.as_str())
                })
            }) else {
                continue;
            };
            let where_ = format!(
                "OME-Zarr multiscales of group {} (dataset {relative:?})",
                group.display()
            );
            return geometry_of(entry, dataset, ndim)
                .map(Some)
                .map_err(|e| format!("{where_}: {e}"));
        }
    }
    Ok(None)
}

/// Composes a dataset's transforms with its multiscale's (which apply after them).
fn geometry_of(
    entry: &Value,
    dataset: &Value,
    ndim: usize,
) -> std::result::Result<OmeGeometry, String> {
    let axes = entry["axes"].as_array().ok_or("has no `axes` list")?;
    if axes.len() != ndim {
        return Err(format!(
            "lists {} axes but the array has {ndim}",
            axes.len()
        ));
    }
    let mut axis_names = Vec::with_capacity(ndim);
    let mut units = Vec::with_capacity(ndim);
    for axis in axes {
        // OME-Zarr 0.3 wrote axes as plain strings.
        let (name, kind) = match axis {
            Value::String(s) => (s.as_str(), None),
            _ => (
                axis["name"].as_str().ok_or("has an axis without a name")?,
                axis["type"].as_str(),
            ),
        };
        if kind == Some("time") || TIME_NAMES.contains(&name) {
            return Err(format!(
                "has a time axis {name:?}; dacapo-rs reads a channel axis and 2 or 3 space \
                 axes: write one time point as its own array"
            ));
        }
        axis_names.push(if kind == Some("channel") || name == "c" {
            "c^".to_owned()
        } else {
            name.to_owned()
        });
        units.push(axis["unit"].as_str().unwrap_or_default().to_owned());
    }
    let (mut scale, mut translation) = transforms(&dataset["coordinateTransformations"], ndim)?;
    if !entry["coordinateTransformations"].is_null() {
        let (s, t) = transforms(&entry["coordinateTransformations"], ndim)?;
        for i in 0..ndim {
            scale[i] *= s[i];
            translation[i] = translation[i] * s[i] + t[i];
        }
    }
    Ok(OmeGeometry {
        axis_names,
        scale,
        translation,
        units,
    })
}

/// Scale and translation of a `coordinateTransformations` list (identity when absent).
fn transforms(list: &Value, ndim: usize) -> std::result::Result<(Vec<f64>, Vec<f64>), String> {
    let mut scale = vec![1.0; ndim];
    let mut translation = vec![0.0; ndim];
    let Some(list) = list.as_array() else {
        return Ok((scale, translation));
    };
    for t in list {
        let kind = t["type"].as_str().unwrap_or_default();
        let values = |key: &str| -> std::result::Result<Vec<f64>, String> {
            let v: Option<Vec<f64>> = t[key]
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect());
            match v {
                Some(v) if v.len() == ndim && v.iter().all(|x| x.is_finite()) => Ok(v),
                _ if t.get("path").is_some() => Err(format!(
                    "{kind} stored in a file (`path`) is not supported; write it inline"
                )),
                _ => Err(format!(
                    "{kind} is {}; expected {ndim} finite numbers",
                    t[key]
                )),
            }
        };
        match kind {
            "scale" => {
                // A translation before the scale would be scaled too.
                let s = values("scale")?;
                for i in 0..ndim {
                    scale[i] *= s[i];
                    translation[i] *= s[i];
                }
            }
            "translation" => {
                let v = values("translation")?;
                for i in 0..ndim {
                    translation[i] += v[i];
                }
            }
            "identity" => {}
            other => return Err(format!("unsupported coordinate transformation {other:?}")),
        }
    }
    Ok((scale, translation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_layouts() {
        assert_eq!(ome_unit("nm"), "nanometer");
        assert_eq!(ome_unit("nanometer"), "nanometer");
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(fits_ome(&names(&["c^", "z", "y", "x"])));
        assert!(fits_ome(&names(&["y", "x"])));
        assert!(!fits_ome(&names(&["x"])));
        assert!(!fits_ome(&names(&["c^", "c^", "y", "x"])));
        assert!(!fits_ome(&names(&["a", "b", "c", "d"])));
    }

    #[test]
    fn multiscale_transforms_compose() {
        let entry = json!({
            "axes": [{"name": "c", "type": "channel"}, {"name": "y", "type": "space",
                      "unit": "nanometer"}, {"name": "x", "type": "space"}],
            "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 2]}],
        });
        let dataset = json!({"path": "s1", "coordinateTransformations": [
            {"type": "scale", "scale": [1, 4, 8]},
            {"type": "translation", "translation": [0, 2, 4]},
        ]});
        let g = geometry_of(&entry, &dataset, 3).unwrap();
        assert_eq!(g.axis_names, ["c^", "y", "x"]);
        assert_eq!(g.scale, [1.0, 8.0, 16.0]);
        assert_eq!(g.translation, [0.0, 4.0, 8.0]);
        assert_eq!(g.units, ["", "nanometer", ""]);
        let e = geometry_of(&entry, &dataset, 4).unwrap_err();
        assert!(e.contains("3 axes"), "{e}");
        let timed = json!({"axes": [{"name": "t", "type": "time"}, {"name": "y"}, {"name": "x"}]});
        let e = geometry_of(&timed, &dataset, 3).unwrap_err();
        assert!(e.contains("time axis"), "{e}");
        let bad = json!({"path": "s0", "coordinateTransformations": [
            {"type": "scale", "path": "scale.bin"}]});
        let e = geometry_of(&entry, &bad, 3).unwrap_err();
        assert!(e.contains("inline"), "{e}");
    }
}
