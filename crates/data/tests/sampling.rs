//! Batch sampling: determinism, shapes, alignment of raw and labels under every augmentation,
//! geometry conventions, padding, weights and masks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use dacapo_core::config::{Augment, AugmentParams, DatasetConfig, Normalize};
use dacapo_data::{
    Batch, BatchSampler, Dataset, OpenOptions, SamplerSpec, WriteOptions, write_array,
};
use ndarray::{ArrayD, Axis, Dimension, IxDyn, Slice};

fn array<T: Copy>(shape: &[usize], f: impl Fn(&[usize]) -> T) -> ArrayD<T> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| f(i.slice()))
}

fn flat(shape: &[usize], p: &[usize]) -> usize {
    p.iter().zip(shape).fold(0, |acc, (x, s)| acc * s + x)
}

struct Setup {
    raw: ArrayD<f32>,
    gt: ArrayD<u64>,
    raw_opts: WriteOptions,
    gt_opts: WriteOptions,
    mask: Option<ArrayD<u8>>,
}

impl Setup {
    /// raw == labels as float, labels unique per voxel (1 + flat index).
    fn unique(shape: &[usize]) -> Self {
        Self {
            raw: array(shape, |p| (1 + flat(shape, p)) as f32),
            gt: array(shape, |p| (1 + flat(shape, p)) as u64),
            raw_opts: WriteOptions::default(),
            gt_opts: WriteOptions::default(),
            mask: None,
        }
    }

    fn write(&self, dir: &Path, name: &str) -> DatasetConfig {
        let zarr = dir.join(format!("{name}.zarr"));
        write_array(&zarr, "raw", &self.raw, &self.raw_opts).unwrap();
        write_array(&zarr, "gt", &self.gt, &self.gt_opts).unwrap();
        if let Some(mask) = &self.mask {
            write_array(&zarr, "mask", mask, &self.gt_opts).unwrap();
        }
        DatasetConfig {
            name: Some(name.into()),
            zarr,
            raw: "raw".into(),
            gt: "gt".into(),
            mask: self.mask.as_ref().map(|_| "mask".into()),
            weight: 1.0,
            normalize: Normalize::None,
        }
    }
}

fn spec(input: &[usize], output: &[usize], augment: Vec<Augment>) -> SamplerSpec {
    SamplerSpec {
        input_shape: input.to_vec(),
        output_shape: output.to_vec(),
        batch_size: 3,
        seed: 7,
        augment,
        augment_params: AugmentParams::default(),
    }
}

fn open(cfg: &DatasetConfig, dims: usize) -> Dataset {
    Dataset::open(cfg, dims, &OpenOptions::default()).unwrap()
}

/// The centre (output) region of each sample's raw, channel 0.
fn raw_centre(batch: &Batch, b: usize, output: &[usize]) -> ArrayD<f32> {
    let raw = batch
        .raw
        .index_axis(Axis(0), b)
        .index_axis(Axis(0), 0)
        .to_owned();
    let shape = raw.shape().to_vec();
    raw.slice_each_axis(|ax| {
        let k = ax.axis.index();
        let c = (shape[k] - output[k]) / 2;
        Slice::from(c..c + output[k])
    })
    .to_owned()
}

const ALL: [Augment; 6] = [
    Augment::Mirror,
    Augment::Transpose,
    Augment::Elastic,
    Augment::Intensity,
    Augment::Gamma,
    Augment::Noise,
];

#[test]
fn batches_are_pure_functions_of_seed_and_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dacapo_data::generate(&[64, 64], 3, 12, 0.1);
    let mut setup = Setup::unique(&[64, 64]);
    setup.raw = vol.raw.mapv(f32::from);
    setup.gt = vol.labels;
    let mut cfg = setup.write(dir.path(), "a");
    cfg.normalize = Normalize::Percentile;
    let s = spec(&[28, 28], &[16, 16], ALL.to_vec());
    let cached = BatchSampler::new(vec![open(&cfg, 2)], s.clone()).unwrap();
    let uncached = BatchSampler::new(
        vec![Dataset::open(&cfg, 2, &OpenOptions { cache_bytes: 0 }).unwrap()],
        s.clone(),
    )
    .unwrap();
    let b3 = cached.batch(3).unwrap();
    for i in 0..6 {
        let a = cached.batch(i).unwrap();
        assert_eq!(a, uncached.batch(i).unwrap(), "iteration {i}");
        assert_eq!(a, cached.batch(i).unwrap());
    }
    assert_eq!(
        b3,
        cached.batch(3).unwrap(),
        "order of calls must not matter"
    );
    assert_ne!(cached.batch(0).unwrap().raw, cached.batch(1).unwrap().raw);
    // Samples within a batch differ too.
    let b = cached.batch(0).unwrap();
    assert_ne!(b.raw.index_axis(Axis(0), 0), b.raw.index_axis(Axis(0), 1));
    let other_seed = BatchSampler::new(vec![open(&cfg, 2)], SamplerSpec { seed: 8, ..s }).unwrap();
    assert_ne!(
        other_seed.batch(0).unwrap().raw,
        cached.batch(0).unwrap().raw
    );
}

