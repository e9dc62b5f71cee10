"""The twin against the engine: same checkpoint, same input, one forward pass.

Writes a random input (tensor "x": [n, h, w, 3] f32 NHWC in [-1, 1], and
"t": [n] f32 time inputs in [1, 1000] when the network has a time input),
runs

    NADB --device DEVICE [--precision P] forward --checkpoint CK --input IN -o OUT

(the engine writes "y": [n, h, w, 3] f32, from the checkpoint's EMA weights
when it has them), runs the twin (unet.py) on the same input with the same
weights, and prints the largest absolute difference and the relative error
(that difference over max |y_engine|). Exits 1 when the relative error
exceeds --tol (default 1e-3 in f32; 5e-2 when either side runs in bf16).

--randomize replaces every weight of the checkpoint (including the
zero-initialised output layers and the norms' gains) with random numbers in
a new checkpoint file first: a freshly trained network has near-zero output
layers, which makes a weak test; random weights exercise every layer.

Without a checkpoint, --config NAME [--mean] writes one with random weights
of a named config (as an engine checkpoint: `nadb.config` metadata, raw
weights) and compares on it.

Examples (from the repository root):
    python3 benches/twin/compare.py --config base --nadb stage/nadb --device cuda
    python3 benches/twin/compare.py CK.safetensors --nadb stage/nadb --device cuda --randomize
    python3 benches/twin/compare.py CK.safetensors --nadb target/release/nadb --device cpu
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet import (  # noqa: E402
    Unet,
    UnetConfig,
    engine_state,
    load_engine_checkpoint,
    read_safetensors,
    write_safetensors,
)


def default_binary() -> str:
    for p in ("stage/nadb", "target/release/nadb"):
        if os.path.exists(p):
            return p
    return "nadb"


def exact_attention(enabled: bool):
    """In f32, attention through SDPA's math backend (plain f32 matmuls and
    softmax, no TF32 since it is off): the reference stays a reference on
    the GPU too, whatever fused kernel SDPA would pick."""
    if enabled:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(SDPBackend.MATH)
        except ImportError:  # torch < 2.3: whatever SDPA picks
            pass
    return contextlib.nullcontext()


def randomize(model: Unet, seed: int) -> None:
    """Every parameter random and non-trivial: weights and biases
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (zero-initialised layers included),
    norm gains 1 + 0.2 N(0, 1), norm shifts 0.2 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            mod_name, kind = name.rsplit(".", 1)
            mod = model.get_submodule(mod_name)
            if isinstance(mod, torch.nn.GroupNorm):
                noise = torch.randn(p.shape, generator=g)
                p.copy_(1 + 0.2 * noise if kind == "weight" else 0.2 * noise)
                continue
            if isinstance(mod, torch.nn.Conv2d):
                fan_in = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
            else:
                fan_in = mod.in_features
            bound = fan_in ** -0.5
            p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) * bound)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", default=None,
                    help="an engine checkpoint (nadb train / train-mean / export); or use --config")
    ap.add_argument("--config", default=None,
                    help="instead of a checkpoint: random weights of this named config (tiny, small, base, adm256), "
                         "written as an engine checkpoint (no training state)")
    ap.add_argument("--mean", action="store_true", help="with --config: the mean network's variant (no time input)")
    ap.add_argument("--nadb", default=None, help="the engine binary [stage/nadb, else target/release/nadb]")
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None,
                    help="where both run [cuda when torch sees a GPU, else cpu]")
    ap.add_argument("--precision", choices=["f32", "bf16"], default="f32",
                    help="the engine's GPU precision. f32: both in f32, no TF32 anywhere, tight. "
                         "bf16: the engine's bf16 storage against the twin in f32 (the reference), or "
                         "under bf16 autocast with --twin-autocast")
    ap.add_argument("--twin-autocast", action="store_true",
                    help="run the twin under bf16 autocast (two bf16 implementations compared: looser)")
    ap.add_argument("--n", type=int, default=2, help="batch")
    ap.add_argument("--size", type=int, default=64, help="image side (rounded up to the network's multiple)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--randomize", action="store_true", help="random weights in every layer (see above)")
    ap.add_argument("--tol", type=float, default=None, help="relative error limit [1e-3 f32; 5e-2 when either side is bf16]")
    ap.add_argument("--y", default=None, help="compare with this engine output instead of running the engine")
    ap.add_argument("--workdir", default=None, help="keep the input/output files here [a temporary folder]")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                    help="run the twin channels_last (the benchmark's layout)")
    args = ap.parse_args()

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loose = (device == "cuda" and args.precision == "bf16") or args.twin_autocast
    tol = args.tol if args.tol is not None else (5e-2 if loose else 1e-3)
    if device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda: torch sees no GPU", file=sys.stderr)
            return 2
        # f32 must mean f32 on both sides: PyTorch's cuDNN convolutions use
        # TF32 by default on Ampere and later.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    work = args.workdir or tempfile.mkdtemp(prefix="nadb-twin-")
    os.makedirs(work, exist_ok=True)
    try:
        if (args.checkpoint is None) == (args.config is None):
            ap.error("give a checkpoint or --config NAME (one of them)")
        if args.config is not None:
            cfg = UnetConfig.named(args.config, time_input=not args.mean)
            torch.manual_seed(args.seed + 1)
            model = Unet(cfg)
            randomize(model, args.seed + 1)
            ck = os.path.join(work, f"random-{cfg.name}{'-mean' if args.mean else ''}.safetensors")
            write_safetensors(ck, engine_state(model), {"nadb.config": cfg.to_json()})
            args.randomize = False  # already random everywhere
        else:
            ck = args.checkpoint
        model, cfg = load_engine_checkpoint(ck)
        print(f"checkpoint {ck}: config '{cfg.name}' (time input {cfg.time_input}), "
              f"{sum(p.numel() for p in model.parameters()):,} parameters, "
              f"weights '{model.weights_prefix or '(raw)'}'")
        if args.randomize:
            randomize(model, args.seed + 1)
            _, meta = read_safetensors(ck)
            ck = os.path.join(work, "randomized.safetensors")
            write_safetensors(ck, engine_state(model), meta)
            # Read back through the loader: checks the layout round trip too.
            model, cfg = load_engine_checkpoint(ck)
            print(f"randomized every weight (seed {args.seed + 1}) into {ck}")

        m = cfg.side_multiple()
        size = -(-args.size // m) * m
        g = torch.Generator().manual_seed(args.seed)
        x = torch.rand(args.n, size, size, cfg.in_channels, generator=g) * 2 - 1
        inputs = {"x": x}
        t = None
        if cfg.time_input:
            t = 1 + torch.rand(args.n, generator=g) * 999
            inputs["t"] = t
        inp = os.path.join(work, "input.safetensors")
        out = os.path.join(work, "engine-y.safetensors")
        write_safetensors(inp, inputs)

        if args.y:
            out = args.y
        else:
            nadb = args.nadb or default_binary()
            cmd = [nadb, "--device", device]
            if device == "cuda":
                cmd += ["--precision", args.precision]
            cmd += ["forward", "--checkpoint", ck, "--input", inp, "-o", out]
            print("$ " + " ".join(cmd))
            start = time.perf_counter()
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            print(r.stdout.rstrip())
            if r.returncode != 0:
                print(f"the engine failed (exit {r.returncode})", file=sys.stderr)
                return 2
            print(f"engine: {time.perf_counter() - start:.2f} s (process, including load)")
        y_engine = read_safetensors(out)[0]["y"].float()

        model = model.to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        xd = x.to(device)
        td = t.to(device) if t is not None else None
        with torch.no_grad(), torch.autocast(
            device_type=device, dtype=torch.bfloat16, enabled=args.twin_autocast
        ), exact_attention(not args.twin_autocast):
            y_twin = model.forward_nhwc(xd, td).float().cpu()

        if tuple(y_twin.shape) != tuple(y_engine.shape):
            print(f"shape mismatch: engine {tuple(y_engine.shape)}, twin {tuple(y_twin.shape)}")
            return 1
        diff = (y_twin - y_engine).abs()
        scale = y_engine.abs().max().item()
        max_abs = diff.max().item()
        rel = max_abs / scale if scale > 0 else float("inf")
        print(f"input x {tuple(x.shape)}" + (f", t in [{t.min():.1f}, {t.max():.1f}]" if t is not None else ""))
        twin_mode = "bf16 autocast" if args.twin_autocast else "f32"
        print(f"max |y_engine| {scale:.6g}, max |y_twin| {y_twin.abs().max().item():.6g}")
        print(f"max abs error {max_abs:.3e}, mean abs error {diff.mean().item():.3e}, "
              f"relative error {rel:.3e} (tolerance {tol:.1e}; engine {args.precision if device == 'cuda' else 'f32'}, "
              f"twin {twin_mode}, {device})")
        if 0 < scale < 1e-3:
            print(f"warning: the output is tiny (max {scale:.2e}): the zero-initialised output layers have "
                  "barely moved, so most of the network is not compared; pass --randomize")
        if scale == 0:
            print("the engine's output is all zeros (zero-initialised output layers?): "
                  "nothing was compared; pass --randomize")
            return 1
        ok = rel <= tol
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
