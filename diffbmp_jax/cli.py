"""The ``diffbmp-jax`` command line.

    diffbmp-jax fit TARGET --stamps A.png stamps/ -n 1000 --steps 500 -o out/
    diffbmp-jax demo -o out/
    diffbmp-jax batch photos/ --stamps stamps/ -n 1000 --steps 300 -o out/   (many targets at once)

Every option can also come from ``--config file.toml``: top-level keys named
like the long options (``num_primitives`` or ``n``, ``steps``, ``stamps``,
``seed``, ``export``, ...) and any :class:`~diffbmp_jax.fit.FitConfig` field,
at top level or in a ``[fit]`` table. Options given on the command line win.

Outputs (in ``OUT``): ``result.png`` (final image), ``params.npz`` (xy, scale,
rotation, opacity_logit, color_logit, template, height, width),
``progress.gif`` (the image at logged steps), ``history.json`` and one
``result.<fmt>`` per extra ``--export`` format. Everything is written to a
temporary name first and renamed, and only once the fit has succeeded, so a
failed run leaves no partial outputs (:class:`diffbmp_jax.io.AtomicWriter`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

__all__ = ["main", "run", "load_target", "build_parser"]

ASSETS = Path(__file__).resolve().parent / "assets"

# Command-line options (long names) and their defaults; None = "not given".
CLI_DEFAULTS = {
    "target": None, "stamps": None, "num_primitives": 1000, "steps": 500, "out": "diffbmp_out",
    "backend": "auto", "seed": 0, "color_blend": None, "export": "png", "size": 512,
    "stamp_size": 64, "frames": 12, "progress": True, "mask_rule": "auto",
}
CLI_ALIASES = {"n": "num_primitives", "o": "out", "output": "out"}
# Command-line flags that set FitConfig fields of the same name.
_FIT_FLAGS = ("init", "templates", "reassign_every")


def build_parser() -> argparse.ArgumentParser:
    from .config import TEMPLATE_CHOICES
    from .render import BACKENDS
    p = argparse.ArgumentParser(prog="diffbmp-jax", description="Differentiable rendering with bitmap primitives.")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, demo: bool):
        sp.add_argument("-n", "--num-primitives", dest="num_primitives", type=int, default=None,
                        help="number of primitives N (default %s)" % ("300" if demo else "1000"))
        sp.add_argument("--steps", type=int, default=None, help="optimisation steps")
        sp.add_argument("-o", "--out", default=None, help="output folder")
        sp.add_argument("--config", default=None, help="TOML file with any of these options and FitConfig fields")
        sp.add_argument("--backend", default=None, choices=BACKENDS)
        sp.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
        sp.add_argument("--color-blend", dest="color_blend", type=float, default=None,
                        help="0: stamps take optimised colours, 1: keep each stamp's own colours")
        sp.add_argument("--export", default=None, help="comma list of output formats (default 'png')")
        sp.add_argument("--size", type=int, default=None, help="resize the target so its longer side is at most this")
        sp.add_argument("--stamp-size", dest="stamp_size", type=int, default=None, help="atlas bitmap side (pixels)")
        sp.add_argument("--frames", type=int, default=None, help="frames in progress.gif (0 = none)")
        sp.add_argument("--init", default=None, help="initialiser: structure_aware, random, grid")
        sp.add_argument("--templates", default=None, choices=TEMPLATE_CHOICES,
                        help="which bitmap each primitive starts with ('color': nearest mean colour, for mosaics)")
        sp.add_argument("--reassign-every", dest="reassign_every", type=int, default=None,
                        help="every K steps let primitives switch to the bitmap that lowers the loss most "
                             "(0 = never; small scenes)")
        sp.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="hide the progress bar")

    f = sub.add_parser("fit", help="fit primitives to a target image")
    f.add_argument("target", nargs="?", default=None, help="target image file")
    f.add_argument("--stamps", nargs="+", default=None,
                   help="stamp images, folders, globs, text:..., emoji:... (see sources.load_stamps)")
    f.add_argument("--mask-rule", dest="mask_rule", default=None,
                   help="how raster stamps give coverage: auto, alpha, luminance, background, opaque")
    common(f, demo=False)
    d = sub.add_parser("demo", help="fit the bundled target with the bundled stamps")
    common(d, demo=True)
    _add_text(sub)
    _add_video(sub)
    from .batch_cli import add_batch_subcommand
    add_batch_subcommand(sub)
    return p


def load_target(path, max_size: int | None = None) -> np.ndarray:
    """Reads an image file as float32 ``[H, W, 3]`` in [0, 1].

    Transparent pixels are composed over white; the image is downscaled
    (Lanczos) so its longer side is at most ``max_size``.
    Raises FileNotFoundError / ValueError naming ``target``.
    """
    from PIL import Image, UnidentifiedImageError
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"target: no such file: {str(path)!r}")
    try:
        with Image.open(path) as im:
            im.load()
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"target: cannot read image {str(path)!r}: {e}") from e
    if max_size is not None and max(rgba.size) > max_size:
        s = max_size / max(rgba.size)
        rgba = rgba.resize((max(1, round(rgba.width * s)), max(1, round(rgba.height * s))), Image.LANCZOS)
    a = np.asarray(rgba, np.float32) / 255.0
    return a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])


def _read_toml(path) -> dict:
    import tomllib
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"config: no such file: {str(path)!r}")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config: cannot parse {str(path)!r} as TOML: {e}") from e


def _split_config(raw: dict, source: str):
    """Splits a parsed TOML dict into (cli options, FitConfig fields)."""
    from .config import FitConfig
    fit_fields = set(FitConfig.fields())
    cli, fitcfg = {}, {}
    raw = dict(raw)
    table = raw.pop("fit", {})
    if not isinstance(table, dict):
        raise ValueError(f"config: [fit] in {source} must be a table")
    unknown = sorted(k for k in table if k not in fit_fields)
    if unknown:
        raise ValueError(f"config: unknown key(s) {unknown} in [fit] of {source}; valid keys: {sorted(fit_fields)}")
    fitcfg.update(table)
    for k, v in raw.items():
        name = CLI_ALIASES.get(k.replace("-", "_"), k.replace("-", "_"))
        if name in CLI_DEFAULTS:
            cli[name] = v
        elif name in fit_fields:
            fitcfg[name] = v
        else:
            raise ValueError(f"config: unknown key {k!r} in {source}; valid keys: "
                             f"{sorted(set(CLI_DEFAULTS) | fit_fields)}")
    return cli, fitcfg


def _resolve(args) -> tuple[dict, dict]:
    """Merges defaults < TOML < command line; returns (options, FitConfig fields)."""
    opts = dict(CLI_DEFAULTS)
    fitcfg: dict = {}
    if args.command == "demo":
        opts.update(target=str(ASSETS / "target.png"), stamps=[str(ASSETS / "stamps")], out="diffbmp_demo")
    if args.config is not None:
        cli, fitcfg = _split_config(_read_toml(args.config), args.config)
        opts.update(cli)
    for k, v in vars(args).items():
        if k in ("command", "config") + _FIT_FLAGS or v is None:
            continue
        opts[k] = v
    for name in _FIT_FLAGS:  # options that are FitConfig fields
        if getattr(args, name, None) is not None:
            fitcfg[name] = getattr(args, name)
    if args.command == "demo":
        given = set(cli if args.config is not None else ()) | {k for k, v in vars(args).items() if v is not None}
        for k, v in _demo_sizes(opts["backend"]).items():
            if k not in given:
                opts[k] = v
    if opts["backend"] is not None and (args.backend is not None or "backend" not in fitcfg):
        fitcfg["backend"] = opts["backend"]
    if opts["color_blend"] is not None:
        fitcfg["color_blend"] = float(opts["color_blend"])
    return opts, fitcfg


def _demo_sizes(backend: str) -> dict:
    """Demo sizes that finish well under 2 minutes on 2 CPU cores.

    The dense reference renderer costs ``O(N H W)`` per step, so without the
    compiled kernels the demo runs smaller.
    """
    from . import _ffi
    kernels = {"cpu": _ffi.registered("cpu"), "cuda": _ffi.registered("CUDA")}
    if kernels.get(backend, False) or (backend == "auto" and any(kernels.values())):
        return {"num_primitives": 300, "steps": 300, "size": 128}
    return {"num_primitives": 128, "steps": 200, "size": 80}


def _check_options(opts: dict) -> None:
    from .io import check_out_dir
    from .validation import positive_int
    if opts["target"] is None:
        raise ValueError("target: no target image given (positional TARGET or 'target' in the config)")
    if not opts["stamps"]:
        raise ValueError("stamps: no stamps given (--stamps FILE/FOLDER/GLOB ... or 'stamps' in the config)")
    if isinstance(opts["stamps"], str):
        opts["stamps"] = [opts["stamps"]]
    for name in ("num_primitives", "size", "stamp_size"):
        positive_int(name, opts[name])
    for name in ("steps", "frames", "seed"):
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, int) or (name != "seed" and v < 0):
            raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    opts["export"] = check_exports(opts["export"])
    check_out_dir(opts["out"])


def check_exports(exports) -> list[str]:
    """The ``--export`` formats (comma string or sequence): lower-cased, deduplicated, each known.

    ``png`` is always available; the others need :mod:`diffbmp_jax.export`.
    Raises ValueError naming ``export``.
    """
    if isinstance(exports, str):
        exports = [e.strip().lower() for e in exports.split(",") if e.strip()]
    formats = list(dict.fromkeys(str(e).lower() for e in exports))
    extra = [e for e in formats if e != "png"]
    if extra:
        try:
            from . import export as _export
        except ImportError as e:
            raise ValueError(f"export: format(s) {extra} need diffbmp_jax.export, which failed to import: {e}") from e
        fn = getattr(_export, "export", None)
        if fn is None:
            raise ValueError(f"export: format(s) {extra} are not available: diffbmp_jax.export.export() "
                             "does not exist in this installation (only 'png' is)")
        known = getattr(_export, "FORMATS", None)
        bad = [e for e in extra if known is not None and e not in known]
        if bad:
            raise ValueError(f"export: unknown format(s) {bad}; available: {list(dict.fromkeys(['png', *known]))}")
    return formats


def write_exports(path_of, formats, params, atlas, template, height: int, width: int, config) -> None:
    """``result.<fmt>`` for every format but png (written with the image outputs), at ``path_of(name)``.

    Rendered over ``config.output_background`` with ``config.color_blend`` and ``config.antialias``.
    """
    extra = [e for e in formats if e != "png"]
    if not extra:
        return
    from . import export as _export
    bg = config.output_background
    bg = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}.get(bg, bg)
    for fmt in extra:
        _export.export(fmt, path_of(f"result.{fmt}"), params, atlas, height=height, width=width,
                       template=template, color_blend=config.color_blend, background=bg,
                       antialias=config.antialias)


def _json_safe(history: dict) -> dict:
    """NaN (the loss at step 0, before any step) becomes null: strict JSON has no NaN."""
    return {k: [None if isinstance(v, float) and v != v else v for v in vals] for k, vals in history.items()}


def run(argv=None) -> dict:
    """Runs the command line; raises ValueError/TypeError/FileNotFoundError on bad input.

    Returns a summary dict (``psnr``, ``ssim``, ``wall_time``, ``outputs``).
    """
    args = build_parser().parse_args(argv)
    if args.command == "text":
        return _run_text(args)
    if args.command in ("video", "regions"):
        return _run_video(args)
    if args.command == "batch":
        from .batch_cli import run_batch
        return run_batch(args)
    opts, fit_fields = _resolve(args)
    _check_options(opts)

    import jax
    from . import sources
    from .config import FitConfig
    from .fit import fit
    from .io import AtomicWriter, to_u8, write_image_outputs

    config = FitConfig.from_dict(fit_fields, source=args.config or "options")
    target = load_target(opts["target"], opts["size"])
    atlas = sources.load_stamps(opts["stamps"], size=opts["stamp_size"], mask_rule=opts["mask_rule"])
    h, w = target.shape[:2]

    frames: list[np.ndarray] = []

    def collect(step, params, image, metrics):
        if opts["frames"] > 0:
            frames.append(to_u8(image))

    result = fit(target, atlas, num_primitives=opts["num_primitives"], steps=opts["steps"],
                 key=jax.random.key(opts["seed"]), config=config, progress=bool(opts["progress"]),
                 callback=collect)

    out = Path(opts["out"])
    with AtomicWriter(out) as writer:
        write_image_outputs(writer, result.image, result.params, result.template, h, w, config.color_blend,
                            frames, opts["frames"])
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": result.psnr, "ssim": result.ssim, "wall_time": result.wall_time,
                       "history": _json_safe(result.history), "options": {k: opts[k] for k in opts if k != "progress"},
                       "config": {k: getattr(config, k) for k in config.fields()}}, fh, indent=1)
        write_exports(writer.path, opts["export"], result.params, atlas, result.template, h, w, config)
    outputs = writer.outputs
    print(f"PSNR {result.psnr:.2f} dB  SSIM {result.ssim:.4f}  wall time {result.wall_time:.1f} s  "
          f"({opts['num_primitives']} primitives, {opts['steps']} steps, {w}x{h})  -> {out}/")
    return {"psnr": result.psnr, "ssim": result.ssim, "wall_time": result.wall_time, "outputs": outputs}


def main(argv=None) -> int:
    """Entry point of ``diffbmp-jax``: returns 0, or 2 with a one-line error on bad input."""
    try:
        run(argv)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"diffbmp-jax: error: {e}", file=sys.stderr)
        return 2
    return 0



def _add_text(sub) -> None:
    """The ``text`` subcommand (CLIP guidance, issue 7); defined in :mod:`diffbmp_jax.text_cli`."""
    from .text_cli import add_text_subcommand
    add_text_subcommand(sub)


def _run_text(args) -> dict:
    from .text_cli import run_text
    return run_text(args)


def _add_video(sub) -> None:
    """The ``video`` and ``regions`` subcommands (issue 6); defined in :mod:`diffbmp_jax.video_cli`."""
    from .video_cli import add_video_subcommands
    add_video_subcommands(sub)


def _run_video(args) -> dict:
    from . import video_cli
    return video_cli.run_video(args) if args.command == "video" else video_cli.run_regions(args)


if __name__ == "__main__":
    sys.exit(main())
