//! Linear layer over the last dimension: `y = x W^T + b`.
//!
//! Layout: x `[.., in]` (any leading dimensions: a batch of vectors, or the
//! pixels of an NHWC image, which makes it a 1x1 convolution), W `[out, in]`
//! (PyTorch's order), b `[out]`. Fast path: one GEMM with W read transposed
//! in place. Backward: `dx = dy W`, `dW = dy^T x`, `db = sum of dy rows`.

use super::gemm::{matmul, matmul_reference, Mat};
use super::zeros;
use crate::tensor::Tensor;

/// y's shape, checking the weight against x (shared with the CUDA twin).
pub(crate) fn out_shape(x: &Tensor, weight: &Tensor) -> Vec<usize> {
    let (_, inp) = x.rows_cols();
    let [out, win] = weight.shape()[..] else {
        panic!("linear weight of shape {:?}", weight.shape())
    };
    assert_eq!(
        win,
        inp,
        "linear weight {:?} for input {:?}",
        weight.shape(),
        x.shape()
    );
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank-0 input") = out;
    shape
}

type MatmulFn = fn(Mat, Mat, &mut [f32], usize, bool);

fn linear_with(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, product: MatmulFn) -> Tensor {
    let shape = out_shape(x, weight);
    let (rows, inp) = x.rows_cols();
    let out = weight.shape()[0];
    let mut y = zeros(rows * out);
    if let Some(b) = bias {
        for row in y.chunks_mut(out) {
            row.copy_from_slice(b.data());
        }
    }
    product(
        Mat::rows(x.data(), rows, inp),
        Mat::rows(weight.data(), out, inp).t(),
        &mut y,
        out,
        bias.is_some(),
    );
    Tensor::from_vec(&shape, y)
}

pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    linear_with(x, weight, bias, matmul)
}

/// The same product through the triple loop.
pub fn linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Tensor {
    linear_with(x, weight, bias, matmul_reference)
}

/// Returns (dx, dW) where asked for; the bias gradient is `cpu::sum_rows(dy)`.
pub fn linear_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    need_dx: bool,
    need_dw: bool,
) -> (Option<Tensor>, Option<Tensor>) {
    let (rows, inp) = x.rows_cols();
    let out = weight.shape()[0];
    let dy_mat = Mat::rows(dy.data(), rows, out);
    let dx = need_dx.then(|| {
        let mut dx = zeros(rows * inp);
        matmul(
            dy_mat,
            Mat::rows(weight.data(), out, inp),
            &mut dx,
            inp,
            false,
        );
        Tensor::from_vec(x.shape(), dx)
    });
    let dw = need_dw.then(|| {
        let mut dw = zeros(out * inp);
        matmul(
            dy_mat.t(),
            Mat::rows(x.data(), rows, inp),
            &mut dw,
            inp,
            false,
        );
        Tensor::from_vec(weight.shape(), dw)
    });
    (dx, dw)
}
