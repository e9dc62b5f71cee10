//! The CPU's matrix product: `out (+)= a * b` on strided f32 views.
//!
//! Every fast CPU path (convolution, linear, attention) is a matrix product
//! over views of NHWC buffers; strides let transposes and channel slices be
//! read in place instead of copied.
//!
//! How: `b` is packed once per call into strips of NR columns, KC rows
//! deep (the BLIS scheme); each task owns an MC x NC block of `out` and runs
//! an MR x NR register-tile microkernel over every (row strip, column strip)
//! pair, one depth block at a time. The left operand is not packed: the
//! microkernel takes one pointer per row, each to `kc` contiguous floats, and
//! broadcasts from them, so a row-major `a` and a convolution's patches
//! (rows of its input, or a zero row in the padding) are read in place; only
//! a transposed `a` is gathered into a scratch block first. A B strip
//! (KC x NR) stays in L1 while the task's rows pass over it. Microkernels,
//! picked at run time from what the CPU has: AVX-512 (12 x 32, 24 zmm
//! accumulators), AVX2 + FMA (6 x 16, 12 ymm), and a portable one (4 x 8).
//! Written here rather than taken from the `gemm` crate because its AVX-512
//! kernels need a nightly compiler, and on stable it ran the engine's
//! products at 35-55 GFLOP/s on 2 AVX-512 cores
//! (benches/results/cpu-profile-small-xeon-2core.md).
//!
//! Threads: a product big enough to pay for them splits its blocks over the
//! rayon pool; one issued from inside a rayon task (attention runs one task
//! per query block) runs on that task's thread, so the pool is never
//! oversubscribed. Every element of `out` is summed in the same order
//! whatever the thread count, so results do not depend on it.

use super::math::multiversion;
use super::{give_scratch, take_scratch, with_scratch};
use rayon::prelude::*;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

static USE_BF16: AtomicBool = AtomicBool::new(false);

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A dense row-major `rows x cols` matrix at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Mat<'a> {
        Mat::strided(data, rows, cols, cols, 1)
    }

    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Mat<'a> {
        let m = Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        };
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (strides {rs}, {cs}) runs past a buffer of {}",
            data.len()
        );
        m
    }

    /// The transpose, as a view of the same numbers.
    pub fn t(self) -> Mat<'a> {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// The left operand of a product, as the microkernel reads it: a strided
/// matrix, or the patches of a convolution gathered straight from its input
/// (`conv::Patches`, an implicit im2col).
pub trait Rows: Sync {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    /// The end of the depth block that starts at `k0` (at most `limit`):
    /// a block never spans a place where a row stops being contiguous.
    fn block_end(&self, _k0: usize, limit: usize) -> usize {
        limit
    }
    /// Pointers to columns `k0..k1` of rows `i0..i0 + ptrs.len()`, each run
    /// contiguous; null for a row that is all zero there. `scratch` holds
    /// `ptrs.len() * (k1 - k0)` floats for a source that must gather.
    fn row_ptrs(
        &self,
        i0: usize,
        k0: usize,
        k1: usize,
        scratch: &mut [f32],
        ptrs: &mut [*const f32],
    );
}

impl Rows for Mat<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn cols(&self) -> usize {
        self.cols
    }

    fn row_ptrs(
        &self,
        i0: usize,
        k0: usize,
        k1: usize,
        scratch: &mut [f32],
        ptrs: &mut [*const f32],
    ) {
        let kc = k1 - k0;
        // Rows a multiple of 4 KB apart fall in the same L1 sets and evict
        // each other while the kernel walks them in step: copied instead.
        let aliasing = self.rs.is_multiple_of(ALIASING_STRIDE);
        if self.cs == 1 && !aliasing {
            for (i, p) in ptrs.iter_mut().enumerate() {
                *p = self.data[(i0 + i) * self.rs + k0..][..kc].as_ptr();
            }
            return;
        }
        if self.cs == 1 {
            for (i, dst) in scratch.chunks_exact_mut(kc).take(ptrs.len()).enumerate() {
                dst.copy_from_slice(&self.data[(i0 + i) * self.rs + k0..][..kc]);
            }
        } else {
            // A transposed view: gathered column by column (each column
            // is contiguous when rs == 1).
            let rows = ptrs.len();
            for k in 0..kc {
                let column = &self.data[(k0 + k) * self.cs..];
                for i in 0..rows {
                    scratch[i * kc + k] = column[(i0 + i) * self.rs];
                }
            }
        }
        point_at_rows(scratch, kc, ptrs);
    }
}