#[test]
fn batch_shapes_2d_3d_and_channels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Setup::unique(&[30, 31]).write(dir.path(), "two");
    let sampler =
        BatchSampler::new(vec![open(&cfg, 2)], spec(&[20, 24], &[12, 16], vec![])).unwrap();
    let b = sampler.batch(0).unwrap();
    assert_eq!(b.raw.shape(), &[3, 1, 20, 24]);
    assert_eq!(b.labels.shape(), &[3, 12, 16]);
    assert!(b.mask.is_none());
    assert_eq!(b.samples.len(), 3);

    let mut setup = Setup::unique(&[12, 14, 16]);
    setup.raw = array(&[2, 12, 14, 16], |p| p[0] as f32 * 1000.0 + p[3] as f32);
    setup.raw_opts.axis_names = Some(vec!["c^".into(), "z".into(), "y".into(), "x".into()]);
    let cfg = setup.write(dir.path(), "three");
    let d = open(&cfg, 3);
    assert_eq!(d.channels(), 2);
    let sampler = BatchSampler::new(
        vec![d],
        spec(&[8, 10, 10], &[4, 6, 6], vec![Augment::Mirror]),
    )
    .unwrap();
    let b = sampler.batch(5).unwrap();
    assert_eq!(b.raw.shape(), &[3, 2, 8, 10, 10]);
    assert_eq!(b.labels.shape(), &[3, 4, 6, 6]);
    // The channel axis is never mixed with spatial axes.
    assert!(b.raw.index_axis(Axis(1), 1).iter().all(|&v| v >= 1000.0));
    assert!(b.raw.index_axis(Axis(1), 0).iter().all(|&v| v < 1000.0));
}

/// Flips then permutes the spatial axes of an array the way `SampleInfo` describes.
fn transform<T: Clone>(
    mut a: ArrayD<T>,
    lead: usize,
    mirror: &[bool],
    perm: &[usize],
) -> ArrayD<T> {
    for (k, &f) in mirror.iter().enumerate() {
        if f {
            a.invert_axis(Axis(lead + k));
        }
    }
    let full: Vec<usize> = (0..lead).chain(perm.iter().map(|p| p + lead)).collect();
    a.permuted_axes(IxDyn(&full))
        .as_standard_layout()
        .into_owned()
}

#[test]
fn mirror_and_transpose_keep_labels_aligned() {
    let dir = tempfile::tempdir().unwrap();
    for (shape, input, output) in [
        (vec![40usize, 40], vec![20usize, 20], vec![12usize, 12]),
        (vec![16, 20, 20], vec![10, 12, 12], vec![6, 8, 8]),
    ] {
        let cfg = Setup::unique(&shape).write(dir.path(), &format!("d{}", shape.len()));
        let d = open(&cfg, shape.len());
        let sampler = BatchSampler::new(
            vec![d.clone()],
            spec(&input, &output, vec![Augment::Mirror, Augment::Transpose]),
        )
        .unwrap();
        let (mut flipped, mut transposed) = (false, false);
        for i in 0..30 {
            let b = sampler.batch(i).unwrap();
            for (s, info) in b.samples.iter().enumerate() {
                let labels = b.labels.index_axis(Axis(0), s).mapv(|v| v as f32);
                assert_eq!(
                    raw_centre(&b, s, &output),
                    labels,
                    "iteration {i} sample {s}"
                );
                assert!(labels.iter().all(|&v| v > 0.0), "labels inside gt");
                let expect = transform(
                    d.read_raw(&info.origin, &input).unwrap(),
                    1,
                    &info.mirror,
                    &info.transpose,
                );
                assert_eq!(b.raw.index_axis(Axis(0), s), expect);
                flipped |= info.mirror.iter().any(|&m| m);
                transposed |= info.transpose.iter().enumerate().any(|(k, &p)| k != p);
                // Only equal-size axes are exchanged: axis 0 of the 3D case stays.
                if shape.len() == 3 {
                    assert_eq!(info.transpose[0], 0);
                }
            }
        }
        assert!(flipped && transposed);
    }
}

