//! Which backend a command runs on: `--device auto|cpu|cuda` and, on the
//! GPU, `--precision f32|bf16`.

use crate::cuda;
use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one is present, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// Storage type of activations and working weights on the GPU (the CPU is
/// always f32; the optimizer's master weights are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    F32,
    Bf16,
}

/// Where the work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(DType),
}

impl Device {
    /// Resolves the choice; `auto` falls back to the CPU when no GPU can be
    /// opened. Returns the device and a line saying which it took and why.
    pub fn select(choice: DeviceChoice, precision: Precision) -> Result<(Device, String)> {
        let dtype = match precision {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::Bf16,
        };
        match (choice, cuda::gpu()) {
            (DeviceChoice::Cpu, _) => Ok((Device::Cpu, "device: cpu".into())),
            (_, Ok(gpu)) => Ok((
                Device::Cuda(dtype),
                format!("device: cuda, {} ({precision:?})", gpu.description),
            )),
            (DeviceChoice::Auto, Err(why)) => Ok((Device::Cpu, format!("device: cpu ({why})"))),
            (DeviceChoice::Cuda, Err(why)) => Err(Error(format!("--device cuda: {why}"))),
        }
    }

    pub fn is_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }

    /// A host tensor on this device (moved, not copied, on the CPU).
    pub fn put(self, t: Tensor) -> Result<Tensor> {
        match self {
            Device::Cpu => t.into_host(),
            Device::Cuda(dtype) => t.to_cuda(dtype),
        }
    }

    /// Waits for the device and reports any failure it met.
    pub fn synchronize(self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(_) => cuda::gpu()?.synchronize(),
        }
    }
}
