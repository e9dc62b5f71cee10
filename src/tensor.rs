//! Tensors: a shape and a storage.
//!
//! Activations are NHWC (`[batch, height, width, channels]`), row-major.
//! Parameters keep the layout their op wants (see `cpu::conv` for the
//! `[out, kh, kw, in]` convolution weight). The storage says where the numbers
//! live: host memory (f32, the CPU backend) or a device buffer (f32 or bf16,
//! the CUDA backend). Ops dispatch on it (see `ops`); host-only methods
//! (`data`, `data_mut`) are for the CPU backend and panic on a device
//! tensor, which only a bug can hand them (`to_host` first).

use crate::cuda::memory::DeviceBuffer;
use crate::error::Result;
use rayon::prelude::*;
use std::fmt;

/// Elements per task in the whole-tensor loops below (gradient
/// accumulation and norms run once per parameter and skip connection in
/// every training step; serial, they left a core idle).
const ELEMS_PER_TASK: usize = 1 << 16;

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

impl Clone for Tensor {
    /// A copy; for a device tensor, a device-to-device copy on the stream.
    fn clone(&self) -> Tensor {
        match &self.storage {
            Storage::Cpu(v) => Tensor::from_vec(&self.shape, v.clone()),
            Storage::Cuda { buf, dtype } => {
                let out = Tensor::empty_cuda(&self.shape, *dtype);
                crate::cuda::elementwise::copy(
                    buf.ptr(),
                    out.device_ptr(),
                    self.numel() * dtype.size(),
                );
                out
            }
        }
    }
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

    /// An uninitialised device tensor from the caching allocator. The GPU
    /// must be open (`cuda::gpu()`).
    pub fn empty_cuda(shape: &[usize], dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Cuda {
                buf: crate::cuda::opened().pool.alloc(n * dtype.size()),
                dtype,
            },
        }
    }

    /// A device tensor of one value.
    pub fn full_cuda(shape: &[usize], value: f32, dtype: DType) -> Tensor {
        let t = Tensor::empty_cuda(shape, dtype);
        crate::cuda::elementwise::fill(&t, value);
        t
    }

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
        match &self.storage {
            Storage::Cpu(v) => v.iter().all(|x| x.is_finite()),
            Storage::Cuda { .. } => self
                .to_host()
                .map_or(true, |h| h.data().iter().all(|x| x.is_finite())),
        }
    }

    /// A copy on the device, stored as `dtype` (a host tensor is uploaded;
    /// a device tensor is cast, or copied if it already has that type).
    pub fn to_cuda(&self, dtype: DType) -> Result<Tensor> {
        let gpu = crate::cuda::gpu()?;
        match &self.storage {
            Storage::Cuda { .. } if self.dtype() == dtype => Ok(self.clone()),
            Storage::Cuda { .. } => Ok(crate::cuda::elementwise::cast(self, dtype)),
            Storage::Cpu(v) => {
                let out = Tensor::empty_cuda(&self.shape, dtype);
                gpu.upload(v, &out);
                Ok(out)
            }
        }
    }

    /// A host (f32) copy; waits for the device, and reports any failure
    /// the device met since the last check.
    pub fn to_host(&self) -> Result<Tensor> {
        match &self.storage {
            Storage::Cpu(_) => Ok(self.clone()),
            Storage::Cuda { .. } => {
                let data = crate::cuda::opened().download(self)?;
                Ok(Tensor::from_vec(&self.shape, data))
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

    /// The same storage kind as `like`: on the device (with its type) if
    /// `like` is there, else on the host.
    pub fn to_backend_of(&self, like: &Tensor) -> Result<Tensor> {
        match (like.is_cuda(), self.is_cuda()) {
            (true, _) => self.to_cuda(like.dtype()),
            (false, true) => self.to_host(),
            (false, false) => Ok(self.clone()),
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

    /// `self += alpha * other`, element by element, on either backend.
    pub fn axpy(&mut self, alpha: f32, other: &Tensor) {
        assert_eq!(self.shape, other.shape, "axpy shape mismatch");
        if self.is_cuda() {
            return crate::cuda::elementwise::axpy(self, alpha, other);
        }
        let axpy = |(a, b): (&mut [f32], &[f32])| {
            for (a, b) in a.iter_mut().zip(b) {
                *a += alpha * *b;
            }
        };
        if self.numel() <= ELEMS_PER_TASK {
            // One task's worth: not worth a trip through the pool.
            return axpy((self.data_mut(), other.data()));
        }
        let pairs = self
            .data_mut()
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(other.data().par_chunks(ELEMS_PER_TASK));
        pairs.for_each(axpy);
    }

    /// `self += other` (gradient accumulation).
    pub fn add_assign(&mut self, other: &Tensor) {
        self.axpy(1.0, other);
    }

    /// `self -= other`.
    pub fn sub_assign(&mut self, other: &Tensor) {
        self.axpy(-1.0, other);
    }

    /// The sum of squares, in f64: per chunk, the chunks added in order
    /// (the same bits for any thread count).
    pub fn sum_sq(&self) -> f64 {
        let square_sum = |c: &[f32]| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        if self.numel() <= ELEMS_PER_TASK {
            return square_sum(self.data());
        }
        let chunk_sums: Vec<f64> = self
            .data()
            .par_chunks(ELEMS_PER_TASK)
            .map(square_sum)
            .collect();
        chunk_sums.iter().sum()
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
