"""Time to first result: fresh processes, cold and warm compilation cache, and what compiles.

Each run is a new Python process (nothing compiled in memory), with the
persistent compilation cache in a fresh folder for the cold run and the same
folder again for the warm runs::

    python benchmarks/bench_startup.py --help-time             # `diffbmp-jax --help`, 3 runs
    python benchmarks/bench_startup.py demo                     # the CLI demo, cold then warm x2
    python benchmarks/bench_startup.py fit --bench ../shared/bench --size 512 -n 1000 --steps 300
    python benchmarks/bench_startup.py cli-fit --bench ../shared/bench   # the same fit as `diffbmp-jax fit`
    python benchmarks/bench_startup.py demo --compiles          # what compiles, per function
    python benchmarks/bench_startup.py --maps 512,1024          # host vs compiled structure maps

``fit`` runs ``diffbmp_jax.fit`` on vangogh1 with the fingerprint stamp (the
quality protocol's scene, 512 px wide; the target read by ``db.io.load_target``,
or with ``--loader protocol`` by the protocol's full-size Lanczos resize) and prints the wall time of the whole process, of
the fit, and the fit's compile and step time (``FitResult.compile_time``,
``step_time``), and how long the interpreter took to exit after the script's
last line (JAX's runtime and the heap torn down). ``cli-fit`` runs the same
scene as the command a user types (``diffbmp-jax fit ... --stamp-size 128
--frames 0``: the target downscaled to 512 px wide, the PNG and ``params.npz``
written, the console script's quick exit). ``--compiles`` lists, for the cold run, the seconds JAX spent
tracing, lowering and compiling each function (``jax.monitoring`` spans).
``--profile ROWS`` runs the warm fits under cProfile and prints their
costliest functions. ``--maps`` times, in a fresh process per size (cache off, N=1000, a random
target), the structure maps a fit's start makes on the host against the
traceable version's first call (compilation included) and second call.
Run from outside the checkout with the package installed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

CHILD_FIT = r"""
import json, sys, time
t0 = time.perf_counter()
args = json.loads(sys.argv[1])
import collections
import jax
t_jax = time.perf_counter()
jax.devices()  # the backend's start (the CUDA client), timed on its own
t_dev = time.perf_counter()
spans = collections.defaultdict(float)
def on_span(event, start, end, **kw):
    if event.startswith("/jax/core/compile/"):
        spans[(kw.get("fun_name", "?"), event.rsplit("/", 1)[-1])] += end - start
jax.monitoring.register_event_time_span_listener(on_span)
import diffbmp_jax as db
sys.path.insert(0, args["here"])
import quality
scene = {s.name: s for s in quality.SCENES}["vangogh1-fp-300"]._replace(width=args["size"], num=args["n"],
                                                                          steps=args["steps"])
if args["loader"] == "protocol":  # the quality protocol's: a Lanczos resize of the full-size photo
    target = quality.load_target(scene, quality.Path(args["bench"]))
else:  # the library's reader, as a user of db.fit would read a photo at a size
    target = db.io.load_target(quality.Path(args["bench"]) / "targets" / scene.target, args["longer"])
atlas = quality.load_atlas(scene, quality.Path(args["bench"]), 128)
t1 = time.perf_counter()
if args["profile"]:
    import cProfile, io, pstats
    prof = cProfile.Profile()
    prof.enable()
r = db.fit(target, atlas, num_primitives=scene.num, steps=scene.steps, key=0, progress=False)
t2 = time.perf_counter()
if args["profile"]:
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(args["profile"])
    print(text.getvalue(), file=sys.stderr)
print(json.dumps({"import_and_load_s": t1 - t0, "import_jax_s": t_jax - t0, "backend_start_s": t_dev - t_jax,
                  "fit_s": t2 - t1, "compile_s": r.compile_time,
                  "step_s": r.step_time, "psnr": r.psnr, "backend": jax.default_backend(),
                  "spans": [[k[0], k[1], v] for k, v in spans.items()], "end": time.time()}))
"""

CHILD_DEMO = r"""
import json, sys, collections
import jax
spans = collections.defaultdict(float)
def on_span(event, start, end, **kw):
    if event.startswith("/jax/core/compile/"):
        spans[(kw.get("fun_name", "?"), event.rsplit("/", 1)[-1])] += end - start
jax.monitoring.register_event_time_span_listener(on_span)
from diffbmp_jax.cli.app import main
rc = main(sys.argv[1:])
print("SPANS " + json.dumps([[k[0], k[1], v] for k, v in spans.items()]))
import logging, os
logging.shutdown(); sys.stdout.flush(); sys.stderr.flush()
os._exit(rc)  # as the console script exits (diffbmp_jax.cli.app.console)
"""


def timed(cmd, env, show_stderr: bool = False) -> tuple[float, str, float]:
    """``(wall seconds, stdout, time.time() at the process's end)`` of a command."""
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, end = time.perf_counter() - t, time.time()
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])}... failed ({r.returncode}):\n{r.stderr[-3000:]}")
    if show_stderr:
        print(r.stderr, flush=True)
    return wall, r.stdout, end


def longer_side(args) -> int:
    """The longer side (pixels) that makes vangogh1 ``args.size`` wide: the protocol sizes a scene by
    its width, the library's reader and ``--size`` by the longer side."""
    from PIL import Image
    with Image.open(os.path.join(args.bench, "targets", "vangogh1.jpg")) as im:
        return round(args.size * max(im.size) / im.width)


