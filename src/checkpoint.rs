//! Checkpoints: safetensors files with the model config and the training
//! state in the metadata.
//!
//! Tensor names: a network's parameters under their ADM names, optionally
//! behind a prefix for each group that travels with them (`ema.` for the
//! EMA weights, `adam_m.` and `adam_v.` for AdamW's moments). Metadata:
//! `nadb.config` (the `UnetConfig` as JSON) and, for training checkpoints,
//! `nadb.training` (JSON owned by the trainer). Tensors are f32 (bf16 is
//! read too, widened to f32: shipped weights may be stored that way).
//!
//! Files are mapped with memmap2 and validated up front: a truncated file,
//! a missing or mis-shaped tensor, or a config other than the one asked for
//! is refused with an error that names the file and the tensor.

use crate::atomic::{write_atomic, write_file};
use crate::bail;
use crate::error::{Error, Result};
use crate::nn::{ParamSpec, Unet, UnetConfig};
use crate::tensor::{DType, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const CONFIG_KEY: &str = "nadb.config";
const TRAINING_KEY: &str = "nadb.training";

/// Prefixes of the tensor groups a training checkpoint holds.
pub const EMA_PREFIX: &str = "ema.";
pub const ADAM_M_PREFIX: &str = "adam_m.";
pub const ADAM_V_PREFIX: &str = "adam_v.";

/// One named group of tensors to save: `prefix + spec.name` for each.
pub struct Group<'a> {
    pub prefix: &'a str,
    pub tensors: Vec<&'a Tensor>,
}

/// A tensor's name, shape and stored bytes, before serialisation.
type StoredTensor<'a> = (String, &'a [usize], Cow<'a, [u8]>);

/// Writes `groups` (each in `specs` order, f32) with the config and
/// optional training state, atomically.
pub fn save(
    path: &Path,
    config: &UnetConfig,
    specs: &[ParamSpec],
    groups: &[Group],
    training: Option<&str>,
) -> Result<()> {
    save_as(path, config, specs, groups, training, DType::F32, true)
}

