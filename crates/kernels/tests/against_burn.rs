//! The kernels against burn's own operations on flex, forward and gradients, on random shapes;
//! and the same bits for any number of threads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::tensor::module::{conv_transpose2d, conv_transpose3d, conv2d, conv3d, max_pool2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData, activation::relu};
use proptest::prelude::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

/// Largest |a - b| relative to the largest |b| (at least 1).
fn rel_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

fn random<const D: usize>(rng: &mut ChaCha8Rng, shape: [usize; D], device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// Forward values and the gradients of (input, weight, bias) under a random linear loss.
struct Grads<const D: usize> {
    y: Tensor<D>,
    dx: Tensor<D>,
    dw: Tensor<D>,
    db: Tensor<1>,
}

fn run<const D: usize>(
    x: &Tensor<D>,
    w: &Tensor<D>,
    b: &Tensor<1>,
    probe: &Tensor<D>,
    layer: impl Fn(Tensor<D>, Tensor<D>, Tensor<1>) -> Tensor<D>,
) -> Grads<D> {
    let x = x.clone().autodiff().require_grad();
    let w = w.clone().autodiff().require_grad();
    let b = b.clone().autodiff().require_grad();
    let y = layer(x.clone(), w.clone(), b.clone());
    let grads = (y.clone() * probe.clone().autodiff()).sum().backward();
    Grads {
        y: y.inner(),
        dx: x.grad(&grads).unwrap(),
        dw: w.grad(&grads).unwrap(),
        db: b.grad(&grads).unwrap(),
    }
}

fn assert_close<const D: usize>(ours: Grads<D>, burn: Grads<D>, what: &str) {
    for (name, diff) in [
        ("forward", rel_diff(ours.y, burn.y)),
        ("input gradient", rel_diff(ours.dx, burn.dx)),
        ("weight gradient", rel_diff(ours.dw, burn.dw)),
        ("bias gradient", rel_diff(ours.db, burn.db)),
    ] {
        assert!(
            diff <= 1e-4,
            "{what}: {name} differs by {diff:e} (relative)"
        );
    }
}

fn maybe_relu<const D: usize>(t: Tensor<D>, on: bool) -> Tensor<D> {
    if on { relu(t) } else { t }
}

/// A random convolution: (batch, cin, cout, kernel, same padding, relu, spatial sizes, seed).
fn conv_case(
    dims: usize,
) -> impl Strategy<Value = (usize, usize, usize, usize, bool, bool, Vec<usize>, u64)> {
    let max_size = if dims == 2 { 23 } else { 11 };
    let max_channels = if dims == 2 { 64 } else { 16 };
    (
        1usize..=3,
        1usize..=max_channels,
        1usize..=max_channels,
        prop_oneof![Just(1usize), Just(3), Just(5)],
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(5usize..=max_size, dims),
        any::<u64>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_matches_burn((batch, cin, cout, k, same, act, size, seed) in conv_case(2)) {
        let device = Device::flex();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pad = if same { k / 2 } else { 0 };
        let x = random(&mut rng, [batch, cin, size[0], size[1]], &device);
        let w = random(&mut rng, [cout, cin, k, k], &device);
        let b = random(&mut rng, [cout], &device);
        let out = [size[0] + 2 * pad + 1 - k, size[1] + 2 * pad + 1 - k];
        let probe = random(&mut rng, [batch, cout, out[0], out[1]], &device);
        let ours = run(&x, &w, &b, &probe, |x, w, b| dacapo_kernels::conv(x, w, Some(b), pad, act));
        let burn = run(&x, &w, &b, &probe, |x, w, b| {
            maybe_relu(conv2d(x, w, Some(b), ConvOptions::new([1, 1], [pad, pad], [1, 1], 1)), act)
        });
        assert_close(ours, burn, &format!("conv2d {batch}x{cin}x{size:?} -> {cout}, k {k} pad {pad}"));
    }

    #[test]
    fn conv3d_matches_burn((batch, cin, cout, k, same, act, size, seed) in conv_case(3)) {
        let device = Device::flex();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pad = if same { k / 2 } else { 0 };
        let x = random(&mut rng, [batch, cin, size[0], size[1], size[2]], &device);
        let w = random(&mut rng, [cout, cin, k, k, k], &device);
        let b = random(&mut rng, [cout], &device);
        let out: Vec<usize> = size.iter().map(|s| s + 2 * pad + 1 - k).collect();
        let probe = random(&mut rng, [batch, cout, out[0], out[1], out[2]], &device);
        let ours = run(&x, &w, &b, &probe, |x, w, b| dacapo_kernels::conv(x, w, Some(b), pad, act));
        let burn = run(&x, &w, &b, &probe, |x, w, b| {
            maybe_relu(conv3d(x, w, Some(b), ConvOptions::new([1; 3], [pad; 3], [1; 3], 1)), act)
        });
        assert_close(ours, burn, &format!("conv3d {batch}x{cin}x{size:?} -> {cout}, k {k} pad {pad}"));
    }

    #[test]
    fn conv_transpose_matches_burn(
        three_d in any::<bool>(),
        batch in 1usize..=3,
        cin in 1usize..=24,
        cout in 1usize..=24,
        factor in prop::collection::vec(1usize..=3, 3),
        size in prop::collection::vec(1usize..=9, 3),
        act in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let device = Device::flex();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let b = random(&mut rng, [cout], &device);
        if three_d {
            let x = random(&mut rng, [batch, cin, size[0], size[1], size[2]], &device);
            let w = random(&mut rng, [cin, cout, factor[0], factor[1], factor[2]], &device);
            let out = [0, 1, 2].map(|a| size[a] * factor[a]);
            let probe = random(&mut rng, [batch, cout, out[0], out[1], out[2]], &device);
            let f = [factor[0], factor[1], factor[2]];
            let ours = run(&x, &w, &b, &probe, |x, w, b| dacapo_kernels::conv_transpose(x, w, Some(b), act));
            let burn = run(&x, &w, &b, &probe, |x, w, b| {
                let options = ConvTransposeOptions::new(f, [0; 3], [0; 3], [1; 3], 1);
                maybe_relu(conv_transpose3d(x, w, Some(b), options), act)
            });
            assert_close(ours, burn, &format!("conv_transpose3d {size:?} x{factor:?}"));
        } else {
            let x = random(&mut rng, [batch, cin, size[0], size[1]], &device);
            let w = random(&mut rng, [cin, cout, factor[0], factor[1]], &device);
            let probe = random(&mut rng, [batch, cout, size[0] * factor[0], size[1] * factor[1]], &device);
            let f = [factor[0], factor[1]];
            let ours = run(&x, &w, &b, &probe, |x, w, b| dacapo_kernels::conv_transpose(x, w, Some(b), act));
            let burn = run(&x, &w, &b, &probe, |x, w, b| {
                let options = ConvTransposeOptions::new(f, [0; 2], [0; 2], [1; 2], 1);
                maybe_relu(conv_transpose2d(x, w, Some(b), options), act)
            });
            assert_close(ours, burn, &format!("conv_transpose2d {size:?} x{factor:?}"));
        }
    }

    #[test]
    fn max_pool_matches_burn(
        three_d in any::<bool>(),
        planes in (1usize..=3, 1usize..=8),
        factor in prop::collection::vec(1usize..=3, 3),
        blocks in prop::collection::vec(1usize..=6, 3),
        seed in any::<u64>(),
    ) {
        let device = Device::flex().autodiff();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (b, c) = planes;
        let size: Vec<usize> = (0..3).map(|a| blocks[a] * factor[a]).collect();
        if three_d {
            let x = random(&mut rng, [b, c, size[0], size[1], size[2]], &device).require_grad();
            let ours = dacapo_kernels::max_pool(x.clone(), &factor);
            let probe = random(&mut rng, ours.dims(), &device);
            let g = (ours.clone() * probe.clone()).sum().backward();
            let ours_dx = x.grad(&g).unwrap();
            let x2 = x.clone().detach().require_grad();
            let t: Tensor<8> = x2.clone().reshape([b, c, blocks[0], factor[0], blocks[1], factor[1], blocks[2], factor[2]]);
            let theirs: Tensor<5> = t.max_dim(7).max_dim(5).max_dim(3).reshape([b, c, blocks[0], blocks[1], blocks[2]]);
            let g2 = (theirs.clone() * probe).sum().backward();
            prop_assert_eq!(rel_diff(ours.inner(), theirs.inner()), 0.0);
            prop_assert_eq!(rel_diff(ours_dx, x2.grad(&g2).unwrap()), 0.0);
        } else {
            let x = random(&mut rng, [b, c, size[1], size[2]], &device).require_grad();
            let f = [factor[1], factor[2]];
            let ours = dacapo_kernels::max_pool(x.clone(), &f);
            let probe = random(&mut rng, ours.dims(), &device);
            let g = (ours.clone() * probe.clone()).sum().backward();
            let ours_dx = x.grad(&g).unwrap();
            let x2 = x.clone().detach().require_grad();
            let theirs = max_pool2d(x2.clone(), MaxPoolOptions::new(f));
            let g2 = (theirs.clone() * probe).sum().backward();
            prop_assert_eq!(rel_diff(ours.inner(), theirs.inner()), 0.0);
            prop_assert_eq!(rel_diff(ours_dx, x2.grad(&g2).unwrap()), 0.0);
        }
    }
}

/// Values and gradients of a small conv → pool → upsample network, as bits.
fn network_bits() -> Vec<Vec<u32>> {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = random(&mut rng, [2, 3, 40, 36], &device);
    let w1 = random(&mut rng, [16, 3, 3, 3], &device);
    let w2 = random(&mut rng, [16, 8, 2, 2], &device);
    let b = random(&mut rng, [16], &device);
    let (x, w1, w2, b) = (
        x.autodiff().require_grad(),
        w1.autodiff().require_grad(),
        w2.autodiff().require_grad(),
        b.autodiff().require_grad(),
    );
    let h = dacapo_kernels::conv(x.clone(), w1.clone(), Some(b.clone()), 1, true);
    let h = dacapo_kernels::max_pool(h, &[2, 2]);
    let y = dacapo_kernels::conv_transpose(h, w2.clone(), None, true);
    let grads = y.clone().square().sum().backward();
    let bits = |t: TensorData| -> Vec<u32> {
        t.try_to_vec_as::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    vec![
        bits(y.into_data()),
        bits(x.grad(&grads).unwrap().into_data()),
        bits(w1.grad(&grads).unwrap().into_data()),
        bits(w2.grad(&grads).unwrap().into_data()),
        bits(b.grad(&grads).unwrap().into_data()),
    ]
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let in_pool = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(network_bits)
    };
    let one = in_pool(1);
    assert_eq!(one, in_pool(2));
    assert_eq!(one, in_pool(5));
}
