"""Where a fitting step's GPU time goes: per-kernel times (Nsight Compute or a jax.profiler trace).

Runs one workload four times (compiling in the first); ``--parse`` keeps the
kernels of the last repetition of the launch sequence -- the shortest tail
that repeats just before itself, so one call, or one step of a loop::

    ncu --clock-control none --metrics gpu__time_duration.sum \
        --csv --print-units base --log-file render.csv \
        python3 benchmarks/profile_step.py --what render --batch 16
    python3 benchmarks/profile_step.py --parse render.csv

Workloads (512², N=1000 stamps by default, the scenes of bench_scale.py):

* ``render``: ``jit(vmap(grad))`` of the render (forward + backward kernels
  and their binning) for ``--batch`` scenes;
* ``step``: one compiled chunk of ``--steps`` steps of ``fit_batch``'s loop
  (``--batch`` scenes; with ``--batch 0`` the single-scene loop of ``fit``).

``--time`` instead prints the wall time of each workload (median of 20, no
profiler), to compare with the sum of the kernel times: the difference is
time not spent in kernels (dispatch, launch gaps, host waits).

``--timeline`` traces the 4th run with ``jax.profiler`` (CUPTI, no Nsight
needed) and prints what the GPU streams did: the span, the time some kernel
or copy was running, the idle gaps, and the busiest kernels, per step for
``step`` (divided by ``--steps``)::

    python3 benchmarks/profile_step.py --what step --batch 16 --timeline

The tracer slows the host's launches, so its idle times are upper bounds;
kernel times are the GPU's. ``--hlo NAMES`` prints the compiled fusions
behind XLA kernel names the timeline lists. ``--sequence setup_kernel`` also
lists one step's launches in order, with the GPU's idle time before each (where
in the step the GPU waits), ``--gaps K`` the K longest idle times and what
surrounds them; ``--trace-out DIR`` keeps the trace for ``--trace-in FILE``
to summarise again elsewhere. ``--no-respawn`` fits with ``prune_every=0``; ``--option
KEY=VALUE`` sets a FitConfig field (``--option color_blend=0.4``: the kernels' rgb path).

Seen on the H100 machines: ``render`` profiled fine under Nsight Compute three
times out of three; ``step`` did not (a segfault, then out-of-memory from
profiled processes run back to back); ``--timeline`` worked for both every time.
"""

from __future__ import annotations

import argparse
import ast
import csv
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np


def workloads(args):
    import jax
    import jax.numpy as jnp
    import diffbmp_jax as db
    from diffbmp_jax.fitting import batch as B
    from diffbmp_jax.assets import ASSETS
    from diffbmp_jax.fitting.config import resolve_config
    from diffbmp_jax.fitting.engine import run_fit_chunk
    from diffbmp_jax.fitting.image import prepare
    from diffbmp_jax.fitting.optim import to_params
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scale import targets

    options = {"log_every": args.steps, **({"prune_every": 0} if args.no_respawn else {})}
    for item in args.option:  # e.g. color_blend=0.4: the kernels' rgb path
        key, _, value = item.partition("=")
        try:
            options[key] = ast.literal_eval(value)  # numbers, True / False
        except (ValueError, SyntaxError):
            options[key] = value  # a name, e.g. lr_schedule=cosine
    cfg = resolve_config(None, options)  # names unknown fields
    atlas = db.load_stamps([str(ASSETS / "stamps")], size=64)
    b = max(args.batch, 1)
    imgs = targets(b, args.size)
    out = {}
    if args.batch == 0:
        s_static, s_data, s_carry = prepare(imgs[0], atlas, num_primitives=args.n, steps=args.steps,
                                             key=jax.random.key(0), config=cfg)
        s_data, s_carry = jax.device_put(s_data), jax.device_put(s_carry)
        chunk_args = (s_static, s_data, s_carry, np.int32(0), np.int32(args.steps), True)
        out["step"] = lambda: run_fit_chunk(*chunk_args)  # the chunk db.fit runs
        out["step"].hlo = lambda: jax.jit(run_fit_chunk, static_argnums=(0, 5)).lower(*chunk_args).compile().as_text()
        return out
    static, scenes, shared, carry = B.host_batch(
        list(imgs), atlas, num_primitives=args.n, steps=args.steps, key=jax.random.key(0), config=cfg,
        weights=[None] * b, backgrounds=[None] * b, inits=[None] * b)
    one = B.scene_mesh(jax.devices()[:1])
    sc, at, ca = B.place_batch(one, scenes, shared, carry)
    out["step"] = lambda: B.run_batch_chunk(static, one, sc, at, ca, np.int32(0), np.int32(args.steps), True)
    out["step"].hlo = lambda: B.run_batch_chunk.lower(static, one, sc, at, ca, np.int32(0), np.int32(args.steps), True).compile().as_text()
    params = jax.vmap(lambda th: to_params(th, static.unit))(ca[0])
    wc = jnp.ones((args.size, args.size, 3), jnp.float32)

    @jax.jit
    def render_grad(p, t):
        def loss(q, t):
            c, a = db.render(q, at, height=args.size, width=args.size, template=t)
            return jnp.sum(c * wc) + jnp.sum(a)
        return jax.vmap(jax.grad(loss))(p, t)

    @jax.jit
    def render_fwd(p, t):
        return jax.vmap(lambda q, t: db.render(q, at, height=args.size, width=args.size, template=t))(p, t)

    out["render"] = lambda: render_grad(params, sc.template)
    out["forward"] = lambda: render_fwd(params, sc.template)
    return out


