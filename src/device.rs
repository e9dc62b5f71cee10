//! Which backend a command runs on: `--device auto|cpu|cuda`, and
//! `--precision f32|bf16` (the GPU's storage type; on the CPU, the operands
//! of its matrix products); and how tensors are copied and moved between
//! the host and the device, so that `tensor` names no backend.

use crate::cpu::gemm::Kernel;
use crate::cuda;
pub use crate::cuda::memory::DeviceBuffer;
use crate::error::{Error, Result};
use crate::tensor::{DType, Storage, Tensor};

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

impl Clone for Tensor {
    /// A copy; for a device tensor, a device-to-device copy on the stream.
    fn clone(&self) -> Tensor {
        match self.storage() {
            Storage::Cpu(v) => Tensor::from_vec(self.shape(), v.clone()),
            Storage::Cuda { buf, dtype } => {
                let out = Tensor::empty_cuda(self.shape(), *dtype);
                cuda::elementwise::copy(buf.ptr(), out.device_ptr(), self.numel() * dtype.size());
                out
            }
        }
    }
}

impl Tensor {
    /// `full` on the backend (and with the type) of `like`.
    pub fn full_as(shape: &[usize], value: f32, like: &Tensor) -> Tensor {
        if like.is_cuda() {
            Tensor::full_cuda(shape, value, like.dtype())
        } else {
            Tensor::full(shape, value)
        }
    }

    /// No NaN or infinity (a device tensor is copied back to check: this
    /// is for anomaly detection, not for hot loops).
    pub fn all_finite(&self) -> bool {
        match self.storage() {
            Storage::Cpu(v) => v.iter().all(|x| x.is_finite()),
            Storage::Cuda { .. } => self
                .to_host()
                .map_or(true, |h| h.data().iter().all(|x| x.is_finite())),
        }
    }

    /// A copy on the device, stored as `dtype` (a host tensor is uploaded;
    /// a device tensor is cast, or copied if it already has that type).
    pub fn to_cuda(&self, dtype: DType) -> Result<Tensor> {
        let gpu = cuda::gpu()?;
        match self.storage() {
            Storage::Cuda { .. } if self.dtype() == dtype => Ok(self.clone()),
            Storage::Cuda { .. } => Ok(cuda::elementwise::cast(self, dtype)),
            Storage::Cpu(v) => {
                let out = Tensor::empty_cuda(self.shape(), dtype);
                gpu.upload(v, &out);
                Ok(out)
            }
        }
    }

    /// A host (f32) copy; waits for the device, and reports any failure
    /// the device met since the last check.
    pub fn to_host(&self) -> Result<Tensor> {
        match self.storage() {
            Storage::Cpu(_) => Ok(self.clone()),
            Storage::Cuda { .. } => {
                let data = cuda::opened().download(self)?;
                Ok(Tensor::from_vec(self.shape(), data))
            }
        }
    }

    /// Moves to the host if needed (a host tensor is returned as is).
    pub fn into_host(self) -> Result<Tensor> {
        if self.is_cuda() {
            self.to_host()
        } else {
            Ok(self)
        }
    }
}
