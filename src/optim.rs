//! Training state that lives beside the weights: AdamW, an exponential
//! moving average of the weights, and global gradient-norm clipping.
//!
//! All in f32 over flat parameter lists in `Unet::specs()` order.

use crate::autograd::{Gradients, Var};
use crate::cpu;
use crate::tensor::{DType, Tensor};
use rayon::prelude::*;

/// The gradient of every bound parameter, in order; a parameter the loss
/// does not reach gets zeros (f32 on either backend: the device's
/// parameter gradients are f32 in bf16 mode too).
pub fn gather_grads(grads: &mut Gradients, leaves: &[Var]) -> Vec<Tensor> {
    leaves
        .iter()
        .map(|v| {
            grads.take(v).unwrap_or_else(|| match v.value().is_cuda() {
                true => Tensor::full_cuda(v.shape(), 0.0, DType::F32),
                false => Tensor::full(v.shape(), 0.0),
            })
        })
        .collect()
}

/// Scales all gradients together so that their global L2 norm is at most
/// `max_norm` (PyTorch's clip_grad_norm_); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Tensor], max_norm: f32) -> f32 {
    let norm = grads
        .iter()
        .map(cpu::elementwise::sum_sq)
        .sum::<f64>()
        .sqrt() as f32;
    if norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            g.data_mut().par_iter_mut().for_each(|v| *v *= k);
        }
    }
    norm
}

/// AdamW (decoupled weight decay), PyTorch's update order and defaults.
#[derive(Clone, Debug)]
pub struct AdamW {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Updates taken so far (the bias correction's t).
    pub steps: u64,
    /// First and second moments, one per parameter.
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
}

impl AdamW {
    pub fn new<'a>(
        params: impl IntoIterator<Item = &'a Tensor>,
        lr: f32,
        weight_decay: f32,
    ) -> AdamW {
        let m: Vec<Tensor> = params
            .into_iter()
            .map(|p| Tensor::zeros(p.shape()))
            .collect();
        AdamW {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            steps: 0,
            v: m.clone(),
            m,
        }
    }

    pub fn step<'a>(&mut self, params: impl IntoIterator<Item = &'a mut Tensor>, grads: &[Tensor]) {
        self.steps += 1;
        let t = self.steps as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let (lr, b1, b2, eps, decay) = (
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
            self.lr * self.weight_decay,
        );
        let mut count = 0;
        for (((p, g), m), v) in params
            .into_iter()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            assert_eq!(p.shape(), g.shape(), "gradient shape");
            p.data_mut()
                .par_iter_mut()
                .zip(g.data().par_iter())
                .zip(m.data_mut().par_iter_mut().zip(v.data_mut().par_iter_mut()))
                .for_each(|((p, &g), (m, v))| {
                    *p -= decay * *p;
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *p -= lr * (*m / bc1) / ((*v / bc2).sqrt() + eps);
                });
            count += 1;
        }
        assert_eq!(
            count,
            self.m.len(),
            "AdamW was built for {} parameters",
            self.m.len()
        );
    }
}

/// Exponential moving average of the weights: `ema = d * ema + (1 - d) * w`.
#[derive(Clone, Debug)]
pub struct Ema {
    pub decay: f32,
    pub weights: Vec<Tensor>,
}

impl Ema {
    pub fn new<'a>(params: impl IntoIterator<Item = &'a Tensor>, decay: f32) -> Ema {
        Ema {
            decay,
            weights: params.into_iter().cloned().collect(),
        }
    }

    /// The decay of the `update`-th update (counting from 1): the reference's
    /// (torch_ema's `use_num_updates`) warm-up `min(decay, (1 + n) / (10 +
    /// n))`, so that early weights do not linger in the average (at 0.999
    /// without it, 55% of the random start is still there after 600 steps).
    pub fn decay_at(&self, update: u64) -> f32 {
        self.decay.min((1 + update) as f32 / (10 + update) as f32)
    }

    /// One update with decay `d` (from `decay_at`).
    pub fn update<'a>(&mut self, params: impl IntoIterator<Item = &'a Tensor>, d: f32) {
        for (e, p) in self.weights.iter_mut().zip(params) {
            e.data_mut()
                .par_iter_mut()
                .zip(p.data().par_iter())
                .for_each(|(e, &p)| *e = d * *e + (1.0 - d) * p);
        }
    }
}
