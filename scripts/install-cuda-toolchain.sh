#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (the one the GPU machines run) from
# the Python package index into .toolchain/ (ignored by git), and links its
# CUDA folder to .toolchain/cuda, so build.rs finds .toolchain/cuda/bin/nvcc
# (nvcc finds its headers beside its own path). No GPU needed; ~500 MB.
# Idempotent: a second run with the toolchain in place does nothing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tc="$root/.toolchain"
if "$tc/cuda/bin/nvcc" --version >/dev/null 2>&1; then
    echo "pinned nvcc already in $tc/cuda/bin"
    exit 0
fi
python3 -m venv "$tc/venv"
"$tc/venv/bin/pip" install --quiet --disable-pip-version-check \
    nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
cu13="$("$tc/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
[[ -x $cu13/bin/nvcc ]] || { echo "error: no nvcc under $cu13/bin after the install" >&2; exit 1; }
ln -sfn "$cu13" "$tc/cuda"
"$tc/cuda/bin/nvcc" --version | tail -n 2
