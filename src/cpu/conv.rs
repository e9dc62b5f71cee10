//! 2-D convolution, square kernel k (1 or 3), stride 1 or 2, zero padding k/2.
//!
//! Layout: input `[n, h, w, cin]`, weight `[cout, k, k, cin]`, bias `[cout]`,
//! output `[n, ho, wo, cout]` with `ho = (h + 2*pad - k) / stride + 1`.
//!
//! Fast path: a 1x1 stride-1 convolution is one GEMM over the pixels. The
//! others are one GEMM of the `[pixels, k*k*cin]` patch matrix by the
//! weight seen as a `[k*k*cin, cout]` matrix (the patch order (ky, kx, ci) is
//! the weight's own order), with the patches gathered from the input by the
//! GEMM's packing step (`Patches`, an implicit im2col: no patch matrix is
//! written; a depth block spans a row of kernel taps, contiguous in the
//! input but at the borders). Backward: weight gradient `dw^T = patches^T *
//! dy`, the input transposed once into channel planes so that the packing
//! step copies each transposed patch row in runs (`PatchesT`), per chunk of
//! 1024 output pixels with the partial sums added in order; input
//! gradient at stride 1 the same convolution of `dy` with the weight
//! flipped and its channels swapped, at stride 2 `dy * W` gathered back per
//! input pixel (a gather, not a scatter, so pixels run in parallel).
//! The reference is the seven-loop definition. On 2 Zen 4 cores (isolated
//! passes, `small`'s shapes at batch 4): forward and input gradient
//! 150-190 GFLOP/s, weight gradient 120-180
//! (benches/results/cpu-profile-small-epyc-2core.md has them in a step).

use super::gemm::{matmul, matmul_packed, point_at_rows, Mat, PackedB, Rows};
use super::with_scratch;
use super::zeros;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Output pixels whose patches are gathered at once: bounds the scratch
/// buffer (about 16 MB at k*k*cin = 1152) while keeping the GEMM large.
pub const PATCH_ELEMS_PER_CHUNK: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvGeom {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    pub fn new(x: &Tensor, weight: &Tensor, stride: usize) -> ConvGeom {
        let (n, h, w, cin) = x.nhwc();
        let (cout, k, k2, wcin) = weight.nhwc();
        assert!(
            k == k2 && k % 2 == 1 && wcin == cin,
            "conv weight {:?} does not fit input {:?}",
            weight.shape(),
            x.shape()
        );
        assert!(stride == 1 || stride == 2, "conv stride {stride}");
        let pad = k / 2;
        let ho = (h + 2 * pad - k) / stride + 1;
        let wo = (w + 2 * pad - k) / stride + 1;
        ConvGeom {
            n,
            h,
            w,
            cin,
            cout,
            k,
            stride,
            pad,
            ho,
            wo,
        }
    }

    /// Length of one patch row: the GEMM's inner dimension.
    pub fn patch_len(&self) -> usize {
        self.k * self.k * self.cin
    }

    fn is_pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }

    /// The input pixel that kernel tap (ky, kx) of output pixel (oy, ox)
    /// reads, or None in the zero padding.
    fn tap(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride + ky).checked_sub(self.pad)?;
        let ix = (ox * self.stride + kx).checked_sub(self.pad)?;
        (iy < self.h && ix < self.w).then_some((iy, ix))
    }

    /// Output pixels `r0..` as (image, row, column), in order: walked,
    /// not divided out per pixel.
    fn pixels_from(&self, r0: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (ho, wo) = (self.ho, self.wo);
        let mut at = (r0 / (ho * wo), (r0 / wo) % ho, r0 % wo);
        std::iter::from_fn(move || {
            let here = at;
            at.2 += 1;
            if at.2 == wo {
                at = (at.0, at.1 + 1, 0);
                if at.1 == ho {
                    at = (at.0 + 1, 0, 0);
                }
            }
            Some(here)
        })
    }

    /// The output rows from the one holding pixel `r0` on, as (image, row,
    /// its first pixel's index).
    fn rows_from(&self, r0: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        (r0 / self.wo..).map(|row| (row / self.ho, row % self.ho, row * self.wo))
    }

    /// Multiply-adds times two.
    pub fn flops(&self) -> u64 {
        2 * (self.n * self.ho * self.wo * self.cout * self.patch_len()) as u64
    }
}

