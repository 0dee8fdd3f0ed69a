//! Per-layer timings of the WORKLOADS.md U-Nets (`train_step_2d` at 256², `train_step_3d` at
//! 64³): forward, input gradient and weight gradient of every convolution, the upsamplings
//! and the poolings, with GFLOP/s. One JSON line per layer and pass; `cargo bench -p
//! dacapo-kernels --bench layers [2d|3d]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use dacapo_kernels::cpu::conv::{self, ConvShape};
use dacapo_kernels::cpu::conv_transpose::{self, UpShape};
use dacapo_kernels::cpu::pool::{self, PoolShape};

/// Median seconds of `f` over a few runs after one warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..5)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[2]
}

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn report(net: &str, layer: &str, pass: &str, seconds: f64, macs: f64) {
    println!(
        "{{\"workload\":\"layer_{net}\",\"layer\":\"{layer}\",\"pass\":\"{pass}\",\"seconds\":{seconds:.6},\"gflops\":{:.1}}}",
        2.0 * macs / seconds / 1e9
    );
}

/// Times the three passes of one convolution; returns their total seconds.
fn conv_layer(net: &str, name: &str, s: ConvShape) -> f64 {
    let [od, oh, ow] = s.output().unwrap();
    let out = s.batch * s.cout * od * oh * ow;
    let kvol: usize = s.kernel.iter().product();
    let macs = (out * s.cin * kvol) as f64;
    let x = values(s.batch * s.cin * s.input.iter().product::<usize>());
    let w = values(s.cout * s.cin * kvol);
    let b = values(s.cout);
    let dy = values(out);
    let f = time(|| drop(conv::forward(&s, &x, &w, Some(&b), true)));
    let dx = time(|| drop(conv::input_grad(&s, &w, &dy)));
    let dw = time(|| drop(conv::weight_grad(&s, &x, &dy)));
    report(net, name, "forward", f, macs);
    report(net, name, "input_grad", dx, macs);
    report(net, name, "weight_grad", dw, macs);
    f + dx + dw
}

fn up_layer(net: &str, name: &str, s: UpShape) -> f64 {
    let p: usize = s.input.iter().product();
    let taps: usize = s.factor.iter().product();
    let macs = (s.batch * p * s.cin * s.cout * taps) as f64;
    let x = values(s.batch * s.cin * p);
    let w = values(s.cin * s.cout * taps);
    let dy = values(s.batch * s.cout * p * taps);
    let f = time(|| drop(conv_transpose::forward(&s, &x, &w, None, true)));
    let bw = time(|| drop(conv_transpose::backward(&s, &x, &w, &dy, true)));
    report(net, name, "forward", f, macs);
    report(net, name, "backward", bw, 2.0 * macs);
    f + bw
}

fn pool_layer(net: &str, name: &str, s: PoolShape) -> f64 {
    let x = values(s.planes * s.input.iter().product::<usize>());
    let (y, arg) = pool::forward(&s, &x);
    let f = time(|| drop(pool::forward(&s, &x)));
    let bw = time(|| drop(pool::backward(&s, &arg, &y)));
    report(net, name, "forward", f, 0.0);
    report(net, name, "backward", bw, 0.0);
    f + bw
}

/// The WORKLOADS.md U-Net (fmaps 12, factor 2, two downsamplings, valid 3×3(×3) convs) on one
/// image of `size` per axis.
fn unet(net: &str, dims: usize, size: usize) {
    let k = if dims == 2 { [1, 3, 3] } else { [3, 3, 3] };
    let f = if dims == 2 { [1, 2, 2] } else { [2, 2, 2] };
    let cube = |s: usize| if dims == 2 { [1, s, s] } else { [s, s, s] };
    let conv = |cin, cout, s| ConvShape {
        batch: 1,
        cin,
        cout,
        input: cube(s),
        kernel: k,
        pad: [0; 3],
    };
    let mut total = 0.0;
    let mut s = size;
    let mut chans = 1;
    let mut skips = Vec::new();
    for level in 0..3 {
        let fm = 12 << level;
        total += conv_layer(net, &format!("down{level}a"), conv(chans, fm, s));
        total += conv_layer(net, &format!("down{level}b"), conv(fm, fm, s - 2));
        s -= 4;
        chans = fm;
        skips.push(s);
        if level < 2 {
            let planes = fm;
            total += pool_layer(
                net,
                &format!("pool{level}"),
                PoolShape {
                    planes,
                    input: cube(s),
                    factor: f,
                },
            );
            s /= 2;
        }
    }
    for level in (0..2).rev() {
        let fm = 12 << level;
        let up = UpShape {
            batch: 1,
            cin: chans,
            cout: fm,
            input: cube(s),
            factor: f,
        };
        total += up_layer(net, &format!("up{level}"), up);
        s *= 2;
        total += conv_layer(net, &format!("up{level}a"), conv(2 * fm, fm, s));
        total += conv_layer(net, &format!("up{level}b"), conv(fm, fm, s - 2));
        s -= 4;
        chans = fm;
    }
    let head = ConvShape {
        batch: 1,
        cin: chans,
        cout: 1,
        input: cube(s),
        kernel: [1; 3],
        pad: [0; 3],
    };
    total += conv_layer(net, "head", head);
    println!(
        "{{\"workload\":\"layers_{net}_total\",\"seconds\":{total:.5},\"threads\":{}}}",
        rayon::current_num_threads()
    );
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |n: &str| filter.is_empty() || filter.iter().any(|f| n.contains(f.as_str()));
    if want("2d") {
        unet("2d", 2, 256);
    }
    if want("3d") {
        unet("3d", 3, 64);
    }
}
