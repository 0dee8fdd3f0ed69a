//! Zarr v2/v3 round trips, Python-style v2 metadata, and error messages.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::path::Path;

use dacapo_core::config::{DatasetConfig, Normalize};
use dacapo_data::{
    DataError, Dataset, Dtype, OpenOptions, WriteOptions, ZarrArray, ZarrVersion, write_array,
};
use ndarray::{ArrayD, IxDyn, s};
use zarrs::array::codec::{BloscCodec, BloscCompressionLevel, BloscCompressor, BloscShuffleMode};
use zarrs::array::{BytesToBytesCodecTraits, CodecOptions};

fn ramp<T: Copy>(shape: &[usize], f: impl Fn(usize) -> T) -> ArrayD<T> {
    let n: usize = shape.iter().product();
    ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(f).collect()).unwrap()
}

fn geometry() -> WriteOptions {
    WriteOptions {
        voxel_size: Some(vec![4.0, 2.0]),
        offset: Some(vec![8.0, 6.0]),
        axis_names: Some(vec!["y".into(), "x".into()]),
        chunk_shape: Some(vec![7, 5]),
        ..WriteOptions::default()
    }
}

#[test]
fn v3_and_v2_round_trips_for_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for version in [ZarrVersion::V3, ZarrVersion::V2] {
        let c = dir.path().join(format!("{version:?}.zarr"));
        let opts = WriteOptions {
            version,
            ..geometry()
        };
        let shape = [13, 11];
        write_array(&c, "u8", &ramp(&shape, |i| (i % 251) as u8), &opts).unwrap();
        write_array(&c, "u16", &ramp(&shape, |i| (i * 300) as u16), &opts).unwrap();
        write_array(&c, "u32", &ramp(&shape, |i| i as u32 * 70_000), &opts).unwrap();
        write_array(&c, "u64", &ramp(&shape, |i| i as u64 + (1 << 40)), &opts).unwrap();
        write_array(&c, "i8", &ramp(&shape, |i| (i % 100) as i8 - 50), &opts).unwrap();
        write_array(&c, "i16", &ramp(&shape, |i| i as i16 - 70), &opts).unwrap();
        write_array(&c, "i32", &ramp(&shape, |i| i as i32 * 3), &opts).unwrap();
        write_array(&c, "i64", &ramp(&shape, |i| i as i64), &opts).unwrap();
        write_array(&c, "group/f32", &ramp(&shape, |i| i as f32 * 0.5), &opts).unwrap();
        write_array(&c, "f64", &ramp(&shape, |i| i as f64 - 0.25), &opts).unwrap();

        let a = ZarrArray::open(&c, "u16", None).unwrap();
        let m = a.meta();
        assert_eq!(m.dtype, Dtype::U16);
        assert_eq!(m.shape, vec![13, 11]);
        assert_eq!(m.chunk_shape, vec![7, 5]);
        assert_eq!(
            m.zarr_format,
            if version == ZarrVersion::V2 { 2 } else { 3 }
        );
        assert_eq!(m.voxel_size, vec![4.0, 2.0]);
        assert_eq!(m.offset, vec![8.0, 6.0]);
        assert_eq!(m.axis_names, vec!["y", "x"]);
        assert!(!m.channel_axis);
        let all = a.read_f32(&[0, 0], &[13, 11]).unwrap();
        assert_eq!(all, ramp(&shape, |i| (i * 300) as u16 as f32));
        // A region across chunk borders.
        let region = a.read_f32(&[5, 3], &[4, 6]).unwrap();
        assert_eq!(region, all.slice(s![5..9, 3..9]).to_owned().into_dyn());

        let f = ZarrArray::open(&c, "group/f32", None).unwrap();
        assert_eq!(f.meta().dtype, Dtype::F32);
        assert_eq!(
            f.read_f32(&[0, 0], &[13, 11]).unwrap(),
            ramp(&shape, |i| i as f32 * 0.5)
        );
        let f = ZarrArray::open(&c, "f64", None).unwrap();
        assert_eq!(f.read_f32(&[1, 1], &[1, 1]).unwrap()[[0, 0]], 11.75);

        let labels = ZarrArray::open(&c, "u64", None).unwrap();
        assert_eq!(
            labels.read_labels(&[0, 0], &[13, 11]).unwrap(),
            ramp(&shape, |i| i as u64 + (1 << 40))
        );
        let labels = ZarrArray::open(&c, "i32", None).unwrap();
        assert_eq!(
            labels
                .read_labels(&[2, 0], &[1, 3])
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![66, 69, 72]
        );
        for name in ["u8", "u32", "i8", "i64"] {
            let a = ZarrArray::open(&c, name, None).unwrap();
            assert_eq!(a.read_f32(&[0, 0], &[1, 1]).unwrap().len(), 1, "{name}");
        }
        let i8s = ZarrArray::open(&c, "i8", None).unwrap();
        assert_eq!(
            i8s.read_f32(&[0, 0], &[1, 2])
                .unwrap()
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            vec![-50.0, -49.0]
        );
        // Intermediate groups exist so other readers see a complete hierarchy.
        let group_meta = if version == ZarrVersion::V2 {
            ".zgroup"
        } else {
            "zarr.json"
        };
        assert!(c.join(group_meta).is_file() && c.join("group").join(group_meta).is_file());
    }
}