/// The im2col matrix of `x` (row: output pixel, column: (ky, kx, ci)),
/// never written out: the GEMM's packing step reads it from `x`.
struct Patches<'a> {
    g: &'a ConvGeom,
    x: &'a [f32],
}

impl Rows for Patches<'_> {
    fn rows(&self) -> usize {
        self.g.n * self.g.ho * self.g.wo
    }

    fn cols(&self) -> usize {
        self.g.patch_len()
    }

    /// Blocks stay inside one row of kernel taps: there a patch row reads
    /// consecutive input pixels of one input row, so it is contiguous in
    /// `x` unless it crosses the left or right border.
    fn block_end(&self, k0: usize, limit: usize) -> usize {
        let tap_row = self.g.k * self.g.cin;
        limit.min((k0 / tap_row + 1) * tap_row)
    }

    fn row_ptrs(
        &self,
        i0: usize,
        k0: usize,
        k1: usize,
        scratch: &mut [f32],
        ptrs: &mut [*const f32],
    ) {
        let (g, len) = (self.g, k1 - k0);
        let tap_row = g.k * g.cin;
        let (ky, start) = (k0 / tap_row, k0 % tap_row);
        debug_assert!(start + len <= tap_row);
        let taps = start / g.cin..(start + len - 1) / g.cin + 1;
        let pixels = ptrs.iter_mut().zip(g.pixels_from(i0));
        for (i, (p, (n, oy, ox))) in pixels.enumerate() {
            *p = std::ptr::null();
            let Some(iy) = (oy * g.stride + ky)
                .checked_sub(g.pad)
                .filter(|&iy| iy < g.h)
            else {
                continue;
            };
            // Input column of tap kx: `ox * stride + kx - pad`.
            let ix = |kx: usize| {
                (ox * g.stride + kx)
                    .checked_sub(g.pad)
                    .filter(|&ix| ix < g.w)
            };
            let row = &self.x[(n * g.h + iy) * g.w * g.cin..][..g.w * g.cin];
            let (first, last) = (ix(taps.start), ix(taps.end - 1));
            if let (Some(first), Some(_)) = (first, last) {
                *p = row[first * g.cin + start % g.cin..][..len].as_ptr();
            } else {
                // Across a border (or both, in an input narrower than the
                // kernel): the taps inside copied, the rest zero.
                let dst = &mut scratch[i * len..][..len];
                for kx in taps.clone() {
                    let (a, b) = (start.max(kx * g.cin), (start + len).min((kx + 1) * g.cin));
                    let part = &mut dst[a - start..b - start];
                    match ix(kx) {
                        Some(c) => {
                            part.copy_from_slice(&row[c * g.cin + a - kx * g.cin..][..b - a])
                        }
                        None => part.fill(0.0),
                    }
                }
                *p = dst.as_ptr();
            }
        }
    }
}

/// `out (+)= patches(x) * w`, `w` the packed `[k*k*cin, cout]` weight.
fn conv_gemm(g: &ConvGeom, x: &[f32], w: &PackedB, out: &mut [f32], accumulate: bool) {
    if g.is_pointwise() {
        let pixels = g.n * g.h * g.w;
        matmul_packed(&Mat::rows(x, pixels, g.cin), w, out, g.cout, accumulate);
    } else {
        matmul_packed(&Patches { g, x }, w, out, g.cout, accumulate);
    }
}

