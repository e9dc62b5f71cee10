//! `exp` and the sigmoid in straight-line f32 arithmetic, so the loops that
//! call them (softmax, SiLU, group norm) vectorise; libm's `expf` is a call
//! per element and was most of those ops' time.
//!
//! `exp`: Cephes' `expf` scheme: `x = n ln 2 + r` with `|r| <= ln 2 / 2`
//! (ln 2 split in two constants so `r` is exact), a degree-6 polynomial for
//! `e^r`, and `2^n` built in the exponent bits. Relative error below 2e-7
//! (checked against f64 in tests/ops.rs) over [-87.3, 88.7]; inputs below
//! give about 1e-38 instead of a denormal or 0, above give +inf, NaN stays
//! NaN.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding and subtracting 1.5 * 2^23 rounds an f32 of magnitude below 2^22 to
/// the nearest integer without a rounding instruction SSE2 lacks.
const ROUND: f32 = 12_582_912.0;

#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(-87.336_55, 88.722_83);
    // `shifted` holds n in its low mantissa bits; no float-to-int
    // conversion (Rust's saturating `as` would not vectorise).
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n for n in [-126, 128], as two factors so that n = 128 fits.
    let half = n_int >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n_int - half + 127) as u32) << 23);
    let y = e_r * scale_a * scale_b;
    if x.is_nan() {
        x
    } else if x > 88.722_83 {
        f32::INFINITY
    } else {
        y
    }
}

#[inline(always)]
pub fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// `multiversion! { fn name(args) { body } }` defines `name` compiled three
/// times (AVX-512, AVX2 + FMA, and the crate's SSE2 baseline) and run as the
/// widest this CPU has, so its loops (and the `#[inline(always)]` functions
/// they call, like `exp`) vectorise at that width. The numbers are the same
/// at every width: Rust never contracts `a * b + c` into an FMA, and the
/// bodies must not rely on the compiler to reorder a reduction.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
