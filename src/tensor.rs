//! Tensors: a shape and a storage.
//!
//! Activations are NHWC (`[batch, height, width, channels]`), row-major, f32.
//! Parameters keep the layout their op wants (see `cpu::conv` for the
//! `[out, kh, kw, in]` convolution weight). The storage says where the numbers
//! live; today that is host memory. The CUDA backend adds a device variant to
//! `Storage` and a match arm to each op's dispatch, nothing else changes shape.

use std::fmt;

/// Where a tensor's numbers live.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// Host memory, f32, row-major.
    Cpu(Vec<f32>),
}

#[derive(Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?}", self.shape)
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
        }
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        match &mut self.storage {
            Storage::Cpu(v) => v,
        }
    }

    pub fn into_vec(self) -> Vec<f32> {
        match self.storage {
            Storage::Cpu(v) => v,
        }
    }

    /// Same numbers, another shape with the same element count.
    pub fn reshape(self, shape: &[usize]) -> Tensor {
        Tensor::from_vec(shape, self.into_vec())
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

    /// `self += other`, element by element (gradient accumulation).
    pub fn add_assign(&mut self, other: &Tensor) {
        assert_eq!(self.shape, other.shape, "add_assign shape mismatch");
        for (a, b) in self.data_mut().iter_mut().zip(other.data()) {
            *a += *b;
        }
    }

    pub fn sum_sq(&self) -> f64 {
        self.data().iter().map(|&v| (v as f64) * (v as f64)).sum()
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
