//! Region reads at arbitrary positions (inside, across and outside the arrays) match a naive
//! reference, for in-memory and on-disk datasets alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use dacapo_core::config::{DatasetConfig, Normalize};
use dacapo_data::{Dataset, OpenOptions, WriteOptions, write_array};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn padded_region_reads_match_reference() {
    let dir = tempfile::tempdir().unwrap();
    let zarr = dir.path().join("r.zarr");
    let (h, w) = (9usize, 11usize);
    let raw = ArrayD::from_shape_fn(IxDyn(&[h, w]), |i| (1 + i[0] * w + i[1]) as f32);
    // gt covers raw rows 2..7 and columns 3..11 (offset in voxels, voxel size 1).
    let gt = ArrayD::from_shape_fn(IxDyn(&[5, 8]), |i| (1 + (i[0] + 2) * w + i[1] + 3) as u64);
    let chunks = WriteOptions {
        chunk_shape: Some(vec![4, 3]),
        ..WriteOptions::default()
    };
    write_array(&zarr, "raw", &raw, &chunks).unwrap();
    write_array(
        &zarr,
        "gt",
        &gt,
        &WriteOptions {
            offset: Some(vec![2.0, 3.0]),
            ..chunks.clone()
        },
    )
    .unwrap();
    write_array(
        &zarr,
        "mask",
        &gt.mapv(|v| u8::from(v % 3 == 0)),
        &WriteOptions {
            offset: Some(vec![2.0, 3.0]),
            ..chunks
        },
    )
    .unwrap();
    let cfg = DatasetConfig {
        name: Some("r".into()),
        zarr,
        raw: "raw".into(),
        gt: "gt".into(),
        mask: Some("mask".into()),
        weight: 1.0,
        normalize: Normalize::None,
    };
    let cached = Dataset::open(&cfg, 2, &OpenOptions::default()).unwrap();
    let disk = Dataset::open(&cfg, 2, &OpenOptions { cache_bytes: 0 }).unwrap();

    let reference = |b: &[i64], s: &[usize]| {
        let raw = ArrayD::from_shape_fn(IxDyn(&[1, s[0], s[1]]), |i| {
            let (y, x) = (b[0] + i[1] as i64, b[1] + i[2] as i64);
            if (0..h as i64).contains(&y) && (0..w as i64).contains(&x) {
                (1 + y as usize * w + x as usize) as f32
            } else {
                0.0
            }
        });
        let gt = ArrayD::from_shape_fn(IxDyn(s), |i| {
            let (y, x) = (b[0] + i[0] as i64, b[1] + i[1] as i64);
            if (2..7).contains(&y) && (3..11).contains(&x) {
                (1 + y as usize * w + x as usize) as u64
            } else {
                0
            }
        });
        let valid = gt.mapv(|v| v != 0 && v % 3 == 0);
        (raw, gt, valid)
    };
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(
            &((-14i64..14, -14i64..14), (1usize..16, 1usize..16)),
            |((by, bx), (sh, sw))| {
                let (b, s) = ([by, bx], [sh, sw]);
                let (raw, gt, valid) = reference(&b, &s);
                for d in [&cached, &disk] {
                    prop_assert_eq!(&d.read_raw(&b, &s).unwrap(), &raw);
                    prop_assert_eq!(&d.read_gt(&b, &s).unwrap(), &gt);
                    prop_assert_eq!(&d.read_valid(&b, &s).unwrap(), &valid);
                }
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(cached.gt().unwrap(), gt);
    assert_eq!(cached.mask().unwrap().unwrap(), gt.mapv(|v| v % 3 == 0));
}
