//! Backend and device selection: from the `backend` and `device` config keys (or `--backend`,
//! `--device`) to a burn `Device`.
//!
//! Each backend maps a [`DeviceSpec`] to one of its devices, and a device it does not have is
//! an error listing the devices it sees. The name of the chosen device is recorded with every
//! checkpoint.

use burn::tensor::Device;
use dacapo_core::RunConfig;
use dacapo_core::config::Backend;
use dacapo_core::device::DeviceSpec;

use crate::error::RuntimeError;

/// Whether `backend` was compiled into this build.
pub fn is_compiled(backend: Backend) -> bool {
    match backend {
        Backend::Flex => true,
        Backend::Wgpu => cfg!(feature = "wgpu"),
        Backend::Cuda => cfg!(feature = "cuda"),
        Backend::Tch => cfg!(feature = "tch"),
    }
}

/// The backends compiled into this build.
pub fn compiled() -> Vec<Backend> {
    Backend::ALL
        .into_iter()
        .filter(|b| is_compiled(*b))
        .collect()
}

/// Sets the number of CPU threads of the flex backend (and of libtorch's CPU device) and makes
/// the allocator keep freed activations for the next step
/// ([`dacapo_kernels::keep_freed_memory`]); must run before any tensor work.
///
/// On flex, results do not depend on the thread count (tested), so a run may resume with
/// another.
pub fn set_cpu_threads(threads: Option<usize>) {
    dacapo_kernels::keep_freed_memory();
    if let Some(n) = threads {
        // Fails only if the global pool already exists (e.g. set by an embedding program, or
        // by an earlier run in this process); it is then used as it is, which only matters
        // if its size differs.
        if rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .is_err()
            && rayon::current_num_threads() != n
        {
            tracing::warn!(
                "the CPU thread pool already runs {} threads; run.threads = {n} is ignored",
                rayon::current_num_threads()
            );
        }
        #[cfg(feature = "tch")]
        tch::set_num_threads(i32::try_from(n).unwrap_or(i32::MAX));
    }
}

/// The default device of `backend` (without autodiff), or an error naming the cargo feature
/// to enable.
pub fn device(backend: Backend) -> Result<Device, RuntimeError> {
    Ok(select(backend, DeviceSpec::Default)?.device)
}

/// A device chosen for a run.
#[derive(Debug, Clone)]
pub struct Chosen {
    /// The backend.
    pub backend: Backend,
    /// The burn device (without autodiff).
    pub device: Device,
    /// Its name as `run.device` writes it (`cpu`, `cuda:0`, `vulkan:1`), recorded with each
    /// checkpoint; wgpu's default device adds the adapter's name.
    pub name: String,
}

/// The device `spec` names on `backend`: an error naming the cargo feature when the backend
/// is not compiled in, and one listing the devices the backend sees when it has no such
/// device.
pub fn select(backend: Backend, spec: DeviceSpec) -> Result<Chosen, RuntimeError> {
    let (device, name) = match backend {
        Backend::Flex => select_flex(spec)?,
        Backend::Wgpu => wgpu::select(spec)?,
        Backend::Cuda => cuda::select(spec)?,
        Backend::Tch => tch_backend::select(spec)?,
    };
    Ok(Chosen {
        backend,
        device,
        name,
    })
}

/// Prepares computing for the run of `config`: its CPU threads ([`set_cpu_threads`]), then
/// the device of its `run.backend` and `run.device`, or of `backend` and `device` when given
/// (command-line overrides).
pub fn for_run(
    config: &RunConfig,
    backend: Option<Backend>,
    device: Option<DeviceSpec>,
) -> Result<Chosen, RuntimeError> {
    set_cpu_threads(config.run.threads);
    select(
        backend.unwrap_or(config.run.backend),
        device.unwrap_or(config.run.device),
    )
}

/// The device named `device` (as `run.device` writes it) on the backend named `backend`: for
/// programs configured by strings, such as benchmarks (`DACAPO_BENCH_BACKEND=tch
/// DACAPO_BENCH_DEVICE=cuda:0`).
pub fn select_by_name(backend: &str, device: &str) -> Result<Chosen, RuntimeError> {
    let backend: Backend = backend.parse().map_err(RuntimeError::UnknownDevice)?;
    let spec: DeviceSpec = device.parse().map_err(RuntimeError::UnknownDevice)?;
    select(backend, spec)
}

/// The devices `backend` sees on this machine, by the names `run.device` accepts (with the
/// adapter's name where the backend reports one); empty when it is not compiled in.
pub fn available(backend: Backend) -> Vec<String> {
    match backend {
        Backend::Flex => vec!["cpu".to_owned()],
        Backend::Wgpu => wgpu::available(),
        Backend::Cuda => cuda::available(),
        Backend::Tch => tch_backend::available(),
    }
}

