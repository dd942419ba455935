"""Export benchmark: time and peak memory of each writer on a large scene.

    python benchmarks/bench_export.py [--n 20000] [--size 512] [--formats psd,svg,png]
        [--json benchmarks/bench_export.json]

Peak memory is reported two ways: the Python-heap peak during the export
(tracemalloc, numpy buffers included, XLA's own buffers not), and the process
resident-set high-water mark (ru_maxrss, everything, monotone over the run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
import tracemalloc

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import diffbmp_jax as db  # noqa: E402
from diffbmp_jax.export import export  # noqa: E402


def make_scene(n: int, size: int, bitmap: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:bitmap, :bitmap] + 0.5
    c = bitmap / 2
    disc = (((xx - c) ** 2 + (yy - c) ** 2) < (0.45 * bitmap) ** 2).astype(np.float32)
    star = ((np.abs(xx - c) + np.abs(yy - c)) < 0.45 * bitmap).astype(np.float32)
    ramp = np.stack([xx / bitmap, yy / bitmap, 1 - xx / bitmap], -1).astype(np.float32)
    atlas = db.Atlas.from_arrays(np.stack([disc, star]), np.stack([ramp, ramp[::-1]]))
    params = db.Primitives.create(xy=rng.random((n, 2)) * size, scale=rng.uniform(2, 10, n),
                                  rotation=rng.uniform(-np.pi, np.pi, n), opacity=rng.uniform(0.3, 0.9, n),
                                  color=rng.random((n, 3)))
    return params, atlas


def measure(fn):
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return dt, peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--formats", default="psd,svg,png")
    ap.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "bench_export.json"))
    args = ap.parse_args(argv)
    params, atlas = make_scene(args.n, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for fmt in args.formats.split(","):
            path = os.path.join(d, f"out.{fmt}")
            dt, peak = measure(lambda: export(fmt, path, params, atlas, height=args.size, width=args.size))
            rows.append(dict(format=fmt, n=args.n, canvas=f"{args.size}x{args.size}", seconds=round(dt, 2),
                             peak_python_mb=round(peak / 2**20, 1),
                             maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                             file_mb=round(os.path.getsize(path) / 2**20, 2)))
            print(rows[-1], flush=True)
    full_layers_mb = args.n * args.size * args.size * 4 / 2**20
    print(f"\nExport of {args.n} primitives, {args.size}x{args.size} canvas, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}, {os.cpu_count()} CPUs")
    print(f"(holding {args.n} full-canvas RGBA8 layers would take {full_layers_mb:,.0f} MB)\n")
    hdr = ["format", "seconds", "peak_python_mb", "maxrss_mb", "file_mb"]
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print("| " + " | ".join(str(r[h]) for h in hdr) + " |")
    with open(args.json, "w") as f:
        json.dump(dict(rows=rows, jax=jax.__version__, python=platform.python_version(),
                       platform=platform.platform(), cpus=os.cpu_count()), f, indent=2)


if __name__ == "__main__":
    main()
