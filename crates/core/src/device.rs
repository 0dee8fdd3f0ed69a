//! `run.device`: which device of the compute backend a run uses, as written in configs and
//! on the command line (`"cpu"`, `"cuda:1"`, `"vulkan:0"`, ...).
//!
//! This is only the user's choice, parsed; which devices exist and how each backend maps the
//! choice to a burn device is the runtime's business (`dacapo_runtime::backend`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A device of the compute backend, as named in `run.device` or `--device`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// `"default"`: the backend's preferred device (its GPU where it has one).
    #[default]
    Default,
    /// `"cpu"`: the CPU (flex, libtorch's CPU, or wgpu's CPU adapter such as lavapipe).
    Cpu,
    /// `"cuda"` or `"cuda:N"`: NVIDIA GPU `N` (0 when not given) through CUDA.
    Cuda(usize),
    /// `"vulkan:N"`: the `N`-th adapter wgpu lists (Vulkan on Linux).
    Vulkan(usize),
}

impl DeviceSpec {
    /// The forms accepted by [`DeviceSpec::from_str`], for error messages.
    pub const FORMS: &'static str = "default, cpu, cuda, cuda:N, vulkan:N";
}

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "unknown device {s:?}: expected one of {} (N a device index)",
                Self::FORMS
            )
        };
        let (kind, index) = match s.split_once(':') {
            Some((kind, index)) => {
                let index = index.parse::<usize>().map_err(|_| bad())?;
                (kind, Some(index))
            }
            None => (s, None),
        };
        match (kind, index) {
            ("default", None) => Ok(DeviceSpec::Default),
            ("cpu", None) => Ok(DeviceSpec::Cpu),
            ("cuda", index) => Ok(DeviceSpec::Cuda(index.unwrap_or(0))),
            ("vulkan", Some(index)) => Ok(DeviceSpec::Vulkan(index)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Default => f.write_str("default"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::Vulkan(i) => write!(f, "vulkan:{i}"),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(value: DeviceSpec) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for (text, spec) in [
            ("default", DeviceSpec::Default),
            ("cpu", DeviceSpec::Cpu),
            ("cuda:0", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("vulkan:1", DeviceSpec::Vulkan(1)),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec));
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
    }

    #[test]
    fn bad_devices_name_the_accepted_forms() {
        for text in [
            "gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "vulkan", "", "CUDA:0",
        ] {
            let err = text.parse::<DeviceSpec>().unwrap_err();
            assert!(err.contains(DeviceSpec::FORMS), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
    }
}