/// `save`, with every tensor stored as `dtype` (bf16 halves shipped
/// weights; loading widens them back to f32), replacing an existing
/// `path` only if `replace`.
pub fn save_as(
    path: &Path,
    config: &UnetConfig,
    specs: &[ParamSpec],
    groups: &[Group],
    training: Option<&str>,
    dtype: DType,
    replace: bool,
) -> Result<()> {
    let mut stored: Vec<StoredTensor> = Vec::new();
    for g in groups {
        assert_eq!(g.tensors.len(), specs.len(), "group '{}' size", g.prefix);
        for (spec, t) in specs.iter().zip(&g.tensors) {
            assert_eq!(spec.shape, t.shape(), "tensor {} shape", spec.name);
            let bytes = match dtype {
                DType::F32 => Cow::Borrowed(bytemuck::cast_slice(t.data())),
                DType::Bf16 => Cow::Owned(
                    t.data()
                        .iter()
                        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                        .collect(),
                ),
            };
            stored.push((format!("{}{}", g.prefix, spec.name), t.shape(), bytes));
        }
    }
    let stored_dtype = match dtype {
        DType::F32 => Dtype::F32,
        DType::Bf16 => Dtype::BF16,
    };
    let mut views = Vec::with_capacity(stored.len());
    for (name, shape, bytes) in &stored {
        let view = TensorView::new(stored_dtype, shape.to_vec(), bytes)
            .map_err(|e| Error(format!("{name}: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let mut meta = HashMap::new();
    let config_json = serde_json::to_string(config).expect("config serialises");
    meta.insert(CONFIG_KEY.to_string(), config_json);
    if let Some(t) = training {
        meta.insert(TRAINING_KEY.to_string(), t.to_string());
    }
    let bytes = safetensors::tensor::serialize(views, &Some(meta))
        .map_err(|e| Error(format!("{}: cannot serialise: {e:?}", path.display())))?;
    write_file(path, &bytes, replace)
}

/// Saves a network's own weights (no training state): what `restore` loads.
pub fn save_weights(path: &Path, net: &Unet) -> Result<()> {
    let group = Group {
        prefix: "",
        tensors: net.params().iter().map(|p| &**p).collect(),
    };
    save(path, &net.config, net.specs(), &[group], None)
}

/// An opened, validated checkpoint file.
pub struct Checkpoint {
    path: PathBuf,
    map: Mmap,
    pub config: UnetConfig,
    pub training: Option<String>,
}

fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidHeaderLength => {
            "truncated: the file is shorter (or longer) than its header declares".to_string()
        }
        SafeTensorError::HeaderTooSmall => "truncated: no safetensors header".to_string(),
        other => format!("not a valid safetensors file ({other:?})"),
    }
}

/// Named f32 tensors from a plain safetensors file (not a checkpoint:
/// inputs and outputs of `nadb forward`); a missing name reads as None.
pub fn read_tensors(path: &Path, names: &[&str]) -> Result<Vec<Option<Tensor>>> {
    let p = path.display();
    let bytes = std::fs::read(path).map_err(|e| Error(format!("{p}: cannot read: {e}")))?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| Error(format!("{p}: {}", describe(&e))))?;
    names
        .iter()
        .map(|&name| {
            let Ok(view) = st.tensor(name) else {
                return Ok(None);
            };
            if view.dtype() != Dtype::F32 {
                bail!("{p}: tensor '{name}' is {:?}, expected F32", view.dtype());
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(Some(Tensor::from_vec(view.shape(), data)))
        })
        .collect()
}

/// Writes named f32 tensors as a plain safetensors file, atomically.
pub fn write_tensors(path: &Path, tensors: &[(&str, &Tensor)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| {
            TensorView::new(
                Dtype::F32,
                t.shape().to_vec(),
                bytemuck::cast_slice(t.data()),
            )
            .map(|v| (name.to_string(), v))
            .map_err(|e| Error(format!("{name}: {e:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, &None)
        .map_err(|e| Error(format!("{}: cannot serialise: {e:?}", path.display())))?;
    write_atomic(path, &bytes)
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint> {
        let p = path.display();
        if path.is_dir() {
            bail!("checkpoint {p}: is a folder, not a checkpoint file");
        }
        let file =
            File::open(path).map_err(|e| Error(format!("checkpoint {p}: cannot open: {e}")))?;
        // SAFETY: the mapping is read-only and lives in `Checkpoint`; a file
        // changed underneath by another process could change what is read,
        // never memory safety of this process beyond those bytes.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error(format!("checkpoint {p}: cannot map: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(&map)
            .map_err(|e| Error(format!("checkpoint {p}: {}", describe(&e))))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let Some(config_json) = info.get(CONFIG_KEY) else {
            bail!("checkpoint {p}: no '{CONFIG_KEY}' in its metadata (not written by nadb)");
        };
        let config: UnetConfig = serde_json::from_str(config_json)
            .map_err(|e| Error(format!("checkpoint {p}: unreadable '{CONFIG_KEY}': {e}")))?;
        config
            .validate()
            .map_err(|e| Error(format!("checkpoint {p}: {e}")))?;
        Ok(Checkpoint {
            path: path.to_path_buf(),
            config,
            training: info.get(TRAINING_KEY).cloned(),
            map,
        })
    }

    fn tensors(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.map).map_err(|e| {
            Error(format!(
                "checkpoint {}: {}",
                self.path.display(),
                describe(&e)
            ))
        })
    }

    /// Refuses the file if it was made for another network than `expected`.
    pub fn expect_config(&self, expected: &UnetConfig) -> Result<()> {
        if &self.config != expected {
            bail!(
                "checkpoint {} was made for config '{}' ({}), expected '{}' ({})",
                self.path.display(),
                self.config.name,
                summary(&self.config),
                expected.name,
                summary(expected)
            );
        }
        Ok(())
    }

    pub fn has_group(&self, prefix: &str, specs: &[ParamSpec]) -> Result<bool> {
        let names = self.tensors()?;
        Ok(specs
            .first()
            .is_some_and(|s| names.tensor(&format!("{prefix}{}", s.name)).is_ok()))
    }

    /// The stored tensor `prefix + spec.name`, if present with the shape
    /// the spec expects.
    fn view<'a>(
        &self,
        st: &SafeTensors<'a>,
        prefix: &str,
        spec: &ParamSpec,
    ) -> Result<TensorView<'a>> {
        let p = self.path.display();
        let name = format!("{prefix}{}", spec.name);
        let Ok(view) = st.tensor(&name) else {
            bail!("checkpoint {p}: missing tensor '{name}'");
        };
        if view.shape() != spec.shape.as_slice() {
            bail!(
                "checkpoint {p}: tensor '{name}' has shape {:?}, config '{}' expects {:?}",
                view.shape(),
                self.config.name,
                spec.shape
            );
        }
        if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16) {
            bail!(
                "checkpoint {p}: tensor '{name}' is {:?}; only F32 and BF16 are read",
                view.dtype()
            );
        }
        Ok(view)
    }

    /// Checks that group `prefix` holds every tensor of `specs` with the
    /// right shape and type and finite values (one tensor in memory at a
    /// time).
    pub fn check_group(&self, prefix: &str, specs: &[ParamSpec]) -> Result<()> {
        let st = self.tensors()?;
        specs
            .iter()
            .try_for_each(|spec| self.read(&st, prefix, spec).map(drop))
    }

    /// Reads the group `prefix`, one tensor per spec, checking each.
    pub fn load_group(&self, prefix: &str, specs: &[ParamSpec]) -> Result<Vec<Tensor>> {
        let st = self.tensors()?;
        specs
            .iter()
            .map(|spec| self.read(&st, prefix, spec))
            .collect()
    }

    /// The tensor `prefix + spec.name` as f32, checked like `view` and
    /// refused if any value is NaN or infinite: such weights restore black
    /// images, and a run resumed from them goes nowhere.
    fn read(&self, st: &SafeTensors, prefix: &str, spec: &ParamSpec) -> Result<Tensor> {
        let view = self.view(st, prefix, spec)?;
        let data: Vec<f32> = if view.dtype() == Dtype::F32 {
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            view.data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        };
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!(
                "checkpoint {}: tensor '{prefix}{}' holds {} at index {i} (the weights are broken)",
                self.path.display(),
                spec.name,
                data[i]
            );
        }
        Ok(Tensor::from_vec(&spec.shape, data))
    }

    /// The network stored under `prefix` ("" for raw weights, `ema.` for
    /// the averaged ones).
    pub fn load_unet(&self, prefix: &str) -> Result<Unet> {
        let specs = crate::nn::param_specs(&self.config)?;
        let params = self.load_group(prefix, &specs)?;
        Unet::from_params(&self.config, params)
    }
}

fn summary(c: &UnetConfig) -> String {
    format!(
        "base {}, mults {:?}, {} res blocks, time input {}",
        c.base_channels, c.channel_mult, c.res_blocks, c.time_input
    )
}
