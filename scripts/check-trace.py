#!/usr/bin/env python3
"""Checks that a `nadb bench --profile --trace FILE` output is a Chrome
trace Perfetto accepts: a JSON object with a "traceEvents" list whose every
event has name, ph, ts, dur, pid and tid, complete events ("X") with a
non-negative duration. Prints a one-line summary; exits 1 on a bad file.

    scripts/check-trace.py trace.json
"""
import json
import sys

REQUIRED = ("name", "ph", "ts", "dur", "pid", "tid")


def main(path):
    with open(path) as f:
        trace = json.load(f)
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    if not isinstance(events, list) or not events:
        sys.exit(f"{path}: no traceEvents list")
    spans = 0
    for i, e in enumerate(events):
        missing = [k for k in REQUIRED if k not in e]
        if missing:
            sys.exit(f"{path}: event {i} ({e.get('name')!r}) lacks {', '.join(missing)}")
        if e["ph"] == "X":
            spans += 1
            if not (isinstance(e["dur"], (int, float)) and e["dur"] >= 0):
                sys.exit(f"{path}: event {i} ({e['name']!r}) has duration {e['dur']!r}")
    threads = {e["tid"] for e in events}
    print(f"{path}: {len(events)} events ({spans} op spans) on {len(threads)} thread(s), all with {', '.join(REQUIRED)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
