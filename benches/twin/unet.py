"""The PyTorch twin of the engine's U-Net (src/nn/unet.rs, src/nn/config.rs).

guided-diffusion's ADM UNetModel exactly as the engine builds it: no class
conditioning, no learn_sigma, GroupNorm32 (eps 1e-5, statistics in f32),
scale-shift norm, resblock up/down (average pooling down, nearest up),
attention with head channels 64 in the LEGACY qkv order, the sinusoidal
time embedding of src/cpu/embed.rs, zero-initialised output layers.

Parameter names are guided-diffusion's state-dict names, which are also the
engine's, so an engine checkpoint maps over name for name. Two layout
differences, both handled by `load_engine_checkpoint`:

- convolution weights: the engine stores [out, kh, kw, in] (NHWC order),
  PyTorch wants [out, in, kh, kw];
- attention qkv / proj_out: the engine stores [out, in] (a linear layer);
  ADM has a 1x1 conv1d [out, in, 1]. The twin uses nn.Linear, so these load
  unchanged.

The model is NCHW inside (it runs as channels_last when moved with
`.to(memory_format=torch.channels_last)`); `forward_nhwc` takes and returns
the engine's NHWC tensors. Attention runs through
torch.nn.functional.scaled_dot_product_attention (flash / efficient kernels
on the GPU) with the legacy head split done by reshapes.

Usage:
    from unet import UnetConfig, Unet, load_engine_checkpoint
    model = Unet(UnetConfig.named("base"))            # random weights
    model, cfg = load_engine_checkpoint("ck.safetensors")
    y = model.forward_nhwc(x_nhwc, t)                # t: [n] f32 (t*1000)

Run as a script it prints every named configuration's parameter count next
to the engine's.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (base channels, channel mult, res blocks, attention downsampling factors)
NAMED = {
    "tiny": (32, [1, 2], 1, [2]),
    "small": (64, [1, 2, 2], 1, [4]),
    "base": (128, [1, 2, 2, 2], 2, [4, 8]),
    "adm256": (256, [1, 1, 2, 2, 4, 4], 2, [8, 16, 32]),
}

# engine.md's table: bridge networks (with time input).
ENGINE_PARAM_COUNTS = {
    "tiny": 827_491,
    "small": 5_461_955,
    "base": 44_173_827,
    "adm256": 552_807_171,
}


@dataclass
class UnetConfig:
    """The engine's UnetConfig (same field names as its JSON in checkpoints)."""

    name: str
    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_mult: List[int] = field(default_factory=lambda: [1, 2, 2, 2])
    res_blocks: int = 2
    attention_ds: List[int] = field(default_factory=lambda: [4, 8])
    head_channels: int = 64
    scale_shift_norm: bool = True
    resblock_updown: bool = True
    time_input: bool = True
    groups: int = 32

    @staticmethod
    def named(name: str, time_input: bool = True) -> "UnetConfig":
        if name not in NAMED:
            raise ValueError(f"unknown config '{name}' (known: {', '.join(NAMED)})")
        base, mult, blocks, attn = NAMED[name]
        return UnetConfig(
            name=name,
            base_channels=base,
            channel_mult=list(mult),
            res_blocks=blocks,
            attention_ds=list(attn),
            time_input=time_input,
        )

    @staticmethod
    def from_json(text_or_dict) -> "UnetConfig":
        d = json.loads(text_or_dict) if isinstance(text_or_dict, str) else dict(text_or_dict)
        known = {f for f in UnetConfig.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"config JSON has fields this twin does not know: {sorted(unknown)}")
        return UnetConfig(**d)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def without_time(self) -> "UnetConfig":
        return replace(self, time_input=False)

    def side_multiple(self) -> int:
        return 1 << (len(self.channel_mult) - 1)


# ---------------------------------------------------------------- layers


class GroupNorm32(nn.GroupNorm):
    """ADM's GroupNorm32: statistics and affine in f32, result in the input's
    type (bf16 under autocast, like the engine's bf16 storage)."""

    def __init__(self, groups: int, channels: int):
        super().__init__(groups, channels, eps=1e-5)

    def forward(self, x):
        xf = x if x.dtype == torch.float64 else x.float()
        w, b = self.weight.to(xf.dtype), self.bias.to(xf.dtype)
        return F.group_norm(xf, self.num_groups, w, b, self.eps).to(x.dtype)


def conv(cin: int, cout: int, k: int, stride: int = 1, zero: bool = False) -> nn.Conv2d:
    c = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    if zero:
        nn.init.zeros_(c.weight)
        nn.init.zeros_(c.bias)
    return c


