//! Which backend a command runs on: `--device auto|cpu|cuda`, and
//! `--precision f32|bf16` (the GPU's storage type; on the CPU, the operands
//! of its matrix products).

use crate::cpu::gemm::Kernel;
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

/// Storage type of activations and working weights on the GPU; on the CPU
/// (whose tensors are always f32), the type of its matrix products'
/// operands. The optimizer's master weights are always f32.
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
    /// `precision` None is bf16 on the GPU, f32 on the CPU.
    pub fn select(choice: DeviceChoice, precision: Option<Precision>) -> Result<(Device, String)> {
        let gpu = match choice {
            DeviceChoice::Cpu => Err(Error("--device cpu".into())),
            _ => cuda::gpu(),
        };
        match (choice, gpu) {
            (_, Ok(gpu)) => {
                let precision = precision.unwrap_or(Precision::Bf16);
                let dtype = match precision {
                    Precision::F32 => DType::F32,
                    Precision::Bf16 => DType::Bf16,
                };
                let line = format!("device: cuda, {} ({precision:?})", gpu.description);
                Ok((Device::Cuda(dtype), line))
            }
            (DeviceChoice::Cuda, Err(why)) => Err(Error(format!("--device cuda: {why}"))),
            (_, Err(why)) => {
                let bf16 = precision == Some(Precision::Bf16);
                Kernel::use_bf16(bf16).map_err(|e| Error(format!("--precision bf16: {e}")))?;
                let products = if bf16 { ", bf16 products" } else { "" };
                let line = match choice {
                    DeviceChoice::Cpu => format!("device: cpu{products}"),
                    _ => format!("device: cpu{products} ({why})"),
                };
                Ok((Device::Cpu, line))
            }
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
