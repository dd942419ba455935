"""``diffbmp-jax text "PROMPT" --stamps ... --clip-model PATH``: the CLIP-guided subcommand.

Kept apart from :mod:`diffbmp_jax.tasks.text` so that building the parser (and
``diffbmp-jax --help``) does not import JAX or transformers.

Outputs in ``OUT`` (default ``diffbmp_text``), written atomically like ``fit``:
``result.png``, ``params.npz`` (same keys as ``fit``), ``history.json``
(loss and CLIP score per logged step), ``progress.gif`` and one ``result.<fmt>``
per extra ``--export`` format.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from diffbmp_jax.cli import interrupt
from diffbmp_jax.cli.logs import LOGGER, timing
from diffbmp_jax.cli.options import (COMMON_DEFAULTS, add_option, add_shared, check_options, config_dict,
                                     extra_formats, fit_fields, json_safe, resolve, subparser, write_exports)

__all__ = ["add_text_subcommand", "run_text", "TEXT_DEFAULTS"]

LOG = logging.getLogger(LOGGER)

# Every option of `text` and its default (also the keys a config file may set).
TEXT_DEFAULTS = {
    **COMMON_DEFAULTS, "stamps": None, "clip_model": "openai/clip-vit-base-patch32", "num_primitives": 256,
    "steps": 500, "size": 224, "height": None, "width": None, "stamp_size": 64, "negative": None, "target": None,
    "text_weight": 1.0, "image_weight": 1.0, "cutouts": 8, "init": None, "frames": 12, "out": "diffbmp_text",
}


def add_text_subcommand(subparsers) -> None:
    """Adds the ``text`` subcommand to an argparse ``add_subparsers()`` object."""
    p = subparser(
        subparsers, "text", help="compose stamps to match a text prompt (CLIP guidance)",
        description="Fits bitmap primitives so that CLIP finds the render similar to PROMPT. "
                    "The CLIP model is read from a local folder or the Hugging Face cache; nothing is downloaded.")
    p.add_argument("prompt", help="text prompt, e.g. 'a galaxy'")
    d = TEXT_DEFAULTS
    add_option(p, d, "clip_model", "--clip-model", metavar="PATH_OR_ID",
               help="folder with config.json, model.safetensors and tokenizer files, or a hub id looked up "
                    "in the local Hugging Face cache")
    add_shared(p, d, help={"size": "longer side of the canvas: SIZE x SIZE unless --height/--width are given; "
                                   "a --target is downscaled to it only when --size is given (pixels)"})
    add_option(p, d, "height", "--height", type=int, metavar="PX", shown="--size", help="canvas height in pixels")
    add_option(p, d, "width", "--width", type=int, metavar="PX", shown="--size", help="canvas width in pixels")
    add_option(p, d, "negative", "--negative", nargs="*", metavar="PROMPT", help="negative prompts to move away from")
    add_option(p, d, "target", "--target", metavar="IMAGE",
               help="optional image mixed in by MSE (its size sets the canvas)")
    add_option(p, d, "text_weight", "--text-weight", type=float, help="weight of the CLIP term")
    add_option(p, d, "image_weight", "--image-weight", type=float, help="weight of the MSE term (with --target)")
    add_option(p, d, "cutouts", "--cutouts", type=int, help="augmented views per step")
    add_option(p, d, "init", "--init", shown="random", help="initialiser: random, grid, structure_aware")
    add_option(p, d, "frames", "--frames", type=int, help="frames in progress.gif (0 = none)")


def _check_text_options(opts: dict) -> None:
    for name in ("height", "width"):
        v = opts[name]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"--{name} must be a positive int, got {v!r}")
    v = opts["cutouts"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"--cutouts must be a positive int, got {v!r}")
    v = opts["frames"]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"--frames must be a non-negative int, got {v!r}")
    for name in ("text_weight", "image_weight"):
        v = opts[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf"):
            raise ValueError(f"--{name.replace('_', '-')} ({name}) must be a finite number >= 0, got {v!r}")
    if not isinstance(opts["clip_model"], str) or not opts["clip_model"]:
        raise ValueError(f"--clip-model (clip_model) must be a folder or hub id, got {opts['clip_model']!r}")
    neg = opts["negative"]
    if isinstance(neg, str):
        opts["negative"] = [neg]
    elif neg is not None and (not isinstance(neg, (list, tuple)) or not all(isinstance(x, str) for x in neg)):
        raise ValueError(f"--negative must be a list of prompts, got {neg!r}")


def run_text(args) -> dict:
    """Runs the ``text`` subcommand from parsed ``args``; returns a summary dict.

    Raises ``FileNotFoundError`` (e.g. :class:`~diffbmp_jax.clip.ClipModelNotFoundError`
    with the list of files to place), ``ValueError`` or ``TypeError`` on bad input.
    """
    opts, fit_cfg, given = resolve(args, TEXT_DEFAULTS)
    _check_text_options(opts)
    out = check_options(opts)

    from diffbmp_jax import stamps
    from diffbmp_jax.clip import load_clip
    from diffbmp_jax.fitting.config import FitConfig
    from diffbmp_jax.files import AtomicWriter
    from diffbmp_jax.io.images import load_target, to_uint8
    from diffbmp_jax.io.results import write_image_outputs
    from diffbmp_jax.tasks.text import TEXT_FIT_DEFAULTS, fit_text

    config = FitConfig.from_dict(fit_fields(opts, fit_cfg, given, base=TEXT_FIT_DEFAULTS),
                                 source=opts["config"] or "options")
    size = opts["size"]
    height, width = opts["height"] or size, opts["width"] or size
    model = load_clip(opts["clip_model"])
    atlas = stamps.load_stamps(opts["stamps"], size=opts["stamp_size"], mask_rule=opts["mask_rule"],
                               font=opts["font"], emoji_font=opts["emoji_font"])
    target = None
    if opts["target"]:
        target = load_target(opts["target"], size if "size" in given else None)

    frames: list[np.ndarray] = []

    def collect(step, params, image, metrics):
        if opts["frames"] > 0:
            frames.append(to_uint8(image))

    n, steps = opts["num_primitives"], opts["steps"]
    result = fit_text(args.prompt, atlas, model=model, num_primitives=n, steps=steps,
                      key=opts["seed"], height=height, width=width,
                      negative_prompts=opts["negative"] or None, target=target, text_weight=opts["text_weight"],
                      image_weight=opts["image_weight"], num_cutouts=opts["cutouts"], config=config,
                      progress=opts["progress"], callback=collect)
    h, w = result.image.shape[:2]
    interrupt.check()
    with AtomicWriter(out) as writer:
        write_image_outputs(writer, result.image, result.params, result.template, h, w, config.color_blend,
                            frames, opts["frames"])
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"prompt": args.prompt, "negative": opts["negative"], "clip_model": str(model.path),
                       "clip_score": result.clip_score, "wall_time": result.wall_time,
                       "compile_time": result.compile_time, "step_time": result.step_time,
                       "history": json_safe(result.history), "config": config_dict(config)}, fh, indent=1)
        write_exports(writer.path, extra_formats(opts["export"], opts["export_scale"]), result.params, atlas,
                      result.template, h, w, config, scale=opts["export_scale"])
    outputs = list(dict.fromkeys(writer.outputs))  # result.png may be written twice (--export-scale)
    LOG.info(f"CLIP score {result.clip_score:.4f}  {timing(result.wall_time, result.compile_time, result.step_time, steps)}  "
             f"({n} primitives, {w}x{h})  -> {out}/")
    return {"clip_score": result.clip_score, "wall_time": result.wall_time, "outputs": outputs}
