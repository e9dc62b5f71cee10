#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (the one the GPU machines run) from
# the Python package index into .toolchain/ (ignored by git), and links its
# CUDA folder to .toolchain/cuda, so build.rs finds .toolchain/cuda/bin/nvcc
# (nvcc finds its headers beside its own path). No GPU needed; ~550 MB.
# Idempotent: a second run with the toolchain in place does nothing.
#
# Beside nvcc: compute-sanitizer 13.0 (nvidia-cuda-sanitizer-api, the
# same release; scripts/stage-gpu.sh stages it for GPU machines that lack
# it), and cuobjdump to list the SASS in the fatbins build.rs makes. The
# index has no 13.0 cuobjdump (its first is 13.2.51); a 13.2 reader lists
# 13.0 fatbins, and nothing is compiled with it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tc="$root/.toolchain"
bin="$tc/cuda/bin"
if "$bin/nvcc" --version >/dev/null 2>&1 && [[ -x $bin/cuobjdump && -x $bin/compute-sanitizer ]]; then
    echo "pinned nvcc, cuobjdump and compute-sanitizer already in $bin"
    exit 0
fi
[[ -x $tc/venv/bin/pip ]] || python3 -m venv "$tc/venv"
"$tc/venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cuda-sanitizer-api==13.0.85 nvidia-cuda-cuobjdump==13.2.51
cu13="$("$tc/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
[[ -x $cu13/bin/nvcc ]] || { echo "error: no nvcc under $cu13/bin after the install" >&2; exit 1; }
ln -sfn "$cu13" "$tc/cuda"
"$tc/cuda/bin/nvcc" --version | tail -n 2
