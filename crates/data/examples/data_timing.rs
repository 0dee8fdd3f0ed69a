//! Times synthetic generation and batch sampling: `cargo run -p dacapo-data --release --example data_timing`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dacapo_core::config::{Augment, AugmentParams, DatasetConfig, Normalize, SyntheticConfig};
use dacapo_data::{BatchSampler, Dataset, OpenOptions, SamplerSpec, ensure_synthetic};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    for shape in [vec![512usize, 512], vec![128, 128, 128]] {
        let t = Instant::now();
        let v = dacapo_data::generate(&shape, 1, 40, 0.1);
        println!("generate {shape:?}: {:.3} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        dacapo_data::write_array(
            &dir.path().join("w.zarr"),
            &format!("l{}", shape.len()),
            &v.labels,
            &Default::default(),
        )
        .unwrap();
        dacapo_data::write_array(
            &dir.path().join("w.zarr"),
            &format!("r{}", shape.len()),
            &v.raw,
            &Default::default(),
        )
        .unwrap();
        println!(
            "write raw + labels {shape:?}: {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    for (shape, input, output) in [
        (
            vec![512usize, 512],
            vec![252usize, 252],
            vec![164usize, 164],
        ),
        (vec![128, 128, 128], vec![68, 68, 68], vec![28, 28, 28]),
    ] {
        let cfg = SyntheticConfig {
            zarr: dir.path().join(format!("cells{}d.zarr", shape.len())),
            shape: shape.clone(),
            seed: 42,
            objects: 40,
            noise: 0.1,
        };
        let t = Instant::now();
        ensure_synthetic(&cfg).unwrap();
        println!(
            "ensure_synthetic {shape:?} (2 arrays + labels): {:.3} s",
            t.elapsed().as_secs_f64()
        );
        let ds = DatasetConfig {
            name: None,
            zarr: cfg.zarr.clone(),
            raw: "raw".into(),
            gt: "labels".into(),
            mask: None,
            weight: 1.0,
            normalize: Normalize::Percentile,
        };
        let t = Instant::now();
        let d = Dataset::open(&ds, shape.len(), &OpenOptions::default()).unwrap();
        println!("open dataset: {:.3} s", t.elapsed().as_secs_f64());
        for augment in [
            vec![],
            vec![
                Augment::Mirror,
                Augment::Transpose,
                Augment::Intensity,
                Augment::Noise,
            ],
            vec![
                Augment::Elastic,
                Augment::Mirror,
                Augment::Transpose,
                Augment::Intensity,
                Augment::Gamma,
                Augment::Noise,
            ],
        ] {
            let sampler = BatchSampler::new(
                vec![d.clone()],
                SamplerSpec {
                    input_shape: input.clone(),
                    output_shape: output.clone(),
                    batch_size: 2,
                    seed: 1,
                    augment: augment.clone(),
                    augment_params: AugmentParams::default(),
                },
            )
            .unwrap();
            let n = 10;
            let t = Instant::now();
            for i in 0..n {
                sampler.batch(i).unwrap();
            }
            println!(
                "batch of 2 x {input:?} with {augment:?}: {:.4} s",
                t.elapsed().as_secs_f64() / n as f64
            );
        }
    }
}