/// Points `ptrs` at consecutive rows of `len` floats in `rows`: where a
/// source that gathers leaves its rows.
pub fn point_at_rows(rows: &[f32], len: usize, ptrs: &mut [*const f32]) {
    for (row, p) in rows.chunks(len).zip(ptrs.iter_mut()) {
        *p = row.as_ptr();
    }
}

/// Depth of one packed block: KC x NR floats of B (32 KB at NR = 32) fit L1.
pub const KC: usize = 256;
/// Row strides (in floats) that are multiples of this alias in L1.
const ALIASING_STRIDE: usize = 1024;
/// What a null row pointer reads: a zero row of one block.
static ZERO_ROW: [f32; KC] = [0.0; KC];
/// Output columns per task.
const NC: usize = 256;
/// Row strips per task: MC = 8 MR rows (96 KB of packed A at MR = 12) fit L2.
const STRIPS_PER_TASK: usize = 8;
/// Tasks a threaded product is cut into, at least, where its rows allow.
const MIN_TASKS: usize = 32;
/// The most rows a task has (the largest MR times STRIPS_PER_TASK).
const MAX_TASK_ROWS: usize = 12 * STRIPS_PER_TASK;
/// Below this many multiply-adds a product runs on one thread.
const THREADING_THRESHOLD: usize = 1 << 18;

/// The register-tile microkernels this build has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
    Portable,
    /// AVX512-BF16: operands rounded to bf16, products summed in f32
    /// (`vdpbf16ps`, two depth steps per instruction). Opt-in
    /// (`--precision bf16` on the CPU), never picked by `best`.
    Avx512Bf16,
}

impl Kernel {
    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Kernel::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                kernels.push(Kernel::Avx2);
            }
        }
        kernels.push(Kernel::Portable);
        kernels
    }

    /// The fastest f32 kernel this CPU runs (detected once).
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| Kernel::available()[0])
    }

    /// The bf16 kernel, when this CPU has AVX512-BF16.
    pub fn bf16() -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return Some(Kernel::Avx512Bf16);
        }
        None
    }

    /// The kernel products run with: the fastest f32 one, or the bf16 one
    /// after `use_bf16(true)`.
    pub fn current() -> Kernel {
        match USE_BF16.load(Ordering::Relaxed) {
            true => Kernel::Avx512Bf16,
            false => Kernel::best(),
        }
    }

    /// Switches every later product to bf16 operands (or back); an error
    /// when the CPU has no AVX512-BF16.
    pub fn use_bf16(on: bool) -> Result<(), String> {
        if on && Kernel::bf16().is_none() {
            return Err("this CPU has no AVX512-BF16 for --precision bf16 (use f32)".into());
        }
        USE_BF16.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn is_bf16(self) -> bool {
        self == Kernel::Avx512Bf16
    }

    /// Depth steps the kernel takes for `kc` of the product (bf16 pairs).
    fn steps(self, kc: usize) -> usize {
        if self.is_bf16() {
            kc.div_ceil(2)
        } else {
            kc
        }
    }

    /// Rows x columns of the register tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Kernel::Avx512 | Kernel::Avx512Bf16 => (12, 32),
            Kernel::Avx2 => (6, 16),
            Kernel::Portable => (4, 8),
        }
    }

    /// `c[i * ldc + j] (+)= sum_k a[i][k] * b[k * NR + j]` over one full
    /// MR x NR tile, `kc` steps deep (for bf16 each float slot of `a` and
    /// `b` holds a pair of bf16 along the depth, the first in the low half).
    ///
    /// # Safety
    /// `a` holds MR pointers to `kc` floats each, `b` holds `kc * NR`
    /// floats, `c` reaches `(MR - 1) * ldc + NR` floats, and the CPU has the
    /// kernel's features (`Kernel::available` lists it).
    unsafe fn run(
        self,
        kc: usize,
        a: *const *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => x86::tile_avx512(kc, a, b, c, ldc, acc),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::tile_avx2(kc, a, b, c, ldc, acc),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => x86::tile_avx512_bf16(kc, a, b, c, ldc, acc),
            Kernel::Portable => tile_portable(kc, a, b, c, ldc, acc),
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernel selected on another architecture"),
        }
    }
}