/// Adds the patch gradients of images `n0..` back into their input pixels.
fn col2im(g: &ConvGeom, dpatches: &[f32], n0: usize, dx: &mut [f32]) {
    let plen = g.patch_len();
    dx.par_chunks_mut(g.cin).enumerate().for_each(|(i, px)| {
        let (n, iy, ix) = (i / (g.h * g.w), (i / g.w) % g.h, i % g.w);
        debug_assert!(n0 + n < g.n);
        for ky in 0..g.k {
            let Some(ty) = (iy + g.pad).checked_sub(ky) else {
                continue;
            };
            if ty % g.stride != 0 || ty / g.stride >= g.ho {
                continue;
            }
            for kx in 0..g.k {
                let Some(tx) = (ix + g.pad).checked_sub(kx) else {
                    continue;
                };
                if tx % g.stride != 0 || tx / g.stride >= g.wo {
                    continue;
                }
                let row = (n * g.ho + ty / g.stride) * g.wo + tx / g.stride;
                let src = &dpatches[row * plen + (ky * g.k + kx) * g.cin..][..g.cin];
                for (d, s) in px.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    });
}

fn broadcast_bias(out: &mut [f32], bias: Option<&Tensor>, cout: usize) {
    if let Some(b) = bias {
        for row in out.chunks_mut(cout) {
            row.copy_from_slice(b.data());
        }
    }
}

/// The im2col matrix transposed (row: (ky, kx, ci), column: output
/// pixel), for the weight gradient `dw^T = patches^T * dy`, read from the
/// input transposed once into channel planes (`[cin, n*h*w]`): a row is then
/// a channel plane shifted by its tap, contiguous along each output image
/// row, so the packing step copies runs instead of transposing every
/// element once per tap.
struct PatchesT<'a> {
    g: &'a ConvGeom,
    planes: &'a [f32],
    /// The output pixels (columns) this view covers.
    pixels: std::ops::Range<usize>,
}

impl Rows for PatchesT<'_> {
    fn rows(&self) -> usize {
        self.g.patch_len()
    }

    fn cols(&self) -> usize {
        self.pixels.len()
    }

    fn row_ptrs(
        &self,
        i0: usize,
        k0: usize,
        k1: usize,
        scratch: &mut [f32],
        ptrs: &mut [*const f32],
    ) {
        let (g, kc, k0) = (self.g, k1 - k0, self.pixels.start + k0);
        let plane_len = g.n * g.h * g.w;
        for (i, dst) in scratch.chunks_exact_mut(kc).take(ptrs.len()).enumerate() {
            let (tap, ci) = ((i0 + i) / g.cin, (i0 + i) % g.cin);
            let (ky, kx) = (tap / g.k, tap % g.k);
            let plane = &self.planes[ci * plane_len..][..plane_len];
            // One run per output row the block covers (a whole row but
            // perhaps the first and the last).
            let (mut k, mut ox) = (0, k0 % g.wo);
            for (n, oy, _) in g.rows_from(k0) {
                if k == kc {
                    break;
                }
                let run = &mut dst[k..][..(g.wo - ox).min(kc - k)];
                k += run.len();
                let iy = (oy * g.stride + ky)
                    .checked_sub(g.pad)
                    .filter(|&iy| iy < g.h);
                let Some(iy) = iy else {
                    run.fill(0.0);
                    continue;
                };
                let row = &plane[(n * g.h + iy) * g.w..][..g.w];
                // Output columns ox + j whose input column
                // (ox + j) * stride + kx - pad lies inside the row.
                let first = g.pad.saturating_sub(kx).div_ceil(g.stride);
                let last = (g.w + g.pad - kx).div_ceil(g.stride).min(g.wo);
                let clip = |o: usize| o.clamp(ox, ox + run.len()) - ox;
                let inside = clip(first)..clip(last).max(clip(first));
                run[..inside.start].fill(0.0);
                run[inside.end..].fill(0.0);
                let col = |j: usize| (ox + j) * g.stride + kx - g.pad;
                match g.stride {
                    1 => run[inside.clone()]
                        .copy_from_slice(&row[col(inside.start)..][..inside.len()]),
                    _ => {
                        for j in inside {
                            run[j] = row[col(j)];
                        }
                    }
                }
                ox = 0;
            }
        }
        point_at_rows(scratch, kc, ptrs);
    }
}