def span_table(spans) -> str:
    per = collections.defaultdict(lambda: collections.defaultdict(float))
    for name, event, secs in spans:  # tracing names a function "f", lowering and compiling "jit(f)"
        per[re.sub(r"^jit\((.*)\)$", r"\1", name)][event] += secs
    rows = sorted(per.items(), key=lambda kv: -sum(kv[1].values()))
    lines = ["| function | trace s | lower s | compile s |", "| --- | --- | --- | --- |"]
    for name, ev in rows[:15]:
        lines.append(f"| {name} | {ev['jaxpr_trace_duration']:.2f} | {ev['jaxpr_to_mlir_module_duration']:.2f} | "
                     f"{ev['backend_compile_duration']:.2f} |")
    rest = rows[15:]
    if rest:
        lines.append(f"| ({len(rest)} more) | {sum(e['jaxpr_trace_duration'] for _, e in rest):.2f} | "
                     f"{sum(e['jaxpr_to_mlir_module_duration'] for _, e in rest):.2f} | "
                     f"{sum(e['backend_compile_duration'] for _, e in rest):.2f} |")
    total = [sum(e[k] for _, e in rows) for k in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration",
                                                  "backend_compile_duration")]
    lines.append(f"| **all {len(rows)} functions** | {total[0]:.2f} | {total[1]:.2f} | {total[2]:.2f} |")
    return "\n".join(lines)


CHILD_MAPS = r"""
import sys, time
import numpy as np
import jax
from diffbmp_jax.fitting import init
size = int(sys.argv[1])
target = np.random.default_rng(0).uniform(size=(size, size, 3)).astype(np.float32)
t0 = time.perf_counter(); init.host_structure_maps(target, 1000); t1 = time.perf_counter()
jax.block_until_ready(init.structure_maps(target, 1000)); t2 = time.perf_counter()
jax.block_until_ready(init.structure_maps(target, 1000)); t3 = time.perf_counter()
print(f"maps {size} px: host {t1 - t0:.2f} s | traceable: first call {t2 - t1:.2f} s (compiling), again {t3 - t2:.2f} s")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="?", choices=["demo", "fit", "cli-fit"], default=None)
    ap.add_argument("--help-time", action="store_true", help="time `diffbmp-jax --help` (3 runs)")
    ap.add_argument("--compiles", action="store_true", help="per-function compile table of the cold run (fit: every run)")
    ap.add_argument("--bench", default=os.environ.get("DIFFBMP_BENCH", "../shared/bench"))
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warm", type=int, default=2, help="warm runs after the cold one")
    ap.add_argument("--profile", type=int, default=0, metavar="ROWS",
                    help="fit: cProfile the warm runs' fit call and print its ROWS costliest functions (cumulative)")
    ap.add_argument("--maps", default="", help="comma list of sizes: host vs traceable structure maps")
    ap.add_argument("--loader", choices=["library", "protocol"], default="library",
                    help="fit: read the target with db.io.load_target (default) or the quality protocol's loader")
    args = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))

    if args.help_time:
        for i in range(3):
            wall, _, _ = timed(["diffbmp-jax", "--help"], dict(os.environ))
            print(f"diffbmp-jax --help: {wall:.2f} s")
    for size in filter(None, args.maps.split(",")):
        env = {**os.environ, "DIFFBMP_JAX_CACHE": "0"}
        out = subprocess.run([sys.executable, "-c", CHILD_MAPS, size], env=env, capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])
    if args.what is None:
        return
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "XDG_CACHE_HOME": cache}
        env.pop("DIFFBMP_JAX_CACHE", None)
        for run in range(1 + args.warm):
            label = "cold" if run == 0 else f"warm {run}"
            if args.what == "demo":
                cmd = [sys.executable, "-c", CHILD_DEMO, "demo", "-o", os.path.join(out, str(run)), "--no-progress"]
                wall, stdout, _ = timed(cmd, env)
                line = next(ln for ln in stdout.splitlines() if ln.startswith("PSNR"))
                spans = json.loads(stdout.split("SPANS ", 1)[1])
                print(f"demo {label}: process {wall:.2f} s | {line}")
            elif args.what == "cli-fit":
                bench = os.path.abspath(args.bench)
                target = os.path.join(bench, "targets", "vangogh1.jpg")
                cmd = ["diffbmp-jax", "fit", target, "--stamps",
                       os.path.join(bench, "stamps", "fingerprint.jpg"), "-n", str(args.n), "--steps",
                       str(args.steps), "--size", str(longer_side(args)), "--stamp-size", "128", "--frames", "0",
                       "--no-progress", "-o", os.path.join(out, str(run))]
                wall, stdout, _ = timed(cmd, env)
                lines = [ln for ln in stdout.splitlines() if ln.startswith(("PSNR", "wall time"))]
                spans = []
                print(f"cli-fit {label}: process {wall:.2f} s | {' | '.join(lines)}")
            else:
                profile = args.profile if run > 0 else 0  # warm runs: where the fit's own time goes
                cfg = {"here": here, "bench": args.bench, "size": args.size, "n": args.n, "steps": args.steps,
                       "profile": profile, "loader": args.loader, "longer": longer_side(args)}
                wall, stdout, end = timed([sys.executable, "-c", CHILD_FIT, json.dumps(cfg)], env,
                                          show_stderr=bool(profile))
                r = json.loads(stdout.strip().splitlines()[-1])
                spans = r.pop("spans")
                print(f"fit {label}: process {wall:.2f} s, fit {r['fit_s']:.2f} s (compiling {r['compile_s']:.2f} s, "
                      f"steps {r['step_s']:.2f} s), imports+loading {r['import_and_load_s']:.2f} s "
                      f"(import jax {r['import_jax_s']:.2f} s, backend start {r['backend_start_s']:.2f} s), "
                      f"exit {end - r['end']:.2f} s, PSNR {r['psnr']:.2f} dB, {r['backend']}")
            if args.compiles and (run == 0 or args.what == "fit"):
                print(span_table(spans))


if __name__ == "__main__":
    main()