/// The portable tile: plain arrays the compiler vectorises for the baseline
/// target.
unsafe fn tile_portable(
    kc: usize,
    a: *const *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    const MR: usize = 4;
    const NR: usize = 8;
    let mut sum = [[0.0f32; NR]; MR];
    for k in 0..kc {
        let bk = std::slice::from_raw_parts(b.add(k * NR), NR);
        for (i, row) in sum.iter_mut().enumerate() {
            let ai = *(*a.add(i)).add(k);
            for (s, &bv) in row.iter_mut().zip(bk) {
                *s += ai * bv;
            }
        }
    }
    for (i, row) in sum.iter().enumerate() {
        let out = std::slice::from_raw_parts_mut(c.add(i * ldc), NR);
        for (o, &s) in out.iter_mut().zip(row) {
            *o = if acc { *o + s } else { s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `tile_kernel! { name, "features", MR, NV, LANES, zero, load, store,
    /// splat, fma, add }` defines one tile kernel for any vector width: MR
    /// rows, NV vectors of LANES columns, the intrinsics named compiled with
    /// the instruction set `features` enables.
    macro_rules! tile_kernel {
        ($name:ident, $features:literal, $mr:literal, $nv:literal, $lanes:literal,
         $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident, $add:ident) => {
            #[target_feature(enable = $features)]
            pub unsafe fn $name(
                kc: usize,
                a: *const *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                acc: bool,
            ) {
                let rows: [*const f32; $mr] = *(a as *const [*const f32; $mr]);
                let mut sum = [[$zero(); $nv]; $mr];
                for k in 0..kc {
                    let bk = b.add(k * $nv * $lanes);
                    let mut bv = [$zero(); $nv];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        *slot = $load(bk.add(v * $lanes));
                    }
                    for (i, row) in sum.iter_mut().enumerate() {
                        let ai = $splat(*rows[i].add(k));
                        for (s, &b) in row.iter_mut().zip(&bv) {
                            *s = $fma(ai, b, *s);
                        }
                    }
                }
                for (i, row) in sum.iter().enumerate() {
                    for (v, &s) in row.iter().enumerate() {
                        let p = c.add(i * ldc + v * $lanes);
                        $store(p, if acc { $add($load(p), s) } else { s });
                    }
                }
            }
        };
    }

    /// `sum + a . b` over the bf16 pairs in each 32-bit lane.
    #[inline(always)]
    unsafe fn dot_bf16_pairs(a: __m512, b: __m512, sum: __m512) -> __m512 {
        _mm512_dpbf16_ps(
            sum,
            std::mem::transmute::<__m512, __m512bh>(a),
            std::mem::transmute::<__m512, __m512bh>(b),
        )
    }

    tile_kernel! { tile_avx512, "avx512f", 12, 2, 16, _mm512_setzero_ps, _mm512_loadu_ps,
    _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps }

    // With `vdpbf16ps`: the broadcast of a float slot of `a` is the
    // broadcast of its bf16 pair.
    tile_kernel! { tile_avx512_bf16, "avx512f,avx512bf16", 12, 2, 16, _mm512_setzero_ps,
    _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, dot_bf16_pairs, _mm512_add_ps }

    tile_kernel! { tile_avx2, "avx2,fma", 6, 2, 8, _mm256_setzero_ps, _mm256_loadu_ps,
    _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps }
}

/// `b` packed for one kernel: for each KC block of rows, its columns in
/// strips of NR (zero-padded), each strip `kc x NR` row-major.
pub struct PackedB {
    kernel: Kernel,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl PackedB {
    pub fn new(b: Mat) -> PackedB {
        PackedB::with_kernel(Kernel::current(), b)
    }

    pub fn with_kernel(kernel: Kernel, b: Mat) -> PackedB {
        let nr = kernel.tile().1;
        let strips = b.cols.div_ceil(nr);
        let mut data = take_scratch(kernel.steps(b.rows) * strips * nr);
        let parallel = b.rows * b.cols >= THREADING_THRESHOLD / 4 && outside_pool();
        for k0 in (0..b.rows).step_by(KC) {
            let kc = KC.min(b.rows - k0);
            let (start, steps) = (kernel.steps(k0), kernel.steps(kc));
            let block = &mut data[start * strips * nr..][..steps * strips * nr];
            let pack = |(s, strip): (usize, &mut [f32])| {
                if kernel.is_bf16() {
                    pack_strip_bf16(b, k0, kc, s * nr, nr, strip)
                } else {
                    pack_strip(b, k0, kc, s * nr, nr, strip)
                }
            };
            if parallel {
                block.par_chunks_mut(steps * nr).enumerate().for_each(pack);
            } else {
                block.chunks_mut(steps * nr).enumerate().for_each(pack);
            }
        }
        PackedB {
            kernel,
            rows: b.rows,
            cols: b.cols,
            data,
        }
    }

    /// Rows `k0..k0 + kc` of column strip `strip`; they lie in one KC block
    /// (for bf16, they are the whole block).
    fn strip(&self, k0: usize, kc: usize, strip: usize) -> &[f32] {
        let nr = self.kernel.tile().1;
        let strips = self.cols.div_ceil(nr);
        let block = k0 / KC * KC;
        let depth = KC.min(self.rows - block);
        debug_assert!(k0 + kc <= block + depth);
        debug_assert!(!self.kernel.is_bf16() || (k0 == block && kc == depth));
        let (start, steps) = (self.kernel.steps(block), self.kernel.steps(depth));
        let offset = start * strips + strip * steps + (k0 - block);
        &self.data[offset * nr..][..self.kernel.steps(kc) * nr]
    }
}

impl Drop for PackedB {
    fn drop(&mut self) {
        give_scratch(std::mem::take(&mut self.data));
    }
}

/// Rows `k0..k0 + kc`, columns `j0..j0 + nr` of `b` into `dst` (`kc x nr`),
/// zero past the last column; reads along whichever stride is unit.
fn pack_strip(b: Mat, k0: usize, kc: usize, j0: usize, nr: usize, dst: &mut [f32]) {
    let width = nr.min(b.cols - j0);
    if width < nr {
        dst.fill(0.0);
    }
    if b.cs == 1 {
        for (k, row) in dst.chunks_mut(nr).enumerate() {
            let start = (k0 + k) * b.rs + j0;
            row[..width].copy_from_slice(&b.data[start..start + width]);
        }
    } else {
        for j in 0..width {
            for k in 0..kc {
                dst[k * nr + j] = b.at(k0 + k, j0 + j);
            }
        }
    }
}

/// `x` rounded to the nearest bf16, ties to even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if x.is_nan() {
        0x7FC0
    } else {
        rounded
    }
}

/// Two bf16 in one float slot, `lo` in the low half (the depth order
/// `vdpbf16ps` multiplies in).
fn bf16_pair(lo: f32, hi: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(lo)) | (u32::from(bf16_bits(hi)) << 16))
}

