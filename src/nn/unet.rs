//! The ADM U-Net (guided-diffusion's UNetModel, no class conditioning, no
//! learn_sigma), built from a `UnetConfig`.
//!
//! Building walks the config once and produces two things: the list of
//! parameters (name, shape, initialisation) and the layers that index into
//! it. Parameter names are guided-diffusion's state-dict names, so an ADM
//! checkpoint maps over name for name; convolution weights are stored
//! `[out, kh, kw, in]` (the engine's NHWC order) where PyTorch has
//! `[out, in, kh, kw]`, and the attention projections as `[out, in]`.
//! Counting parameters or FLOPs needs only the build, never the weights.

use super::config::UnetConfig;
use crate::autograd::{Tape, Var};
use crate::bail;
use crate::device::Device;
use crate::error::Result;
use crate::ops;
use crate::tensor::{DType, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::rc::Rc;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    /// PyTorch's default for Conv2d and Linear: U(-1/sqrt(fan_in), ..).
    Uniform {
        fan_in: usize,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Collects parameter specs while the architecture is laid out.
#[derive(Default)]
struct Builder {
    specs: Vec<ParamSpec>,
}

impl Builder {
    fn param(&mut self, name: String, shape: Vec<usize>, init: Init) -> usize {
        self.specs.push(ParamSpec { name, shape, init });
        self.specs.len() - 1
    }

    /// `zero`: ADM's zero_module, for the last layer of each residual branch.
    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        zero: bool,
    ) -> Conv {
        let fan_in = cin * k * k;
        let init = if zero {
            Init::Zeros
        } else {
            Init::Uniform { fan_in }
        };
        Conv {
            w: self.param(format!("{name}.weight"), vec![cout, k, k, cin], init),
            b: self.param(format!("{name}.bias"), vec![cout], init),
            cin,
            cout,
            k,
            stride,
        }
    }

    fn linear(&mut self, name: &str, fin: usize, fout: usize, zero: bool) -> Linear {
        let init = if zero {
            Init::Zeros
        } else {
            Init::Uniform { fan_in: fin }
        };
        Linear {
            w: self.param(format!("{name}.weight"), vec![fout, fin], init),
            b: self.param(format!("{name}.bias"), vec![fout], init),
            fin,
            fout,
        }
    }

    fn norm(&mut self, name: &str, c: usize) -> Norm {
        Norm {
            gamma: self.param(format!("{name}.weight"), vec![c], Init::Ones),
            beta: self.param(format!("{name}.bias"), vec![c], Init::Zeros),
        }
    }
}

/// What every layer's forward needs: the tape, the bound parameters, the
/// time embedding (after its SiLU, shared by all residual blocks).
struct Ctx<'a> {
    tape: &'a Tape,
    p: &'a [Var],
    emb: Option<&'a Var>,
    groups: usize,
}

struct Conv {
    w: usize,
    b: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
}

impl Conv {
    fn forward(&self, c: &Ctx, x: &Var) -> Var {
        ops::conv2d(c.tape, x, &c.p[self.w], Some(&c.p[self.b]), self.stride)
    }

    /// FLOPs at input resolution (h, w), and the output resolution.
    fn flops(&self, n: usize, h: usize, w: usize) -> (u64, usize, usize) {
        let (ho, wo) = (h.div_ceil(self.stride), w.div_ceil(self.stride));
        let f = 2 * (n * ho * wo * self.cout * self.cin * self.k * self.k) as u64;
        (f, ho, wo)
    }
}

struct Linear {
    w: usize,
    b: usize,
    fin: usize,
    fout: usize,
}

impl Linear {
    fn forward(&self, c: &Ctx, x: &Var) -> Var {
        ops::linear(c.tape, x, &c.p[self.w], Some(&c.p[self.b]))
    }

    fn flops(&self, rows: usize) -> u64 {
        2 * (rows * self.fin * self.fout) as u64
    }
}

