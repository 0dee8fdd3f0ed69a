//! Memory estimates of a U-Net, checked against the memory this process may use before
//! anything is allocated, so a network too large for the machine is refused with the numbers
//! instead of aborting the process in the allocator.
//!
//! The estimate is a lower bound: parameters with their gradients and Adam moments, and the
//! outputs of every convolution, pooling and upsampling layer (kept for the backward pass,
//! with gradients of the same size). The real peak is higher (workspace buffers, the
//! allocator's slack), so a run refused here could never have run.

use std::path::Path;

use dacapo_models::{Padding, UNetConfig};

use crate::error::RuntimeError;

/// Bytes of one `f32`.
const F32: u64 = 4;

/// What a network needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Parameters, with gradients and optimizer state when training.
    pub parameters: u64,
    /// Activations of one forward (and backward, when training) pass.
    pub activations: u64,
}

impl MemoryEstimate {
    /// The sum of both parts.
    pub fn total(&self) -> u64 {
        self.parameters.saturating_add(self.activations)
    }
}

/// Whether the estimate is for training (activations kept for the backward pass, gradients,
/// Adam moments) or for prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Forward, backward and an Adam step.
    Training,
    /// Forward only.
    Prediction,
}

/// The estimate of `net` on `batch` inputs of spatial shape `input`.
pub fn estimate(net: &UNetConfig, input: &[usize], batch: usize, pass: Pass) -> MemoryEstimate {
    let weights = parameter_count(net).saturating_mul(F32);
    let layers = layer_outputs(net, input);
    let batch = batch as u64;
    let (parameters, activations) = match pass {
        // Weights, gradients and two Adam moments; every layer output and its gradient.
        Pass::Training => (
            weights.saturating_mul(4),
            layers
                .iter()
                .sum::<u64>()
                .saturating_mul(2 * F32)
                .saturating_mul(batch),
        ),
        // Only the largest layer output and its input must exist at once.
        Pass::Prediction => {
            let mut sorted = layers;
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let largest: u64 = sorted.iter().take(2).sum();
            (weights, largest.saturating_mul(F32).saturating_mul(batch))
        }
    };
    MemoryEstimate {
        parameters,
        activations,
    }
}

/// Refuses `estimate` if it exceeds the memory available to this process ([`available`]);
/// `what` says what it is for ("training batches of 2 × [132, 132]").
pub fn check(estimate: MemoryEstimate, what: &str) -> Result<(), RuntimeError> {
    let Some(available) = available() else {
        return Ok(());
    };
    if estimate.total() <= available {
        return Ok(());
    }
    Err(RuntimeError::TooLarge {
        what: what.to_owned(),
        needed: gib(estimate.total()),
        parameters: gib(estimate.parameters),
        activations: gib(estimate.activations),
        available: gib(available),
    })
}

