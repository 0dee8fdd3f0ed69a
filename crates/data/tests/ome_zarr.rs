//! OME-Zarr metadata: what we write (0.5 in zarr v3 groups, 0.4 in v2 groups), what we read
//! from inputs that only have OME-Zarr metadata, and a real OME-Zarr reader (the `ome-zarr`
//! Python package, from the venv `cargo xtask setup --ome-zarr` makes) opening our arrays.
//! About a second without the reader, a few seconds with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use dacapo_data::{WriteOptions, ZarrArray, ZarrVersion, write_array};
use ndarray::{ArrayD, IxDyn};
use serde_json::{Value, json};

fn ramp(shape: &[usize]) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| i as f32 * 0.25).collect()).unwrap()
}

fn prediction_options(version: ZarrVersion) -> WriteOptions {
    WriteOptions {
        version,
        voxel_size: Some(vec![8.0, 4.0, 4.0]),
        offset: Some(vec![80.0, 40.0, 20.0]),
        axis_names: Some(vec!["c^".into(), "z".into(), "y".into(), "x".into()]),
        units: Some(vec!["nm".into(); 3]),
        ..WriteOptions::default()
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn written_arrays_carry_multiscales_in_their_parent_group() {
    let dir = tempfile::tempdir().unwrap();
    for (version, file) in [(ZarrVersion::V3, "zarr.json"), (ZarrVersion::V2, ".zattrs")] {
        let c = dir.path().join(format!("{version:?}.zarr"));
        let opts = prediction_options(version);
        write_array(&c, "prediction", &ramp(&[2, 3, 4, 5]), &opts).unwrap();
        write_array(&c, "nested/s0", &ramp(&[2, 3, 4, 5]), &opts).unwrap();
        let root = read_json(&c.join(file));
        let (multiscales, version_of) = match version {
            ZarrVersion::V3 => (
                root["attributes"]["ome"]["multiscales"].clone(),
                root["attributes"]["ome"]["version"].clone(),
            ),
            ZarrVersion::V2 => (
                root["multiscales"].clone(),
                root["multiscales"][0]["version"].clone(),
            ),
        };
        assert_eq!(
            version_of,
            json!(if version == ZarrVersion::V3 {
                "0.5"
            } else {
                "0.4"
            })
        );
        let entry = &multiscales[0];
        assert_eq!(entry["name"], "prediction");
        assert_eq!(
            entry["axes"],
            json!([
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "nanometer"},
                {"name": "y", "type": "space", "unit": "nanometer"},
                {"name": "x", "type": "space", "unit": "nanometer"},
            ])
        );
        assert_eq!(
            entry["datasets"],
            json!([{"path": "prediction", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 8.0, 4.0, 4.0]},
                {"type": "translation", "translation": [0.0, 80.0, 40.0, 20.0]},
            ]}])
        );
        // The nested array is an image of its own group.
        let nested = read_json(&c.join("nested").join(file));
        let nested = match version {
            ZarrVersion::V3 => nested["attributes"]["ome"]["multiscales"].clone(),
            ZarrVersion::V2 => nested["multiscales"].clone(),
        };
        assert_eq!(nested[0]["datasets"][0]["path"], "s0");

        // Writing the same array again updates its entry; another array gets its own.
        let moved = WriteOptions {
            offset: Some(vec![0.0, 0.0, 4.0]),
            overwrite: true,
            ..opts.clone()
        };
        write_array(&c, "prediction", &ramp(&[2, 3, 4, 5]), &moved).unwrap();
        write_array(&c, "other", &ramp(&[2, 3, 4, 5]), &opts).unwrap();
        let root = read_json(&c.join(file));
        let list = match version {
            ZarrVersion::V3 => root["attributes"]["ome"]["multiscales"].clone(),
            ZarrVersion::V2 => root["multiscales"].clone(),
        };
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        assert_eq!(
            list[0]["datasets"][0]["coordinateTransformations"][1]["translation"],
            json!([0.0, 0.0, 0.0, 4.0])
        );
        assert_eq!(list[1]["name"], "other");

        // Our own reader gets the same geometry back, units included.
        let a = ZarrArray::open(&c, "prediction", Some(3)).unwrap();
        assert_eq!(a.meta().units, ["nm", "nm", "nm"]);
        assert_eq!(a.meta().offset, [0.0, 0.0, 4.0]);
    }
}

