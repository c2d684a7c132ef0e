#!/usr/bin/env python3
"""Turns Debian's `fortunes` package into a labelled text dataset (CSV: text,label).

    sudo apt-get install fortunes fortunes-min
    python3 scripts/make-fortunes-csv.py OUT.csv [--per-class N]

Each category file in /usr/share/games/fortunes holds entries separated by `%` lines; the
category is the label. Entries are whitespace-normalised; duplicates and empty ones dropped;
with --per-class N (default 200) the first N entries of each category are kept, so no class
dominates. Deterministic.
"""

import argparse
import csv
import sys
from pathlib import Path

CATEGORIES = ["computers", "food", "law", "medicine", "politics", "science", "sports", "startrek"]
ROOT = Path("/usr/share/games/fortunes")


def entries(path):
    text = path.read_text(encoding="utf-8", errors="replace")
    seen = set()
    for block in text.split("\n%\n"):
        entry = " ".join(block.replace("%", " ").split())
        if entry and entry not in seen:
            seen.add(entry)
            yield entry


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=200)
    a = ap.parse_args()
    missing = [c for c in CATEGORIES if not (ROOT / c).is_file()]
    if missing:
        sys.exit(f"missing {', '.join(missing)} in {ROOT}: apt-get install fortunes fortunes-min")
    with open(a.out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for c in CATEGORIES:
            for i, e in enumerate(entries(ROOT / c)):
                if i >= a.per_class:
                    break
                w.writerow([e, c])
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