struct Norm {
    gamma: usize,
    beta: usize,
}

impl Norm {
    fn forward(&self, c: &Ctx, x: &Var, silu: bool) -> Var {
        ops::group_norm(c.tape, x, &c.p[self.gamma], &c.p[self.beta], c.groups, silu)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Resample {
    Same,
    Up,
    Down,
}

impl Resample {
    fn apply(self, c: &Ctx, x: &Var) -> Var {
        match self {
            Resample::Same => x.clone(),
            Resample::Up => ops::upsample2x(c.tape, x),
            Resample::Down => ops::avgpool2x(c.tape, x),
        }
    }

    fn size(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Resample::Same => (h, w),
            Resample::Up => (2 * h, 2 * w),
            Resample::Down => (h / 2, w / 2),
        }
    }
}

/// ADM's ResBlock: norm, SiLU, [resample], conv; time modulation; norm,
/// SiLU, zero-initialised conv; plus the (resampled, projected) input.
struct ResBlock {
    in_norm: Norm,
    resample: Resample,
    in_conv: Conv,
    /// Time embedding to `[scale, shift]` (or a shift); None without time.
    emb: Option<Linear>,
    scale_shift_norm: bool,
    out_norm: Norm,
    out_conv: Conv,
    /// 1x1 projection when the channel count changes.
    skip: Option<Conv>,
}

impl ResBlock {
    fn build(
        b: &mut Builder,
        cfg: &UnetConfig,
        name: &str,
        cin: usize,
        cout: usize,
        resample: Resample,
    ) -> ResBlock {
        let emb_width = if cfg.scale_shift_norm { 2 * cout } else { cout };
        ResBlock {
            in_norm: b.norm(&format!("{name}.in_layers.0"), cin),
            resample,
            in_conv: b.conv(&format!("{name}.in_layers.2"), cin, cout, 3, 1, false),
            emb: cfg.time_input.then(|| {
                let temb = 4 * cfg.base_channels;
                b.linear(&format!("{name}.emb_layers.1"), temb, emb_width, false)
            }),
            scale_shift_norm: cfg.scale_shift_norm,
            out_norm: b.norm(&format!("{name}.out_layers.0"), cout),
            out_conv: b.conv(&format!("{name}.out_layers.3"), cout, cout, 3, 1, true),
            skip: (cin != cout)
                .then(|| b.conv(&format!("{name}.skip_connection"), cin, cout, 1, 1, false)),
        }
    }

    fn forward(&self, c: &Ctx, x: &Var) -> Var {
        let h = self.in_norm.forward(c, x, true);
        let h = self.resample.apply(c, &h);
        let x = self.resample.apply(c, x);
        let h = self.in_conv.forward(c, &h);
        let h = match (&self.emb, c.emb) {
            // ADM with use_scale_shift_norm: norm -> x (1 + scale) + shift -> SiLU.
            (Some(lin), Some(emb)) if self.scale_shift_norm => {
                let h = self.out_norm.forward(c, &h, false);
                let h = ops::scale_shift(c.tape, &h, &lin.forward(c, emb));
                ops::silu(c.tape, &h)
            }
            // ADM without it: the embedding is added before the norm.
            (Some(lin), Some(emb)) => {
                let h = ops::scale_shift(c.tape, &h, &lin.forward(c, emb));
                self.out_norm.forward(c, &h, true)
            }
            _ => self.out_norm.forward(c, &h, true),
        };
        let h = self.out_conv.forward(c, &h);
        let skip = match &self.skip {
            Some(conv) => conv.forward(c, &x),
            None => x,
        };
        ops::add(c.tape, &skip, &h)
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> (u64, usize, usize) {
        let (h, w) = self.resample.size(h, w);
        let (mut f, _, _) = self.in_conv.flops(n, h, w);
        f += self.out_conv.flops(n, h, w).0;
        f += self.skip.as_ref().map_or(0, |s| s.flops(n, h, w).0);
        f += self.emb.as_ref().map_or(0, |l| l.flops(n));
        (f, h, w)
    }
}

/// ADM's AttentionBlock: norm, qkv projection, multi-head attention,
/// zero-initialised output projection, residual.
struct AttnBlock {
    norm: Norm,
    qkv: Linear,
    proj: Linear,
    head_channels: usize,
}

impl AttnBlock {
    fn build(b: &mut Builder, name: &str, ch: usize, head_channels: usize) -> AttnBlock {
        AttnBlock {
            norm: b.norm(&format!("{name}.norm"), ch),
            qkv: b.linear(&format!("{name}.qkv"), ch, 3 * ch, false),
            proj: b.linear(&format!("{name}.proj_out"), ch, ch, true),
            head_channels,
        }
    }