fn write_file(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Writes a zarr v2 array the way zarr-python 2 does (blosc lz4, `.` chunk keys, `.zattrs`
/// written by funlib), with chunk bytes compressed by c-blosc.
#[test]
fn python_style_v2_array_with_blosc_opens() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("python.zarr");
    write_file(&c.join(".zgroup"), r#"{"zarr_format": 2}"#);
    write_file(
        &c.join("volumes/raw/.zarray"),
        r#"{
    "chunks": [2, 3, 4],
    "compressor": {"blocksize": 0, "clevel": 5, "cname": "lz4", "id": "blosc", "shuffle": 1},
    "dimension_separator": ".",
    "dtype": "<i2",
    "fill_value": 0,
    "filters": null,
    "order": "C",
    "shape": [3, 5, 8],
    "zarr_format": 2
}"#,
    );
    write_file(
        &c.join("volumes/raw/.zattrs"),
        r#"{"resolution": [40, 4, 4], "offset": [400, 40, 0], "axis_names": ["z", "y", "x"]}"#,
    );
    let shape = [3usize, 5, 8];
    let value = |z: usize, y: usize, x: usize| (z * 100 + y * 10 + x) as i16 - 5;
    let codec = BloscCodec::new(
        BloscCompressor::LZ4,
        BloscCompressionLevel::try_from(5u8).unwrap(),
        None,
        BloscShuffleMode::Shuffle,
        Some(2),
    )
    .unwrap();
    for cz in 0..2 {
        for cy in 0..2 {
            for cx in 0..2 {
                // Chunks are always full size; edge chunks hold fill values beyond the array.
                let mut bytes = Vec::new();
                for z in cz * 2..cz * 2 + 2 {
                    for y in cy * 3..cy * 3 + 3 {
                        for x in cx * 4..cx * 4 + 4 {
                            let v = if z < shape[0] && y < shape[1] && x < shape[2] {
                                value(z, y, x)
                            } else {
                                0
                            };
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
                let encoded = codec
                    .encode(Cow::Owned(bytes), &CodecOptions::default())
                    .unwrap();
                std::fs::write(c.join(format!("volumes/raw/{cz}.{cy}.{cx}")), &*encoded).unwrap();
            }
        }
    }
    let a = ZarrArray::open(&c, "volumes/raw", Some(3)).unwrap();
    assert_eq!(a.meta().dtype, Dtype::I16);
    assert_eq!(a.meta().voxel_size, vec![40.0, 4.0, 4.0]);
    assert_eq!(a.meta().offset, vec![400.0, 40.0, 0.0]);
    let all = a.read_f32(&[0, 0, 0], &[3, 5, 8]).unwrap();
    for z in 0..3 {
        for y in 0..5 {
            for x in 0..8 {
                assert_eq!(all[[z, y, x]], f32::from(value(z, y, x)), "{z} {y} {x}");
            }
        }
    }
}

/// A v2 big-endian float array in Fortran order without compressor, as numpy/zarr-python
/// would write with `order="F"`.
#[test]
fn python_style_v2_fortran_order_big_endian_opens() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("f.zarr");
    write_file(&c.join(".zgroup"), r#"{"zarr_format": 2}"#);
    write_file(
        &c.join("raw/.zarray"),
        r#"{"chunks": [2, 3], "compressor": null, "dtype": ">f4", "fill_value": "NaN",
            "filters": null, "order": "F", "shape": [2, 3], "zarr_format": 2}"#,
    );
    // Element (y, x) = 10 y + x, stored column-major.
    let mut bytes = Vec::new();
    for x in 0..3 {
        for y in 0..2 {
            bytes.extend_from_slice(&((10 * y + x) as f32).to_be_bytes());
        }
    }
    std::fs::write(c.join("raw/0.0"), bytes).unwrap();
    let a = ZarrArray::open(&c, "raw", None).unwrap();
    let got = a.read_f32(&[0, 0], &[2, 3]).unwrap();
    assert_eq!(
        got.iter().copied().collect::<Vec<_>>(),
        vec![0.0, 1.0, 2.0, 10.0, 11.0, 12.0]
    );
}

#[test]
fn channel_axis_from_v3_dimension_names() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c.zarr");
    let data = ramp(&[2, 4, 5], |i| i as f32);
    let opts = WriteOptions {
        axis_names: Some(vec!["c^".into(), "y".into(), "x".into()]),
        voxel_size: Some(vec![3.0, 3.0]),
        ..WriteOptions::default()
    };
    write_array(&c, "raw", &data, &opts).unwrap();
    // Remove the attribute: the v3 dimension names alone must identify the channel axis.
    let meta_path = c.join("raw/zarr.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("axis_names");
    assert_eq!(meta["dimension_names"], serde_json::json!(["c^", "y", "x"]));
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let a = ZarrArray::open(&c, "raw", None).unwrap();
    assert!(a.meta().channel_axis);
    assert_eq!(a.meta().channels(), 2);
    assert_eq!(a.meta().spatial_shape(), &[4, 5]);
    assert_eq!(a.meta().voxel_size, vec![3.0, 3.0]);
    let region = a.read_f32(&[1, 2], &[2, 2]).unwrap();
    assert_eq!(region.shape(), &[2, 2, 2]);
    assert_eq!(region[[1, 0, 0]], data[[1, 1, 2]]);
}

fn dataset_cfg(zarr: &Path, raw: &str, gt: &str) -> DatasetConfig {
    DatasetConfig {
        name: Some("d".into()),
        zarr: zarr.to_owned(),
        raw: raw.into(),
        gt: gt.into(),
        mask: None,
        weight: 1.0,
        normalize: Normalize::Percentile,
    }
}

#[test]
fn errors_name_container_array_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("e.zarr");
    let opts = WriteOptions::default();
    write_array(&c, "raw", &ramp(&[10, 10], |i| i as u8), &opts).unwrap();
    write_array(&c, "float_labels", &ramp(&[10, 10], |i| i as f32), &opts).unwrap();
    write_array(&c, "neg_labels", &ramp(&[10, 10], |i| i as i32 - 3), &opts).unwrap();
    write_array(
        &c,
        "labels3d",
        &ramp(&[2, 10, 10], |i| i as u32),
        &WriteOptions {
            axis_names: Some(vec!["z".into(), "y".into(), "x".into()]),
            ..WriteOptions::default()
        },
    )
    .unwrap();

    let missing = dir.path().join("nope.zarr");
    let e = ZarrArray::open(&missing, "raw", None).unwrap_err();
    assert!(matches!(e, DataError::MissingContainer { .. }));
    assert!(
        e.to_string().contains("nope.zarr") && e.to_string().contains("does not exist"),
        "{e}"
    );

    let e = ZarrArray::open(&c, "rwa", None).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("\"rwa\"") && msg.contains("e.zarr"), "{msg}");
    assert!(
        msg.contains("arrays in this container: float_labels, labels3d, neg_labels, raw"),
        "{msg}"
    );

    let e = Dataset::open(
        &dataset_cfg(&c, "raw", "float_labels"),
        2,
        &OpenOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Dtype { .. }), "{msg}");
    assert!(
        msg.contains("float_labels") && msg.contains("float32") && msg.contains("integer"),
        "{msg}"
    );

    let e = Dataset::open(
        &dataset_cfg(&c, "raw", "neg_labels"),
        2,
        &OpenOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("neg_labels") && msg.contains("negative label -3"),
        "{msg}"
    );

    let e = Dataset::open(
        &dataset_cfg(&c, "raw", "labels3d"),
        2,
        &OpenOptions::default(),
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("labels3d") && msg.contains("3 spatial axes") && msg.contains("2D network"),
        "{msg}"
    );

    let e = Dataset::open(&dataset_cfg(&c, "raw", "raw"), 3, &OpenOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("3D network needs 3 spatial axes"),
        "{e}"
    );

    // An unsupported dtype (float16) is named with what to do.
    write_file(
        &c.join("half/zarr.json"),
        r#"{"zarr_format": 3, "node_type": "array", "shape": [4, 4], "data_type": "float16",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 4]}},
            "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
            "fill_value": 0.0, "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}"#,
    );
    let e = ZarrArray::open(&c, "half", None).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("float16") && msg.contains("convert"), "{msg}");

    // A directory that is not a zarr container.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let e = ZarrArray::open(&plain, "raw", None).unwrap_err();
    assert!(e.to_string().contains("not a zarr container"), "{e}");

    // Writing over an existing array needs `overwrite`.
    let e = write_array(&c, "raw", &ramp(&[2, 2], |i| i as u8), &opts).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    write_array(
        &c,
        "raw",
        &ramp(&[2, 2], |i| i as u8),
        &WriteOptions {
            overwrite: true,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(
        ZarrArray::open(&c, "raw", None).unwrap().meta().shape,
        vec![2, 2]
    );
    let e = write_array(&c, "../escape", &ramp(&[2, 2], |i| i as u8), &opts).unwrap_err();
    assert!(e.to_string().contains("not a valid array path"), "{e}");
}

#[test]
fn mismatched_geometry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("g.zarr");
    let raw = WriteOptions {
        voxel_size: Some(vec![4.0, 4.0]),
        ..WriteOptions::default()
    };
    write_array(&c, "raw", &ramp(&[10, 10], |i| i as u8), &raw).unwrap();
    let other_res = WriteOptions {
        voxel_size: Some(vec![8.0, 8.0]),
        ..WriteOptions::default()
    };
    write_array(&c, "gt_res", &ramp(&[10, 10], |i| i as u8), &other_res).unwrap();
    let half_voxel = WriteOptions {
        voxel_size: Some(vec![4.0, 4.0]),
        offset: Some(vec![2.0, 0.0]),
        ..WriteOptions::default()
    };
    write_array(&c, "gt_shift", &ramp(&[10, 10], |i| i as u8), &half_voxel).unwrap();
    let far = WriteOptions {
        voxel_size: Some(vec![4.0, 4.0]),
        offset: Some(vec![400.0, 0.0]),
        ..WriteOptions::default()
    };
    write_array(&c, "gt_far", &ramp(&[10, 10], |i| i as u8), &far).unwrap();
    let o = OpenOptions::default();
    let e = Dataset::open(&dataset_cfg(&c, "raw", "gt_res"), 2, &o).unwrap_err();
    assert!(
        e.to_string().contains("voxel size") && e.to_string().contains("resampling"),
        "{e}"
    );
    let e = Dataset::open(&dataset_cfg(&c, "raw", "gt_shift"), 2, &o).unwrap_err();
    assert!(e.to_string().contains("whole number of voxels"), "{e}");
    let e = Dataset::open(&dataset_cfg(&c, "raw", "gt_far"), 2, &o).unwrap_err();
    assert!(e.to_string().contains("does not overlap"), "{e}");
}

