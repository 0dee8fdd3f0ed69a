//! Workload `postprocess`: post-processing time per parameter set of a 512² and a 256³
//! prediction (128² and 64³ with `DACAPO_BENCH_QUICK=1`), for the mutex watershed and the
//! watershed of affinities (offsets 1, 3 and 9 voxels along each axis in 2D; 1 and 3 in 3D)
//! and the thresholded distance, each without and with minimum segment sizes.
//!
//! The predictions are synthetic: cells on a jittered grid (about 16 voxels apart) separated
//! by one-voxel membranes, their affinities or tanh distances, plus noise. One JSON line per
//! parameter set of the middle swept value: `seconds` is that parameter set's own work
//! (segmentation + size filter); `prepare_ms` is the work all parameter sets share once.

use std::time::Instant;

use dacapo_ndimage::distance_transform_edt;
use dacapo_validator::postprocess::{PostProcessor, Sweep};
use ndarray::{ArrayD, IxDyn};

/// Cell spacing of the synthetic images, in voxels.
const SPACING: usize = 16;

/// A deterministic hash of `(seed, i)` as a uniform value in [0, 1).
fn uniform(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Cells of a jittered grid (Voronoi regions of one random point per `SPACING`-cube), with
/// voxels whose `+1` neighbour along an axis is in another cell set to 0 (membrane).
fn cells(shape: &[usize]) -> ArrayD<u64> {
    let dims = shape.len();
    let grid: Vec<usize> = shape.iter().map(|&s| s.div_ceil(SPACING)).collect();
    let cell_count: usize = grid.iter().product();
    let point = |c: usize, a: usize| -> f64 {
        let mut rest = c;
        let mut coord = 0;
        for b in (0..dims).rev() {
            if b == a {
                coord = rest % grid[b];
            }
            rest /= grid[b];
        }
        (coord as f64 + uniform(c as u64, a as u64)) * SPACING as f64
    };
    let points: Vec<Vec<f64>> = (0..cell_count)
        .map(|c| (0..dims).map(|a| point(c, a)).collect())
        .collect();
    let nearest = ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let home: Vec<isize> = (0..dims).map(|a| (ix[a] / SPACING) as isize).collect();
        let mut best = (f64::INFINITY, 0u64);
        for code in 0..3usize.pow(dims as u32) {
            let mut c = 0usize;
            let mut inside = true;
            let mut k = code;
            for a in 0..dims {
                let g = home[a] + (k % 3) as isize - 1;
                k /= 3;
                inside &= g >= 0 && (g as usize) < grid[a];
                c = c * grid[a] + g.max(0) as usize;
            }
            if inside {
                let d: f64 = (0..dims)
                    .map(|a| (points[c][a] - ix[a] as f64).powi(2))
                    .sum();
                if d < best.0 {
                    best = (d, c as u64 + 1);
                }
            }
        }
        best.1
    });
    ArrayD::from_shape_fn(IxDyn(shape), |ix| {
        let l = nearest[&ix];
        let mut next = ix.clone();
        let boundary = (0..dims).any(|a| {
            next[a] += 1;
            let differs = next[a] < shape[a] && nearest[&next] != l;
            next[a] -= 1;
            differs
        });
        if boundary { 0 } else { l }
    })
}

/// Offsets 1, 3 (and 9 in 2D) voxels along each axis.
fn offsets(dims: usize) -> Vec<Vec<isize>> {
    let steps: &[isize] = if dims == 2 { &[1, 3, 9] } else { &[1, 3] };
    steps
        .iter()
        .flat_map(|&s| {
            (0..dims).map(move |a| (0..dims).map(|b| if a == b { s } else { 0 }).collect())
        })
        .collect()
}

/// Affinities of `labels`: sigmoid of ±3 (same cell / not) plus uniform noise in ±2.
fn affinities(labels: &ArrayD<u64>, offsets: &[Vec<isize>]) -> ArrayD<f32> {
    let shape = labels.shape().to_vec();
    let mut full = vec![offsets.len()];
    full.extend(&shape);
    let mut i = 0u64;
    ArrayD::from_shape_fn(IxDyn(&full), |ix| {
        i += 1;
        let o = &offsets[ix[0]];
        let p: Vec<usize> = (0..shape.len()).map(|a| ix[a + 1]).collect();
        let q: Vec<isize> = p.iter().zip(o).map(|(&x, &d)| x as isize + d).collect();
        if q.iter()
            .zip(&shape)
            .any(|(&x, &n)| x < 0 || x as usize >= n)
        {
            return 0.5;
        }
        let q: Vec<usize> = q.iter().map(|&x| x as usize).collect();
        let (a, b) = (labels[p.as_slice()], labels[q.as_slice()]);
        let logit = if a == b && a != 0 { 3.0 } else { -3.0 } + 4.0 * (uniform(1, i) - 0.5);
        (1.0 / (1.0 + (-logit).exp())) as f32
    })
}

