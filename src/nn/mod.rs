//! Networks: the ADM U-Net and its configurations.

pub mod config;
pub mod unet;

pub use config::{UnetConfig, CONFIG_NAMES};
pub use unet::{forward_flops, forward_peak_bytes, param_count, param_specs, ParamSpec, Unet};
