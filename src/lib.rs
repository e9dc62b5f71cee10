//! nadb: Noise-Aligned Diffusion Bridge image restoration.
//!
//! Layers, bottom up: `tensor` (NHWC storage), `cpu` (the reference backend,
//! one file per op family), `autograd` (the tape) and `ops` (differentiable
//! ops on it), `nn` (the ADM U-Net), `optim` (AdamW, EMA, clipping),
//! `checkpoint` (safetensors in and out). Backends, siblings behind the
//! dispatch in `ops`: `cpu`, and `cuda`, whose driver seam opens a GPU or
//! the emulated device (`emu`).

pub mod atomic;
pub mod autograd;
pub mod bench;
pub mod bridge;
pub mod checkpoint;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod degrade;
pub mod device;
pub mod diagnose;
pub mod emu;
pub mod error;
pub mod eval;
pub mod host_alloc;
pub mod imageio;
pub mod metrics;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod restore;
pub mod rng;
pub mod tensor;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
pub use tensor::Tensor;
