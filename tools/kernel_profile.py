#!/usr/bin/env python3
"""Sums the kernel timings in a cubecl profiling log (CUBECL_DEBUG_LOG=FILE with
CUBECL_DEBUG_OPTION=profile): one line per kernel kind, total time, launches and share, largest
first. Used by scripts/gpu-check.sh to say where a GPU training step spends its time.

  python3 tools/kernel_profile.py /tmp/cubecl.log [--top 20]
"""
import argparse
import collections
import re

UNITS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
LINE = re.compile(r"^\|\s*([0-9.]+)(ns|µs|us|ms|s)\s*\|\s*([^|]+?)\s*(\||$)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("log")
    p.add_argument("--top", type=int, default=20)
    a = p.parse_args()
    total = collections.Counter()
    count = collections.Counter()
    with open(a.log, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            # The kind without its hash suffix: one row per kernel family.
            name = re.sub(r"_[0-9a-f]{8}$", "", m.group(3))
            total[name] += float(m.group(1)) * UNITS[m.group(2)]
            count[name] += 1
    whole = sum(total.values())
    print(f"{whole * 1e3:.1f} ms of kernel time in {sum(count.values())} launches")
    for name, t in total.most_common(a.top):
        print(f"{t * 1e3:10.2f} ms {100 * t / whole:5.1f}% {count[name]:7d}x  {name}")


if __name__ == "__main__":
    main()
