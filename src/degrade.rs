//! Degradations (spec section 6): the six tasks of the paper's Table 1, as
//! the reference code (I2SB's `corruption/`, taken from DDRM) computes them,
//! and the separable blurs a reader of the paper would expect.
//!
//! Every operator takes a clean NHWC batch `[n, h, w, c]` in [-1, 1] and
//! returns the degraded X1 at the same size, without measurement noise:
//!
//! * `jpeg5`, `jpeg10`: DDRM's floating-point JPEG simulation (computed in
//!   f64): JFIF RGB -> YCbCr, 4:2:0 chroma by decimation, 8x8 orthonormal
//!   DCT-II after -128, IJG-scaled standard tables, round half to even,
//!   dequantise, inverse DCT, +128, chroma by 2x2 replication, YCbCr -> RGB,
//!   no clamping. Needs 3 channels.
//! * `sr4-pool`: exact 4x4 mean, then nearest 4x upsampling.
//! * `sr4-bicubic`: 16-tap anti-aliased Keys (a = -0.5) 4x downsampling
//!   (half-sample symmetric boundary, as DDRM's `SRConv`), then nearest 4x up.
//! * `blur-uniform`, `blur-gauss`: DDRM's `Deblurring.H` exactly as the
//!   reference runs it, through the SVD of its banded 1-D matrix and with
//!   its channel-indexing slip: a non-local operator (see `ddrm`). Needs 3
//!   channels.
//! * `blur-uniform-sep`, `blur-gauss-sep`: the separable `H X H^T` per
//!   channel with the same H.
//!
//! All blurs work on the image mapped to [0, 1]. DDRM's banded H covers
//! only k - 1 of the k taps (rows sum to 8/9 or ~0.80: images come out
//! darker).
//!
//! JPEG and SR need sides that are multiples of 16 and 4: other sizes are
//! reflect-padded at the bottom and right (numpy 'reflect', no edge repeat),
//! degraded, and cropped back. The SR and separable blur operators are each
//! a pair of 1-D operators (`Op1d`) applied along height and width,
//! accumulating in f64.

mod ddrm;

use std::fmt;
use std::str::FromStr;

use rayon::prelude::*;

