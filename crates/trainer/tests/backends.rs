//! Backend conformance: every backend compiled into this test (flex always; wgpu and tch with
//! `--features wgpu` / `--features tch`) trains, predicts like flex within [`PREDICT_TOL`],
//! and continues a run whose checkpoints another backend wrote, both ways.
//!
//! `cargo xtask ci` runs this file once per extra backend: with `--features wgpu` when a
//! Vulkan driver is installed (`cargo xtask setup --wgpu`: Mesa's lavapipe without a GPU),
//! with `--features tch` when the torch venv exists (`cargo xtask setup --tch`). A backend
//! that is compiled in but has no device here is skipped with a printed reason. On a machine
//! with a GPU, wgpu and tch run on it (their default devices); `docs/backends.md` says what
//! is bit-exact where.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use burn::tensor::Device;
use dacapo_core::RunConfig;
use dacapo_core::config::{Backend, DeviceSpec, TaskConfig};
use dacapo_core::testing::TinyRun;
use dacapo_models::{Task, TrainStep, UNetConfig, adam_config};
use dacapo_runtime::backend::{self, Chosen};
use dacapo_runtime::{NoValidation, Stores, build_model, load_weights};
use dacapo_trainer::{TrainOptions, train};
use ndarray::{ArrayD, Dimension, IxDyn};

/// Largest difference allowed between a backend's and flex's prediction of the same weights
/// (outputs are tanh values in [-1, 1]).
const PREDICT_TOL: f32 = 1e-4;
/// Largest relative difference allowed between a backend's and flex's training losses over
/// the few steps compared (float rounding grows with each Adam step).
const LOSS_RTOL: f64 = 1e-3;

/// The backends compiled in that have a device here, flex first.
fn backends() -> Vec<Chosen> {
    backend::compiled()
        .into_iter()
        .filter_map(|b| {
            // burn opens a wgpu adapter on first use and panics if it cannot.
            let probe = std::panic::catch_unwind(|| {
                let chosen = backend::select(b, DeviceSpec::Default)?;
                let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &chosen.device);
                assert_eq!(t.sum().into_scalar::<f32>(), 3.0, "{b} computed 1 + 2");
                Ok::<_, dacapo_runtime::RuntimeError>(chosen)
            });
            match probe {
                Ok(Ok(chosen)) => {
                    eprintln!("backend {b}: device {}", chosen.name);
                    Some(chosen)
                }
                Ok(Err(e)) => {
                    eprintln!("SKIPPED backend {b}: {e}");
                    None
                }
                Err(_) => {
                    eprintln!("SKIPPED backend {b}: its device panicked on first use");
                    None
                }
            }
        })
        .collect()
}

fn ramp(shape: &[usize], scale: f32) -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(shape), |i| {
        let s: usize = i.slice().iter().enumerate().map(|(a, v)| (a + 1) * v).sum();
        ((s as f32) * scale).sin()
    })
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn assert_losses_close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = (x - y).abs() / x.abs().max(1e-12);
        assert!(
            rel <= LOSS_RTOL,
            "{what}: losses differ at step {i} by {rel:.2e} relative: {a:?} vs {b:?}"
        );
    }
}

/// A small network, its task and a fixed batch for it.
struct Setup {
    net: UNetConfig,
    task: Task,
    raw: ArrayD<f32>,
    target: ArrayD<f32>,
    weight: ArrayD<f32>,
}

fn setup(dims: usize) -> Setup {
    let task = Task::new(
        &TaskConfig::Distance {
            scale_factor: 5.0,
            thresholds: vec![0.0],
        },
        dims,
    )
    .unwrap();
    let (factors, side) = if dims == 2 {
        (vec![vec![2, 2]], 44)
    } else {
        (vec![vec![2, 2, 2]], 28)
    };
    let net = UNetConfig::new(dims, 4, 2, factors).with_out_channels(1);
    let input = net.valid_input_shape(&vec![side; dims]).unwrap();
    let output = net.output_shape(&input).unwrap();
    let batch = |channels, spatial: &[usize]| [&[1, channels][..], spatial].concat();
    Setup {
        raw: ramp(&batch(1, &input), 0.05),
        target: ramp(&batch(1, &output), 0.02).mapv(|v| v * 0.5),
        weight: ArrayD::from_elem(IxDyn(&batch(1, &output)), 1.0f32),
        net,
        task,
    }
}

