//! Backend selection: from the `backend` config key (or `--backend`) to a burn `Device`.

use burn::tensor::Device;
use dacapo_core::config::Backend;

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

/// Sets the number of CPU threads of the flex backend and makes the allocator keep freed
/// activations for the next step ([`dacapo_kernels::keep_freed_memory`]); must run before
/// any tensor work.
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
    }
}

/// The device of `backend` (without autodiff), or an error naming the cargo feature to enable.
pub fn device(backend: Backend) -> Result<Device, RuntimeError> {
    match backend {
        Backend::Flex => Ok(Device::flex()),
        Backend::Wgpu => wgpu_device(),
        Backend::Cuda => cuda_device(),
        Backend::Tch => tch_device(),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, RuntimeError> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, RuntimeError> {
    Err(RuntimeError::BackendNotCompiled {
        backend: "wgpu",
        hint: "; without a GPU on Linux it runs on Mesa's llvmpipe (`cargo xtask setup --wgpu`)",
    })
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device, RuntimeError> {
    Ok(Device::cuda(0))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device, RuntimeError> {
    Err(RuntimeError::BackendNotCompiled {
        backend: "cuda",
        hint: "; its build downloads an LLVM bundle, so it needs internet access",
    })
}

#[cfg(feature = "tch")]
#[allow(deprecated)] // burn marks tch deprecated; it stays opt-in for users with libtorch.
fn tch_device() -> Result<Device, RuntimeError> {
    Ok(Device::libtorch())
}

#[cfg(not(feature = "tch"))]
fn tch_device() -> Result<Device, RuntimeError> {
    Err(RuntimeError::BackendNotCompiled {
        backend: "tch",
        hint: "; it needs a local libtorch: set LIBTORCH or LIBTORCH_USE_PYTORCH=1",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_is_always_compiled() {
        assert!(is_compiled(Backend::Flex));
        assert!(device(Backend::Flex).is_ok());
        assert!(compiled().contains(&Backend::Flex));
    }

    #[test]
    fn missing_backend_names_its_feature() {
        for b in Backend::ALL.into_iter().filter(|b| !is_compiled(*b)) {
            let err = device(b).unwrap_err().to_string();
            assert!(err.contains(&format!("--features {}", b.name())), "{err}");
        }
    }
}
