"""The ``batch`` subcommand of ``diffbmp-jax``: many targets, one batched fit.

    diffbmp-jax batch photos/ more/*.jpg --stamps stamps/ -n 1000 --steps 300 -o out/

Every target is centre-cropped to the aspect ratio of the first and resized to
its size (after ``--size``), then all are fitted together by
:func:`diffbmp_jax.fit_batch` (one vmapped loop, sharded over ``--devices``).
Outputs: ``OUT/<k>_<name>/`` per target (``result.png``, ``params.npz``, one
``result.<fmt>`` per extra ``--export`` format) and ``OUT/summary.json``
(per-target PSNR and SSIM, devices, wall time). Files are written atomically,
only after the fit succeeded. Building the parser imports none of the fitters.
Transparent targets keep their alpha, as :func:`diffbmp_jax.fit_batch` does with
them (the fit trains over its own background behind the transparent pixels).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from diffbmp_jax.cli import interrupt
from diffbmp_jax.cli.logs import LOGGER, timing
from diffbmp_jax.cli.options import (COMMON_DEFAULTS, TEMPLATE_CHOICES, add_option, add_shared, check_options,
                                     config_dict, extra_formats, fit_fields, json_safe, resolve, subparser,
                                     write_exports)

__all__ = ["add_batch_subcommand", "run_batch", "load_targets", "fit_to", "BATCH_DEFAULTS"]

LOG = logging.getLogger(LOGGER)


# Every option of `batch` and its default (also the keys a config file may set).
BATCH_DEFAULTS = {**COMMON_DEFAULTS, "stamps": None, "num_primitives": 1000, "steps": 300, "out": "diffbmp_batch",
                  "size": 256, "stamp_size": 64, "templates": None, "devices": None}


def add_batch_subcommand(subparsers) -> None:
    """Adds ``batch`` to an argparse ``add_subparsers()`` object."""
    b = subparser(subparsers, "batch", help="fit many targets at once (one batched fit, all devices)",
                  description="Fits every target with the same stamps and settings as one "
                              "batched, device-sharded loop (diffbmp_jax.fit_batch).")
    b.add_argument("targets", nargs="+", help="target images, folders of images, or globs")
    add_shared(b, BATCH_DEFAULTS, help={
        "size": "longer side of the first target after downscaling; the others are centre-cropped to its "
                "aspect and resized to its size (pixels)",
        "export": "comma list of result formats per target, of png, psd, svg, gif, mp4"})
    add_option(b, BATCH_DEFAULTS, "templates", "--templates", choices=TEMPLATE_CHOICES, shown="init",
               help="which bitmap each primitive starts with ('color': nearest mean colour)")
    add_option(b, BATCH_DEFAULTS, "devices", "--devices", type=int, metavar="K", shown="all",
               help="use the first K devices")


def fit_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (``[h, w, 3]``, or ``[h, w, 4]`` straight RGBA) centre-cropped to the aspect
    ``width / height`` and resized to ``[height, width, C]``."""
    from PIL import Image
    h, w = image.shape[:2]
    if w * height > h * width:    # too wide: crop the sides
        cw = max(1, round(h * width / height))
        x0 = (w - cw) // 2
        image = image[:, x0:x0 + cw]
    elif w * height < h * width:  # too tall: crop top and bottom
        ch = max(1, round(w * height / width))
        y0 = (h - ch) // 2
        image = image[y0:y0 + ch]
    if image.shape[:2] == (height, width):
        return image
    im = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))  # RGBA: Pillow premultiplies
    return np.asarray(im.resize((width, height), Image.LANCZOS), np.float32) / 255.0


def load_targets(specs, size: int) -> tuple[list[Path], np.ndarray]:
    """Files, folders and globs -> ``(paths, targets [B, H, W, C])`` of one size (see module doc):
    ``C = 4`` (straight RGBA, opaque images with alpha 1) when any image has transparent pixels,
    which :func:`diffbmp_jax.fit_batch` keeps, else 3."""
    from diffbmp_jax.io.images import IMAGE_SUFFIXES, expand_paths, load_target
    try:
        found = expand_paths(specs)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"targets: {e}") from None
    paths = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    if not paths:
        raise ValueError(f"targets: no image files in {list(map(str, specs))}")
    first = load_target(paths[0], size, keep_alpha=True)
    h, w = first.shape[:2]
    images = [first] + [fit_to(load_target(p, keep_alpha=True), h, w) for p in paths[1:]]
    if any(im.shape[-1] == 4 for im in images):
        images = [im if im.shape[-1] == 4 else np.concatenate([im, np.ones_like(im[..., :1])], -1) for im in images]
    return paths, np.stack(images).astype(np.float32)


