"""``diffbmp-jax text "PROMPT" --stamps ... --clip-model PATH``: the CLIP-guided subcommand.

Kept apart from :mod:`diffbmp_jax.text_fit` so that building the parser (and
``diffbmp-jax --help``) does not import transformers.

Outputs in ``OUT`` (default ``diffbmp_text``), written atomically like ``fit``:
``result.png``, ``params.npz`` (same keys as ``fit``), ``history.json``
(loss and CLIP score per logged step) and ``progress.gif``.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["add_text_subcommand", "run_text"]


def add_text_subcommand(subparsers) -> None:
    """Adds the ``text`` subcommand to an argparse ``add_subparsers()`` object."""
    from .render import BACKENDS
    p = subparsers.add_parser(
        "text", help="compose stamps to match a text prompt (CLIP guidance)",
        description="Fits bitmap primitives so that CLIP finds the render similar to PROMPT. "
                    "The CLIP model is read from a local folder or the Hugging Face cache; nothing is downloaded.")
    p.add_argument("prompt", help="text prompt, e.g. 'a galaxy'")
    p.add_argument("--stamps", nargs="+", required=True,
                   help="stamp images, folders, globs, text:..., emoji:... (see sources.load_stamps)")
    p.add_argument("--clip-model", dest="clip_model", default="openai/clip-vit-base-patch32",
                   help="folder with config.json, model.safetensors and tokenizer files, or a hub id looked up "
                        "in the local Hugging Face cache (default: %(default)s)")
    p.add_argument("-n", "--num-primitives", dest="num_primitives", type=int, default=256)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--height", type=int, default=224, help="canvas height in pixels (default 224)")
    p.add_argument("--width", type=int, default=224, help="canvas width in pixels (default 224)")
    p.add_argument("--stamp-size", dest="stamp_size", type=int, default=64, help="atlas bitmap side (pixels)")
    p.add_argument("--negative", nargs="*", default=None, help="negative prompts to move away from")
    p.add_argument("--target", default=None, help="optional image mixed in by MSE (its size sets the canvas)")
    p.add_argument("--text-weight", dest="text_weight", type=float, default=1.0)
    p.add_argument("--image-weight", dest="image_weight", type=float, default=1.0)
    p.add_argument("--cutouts", type=int, default=8, help="augmented views per step (default 8)")
    p.add_argument("--color-blend", dest="color_blend", type=float, default=None,
                   help="0: stamps take optimised colours, 1: keep each stamp's own colours")
    p.add_argument("--init", default=None, help="initialiser: random (default), grid, structure_aware")
    p.add_argument("--backend", default=None, choices=BACKENDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=12, help="frames in progress.gif (0 = none)")
    p.add_argument("-o", "--out", default="diffbmp_text", help="output folder (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True,
                   help="hide the progress bar")


def run_text(args) -> dict:
    """Runs the ``text`` subcommand from parsed ``args``; returns a summary dict.

    Raises ``FileNotFoundError`` (e.g. :class:`~diffbmp_jax.clip.ClipModelNotFoundError`
    with the list of files to place), ``ValueError`` or ``TypeError`` on bad input.
    """
    import jax
    from . import sources
    from .cli import load_target
    from .clip import load_clip
    from .config import FitConfig
    from .io import AtomicWriter, check_out_dir, to_u8, write_image_outputs
    from .text_fit import TEXT_FIT_DEFAULTS, fit_text

    for name in ("num_primitives", "height", "width", "stamp_size", "cutouts"):
        v = getattr(args, name)
        if v < 1:
            raise ValueError(f"{name} must be a positive int, got {v}")
    if args.steps < 0 or args.frames < 0:
        raise ValueError("steps and frames must be non-negative")
    out = check_out_dir(args.out)

    model = load_clip(args.clip_model)
    atlas = sources.load_stamps(args.stamps, size=args.stamp_size)
    target = load_target(args.target) if args.target else None
    fields = dict(TEXT_FIT_DEFAULTS)
    for name in ("color_blend", "init", "backend"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    config = FitConfig.from_dict(fields, source="options")

    frames: list[np.ndarray] = []

    def collect(step, params, image, metrics):
        if args.frames > 0:
            frames.append(to_u8(image))

    result = fit_text(args.prompt, atlas, model=model, num_primitives=args.num_primitives, steps=args.steps,
                      key=jax.random.key(args.seed), height=args.height, width=args.width,
                      negative_prompts=args.negative or None, target=target, text_weight=args.text_weight,
                      image_weight=args.image_weight, num_cutouts=args.cutouts, config=config,
                      progress=bool(args.progress), callback=collect)
    h, w = result.image.shape[:2]
    with AtomicWriter(out) as writer:
        write_image_outputs(writer, result.image, result.params, result.template, h, w, config.color_blend,
                            frames, args.frames)
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"prompt": args.prompt, "negative": args.negative, "clip_model": str(model.path),
                       "clip_score": result.clip_score, "wall_time": result.wall_time,
                       "history": result.history,
                       "config": {k: getattr(config, k) for k in config.fields()}}, fh, indent=1)
    outputs = writer.outputs
    print(f"CLIP score {result.clip_score:.4f}  wall time {result.wall_time:.1f} s  "
          f"({args.num_primitives} primitives, {args.steps} steps, {w}x{h})  -> {out}/")
    return {"clip_score": result.clip_score, "wall_time": result.wall_time, "outputs": outputs}
