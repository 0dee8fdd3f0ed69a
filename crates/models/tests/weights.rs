//! Weights interop and exact resume: tensor names and layouts, load errors, seeded
//! initialisation, and bit-identical training after a model + Adam round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::Device;
use dacapo_core::config::{AffinityLoss, TaskConfig};
use dacapo_core::{DType, NamedTensor, TensorMap};
use dacapo_models::{
    Task, TrainStep, UNetConfig, Upsampling, adam_config, load_model_tensors, model_to_tensors,
    parameter_names,
};
use ndarray::{ArrayD, IxDyn};

fn small_2d() -> UNetConfig {
    UNetConfig::new(2, 4, 2, vec![vec![2, 2]])
}

#[test]
fn names_and_layouts_follow_dacapo_state_dict() {
    let cfg = UNetConfig::new(2, 12, 2, vec![vec![2, 2], vec![2, 2]]);
    let model = cfg.init(0, &Device::flex()).unwrap();
    let names = parameter_names(&model);
    let get = |n: &str| {
        names
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
            .1
            .clone()
    };
    assert_eq!(
        get("architecture.unet.l_conv.0.conv_pass.0.weight"),
        [12, 1, 3, 3]
    );
    assert_eq!(get("architecture.unet.l_conv.0.conv_pass.2.bias"), [12]);
    assert_eq!(
        get("architecture.unet.l_conv.2.conv_pass.2.weight"),
        [48, 48, 3, 3]
    );
    // Transposed convolutions are (in, out, k, k) as in PyTorch.
    assert_eq!(
        get("architecture.unet.r_up.0.1.up.0.weight"),
        [48, 24, 2, 2]
    );
    assert_eq!(
        get("architecture.unet.r_up.0.0.up.0.weight"),
        [24, 12, 2, 2]
    );
    assert_eq!(
        get("architecture.unet.r_conv.0.1.conv_pass.0.weight"),
        [24, 48, 3, 3]
    );
    assert_eq!(
        get("architecture.unet.r_conv.0.0.conv_pass.0.weight"),
        [12, 24, 3, 3]
    );
    assert_eq!(get("prediction_head.weight"), [1, 12, 1, 1]);
    // 2 (weight, bias) x (3 x 2 encoder + 2 up + 2 x 2 decoder + head) = 26 tensors.
    assert_eq!(names.len(), 26);
    let total: usize = names.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(total, 65_773);

    let mut cfg = UNetConfig::new(3, 2, 2, vec![vec![1, 2, 2]]);
    cfg.upsample = Upsampling::Nearest;
    let model = cfg.init(0, &Device::flex()).unwrap();
    let names = parameter_names(&model);
    let up = names
        .iter()
        .find(|(n, _)| n == "architecture.unet.r_up.0.0.up.1.weight")
        .unwrap();
    assert_eq!(up.1, [2, 4, 1, 1, 1]);
}

#[test]
fn same_seed_same_weights_and_round_trip() {
    let cfg = small_2d();
    let a = model_to_tensors(&cfg.init(7, &Device::flex()).unwrap()).unwrap();
    let b = model_to_tensors(&cfg.init(7, &Device::flex()).unwrap()).unwrap();
    let c = model_to_tensors(&cfg.init(8, &Device::flex()).unwrap()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // PyTorch's default bound 1/sqrt(fan_in): first conv has fan_in 9.
    let w = a["architecture.unet.l_conv.0.conv_pass.0.weight"]
        .to_f32()
        .unwrap();
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 3.0));
    assert!(w.iter().any(|v| v.abs() > 0.25));

    let loaded = load_model_tensors(cfg.init(8, &Device::flex()).unwrap(), &a).unwrap();
    assert_eq!(model_to_tensors(&loaded).unwrap(), a);
}

#[test]
fn load_errors_name_the_tensor() {
    let cfg = small_2d();
    let good = model_to_tensors(&cfg.init(0, &Device::flex()).unwrap()).unwrap();
    let fresh = || cfg.init(1, &Device::flex()).unwrap();

    let mut missing = good.clone();
    missing.remove("prediction_head.bias");
    let err = load_model_tensors(fresh(), &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("prediction_head.bias"), "{err}");

    let mut wrong = good.clone();
    wrong.insert(
        "prediction_head.weight".into(),
        NamedTensor::from_f32(vec![1, 4, 3, 3], &[0.0; 36]).unwrap(),
    );
    let err = load_model_tensors(fresh(), &wrong).unwrap_err().to_string();
    assert!(
        err.contains("prediction_head.weight") && err.contains("[1, 4, 1, 1]"),
        "{err}"
    );

    let mut extra = good.clone();
    extra.insert(
        "architecture.unet.l_conv.9.conv_pass.0.weight".into(),
        NamedTensor::from_f32(vec![1], &[0.0]).unwrap(),
    );
    let err = load_model_tensors(fresh(), &extra).unwrap_err().to_string();
    assert!(err.contains("l_conv.9"), "{err}");

    let mut int = good.clone();
    int.insert(
        "prediction_head.bias".into(),
        NamedTensor::new(DType::I32, vec![1], vec![0; 4]).unwrap(),
    );
    assert!(load_model_tensors(fresh(), &int).is_err());
}