def run(args):
    import jax
    work = workloads(args)
    names = [n for n in args.what.split(",") if n in work] if args.what else list(work)
    for name in names:
        fn = work[name]
        for _ in range(3):
            jax.block_until_ready(fn())
        if args.time:
            ts = []
            for _ in range(20):
                t = time.perf_counter()
                jax.block_until_ready(fn())
                ts.append(time.perf_counter() - t)
            print(f"wall {name:8s} batch {args.batch:3d}: median {np.median(ts) * 1e3:.3f} ms "
                  f"(min {np.min(ts) * 1e3:.3f})", flush=True)
        if args.hlo and hasattr(fn, "hlo"):
            show_fusions(fn.hlo(), args.hlo.split(","))
        if args.hlo_file and hasattr(fn, "hlo"):
            Path(args.hlo_file).write_text(fn.hlo())
        if args.timeline:
            timeline(fn, name, args)
        elif not args.time:
            jax.block_until_ready(fn())  # the 4th run: parse() keeps the last period


def short(name: str) -> str:
    """A readable kernel name: the function without namespaces and template arguments."""
    for key in ("DeviceSegmentedSortKernelSmall", "DeviceSegmentedSortKernelLarge",
                "DeviceSegmentedSortFallbackKernel", "DeviceThreeWayPartitionInitKernel",
                "DeviceThreeWayPartitionKernel", "DeviceScanInitKernel", "DeviceScanKernel",
                "DeviceRadixSort", "EmptyKernel"):
        if key in name:
            return "cub::" + key
    m = re.search(r"(\w+_kernel)\b", name) if "diffbmp::" in name else None
    if m:
        return m.group(1)
    return name.split("(")[0][:60]


def last_period(names: list[str]) -> int:
    """Length of the shortest tail of ``names`` that repeats just before itself (all, if none)."""
    for k in range(1, len(names) // 2 + 1):
        if names[-k:] == names[-2 * k:-k]:
            return k
    return len(names)


def parse(path: str) -> None:
    lines = Path(path).read_text().splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        print(f"{path}: no kernels recorded", flush=True)
        return
    kernels = [(r["Kernel Name"], float(r["Metric Value"].replace(",", "")))
               for r in csv.DictReader(lines[start:]) if r.get("Metric Name") == "gpu__time_duration.sum"]
    k = last_period([n for n, _ in kernels])
    rows = defaultdict(lambda: [0, 0.0])
    for name, ns in kernels[-k:]:
        rows[short(name)][0] += 1
        rows[short(name)][1] += ns
    total = sum(v for _, v in rows.values())
    print(f"\n{path}: {len(kernels)} kernels recorded; the last period has {k}, {total / 1e3:.1f} us of GPU time")
    print(f"{'kernel':60s} {'count':>6s} {'us':>9s} {'share':>6s}")
    for name, (c, v) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:60s} {c:6d} {v / 1e3:9.2f} {100 * v / total:5.1f}%")