def linear(fin: int, fout: int, zero: bool = False) -> nn.Linear:
    lin = nn.Linear(fin, fout)
    if zero:
        nn.init.zeros_(lin.weight)
        nn.init.zeros_(lin.bias)
    return lin


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[n] time inputs -> [n, dim]: cos(t f_i) then sin(t f_i), f_i =
    exp(-ln(10000) i / (dim/2)); computed in f64 like the engine, returned f32."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    freqs = torch.exp(-math.log(10000.0) * i / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).float()


class Downsample(nn.Module):
    """Without resblock_updown: a stride-2 3x3 conv named `op` (ADM's)."""

    def __init__(self, ch: int):
        super().__init__()
        self.op = conv(ch, ch, 3, stride=2)

    def forward(self, x, emb=None):
        return self.op(x)


class Upsample(nn.Module):
    """Without resblock_updown: nearest 2x, then a 3x3 conv named `conv`."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv(ch, ch, 3)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResBlock(nn.Module):
    """ADM's ResBlock: norm, SiLU, [resample], conv; time modulation; norm,
    SiLU, zero-initialised conv; plus the (resampled, projected) input."""

    def __init__(self, cfg: UnetConfig, cin: int, cout: int, resample: str = "same"):
        super().__init__()
        self.resample = resample
        self.scale_shift_norm = cfg.scale_shift_norm
        self.in_layers = nn.Sequential(GroupNorm32(cfg.groups, cin), nn.SiLU(), conv(cin, cout, 3))
        if cfg.time_input:
            width = 2 * cout if cfg.scale_shift_norm else cout
            self.emb_layers = nn.Sequential(nn.SiLU(), linear(4 * cfg.base_channels, width))
        else:
            self.emb_layers = None
        self.out_layers = nn.Sequential(
            GroupNorm32(cfg.groups, cout),
            nn.SiLU(),
            nn.Dropout(0.0),
            conv(cout, cout, 3, zero=True),
        )
        self.skip_connection = conv(cin, cout, 1) if cin != cout else nn.Identity()

    def _resample(self, x):
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x, emb=None):
        h = self.in_layers[1](self.in_layers[0](x))
        h = self._resample(h)
        x = self._resample(x)
        h = self.in_layers[2](h)
        norm, rest = self.out_layers[0], self.out_layers[1:]
        if self.emb_layers is not None and emb is not None:
            e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
            if self.scale_shift_norm:
                scale, shift = torch.chunk(e, 2, dim=1)
                h = norm(h) * (1 + scale) + shift
                h = rest(h)
            else:
                h = self.out_layers(h + e)
        else:
            h = self.out_layers(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """ADM's AttentionBlock with QKVAttentionLegacy: per pixel, head j reads
    channels [3*hd*j, 3*hd*(j+1)) of the qkv projection as [q, k, v] and
    writes channels [hd*j, hd*(j+1)); softmax(q k^T / sqrt(hd)) v."""

    def __init__(self, cfg: UnetConfig, ch: int):
        super().__init__()
        self.heads = ch // cfg.head_channels
        self.hd = cfg.head_channels
        self.norm = GroupNorm32(cfg.groups, ch)
        self.qkv = linear(ch, 3 * ch)
        self.proj_out = linear(ch, ch, zero=True)

    def forward(self, x, emb=None):
        n, c, hh, ww = x.shape
        t = hh * ww
        # Tokens [n, T, c]: a view when x is channels_last.
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(n, t, c)
        qkv = self.qkv(tokens).reshape(n, t, self.heads, 3, self.hd)
        q, k, v = (qkv[:, :, :, i].transpose(1, 2) for i in range(3))  # [n, heads, T, hd]
        a = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(hd)
        a = a.transpose(1, 2).reshape(n, t, c)
        h = self.proj_out(a).reshape(n, hh, ww, c).permute(0, 3, 1, 2)
        return x + h


class Seq(nn.Sequential):
    """ADM's TimestepEmbedSequential."""

    def forward(self, x, emb=None):
        for layer in self:
            x = layer(x, emb) if not isinstance(layer, nn.Conv2d) else layer(x)
        return x