fn ramp_setup(shape: &[usize], axis: usize) -> Setup {
    let mut s = Setup::unique(shape);
    s.raw = array(shape, |p| p[axis] as f32);
    s.gt = array(shape, |p| p[axis] as u64);
    s
}

#[test]
fn elastic_keeps_labels_aligned_on_every_axis() {
    // raw = labels = coordinate along one axis. Raw is interpolated linearly at p + d(p), labels
    // take the nearest voxel, so they differ by the rounding error only (<= 0.5, about 0.25 on
    // average); a one-voxel misalignment would make the differences about 1.
    let dir = tempfile::tempdir().unwrap();
    for (shape, input, output) in [
        (vec![64usize, 64], vec![32usize, 32], vec![20usize, 20]),
        (vec![24, 30, 30], vec![16, 16, 16], vec![8, 8, 8]),
    ] {
        let params = AugmentParams {
            elastic_spacing: 6.0,
            elastic_sigma: 2.0,
            ..AugmentParams::default()
        };
        let mut non_integer = 0usize;
        let mut total = 0usize;
        for axis in 0..shape.len() {
            let cfg =
                ramp_setup(&shape, axis).write(dir.path(), &format!("ramp{}_{axis}", shape.len()));
            let augment = vec![Augment::Elastic, Augment::Mirror, Augment::Transpose];
            let sampler = BatchSampler::new(
                vec![open(&cfg, shape.len())],
                SamplerSpec {
                    augment_params: params.clone(),
                    ..spec(&input, &output, augment)
                },
            )
            .unwrap();
            assert!(
                sampler.batch(0).unwrap().mask.is_none(),
                "elastic margin fits: no padding"
            );
            for i in 0..8 {
                let b = sampler.batch(i).unwrap();
                for s in 0..b.samples.len() {
                    let labels = b.labels.index_axis(Axis(0), s).mapv(|v| v as f32);
                    let diff = raw_centre(&b, s, &output) - &labels;
                    let max = diff.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let mean = diff.iter().map(|v| v.abs()).sum::<f32>() / diff.len() as f32;
                    assert!(max <= 0.5 + 1e-4, "axis {axis} iteration {i}: max {max}");
                    assert!(mean < 0.35, "axis {axis} iteration {i}: mean {mean}");
                    let raw = b.raw.index_axis(Axis(0), s);
                    non_integer += raw
                        .iter()
                        .filter(|v| (**v - v.round()).abs() > 1e-3)
                        .count();
                    total += raw.len();
                }
            }
        }
        // The deformation really moves voxels by fractions of a voxel.
        assert!(non_integer * 2 > total, "{non_integer} of {total}");
    }
}

#[test]
fn gt_smaller_than_raw_is_placed_by_offset() {
    let dir = tempfile::tempdir().unwrap();
    let raw_shape = [40usize, 40];
    let mut setup = Setup::unique(&raw_shape);
    setup.raw_opts.voxel_size = Some(vec![2.0, 2.0]);
    setup.raw_opts.offset = Some(vec![100.0, 50.0]);
    // gt covers raw voxels [10, 30) x [8, 32): world offset = raw offset + shift * voxel size.
    setup.gt = array(&[20, 24], |p| {
        (1 + flat(&raw_shape, &[p[0] + 10, p[1] + 8])) as u64
    });
    setup.gt_opts.voxel_size = Some(vec![2.0, 2.0]);
    setup.gt_opts.offset = Some(vec![120.0, 66.0]);
    let cfg = setup.write(dir.path(), "offset");
    let d = open(&cfg, 2);
    assert_eq!(d.gt_offset(), &[10, 8]);
    assert_eq!(d.gt().unwrap().shape(), &[20, 24]);
    assert_eq!(d.voxel_size(), &[2.0, 2.0]);
    let output = [8usize, 8];
    let sampler =
        BatchSampler::new(vec![d], spec(&[16, 16], &output, vec![Augment::Mirror])).unwrap();
    assert!(!sampler.has_mask());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let b = sampler.batch(i).unwrap();
        for (s, info) in b.samples.iter().enumerate() {
            let labels = b.labels.index_axis(Axis(0), s).mapv(|v| v as f32);
            assert_eq!(raw_centre(&b, s, &output), labels);
            // Output block inside gt, input block inside raw.
            assert!(
                (10 - 4..=30 - 8 - 4).contains(&info.origin[0]),
                "{:?}",
                info.origin
            );
            assert!(
                (8 - 4..=32 - 8 - 4).contains(&info.origin[1]),
                "{:?}",
                info.origin
            );
            seen.insert(info.origin.clone());
        }
    }
    assert!(seen.len() > 30, "positions vary");
}