#[test]
fn dacapo_state_dicts_with_chain_duplicates_load() {
    let cfg = small_2d();
    let good = model_to_tensors(&cfg.init(0, &Device::flex()).unwrap()).unwrap();
    // DaCapo's Model registers the U-Net and head twice: as attributes and inside `chain`.
    let mut dacapo = TensorMap::new();
    for (name, t) in &good {
        dacapo.insert(name.clone(), t.clone());
        let chain = name.replacen("architecture.", "chain.0.", 1).replacen(
            "prediction_head.",
            "chain.1.",
            1,
        );
        dacapo.insert(chain, t.clone());
    }
    let loaded = load_model_tensors(cfg.init(1, &Device::flex()).unwrap(), &dacapo).unwrap();
    assert_eq!(model_to_tensors(&loaded).unwrap(), good);
    // Only the chain form works too.
    let chain_only: TensorMap = dacapo
        .into_iter()
        .filter(|(k, _)| k.starts_with("chain."))
        .collect();
    let loaded = load_model_tensors(cfg.init(1, &Device::flex()).unwrap(), &chain_only).unwrap();
    assert_eq!(model_to_tensors(&loaded).unwrap(), good);
}

/// Deterministic batch `i`: 2 samples of raw 1x28x28 and targets for the U-Net's output.
fn batch(task: &Task, cfg: &UNetConfig, i: usize) -> (ArrayD<f32>, ArrayD<f32>, ArrayD<f32>) {
    let input = 28;
    let out = cfg.output_shape(&[input, input]).unwrap();
    let raw = ArrayD::from_shape_fn(IxDyn(&[2, 1, input, input]), |ix| {
        ((ix[0] * 7 + ix[2] * 3 + ix[3] * 5 + i * 11) as f32 * 0.37).sin()
    });
    let labels = ArrayD::from_shape_fn(IxDyn(&[2, out[0], out[1]]), |ix| {
        (((ix[1] + i) / 4 + (ix[2] + ix[0]) / 5) % 3) as u64
    });
    let (t, w) = task.targets(labels.view(), None).unwrap();
    (raw, t, w)
}

fn trainer(cfg: &UNetConfig, task: &Task, seed: u64) -> TrainStep {
    let model = cfg.init(seed, &Device::flex()).unwrap();
    TrainStep::new(model, task.clone(), &adam_config(1e-4), 1e-3)
}

fn run(
    ts: &mut TrainStep,
    task: &Task,
    cfg: &UNetConfig,
    range: std::ops::Range<usize>,
) -> Vec<f64> {
    range
        .map(|i| {
            let (raw, t, w) = batch(task, cfg, i);
            ts.step(&raw, &t, &w).unwrap()
        })
        .collect()
}