impl Setup {
    /// A training step on `device` with the weights of seed 1 (identical on every backend:
    /// initialisation draws on the host).
    fn step(&self, device: &Device) -> TrainStep {
        let model = self.net.init(1, device).unwrap();
        TrainStep::new(model, self.task.clone(), &adam_config(0.0), 1e-2)
    }

    /// A step on `device` loaded with the model and Adam state of `from`, which must arrive
    /// bit for bit.
    fn moved(&self, from: &TrainStep, device: &Device, what: &str) -> TrainStep {
        let (model, optimizer) = from.to_tensors().unwrap();
        let mut to = self.step(device);
        to.load_tensors(&model, &optimizer).unwrap();
        assert_eq!(to.to_tensors().unwrap(), (model, optimizer), "{what}");
        to
    }

    fn train(&self, step: &mut TrainStep, steps: usize) -> Vec<f64> {
        (0..steps)
            .map(|_| step.step(&self.raw, &self.target, &self.weight).unwrap())
            .collect()
    }
}

#[test]
fn twenty_steps_reduce_the_loss_on_every_backend() {
    let s = setup(2);
    let flex_losses = s.train(&mut s.step(&Device::flex()), 20);
    for chosen in backends() {
        let losses = s.train(&mut s.step(&chosen.device), 20);
        eprintln!("{} losses: {losses:?}", chosen.backend);
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
        assert!(
            losses[19] < 0.5 * losses[0],
            "{} did not reduce the loss: {losses:?}",
            chosen.backend
        );
        // The same weights and batch: the first steps agree with flex up to rounding.
        assert_losses_close(
            &format!("{} vs flex", chosen.backend),
            &flex_losses[..5],
            &losses[..5],
        );
    }
}

#[test]
fn the_same_steps_repeat_bit_for_bit_on_the_cpu() {
    let s = setup(2);
    for chosen in backends() {
        let first = s.train(&mut s.step(&chosen.device), 5);
        let again = s.train(&mut s.step(&chosen.device), 5);
        let same = first == again;
        eprintln!(
            "{} {}: repeats bit for bit: {same}",
            chosen.backend, chosen.name
        );
        // GPUs may pick other algorithms or reduction orders from run to run.
        if chosen.name == "cpu" {
            assert_eq!(first, again, "{} on the CPU", chosen.backend);
        }
    }
}

#[test]
fn predictions_agree_with_flex_in_2d_and_3d() {
    for dims in [2, 3] {
        let s = setup(dims);
        let reference = s
            .step(&Device::flex())
            .model()
            .predict(&s.task, &s.raw)
            .unwrap();
        for chosen in backends() {
            let prediction = s
                .step(&chosen.device)
                .model()
                .predict(&s.task, &s.raw)
                .unwrap();
            let diff = max_abs_diff(&reference, &prediction);
            eprintln!(
                "{dims}D {}: max |prediction - flex| = {diff:.2e}",
                chosen.backend
            );
            assert!(
                diff <= PREDICT_TOL,
                "{dims}D {} and flex predictions differ by {diff}",
                chosen.backend
            );
        }
    }
}

#[test]
fn weights_and_adam_state_move_between_backends_exactly() {
    let s = setup(2);
    for chosen in backends()
        .into_iter()
        .filter(|c| c.backend != Backend::Flex)
    {
        let name = chosen.backend;
        // flex -> other: the tensors arrive bit for bit and training continues alike.
        let mut flex = s.step(&Device::flex());
        s.train(&mut flex, 3);
        let mut other = s.moved(&flex, &chosen.device, &format!("flex -> {name}"));
        let on_flex = s.train(&mut flex, 3);
        let on_other = s.train(&mut other, 3);
        assert_losses_close(&format!("flex -> {name}"), &on_flex, &on_other);

        // other -> flex, from the state the other backend trained.
        let mut back = s.moved(&other, &Device::flex(), &format!("{name} -> flex"));
        let on_other = s.train(&mut other, 3);
        let on_back = s.train(&mut back, 3);
        assert_losses_close(&format!("{name} -> flex"), &on_other, &on_back);
    }
}

