//! Synthetic data: determinism, plausibility, and the atomic container creation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use dacapo_core::config::{DataSplitConfig, DatasetConfig, Normalize, SyntheticConfig};
use dacapo_data::synthetic::{LABELS, LABELS_VAL, RAW, RAW_VAL};
use dacapo_data::{DataSplit, OpenOptions, SyntheticVolume, ZarrArray, ensure_synthetic, generate};
use ndarray::{ArrayD, IxDyn};

fn face_neighbours(shape: &[usize], p: &[usize]) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    for k in 0..shape.len() {
        if p[k] + 1 < shape[k] {
            let mut q = p.to_vec();
            q[k] += 1;
            out.push(q);
        }
    }
    out
}

/// Checks counts, classes, separation of touching cells and raw contrast.
fn check_plausible(v: &SyntheticVolume, objects: usize) {
    let shape = v.labels.shape().to_vec();
    let ids: BTreeSet<u64> = v.labels.iter().copied().filter(|&l| l > 0).collect();
    assert!(
        ids.len() * 10 >= objects * 6 && ids.len() <= objects,
        "{} objects of {objects}",
        ids.len()
    );
    let n = v.labels.len();
    let foreground = v.labels.iter().filter(|&&l| l > 0).count();
    assert!(
        (n / 5..=n * 4 / 5).contains(&foreground),
        "foreground {foreground} of {n}"
    );
    // Different cells never touch face to face: a membrane (label 0) separates them.
    for (p, &l) in v.labels.indexed_iter() {
        if l == 0 {
            continue;
        }
        for q in face_neighbours(&shape, p.slice()) {
            let m = v.labels[IxDyn(&q)];
            assert!(
                m == 0 || m == l,
                "cells {l} and {m} touch at {:?}",
                p.slice()
            );
        }
    }
    let mean = |fg: bool| {
        let vals: Vec<f64> = v
            .raw
            .iter()
            .zip(v.labels.iter())
            .filter(|(_, l)| (**l > 0) == fg)
            .map(|(r, _)| f64::from(*r))
            .collect();
        vals.iter().sum::<f64>() / vals.len() as f64
    };
    let (fg, bg) = (mean(true), mean(false));
    assert!(fg > bg + 50.0, "cells {fg} vs background {bg}");
}

use ndarray::Dimension;

#[test]
fn generation_is_deterministic_and_plausible_2d() {
    let a = generate(&[128, 160], 5, 30, 0.1);
    assert_eq!(a.raw.shape(), &[128, 160]);
    assert_eq!(a, generate(&[128, 160], 5, 30, 0.1));
    let b = generate(&[128, 160], 6, 30, 0.1);
    assert_ne!(a.labels, b.labels);
    check_plausible(&a, 30);
    // Noise is what the config says: a noiseless image differs by about that much.
    let clean = generate(&[128, 160], 5, 30, 0.0);
    assert_eq!(clean.labels, a.labels);
    let diffs: Vec<f64> = a
        .raw
        .iter()
        .zip(clean.raw.iter())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)) / 255.0)
        .collect();
    let std = (diffs.iter().map(|d| d * d).sum::<f64>() / diffs.len() as f64).sqrt();
    assert!((0.07..0.11).contains(&std), "noise std {std}");
}

#[test]
fn generation_is_plausible_3d() {
    let v = generate(&[32, 40, 36], 1, 12, 0.05);
    assert_eq!(v.labels.shape(), &[32, 40, 36]);
    check_plausible(&v, 12);
}

fn cfg(dir: &std::path::Path) -> SyntheticConfig {
    SyntheticConfig {
        zarr: dir.join("data").join("cells.zarr"),
        shape: vec![96, 80],
        seed: 11,
        objects: 15,
        noise: 0.1,
    }
}

#[test]
fn ensure_synthetic_creates_once_and_checks_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path());
    // A leftover of a killed generation does not count as the container.
    std::fs::create_dir_all(dir.path().join("data/.cells.zarr.tmp-1-2/raw")).unwrap();
    assert!(ensure_synthetic(&c).unwrap());
    assert!(!ensure_synthetic(&c).unwrap());
    let names: Vec<String> = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "no new temporary directory is left: {names:?}"
    );

    let raw = ZarrArray::open(&c.zarr, RAW, Some(2)).unwrap();
    assert_eq!(raw.meta().shape, vec![96, 80]);
    assert_eq!(raw.meta().voxel_size, vec![1.0, 1.0]);
    assert_eq!(raw.meta().axis_names, vec!["y", "x"]);
    let labels = ZarrArray::open(&c.zarr, LABELS, Some(2))
        .unwrap()
        .read_labels(&[0, 0], &[96, 80])
        .unwrap();
    assert_eq!(labels, generate(&[96, 80], 11, 15, 0.1).labels);
    let val = ZarrArray::open(&c.zarr, LABELS_VAL, Some(2))
        .unwrap()
        .read_labels(&[0, 0], &[96, 80])
        .unwrap();
    assert_ne!(val, labels, "validation data comes from another seed");

    // The datasplit of the quickstart opens on it.
    let ds = |raw: &str, gt: &str| DatasetConfig {
        name: None,
        zarr: c.zarr.clone(),
        raw: raw.into(),
        gt: gt.into(),
        mask: None,
        weight: 1.0,
        normalize: Normalize::Percentile,
    };
    let split = DataSplit::open(
        &DataSplitConfig {
            train: vec![ds(RAW, LABELS)],
            validate: vec![ds(RAW_VAL, LABELS_VAL)],
            synthetic: Some(c.clone()),
        },
        2,
        &OpenOptions::default(),
    )
    .unwrap();
    let raw: ArrayD<f32> = split.train[0].raw().unwrap();
    assert_eq!(raw.shape(), &[1, 96, 80]);
    let (lo, hi) = raw
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(lo <= 0.0 && hi >= 1.0 && lo > -0.5 && hi < 1.5, "{lo} {hi}");
    assert_eq!(split.validate[0].gt().unwrap(), val);

    // Other parameters for an existing container: an error saying what to do.
    let changed = SyntheticConfig {
        noise: 0.2,
        ..c.clone()
    };
    let e = ensure_synthetic(&changed).unwrap_err().to_string();
    assert!(
        e.contains("cells.zarr") && e.contains("delete the container"),
        "{e}"
    );
    // A container the generator did not make is never touched.
    let foreign = SyntheticConfig {
        zarr: dir.path().join("data/.cells.zarr.tmp-1-2"),
        ..c.clone()
    };
    let e = ensure_synthetic(&foreign).unwrap_err().to_string();
    assert!(e.contains("not made by the synthetic generator"), "{e}");
    let bad = SyntheticConfig {
        shape: vec![4, 100],
        ..c
    };
    assert!(
        ensure_synthetic(&bad)
            .unwrap_err()
            .to_string()
            .contains("at least 8")
    );
}

#[test]
fn synthetic_3d_container() {
    let dir = tempfile::tempdir().unwrap();
    let c = SyntheticConfig {
        shape: vec![24, 32, 32],
        objects: 8,
        ..cfg(dir.path())
    };
    assert!(ensure_synthetic(&c).unwrap());
    let a = ZarrArray::open(&c.zarr, RAW_VAL, Some(3)).unwrap();
    assert_eq!(a.meta().axis_names, vec!["z", "y", "x"]);
    assert_eq!(a.meta().spatial_shape(), &[24, 32, 32]);
}