    fn forward(&self, c: &Ctx, x: &Var) -> Var {
        let h = self.norm.forward(c, x, false);
        let qkv = self.qkv.forward(c, &h);
        let a = ops::attention(c.tape, &qkv, self.head_channels);
        let h = self.proj.forward(c, &a);
        ops::add(c.tape, x, &h)
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> u64 {
        let t = h * w;
        let c = self.proj.fout;
        self.qkv.flops(n * t) + self.proj.flops(n * t) + 4 * (n * t * t * c) as u64
    }
}

enum Layer {
    Conv(Conv),
    Res(ResBlock),
    Attn(AttnBlock),
    /// Nearest 2x upsampling then a 3x3 convolution (ADM's Upsample with
    /// conv, used when resblock_updown is off).
    UpConv(Conv),
}

impl Layer {
    fn forward(&self, c: &Ctx, x: &Var) -> Var {
        match self {
            Layer::Conv(conv) => conv.forward(c, x),
            Layer::Res(r) => r.forward(c, x),
            Layer::Attn(a) => a.forward(c, x),
            Layer::UpConv(conv) => conv.forward(c, &ops::upsample2x(c.tape, x)),
        }
    }

    fn flops(&self, n: usize, h: usize, w: usize) -> (u64, usize, usize) {
        match self {
            Layer::Conv(conv) => conv.flops(n, h, w),
            Layer::Res(r) => r.flops(n, h, w),
            Layer::Attn(a) => (a.flops(n, h, w), h, w),
            Layer::UpConv(conv) => conv.flops(n, 2 * h, 2 * w),
        }
    }
}

/// A sequence of layers; ADM's TimestepEmbedSequential.
type Block = Vec<Layer>;

struct Arch {
    time_embed: Option<(Linear, Linear)>,
    input_blocks: Vec<Block>,
    middle: Block,
    output_blocks: Vec<Block>,
    out_norm: Norm,
    out_conv: Conv,
}

impl Arch {
    /// FLOPs of one forward pass (multiply-adds of convolutions, linear
    /// layers and attention products, times two) at batch n and size h x w.
    fn flops(&self, n: usize, h: usize, w: usize) -> u64 {
        let a = self;
        let mut total = a
            .time_embed
            .as_ref()
            .map_or(0, |(l0, l2)| l0.flops(n) + l2.flops(n));
        let (mut hh, mut ww) = (h, w);
        let mut run = |block: &Block, total: &mut u64| {
            for layer in block {
                let (f, h2, w2) = layer.flops(n, hh, ww);
                *total += f;
                (hh, ww) = (h2, w2);
            }
        };
        for block in a
            .input_blocks
            .iter()
            .chain([&a.middle])
            .chain(&a.output_blocks)
        {
            run(block, &mut total);
        }
        total + a.out_conv.flops(n, hh, ww).0
    }

