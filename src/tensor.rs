//! Tensors: a shape and a storage.
//!
//! Activations are NHWC (`[batch, height, width, channels]`), row-major.
//! Parameters keep the layout their op wants (see `cpu::conv` for the
//! `[out, kh, kw, in]` convolution weight). The storage says where the numbers
//! live: host memory (f32, the CPU backend) or a device buffer (f32 or bf16,
//! the CUDA backend). Host-only methods (`data`, `data_mut`) are for the
//! CPU backend and panic on a device tensor, which only a bug can hand them
//! (`to_host` first).
//!
//! This file names no backend. What needs one lives with the backends'
//! seams: copies and moves between host and device (`clone`, `to_host`,
//! `to_cuda`) in `device`, whole-tensor arithmetic (`axpy`) in `ops`,
//! device allocation (`empty_cuda`) in `cuda::memory`.

use crate::device::DeviceBuffer;
use std::fmt;

/// Element type of a device tensor (host tensors are always f32).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// bf16 storage; kernels accumulate in f32.
    Bf16,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 => 2,
        }
    }

    /// The suffix of the kernels that take this type (kernels/README.md).
    pub fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
        }
    }
}

/// Where a tensor's numbers live.
#[derive(Debug)]
pub enum Storage {
    /// Host memory, f32, row-major.
    Cpu(Vec<f32>),
    /// Device memory on the one CUDA device, row-major.
    Cuda { buf: DeviceBuffer, dtype: DType },
}

pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl PartialEq for Tensor {
    /// Host tensors compare by value; device tensors only by identity.
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && match (&self.storage, &other.storage) {
                (Storage::Cpu(a), Storage::Cpu(b)) => a == b,
                (Storage::Cuda { buf: a, .. }, Storage::Cuda { buf: b, .. }) => a.ptr() == b.ptr(),
                _ => false,
            }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.storage {
            Storage::Cpu(_) => write!(f, "Tensor{:?}", self.shape),
            Storage::Cuda { dtype, .. } => write!(f, "Tensor{:?} on cuda, {dtype:?}", self.shape),
        }
    }
}

impl Tensor {
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} does not hold {} values",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cpu(data),
        }
    }

    /// A tensor over a backend's storage (how the backends make theirs).
    pub fn from_storage(shape: &[usize], storage: Storage) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            storage,
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_vec(shape, vec![value; shape.iter().product()])
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The host slice. Every op of the CPU backend reads through this.
    pub fn data(&self) -> &[f32] {
        match &self.storage {
            Storage::Cpu(v) => v,
            Storage::Cuda { .. } => panic!("{self:?}: a device tensor has no host slice"),
        }
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
            Storage::Cuda { .. } => panic!("a device tensor has no host slice"),
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
            Storage::Cuda { .. } => panic!("a device tensor has no host vector"),
        }
    }

    /// Same numbers, another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Tensor {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.numel(),
            "reshape {:?} -> {shape:?}",
            self.shape
        );
        Tensor {
            shape: shape.to_vec(),
            storage: self.storage,
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self.storage, Storage::Cuda { .. })
    }

    /// The element type; host tensors are f32.
    pub fn dtype(&self) -> DType {
        match &self.storage {
            Storage::Cpu(_) => DType::F32,
            Storage::Cuda { dtype, .. } => *dtype,
        }
    }

    /// The device address of a device tensor (for kernel arguments).
    pub fn device_ptr(&self) -> u64 {
        match &self.storage {
            Storage::Cuda { buf, .. } => buf.ptr(),
            Storage::Cpu(_) => panic!("{self:?}: a host tensor has no device address"),
        }
    }

    /// NHWC dimensions of a rank-4 tensor.
    pub fn nhwc(&self) -> (usize, usize, usize, usize) {
        match self.shape[..] {
            [n, h, w, c] => (n, h, w, c),
            _ => panic!("expected an NHWC tensor, got shape {:?}", self.shape),
        }
    }

    /// The last dimension (channels or features) and the product of the rest.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().expect("tensor of rank 0");
        (self.numel() / cols, cols)
    }

    pub fn max_abs_diff(&self, other: &Tensor) -> f32 {
        assert_eq!(self.shape, other.shape, "max_abs_diff shape mismatch");
        self.data()
            .iter()
            .zip(other.data())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }
}
