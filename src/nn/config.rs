//! U-Net configurations: guided-diffusion's ADM UNetModel without class
//! conditioning and without learn_sigma, 3 channels in and out.

use crate::bail;
use crate::error::Result;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnetConfig {
    /// The named configuration this was built from (`tiny`, `small`, ...).
    pub name: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub base_channels: usize,
    /// Channel multiplier per level; the number of levels is its length.
    pub channel_mult: Vec<usize>,
    pub res_blocks: usize,
    /// Downsampling factors with attention: 4 means the level at 1/4 of
    /// the input resolution (ADM's `image_size // attention_resolution`).
    pub attention_ds: Vec<usize>,
    pub head_channels: usize,
    pub scale_shift_norm: bool,
    pub resblock_updown: bool,
    /// False for the mean network M(X1): no time embedding at all.
    pub time_input: bool,
    pub groups: usize,
}

/// The names `UnetConfig::named` knows, smallest first.
pub const CONFIG_NAMES: [&str; 4] = ["tiny", "small", "base", "adm256"];

impl UnetConfig {
    /// The named bridge configurations of engine.md's table.
    pub fn named(name: &str) -> Result<UnetConfig> {
        let (base, mult, blocks, attn): (usize, &[usize], usize, &[usize]) = match name {
            "tiny" => (32, &[1, 2], 1, &[2]),
            "small" => (64, &[1, 2, 2], 1, &[4]),
            "base" => (128, &[1, 2, 2, 2], 2, &[4, 8]),
            "adm256" => (256, &[1, 1, 2, 2, 4, 4], 2, &[8, 16, 32]),
            other => bail!(
                "unknown config '{other}' (known: {})",
                CONFIG_NAMES.join(", ")
            ),
        };
        Ok(UnetConfig {
            name: name.to_string(),
            in_channels: 3,
            out_channels: 3,
            base_channels: base,
            channel_mult: mult.to_vec(),
            res_blocks: blocks,
            attention_ds: attn.to_vec(),
            head_channels: 64,
            scale_shift_norm: true,
            resblock_updown: true,
            time_input: true,
            groups: 32,
        })
    }

    /// The same network without a time input: the mean network's.
    pub fn without_time(&self) -> UnetConfig {
        UnetConfig {
            time_input: false,
            ..self.clone()
        }
    }

    /// Image sides must be multiples of this (one halving per level).
    pub fn side_multiple(&self) -> usize {
        1 << (self.channel_mult.len() - 1)
    }

    /// Checks that the network this describes can be built (configs also
    /// arrive from checkpoint files, so nothing here may be trusted).
    pub fn validate(&self) -> Result<()> {
        let positive = [
            self.in_channels,
            self.out_channels,
            self.base_channels,
            self.head_channels,
            self.groups,
        ];
        if self.channel_mult.is_empty() || positive.contains(&0) || self.channel_mult.contains(&0) {
            bail!(
                "config '{}': a channel count, group count or multiplier is zero",
                self.name
            );
        }
        // Far beyond any real network; keeps sizes from overflowing.
        let widest = self.channel_mult.iter().max().copied().unwrap_or(1) * self.base_channels;
        if self.channel_mult.len() > 8
            || widest > 8192
            || self.res_blocks > 16
            || self.in_channels.max(self.out_channels) > 64
        {
            bail!("config '{}': implausibly large network", self.name);
        }
        if self.time_input && !self.base_channels.is_multiple_of(2) {
            bail!("config '{}': time embedding width must be even", self.name);
        }
        let mut ds = 1;
        for &m in &self.channel_mult {
            let ch = m * self.base_channels;
            if !ch.is_multiple_of(self.groups) {
                bail!(
                    "config '{}': {ch} channels do not split into {} groups",
                    self.name,
                    self.groups
                );
            }
            if self.attention_ds.contains(&ds) && !ch.is_multiple_of(self.head_channels) {
                bail!(
                    "config '{}': {ch} channels at 1/{ds} do not split into heads of {}",
                    self.name,
                    self.head_channels
                );
            }
            ds *= 2;
        }
        let deepest = self.base_channels * self.channel_mult[self.channel_mult.len() - 1];
        if !deepest.is_multiple_of(self.head_channels) {
            bail!(
                "config '{}': the middle block's {deepest} channels do not split into heads of {}",
                self.name,
                self.head_channels
            );
        }
        Ok(())
    }
}
