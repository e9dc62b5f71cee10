#!/usr/bin/env python3
"""Reference values for src/metrics.rs, computed with scikit-image.

Writes tests/fixtures/metrics.json: for each fixture, the parameters of a pair
of 8-bit HWC images built from integer formulas (rebuilt bit for bit by
tests/metrics.rs) and scikit-image's PSNR and SSIM of the pair, configured as
spec section 8 says:

    peak_signal_noise_ratio(a, b, data_range=255)
    structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                          use_sample_covariance=False, data_range=255,
                          channel_axis=-1)

scikit-image is not a dependency of the crate. Unless --no-venv is given (or
skimage already imports), the script creates a virtual environment outside the
repository (default /tmp/skimage-venv, override with $SKIMAGE_VENV), installs
numpy and scikit-image there from PyPI and re-runs itself with it.

Usage (from the repository root):  python3 scripts/metrics_fixture.py
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "metrics.json"
VENV = Path(os.environ.get("SKIMAGE_VENV", "/tmp/skimage-venv"))

M32 = 0xFFFFFFFF


def ensure_skimage():
    """Re-exec inside a venv holding scikit-image unless it imports already."""
    try:
        import skimage  # noqa: F401
        import numpy  # noqa: F401

        return
    except ImportError:
        pass
    if "--no-venv" in sys.argv:
        sys.exit("scikit-image is not importable and --no-venv was given")
    if REPO in VENV.resolve().parents:
        sys.exit(f"refusing to create the venv inside the repository: {VENV}")
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
        subprocess.check_call(
            [str(py), "-m", "pip", "install", "-q", "numpy", "scikit-image"]
        )
    os.execv(str(py), [str(py), __file__, "--no-venv"])


# ---------------------------------------------------------------------------
# Image recipes. Keep in sync with tests/metrics.rs (same names, same integer
# arithmetic, 32-bit wrapping where masked with M32).


def hash32(v):
    """A 32-bit integer mixer (lowbias32)."""
    v &= M32
    v ^= v >> 16
    v = (v * 0x7FEB352D) & M32
    v ^= v >> 15
    v = (v * 0x846CA68B) & M32
    v ^= v >> 16
    return v


def base_value(p, y, x, ch):
    """Clean image: a wrapped ramp plus a bilinear term, all in integers."""
    return (p["ax"] * x + p["ay"] * y + p["ac"] * ch + ((p["axy"] * x * y) >> 4)) % 256


def make_pair(p):
    """(clean, distorted) as flat HWC lists of ints in [0, 255].

    distorted(y, x, c) = clamp(clean(y, x + shift, c) + noise, 0, 255), where
    x + shift is clamped to the last column, and noise, drawn from the hash of
    the pixel index and the seed, is uniform in [-amp, amp] on pixels where a
    second hash is divisible by `every` (every pixel when every == 1), else 0.
    """
    h, w, c = p["h"], p["w"], p["c"]
    seed_key = hash32(p["seed"])
    clean, dist = [], []
    for y in range(h):
        for x in range(w):
            for ch in range(c):
                idx = (y * w + x) * c + ch
                clean.append(base_value(p, y, x, ch))
                xs = min(x + p["shift"], w - 1)
                v = base_value(p, y, xs, ch)
                r = hash32(idx ^ seed_key)
                if hash32(r ^ 0x9E3779B9) % p["every"] == 0:
                    v += r % (2 * p["amp"] + 1) - p["amp"]
                dist.append(min(max(v, 0), 255))
    return clean, dist


FIXTURES = [
    # Non-square, strong noise.
    dict(name="nonsquare_37x23", h=37, w=23, c=3, ax=37, ay=11, ac=5, axy=1,
         shift=0, amp=40, every=1, seed=1),
    # Square, moderate noise.
    dict(name="square_64", h=64, w=64, c=3, ax=3, ay=2, ac=50, axy=1,
         shift=0, amp=20, every=1, seed=2),
    # Differs only slightly: +-1 gray level on about one pixel in 8.
    dict(name="slight_64", h=64, w=64, c=3, ax=3, ay=2, ac=50, axy=1,
         shift=0, amp=1, every=8, seed=3),
    # Structural change: shifted one column, plus weak noise.
    dict(name="shift_48x40", h=48, w=40, c=3, ax=2, ay=5, ac=17, axy=3,
         shift=1, amp=5, every=1, seed=4),
    # Smallest size scikit-image accepts with an 11x11 window; one channel.
    dict(name="gray_16x11", h=16, w=11, c=1, ax=7, ay=13, ac=0, axy=2,
         shift=0, amp=30, every=2, seed=5),
    # ImageNet evaluation size.
    dict(name="imagenet_256", h=256, w=256, c=3, ax=1, ay=1, ac=60, axy=1,
         shift=0, amp=12, every=1, seed=6),
]


def main():
    ensure_skimage()
    import numpy as np
    import scipy
    import skimage
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    out = []
    for p in FIXTURES:
        clean, dist = make_pair(p)
        shape = (p["h"], p["w"], p["c"])
        a = np.array(clean, dtype=np.uint8).reshape(shape)
        b = np.array(dist, dtype=np.uint8).reshape(shape)
        assert not np.array_equal(a, b), p["name"]
        psnr = peak_signal_noise_ratio(a, b, data_range=255)
        ssim = structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=255, channel_axis=-1,
        )
        out.append(dict(p, psnr=float(psnr), ssim=float(ssim),
                        sum_clean=int(a.astype(np.int64).sum()),
                        sum_distorted=int(b.astype(np.int64).sum())))
        print(f"{p['name']:>16}: psnr {psnr:.6f}  ssim {ssim:.6f}")

    doc = dict(
        generator="scripts/metrics_fixture.py",
        reference=dict(
            skimage=skimage.__version__, scipy=scipy.__version__, numpy=np.__version__,
            psnr="peak_signal_noise_ratio(clean, distorted, data_range=255)",
            ssim="structural_similarity(clean, distorted, gaussian_weights=True, "
                 "sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1)",
        ),
        fixtures=out,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