#[test]
fn arrays_smaller_than_a_block_are_padded() {
    let dir = tempfile::tempdir().unwrap();
    // raw = gt = 10x10, input 16 (context 4): raw is zero-padded, labels stay inside gt.
    let cfg = Setup::unique(&[10, 10]).write(dir.path(), "small");
    let output = [8usize, 8];
    let sampler = BatchSampler::new(vec![open(&cfg, 2)], spec(&[16, 16], &output, vec![])).unwrap();
    assert!(!sampler.has_mask());
    for i in 0..10 {
        let b = sampler.batch(i).unwrap();
        for (s, info) in b.samples.iter().enumerate() {
            assert!(
                info.origin.iter().all(|o| (-4..=-2).contains(o)),
                "{:?}",
                info.origin
            );
            let labels = b.labels.index_axis(Axis(0), s).mapv(|v| v as f32);
            assert_eq!(raw_centre(&b, s, &output), labels);
            assert!(labels.iter().all(|&v| v > 0.0));
            let raw = b
                .raw
                .index_axis(Axis(0), s)
                .index_axis(Axis(0), 0)
                .to_owned();
            for ((y, x), v) in raw
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
                .indexed_iter()
            {
                let (gy, gx) = (y as i64 + info.origin[0], x as i64 + info.origin[1]);
                let inside = (0..10).contains(&gy) && (0..10).contains(&gx);
                assert_eq!(*v > 0.0, inside, "voxel {gy},{gx}");
            }
        }
    }

    // gt (6x6 at raw offset 2) smaller than the 8x8 output block: centred, masked outside.
    let mut setup = Setup::unique(&[10, 10]);
    setup.gt = array(&[6, 6], |p| {
        (1 + flat(&[10, 10], &[p[0] + 2, p[1] + 2])) as u64
    });
    setup.gt_opts.offset = Some(vec![2.0, 2.0]);
    let cfg = setup.write(dir.path(), "tiny_gt");
    let sampler = BatchSampler::new(
        vec![open(&cfg, 2)],
        spec(&[12, 12], &output, vec![Augment::Mirror]),
    )
    .unwrap();
    assert!(sampler.has_mask());
    let b = sampler.batch(0).unwrap();
    let mask = b.mask.as_ref().unwrap();
    for s in 0..3 {
        assert_eq!(b.samples[s].origin, vec![-1, -1]);
        let m = mask.index_axis(Axis(0), s);
        assert_eq!(m.iter().filter(|&&v| v).count(), 36);
        let labels = b.labels.index_axis(Axis(0), s);
        assert!(m.iter().zip(labels.iter()).all(|(&v, &l)| v == (l > 0)));
    }
}

#[test]
fn datasets_are_drawn_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Setup::unique(&[20, 20]).write(dir.path(), "w3");
    a.weight = 3.0;
    let mut b = Setup::unique(&[20, 20]).write(dir.path(), "w1");
    b.weight = 1.0;
    let mut c = Setup::unique(&[20, 20]).write(dir.path(), "w0");
    c.weight = 0.0;
    let sampler = BatchSampler::new(
        vec![open(&a, 2), open(&b, 2), open(&c, 2)],
        spec(&[8, 8], &[8, 8], vec![]),
    )
    .unwrap();
    let mut counts = [0usize; 3];
    for i in 0..200 {
        for info in sampler.batch(i).unwrap().samples {
            counts[info.dataset] += 1;
        }
    }
    let frac = counts[0] as f64 / 600.0;
    assert!((0.68..=0.82).contains(&frac), "{counts:?}");
    assert_eq!(counts[2], 0);
}

