//! The wgpu backend trains and predicts like flex (on a GPU, or Mesa's lavapipe without one).
//!
//! Built only with `--features wgpu` (`cargo xtask ci` does so when a Vulkan driver is
//! installed: `cargo xtask setup --wgpu`). Skips with a printed reason when no adapter exists.
#![cfg(feature = "wgpu")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::Device;
use dacapo_core::config::{Backend, TaskConfig};
use dacapo_models::{
    Task, TrainStep, UNetConfig, adam_config, load_model_tensors, model_to_tensors,
};
use ndarray::{ArrayD, Dimension, IxDyn};

fn wgpu_device() -> Option<Device> {
    let device = dacapo_runtime::backend::device(Backend::Wgpu).unwrap();
    // burn opens the adapter on first use and panics if there is none.
    let probe = std::panic::catch_unwind(|| {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar::<f32>()
    });
    match probe {
        Ok(v) if v == 3.0 => Some(device),
        Ok(v) => panic!("wgpu computed 1 + 2 = {v}"),
        Err(_) => {
            eprintln!(
                "SKIPPED: no wgpu adapter (install a GPU driver or Mesa's lavapipe: \
                 `cargo xtask setup --wgpu`)"
            );
            None
        }
    }
}

fn ramp(shape: &[usize], scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let s: usize = i.slice().iter().enumerate().map(|(a, v)| (a + 1) * v).sum();
        ((s as f32) * scale).sin()
    })
}

#[test]
fn wgpu_matches_flex_and_trains() {
    let Some(gpu) = wgpu_device() else { return };
    let task = Task::new(
        &TaskConfig::Distance {
            scale_factor: 5.0,
            thresholds: vec![0.0],
        },
        2,
    )
    .unwrap();
    let net = UNetConfig::new(2, 4, 2, vec![vec![2, 2]]).with_out_channels(1);
    let input = net.valid_input_shape(&[44, 44]).unwrap();
    let output = net.output_shape(&input).unwrap();

    // Same weights on both backends: initialise on flex, copy to wgpu.
    let cpu_model = net.init(1, &Device::flex()).unwrap();
    let tensors = model_to_tensors(&cpu_model).unwrap();
    let gpu_model = load_model_tensors(net.init(2, &gpu).unwrap(), &tensors).unwrap();

    let raw = ramp(&[1, 1, input[0], input[1]], 0.05);
    let a = cpu_model.predict(&task, &raw).unwrap();
    let b = gpu_model.predict(&task, &raw).unwrap();
    assert_eq!(a.shape(), b.shape());
    let max_diff = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        max_diff < 1e-4,
        "flex and wgpu predictions differ by {max_diff}"
    );

    let mut step = TrainStep::new(gpu_model, task, &adam_config(0.0), 1e-2);
    let target = ramp(&[1, 1, output[0], output[1]], 0.02).mapv(|v| v * 0.5);
    let weight = ArrayD::from_elem(IxDyn(&[1, 1, output[0], output[1]]), 1.0f32);
    let losses: Vec<f64> = (0..20)
        .map(|_| step.step(&raw, &target, &weight).unwrap())
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(
        losses[19] < 0.5 * losses[0],
        "wgpu training did not reduce the loss: {losses:?}"
    );
}
