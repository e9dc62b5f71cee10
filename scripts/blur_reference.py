#!/usr/bin/env python3
"""An independent NumPy implementation of the paper's blur operator, written
from the five steps of ../shared/spec/nadb.md section 6 (DDRM's
`Deblurring.H` as the reference code runs it), to check the engine's
`blur-uniform` and `blur-gauss` against.

    scripts/blur_reference.py compare IMAGE.png --task blur-uniform \
        --engine OUT/IMAGE.safetensors [--crop 256]
        prints the max abs difference between this script's output and the
        engine's (`nadb degrade --tensors`), both on [-1, 1] f32 data
    scripts/blur_reference.py fixture IMAGE.png --crop H W --out FILE.f32
    scripts/blur_reference.py fixture impulse --crop H W --out FILE.f32
        writes blur-uniform then blur-gauss of the center H x W crop (or of
        a white point at (H/2, W/2) on black), raw little-endian f32 NHWC
        [2, H, W, 3]: the fixtures tests/degrade.rs reads

Needs numpy and Pillow (not needed by the engine or CI). Ties in the sorted
singular-value products keep row-major order (a stable sort), as the engine
does. Non-square images use the SVD of each side's matrix (the engine's
documented generalisation); for H = W that is the spec's step list.
"""

import argparse
import json
import struct
import sys

import numpy as np
from PIL import Image


def kernel(task):
    if task == "blur-uniform":
        return np.full(9, 1.0 / 9.0)
    if task == "blur-gauss":
        x = np.arange(-2.0, 3.0)
        g = np.exp(-x * x / 200.0)
        return g / g.sum()
    raise SystemExit(f"unknown task {task}")


def matrix(n, taps):
    """H[i][j] = taps[j - i + k//2] for j in [i - k//2, i + k//2) inside."""
    k = len(taps)
    h = np.zeros((n, n))
    for i in range(n):
        for j in range(i - k // 2, i + k // 2):
            if 0 <= j < n:
                h[i, j] = taps[j - i + k // 2]
    return h


def blur(img, task):
    """img: [H, W, 3] in [-1, 1] -> the operator's output, float64."""
    hgt, wid, ch = img.shape
    assert ch == 3
    taps = kernel(task)
    x = (img.astype(np.float64) + 1.0) / 2.0
    # Step 1: SVD of each side's 1-D matrix, S below 3e-2 zeroed.
    sides = []
    for n in (hgt, wid):
        u, s, vt = np.linalg.svd(matrix(n, taps))
        s = np.where(s < 3e-2, 0.0, s)
        sides.append((u, s, vt.T))
    (uh, sh, vh), (uw, sw, vw) = sides
    # Step 2: products flattened row-major, sorted descending (stable).
    s2 = np.outer(sh, sw).reshape(-1)
    perm = np.argsort(-s2, kind="stable")
    ss = s2[perm]
    n_total = s2.size
    # Step 3: per channel K_c = V^T X_c V, flattened, in sorted order.
    t = np.stack([(vh.T @ x[:, :, c] @ vw).reshape(-1)[perm] for c in range(3)], axis=1)
    # Step 4: flatten pixel-major (q = 3p + c), times ss tiled three times.
    flat = t.reshape(-1) * np.tile(ss, 3)
    t = flat.reshape(n_total, 3)
    # Step 5: undo the permutation, Y_c = U M_c U^T.
    out = np.empty_like(x)
    for c in range(3):
        m = np.empty(n_total)
        m[perm] = t[:, c]
        out[:, :, c] = uh @ m.reshape(hgt, wid) @ uw.T
    return out * 2.0 - 1.0


def load_crop(path, hgt, wid):
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    h0, w0 = rgb.shape[:2]
    if h0 < hgt or w0 < wid:
        raise SystemExit(f"{path}: {w0}x{h0} is smaller than {wid}x{hgt}")
    top, left = (h0 - hgt) // 2, (w0 - wid) // 2
    return rgb[top:top + hgt, left:left + wid] / 255.0 * 2.0 - 1.0


def read_safetensors(path, name):
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    info = header[name]
    assert info["dtype"] == "F32", info
    lo, hi = info["data_offsets"]
    return np.frombuffer(data[lo:hi], dtype="<f4").reshape(info["shape"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("image")
    c.add_argument("--task", required=True)
    c.add_argument("--engine", required=True)
    c.add_argument("--crop", type=int, help="center crop side (default: the whole image)")
    f = sub.add_parser("fixture")
    f.add_argument("image")
    f.add_argument("--crop", type=int, nargs=2, metavar=("H", "W"), required=True)
    f.add_argument("--out", required=True)
    a = p.parse_args()
    if a.cmd == "compare":
        engine = read_safetensors(a.engine, "x")[0].astype(np.float64)
        hgt, wid = engine.shape[:2]
        if a.crop:
            assert (hgt, wid) == (a.crop, a.crop), engine.shape
        ours = blur(load_crop(a.image, hgt, wid), a.task)
        diff = np.abs(ours - engine)
        print(f"{a.task} {wid}x{hgt}: max abs difference {diff.max():.3e}, "
              f"mean {diff.mean():.3e}")
    else:
        hgt, wid = a.crop
        if a.image == "impulse":
            img = -np.ones((hgt, wid, 3))
            img[hgt // 2, wid // 2] = 1.0
        else:
            img = load_crop(a.image, hgt, wid)
        out = np.stack([blur(img, t) for t in ("blur-uniform", "blur-gauss")])
        out.astype("<f4").tofile(a.out)
        print(f"wrote {a.out}: [2, {hgt}, {wid}, 3] f32")


if __name__ == "__main__":
    sys.exit(main())
