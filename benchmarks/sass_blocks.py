"""Where a kernel's instructions go, per basic block, from Nsight Compute's source page.

Export the SASS page of a report, then summarise it: per kernel, the warp
instructions executed and the blocks (runs of instructions with the same
execution count) that take more than ``--share`` of them::

    ncu --clock-control none -k regex:"forward_kernel|backward_kernel" --launch-skip 6 --launch-count 2 \
        --section InstructionStats -o rep python3 benchmarks/profile_step.py --what render --batch 1 \
        --size 2048 --n 100000
    ncu -i rep.ncu-rep --page source --csv --print-source sass > sass.csv
    python3 benchmarks/sass_blocks.py sass.csv

A block's execution count says how often it ran (per warp); e.g. the per-pixel
candidate test runs once per (warp, candidate) pair, the sample path only for
pairs with some lane inside the bitmap (benchmarks/RESULTS.md, issue 17).
"""

from __future__ import annotations

import argparse
import csv


def kernels(path: str) -> list[dict]:
    """The CSV's kernel sections: name, header row and instruction rows."""
    sections, cur = [], None
    with open(path, newline="") as fh:
        for row in csv.reader(fh):
            if row and row[0] == "Kernel Name":
                cur = {"name": row[1], "rows": []}
                sections.append(cur)
            elif row and row[0] == "Address" and cur is not None:
                cur["header"] = row
            elif row and cur is not None and "header" in cur:
                cur["rows"].append(row)
    return sections


def blocks(section: dict) -> list[tuple[int, list[str]]]:
    """(execution count, instructions) of each run of equal counts, in address order."""
    col = section["header"].index("Instructions Executed")
    out: list[tuple[int, list[str]]] = []
    for row in section["rows"]:
        try:
            n = int(row[col].replace(",", ""))
        except ValueError:
            n = 0
        if not out or out[-1][0] != n:
            out.append((n, []))
        out[-1][1].append(row[1].strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="ncu -i REPORT --page source --csv --print-source sass")
    ap.add_argument("--share", type=float, default=0.02, help="smallest share of a kernel's instructions shown")
    args = ap.parse_args()
    seen = set()
    for section in kernels(args.csv):
        name = section["name"].split("(")[0]
        if name in seen or "header" not in section:
            continue  # one profiled launch per kernel is enough
        seen.add(name)
        runs = blocks(section)
        total = sum(n * len(ins) for n, ins in runs) or 1
        print(f"== {name}: {total} warp instructions executed")
        for n, ins in runs:
            if n * len(ins) / total > args.share:
                print(f"  ran {n:>10d} x {len(ins):3d} instructions = {100 * n * len(ins) / total:5.1f} %   "
                      + " | ".join(i[:24] for i in ins[:5]))


if __name__ == "__main__":
    main()