/// Bytes as GiB with two decimals.
fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// The memory this process may still use: `MemAvailable` of `/proc/meminfo`, or the
/// cgroup's limit minus its usage (a SLURM job's allocation) if that is smaller; `None` where
/// neither can be read (then nothing is refused).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_available(&t));
    let cgroup = cgroup_headroom(Path::new("/sys/fs/cgroup"));
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo` text, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The cgroup v2 limit minus the current usage under `root`, if a limit is set.
fn cgroup_headroom(root: &Path) -> Option<u64> {
    let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Feature maps of `level` (the top is 0).
fn fmaps(net: &UNetConfig, level: usize) -> u64 {
    (net.num_fmaps as u64).saturating_mul((net.fmap_inc_factor as u64).saturating_pow(level as u32))
}

/// Weights and biases of the network (transposed upsampling counted as the smaller 1×1 form:
/// a lower bound either way).
fn parameter_count(net: &UNetConfig) -> u64 {
    let k = (net.kernel_size as u64).saturating_pow(net.dims as u32);
    let conv = |cin: u64, cout: u64, k: u64| cin.saturating_mul(cout).saturating_mul(k) + cout;
    let pass = |cin: u64, cout: u64| {
        let rest = (net.convs_per_level as u64).saturating_sub(1);
        conv(cin, cout, k).saturating_add(rest.saturating_mul(conv(cout, cout, k)))
    };
    let levels = net.downsample_factors.len() + 1;
    let mut total = 0u64;
    for level in 0..levels {
        let cin = if level == 0 {
            net.in_channels as u64
        } else {
            fmaps(net, level - 1)
        };
        total = total.saturating_add(pass(cin, fmaps(net, level)));
    }
    for level in 0..levels - 1 {
        let up = fmaps(net, level);
        total = total.saturating_add(conv(fmaps(net, level + 1), up, 1));
        total = total.saturating_add(pass(fmaps(net, level) + up, fmaps(net, level)));
    }
    total
}

/// Elements of each layer output of one sample, encoder then decoder.
fn layer_outputs(net: &UNetConfig, input: &[usize]) -> Vec<u64> {
    let crop = match net.padding {
        Padding::Valid => net.kernel_size.saturating_sub(1),
        Padding::Same => 0,
    };
    let volume = |shape: &[usize]| shape.iter().map(|&s| s as u64).product::<u64>();
    let mut shape = input.to_vec();
    let mut out = Vec::new();
    let mut skips = Vec::new();
    let levels = net.downsample_factors.len() + 1;
    for level in 0..levels {
        for _ in 0..net.convs_per_level {
            shape.iter_mut().for_each(|s| *s = s.saturating_sub(crop));
            out.push(volume(&shape).saturating_mul(fmaps(net, level)));
        }
        if let Some(factors) = net.downsample_factors.get(level) {
            skips.push(shape.clone());
            shape = shape
                .iter()
                .zip(factors)
                .map(|(&s, &f)| s / f.max(1))
                .collect();
            out.push(volume(&shape).saturating_mul(fmaps(net, level)));
        }
    }
    for level in (0..levels - 1).rev() {
        let factors = &net.downsample_factors[level];
        shape = shape.iter().zip(factors).map(|(&s, &f)| s * f).collect();
        // The upsampled tensor and its concatenation with the skip connection.
        let up = volume(&shape).saturating_mul(fmaps(net, level));
        out.push(up);
        out.push(up.saturating_mul(2));
        for _ in 0..net.convs_per_level {
            shape.iter_mut().for_each(|s| *s = s.saturating_sub(crop));
            out.push(volume(&shape).saturating_mul(fmaps(net, level)));
        }
        let _ = skips.pop();
    }
    out.push(volume(&shape).saturating_mul(net.out_channels as u64));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn net(fmaps: usize) -> UNetConfig {
        UNetConfig::new(2, fmaps, 2, vec![vec![2, 2], vec![2, 2]])
    }

    #[test]
    fn parameters_match_the_built_network() {
        // The lower bound counts transposed convolutions as 1×1: for 2×2 kernels the real
        // count is at most four times that part, so the bound is within a small factor.
        let config = net(12);
        let device = burn::tensor::Device::flex();
        let real = config.init(1, &device).unwrap().num_parameters() as u64;
        let estimated = parameter_count(&config);
        assert!(estimated <= real, "{estimated} > {real}");
        assert!(estimated * 2 > real, "{estimated} is far below {real}");
    }

    #[test]
    fn activations_grow_with_batch_and_input() {
        let config = net(12);
        let small = estimate(&config, &[132, 132], 1, Pass::Training);
        let batch = estimate(&config, &[132, 132], 4, Pass::Training);
        assert_eq!(batch.activations, 4 * small.activations);
        assert_eq!(batch.parameters, small.parameters);
        let predict = estimate(&config, &[132, 132], 1, Pass::Prediction);
        assert!(predict.activations < small.activations / 4);
        // 12 fmaps on 132²: the first conv output alone is 12 × 130² floats.
        assert!(small.activations > 12 * 130 * 130 * 4 * 2);
    }

    #[test]
    fn a_network_larger_than_memory_is_refused_with_the_numbers() {
        let huge = estimate(&net(4096), &[4096, 4096], 64, Pass::Training);
        let err = check(huge, "training batches of 64 × [4096, 4096]").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("GiB"), "{text}");
        assert!(text.contains("64 × [4096, 4096]"), "{text}");
        assert!(check(estimate(&net(4), &[44, 44], 1, Pass::Training), "tiny").is_ok());
    }

    #[test]
    fn meminfo_and_cgroup_limits_are_read() {
        let text = "MemTotal: 100 kB\nMemAvailable:    2048 kB\n";
        assert_eq!(mem_available(text), Some(2048 * 1024));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_headroom(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.path().join("memory.current"), "10\n").unwrap();
        assert_eq!(cgroup_headroom(dir.path()), None);
        std::fs::write(dir.path().join("memory.max"), "1000\n").unwrap();
        assert_eq!(cgroup_headroom(dir.path()), Some(990));
    }
}