fn select_flex(spec: DeviceSpec) -> Result<(Device, String), RuntimeError> {
    match spec {
        DeviceSpec::Default | DeviceSpec::Cpu => Ok((Device::flex(), "cpu".to_owned())),
        DeviceSpec::Cuda(_) | DeviceSpec::Vulkan(_) => Err(no_such_device(
            Backend::Flex,
            spec,
            "; flex runs on the CPU only: for an NVIDIA GPU use backend `tch` or `cuda`, for \
             other GPUs backend `wgpu`",
        )),
    }
}

/// The error for a device `backend` does not have, listing those it has.
fn no_such_device(backend: Backend, spec: DeviceSpec, hint: &str) -> RuntimeError {
    let seen = available(backend);
    RuntimeError::NoSuchDevice {
        backend: backend.name(),
        device: spec.to_string(),
        seen: if seen.is_empty() {
            "no device at all".to_owned()
        } else {
            seen.join(", ")
        },
        hint: hint.to_owned(),
    }
}

/// The `index`-th of `devices`, or the error for a device that does not exist.
#[cfg(any(feature = "wgpu", feature = "cuda", feature = "tch"))]
fn nth(
    backend: Backend,
    spec: DeviceSpec,
    devices: &[Device],
    index: usize,
    hint: &str,
) -> Result<Device, RuntimeError> {
    devices
        .get(index)
        .cloned()
        .ok_or_else(|| no_such_device(backend, spec, hint))
}

#[cfg(feature = "wgpu")]
mod wgpu {
    //! wgpu: the adapters wgpu lists (Vulkan on Linux), including CPU ones such as lavapipe.

    use burn::tensor::{Device, DeviceKind, DeviceType};

    use super::{Backend, DeviceSpec, RuntimeError, no_such_device, nth};

    const HINT: &str =
        "; without a GPU on Linux, Mesa's lavapipe is a CPU adapter (`cargo xtask setup --wgpu`)";

    fn adapters() -> Vec<Device> {
        Device::enumerate(DeviceType::Wgpu).into_vec()
    }

    /// The adapter's own name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    fn adapter_name(device: &Device) -> String {
        device
            .identity()
            .map_or_else(|| format!("{device:?}"), |id| id.name)
    }

    pub(super) fn available() -> Vec<String> {
        adapters()
            .iter()
            .enumerate()
            .map(|(i, d)| format!("vulkan:{i} ({})", adapter_name(d)))
            .collect()
    }

    pub(super) fn select(spec: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        let adapters = adapters();
        let (device, name) = match spec {
            DeviceSpec::Default if !adapters.is_empty() => {
                let device = Device::wgpu(DeviceKind::DefaultDevice);
                let name = format!("default ({})", adapter_name(&device));
                (device, name)
            }
            DeviceSpec::Cpu => {
                let device = Device::wgpu(DeviceKind::Cpu);
                if !adapters.contains(&device) {
                    return Err(no_such_device(Backend::Wgpu, spec, HINT));
                }
                (device, "cpu".to_owned())
            }
            DeviceSpec::Vulkan(i) => {
                let device = nth(Backend::Wgpu, spec, &adapters, i, HINT)?;
                let name = format!("vulkan:{i} ({})", adapter_name(&device));
                (device, name)
            }
            DeviceSpec::Default | DeviceSpec::Cuda(_) => {
                return Err(no_such_device(Backend::Wgpu, spec, HINT));
            }
        };
        Ok((device, name))
    }
}

#[cfg(not(feature = "wgpu"))]
mod wgpu {
    use burn::tensor::Device;

    use super::{DeviceSpec, RuntimeError};

    pub(super) fn available() -> Vec<String> {
        Vec::new()
    }

