//! Counter-based random numbers: Philox 4x32-10 (Salmon et al., SC'11).
//!
//! Every random number of the engine is a pure function of
//! (seed, stream, element index): no generator state to carry, save or
//! resume, and the GPU kernels compute the same function, so a CPU run and
//! a GPU run draw the same noise (to the rounding bound below). Streams separate purposes (a training
//! step's times, its noise, a sampler step's noise: see `Stream`).
//!
//! Layout: element i of a stream uses block `i / 4` (the Philox counter is
//! `[block lo, block hi, stream lo, stream hi]`, the key `[seed lo, seed
//! hi]`) and lane `i % 4`. Normals come from Box-Muller on lane pairs
//! (0,1) and (2,3), computed in f64 and rounded once to f32. The uniform
//! words are the same bits on every backend; the normals are not always:
//! here the angle is `cos`/`sin(TAU u)` (TAU u rounded once), on the GPU
//! (kernels/common.cuh) `sincospi(2 u)` (no argument rounding), and the
//! libraries' f64 log, sqrt and sin/cos may differ in a last bit. So the
//! f32 normals agree except where the f64 value sits next to an f32
//! rounding boundary, or is so close to 0 that the argument's rounding
//! (under 5e-16 radians) shows: there by at most one f32 unit in the
//! last place, or 1e-14 absolute near 0. GPU and CPU runs are compared to
//! that bound, not bit for bit.

use rayon::prelude::*;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// The Philox 4x32 bijection with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let (mut c, mut k) = (counter, key);
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The purposes random numbers are drawn for; each gets its own streams.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Training step `step`: the time of each image.
    TrainTime(u64),
    /// Training step `step`: the interpolant noise Z.
    TrainNoise(u64),
    /// Training step `step`: crop positions and flips.
    TrainData(u64),
    /// Sampling step `n` of a restoration: the posterior noise Z'.
    Sampler(u64),
}

impl Stream {
    pub fn id(self) -> u64 {
        // Low two bits: the purpose; the rest: the step.
        match self {
            Stream::TrainTime(s) => s << 2,
            Stream::TrainNoise(s) => (s << 2) | 1,
            Stream::TrainData(s) => (s << 2) | 2,
            Stream::Sampler(n) => (n << 2) | 3,
        }
    }
}

fn block(seed: u64, stream: u64, index: u64) -> [u32; 4] {
    let b = index / 4;
    philox4x32_10(
        [
            b as u32,
            (b >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        [seed as u32, (seed >> 32) as u32],
    )
}

/// Raw 32-bit word `index` of a stream.
pub fn uniform_u32(seed: u64, stream: Stream, index: u64) -> u32 {
    block(seed, stream.id(), index)[(index % 4) as usize]
}

/// Uniform in [0, 1) from word `index` of a stream.
pub fn uniform(seed: u64, stream: Stream, index: u64) -> f64 {
    uniform_u32(seed, stream, index) as f64 / 4294967296.0
}

/// The two normals of one Box-Muller pair.
fn box_muller(x: u32, y: u32) -> (f32, f32) {
    let u1 = (x as f64 + 1.0) / 4294967296.0; // (0, 1]: ln is finite
    let u2 = y as f64 / 4294967296.0;
    let r = (-2.0 * u1.ln()).sqrt();
    let theta = std::f64::consts::TAU * u2;
    ((r * theta.cos()) as f32, (r * theta.sin()) as f32)
}

/// Standard normal number `index` of a stream.
pub fn normal(seed: u64, stream: Stream, index: u64) -> f32 {
    let w = block(seed, stream.id(), index);
    let lane = (index % 4) as usize;
    let (z0, z1) = box_muller(w[lane & 2], w[(lane & 2) + 1]);
    if lane.is_multiple_of(2) {
        z0
    } else {
        z1
    }
}

/// Fills `out` with normals `0..out.len()` of a stream.
pub fn fill_normal(seed: u64, stream: Stream, out: &mut [f32]) {
    let id = stream.id();
    out.par_chunks_mut(4096)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let first = chunk as u64 * 4096;
            for (q, lanes) in dst.chunks_mut(4).enumerate() {
                let w = block(seed, id, first + 4 * q as u64);
                let (z0, z1) = box_muller(w[0], w[1]);
                let (z2, z3) = box_muller(w[2], w[3]);
                for (d, z) in lanes.iter_mut().zip([z0, z1, z2, z3]) {
                    *d = z;
                }
            }
        });
}