/// `tanh(signed distance / 5)` of `labels` plus uniform noise in ±0.5, as `(1, spatial...)`.
fn distance(labels: &ArrayD<u64>) -> ArrayD<f32> {
    let ones = vec![1.0; labels.ndim()];
    let inside = labels.mapv(|l| l != 0);
    let d_in = distance_transform_edt(inside.view(), &ones);
    let d_out = distance_transform_edt(inside.mapv(|m| !m).view(), &ones);
    let mut i = 0u64;
    let signed = ndarray::Zip::from(&d_in).and(&d_out).map_collect(|&a, &b| {
        i += 1;
        ((a - b) / 5.0).tanh() as f32 + (uniform(2, i) - 0.5) as f32
    });
    signed.insert_axis(ndarray::Axis(0))
}

/// Times the parameter sets of the middle swept value of `pp` on `prediction`.
fn measure(name: &str, pp: &PostProcessor, prediction: &ArrayD<f32>) {
    let shape = &prediction.shape()[1..];
    let n: usize = shape.iter().product();
    let start = Instant::now();
    let prepared = pp.prepare(prediction.view()).unwrap();
    let prepare_ms = start.elapsed().as_secs_f64() * 1e3;
    let parameters = pp.parameters();
    let sweeps: Vec<Sweep> = parameters.iter().fold(Vec::new(), |mut v, p| {
        if !v.contains(&p.sweep) {
            v.push(p.sweep);
        }
        v
    });
    let sweep = sweeps[sweeps.len() / 2];
    let start = Instant::now();
    let segmentation = prepared.segment(&sweep).unwrap();
    let segment_ms = start.elapsed().as_secs_f64() * 1e3;
    for p in parameters.iter().filter(|p| p.sweep == sweep) {
        let start = Instant::now();
        let out = prepared
            .without_small(segmentation.clone(), p.min_size)
            .unwrap();
        let filter_ms = start.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(out);
        let seconds = (segment_ms + filter_ms) / 1e3;
        println!(
            "{{\"workload\":\"postprocess\",\"n\":{n},\"post_process\":\"{name}\",\
             \"parameter\":\"{}\",\"seconds\":{seconds:.3},\"per_op_ms\":{:.1},\
             \"segment_ms\":{segment_ms:.1},\"filter_ms\":{filter_ms:.1},\
             \"prepare_ms\":{prepare_ms:.1},\"parameter_sets\":{},\"shape\":{shape:?},\
             \"threads\":{}}}",
            p.id(),
            seconds * 1e3,
            parameters.len(),
            rayon::current_num_threads()
        );
    }
}

/// Runs the workload.
pub fn run(quick: bool) {
    let sizes: [(usize, usize); 2] = if quick {
        [(2, 128), (3, 64)]
    } else {
        [(2, 512), (3, 256)]
    };
    for (dims, edge) in sizes {
        let labels = cells(&vec![edge; dims]);
        let offsets = offsets(dims);
        let affs = affinities(&labels, &offsets);
        let min_sizes = vec![0, 25, 100];
        let mws = PostProcessor::Affinities {
            offsets: offsets.clone(),
            biases: vec![0.1, 0.25, 0.5, 0.75, 0.9],
            min_sizes: min_sizes.clone(),
        };
        measure("mws", &mws, &affs);
        let watershed = PostProcessor::Watershed {
            offsets,
            thresholds: vec![0.1, 0.25, 0.5, 0.75, 0.9],
            min_sizes: min_sizes.clone(),
        };
        measure("watershed", &watershed, &affs);
        drop(affs);
        let pp = PostProcessor::Distance {
            thresholds: vec![-0.5, -0.25, 0.0, 0.25, 0.5],
            min_sizes,
        };
        measure("distance", &pp, &distance(&labels));
    }
}