/// Writes group metadata with `attributes` (v3) or `.zgroup` + `.zattrs` (v2).
fn write_group(dir: &Path, version: ZarrVersion, attributes: Value) {
    std::fs::create_dir_all(dir).unwrap();
    match version {
        ZarrVersion::V3 => std::fs::write(
            dir.join("zarr.json"),
            json!({"zarr_format": 3, "node_type": "group", "attributes": attributes}).to_string(),
        )
        .unwrap(),
        ZarrVersion::V2 => {
            std::fs::write(dir.join(".zgroup"), r#"{"zarr_format": 2}"#).unwrap();
            std::fs::write(dir.join(".zattrs"), attributes.to_string()).unwrap();
        }
    }
}

#[test]
fn inputs_with_only_ome_metadata_are_read_with_their_scale_and_translation() {
    let dir = tempfile::tempdir().unwrap();
    let multiscale = |version: &str| {
        json!({
            "version": version,
            "name": "raw",
            "axes": [{"name": "z", "type": "space", "unit": "nanometer"},
                     {"name": "y", "type": "space", "unit": "nanometer"},
                     {"name": "x", "type": "space", "unit": "nanometer"}],
            "datasets": [
                {"path": "s0", "coordinateTransformations": [
                    {"type": "scale", "scale": [40.0, 4.0, 4.0]},
                    {"type": "translation", "translation": [400.0, 40.0, 20.0]}]},
                {"path": "s1", "coordinateTransformations": [
                    {"type": "scale", "scale": [40.0, 8.0, 8.0]},
                    {"type": "translation", "translation": [400.0, 42.0, 22.0]}]},
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 2.0]}],
        })
    };
    for version in [ZarrVersion::V3, ZarrVersion::V2] {
        let c = dir.path().join(format!("{version:?}.zarr"));
        write_group(&c, version, json!({}));
        let attributes = match version {
            ZarrVersion::V3 => {
                json!({"ome": {"version": "0.5", "multiscales": [multiscale("0.5")]}})
            }
            ZarrVersion::V2 => json!({"multiscales": [multiscale("0.4")]}),
        };
        write_group(&c.join("raw"), version, attributes);
        // The levels themselves carry no geometry attributes (as OME-Zarr writers do).
        let bare = WriteOptions {
            version,
            ..WriteOptions::default()
        };
        write_array(&c, "raw/s0", &ramp(&[2, 8, 8]), &bare).unwrap();
        write_array(&c, "raw/s1", &ramp(&[2, 4, 4]), &bare).unwrap();

        let s0 = ZarrArray::open(&c, "raw/s0", Some(3)).unwrap();
        let m = s0.meta();
        assert_eq!(m.voxel_size, [40.0, 4.0, 8.0]);
        assert_eq!(m.offset, [400.0, 40.0, 40.0]);
        assert_eq!(m.axis_names, ["z", "y", "x"]);
        assert_eq!(m.units, ["nanometer"; 3]);
        assert!(!m.channel_axis);
        let s1 = ZarrArray::open(&c, "raw/s1", None).unwrap();
        assert_eq!(s1.meta().voxel_size, [40.0, 8.0, 16.0]);
        assert_eq!(s1.meta().offset, [400.0, 42.0, 44.0]);
    }

    // Metadata that cannot be used is an error naming the group and what is wrong.
    let c = dir.path().join("bad.zarr");
    write_group(&c, ZarrVersion::V3, json!({}));
    let mut bad = multiscale("0.5");
    bad["datasets"][0]["coordinateTransformations"][0]["scale"] = json!([1.0, 2.0]);
    write_group(
        &c.join("raw"),
        ZarrVersion::V3,
        json!({"ome": {"version": "0.5", "multiscales": [bad]}}),
    );
    write_array(&c, "raw/s0", &ramp(&[2, 8, 8]), &WriteOptions::default()).unwrap();
    let e = ZarrArray::open(&c, "raw/s0", Some(3))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("OME-Zarr multiscales") && e.contains("3 finite numbers"),
        "{e}"
    );
}

/// The Python with the `ome-zarr` package: `$DACAPO_OME_ZARR_PYTHON`, else the venv that
/// `cargo xtask setup --ome-zarr` makes; `Err` says why there is none.
fn ome_zarr_python() -> Result<PathBuf, String> {
    let python = match std::env::var_os("DACAPO_OME_ZARR_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
            PathBuf::from(home).join(".cache/dacapo-rs/venv-ome-zarr/bin/python")
        }
    };
    let ok = Command::new(&python)
        .args(["-c", "import ome_zarr.reader"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import ome_zarr (run `cargo xtask setup --ome-zarr`)",
            python.display()
        ))
    }
}

/// Reads the first image of `container` with ome-zarr's reader, as napari's plugin does.
const READER: &str = r#"
import json, sys
import numpy as np
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
location = parse_url(sys.argv[1])
if location is None:
    sys.exit("ome-zarr does not recognise " + sys.argv[1])
node = list(Reader(location)())[0]
data = np.asarray(node.data[0])
print(json.dumps({
    "axes": node.metadata["axes"],
    "transforms": node.metadata["coordinateTransformations"][0],
    "shape": list(data.shape),
    "sum": float(data.astype("float64").sum()),
    "last": float(data.reshape(-1)[-1]),
}))
"#;

#[test]
fn a_real_ome_zarr_reader_opens_our_arrays() {
    let python = match ome_zarr_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED a_real_ome_zarr_reader_opens_our_arrays: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    for version in [ZarrVersion::V3, ZarrVersion::V2] {
        let c = dir.path().join(format!("{version:?}.zarr"));
        let data = ramp(&[2, 3, 4, 5]);
        write_array(&c, "prediction", &data, &prediction_options(version)).unwrap();
        let out = Command::new(&python)
            .args(["-c", READER])
            .arg(&c)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{version:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let read: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(read["shape"], json!([2, 3, 4, 5]), "{version:?}");
        assert_eq!(read["sum"], json!(data.sum() as f64));
        assert_eq!(read["last"], json!(data[[1, 2, 3, 4]] as f64));
        assert_eq!(read["axes"][1]["unit"], "nanometer");
        assert_eq!(read["axes"][0]["type"], "channel");
        assert_eq!(
            read["transforms"],
            json!([
                {"type": "scale", "scale": [1.0, 8.0, 4.0, 4.0]},
                {"type": "translation", "translation": [0.0, 80.0, 40.0, 20.0]},
            ]),
            "{version:?}"
        );
    }
}