/// `pack_strip` for the bf16 kernel: `ceil(kc / 2)` rows of pairs.
fn pack_strip_bf16(b: Mat, k0: usize, kc: usize, j0: usize, nr: usize, dst: &mut [f32]) {
    let width = nr.min(b.cols - j0);
    dst.fill(0.0);
    for (p, row) in dst.chunks_mut(nr).enumerate() {
        let (k, k_next) = (k0 + 2 * p, k0 + 2 * p + 1);
        for (j, slot) in row.iter_mut().enumerate().take(width) {
            let hi = if k_next < k0 + kc {
                b.at(k_next, j0 + j)
            } else {
                0.0
            };
            *slot = bf16_pair(b.at(k, j0 + j), hi);
        }
    }
}

multiversion! {
/// Rounds `src` to bf16 into `dst` (a bf16 row seen as u16).
fn round_to_bf16(src: &[f32], dst: &mut [u16]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = bf16_bits(v);
    }
}
}

fn outside_pool() -> bool {
    rayon::current_thread_index().is_none()
}

/// `out`'s base pointer, shared by the tasks that write disjoint blocks.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint blocks of the buffer behind the pointer, which
// the caller of `matmul_packed` borrows mutably for the whole call.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out = a * b` (or `out += a * b` when `accumulate`), where `out` is
/// row-major with row stride `ldo`.
pub fn matmul(a: Mat, b: Mat, out: &mut [f32], ldo: usize, accumulate: bool) {
    matmul_with(Kernel::current(), a, b, out, ldo, accumulate)
}

