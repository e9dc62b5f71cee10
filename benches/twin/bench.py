"""The PyTorch peer of `nadb bench` (src/bench.rs): the same figures for the
twin U-Net (unet.py), random weights of a named config, bf16 autocast and
channels_last, for PyTorch eager and for torch.compile:

  (a) restoration latency at batch 1, SIZE x SIZE, for each NFE: the work of
      one restoration is what the engine's restore does: host input to the
      device, 1 mean-network forward (E = X1 + M(X1)), then NFE times a
      bridge forward and a fused element-wise posterior update
      x = a*out + b*x + c*E + s*randn_like(x), and the result back to the host;
  (b) restoration throughput at --batch (NFE = the last of --nfe), images/s;
  (c) one training step of the bridge network (nadb-nomean: host batch to
      the device, interpolant and noise, forward, MSE, the one host sync for
      the loss, backward, grad-norm clip 1.0, fused AdamW, EMA update) at
      --train-size x --train-size, batch --train-batch, images/s;
  (d) the 3x3 convolution forward at the U-Net's largest 3x3 shape (the most
      FLOPs at SIZE x SIZE, batch --batch) through F.conv2d (cuDNN, bf16,
      channels_last): achieved TFLOP/s and the fraction of the card's peak.

Each figure is the median of --iters timed runs after --warmup runs (which
include torch.compile's compilation and CUDA-graph recording), each timed as
the engine does: wall clock from a synchronised start to a synchronised end
(the CUDA-event time of the same runs is logged on stderr). Network TFLOP/s
are counted as the engine counts them (unet.forward_flops: the bridge
network's forward FLOPs times NFE + 1 for a restoration, 3x forward for a
training step).

The table has the engine's columns; the first line names the card, the
driver and the versions. Runs on the CPU too (tiny sizes, for checking):

    python3 benches/twin/bench.py --device cpu --config tiny --size 32 --nfe 2 \\
        --batch 2 --train-batch 2 --train-size 16 --iters 2 --warmup 1 --no-compile
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet import Unet, UnetConfig, conv3x3_shapes, forward_flops  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s) of the cards the checks run on.
PEAKS = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM (HBM3)
    ("H200", 989.4),
]


def card_peak(name: str):
    for key, peak in PEAKS:
        if all(part in name for part in key.split()):
            return key, peak
    return None, None


def device_line(device: torch.device) -> str:
    versions = f"torch {torch.__version__}"
    if device.type != "cuda":
        return f"device: cpu ({torch.get_num_threads()} threads), {versions}"
    name = torch.cuda.get_device_name(device)
    try:
        driver = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(device.index or 0)],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        driver = "unknown"
    cudnn = torch.backends.cudnn.version()
    return (f"device: cuda, {name}, driver {driver}, CUDA {torch.version.cuda} (torch's), "
            f"cuDNN {cudnn}, {versions}")


class Timer:
    """Median wall time (synchronised, as the engine's bench) of `iters`
    runs after `warmup` runs; logs the CUDA-event median as well."""

    def __init__(self, device: torch.device, iters: int, warmup: int):
        self.device, self.iters, self.warmup = device, max(1, iters), max(1, warmup)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def median(self, label: str, fn) -> float:
        for _ in range(self.warmup):
            fn()
        self.sync()
        walls, events = [], []
        cuda = self.device.type == "cuda"
        for _ in range(self.iters):
            if cuda:
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.sync()
            start = time.perf_counter()
            if cuda:
                e0.record()
            fn()
            if cuda:
                e1.record()
            self.sync()
            walls.append(time.perf_counter() - start)
            if cuda:
                events.append(e0.elapsed_time(e1) / 1e3)
        wall = statistics.median(walls)
        extra = f", CUDA events {statistics.median(events) * 1e3:.3f} ms" if events else ""
        print(f"  {label}: wall {wall * 1e3:.3f} ms{extra} (median of {self.iters})", file=sys.stderr)
        return wall


def mark_step():
    """Tells cudagraph trees (torch.compile mode reduce-overhead) that a new
    iteration starts: the previous iteration's outputs are dead."""
    f = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
    if f is not None:
        f()


def posterior(out, x, e, c):
    """The fused posterior update; c = [a, b, c, s] as a device tensor (not
    Python floats, which torch.compile would specialise on)."""
    return c[0] * out + c[1] * x + c[2] * e + c[3] * torch.randn_like(x)


def step_plan(nfe: int, n: int, device):
    """Per step: the bridge's time input ([n], t*1000) and the update's
    coefficients; the values are plausible, the speed does not depend on them."""
    ts, cs = [], []
    for i in range(nfe):
        t = 1.0 - i / nfe
        t_next = 1.0 - (i + 1) / nfe
        ts.append(torch.full((n,), 1000.0 * t, device=device))
        s = 0.0 if i + 1 == nfe else 0.1 * (t_next * (t - t_next)) ** 0.5
        cs.append(torch.tensor([1.0 - t_next, t_next, 0.0, s], device=device))
    return ts, cs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="base", help="tiny, small, base, adm256")
    ap.add_argument("--size", type=int, default=256, help="side of the restored images")
    ap.add_argument("--nfe", default="5,10", help="NFEs of the latency runs (comma-separated)")
    ap.add_argument("--batch", type=int, default=16, help="batch of the throughput run and the conv (1: skip throughput)")
    ap.add_argument("--train-batch", type=int, default=64)
    ap.add_argument("--train-size", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10, help="timed runs per figure (the median is reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (compilation, graph recording)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure torch.compile (the eager peer is always measured)")
    ap.add_argument("--compile-mode", default="reduce-overhead",
                    help="torch.compile mode for the networks (reduce-overhead: CUDA graphs, "
                         "the counterpart of the engine's graph replay; or default, max-autotune...)")
    ap.add_argument("--parts", default="latency,throughput,train,conv",
                    help="which figures: any of latency, throughput, train, conv")
    ap.add_argument("--precision", choices=["bf16", "f32"], default="bf16",
                    help="bf16: autocast (f32 master weights); f32: no autocast, no TF32")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args()

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
        tf32 = args.precision != "f32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    parts = set(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = parts - {"latency", "throughput", "train", "conv"}
    if unknown:
        ap.error(f"unknown --parts {sorted(unknown)}")
    nfes = [int(v) for v in args.nfe.split(",") if v.strip()]
    cfg = UnetConfig.named(args.config)
    m = cfg.side_multiple()
    if args.size % m or args.train_size % m:
        ap.error(f"sizes must be multiples of {m} for config '{cfg.name}'")
    bf16 = args.precision == "bf16"
    line = device_line(device)
    print(line, file=sys.stderr)
    timer = Timer(device, args.iters, args.warmup)
    torch.manual_seed(args.seed)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)

    def prepare(net):
        return net.to(device).to(memory_format=torch.channels_last)

    peers = ["eager"] + (["compile"] if args.compile else [])
    compiled_note = f"torch.compile {args.compile_mode}"
    figures = []  # (what, seconds, images/s or None, TFLOP/s or None)
    flops = lambda n, side: float(forward_flops(cfg, n, side, side))  # noqa: E731
    precision_note = "bf16 autocast, channels_last" if bf16 else "f32, channels_last"

    # ---- (a), (b): restoration
    if parts & {"latency", "throughput"}:
        bridge = prepare(Unet(cfg)).eval()
        mean = prepare(Unet(cfg.without_time())).eval()
        runs = []
        if "latency" in parts:
            runs += [(1, nfe) for nfe in nfes]
        if "throughput" in parts and args.batch > 1:
            runs.append((args.batch, nfes[-1]))
        for peer in peers:
            if peer == "eager":
                b_net, m_net, post = bridge, mean, posterior
            else:
                b_net = torch.compile(bridge, mode=args.compile_mode, dynamic=False)
                m_net = torch.compile(mean, mode=args.compile_mode, dynamic=False)
                post = torch.compile(posterior, dynamic=False)
            for n, nfe in runs:
                host = torch.rand(n, args.size, args.size, 3) * 2 - 1  # degraded batch, NHWC, on the host
                ts, cs = step_plan(nfe, n, device)

                def restore():
                    mark_step()
                    with torch.no_grad(), autocast():
                        x1 = host.to(device).permute(0, 3, 1, 2)  # NCHW view, channels_last
                        e = x1 + m_net(x1)
                        x = e
                        for i in range(nfe):
                            out = b_net(x, ts[i])
                            x = post(out, x, e, cs[i])
                            del out
                        return x.permute(0, 2, 3, 1).float().cpu()

                label = f"restore {args.size}x{args.size} batch {n} NFE {nfe} ({cfg.name}, mean + bridge, {peer})"
                secs = timer.median(label, restore)
                what = (f"restore {args.size}x{args.size} batch {n} NFE {nfe} ({cfg.name}, mean + nadb, "
                        f"{'PyTorch eager' if peer == 'eager' else compiled_note})")
                figures.append((what, secs, n / secs, flops(n, args.size) * (nfe + 1) / secs / 1e12))
        del bridge, mean

    # ---- (c): training step
    if "train" in parts:
        net = prepare(Unet(cfg)).train()
        params = [p for p in net.parameters()]
        fused = device.type == "cuda"
        opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                **({"fused": True} if fused else {"foreach": True}))
        ema = [p.detach().clone() for p in params]
        n, side = args.train_batch, args.train_size
        clean = torch.rand(n, side, side, 3) * 2 - 1
        degraded = torch.rand(n, side, side, 3) * 2 - 1
        for peer in peers:
            model = net if peer == "eager" else torch.compile(net, mode=args.compile_mode, dynamic=False)

            def train_step():
                mark_step()
                x0 = clean.to(device).permute(0, 3, 1, 2)
                x1 = degraded.to(device).permute(0, 3, 1, 2)
                s = torch.rand(n, device=device)
                sv = s.view(n, 1, 1, 1)
                xt = (1 - sv) * x0 + sv * x1 + (sv * (1 - sv)).sqrt() * torch.randn_like(x0)
                target = xt - x0
                with autocast():
                    out = model(xt, 1000.0 * s)
                loss = F.mse_loss(out.float(), target)
                loss_value = loss.item()  # the engine's one host sync per step
                if loss_value != loss_value:
                    raise RuntimeError("the loss is NaN")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                opt.step()
                with torch.no_grad():
                    torch._foreach_lerp_(ema, params, 1.0 - 0.999)

            label = f"train step {side}x{side} batch {n} ({cfg.name}, {peer})"
            secs = timer.median(label, train_step)
            what = (f"train step {side}x{side} batch {n} ({cfg.name}, nadb-nomean, "
                    f"{'PyTorch eager' if peer == 'eager' else compiled_note})")
            figures.append((what, secs, n / secs, 3 * flops(n, side) / secs / 1e12))
        del net, opt, ema

    # ---- (d): the largest 3x3 convolution alone
    peak_note = ""
    if "conv" in parts:
        shapes = conv3x3_shapes(cfg, args.size, args.size)
        name, cin, cout, h, w, stride = max(shapes, key=lambda r: r[1] * r[2] * r[3] * r[4] / r[5] ** 2)
        n = args.batch
        dt = torch.bfloat16 if bf16 else torch.float32
        x = torch.randn(n, cin, h, w, device=device, dtype=dt).to(memory_format=torch.channels_last)
        wt = (torch.randn(cout, cin, 3, 3, device=device, dtype=dt) / (9 * cin) ** 0.5).to(
            memory_format=torch.channels_last)
        b = torch.randn(cout, device=device, dtype=dt)
        ho, wo = -(-h // stride), -(-w // stride)
        conv_flops = 2.0 * n * ho * wo * cout * cin * 9
        reps = 10 if device.type == "cuda" else 1

        def conv_run():
            for _ in range(reps):
                y = F.conv2d(x, wt, b, stride=stride, padding=1)
            return y

        label = f"conv2d 3x3 {name}"
        secs = timer.median(label, conv_run) / reps
        tflops = conv_flops / secs / 1e12
        what = (f"conv2d 3x3 forward [{n}, {h}, {w}, {cin}] -> {cout}, stride {stride} "
                f"({cfg.name} {name}; F.conv2d{', cuDNN' if device.type == 'cuda' else ''}, {'bf16' if bf16 else 'f32'}, channels_last)")
        figures.append((what, secs, None, tflops))
        if device.type == "cuda":
            key, peak = card_peak(torch.cuda.get_device_name(device))
            if peak and bf16:
                peak_note = (f"conv2d 3x3: {tflops:.1f} TFLOP/s = {100 * tflops / peak:.1f}% of the "
                             f"{key}'s dense bf16 peak ({peak:.0f} TFLOP/s)")

    table = [
        f"PyTorch twin ({precision_note}), {line}",
        "",
        "| what | median ms | images/s | network TFLOP/s |",
        "| --- | --- | --- | --- |",
    ]
    for what, secs, ips, tf in figures:
        table.append(f"| {what} | {secs * 1e3:.3f} | {'-' if ips is None else f'{ips:.2f}'} | "
                     f"{'-' if tf is None else f'{tf:.3f}'} |")
    if peak_note:
        table += ["", peak_note]
    text = "\n".join(table) + "\n"
    print(text, end="")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