def _folder_names(paths: list[Path]) -> list[str]:
    """``<k>_<file stem>``: unique and in input order."""
    width = len(str(len(paths) - 1))
    return [f"{k:0{width}d}_{p.stem}" for k, p in enumerate(paths)]


def run_batch(args) -> dict:
    """Runs ``diffbmp-jax batch``; returns a summary dict (``psnr`` list, ``outputs``, ...)."""
    opts, fit_cfg, given = resolve(args, BATCH_DEFAULTS)
    out = check_options(opts)
    if opts["devices"] is not None and (isinstance(opts["devices"], bool) or not isinstance(opts["devices"], int)):
        raise ValueError(f"--devices must be an int, got {opts['devices']!r}")

    import jax
    from diffbmp_jax import stamps
    from diffbmp_jax.fitting.batch import fit_batch
    from diffbmp_jax.fitting.config import FitConfig
    from diffbmp_jax.files import AtomicWriter
    from diffbmp_jax.io.results import write_image_outputs

    config = FitConfig.from_dict(fit_fields(opts, fit_cfg, given), source=opts["config"] or "options")
    devices = jax.devices()
    if opts["devices"] is not None:
        if not 1 <= opts["devices"] <= len(devices):
            raise ValueError(f"devices must be in [1, {len(devices)}] (devices seen: {len(devices)}), "
                             f"got {opts['devices']}")
        devices = devices[:opts["devices"]]

    paths, targets = load_targets(opts["targets"], opts["size"])
    atlas = stamps.load_stamps(opts["stamps"], size=opts["stamp_size"], mask_rule=opts["mask_rule"],
                               font=opts["font"], emoji_font=opts["emoji_font"])
    n, steps, scale = opts["num_primitives"], opts["steps"], opts["export_scale"]
    res = fit_batch(targets, atlas, num_primitives=n, steps=steps, key=opts["seed"],
                    config=config, devices=devices, progress=opts["progress"])

    h, w = targets.shape[1:3]
    names = _folder_names(paths)
    exports = extra_formats(opts["export"], scale)
    # One writer for every folder: nothing appears unless every file was written.
    interrupt.check()
    with AtomicWriter(out) as writer:
        for b, name in enumerate(names):
            scene, folder = res.scene(b), writer.folder(name)
            write_image_outputs(folder, scene.image, scene.params, scene.template, h, w, config.color_blend, [], 0)
            write_exports(folder.path, exports, scene.params, atlas, scene.template, h, w, config, scale=scale)
        summary = {"targets": [{"file": str(p), "folder": nm, "psnr": float(res.psnr[b]), "ssim": float(res.ssim[b])}
                               for b, (p, nm) in enumerate(zip(paths, names))],
                   "mean_psnr": float(np.mean(res.psnr)), "devices": res.devices, "wall_time": res.wall_time,
                   "compile_time": res.compile_time, "step_time": res.step_time,
                   "size": [int(h), int(w)], "num_primitives": n, "steps": steps,
                   "history": json_safe(res.history), "config": config_dict(config)}
        with open(writer.path("summary.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
    outputs = list(dict.fromkeys(writer.outputs))  # result.png may be written twice (--export-scale)
    LOG.info(f"{len(paths)} targets, mean PSNR {np.mean(res.psnr):.2f} dB, {res.devices} device(s), "
             f"{timing(res.wall_time, res.compile_time, res.step_time, steps)}  ({n} primitives, {w}x{h})  -> {out}/")
    return {"psnr": [float(v) for v in res.psnr], "ssim": [float(v) for v in res.ssim],
            "wall_time": res.wall_time, "devices": res.devices, "outputs": outputs}