    /// guided-diffusion's UNetModel.__init__, step by step.
    fn build(cfg: &UnetConfig) -> (Arch, Vec<ParamSpec>) {
        let mut b = Builder::default();
        let mc = cfg.base_channels;
        let time_embed = cfg.time_input.then(|| {
            (
                b.linear("time_embed.0", mc, 4 * mc, false),
                b.linear("time_embed.2", 4 * mc, 4 * mc, false),
            )
        });
        let mut ch = cfg.channel_mult[0] * mc;
        let mut input_blocks = vec![vec![Layer::Conv(b.conv(
            "input_blocks.0.0",
            cfg.in_channels,
            ch,
            3,
            1,
            false,
        ))]];
        let mut skip_channels = vec![ch];
        let mut ds = 1;
        let levels = cfg.channel_mult.len();
        for (level, &mult) in cfg.channel_mult.iter().enumerate() {
            for _ in 0..cfg.res_blocks {
                let name = format!("input_blocks.{}", input_blocks.len());
                let out = mult * mc;
                let mut block = vec![Layer::Res(ResBlock::build(
                    &mut b,
                    cfg,
                    &format!("{name}.0"),
                    ch,
                    out,
                    Resample::Same,
                ))];
                ch = out;
                if cfg.attention_ds.contains(&ds) {
                    block.push(Layer::Attn(AttnBlock::build(
                        &mut b,
                        &format!("{name}.1"),
                        ch,
                        cfg.head_channels,
                    )));
                }
                input_blocks.push(block);
                skip_channels.push(ch);
            }
            if level + 1 != levels {
                let name = format!("input_blocks.{}.0", input_blocks.len());
                let down = if cfg.resblock_updown {
                    Layer::Res(ResBlock::build(&mut b, cfg, &name, ch, ch, Resample::Down))
                } else {
                    Layer::Conv(b.conv(&format!("{name}.op"), ch, ch, 3, 2, false))
                };
                input_blocks.push(vec![down]);
                skip_channels.push(ch);
                ds *= 2;
            }
        }
        let middle = vec![
            Layer::Res(ResBlock::build(
                &mut b,
                cfg,
                "middle_block.0",
                ch,
                ch,
                Resample::Same,
            )),
            Layer::Attn(AttnBlock::build(
                &mut b,
                "middle_block.1",
                ch,
                cfg.head_channels,
            )),
            Layer::Res(ResBlock::build(
                &mut b,
                cfg,
                "middle_block.2",
                ch,
                ch,
                Resample::Same,
            )),
        ];
        let mut output_blocks = Vec::new();
        for (level, &mult) in cfg.channel_mult.iter().enumerate().rev() {
            for i in 0..=cfg.res_blocks {
                let name = format!("output_blocks.{}", output_blocks.len());
                let skip = skip_channels.pop().expect("one skip per input block");
                let out = mc * mult;
                let mut block = vec![Layer::Res(ResBlock::build(
                    &mut b,
                    cfg,
                    &format!("{name}.0"),
                    ch + skip,
                    out,
                    Resample::Same,
                ))];
                ch = out;
                if cfg.attention_ds.contains(&ds) {
                    block.push(Layer::Attn(AttnBlock::build(
                        &mut b,
                        &format!("{name}.1"),
                        ch,
                        cfg.head_channels,
                    )));
                }
                if level > 0 && i == cfg.res_blocks {
                    let up_name = format!("{name}.{}", block.len());
                    block.push(if cfg.resblock_updown {
                        Layer::Res(ResBlock::build(&mut b, cfg, &up_name, ch, ch, Resample::Up))
                    } else {
                        Layer::UpConv(b.conv(&format!("{up_name}.conv"), ch, ch, 3, 1, false))
                    });
                    ds /= 2;
                }
                output_blocks.push(block);
            }
        }
        let arch = Arch {
            time_embed,
            input_blocks,
            middle,
            output_blocks,
            out_norm: b.norm("out.0", ch),
            out_conv: b.conv("out.2", ch, cfg.out_channels, 3, 1, true),
        };
        (arch, b.specs)
    }
}

pub struct Unet {
    pub config: UnetConfig,
    specs: Vec<ParamSpec>,
    params: Vec<Rc<Tensor>>,
    arch: Arch,
}

/// The parameter list of a configuration, without allocating any of it.
pub fn param_specs(config: &UnetConfig) -> Result<Vec<ParamSpec>> {
    config.validate()?;
    Ok(Arch::build(config).1)
}

pub fn param_count(config: &UnetConfig) -> Result<usize> {
    Ok(param_specs(config)?.iter().map(ParamSpec::numel).sum())
}

/// FLOPs of one forward pass (multiply-adds of convolutions, linear layers
/// and attention products, times two; norms and element-wise ops are not
/// counted) at batch n and size h x w, without allocating any weight.
pub fn forward_flops(config: &UnetConfig, n: usize, h: usize, w: usize) -> Result<u64> {
    config.validate()?;
    Ok(Arch::build(config).0.flops(n, h, w))
}

/// An upper estimate of the bytes a no-grad forward pass holds at its peak
/// on the CPU, at batch n and size h x w: the skip activations the U-Net
/// keeps for its decoder, a few working tensors of the widest level
/// (concatenated skips double it), the attention probabilities of every
/// head, and the convolution's patch scratch per thread. Weights excluded.
/// `restore` tiles an image whose estimate exceeds its memory budget.
pub fn forward_peak_bytes(config: &UnetConfig, n: usize, h: usize, w: usize) -> u64 {
    let px = |level: usize| ((h >> level) * (w >> level) * n) as u64;
    let ch = |level: usize| (config.base_channels * config.channel_mult[level]) as u64;
    let levels = config.channel_mult.len();
    let mut skips = px(0) * ch(0);
    let mut widest = 0;
    let mut attention = 0;
    for l in 0..levels {
        skips += config.res_blocks as u64 * px(l) * ch(l);
        if l + 1 < levels {
            skips += px(l + 1) * ch(l);
        }
        widest = widest.max(2 * px(l) * ch(l));
        if config.attention_ds.contains(&(1 << l)) || l + 1 == levels {
            let tokens = px(l) / n as u64;
            attention =
                attention.max(n as u64 * (ch(l) / config.head_channels as u64) * tokens * tokens);
        }
    }
    let scratch = (crate::cpu::conv::PATCH_ELEMS_PER_CHUNK * rayon::current_num_threads()) as u64;
    4 * (skips + 6 * widest + attention + scratch)
}

impl Unet {
    /// A freshly initialised network (PyTorch's default initialisation,
    /// ADM's zeroed output layers), reproducible from `seed`.
    pub fn new(config: &UnetConfig, seed: u64) -> Result<Unet> {
        let mut rng = StdRng::seed_from_u64(seed);
        let params = param_specs(config)?
            .iter()
            .map(|s| {
                let data = match s.init {
                    Init::Zeros => vec![0.0; s.numel()],
                    Init::Ones => vec![1.0; s.numel()],
                    Init::Uniform { fan_in } => {
                        let bound = 1.0 / (fan_in as f32).sqrt();
                        (0..s.numel())
                            .map(|_| rng.gen_range(-bound..bound))
                            .collect()
                    }
                };
                Tensor::from_vec(&s.shape, data)
            })
            .collect();
        Unet::from_params(config, params)
    }