/// A tiny 2D run on synthetic data under `dir`, with no validation datasets.
fn tiny_run(dir: &Path, name: &str, train_until: u64) -> RunConfig {
    TinyRun::new(name, dir)
        .schedule(train_until, 2)
        .seed(3)
        .keep_last(10)
        .build()
}

/// Trains `config` to `until` on `backend`, returning where it resumed from.
fn train_to(config: &RunConfig, until: u64, backend: Backend) -> u64 {
    let mut config = config.clone();
    config.run.train_until = until;
    let options = TrainOptions {
        backend: Some(backend),
        ..TrainOptions::default()
    };
    let stores = Stores::local(&config);
    train(&config, &stores, &options, &mut NoValidation)
        .unwrap()
        .resumed_from
}

fn losses(config: &RunConfig) -> Vec<f64> {
    Stores::local(config)
        .stats
        .retrieve_training_stats(&config.run.name)
        .unwrap()
        .iteration_stats()
        .iter()
        .map(|s| s.loss)
        .collect()
}

#[test]
fn a_run_continues_on_another_backend_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let reference = tiny_run(dir.path(), "flex-only", 6);
    train_to(&reference, 6, Backend::Flex);
    let flex_losses = losses(&reference);
    for chosen in backends()
        .into_iter()
        .filter(|c| c.backend != Backend::Flex)
    {
        let other = chosen.backend;
        let config = tiny_run(dir.path(), &format!("via-{other}"), 6);
        let run = &config.run.name;
        assert_eq!(train_to(&config, 2, Backend::Flex), 0);
        assert_eq!(
            train_to(&config, 4, other),
            2,
            "{other} resumes flex's checkpoint"
        );
        assert_eq!(
            train_to(&config, 6, Backend::Flex),
            4,
            "flex resumes {other}'s"
        );

        let store = Stores::local(&config).weights;
        let places: Vec<(String, String)> = [2, 4, 6]
            .iter()
            .map(|&i| {
                let state = store.retrieve_state(run, i).unwrap();
                (state.backend, state.device)
            })
            .collect();
        let on = |b: &str, d: &str| (b.to_owned(), d.to_owned());
        assert_eq!(
            places,
            [
                on("flex", "cpu"),
                on(other.name(), &chosen.name),
                on("flex", "cpu")
            ]
        );
        let mixed = losses(&config);
        eprintln!("flex -> {other} -> flex losses: {mixed:?}\nflex only: {flex_losses:?}");
        assert_eq!(
            mixed[..2],
            flex_losses[..2],
            "the flex steps before the switch"
        );
        assert_losses_close(&format!("via {other}"), &flex_losses, &mixed);

        // The checkpoint trained on the other backend predicts alike on both.
        let (model, task) = build_model(&config, &Device::flex()).unwrap();
        let (on_flex, _) = load_weights(&*store, run, 4, model).unwrap();
        let (model, _) = build_model(&config, &chosen.device).unwrap();
        let (on_other, state) = load_weights(&*store, run, 4, model).unwrap();
        assert_eq!(state.backend, other.name());
        let raw = ramp(&[1, 1, 44, 44], 0.05);
        let diff = max_abs_diff(
            &on_flex.predict(&task, &raw).unwrap(),
            &on_other.predict(&task, &raw).unwrap(),
        );
        assert!(diff <= PREDICT_TOL, "checkpoint 4 of {other}: {diff}");
    }
}

#[test]
fn missing_devices_list_what_the_backend_sees() {
    for chosen in backends() {
        let b = chosen.backend;
        let err = backend::select(b, DeviceSpec::Cuda(99))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cuda:99`"), "{err}");
        for seen in backend::available(b) {
            assert!(err.contains(&seen), "{b}: {err} does not list {seen}");
        }
    }
}