use crate::bail;
use crate::cpu::pad::{reflect_index, symmetric_index};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The degradation tasks, in the order of `TASK_NAMES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Jpeg5,
    Jpeg10,
    Sr4Pool,
    Sr4Bicubic,
    BlurUniform,
    BlurGauss,
    BlurUniformSep,
    BlurGaussSep,
}

/// The CLI names of the tasks, index = `Task as usize`.
pub const TASK_NAMES: [&str; 8] = [
    "jpeg5",
    "jpeg10",
    "sr4-pool",
    "sr4-bicubic",
    "blur-uniform",
    "blur-gauss",
    "blur-uniform-sep",
    "blur-gauss-sep",
];

impl Task {
    pub const ALL: [Task; 8] = [
        Task::Jpeg5,
        Task::Jpeg10,
        Task::Sr4Pool,
        Task::Sr4Bicubic,
        Task::BlurUniform,
        Task::BlurGauss,
        Task::BlurUniformSep,
        Task::BlurGaussSep,
    ];

    pub fn name(self) -> &'static str {
        TASK_NAMES[self as usize]
    }

    /// I2SB's beta_max for this task (spec section 5): 1.0 for deblurring.
    pub fn i2sb_beta_max(self) -> f64 {
        match self {
            Task::BlurUniform | Task::BlurGauss | Task::BlurUniformSep | Task::BlurGaussSep => 1.0,
            _ => 0.3,
        }
    }

    /// Whether I2SB trains and samples this task as an OT-ODE by default:
    /// the reference's scripts pass `--ot-ode` for the paper's two
    /// deblurring tasks (spec section 5).
    pub fn i2sb_ot_ode_default(self) -> bool {
        matches!(self, Task::BlurUniform | Task::BlurGauss)
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Task> {
        match TASK_NAMES.iter().position(|&name| name == s) {
            Some(i) => Ok(Task::ALL[i]),
            None => bail!("unknown task '{s}' (known: {})", TASK_NAMES.join(", ")),
        }
    }
}

/// Degrades a batch `[n, h, w, c]` in [-1, 1]; the result has the same shape.
pub fn degrade(task: Task, x: &Tensor) -> Result<Tensor> {
    let (h, w, c) = match x.shape() {
        &[_, h, w, c] => (h, w, c),
        shape => bail!("{task}: expected an NHWC batch [n, h, w, c], got shape {shape:?}"),
    };
    if h == 0 || w == 0 || c == 0 {
        bail!("{task}: empty image {h}x{w} with {c} channels");
    }
    let result = match task {
        Task::Jpeg5 => jpeg(x, 5),
        Task::Jpeg10 => jpeg(x, 10),
        Task::Sr4Pool => sr4(x, Op1d::pool4),
        Task::Sr4Bicubic => sr4(x, Op1d::bicubic4),
        Task::BlurUniform => ddrm::blur(x, BlurKernel::Uniform),
        Task::BlurGauss => ddrm::blur(x, BlurKernel::Gauss),
        Task::BlurUniformSep => Ok(blur_separable(x, &BlurKernel::Uniform.taps())),
        Task::BlurGaussSep => Ok(blur_separable(x, &BlurKernel::Gauss.taps())),
    };
    result.map_err(|e| Error(format!("{task}: {}", e.0)))
}

/// Keys' cubic convolution kernel with a = -0.5.
fn keys(x: f64) -> f64 {
    let (a, x) = (-0.5, x.abs());
    if x <= 1.0 {
        (a + 2.0) * x.powi(3) - (a + 3.0) * x.powi(2) + 1.0
    } else if x < 2.0 {
        a * x.powi(3) - 5.0 * a * x.powi(2) + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

/// The 16 anti-aliased bicubic taps of the 4x downsampling: Keys at
/// `(i - 7.5) / 4`, normalised to sum 1.
pub fn bicubic_taps() -> [f64; 16] {
    let mut taps = [0.0; 16];
    for (i, t) in taps.iter_mut().enumerate() {
        *t = keys((i as f64 - 7.5) / 4.0);
    }
    let sum: f64 = taps.iter().sum();
    taps.map(|t| t / sum)
}

/// The 5-tap Gaussian of the reference (`exp(-x^2 / 200)`, x = -2..2),
/// normalised to sum 1.
pub fn gaussian_taps() -> [f64; 5] {
    let taps = [-2.0f64, -1.0, 0.0, 1.0, 2.0].map(|x| (-x * x / 200.0).exp());
    let sum: f64 = taps.iter().sum();
    taps.map(|t| t / sum)
}

/// The two blur kernels of the paper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum BlurKernel {
    /// 9 taps of 1/9.
    Uniform,
    /// `gaussian_taps`.
    Gauss,
}

impl BlurKernel {
    fn taps(self) -> Vec<f64> {
        match self {
            BlurKernel::Uniform => vec![1.0 / 9.0; 9],
            BlurKernel::Gauss => gaussian_taps().to_vec(),
        }
    }
}

/// A 1-D linear operator from `n_in` samples to `rows.len()` samples: row `o`
/// lists the (input index, weight) pairs of output `o`.
struct Op1d {
    n_in: usize,
    rows: Vec<Vec<(usize, f64)>>,
}

/// Adds weight `w` on input `i` to an operator row, merging repeated inputs.
fn add_tap(row: &mut Vec<(usize, f64)>, i: usize, w: f64) {
    match row.iter_mut().find(|(k, _)| *k == i) {
        Some(entry) => entry.1 += w,
        None => row.push((i, w)),
    }
}

impl Op1d {
    /// Copies `0..n` to `0..target`: crops when `target <= n`, reflect-pads
    /// otherwise.
    fn pad_or_crop(n: usize, target: usize) -> Result<Op1d> {
        if target > n && n < 2 {
            bail!("{n} is too small to reflect-pad to {target} (needs at least 2 pixels)");
        }
        let rows = (0..target)
            .map(|i| vec![(if i < n { i } else { reflect_index(i, n) }, 1.0)])
            .collect();
        Ok(Op1d { n_in: n, rows })
    }

    /// `self` after `first`: the rows of `self` expressed on `first`'s input.
    fn after(&self, first: &Op1d) -> Op1d {
        assert_eq!(self.n_in, first.rows.len(), "Op1d composition sizes");
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let mut out: Vec<(usize, f64)> = Vec::new();
                for &(j, w) in row {
                    for &(i, v) in &first.rows[j] {
                        add_tap(&mut out, i, w * v);
                    }
                }
                out
            })
            .collect();
        Op1d {
            n_in: first.n_in,
            rows,
        }
    }

    /// 4x mean pooling of `n` samples (`n` a multiple of 4).
    fn pool4(n: usize) -> Op1d {
        let rows = (0..n / 4)
            .map(|o| (4 * o..4 * o + 4).map(|i| (i, 0.25)).collect())
            .collect();
        Op1d { n_in: n, rows }
    }

    /// DDRM's `SRConv` row for stride 4: output `o` reads inputs
    /// `4o - 6 ..= 4o + 9` with taps 0..=15 (centred on the block `4o..4o+3`),
    /// out-of-range inputs folded back by the symmetric rule.
    fn bicubic4(n: usize) -> Op1d {
        let taps = bicubic_taps();
        let rows = (0..n / 4)
            .map(|o| {
                let mut row: Vec<(usize, f64)> = Vec::new();
                for (t, &w) in taps.iter().enumerate() {
                    add_tap(
                        &mut row,
                        symmetric_index(4 * o as isize - 6 + t as isize, n),
                        w,
                    );
                }
                row
            })
            .collect();
        Op1d { n_in: n, rows }
    }

    /// Nearest 4x upsampling of `n` samples.
    fn nearest_up4(n: usize) -> Op1d {
        let rows = (0..4 * n).map(|i| vec![(i / 4, 1.0)]).collect();
        Op1d { n_in: n, rows }
    }

    /// A whole SR axis on `n` samples: reflect-pad to a multiple of 4,
    /// downsample with `down`, nearest 4x up, crop back to `n`.
    fn sr4(n: usize, down: fn(usize) -> Op1d) -> Result<Op1d> {
        let padded = n.div_ceil(4) * 4;
        let pad = Op1d::pad_or_crop(n, padded)?;
        let crop = Op1d::pad_or_crop(padded, n)?;
        let up = Op1d::nearest_up4(padded / 4);
        Ok(crop.after(&up.after(&down(padded).after(&pad))))
    }

    /// DDRM's `Deblurring` 1-D matrix: `H[i][j] = taps[j - i + k/2]` for
    /// `j` in `[i - k/2, i + k/2)` inside `0..n` (k - 1 taps, zero outside).
    fn banded_blur(n: usize, taps: &[f64]) -> Op1d {
        let r = taps.len() / 2;
        let rows = (0..n)
            .map(|i| {
                (i.saturating_sub(r)..(i + r).min(n))
                    .map(|j| (j, taps[j + r - i]))
                    .collect()
            })
            .collect();
        Op1d { n_in: n, rows }
    }
}

/// `dst = sum_j w_j src[j]`, where `src` is a sequence of vectors of
/// `dst.len()` values and the taps index those vectors.
fn mix_into<T: Copy + Into<f64>>(taps: &[(usize, f64)], src: &[T], dst: &mut [f64]) {
    let len = dst.len();
    dst.fill(0.0);
    for &(j, w) in taps {
        for (d, &s) in dst.iter_mut().zip(&src[j * len..(j + 1) * len]) {
            *d += w * s.into();
        }
    }
}

/// Applies `rows` along the height and `cols` along the width of every
/// image and channel (`rows X cols^T`), accumulating in f64.
fn apply_separable(x: &Tensor, rows: &Op1d, cols: &Op1d) -> Tensor {
    let (n, h, w, c) = x.nhwc();
    assert!(
        rows.n_in == h && cols.n_in == w,
        "Op1d sizes do not fit {x:?}"
    );
    let (ho, wo) = (rows.rows.len(), cols.rows.len());
    let mut out = vec![0.0f32; n * ho * wo * c];
    if out.is_empty() {
        return Tensor::from_vec(&[n, ho, wo, c], out);
    }
    out.par_chunks_mut(ho * wo * c)
        .zip(x.data().par_chunks(h * w * c))
        .for_each(|(dst, src)| {
            // Along the width: each input row becomes a row of `wo` pixels.
            let mut tmp = vec![0.0f64; h * wo * c];
            tmp.par_chunks_mut(wo * c)
                .zip(src.par_chunks(w * c))
                .for_each(|(t_row, s_row)| {
                    for (taps, px) in cols.rows.iter().zip(t_row.chunks_mut(c)) {
                        mix_into(taps, s_row, px);
                    }
                });
            // Along the height: each output row mixes whole rows of `tmp`.
            dst.par_chunks_mut(wo * c)
                .zip(&rows.rows)
                .for_each(|(d_row, taps)| {
                    let mut acc = vec![0.0f64; wo * c];
                    mix_into(taps, &tmp, &mut acc);
                    for (d, a) in d_row.iter_mut().zip(&acc) {
                        *d = *a as f32;
                    }
                });
        });
    Tensor::from_vec(&[n, ho, wo, c], out)
}

/// The SR tasks: per axis, reflect-pad to a multiple of 4, downsample with
/// `down`, nearest 4x up, crop back.
fn sr4(x: &Tensor, down: fn(usize) -> Op1d) -> Result<Tensor> {
    let (_, h, w, _) = x.nhwc();
    let rows = Op1d::sr4(h, down).map_err(|e| Error(format!("height {}", e.0)))?;
    let cols = Op1d::sr4(w, down).map_err(|e| Error(format!("width {}", e.0)))?;
    Ok(apply_separable(x, &rows, &cols))
}

/// The separable blurs: `H X H^T` per channel on the image mapped to [0, 1].
fn blur_separable(x: &Tensor, taps: &[f64]) -> Tensor {
    let (_, h, w, _) = x.nhwc();
    let mut unit = x.clone();
    unit.data_mut()
        .iter_mut()
        .for_each(|v| *v = (*v + 1.0) / 2.0);
    let mut y = apply_separable(
        &unit,
        &Op1d::banded_blur(h, taps),
        &Op1d::banded_blur(w, taps),
    );
    y.data_mut().iter_mut().for_each(|v| *v = *v * 2.0 - 1.0);
    y
}

/// The standard JPEG luminance table (Annex K), raster order, row = vertical
/// frequency.
const LUMA_TABLE: [u16; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, //
    12, 12, 14, 19, 26, 58, 60, 55, //
    14, 13, 16, 24, 40, 57, 69, 56, //
    14, 17, 22, 29, 51, 87, 80, 62, //
    18, 22, 37, 56, 68, 109, 103, 77, //
    24, 35, 55, 64, 81, 104, 113, 92, //
    49, 64, 78, 87, 103, 121, 120, 101, //
    72, 92, 95, 98, 112, 100, 103, 99, //
];

/// The standard JPEG chrominance table (Annex K).
const CHROMA_TABLE: [u16; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, //
    18, 21, 26, 66, 99, 99, 99, 99, //
    24, 26, 56, 99, 99, 99, 99, 99, //
    47, 66, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
    99, 99, 99, 99, 99, 99, 99, 99, //
];

/// The (luma, chroma) quantisation tables for a quality in 1..=100, scaled
/// IJG-style: `s = 5000/q` if q < 50 else `200 - 2q`; entry
/// `floor((s*T + 50)/100)` clipped to [1, 255].
pub fn jpeg_quant_tables(quality: u32) -> Result<([u8; 64], [u8; 64])> {
    if !(1..=100).contains(&quality) {
        bail!("JPEG quality {quality} is outside 1..=100");
    }
    let q = quality as f64;
    let s = if q < 50.0 {
        5000.0 / q
    } else {
        200.0 - 2.0 * q
    };
    let scale =
        |t: &[u16; 64]| t.map(|v| ((s * v as f64 + 50.0) / 100.0).floor().clamp(1.0, 255.0) as u8);
    Ok((scale(&LUMA_TABLE), scale(&CHROMA_TABLE)))
}

/// JFIF RGB -> YCbCr with the reference's coefficients (Cb, Cr offset +128
/// separately).
const RGB_TO_YCBCR: [[f64; 3]; 3] = [
    [0.299, 0.587, 0.114],
    [-0.1687, -0.3313, 0.5],
    [0.5, -0.4187, -0.0813],
];

/// The inverse of a 3x3 matrix by cofactors (`RGB_TO_YCBCR` is invertible).
fn inverse3(m: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let cof = |r: usize, c: usize| {
        let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
        let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
        m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1]
    };
    let det: f64 = (0..3).map(|c| m[0][c] * cof(0, c)).sum();
    let mut inv = [[0.0; 3]; 3];
    for (r, row) in inv.iter_mut().enumerate() {
        for (c, v) in row.iter_mut().enumerate() {
            *v = cof(c, r) / det;
        }
    }
    inv
}

fn mat3_mul(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    m.map(|row| row[0] * v[0] + row[1] * v[1] + row[2] * v[2])
}

/// The orthonormal 8-point DCT-II matrix, `D[k][n]`.
fn dct_matrix() -> [[f64; 8]; 8] {
    let mut d = [[0.0; 8]; 8];
    for (k, row) in d.iter_mut().enumerate() {
        let ck = if k == 0 { (0.125f64).sqrt() } else { 0.5 };
        for (n, v) in row.iter_mut().enumerate() {
            *v = ck * (std::f64::consts::PI * (2 * n + 1) as f64 * k as f64 / 16.0).cos();
        }
    }
    d
}

/// `D X D^T` (forward) or `D^T X D` (inverse) of one 8x8 block.
fn dct2(d: &[[f64; 8]; 8], x: &[f64; 64], inverse: bool) -> [f64; 64] {
    let k = |i: usize, j: usize| if inverse { d[j][i] } else { d[i][j] };
    let mut tmp = [0.0; 64];
    for i in 0..8 {
        for c in 0..8 {
            tmp[i * 8 + c] = (0..8).map(|r| k(i, r) * x[r * 8 + c]).sum();
        }
    }
    let mut y = [0.0; 64];
    for i in 0..8 {
        for j in 0..8 {
            y[i * 8 + j] = (0..8).map(|c| tmp[i * 8 + c] * k(j, c)).sum();
        }
    }
    y
}

/// Steps (4)-(6) on one plane (sides multiples of 8), in place: each 8x8
/// block goes through -128, DCT, quantise (round half to even, as
/// `torch.round`), dequantise, inverse DCT, +128.
fn code_plane(plane: &mut [f64], width: usize, table: &[u8; 64], d: &[[f64; 8]; 8]) {
    plane.par_chunks_mut(8 * width).for_each(|band| {
        for bx in (0..width).step_by(8) {
            let mut block = [0.0; 64];
            for (i, v) in block.iter_mut().enumerate() {
                *v = band[(i / 8) * width + bx + i % 8] - 128.0;
            }
            let mut coef = dct2(d, &block, false);
            for (c, &q) in coef.iter_mut().zip(table) {
                let q = q as f64;
                *c = (*c / q).round_ties_even() * q;
            }
            let back = dct2(d, &coef, true);
            for (i, v) in back.iter().enumerate() {
                band[(i / 8) * width + bx + i % 8] = v + 128.0;
            }
        }
    });
}

/// The JPEG simulation of one image `[h, w, 3]` (sides multiples of 16).
fn jpeg_image(src: &[f32], h: usize, w: usize, tables: &([u8; 64], [u8; 64]), dst: &mut [f32]) {
    let d = dct_matrix();
    let to_rgb = inverse3(&RGB_TO_YCBCR);
    let (hc, wc) = (h / 2, w / 2);
    let ycc = |y: usize, x: usize| {
        let p = &src[(y * w + x) * 3..][..3];
        let rgb = [0, 1, 2].map(|c| (p[c] as f64 + 1.0) / 2.0 * 255.0);
        mat3_mul(&RGB_TO_YCBCR, rgb)
    };
    let mut luma: Vec<f64> = (0..h * w).map(|i| ycc(i / w, i % w)[0]).collect();
    let mut chroma: [Vec<f64>; 2] = [1, 2].map(|ch| {
        (0..hc * wc)
            .map(|i| ycc(2 * (i / wc), 2 * (i % wc))[ch] + 128.0)
            .collect()
    });
    code_plane(&mut luma, w, &tables.0, &d);
    for plane in chroma.iter_mut() {
        code_plane(plane, wc, &tables.1, &d);
    }
    for (i, px) in dst.chunks_mut(3).enumerate() {
        let (y, x) = (i / w, i % w);
        let j = (y / 2) * wc + x / 2;
        let rgb = mat3_mul(
            &to_rgb,
            [luma[i], chroma[0][j] - 128.0, chroma[1][j] - 128.0],
        );
        for (p, v) in px.iter_mut().zip(rgb) {
            *p = (v / 255.0 * 2.0 - 1.0) as f32;
        }
    }
}

/// The JPEG simulation at any quality in 1..=100 on `[n, h, w, 3]` in
/// [-1, 1] (the `jpeg5` / `jpeg10` tasks), any size: reflect-padded to
/// multiples of 16 and cropped back.
pub fn jpeg(x: &Tensor, quality: u32) -> Result<Tensor> {
    let (n, h, w, c) = match x.shape() {
        &[n, h, w, c] => (n, h, w, c),
        shape => bail!("JPEG: expected an NHWC batch [n, h, w, 3], got shape {shape:?}"),
    };
    if c != 3 {
        bail!("JPEG needs 3 channels (RGB), got {c}");
    }
    if h == 0 || w == 0 {
        bail!("JPEG: empty image {h}x{w}");
    }
    let tables = jpeg_quant_tables(quality)?;
    let (hp, wp) = (h.div_ceil(16) * 16, w.div_ceil(16) * 16);
    let pad_h = Op1d::pad_or_crop(h, hp).map_err(|e| Error(format!("height {}", e.0)))?;
    let pad_w = Op1d::pad_or_crop(w, wp).map_err(|e| Error(format!("width {}", e.0)))?;
    let padded = apply_separable(x, &pad_h, &pad_w);
    let mut coded = vec![0.0f32; n * hp * wp * 3];
    if n > 0 {
        coded
            .par_chunks_mut(hp * wp * 3)
            .zip(padded.data().par_chunks(hp * wp * 3))
            .for_each(|(dst, src)| jpeg_image(src, hp, wp, &tables, dst));
    }
    let coded = Tensor::from_vec(&[n, hp, wp, 3], coded);
    Ok(apply_separable(
        &coded,
        &Op1d::pad_or_crop(hp, h)?,
        &Op1d::pad_or_crop(wp, w)?,
    ))
}