def group(name: str) -> str:
    """Kernel name for the summary: ours and CUB's shortened, XLA's fusions without their number."""
    g = short(name)
    return re.sub(r"(_\d+)+$", "", g) if g == name.split("(")[0][:60] else g


def show_fusions(text: str, names: list[str], lines: int = 30) -> None:
    """Prints the compiled fusions whose names start with one of ``names``, and their bodies."""
    comps = {}
    for block in text.split("\n\n"):
        head = block.strip().split("\n", 1)[0]
        m = re.match(r"%?([\w.\-]+) ", head)
        if m:
            comps[m.group(1)] = block.strip()
    for line in text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .* fusion\(.*calls=%?([\w.\-]+)", line)
        if not m or not any(m.group(1).startswith(n) for n in names):
            continue
        ops = sorted({"/".join(o.split("/")[-3:]) for o in re.findall(r'op_name="([^"]+)"', comps.get(m.group(2), ""))})
        print(f"\n--- {re.sub(r', metadata=.*', '', line.strip())[:300]}\n    ops: {'; '.join(ops)[:1500]}")
        body = comps.get(m.group(2), "(body not found)").splitlines()
        print("\n".join(re.sub(r", metadata=.*", "", l)[:200] for l in body[:lines]) + ("\n  ..." if len(body) > lines else ""))


def timeline(fn, name, args):
    """Traces one run of ``fn`` and prints what the GPU streams did."""
    import glob
    import tempfile
    import jax
    from jax.profiler import ProfileData

    folder = tempfile.mkdtemp(prefix="diffbmp_trace_")
    with jax.profiler.trace(folder):
        jax.block_until_ready(fn())
    files = glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)
    if not files:
        print(f"timeline {name}: no trace written", flush=True)
        return
    if args.trace_out:
        import shutil
        Path(args.trace_out).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[0], Path(args.trace_out) / f"{name}_batch{args.batch}.xplane.pb")
    summarise(ProfileData.from_file(files[0]), name, args)


def summarise(data, name, args):
    """Prints the GPU streams of a ``jax.profiler`` trace (see :func:`timeline`)."""
    events = []
    for plane in data.planes:
        if not plane.name.startswith("/device:GPU"):
            continue
        for line in plane.lines:
            if line.name.startswith("Stream"):
                events += [(e.start_ns, e.start_ns + e.duration_ns, e.name) for e in line.events]
    if not events:
        print(f"timeline {name}: no GPU events; planes: {[p.name for p in data.planes]}", flush=True)
        return
    events.sort()
    span = events[-1][1] - events[0][0]
    busy, end = 0.0, events[0][0]
    for s, e, _ in events:  # union of the intervals
        if e > end:
            busy += e - max(s, end)
            end = e
    per = args.steps if name == "step" else 1
    rows = defaultdict(lambda: [0, 0.0])
    for s, e, n in events:
        rows[group(n)][0] += 1
        rows[group(n)][1] += e - s
    unit = "per step" if per > 1 else "per call"
    print(f"\ntimeline {name} batch {args.batch}: {len(events)} GPU events, {unit}: span "
          f"{span / per / 1e3:.1f} us, busy {busy / per / 1e3:.1f} us, idle {(span - busy) / per / 1e3:.1f} us, "
          f"{len(events) / per:.1f} events", flush=True)
    print(f"{'kernel':60s} {'count':>7s} {'us':>9s} {'share':>6s}")
    for n, (c, v) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:args.top]:
        print(f"{n:60s} {c / per:7.1f} {v / per / 1e3:9.2f} {100 * v / busy:5.1f}%")
    if args.sequence:
        show_sequence(events, args.sequence)
    if args.gaps:
        show_gaps(events, args.gaps)