class Unet(nn.Module):
    """guided-diffusion's UNetModel.__init__, step by step, as the engine does."""

    def __init__(self, cfg: UnetConfig):
        super().__init__()
        self.config = cfg
        mc = cfg.base_channels
        if cfg.time_input:
            self.time_embed = nn.Sequential(linear(mc, 4 * mc), nn.SiLU(), linear(4 * mc, 4 * mc))
        else:
            self.time_embed = None
        ch = cfg.channel_mult[0] * mc
        self.input_blocks = nn.ModuleList([Seq(conv(cfg.in_channels, ch, 3))])
        skip_channels = [ch]
        ds = 1
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.res_blocks):
                out = mult * mc
                layers = [ResBlock(cfg, ch, out)]
                ch = out
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(cfg, ch))
                self.input_blocks.append(Seq(*layers))
                skip_channels.append(ch)
            if level + 1 != levels:
                down = ResBlock(cfg, ch, ch, "down") if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(Seq(down))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = Seq(ResBlock(cfg, ch, ch), AttentionBlock(cfg, ch), ResBlock(cfg, ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.res_blocks + 1):
                skip = skip_channels.pop()
                out = mc * mult
                layers = [ResBlock(cfg, ch + skip, out)]
                ch = out
                if ds in cfg.attention_ds:
                    layers.append(AttentionBlock(cfg, ch))
                if level > 0 and i == cfg.res_blocks:
                    layers.append(ResBlock(cfg, ch, ch, "up") if cfg.resblock_updown else Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(*layers))
        self.out = nn.Sequential(GroupNorm32(cfg.groups, ch), nn.SiLU(), conv(ch, cfg.out_channels, 3, zero=True))

    def forward(self, x: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: [n, in_channels, h, w] (NCHW, any memory format); t: [n] time
        inputs (f32, t*1000 scale) for a network with a time input."""
        cfg = self.config
        m = cfg.side_multiple()
        if x.shape[1] != cfg.in_channels or x.shape[2] % m or x.shape[3] % m:
            raise ValueError(
                f"U-Net '{cfg.name}' input {tuple(x.shape)}: sides must be multiples of {m} "
                f"with {cfg.in_channels} channels"
            )
        if (t is not None) != cfg.time_input:
            raise ValueError(f"U-Net '{cfg.name}': time input given {t is not None}, expected {cfg.time_input}")
        emb = None
        if self.time_embed is not None:
            # ADM: time_embed = Linear, SiLU, Linear; each ResBlock's
            # emb_layers = SiLU, Linear. The engine applies that SiLU once
            # and shares the result: the same numbers.
            e = timestep_embedding(t, cfg.base_channels).to(self.time_embed[0].weight.dtype)
            emb = self.time_embed(e)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h)

    def forward_nhwc(self, x_nhwc: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The engine's layout: x [n, h, w, c] -> y [n, h, w, out_channels]."""
        y = self.forward(x_nhwc.permute(0, 3, 1, 2), t)
        return y.permute(0, 2, 3, 1).contiguous()


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------- FLOPs


def forward_flops(cfg: UnetConfig, n: int, h: int, w: int) -> int:
    """FLOPs of one forward pass, counted as the engine's `forward_flops`:
    convolutions, linear layers and attention products, 2 per multiply-add;
    norms and element-wise ops not counted. Shapes only (meta tensors)."""
    with torch.device("meta"):
        model = Unet(cfg)
    total = [0]

    def conv_hook(mod, inp, out):
        _, cout, ho, wo = out.shape
        k = mod.kernel_size[0] * mod.kernel_size[1]
        total[0] += 2 * out.shape[0] * ho * wo * cout * mod.in_channels * k

    def linear_hook(mod, inp, out):
        rows = inp[0].numel() // mod.in_features
        total[0] += 2 * rows * mod.in_features * mod.out_features

    def attn_hook(mod, inp, out):
        nn_, c, hh, ww = inp[0].shape
        t = hh * ww
        total[0] += 4 * nn_ * t * t * c

    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(conv_hook)
        elif isinstance(mod, nn.Linear):
            mod.register_forward_hook(linear_hook)
        elif isinstance(mod, AttentionBlock):
            mod.register_forward_hook(attn_hook)
    x = torch.empty(n, cfg.in_channels, h, w, device="meta")
    t = torch.empty(n, device="meta") if cfg.time_input else None
    with torch.no_grad():
        model(x, t)
    return total[0]


def conv3x3_shapes(cfg: UnetConfig, h: int, w: int) -> List[Tuple[str, int, int, int, int, int]]:
    """Every 3x3 convolution of the network at input size h x w, as
    (name, cin, cout, input h, input w, stride)."""
    with torch.device("meta"):
        model = Unet(cfg)
    seen = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and mod.kernel_size == (3, 3):
            mod.register_forward_hook(
                lambda m, inp, out, name=name: seen.append(
                    (name, m.in_channels, m.out_channels, inp[0].shape[2], inp[0].shape[3], m.stride[0])
                )
            )
    x = torch.empty(1, cfg.in_channels, h, w, device="meta")
    t = torch.empty(1, device="meta") if cfg.time_input else None
    with torch.no_grad():
        model(x, t)
    return seen


# ----------------------------------------------------------- safetensors

_DTYPES = {"F32": np.float32, "BF16": np.uint16, "F16": np.float16, "F64": np.float64, "I64": np.int64}


def read_safetensors(path: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """All tensors (F32; BF16 widened to F32) and the metadata of a file.
    Uses the `safetensors` package when installed, else parses the format:
    u64 little-endian header length, JSON header, raw little-endian data."""
    try:
        from safetensors import safe_open  # type: ignore
    except ImportError:
        safe_open = None
    if safe_open is not None:
        tensors = {}
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                t = f.get_tensor(k)
                tensors[k] = t.float() if t.is_floating_point() else t
        return tensors, dict(meta)
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: truncated: no safetensors header")
    (hlen,) = struct.unpack("<Q", raw[:8])
    if 8 + hlen > len(raw):
        raise ValueError(f"{path}: truncated: the header declares {hlen} bytes")
    header = json.loads(raw[8 : 8 + hlen].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    data = memoryview(raw)[8 + hlen :]
    tensors = {}
    for name, info in header.items():
        dt = info["dtype"]
        if dt not in _DTYPES:
            raise ValueError(f"{path}: tensor '{name}' is {dt}; this reader takes {sorted(_DTYPES)}")
        begin, end = info["data_offsets"]
        if end > len(data):
            raise ValueError(f"{path}: tensor '{name}' runs past the end of the file")
        arr = np.frombuffer(data[begin:end], dtype=np.dtype(_DTYPES[dt]).newbyteorder("<"))
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dt in ("F16", "F64"):
            arr = arr.astype(np.float32)
        tensors[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return tensors, meta


def write_safetensors(path: str, tensors: Dict[str, torch.Tensor], metadata: Optional[Dict[str, str]] = None):
    """Writes F32 tensors (and metadata) in the safetensors format, by hand
    (no dependency; the header is padded with spaces to 8 bytes)."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        a = t.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4", copy=False)
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ------------------------------------------------------------ checkpoints

EMA_PREFIX = "ema."


def engine_to_torch(name: str, t: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """An engine tensor in PyTorch's layout: conv weights [o, kh, kw, i] ->
    [o, i, kh, kw]; everything else already has PyTorch's shape."""
    if param.dim() == 4:
        t = t.permute(0, 3, 1, 2)
    if tuple(t.shape) != tuple(param.shape):
        raise ValueError(f"tensor '{name}' has shape {tuple(t.shape)}, the twin expects {tuple(param.shape)}")
    return t.contiguous()


def torch_to_engine(t: torch.Tensor) -> torch.Tensor:
    """The inverse of `engine_to_torch` for one parameter."""
    return t.permute(0, 2, 3, 1).contiguous() if t.dim() == 4 else t.contiguous()


def engine_state(model: Unet) -> Dict[str, torch.Tensor]:
    """The model's parameters as an engine checkpoint holds them (no prefix)."""
    return {k: torch_to_engine(v.detach().float().cpu()) for k, v in model.state_dict().items()}


def load_engine_checkpoint(path: str, prefer_ema: bool = True) -> Tuple[Unet, UnetConfig]:
    """The network of an engine checkpoint: config from the `nadb.config`
    metadata, the EMA weights (`ema.` prefix) when present (as the engine's
    restore and forward do), else the raw ones (no prefix)."""
    tensors, meta = read_safetensors(path)
    if "nadb.config" not in meta:
        raise ValueError(f"checkpoint {path}: no 'nadb.config' in its metadata (not written by nadb)")
    cfg = UnetConfig.from_json(meta["nadb.config"])
    model = Unet(cfg)
    params = dict(model.state_dict())
    first = next(iter(params))
    prefix = EMA_PREFIX if prefer_ema and (EMA_PREFIX + first) in tensors else ""
    state = {}
    for name, p in params.items():
        key = prefix + name
        if key not in tensors:
            raise ValueError(f"checkpoint {path}: missing tensor '{key}'")
        state[name] = engine_to_torch(key, tensors[key].float(), p)
    if prefix == "":
        group = [k for k in tensors if not k.startswith((EMA_PREFIX, "adam_m.", "adam_v."))]
    else:
        group = [k[len(prefix) :] for k in tensors if k.startswith(prefix)]
    extra = sorted(set(group) - set(params))
    if extra:
        raise ValueError(f"checkpoint {path}: tensors the twin has no place for: {extra[:5]}")
    model.load_state_dict(state)
    model.eval()
    model.weights_prefix = prefix  # which group was loaded, for reports
    return model, cfg


def _main():
    import argparse

    ap = argparse.ArgumentParser(description="Parameter counts of the twin's named configs vs the engine's.")
    ap.add_argument("--configs", default="tiny,small,base,adm256")
    args = ap.parse_args()
    bad = 0
    for name in args.configs.split(","):
        cfg = UnetConfig.named(name)
        with torch.device("meta"):
            bridge = param_count(Unet(cfg))
            mean = param_count(Unet(cfg.without_time()))
        want = ENGINE_PARAM_COUNTS[name]
        ok = bridge == want
        bad += not ok
        print(f"{name:7s} bridge {bridge:>12,d} (engine {want:>12,d}) {'ok' if ok else 'MISMATCH'}   mean {mean:>12,d}")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    _main()
