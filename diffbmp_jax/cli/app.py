"""The ``diffbmp-jax`` command line: the parser, ``fit`` and ``demo``, and dispatch.

    diffbmp-jax fit TARGET --stamps A.png stamps/ -n 1000 --steps 500 -o out/
    diffbmp-jax demo -o out/
    diffbmp-jax batch photos/ --stamps stamps/ -n 1000 --steps 300 -o out/   (many targets at once)

Every fitting subcommand takes the shared options of :mod:`diffbmp_jax.cli.options`
(``--stamps -n --steps -o --config --size --export --export-scale --no-progress
--font --seed --backend --stamp-size --color-blend --mask-rule``), each with
one meaning. Every option can also come from ``--config file.toml``: top-level
keys named like the long options (``num_primitives`` or ``n``, ``steps``,
``stamps``, ``seed``, ``export``, ...) and any
:class:`~diffbmp_jax.fitting.config.FitConfig` field, at top level or in a
``[fit]`` table. Options given on the command line win.

Outputs of ``fit`` (in ``OUT``): ``result.png`` (final image), ``params.npz`` (xy,
scale, rotation, opacity_logit, color_logit, template, height, width),
``progress.gif`` (the image at logged steps), ``history.json`` and one
``result.<fmt>`` per extra ``--export`` format. Everything is written to a
temporary name first and renamed, and only once the fit has succeeded, so a
failed run leaves no partial outputs (:class:`diffbmp_jax.files.AtomicWriter`).
The output folder is checked before the fit starts.

Building the parser imports neither JAX nor the fitters (``--help`` is fast).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time

from diffbmp_jax.assets import ASSETS
from diffbmp_jax.cli import batch as batch_cli, interrupt, text as text_cli, video as video_cli
from diffbmp_jax.cli.logs import LOGGER, configure, timing
from diffbmp_jax.cli.options import (COMMON_DEFAULTS, PROG, SHARED, TEMPLATE_CHOICES, HelpFormatter, add_option,
                                     add_shared, check_options, config_dict, extra_formats, fit_fields,
                                     json_safe, resolve, subparser, version, write_exports)

__all__ = ["main", "run", "build_parser", "FIT_DEFAULTS", "DEMO_DEFAULTS", "ASSETS"]

LOG = logging.getLogger(LOGGER)

# Every option of `fit` and its default (also the keys a config file may set).
FIT_DEFAULTS = {
    **COMMON_DEFAULTS, "target": None, "stamps": None, "num_primitives": 1000, "steps": 500, "out": "diffbmp_out",
    "size": 512, "stamp_size": 64, "frames": 12, "init": None, "templates": None, "reassign_every": None,
}
DEMO_DEFAULTS = {**FIT_DEFAULTS, "target": str(ASSETS / "target.png"), "stamps": [str(ASSETS / "stamps")],
                 "out": "diffbmp_demo", "num_primitives": 300, "steps": 300, "size": 128}
# What `demo` shows for the sizes it picks by backend (see _demo_sizes).
_DEMO_SHOWN = {"num_primitives": "300; 128 without the compiled kernels",
               "steps": "300; 200 without the compiled kernels",
               "size": "128; 80 without the compiled kernels"}


def _add_fit_options(p, defaults: dict, demo: bool) -> None:
    if not demo:
        add_option(p, defaults, "target", "target", nargs="?", help="target image file")
    add_shared(p, defaults, [n for n in SHARED if not (demo and n == "stamps")], shown=_DEMO_SHOWN if demo else None,
               help={"size": "downscale the target so its longer side is at most this (pixels)"})
    add_option(p, defaults, "frames", "--frames", type=int, help="frames in progress.gif (0 = none)")
    add_option(p, defaults, "init", "--init", help="initialiser: structure_aware, random, grid",
               shown="structure_aware")
    add_option(p, defaults, "templates", "--templates", choices=TEMPLATE_CHOICES, shown="init",
               help="which bitmap each primitive starts with ('color': nearest mean colour, for mosaics)")
    add_option(p, defaults, "reassign_every", "--reassign-every", type=int, metavar="K", shown=0,
               help="every K steps let primitives switch to the bitmap that lowers the loss most "
                    "(0 = never; small scenes)")


def build_parser() -> argparse.ArgumentParser:
    """The ``diffbmp-jax`` parser (imports no JAX)."""
    p = argparse.ArgumentParser(prog=PROG, formatter_class=HelpFormatter,
                                description="Differentiable rendering with bitmap primitives.",
                                epilog="Run 'diffbmp-jax COMMAND --help' for the options of each command.")
    p.add_argument("--version", action="version", version=f"{PROG} {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    f = subparser(sub, "fit", help="fit primitives to a target image",
                  description="Fits bitmap primitives (stamps) to a target image.")
    _add_fit_options(f, FIT_DEFAULTS, demo=False)
    d = subparser(sub, "demo", help="fit the bundled target with the bundled stamps",
                  description="Fits the bundled target with the bundled stamps (sizes that finish quickly).")
    _add_fit_options(d, DEMO_DEFAULTS, demo=True)
    batch_cli.add_batch_subcommand(sub)
    text_cli.add_text_subcommand(sub)
    video_cli.add_video_subcommands(sub)
    return p


def _demo_sizes(backend: str) -> dict:
    """Demo sizes that finish well under 2 minutes on 2 CPU cores.

    The dense reference renderer costs ``O(N H W)`` per step, so without the
    compiled kernels the demo runs smaller.
    """
    from diffbmp_jax.rendering import registry
    kernels = {"cpu": registry.registered("cpu"), "cuda": registry.registered("CUDA")}
    if kernels.get(backend, False) or (backend == "auto" and any(kernels.values())):
        return {"num_primitives": 300, "steps": 300, "size": 128}
    return {"num_primitives": 128, "steps": 200, "size": 80}


def run_fit(args) -> dict:
    """Runs ``fit`` or ``demo`` from parsed ``args``; returns a summary dict."""
    demo = args.command == "demo"
    opts, fit_cfg, given = resolve(args, DEMO_DEFAULTS if demo else FIT_DEFAULTS)
    if demo:
        for k, v in _demo_sizes(opts["backend"]).items():
            if k not in given:
                opts[k] = v
    if opts["target"] is None:
        raise ValueError("target: no target image given (positional TARGET or 'target' in the config)")
    v = opts["frames"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"--frames must be a non-negative int, got {v!r}")
    out = check_options(opts)

    import jax
    import numpy as np
    from diffbmp_jax import stamps
    from diffbmp_jax.fitting.config import FitConfig
    from diffbmp_jax.fitting.image import fit
    from diffbmp_jax.files import AtomicWriter
    from diffbmp_jax.io.images import load_target, to_uint8
    from diffbmp_jax.io.results import write_image_outputs

    config = FitConfig.from_dict(fit_fields(opts, fit_cfg, given), source=opts["config"] or "options")
    t0 = time.perf_counter()
    target = load_target(opts["target"], opts["size"], keep_alpha=True)  # transparency as db.fit keeps it
    atlas = stamps.load_stamps(opts["stamps"], size=opts["stamp_size"], mask_rule=opts["mask_rule"],
                               font=opts["font"], emoji_font=opts["emoji_font"])
    h, w = target.shape[:2]
    LOG.debug(f"target {opts['target']} at {w}x{h}, {atlas.num} stamp bitmaps of {atlas.size[1]}x{atlas.size[0]} "
              f"({time.perf_counter() - t0:.2f} s); JAX on {jax.default_backend()}")

    frames: list[np.ndarray] = []

    def collect(step, params, image, metrics):
        interrupt.check()
        if opts["frames"] > 0:
            frames.append(to_uint8(image))

    result = fit(target, atlas, num_primitives=opts["num_primitives"], steps=opts["steps"],
                 key=opts["seed"], config=config, progress=opts["progress"], callback=collect)

    interrupt.check()
    with AtomicWriter(out) as writer:
        write_image_outputs(writer, result.image, result.params, result.template, h, w, config.color_blend,
                            frames, opts["frames"])
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": result.psnr, "ssim": result.ssim, "wall_time": result.wall_time,
                       "compile_time": result.compile_time, "step_time": result.step_time,
                       "history": json_safe(result.history),
                       "options": {k: opts[k] for k in opts if k != "progress"},
                       "config": config_dict(config)}, fh, indent=1)
        write_exports(writer.path, extra_formats(opts["export"], opts["export_scale"]), result.params, atlas,
                      result.template, h, w, config, scale=opts["export_scale"])
    outputs = list(dict.fromkeys(writer.outputs))  # result.png may be written twice (--export-scale)
    LOG.debug(f"fit {result.wall_time:.2f} s: compiling {result.compile_time:.2f} s, steps {result.step_time:.2f} s, "
              f"the rest (set-up, logging, progress frames) {result.wall_time - result.compile_time - result.step_time:.2f} s; "
              f"outputs written in {time.perf_counter() - t0 - result.wall_time:.2f} s (with loading)")
    LOG.info(f"PSNR {result.psnr:.2f} dB  SSIM {result.ssim:.4f}  "
             f"{timing(result.wall_time, result.compile_time, result.step_time, opts['steps'])}  "
             f"({opts['num_primitives']} primitives, {w}x{h})  -> {out}/")
    return {"psnr": result.psnr, "ssim": result.ssim, "wall_time": result.wall_time, "outputs": outputs}


PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"


def own_process_defaults() -> None:
    """Settings for a process the CLI owns, each left alone where the user set it.

    GPU memory on demand (``XLA_PYTHON_CLIENT_PREALLOCATE=false``): JAX grabs
    75 % of a GPU's memory when it starts, which took 2.4 s of a 7 s run on an
    H200 (139 GiB; ``benchmarks/RESULTS.md``); one fit needs far less. JAX
    reads the variable when its GPU client starts, so this must run first.
    """
    os.environ.setdefault(PREALLOCATE_ENV, "false")


def start_backend_beside() -> threading.Thread:
    """Starts JAX's default backend on a daemon thread and returns the thread.

    On a GPU that is the CUDA client's start (0.4-0.5 s on an H200,
    ``benchmarks/RESULTS.md``), which then overlaps what the command does
    before its first computation: importing the fitters and reading the
    target and the stamps. JAX starts backends under a lock, so the first
    use of a device waits for the thread rather than starting a second
    client. An error is dropped here; the command's own first use raises it.
    """
    import jax  # here, not at the top: --help imports neither JAX nor the fitters
    from diffbmp_jax.fitting.loop import compile_beside
    return compile_beside(jax.devices)


def run(argv=None) -> dict:
    """Runs the command line; raises ValueError/TypeError/FileNotFoundError on bad input.

    Returns the subcommand's summary dict (e.g. ``psnr``, ``ssim``, ``wall_time``, ``outputs``).
    """
    args = build_parser().parse_args(argv)
    configure(quiet=args.quiet, verbose=args.verbose)
    if args.quiet:
        args.progress = False
    own_process_defaults()
    # Before anything compiles (JAX settles whether to use the cache at its first compilation).
    from diffbmp_jax.fitting.cache import CACHE_ENV, enable_compilation_cache
    if getattr(args, "cache", True) is False:
        os.environ[CACHE_ENV] = "0"
    enable_compilation_cache()
    if getattr(args, "backend", None) in (None, "auto", "cuda"):  # a CPU or reference run need not start CUDA
        start_backend_beside()
    runners = {"fit": run_fit, "demo": run_fit, "batch": batch_cli.run_batch, "text": text_cli.run_text,
               "video": video_cli.run_video, "regions": video_cli.run_regions}
    return runners[args.command](args)


def main(argv=None) -> int:
    """Runs ``diffbmp-jax``; returns 0, 2 with a one-line error on bad input, 130 when interrupted.

    Outputs are written atomically, so an error or Ctrl-C leaves no partial file
    and no empty output folder.
    """
    try:
        with interrupt.handling():
            run(argv)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as e:
        # Of runtime errors only a missing emoji font is the user's to fix; its module is
        # loaded if it was raised (importing it up front would cost --help the JAX import).
        emoji = sys.modules.get("diffbmp_jax.stamps.emoji")
        if isinstance(e, RuntimeError) and not (emoji and isinstance(e, emoji.EmojiFontNotFoundError)):
            raise
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return 0


def console() -> None:
    """The console script: :func:`main`, then exit with its status.

    It exits at once (``os._exit``, after flushing stdout and stderr) rather
    than through the interpreter's shutdown: after an interrupt XLA's compiler
    threads may still be running, and tearing Python down under them can crash
    the process on its way out; after a run, the teardown of JAX's runtime
    took about 1 s of a 10 s demo on 2 cores, and nothing needs it (every
    output is written, closed and renamed before :func:`main` returns).
    """
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
