#!/usr/bin/env python3
"""Joins the tables of `nadb bench` and of the twin's bench.py (same
arguments, same machine, run in alternation, one round after the other)
into one: per row, the engine's and PyTorch's times (the median over the
rounds of each round's median) and their ratio (engine / PyTorch; below 1
the engine is faster), with the lowest and highest per-round ratio. Rows
are matched on what precedes " (" in their first column ("restore 256x256
batch 1 NFE 1", "train step 64x64 batch 4"). The first lines name the CPU,
its SIMD features and the engine's CPU utilisation ((user + sys) / wall,
from /usr/bin/time: over all rounds, and the lowest round's).

    side_by_side.py NADB_TABLES TORCH_TABLES [NADB_TIME_LOGS]

Each argument is a comma-separated list, one file per round, rounds in the
same order.
"""
import statistics
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


def busy_and_wall(path):
    """(user + sys seconds, wall seconds) from a /usr/bin/time -v log."""
    text = open(path).read()
    get = lambda pattern: re.search(pattern, text)
    user, sys_, wall = get(r"User time \(seconds\): ([\d.]+)"), get(r"System time \(seconds\): ([\d.]+)"), \
        get(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)")
    if not (user and sys_ and wall):
        sys.exit(f"{path}: no user, system and wall time in it")
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return float(user.group(1)) + float(sys_.group(1)), seconds


def utilisation(paths):
    runs = [busy_and_wall(p) for p in paths]
    pooled = sum(b for b, _ in runs) / sum(w for _, w in runs)
    lowest = min(b / w for b, w in runs)
    return f"{pooled:.2f} cores busy on average over {len(runs)} run(s) (lowest run {lowest:.2f})"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    engine_rounds = [rows(p) for p in sys.argv[1].split(",")]
    torch_rounds = [rows(p) for p in sys.argv[2].split(",")]
    if len(engine_rounds) != len(torch_rounds):
        sys.exit(f"{len(engine_rounds)} engine tables but {len(torch_rounds)} PyTorch tables")
    print(f"CPU: {cpu()}")
    if len(sys.argv) == 4:
        print(f"nadb bench CPU utilisation: {utilisation(sys.argv[3].split(','))}")
    print(f"rounds: {len(engine_rounds)} (nadb, then PyTorch, in each)")
    print()
    print("| what | nadb ms | PyTorch ms | ratio nadb / PyTorch | per-round ratios |")
    print("| --- | --- | --- | --- | --- |")
    for key, (what, _) in engine_rounds[0].items():
        ms = [r[key][1] for r in engine_rounds if key in r]
        peer = [r[key][1] for r in torch_rounds if key in r]
        if len(peer) == len(ms) == len(engine_rounds):
            ratios = [a / b for a, b in zip(ms, peer)]
            med, peer_med = statistics.median(ms), statistics.median(peer)
            print(f"| {what} | {med:.1f} | {peer_med:.1f} | {med / peer_med:.2f} | "
                  f"{min(ratios):.2f}-{max(ratios):.2f} |")
        else:
            print(f"| {what} | {statistics.median(ms):.1f} | - | - | - |")


if __name__ == "__main__":
    main()