#[test]
fn masks_are_sampled_and_returned() {
    let dir = tempfile::tempdir().unwrap();
    let shape = [40usize, 40];
    let mut setup = Setup::unique(&shape);
    setup.mask = Some(array(&shape, |p| u8::from(p[0] < 8)));
    let cfg = setup.write(dir.path(), "masked");
    let output = [8usize, 8];
    let sampler = BatchSampler::new(vec![open(&cfg, 2)], spec(&[12, 12], &output, vec![])).unwrap();
    assert!(sampler.has_mask());
    let mut with_mask = 0;
    let mut total = 0;
    for i in 0..30 {
        let b = sampler.batch(i).unwrap();
        let mask = b.mask.as_ref().unwrap();
        for (s, info) in b.samples.iter().enumerate() {
            let m = mask.index_axis(Axis(0), s);
            for ((y, _x), &v) in m
                .clone()
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap()
                .indexed_iter()
            {
                assert_eq!(v, info.origin[0] + 2 + (y as i64) < 8);
            }
            with_mask += usize::from(m.iter().any(|&v| v));
            total += 1;
        }
    }
    // Without rejection about a quarter of the samples would see the mask.
    assert!(with_mask * 100 >= total * 85, "{with_mask} of {total}");
}

#[test]
fn intensity_augmentations_change_raw_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::unique(&[30, 30]);
    setup.raw = array(&[30, 30], |p| (p[0] * 30 + p[1]) as f32 / 900.0);
    let cfg = setup.write(dir.path(), "int");
    let d = open(&cfg, 2);
    let base_spec = spec(&[16, 16], &[8, 8], vec![]);
    let base = BatchSampler::new(vec![d.clone()], base_spec.clone())
        .unwrap()
        .batch(4)
        .unwrap();
    let with = |augment: Vec<Augment>, params: AugmentParams| {
        BatchSampler::new(
            vec![d.clone()],
            SamplerSpec {
                augment,
                augment_params: params,
                ..base_spec.clone()
            },
        )
        .unwrap()
        .batch(4)
        .unwrap()
    };
    let params = AugmentParams {
        intensity_scale: [2.0, 2.0],
        intensity_shift: [0.5, 0.5],
        gamma: [2.0, 2.0],
        noise_std: 0.1,
        ..AugmentParams::default()
    };
    let b = with(vec![Augment::Intensity], params.clone());
    assert_eq!(b.labels, base.labels);
    assert!(
        b.raw
            .iter()
            .zip(base.raw.iter())
            .all(|(a, o)| (a - (2.0 * o + 0.5)).abs() < 1e-6)
    );
    let b = with(vec![Augment::Gamma], params.clone());
    assert!(
        b.raw
            .iter()
            .zip(base.raw.iter())
            .all(|(a, o)| (a - o.clamp(0.0, 1.0).powi(2)).abs() < 1e-6)
    );
    let b = with(vec![Augment::Noise], params.clone());
    let diff: Vec<f32> = b
        .raw
        .iter()
        .zip(base.raw.iter())
        .map(|(a, o)| a - o)
        .collect();
    let n = diff.len() as f32;
    let mean = diff.iter().sum::<f32>() / n;
    let std = (diff.iter().map(|d| (d - mean).powi(2)).sum::<f32>() / n).sqrt();
    assert!(
        mean.abs() < 0.02 && (std - 0.1).abs() < 0.01,
        "{mean} {std}"
    );
    assert_eq!(b.labels, base.labels);
    // Gamma in [0.5, 2] is drawn log-uniformly: values stay in [0, 1].
    let b = with(
        vec![Augment::Gamma],
        AugmentParams {
            gamma: [0.5, 2.0],
            ..AugmentParams::default()
        },
    );
    assert!(b.raw.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn bad_specs_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Setup::unique(&[20, 20]).write(dir.path(), "s");
    let d = open(&cfg, 2);
    let err = |s: SamplerSpec| {
        BatchSampler::new(vec![d.clone()], s)
            .unwrap_err()
            .to_string()
    };
    assert!(err(spec(&[16, 16], &[9, 9], vec![])).contains("even"));
    assert!(err(spec(&[16, 16], &[18, 16], vec![])).contains("fit in input"));
    assert!(err(spec(&[16, 16, 16], &[8, 8, 8], vec![])).contains("spatial axes"));
    assert!(
        err(SamplerSpec {
            batch_size: 0,
            ..spec(&[16, 16], &[8, 8], vec![])
        })
        .contains("batch size")
    );
    let mut zero = cfg.clone();
    zero.weight = 0.0;
    let e = BatchSampler::new(vec![open(&zero, 2)], spec(&[16, 16], &[8, 8], vec![])).unwrap_err();
    assert!(e.to_string().contains("weights"), "{e}");
    assert!(BatchSampler::new(vec![], spec(&[16, 16], &[8, 8], vec![])).is_err());
}