#[test]
fn resume_from_tensors_is_bit_identical() {
    let cfg = small_2d();
    assert_eq!(cfg.output_shape(&[28, 28]).unwrap(), [12, 12]);
    let config = TaskConfig::Affinities {
        neighborhood: None,
        loss: AffinityLoss::Bce,
        biases: vec![0.5],
        post_process: Default::default(),
        thresholds: vec![0.5],
    };
    let task = Task::new(&config, 2).unwrap();
    let cfg = cfg.with_out_channels(task.out_channels());

    let mut a = trainer(&cfg, &task, 3);
    let first = run(&mut a, &task, &cfg, 0..3);
    let (model_map, optim_map) = a.to_tensors().unwrap();
    let after = run(&mut a, &task, &cfg, 3..6);
    let (final_a, optim_a) = a.to_tensors().unwrap();

    // The optimizer map holds PyTorch-style Adam state for every parameter.
    let names = parameter_names(a.model());
    assert_eq!(optim_map.len(), 3 * names.len());
    for (name, shape) in &names {
        assert_eq!(&optim_map[&format!("{name}.exp_avg")].shape, shape);
        assert_eq!(&optim_map[&format!("{name}.exp_avg_sq")].shape, shape);
        assert_eq!(optim_map[&format!("{name}.step")].to_i64().unwrap(), [3]);
    }
    assert_eq!(
        optim_a[&format!("{}.step", names[0].0)].to_i64().unwrap(),
        [6]
    );

    // Resume into a model initialised from another seed: everything must come from the maps.
    let mut b = trainer(&cfg, &task, 99);
    b.load_tensors(&model_map, &optim_map).unwrap();
    let resumed = run(&mut b, &task, &cfg, 3..6);
    let (final_b, optim_b) = b.to_tensors().unwrap();
    assert_eq!(
        after.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        resumed.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(final_a, final_b);
    assert_eq!(optim_a, optim_b);
    assert!(first.iter().chain(&after).all(|l| l.is_finite()));

    // Without the Adam state the same steps give other weights: the state matters.
    let mut c = trainer(&cfg, &task, 99);
    c.load_tensors(&model_map, &TensorMap::new()).unwrap();
    let fresh = run(&mut c, &task, &cfg, 3..6);
    assert_eq!(fresh[0].to_bits(), after[0].to_bits());
    assert_ne!(c.to_tensors().unwrap().0, final_a);
}

#[test]
fn three_d_training_step_runs_and_predicts() {
    let cfg = UNetConfig::new(3, 2, 2, vec![vec![2, 2, 2]]);
    let task = Task::new(
        &TaskConfig::Distance {
            scale_factor: 2.0,
            thresholds: vec![0.0],
        },
        3,
    )
    .unwrap();
    let input = cfg.valid_input_shape(&[20, 20, 20]).unwrap();
    let out = cfg.output_shape(&input).unwrap();
    let mut ts = trainer(&cfg, &task, 1);
    let raw = ArrayD::from_shape_fn(IxDyn(&[1, 1, input[0], input[1], input[2]]), |ix| {
        (ix[2] + ix[3] * 2 + ix[4]) as f32 / 40.0
    });
    let labels = ArrayD::from_shape_fn(IxDyn(&[1, out[0], out[1], out[2]]), |ix| {
        u64::from(ix[1] > out[0] / 2)
    });
    let (t, w) = task.targets(labels.view(), None).unwrap();
    let l0 = ts.step(&raw, &t, &w).unwrap();
    let l1 = ts.step(&raw, &t, &w).unwrap();
    assert!(l0.is_finite() && l1.is_finite());
    // Wrong target shape is an error, not a panic.
    assert!(ts.step(&raw, &raw, &raw).is_err());
    let pred = ts.model().predict(&task, &raw).unwrap();
    assert_eq!(pred.shape(), &[1, 1, out[0], out[1], out[2]]);
}

/// Final weights after 3 steps of the given network, computed inside a rayon pool of `threads`.
fn train_in_pool(cfg: &UNetConfig, near: &[usize], threads: usize) -> (Vec<u64>, TensorMap) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let task = Task::new(
            &TaskConfig::Distance {
                scale_factor: 5.0,
                thresholds: vec![0.0],
            },
            cfg.dims,
        )
        .unwrap();
        let input = cfg.valid_input_shape(near).unwrap();
        let out = cfg.output_shape(&input).unwrap();
        let mut ts = trainer(cfg, &task, 1);
        let mut shape = vec![2, 1];
        shape.extend(&input);
        let raw = ArrayD::from_shape_fn(IxDyn(&shape), |ix| {
            ((ix[2] * 7 + ix[3] * 3 + ix[0]) as f32 * 0.1).sin()
        });
        let mut shape = vec![2];
        shape.extend(&out);
        let labels =
            ArrayD::from_shape_fn(IxDyn(&shape), |ix| ((ix[1] / 9 + ix[2] / 7) % 3) as u64);
        let (t, w) = task.targets(labels.view(), None).unwrap();
        let losses = (0..3)
            .map(|_| ts.step(&raw, &t, &w).unwrap().to_bits())
            .collect();
        (losses, ts.to_tensors().unwrap().0)
    })
}

#[test]
fn training_does_not_depend_on_the_thread_count() {
    let cases = [
        (
            UNetConfig::new(2, 8, 2, vec![vec![2, 2], vec![2, 2]]),
            vec![76, 76],
        ),
        (
            UNetConfig::new(3, 4, 2, vec![vec![2, 2, 2]]),
            vec![30, 30, 30],
        ),
    ];
    for (cfg, near) in cases {
        let one = train_in_pool(&cfg, &near, 1);
        let three = train_in_pool(&cfg, &near, 3);
        assert_eq!(one.0, three.0, "losses of {cfg:?}");
        assert_eq!(one.1, three.1, "weights of {cfg:?}");
    }
}
