//! Device and precision choice: `Device::cuda_if_available()` unless the configuration pins one.

use anyhow::{bail, Result};
use tch::{Device, Kind};

use crate::config::Precision;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    Ok(match spec {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => bail!("runtime.device {other:?} is not auto, cpu, cuda or cuda:N"),
        },
    })
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