    /// A network with the given weights, in `param_specs` order.
    pub fn from_params(config: &UnetConfig, params: Vec<Tensor>) -> Result<Unet> {
        config.validate()?;
        let (arch, specs) = Arch::build(config);
        if params.len() != specs.len() {
            bail!(
                "config '{}' has {} parameter tensors, {} given",
                config.name,
                specs.len(),
                params.len()
            );
        }
        for (spec, p) in specs.iter().zip(&params) {
            if spec.shape != p.shape() {
                bail!(
                    "parameter '{}' has shape {:?}, config '{}' expects {:?}",
                    spec.name,
                    p.shape(),
                    config.name,
                    spec.shape
                );
            }
        }
        Ok(Unet {
            config: config.clone(),
            specs,
            params: params.into_iter().map(Rc::new).collect(),
            arch,
        })
    }

    pub fn specs(&self) -> &[ParamSpec] {
        &self.specs
    }

    /// The network with its weights on `device`.
    pub fn on(self, device: Device) -> Result<Unet> {
        match device {
            Device::Cpu => Ok(self),
            Device::Cuda(dtype) => self.to_cuda(dtype),
        }
    }

    /// A copy with its weights on the GPU, stored as `dtype`.
    pub fn to_cuda(&self, dtype: DType) -> Result<Unet> {
        let params = self
            .params
            .iter()
            .map(|p| p.to_cuda(dtype))
            .collect::<Result<Vec<_>>>()?;
        Unet::from_params(&self.config, params)
    }

