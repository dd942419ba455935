"""The ``video`` and ``regions`` subcommands of ``diffbmp-jax``.

    diffbmp-jax video INPUT --stamps A.png -n 200 --steps 300 --steps-next 60 -o out/ [--side-by-side]
    diffbmp-jax regions TARGET --region sky.png:clouds/:300 --region ground.png:leaves/:500 -o out/

``video`` writes ``OUT/video.mp4`` (``--export gif`` or ``--format gif``:
``video.gif``; ``--export png,psd,svg``: ``OUT/frames/<k>.<fmt>`` per frame) at
the input's frame rate (``--fps`` to choose; 10 for a folder of frames),
``OUT/params.npz`` (per-frame ``xy [T, N, 2]``, ``scale [T, N]``, ...,
``template [N]``, ``height``, ``width``, ``color_blend``) and
``OUT/history.json`` (per-frame PSNR, flicker, frozen counts, times, fps).
``regions`` writes ``result.png``, ``params.npz`` (plus ``group [N]``),
``history.json`` and one ``result.<fmt>`` per extra ``--export`` format.
Both take the shared options of :mod:`diffbmp_jax.cli.options`; building the
parser imports none of the fitters.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from diffbmp_jax.cli import interrupt
from diffbmp_jax.cli.logs import LOGGER, timing
from diffbmp_jax.cli.options import (COMMON_DEFAULTS, add_option, add_shared, check_options, config_dict,
                                     extra_formats, fit_fields, flag, resolve, subparser, write_exports)

__all__ = ["add_video_subcommands", "run_video", "run_regions", "parse_region", "VIDEO_DEFAULTS",
           "REGIONS_DEFAULTS", "VIDEO_FORMATS", "FRAME_FORMATS"]

LOG = logging.getLogger(LOGGER)

VIDEO_FORMATS = ("mp4", "gif")
"""``video --export`` formats written as one video file, ``video.<fmt>``."""
FRAME_FORMATS = ("png", "psd", "svg")
"""``video --export`` formats written once per frame, ``frames/<k>.<fmt>``."""
FALLBACK_FPS = 10.0
"""Frame rate of the output video when the input states none (a folder of frames)."""

# Every option of `video` / `regions` and its default (also the keys a config file may set).
VIDEO_DEFAULTS = {
    **COMMON_DEFAULTS, "stamps": None, "num_primitives": 300, "steps": 300, "steps_next": None, "max_frames": None,
    "size": 128, "stamp_size": 32, "temporal_weight": 0.0, "freeze": True, "batch": 1, "side_by_side": False,
    "export": "mp4", "fps": None, "out": "diffbmp_video",
}
REGIONS_DEFAULTS = {**COMMON_DEFAULTS, "region": None, "steps": 300, "margin": 1.0, "stamp_size": 32,
                    "out": "diffbmp_regions"}


def add_video_subcommands(subparsers) -> None:
    """Adds ``video`` and ``regions`` to an argparse ``add_subparsers()`` object."""
    v = subparser(subparsers, "video", help="fit a video (MP4, GIF or folder of frames) frame by frame",
                  description="Fits frame 0 fully, then each next frame from the previous one "
                              "with fewer steps, freezing primitives over unchanged regions.")
    v.add_argument("input", help="video file (.mp4, .gif, ...) or folder of frame images")
    d = VIDEO_DEFAULTS
    add_shared(v, d, help={
        "steps": "optimisation steps for frame 0",
        "size": "downscale the frames so their longer side is at most this (pixels)",
        "export": "comma list of result formats: mp4, gif (the video, video.FMT); png, psd, svg (every frame, "
                  "frames/K.FMT)"})
    add_option(v, d, "steps_next", "--steps-next", type=int, shown="steps // 4", help="steps for each later frame")
    add_option(v, d, "max_frames", "--max-frames", type=int, shown="all", help="fit at most this many leading frames")
    add_option(v, d, "temporal_weight", "--temporal-weight", type=float,
               help="weight of the loss tying each frame's render to the previous one")
    add_option(v, d, "freeze", "--no-freeze", action="store_false",
               help="let every primitive move on every frame (no freezing over unchanged regions)")
    add_option(v, d, "batch", "--batch", type=int, help="frames fitted together as one vmap")
    add_option(v, d, "side_by_side", "--side-by-side", action="store_true",
               help="write the input beside the render in the output video")
    v.add_argument("--format", dest="export", choices=VIDEO_FORMATS, default=None,
                   help="same as --export FMT (one video file)")
    add_option(v, d, "fps", "--fps", type=float, shown="the input's rate, else 10",
               help="frame rate of the output video")

    r = subparser(subparsers, "regions", help="fit groups of stamps, each confined to a mask",
                  description="Each --region MASK:STAMPS:N confines N primitives showing STAMPS "
                              "to the white pixels of MASK (same size as the target).")
    r.add_argument("target", help="target image file")
    d = REGIONS_DEFAULTS
    add_option(r, d, "region", "--region", action="append", metavar="MASK:STAMPS:N",
               help="mask image, stamps (file, folder, glob, text:..., emoji:...), number of primitives; "
                    "repeat per group")
    add_shared(r, d, shown={"size": "the target's size"}, help={
        "size": "downscale the target (and the masks with it) so its longer side is at most this (pixels)",
        "export": "comma list of formats of the combined result, of png, psd, svg, gif, mp4"})
    add_option(r, d, "margin", "--margin", type=float, help="pixels stamps may reach beyond their mask")


def parse_region(spec: str) -> tuple[str, str, int]:
    """``"mask.png:stamps_dir:N"`` -> ``(mask, stamps, N)`` (the stamps part may contain ':')."""
    head, sep, count = str(spec).rpartition(":")
    mask, sep2, stamps = head.partition(":")
    if not sep or not sep2 or not mask or not stamps:
        raise ValueError(f"region: expected MASK:STAMPS:N, got {spec!r}")
    try:
        n = int(count)
    except ValueError:
        raise ValueError(f"region: N must be an int in {spec!r}, got {count!r}") from None
    if n < 1:
        raise ValueError(f"region: N must be positive in {spec!r}")
    return mask, stamps, n


def _int_option(opts, name, low, optional=False):
    v = opts[name]
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{flag(name)} must be {'a positive' if low else 'a non-negative'} int, got {v!r}")


def _number_option(opts, name, positive=False, optional=False):
    v = opts[name]
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{flag(name)} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")


def run_video(args) -> dict:
    """Runs ``video`` from parsed ``args``; returns a summary dict."""
    opts, fit_cfg, given = resolve(args, VIDEO_DEFAULTS)
    _int_option(opts, "batch", 1)
    _int_option(opts, "steps_next", 0, optional=True)
    _int_option(opts, "max_frames", 1, optional=True)
    _number_option(opts, "temporal_weight")
    _number_option(opts, "fps", positive=True, optional=True)
    for name in ("freeze", "side_by_side"):
        if not isinstance(opts[name], bool):
            raise ValueError(f"{flag(name)} must be true or false, got {opts[name]!r}")
    out = check_options(opts)
    scale = opts["export_scale"]
    if scale != 1 and opts["side_by_side"] and any(f in VIDEO_FORMATS for f in opts["export"]):
        raise ValueError("--export-scale: a side-by-side video is written at the input's size; "
                         "drop --side-by-side or --export-scale")

    from diffbmp_jax import stamps
    from diffbmp_jax.fitting.config import FitConfig
    from diffbmp_jax.files import AtomicWriter
    from diffbmp_jax.io.results import save_params
    from diffbmp_jax.io.video import load_video, video_fps, write_frames
    from diffbmp_jax.tasks.video import VIDEO_FIT_DEFAULTS, fit_video

    config = FitConfig.from_dict(fit_fields(opts, fit_cfg, given, base=VIDEO_FIT_DEFAULTS),
                                 source=opts["config"] or "options")
    frames = load_video(args.input, max_frames=opts["max_frames"], size=opts["size"])
    fps = opts["fps"] if opts["fps"] is not None else (video_fps(args.input) or FALLBACK_FPS)
    atlas = stamps.load_stamps(opts["stamps"], size=opts["stamp_size"], mask_rule=opts["mask_rule"],
                               font=opts["font"], emoji_font=opts["emoji_font"])
    res = fit_video(frames, atlas, num_primitives=opts["num_primitives"], steps=opts["steps"],
                    steps_next=opts["steps_next"], key=opts["seed"], config=config,
                    freeze=opts["freeze"], temporal_weight=opts["temporal_weight"], batch=opts["batch"],
                    progress=opts["progress"])
    t, h, w = frames.shape[:3]
    shown = np.concatenate([frames, res.frames], axis=2) if opts["side_by_side"] else res.frames
    digits = len(str(t - 1))
    interrupt.check()
    with AtomicWriter(out) as writer:
        for fmt in opts["export"]:
            if fmt in VIDEO_FORMATS and scale == 1:
                write_frames(writer.path(f"video.{fmt}"), list(shown), fps=fps, fmt=fmt, atomic=False)
            elif fmt in VIDEO_FORMATS:  # re-rendered at the export scale, one frame per fitted frame
                write_exports(writer.path, [fmt], list(res.params), atlas, res.template, h, w, res.config,
                              scale=scale, name="video", fps=fps)
            else:
                for k, params in enumerate(res.params):
                    write_exports(writer.path, [fmt], params, atlas, res.template, h, w, res.config,
                                  scale=scale, name=f"frames/{k:0{digits}d}")
        with open(writer.path("params.npz"), "wb") as fh:
            save_params(fh, res.stacked_params(), h, w, config.color_blend)
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": res.psnr.tolist(), "mean_psnr": float(res.psnr.mean()), "flicker": res.flicker,
                       "frozen": res.frozen.tolist(), "respawned": res.respawned.tolist(),
                       "frame_time": res.frame_time.tolist(), "wall_time": res.wall_time,
                       "compile_time": res.compile_time, "step_time": res.step_time,
                       "input": str(args.input), "frames": int(t), "fps": fps,
                       "config": config_dict(res.config)}, fh, indent=1)
    outputs = writer.outputs
    LOG.info(f"{t} frames  mean PSNR {res.psnr.mean():.2f} dB  flicker {res.flicker:+.4f}  "
             f"{timing(res.wall_time, res.compile_time, res.step_time)}  -> {out}/")
    return {"psnr": res.psnr.tolist(), "flicker": res.flicker, "wall_time": res.wall_time, "fps": fps,
            "outputs": outputs}


def _region_masks(specs, target_path, height: int, width: int) -> list:
    """The masks of ``specs``: paths, or arrays resized to ``height x width`` when the target was downscaled.

    A mask whose size differs from the (original) target's is passed on as a
    path, for :func:`~diffbmp_jax.tasks.regions.fit_regions` to report.
    """
    from PIL import Image
    with Image.open(target_path) as im:
        full = (im.height, im.width)
    masks = []
    for k, (mask, _, _) in enumerate(specs):
        if not Path(mask).is_file():
            raise FileNotFoundError(f"region {k}: no such mask file: {mask!r}")
        if full == (height, width):
            masks.append(mask)
            continue
        try:
            with Image.open(mask) as im:
                m = im.convert("L")
        except (OSError, ValueError) as e:
            raise ValueError(f"region {k}: cannot read mask image {mask!r}: {e}") from e
        if (m.height, m.width) != full:
            masks.append(mask)
            continue
        masks.append(np.asarray(m.resize((width, height), Image.BILINEAR), np.float32) / 255.0)
    return masks


def run_regions(args) -> dict:
    """Runs ``regions`` from parsed ``args``; returns a summary dict."""
    opts, fit_cfg, given = resolve(args, REGIONS_DEFAULTS)
    regions = opts["region"]
    if isinstance(regions, str):
        regions = [regions]
    if not regions:
        raise ValueError("--region: no region given (--region MASK:STAMPS:N, repeated, or 'region' in the config)")
    if not isinstance(regions, (list, tuple)) or not all(isinstance(r, str) for r in regions):
        raise ValueError(f"--region must be a list of MASK:STAMPS:N, got {regions!r}")
    opts["region"] = list(regions)
    _number_option(opts, "margin")
    out = check_options(opts, optional_size=True)
    specs = [parse_region(s) for s in opts["region"]]

    from PIL import Image
    from diffbmp_jax import stamps
    from diffbmp_jax.fitting.config import FitConfig
    from diffbmp_jax.files import AtomicWriter
    from diffbmp_jax.io.images import load_target, to_uint8
    from diffbmp_jax.io.results import primitive_arrays, save_params
    from diffbmp_jax.tasks.regions import fit_regions

    config = FitConfig.from_dict(fit_fields(opts, fit_cfg, given), source=opts["config"] or "options")
    target = load_target(args.target, opts["size"])
    h, w = target.shape[:2]
    masks = _region_masks(specs, args.target, h, w)
    groups = [(m, stamps.load_stamps([spec], size=opts["stamp_size"], mask_rule=opts["mask_rule"],
                                     font=opts["font"], emoji_font=opts["emoji_font"]), n)
              for m, (_, spec, n) in zip(masks, specs)]
    res = fit_regions(target, groups, steps=opts["steps"], key=opts["seed"], config=config,
                      margin=opts["margin"], progress=opts["progress"])
    scale = opts["export_scale"]
    exports = extra_formats(opts["export"], scale)
    interrupt.check()
    with AtomicWriter(out) as writer:
        if "png" not in exports:  # else re-rendered at the export scale below
            Image.fromarray(to_uint8(res.image)).save(writer.path("result.png"), format="PNG")
        with open(writer.path("params.npz"), "wb") as fh:
            save_params(fh, primitive_arrays(res.params), h, w, config.color_blend,
                        template=np.asarray(res.template, np.int32), group=res.group)
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": res.psnr, "ssim": res.ssim, "wall_time": res.wall_time,
                       "compile_time": res.compile_time, "step_time": res.step_time,
                       "regions": opts["region"], "size": [int(h), int(w)],
                       "config": config_dict(res.config)}, fh, indent=1)
        write_exports(writer.path, exports, res.params, res.atlas, res.template, h, w, res.config, scale=scale)
    outputs = writer.outputs
    LOG.info(f"PSNR {res.psnr:.2f} dB  SSIM {res.ssim:.4f}  "
             f"{timing(res.wall_time, res.compile_time, res.step_time, opts['steps'])}  -> {out}/")
    return {"psnr": res.psnr, "ssim": res.ssim, "wall_time": res.wall_time, "outputs": outputs}