    pub(super) fn select(_: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        Err(RuntimeError::BackendNotCompiled {
            backend: "wgpu",
            hint: "; without a GPU on Linux it runs on Mesa's lavapipe (`cargo xtask setup --wgpu`)",
        })
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    //! CUDA through cubecl: NVIDIA GPUs only.

    use burn::tensor::{Device, DeviceType};

    use super::{Backend, DeviceSpec, RuntimeError, no_such_device, nth};

    const HINT: &str = "; on a machine without an NVIDIA GPU use backend `flex` or `tch`";

    fn gpus() -> Vec<Device> {
        Device::enumerate(DeviceType::Cuda).into_vec()
    }

    pub(super) fn available() -> Vec<String> {
        (0..gpus().len()).map(|i| format!("cuda:{i}")).collect()
    }

    pub(super) fn select(spec: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        let index = match spec {
            DeviceSpec::Default => 0,
            DeviceSpec::Cuda(i) => i,
            DeviceSpec::Cpu | DeviceSpec::Vulkan(_) => {
                return Err(no_such_device(Backend::Cuda, spec, HINT));
            }
        };
        let device = nth(Backend::Cuda, spec, &gpus(), index, HINT)?;
        Ok((device, format!("cuda:{index}")))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use burn::tensor::Device;

    use super::{DeviceSpec, RuntimeError};

    pub(super) fn available() -> Vec<String> {
        Vec::new()
    }

    pub(super) fn select(_: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        Err(RuntimeError::BackendNotCompiled {
            backend: "cuda",
            hint: "; its build downloads an LLVM bundle from GitHub (cubecl-llvm), so it needs \
                   internet access; on NVIDIA GPUs backend `tch` needs only PyPI",
        })
    }
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn marks tch deprecated; it stays opt-in for users with libtorch.
mod tch_backend {
    //! libtorch: its CPU, and the CUDA GPUs it sees.

    use burn::tensor::{Device, DeviceType};

    use super::{Backend, DeviceSpec, RuntimeError, no_such_device, nth};

    const HINT: &str = "; libtorch sees the GPUs its CUDA driver reports (`nvidia-smi`)";

    fn gpus() -> Vec<Device> {
        // burn lists libtorch's CUDA devices, in index order.
        Device::enumerate(DeviceType::LibTorch).into_vec()
    }

    pub(super) fn available() -> Vec<String> {
        std::iter::once("cpu".to_owned())
            .chain((0..gpus().len()).map(|i| format!("cuda:{i}")))
            .collect()
    }

    pub(super) fn select(spec: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        let gpus = gpus();
        let index = match spec {
            // The GPU where there is one, as PyTorch users write `cuda if available`.
            DeviceSpec::Default if !gpus.is_empty() => 0,
            DeviceSpec::Default | DeviceSpec::Cpu => {
                return Ok((Device::libtorch(), "cpu".to_owned()));
            }
            DeviceSpec::Cuda(i) => i,
            DeviceSpec::Vulkan(_) => return Err(no_such_device(Backend::Tch, spec, HINT)),
        };
        nth(Backend::Tch, spec, &gpus, index, HINT)?;
        Ok((Device::libtorch_cuda(index), format!("cuda:{index}")))
    }
}

#[cfg(not(feature = "tch"))]
mod tch_backend {
    use burn::tensor::Device;

    use super::{DeviceSpec, RuntimeError};

    pub(super) fn available() -> Vec<String> {
        Vec::new()
    }

    pub(super) fn select(_: DeviceSpec) -> Result<(Device, String), RuntimeError> {
        Err(RuntimeError::BackendNotCompiled {
            backend: "tch",
            hint: "; `cargo xtask setup --tch` installs libtorch (PyTorch from PyPI) and builds \
                   with it",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_compiled() {
        assert!(is_compiled(Backend::Flex));
        assert!(device(Backend::Flex).is_ok());
        assert!(compiled().contains(&Backend::Flex));
        assert_eq!(available(Backend::Flex), ["cpu"]);
    }

    #[test]
    fn missing_backend_names_its_feature() {
        for b in Backend::ALL.into_iter().filter(|b| !is_compiled(*b)) {
            let err = device(b).unwrap_err().to_string();
            assert!(err.contains(&format!("--features {}", b.name())), "{err}");
            assert!(available(b).is_empty());
        }
    }

    #[test]
    fn flex_runs_on_the_cpu_only() {
        for spec in [DeviceSpec::Default, DeviceSpec::Cpu] {
            let chosen = select(Backend::Flex, spec).unwrap();
            assert_eq!(chosen.name, "cpu");
            assert_eq!(chosen.device, Device::flex());
        }
        for spec in [DeviceSpec::Cuda(0), DeviceSpec::Vulkan(1)] {
            let err = select(Backend::Flex, spec).unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{spec}`")) && err.contains("it sees: cpu"),
                "{err}"
            );
            assert!(err.contains("backend `tch`"), "{err}");
        }
    }

    #[test]
    fn devices_are_chosen_by_name() {
        let chosen = select_by_name("flex", "cpu").unwrap();
        assert_eq!(chosen.device, Device::flex());
        let err = select_by_name("flex", "gpu").unwrap_err().to_string();
        assert!(err.contains("\"gpu\"") && err.contains("cuda:N"), "{err}");
        let err = select_by_name("metal", "cpu").unwrap_err().to_string();
        assert!(err.contains("\"metal\"") && err.contains("tch"), "{err}");
    }
}
