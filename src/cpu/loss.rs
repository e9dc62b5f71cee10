//! Mean squared error, the training loss of every network here.
//!
//! `loss = mean((pred - target)^2)` over all elements, accumulated in f64,
//! returned as a one-element tensor.

use crate::tensor::Tensor;

pub fn mse(pred: &Tensor, target: &Tensor) -> Tensor {
    assert_eq!(pred.shape(), target.shape(), "mse shape mismatch");
    let sum: f64 = pred
        .data()
        .iter()
        .zip(target.data())
        .map(|(&p, &y)| ((p - y) as f64).powi(2))
        .sum();
    Tensor::from_vec(&[1], vec![(sum / pred.numel() as f64) as f32])
}

/// Gradient with respect to `pred`; the one for `target` is its negation.
pub fn mse_backward(pred: &Tensor, target: &Tensor, dloss: f32) -> Tensor {
    let k = 2.0 * dloss / pred.numel() as f32;
    let d = pred
        .data()
        .iter()
        .zip(target.data())
        .map(|(&p, &y)| k * (p - y))
        .collect();
    Tensor::from_vec(pred.shape(), d)
}
