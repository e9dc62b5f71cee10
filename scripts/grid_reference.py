#!/usr/bin/env python3
"""The samplers' step grids, written from the text of ../shared/spec/nadb.md
(sections 4 and 5), for tests/bridge.rs to check the engine against.

Both bridges take the reference's `space_indices(num_steps, N + 1)`: start
at 0.0, add the float stride (num_steps - 1) / N, N times, and round each
partial sum half to even (Python's round). NADB: num_steps = 1001 (steps
0..1000, t = step / 1000), N = 1..1000. I2SB: num_steps = 1000 (steps
0..999), N = 1..999 (the reference requires N < 1000).

    scripts/grid_reference.py > tests/fixtures/grids.txt

Output: one line per (bridge, N): `nadb N HASH` (or `i2sb ...`), HASH the
64-bit FNV-1a (hex) of the grid's integer steps from t = 0 to its end,
written in decimal and joined by single spaces ("0 62 125 ... 1000"): 2,000
lines instead of 4 MB of lists. `--lists` prints the lists themselves.
"""
import sys


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h


def steps(num_steps, nfe):
    stride = (num_steps - 1) / nfe
    cur, out = 0.0, []
    for _ in range(nfe + 1):
        out.append(round(cur))
        cur += stride
    return out


def main():
    for name, num_steps, max_nfe in (("nadb", 1001, 1000), ("i2sb", 1000, 999)):
        for nfe in range(1, max_nfe + 1):
            grid = steps(num_steps, nfe)
            assert grid[0] == 0 and grid[-1] == num_steps - 1, (name, nfe, grid[-1])
            text = " ".join(map(str, grid))
            print(name, nfe, text if "--lists" in sys.argv else f"{fnv1a64(text):016x}")


if __name__ == "__main__":
    main()
