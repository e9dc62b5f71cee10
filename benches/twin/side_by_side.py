#!/usr/bin/env python3
"""Joins the tables of `nadb bench` and of the twin's bench.py (same
arguments, same machine, one run after the other) into one: the engine's
and PyTorch's median times per row and their ratio (engine / PyTorch; below
1 the engine is faster). Rows are matched on what precedes " (" in their
first column ("restore 256x256 batch 1 NFE 1", "train step 64x64 batch 4").
The first lines name the CPU, its SIMD features and the engine's CPU
utilisation ((user + sys) / wall, from /usr/bin/time).

    side_by_side.py NADB_TABLE TORCH_TABLE [NADB_TIME_LOG]
"""
import re
import sys

SIMD = ("avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile", "avx_vnni")


def rows(path):
    out = {}
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.match(r"(restore|train step) ", cells[0]):
            out[cells[0].split(" (")[0]] = (cells[0], float(cells[1]))
    return out


def cpu():
    model, flags = "unknown CPU", set()
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    cores = sum(1 for line in open("/proc/cpuinfo") if line.startswith("processor"))
    return f"{model}, {cores} cores; SIMD: {' '.join(f for f in SIMD if f in flags) or 'none of ' + ', '.join(SIMD)}"


def utilisation(path):
    text = open(path).read()
    get = lambda pattern: re.search(pattern, text)
    user, sys_, wall = get(r"User time \(seconds\): ([\d.]+)"), get(r"System time \(seconds\): ([\d.]+)"), \
        get(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
    if not (user and sys_ and wall):
        return "unknown"
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return f"{(float(user.group(1)) + float(sys_.group(1))) / seconds:.2f} cores busy on average"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    engine, torch = rows(sys.argv[1]), rows(sys.argv[2])
    print(f"CPU: {cpu()}")
    if len(sys.argv) == 4:
        print(f"nadb bench CPU utilisation: {utilisation(sys.argv[3])}")
    print()
    print("| what | nadb ms | PyTorch ms | ratio nadb / PyTorch |")
    print("| --- | --- | --- | --- |")
    for key, (what, ms) in engine.items():
        if key in torch:
            peer = torch[key][1]
            print(f"| {what} | {ms:.1f} | {peer:.1f} | {ms / peer:.2f} |")
        else:
            print(f"| {what} | {ms:.1f} | - | - |")


if __name__ == "__main__":
    main()