    pub fn params(&self) -> &[Rc<Tensor>] {
        &self.params
    }

    /// Mutable access for the optimizer and the checkpoint loader. Fails if
    /// a tape still holds a parameter (drop it after `backward`).
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Tensor> {
        self.params.iter_mut().map(|p| {
            Rc::get_mut(p).expect("a parameter is still held by a tape; drop it before updating")
        })
    }

    pub fn param_count(&self) -> usize {
        self.specs.iter().map(ParamSpec::numel).sum()
    }

    /// Puts the parameters on the tape: leaves whose gradients `backward`
    /// reports, in the order of `specs()`.
    pub fn bind(&self, tape: &Tape) -> Vec<Var> {
        self.params.iter().map(|p| tape.leaf(p.clone())).collect()
    }

    /// `x` is `[n, h, w, in_channels]` with sides a multiple of
    /// `config.side_multiple()`; `t` is `[n]` time inputs (None for the
    /// mean network). Returns `[n, h, w, out_channels]`.
    pub fn forward(&self, tape: &Tape, params: &[Var], x: &Var, t: Option<&Var>) -> Var {
        let (_, h, w, c) = x.value().nhwc();
        let m = self.config.side_multiple();
        assert!(
            h % m == 0 && w % m == 0 && c == self.config.in_channels,
            "U-Net '{}' input {:?}: sides must be multiples of {m} with {} channels",
            self.config.name,
            x.shape(),
            self.config.in_channels
        );
        let a = &self.arch;
        let mut ctx = Ctx {
            tape,
            p: params,
            emb: None,
            groups: self.config.groups,
        };
        let emb = match (&a.time_embed, t) {
            (Some((l0, l2)), Some(t)) => {
                // Computed from f32 t, stored as the activations' type.
                let e = ops::time_embedding(tape, t, self.config.base_channels, x.value().dtype());
                let e = ops::silu(tape, &l0.forward(&ctx, &e));
                Some(ops::silu(tape, &l2.forward(&ctx, &e)))
            }
            (None, None) => None,
            _ => panic!(
                "U-Net '{}': time input given {}, expected {}",
                self.config.name,
                t.is_some(),
                self.config.time_input
            ),
        };
        ctx.emb = emb.as_ref();
        let run = |block: &Block, x: &Var| block.iter().fold(x.clone(), |h, l| l.forward(&ctx, &h));
        let mut skips = Vec::with_capacity(a.input_blocks.len());
        let mut h = x.clone();
        for block in &a.input_blocks {
            h = run(block, &h);
            skips.push(h.clone());
        }
        h = run(&a.middle, &h);
        for block in &a.output_blocks {
            let skip = skips.pop().expect("one skip per output block");
            h = run(block, &ops::concat(tape, &h, &skip));
        }
        let h = a.out_norm.forward(&ctx, &h, true);
        a.out_conv.forward(&ctx, &h)
    }

    /// FLOPs of one forward pass at batch n and size h x w (see `forward_flops`).
    pub fn flops(&self, n: usize, h: usize, w: usize) -> u64 {
        self.arch.flops(n, h, w)
    }
}