/// `x` (`[pixels, c]`) transposed into `planes` (`[c, pixels]`), eight
/// planes per task, 8x8 blocks at a time where they fit.
fn to_channel_planes(x: &[f32], pixels: usize, c: usize, planes: &mut [f32]) {
    planes
        .par_chunks_mut(8 * pixels)
        .enumerate()
        .for_each(|(group, out)| {
            let c0 = group * 8;
            let width = (c - c0).min(8);
            let blocked = if width == 8 && transpose8_available() {
                pixels / 8 * 8
            } else {
                0
            };
            for p in (0..blocked).step_by(8) {
                let src = std::array::from_fn(|j| &x[(p + j) * c + c0..][..8]);
                transpose8(src, &mut out[p..], pixels);
            }
            for p in blocked..pixels {
                for ch in 0..width {
                    out[ch * pixels + p] = x[p * c + c0 + ch];
                }
            }
        });
}

fn transpose8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `dst[c * ld + j] = src[j][c]` for an 8x8 block (the first 8 floats of
/// each `src`), in eight registers and 24 shuffles. Call only when
/// `transpose8_available()`.
fn transpose8(src: [&[f32]; 8], dst: &mut [f32], ld: usize) {
    assert!(src.iter().all(|s| s.len() >= 8) && dst.len() >= 7 * ld + 8);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the lengths are checked above, AVX2 by the caller.
    unsafe {
        transpose8_avx2(src, dst.as_mut_ptr(), ld)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("transpose8 without AVX2");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose8_avx2(src: [&[f32]; 8], dst: *mut f32, ld: usize) {
    use std::arch::x86_64::*;
    let r = src.map(|s| _mm256_loadu_ps(s.as_ptr()));
    // Pairs of rows interleaved, then pairs of pairs: each register holds
    // four rows of two columns, one per 128-bit half.
    let lo = |a, b| _mm256_unpacklo_ps(a, b);
    let hi = |a, b| _mm256_unpackhi_ps(a, b);
    let (t0, t1, t2, t3) = (
        lo(r[0], r[1]),
        hi(r[0], r[1]),
        lo(r[2], r[3]),
        hi(r[2], r[3]),
    );
    let (t4, t5, t6, t7) = (
        lo(r[4], r[5]),
        hi(r[4], r[5]),
        lo(r[6], r[7]),
        hi(r[6], r[7]),
    );
    let even = |a, b| _mm256_shuffle_ps::<0x44>(a, b);
    let odd = |a, b| _mm256_shuffle_ps::<0xEE>(a, b);
    let top = [even(t0, t2), odd(t0, t2), even(t1, t3), odd(t1, t3)];
    let bottom = [even(t4, t6), odd(t4, t6), even(t5, t7), odd(t5, t7)];
    for c in 0..4 {
        let first = _mm256_permute2f128_ps::<0x20>(top[c], bottom[c]);
        let second = _mm256_permute2f128_ps::<0x31>(top[c], bottom[c]);
        _mm256_storeu_ps(dst.add(c * ld), first);
        _mm256_storeu_ps(dst.add((c + 4) * ld), second);
    }
}

pub fn conv2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, stride: usize) -> Tensor {
    let g = ConvGeom::new(x, weight, stride);
    let mut out = zeros(g.n * g.ho * g.wo * g.cout);
    broadcast_bias(&mut out, bias, g.cout);
    let w = PackedB::new(Mat::rows(weight.data(), g.cout, g.patch_len()).t());
    conv_gemm(&g, x.data(), &w, &mut out, bias.is_some());
    Tensor::from_vec(&[g.n, g.ho, g.wo, g.cout], out)
}

/// The input gradient of a stride-1 convolution: the convolution of `dy`
/// with the weight flipped in space and its channels swapped,
/// `w'[ci, ky, kx, co] = w[co, k-1-ky, k-1-kx, ci]`.
fn input_grad_stride1(g: &ConvGeom, weight: &[f32], dy: &[f32], dx: &mut [f32]) {
    debug_assert_eq!(g.stride, 1);
    let taps = g.k * g.k;
    let back = ConvGeom {
        cin: g.cout,
        cout: g.cin,
        h: g.ho,
        w: g.wo,
        ho: g.h,
        wo: g.w,
        ..*g
    };
    let packed = with_scratch(weight.len(), |w| {
        for co in 0..g.cout {
            for tap in 0..taps {
                let src = &weight[(co * taps + tap) * g.cin..][..g.cin];
                for (ci, &v) in src.iter().enumerate() {
                    w[(ci * taps + taps - 1 - tap) * g.cout + co] = v;
                }
            }
        }
        PackedB::new(Mat::rows(w, g.cin, taps * g.cout).t())
    });
    conv_gemm(&back, dy, &packed, dx, false);
}

/// Gradients of `conv2d` with respect to input, weight and bias; each is
/// computed only when asked for.
pub struct ConvGrads {
    pub dx: Option<Tensor>,
    pub dw: Option<Tensor>,
    pub db: Option<Tensor>,
}

pub fn conv2d_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    stride: usize,
    need: [bool; 3],
) -> ConvGrads {
    let g = ConvGeom::new(x, weight, stride);
    let plen = g.patch_len();
    let pixels = g.n * g.ho * g.wo;
    let dy_mat = Mat::rows(dy.data(), pixels, g.cout);
    let w_mat = Mat::rows(weight.data(), g.cout, plen);
    let mut dx = need[0].then(|| zeros(x.numel()));
    let mut dw = need[1].then(|| zeros(weight.numel()));
    if g.is_pointwise() {
        if let Some(dx) = dx.as_mut() {
            matmul(dy_mat, w_mat, dx, g.cin, false);
        }
        if let Some(dw) = dw.as_mut() {
            matmul(
                dy_mat.t(),
                Mat::rows(x.data(), pixels, g.cin),
                dw,
                plen,
                false,
            );
        }
    } else {
        if let Some(dw) = dw.as_mut() {
            weight_grad(&g, x.data(), dy.data(), dw);
        }
        if let Some(dx) = dx.as_mut() {
            if g.stride == 1 {
                input_grad_stride1(&g, weight.data(), dy.data(), dx);
            } else {
                input_grad_gathered(&g, w_mat, dy, dx);
            }
        }
    }
    ConvGrads {
        dx: dx.map(|d| Tensor::from_vec(x.shape(), d)),
        dw: dw.map(|d| Tensor::from_vec(weight.shape(), d)),
        db: need[2].then(|| super::sum_rows(dy)),
    }
}

/// Output pixels per weight-gradient chunk, at most: the chunk's share of
/// the input planes (at most 512 KB at 128 channels) stays in L2 while all
/// its taps are read.
const WEIGHT_GRAD_CHUNK: usize = 1024;

/// `dw^T = patches^T * dy` (`[k*k*cin, cout]`), transposed into the
/// weight's `[cout, k*k*cin]`. The output pixels are cut into chunks, one
/// task each with its own partial sum (a single chunk splits its rows
/// instead); the partials are added in chunk order, so the bits do
/// not depend on the thread count. Cut along rows of the product instead,
/// every task streamed the whole input from L3 for its few rows.
fn weight_grad(g: &ConvGeom, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (plen, pixels) = (g.patch_len(), g.n * g.ho * g.wo);
    let chunk = WEIGHT_GRAD_CHUNK;
    let part_len = plen * g.cout;
    with_scratch(x.len() + pixels.div_ceil(chunk) * part_len, |buf| {
        let (planes, parts) = buf.split_at_mut(x.len());
        to_channel_planes(x, g.n * g.h * g.w, g.cin, planes);
        let chunk_grad = |(c, part): (usize, &mut [f32])| {
            let ks = c * chunk..((c + 1) * chunk).min(pixels);
            let dy_rows = Mat::rows(&dy[ks.start * g.cout..ks.end * g.cout], ks.len(), g.cout);
            let patches_t = PatchesT {
                g,
                planes,
                pixels: ks,
            };
            matmul_packed(&patches_t, &PackedB::new(dy_rows), part, g.cout, false);
        };
        if parts.len() == part_len {
            // One chunk: the product itself splits its rows over the pool.
            chunk_grad((0, parts));
        } else {
            parts
                .par_chunks_mut(part_len)
                .enumerate()
                .for_each(chunk_grad);
        }
        let (total, rest) = parts.split_at_mut(part_len);
        for part in rest.chunks(part_len) {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        let total = &*total;
        dw.par_chunks_mut(plen).enumerate().for_each(|(co, row)| {
            for (p, v) in row.iter_mut().enumerate() {
                *v = total[p * g.cout + co];
            }
        });
    });
}

/// The input gradient at any stride: `dy * W` per chunk of whole images
/// (so that col2im sees every patch of a pixel), gathered back per pixel.
fn input_grad_gathered(g: &ConvGeom, w_mat: Mat, dy: &Tensor, dx: &mut [f32]) {
    let (plen, per_image) = (g.patch_len(), g.ho * g.wo);
    let images = (PATCH_ELEMS_PER_CHUNK / (per_image * plen)).clamp(1, g.n);
    let image_len = g.h * g.w * g.cin;
    with_scratch(images * per_image * plen, |patches| {
        for n0 in (0..g.n).step_by(images) {
            let count = images.min(g.n - n0);
            let rows = count * per_image;
            let patches = &mut patches[..rows * plen];
            let dy_chunk = Mat::rows(&dy.data()[n0 * per_image * g.cout..], rows, g.cout);
            matmul(dy_chunk, w_mat, patches, plen, false);
            col2im(
                g,
                patches,
                n0,
                &mut dx[n0 * image_len..(n0 + count) * image_len],
            );
        }
    });
}

/// The definition, loop by loop.
pub fn conv2d_reference(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
) -> Tensor {
    let g = ConvGeom::new(x, weight, stride);
    let (xd, wd) = (x.data(), weight.data());
    let mut out = zeros(g.n * g.ho * g.wo * g.cout);
    for n in 0..g.n {
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                for co in 0..g.cout {
                    let mut acc = bias.map_or(0.0, |b| b.data()[co] as f64);
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else {
                                continue;
                            };
                            for ci in 0..g.cin {
                                acc += xd[((n * g.h + iy) * g.w + ix) * g.cin + ci] as f64
                                    * wd[((co * g.k + ky) * g.k + kx) * g.cin + ci] as f64;
                            }
                        }
                    }
                    out[((n * g.ho + oy) * g.wo + ox) * g.cout + co] = acc as f32;
                }
            }
        }
    }
    Tensor::from_vec(&[g.n, g.ho, g.wo, g.cout], out)
}

/// The backward definition, loop by loop: every product of the forward sum
/// sends its share of `dy` to both factors.
pub fn conv2d_backward_reference(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    stride: usize,
) -> ConvGrads {
    let g = ConvGeom::new(x, weight, stride);
    let (xd, wd, dyd) = (x.data(), weight.data(), dy.data());
    let mut dx = zeros(x.numel());
    let mut dw = zeros(weight.numel());
    for n in 0..g.n {
        for oy in 0..g.ho {
            for ox in 0..g.wo {
                for co in 0..g.cout {
                    let d = dyd[((n * g.ho + oy) * g.wo + ox) * g.cout + co];
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else {
                                continue;
                            };
                            for ci in 0..g.cin {
                                let xi = ((n * g.h + iy) * g.w + ix) * g.cin + ci;
                                let wi = ((co * g.k + ky) * g.k + kx) * g.cin + ci;
                                dx[xi] += d * wd[wi];
                                dw[wi] += d * xd[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    ConvGrads {
        dx: Some(Tensor::from_vec(x.shape(), dx)),
        dw: Some(Tensor::from_vec(weight.shape(), dw)),
        db: Some(super::sum_rows(dy)),
    }
}