def show_gaps(events, count: int) -> None:
    """Prints the ``count`` longest times the GPU idled, with the events on either side."""
    gaps, end, last = [], events[0][1], events[0][2]
    for s, e, n in events[1:]:
        if s > end:
            gaps.append((s - end, short(last), short(n)))
        if e >= end:
            end, last = e, n
    total = sum(g for g, _, _ in gaps)
    print(f"\n{len(gaps)} idle gaps, {total / 1e3:.1f} us in all; the {count} longest:")
    for g, a, b in sorted(gaps, reverse=True)[:count]:
        print(f"{g / 1e3:9.2f} us  after {a:45s} before {b}")
    by_pair = defaultdict(lambda: [0, 0.0])
    for g, a, b in gaps:
        key = (re.sub(r"(_\d+)+$", "", a), re.sub(r"(_\d+)+$", "", b))
        by_pair[key][0] += 1
        by_pair[key][1] += g
    print("idle summed by neighbours (after -> before):")
    for (a, b), (c, v) in sorted(by_pair.items(), key=lambda kv: -kv[1][1])[:count]:
        print(f"{v / 1e3:9.2f} us in {c:4d}  {a} -> {b}")


def show_sequence(events, marker: str) -> None:
    """Prints one period of the launch sequence, in order: each event's start
    (us after the period's first), the GPU idle time before it and its duration.

    The period runs from the middle occurrence of the kernel ``marker`` (e.g.
    ``setup_kernel``, once per step) to the next one; the idle times say where
    in a step the GPU waits (for the host, a graph launch, a copy)."""
    marks = [i for i, (_, _, n) in enumerate(events) if group(n) == marker]
    if len(marks) < 2:
        print(f"sequence: fewer than two {marker!r} events", flush=True)
        return
    k = len(marks) // 2
    lo, hi = marks[k - 1], marks[k]
    base, end, idle_total = events[lo][0], events[lo][1], 0.0
    print(f"\none period ({marker} to {marker}): {hi - lo} events, "
          f"{(events[hi][0] - base) / 1e3:.1f} us")
    print(f"{'start us':>9s} {'idle before':>11s} {'us':>7s}  kernel")
    for s, e, n in events[lo:hi]:
        gap = max(0.0, s - end) if s != base else 0.0
        idle_total += gap
        end = max(end, e)
        print(f"{(s - base) / 1e3:9.2f} {gap / 1e3:11.2f} {(e - s) / 1e3:7.2f}  {short(n)}")
    print(f"idle inside the period: {idle_total / 1e3:.1f} us", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--what", default=None,
                    help="render, forward or step, or a comma list of them (default: render; with --time "
                         "or --timeline every workload)")
    ap.add_argument("--batch", type=int, default=16, help="scenes; 0 = the single-scene loop of fit")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10, help="steps of the 'step' workload")
    ap.add_argument("--time", action="store_true", help="wall times of every workload, no profiler")
    ap.add_argument("--timeline", action="store_true", help="trace with jax.profiler and summarise the GPU streams")
    ap.add_argument("--top", type=int, default=25, help="kernels listed by --timeline")
    ap.add_argument("--hlo-file", default="", metavar="PATH", help="write the compiled program's HLO text to PATH")
    ap.add_argument("--gaps", type=int, default=0, metavar="K", help="with --timeline: the K longest idle gaps")
    ap.add_argument("--trace-out", default="", metavar="DIR", help="with --timeline: keep the trace (xplane.pb) in DIR")
    ap.add_argument("--trace-in", default="", metavar="FILE", help="summarise a kept trace instead of running")
    ap.add_argument("--sequence", default="", metavar="KERNEL",
                    help="with --timeline: list one period of the launch sequence, from one KERNEL to the next")
    ap.add_argument("--no-respawn", action="store_true", help="fit with prune_every=0")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a FitConfig field for the 'step' workload (repeatable), e.g. color_blend=0.4")
    ap.add_argument("--hlo", default="", help="comma list of fusion-name prefixes whose compiled HLO to print")
    ap.add_argument("--parse", help="an ncu --csv log to summarise instead of running")
    args = ap.parse_args()
    if args.what is None and not (args.time or args.timeline):
        args.what = "render"
    if args.parse:
        parse(args.parse)
    elif args.trace_in:
        from jax.profiler import ProfileData
        summarise(ProfileData.from_file(args.trace_in), args.what or "step", args)
    else:
        run(args)


if __name__ == "__main__":
    main()