/// `matmul` with a chosen kernel (tests run every kernel the CPU has).
pub fn matmul_with(kernel: Kernel, a: Mat, b: Mat, out: &mut [f32], ldo: usize, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matmul inner dimensions differ");
    let packed = PackedB::with_kernel(kernel, b);
    matmul_packed(&a, &packed, out, ldo, accumulate);
}

/// `matmul` against a `b` packed beforehand (attention packs K and V once
/// for all its query blocks, a convolution its weights), with any `Rows`.
pub fn matmul_packed(a: &impl Rows, b: &PackedB, out: &mut [f32], ldo: usize, accumulate: bool) {
    assert_eq!(a.cols(), b.rows, "matmul inner dimensions differ");
    let (m, k, n) = (a.rows(), a.cols(), b.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldo >= n && (m - 1) * ldo + n <= out.len(),
        "matmul output too small"
    );
    if k == 0 {
        if !accumulate {
            for row in out.chunks_mut(ldo).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    let (mr, _) = b.kernel.tile();
    let col_blocks = n.div_ceil(NC);
    // Fewer strips per task when that is what it takes to have MIN_TASKS
    // tasks: a handful of big ones leaves a core idle at the end.
    let strips_per_task = m
        .div_ceil(mr)
        .div_ceil(MIN_TASKS.div_ceil(col_blocks))
        .clamp(1, STRIPS_PER_TASK);
    let mc = mr * strips_per_task;
    let row_blocks = m.div_ceil(mc);
    let out_ptr = OutPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (i0, j0) = ((t / col_blocks) * mc, (t % col_blocks) * NC);
        let rows = (i0..(i0 + mc).min(m), j0..(j0 + NC).min(n));
        // SAFETY: the block's rows and columns lie inside `out` (asserted
        // above) and no other task writes them.
        unsafe { block(a, b, rows, out_ptr, ldo, accumulate) }
    };
    let tasks = row_blocks * col_blocks;
    if m * n * k >= THREADING_THRESHOLD && tasks > 1 && outside_pool() {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// One task: rows x cols of `out`, every depth block of the inner dimension.
///
/// # Safety
/// The block lies inside the `out` buffer behind `out`, and nothing else
/// touches it during the call.
unsafe fn block(
    a: &impl Rows,
    b: &PackedB,
    (rows, cols): (std::ops::Range<usize>, std::ops::Range<usize>),
    out: OutPtr,
    ldo: usize,
    accumulate: bool,
) {
    let kernel = b.kernel;
    let (mr, nr) = kernel.tile();
    let k = a.cols();
    let strips = rows.len().div_ceil(mr);
    let mut all_ptrs = [ptr::null(); MAX_TASK_ROWS];
    let ptrs = &mut all_ptrs[..strips * mr];
    let gather_len = rows.len() * KC.min(k);
    let convert_len = if kernel.is_bf16() {
        rows.len() * KC.min(k).div_ceil(2)
    } else {
        0
    };
    with_scratch(gather_len + convert_len + mr * nr, |scratch| {
        let (gathered, rest) = scratch.split_at_mut(gather_len);
        let (converted, edge) = rest.split_at_mut(convert_len);
        let mut k0 = 0;
        while k0 < k {
            // Blocks end at B's KC boundaries too, so a block is a run of
            // rows inside one packed strip block (for bf16, the whole block:
            // the rows are rounded into `converted`, whatever their source).
            let block_end = ((k0 / KC + 1) * KC).min(k);
            let k1 = if kernel.is_bf16() {
                block_end
            } else {
                a.block_end(k0, block_end)
            };
            let kc = k1 - k0;
            let rows_here = &mut ptrs[..rows.len()];
            if kernel.is_bf16() {
                rows_as_bf16(a, rows.start, k0..k1, gathered, converted, rows_here);
            } else {
                a.row_ptrs(
                    rows.start,
                    k0,
                    k1,
                    &mut gathered[..rows.len() * kc],
                    rows_here,
                );
            }
            for p in ptrs.iter_mut() {
                if p.is_null() {
                    *p = ZERO_ROW.as_ptr();
                }
            }
            let (acc, steps) = (accumulate || k0 > 0, kernel.steps(kc));
            for j in (cols.start..cols.end).step_by(nr) {
                let bstrip = b.strip(k0, kc, j / nr).as_ptr();
                let width = nr.min(cols.end - j);
                for (s, strip_rows) in ptrs.chunks(mr).enumerate() {
                    let i = rows.start + s * mr;
                    let height = mr.min(rows.end - i);
                    let c = out.0.add(i * ldo + j);
                    if height == mr && width == nr {
                        kernel.run(steps, strip_rows.as_ptr(), bstrip, c, ldo, acc);
                    } else {
                        // An edge tile: computed whole into `edge`, then the
                        // part inside `out` is stored.
                        kernel.run(
                            steps,
                            strip_rows.as_ptr(),
                            bstrip,
                            edge.as_mut_ptr(),
                            nr,
                            false,
                        );
                        for r in 0..height {
                            let dst = std::slice::from_raw_parts_mut(c.add(r * ldo), width);
                            for (d, &e) in dst.iter_mut().zip(&edge[r * nr..r * nr + width]) {
                                *d = if acc { *d + e } else { e };
                            }
                        }
                    }
                }
            }
            k0 = k1;
        }
    })
}

/// Columns `ks` of rows `i0..i0 + ptrs.len()` of `a`, rounded to bf16 pairs
/// in `converted` (a row of `ceil(len / 2)` float slots each, zero-padded to
/// an even length); `ptrs` then points at them.
fn rows_as_bf16(
    a: &impl Rows,
    i0: usize,
    ks: std::ops::Range<usize>,
    gathered: &mut [f32],
    converted: &mut [f32],
    ptrs: &mut [*const f32],
) {
    let (rows, len) = (ptrs.len(), ks.len());
    let slots = len.div_ceil(2);
    let converted = &mut converted[..rows * slots];
    {
        let halves: &mut [u16] = bytemuck::cast_slice_mut(converted);
        let mut k0 = ks.start;
        while k0 < ks.end {
            let k1 = a.block_end(k0, ks.end);
            let part = k1 - k0;
            a.row_ptrs(i0, k0, k1, &mut gathered[..rows * part], ptrs);
            for (i, &p) in ptrs.iter().enumerate() {
                let dst = &mut halves[i * 2 * slots + k0 - ks.start..][..part];
                if p.is_null() {
                    dst.fill(0);
                } else {
                    // SAFETY: `row_ptrs` points at `part` floats of row i.
                    round_to_bf16(unsafe { std::slice::from_raw_parts(p, part) }, dst);
                }
            }
            k0 = k1;
        }
        if len % 2 == 1 {
            for i in 0..rows {
                halves[i * 2 * slots + len] = 0;
            }
        }
    }
    point_at_rows(converted, slots, ptrs);
}

/// Plain triple loop with the same contract as `matmul`: the reference the
/// fast path is tested against.
pub fn matmul_reference(a: Mat, b: Mat, out: &mut [f32], ldo: usize, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "matmul inner dimensions differ");
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut acc = 0.0f64;
            for p in 0..a.cols {
                acc += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let o = &mut out[i * ldo + j];
            *o = if accumulate {
                *o + acc as f32
            } else {
                acc as f32
            };
        }
    }
}
