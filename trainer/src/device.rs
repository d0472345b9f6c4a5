//! Device and precision choice: `Device::cuda_if_available()` unless the configuration pins one.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::config::Precision;

/// `runtime.device`: where the run executes. It (de)serialises as the strings `auto`, `cpu`,
/// `cuda` and `cuda:N`, so a spelling outside those fails when the config is parsed, before any
/// work starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceSpec {
    /// CUDA device 0 when libtorch sees one, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N (`cuda` alone is device 0).
    Cuda(usize),
}

/// A `runtime.device` that is not `auto`, `cpu`, `cuda` or `cuda:N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("runtime.device {0:?} is not auto, cpu, cuda or cuda:N")]
pub struct DeviceSpecError(String);

impl DeviceSpec {
    /// The libtorch device. `Auto` asks libtorch now, so the answer reflects the machine the
    /// run executes on, not the one that wrote the config.
    pub fn resolve(self) -> Device {
        match self {
            DeviceSpec::Auto => Device::cuda_if_available(),
            DeviceSpec::Cpu => Device::Cpu,
            DeviceSpec::Cuda(n) => Device::Cuda(n),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        Ok(match spec {
            "auto" => DeviceSpec::Auto,
            "cpu" => DeviceSpec::Cpu,
            "cuda" => DeviceSpec::Cuda(0),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => DeviceSpec::Cuda(n),
                None => return Err(DeviceSpecError(other.to_owned())),
            },
        })
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceSpecError;

    fn try_from(spec: String) -> Result<Self, Self::Error> {
        spec.parse()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cpu => f.write_str("cpu"),
            // Always with the index: the resolved config records which GPU ran.
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl From<DeviceSpec> for String {
    fn from(spec: DeviceSpec) -> Self {
        spec.to_string()
    }
}

/// The kind matmuls and convolutions run in: bf16 on CUDA by default, f32 otherwise.
pub fn compute_kind(precision: Precision, device: Device) -> Kind {
    match (precision, device) {
        (Precision::Bf16, _) => Kind::BFloat16,
        (Precision::Auto, Device::Cuda(_)) => Kind::BFloat16,
        _ => Kind::Float,
    }
}

/// A CUDA device that does not exist is a configuration error, not a crash deep in libtorch.
pub fn check_available(device: Device) -> Result<()> {
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count();
        if n as i64 >= count {
            bail!("runtime.device cuda:{n} requested but libtorch sees {count} CUDA device(s)");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_spelling_parses_and_writes_back() {
        for (text, spec, written) in [
            ("auto", DeviceSpec::Auto, "auto"),
            ("cpu", DeviceSpec::Cpu, "cpu"),
            ("cuda", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:0", DeviceSpec::Cuda(0), "cuda:0"),
            ("cuda:3", DeviceSpec::Cuda(3), "cuda:3"),
        ] {
            assert_eq!(text.parse::<DeviceSpec>(), Ok(spec), "{text}");
            assert_eq!(String::from(spec), written);
            assert_eq!(
                written.parse::<DeviceSpec>(),
                Ok(spec),
                "round trip of {text}"
            );
        }
        assert_eq!(DeviceSpec::Cpu.resolve(), Device::Cpu);
        assert_eq!(DeviceSpec::Cuda(2).resolve(), Device::Cuda(2));
    }

    #[test]
    fn other_spellings_are_refused_with_the_accepted_ones() {
        for bad in ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", ""] {
            let e = bad.parse::<DeviceSpec>().unwrap_err().to_string();
            assert_eq!(
                e,
                format!("runtime.device {bad:?} is not auto, cpu, cuda or cuda:N")
            );
        }
    }
}