#[test]
fn normalisation_values() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("n.zarr");
    // 0..=1000 in a 7x143 array: numpy percentiles 1 and 99.8 are 10 and 998.
    let data = ramp(&[7, 143], |i| i.min(1000) as u16);
    write_array(&c, "raw", &data, &WriteOptions::default()).unwrap();
    write_array(
        &c,
        "gt",
        &ramp(&[7, 143], |_| 1u8),
        &WriteOptions::default(),
    )
    .unwrap();
    let mut cfg = dataset_cfg(&c, "raw", "gt");
    let d = Dataset::open(&cfg, 2, &OpenOptions::default()).unwrap();
    // 7*143 = 1001 values 0..=1000.
    assert_eq!((d.normalizer().low, d.normalizer().high), (10.0, 998.0));
    let raw = d.raw().unwrap();
    assert_eq!(raw.shape(), &[1, 7, 143]);
    assert!((raw[[0, 0, 10]] - 0.0).abs() < 1e-6);
    assert!(
        (raw[[0, 6, 140]] - 1.0).abs() < 1e-6,
        "{}",
        raw[[0, 6, 140]]
    ); // value 998
    // The uncached path gives identical values.
    let uncached = Dataset::open(&cfg, 2, &OpenOptions { cache_bytes: 0 }).unwrap();
    assert_eq!(uncached.raw().unwrap(), raw);

    cfg.normalize = Normalize::Range {
        min: 0.0,
        max: 500.0,
    };
    let d = Dataset::open(&cfg, 2, &OpenOptions::default()).unwrap();
    assert_eq!(d.raw().unwrap()[[0, 1, 0]], 143.0 / 500.0);
    cfg.normalize = Normalize::None;
    let d = Dataset::open(&cfg, 2, &OpenOptions::default()).unwrap();
    assert_eq!(d.raw().unwrap()[[0, 1, 0]], 143.0);
    cfg.normalize = Normalize::Range { min: 5.0, max: 5.0 };
    let e = Dataset::open(&cfg, 2, &OpenOptions::default()).unwrap_err();
    assert!(e.to_string().contains("min < max"), "{e}");
}

#[test]
fn percentiles_of_large_arrays_use_a_bounded_deterministic_sample() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("big.zarr");
    // 2^22 + extra elements: above the full-read threshold. Values are uniform 0..=999, so the
    // sampled percentiles must land near 10 and 998.
    let shape = [2100, 2100];
    let data = ramp(&shape, |i| ((i.wrapping_mul(2_654_435_761)) % 1000) as u16);
    write_array(
        &c,
        "raw",
        &data,
        &WriteOptions {
            chunk_shape: Some(vec![256, 256]),
            ..WriteOptions::default()
        },
    )
    .unwrap();
    let a = ZarrArray::open(&c, "raw", None).unwrap();
    let start = std::time::Instant::now();
    let n1 = dacapo_data::Normalizer::compute(&a, Normalize::Percentile).unwrap();
    let took = start.elapsed();
    let n2 = dacapo_data::Normalizer::compute(&a, Normalize::Percentile).unwrap();
    assert_eq!(n1, n2);
    assert!(
        (n1.low - 10.0).abs() <= 2.0 && (n1.high - 998.0).abs() <= 2.0,
        "{n1:?}"
    );
    assert!(took.as_secs_f64() < 5.0, "took {took:?}");
}
