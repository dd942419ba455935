"""The ``video`` and ``regions`` subcommands of ``diffbmp-jax`` (issue 6).

    diffbmp-jax video INPUT --stamps A.png -n 200 --steps 300 --steps-next 60 -o out/ [--side-by-side]
    diffbmp-jax regions TARGET --region sky.png:clouds/:300 --region ground.png:leaves/:500 -o out/

``video`` writes ``OUT/video.mp4`` (or ``.gif`` with ``--format gif``),
``OUT/params.npz`` (per-frame ``xy [T, N, 2]``, ``scale [T, N]``, ...,
``template [N]``, ``height``, ``width``, ``color_blend``) and
``OUT/history.json`` (per-frame PSNR, flicker, frozen counts, times).
``regions`` writes ``result.png``, ``params.npz`` (plus ``group [N]``) and
``history.json``. Building the parser imports none of the fitters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["add_video_subcommands", "run_video", "run_regions", "parse_region"]


def add_video_subcommands(subparsers) -> None:
    """Adds ``video`` and ``regions`` to an argparse ``add_subparsers()`` object."""
    from .render import BACKENDS
    v = subparsers.add_parser("video", help="fit a video (MP4, GIF or folder of frames) frame by frame",
                              description="Fits frame 0 fully, then each next frame from the previous one "
                                          "with fewer steps, freezing primitives over unchanged regions.")
    v.add_argument("input", help="video file (.mp4, .gif, ...) or folder of frame images")
    v.add_argument("--stamps", nargs="+", required=True,
                   help="stamp images, folders, globs, text:..., emoji:... (see sources.load_stamps)")
    v.add_argument("-n", "--num-primitives", dest="num_primitives", type=int, default=300)
    v.add_argument("--steps", type=int, default=300, help="steps for frame 0 (default %(default)s)")
    v.add_argument("--steps-next", dest="steps_next", type=int, default=None,
                   help="steps for each later frame (default steps // 4)")
    v.add_argument("--max-frames", dest="max_frames", type=int, default=None)
    v.add_argument("--size", type=int, default=128, help="downscale frames to this longer side (default 128)")
    v.add_argument("--stamp-size", dest="stamp_size", type=int, default=32)
    v.add_argument("--temporal-weight", dest="temporal_weight", type=float, default=0.0)
    v.add_argument("--no-freeze", dest="freeze", action="store_false", default=True)
    v.add_argument("--batch", type=int, default=1, help="frames fitted together as one vmap")
    v.add_argument("--side-by-side", dest="side_by_side", action="store_true",
                   help="write the input beside the render in the output video")
    v.add_argument("--format", default="mp4", choices=("mp4", "gif"))
    v.add_argument("--fps", type=float, default=10.0)
    v.add_argument("--color-blend", dest="color_blend", type=float, default=None)
    v.add_argument("--backend", default=None, choices=BACKENDS)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("-o", "--out", default="diffbmp_video")
    v.add_argument("--no-progress", dest="progress", action="store_false", default=True)

    r = subparsers.add_parser("regions", help="fit groups of stamps, each confined to a mask",
                              description="Each --region MASK:STAMPS:N confines N primitives showing STAMPS "
                                          "to the white pixels of MASK (same size as the target).")
    r.add_argument("target", help="target image file")
    r.add_argument("--region", action="append", required=True, metavar="MASK:STAMPS:N",
                   help="mask image, stamps (file or folder), number of primitives; repeat per group")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--margin", type=float, default=1.0, help="pixels stamps may reach beyond their mask")
    r.add_argument("--stamp-size", dest="stamp_size", type=int, default=32)
    r.add_argument("--color-blend", dest="color_blend", type=float, default=None)
    r.add_argument("--backend", default=None, choices=BACKENDS)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("-o", "--out", default="diffbmp_regions")


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


def _fit_fields(args) -> dict:
    fields = {}
    for name in ("color_blend", "backend"):
        if getattr(args, name, None) is not None:
            fields[name] = getattr(args, name)
    return fields


def run_video(args) -> dict:
    """Runs ``video`` from parsed ``args``; returns a summary dict."""
    for name in ("num_primitives", "stamp_size", "size", "batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be a positive int, got {getattr(args, name)}")
    if args.steps < 0 or (args.steps_next is not None and args.steps_next < 0):
        raise ValueError("steps and steps_next must be non-negative")
    from .io import check_out_dir
    out = check_out_dir(args.out)
    import jax
    from . import sources
    from .config import FitConfig
    from .export.animation import write_frames
    from .io import AtomicWriter, save_params
    from .video import fit_video, load_video

    frames = load_video(args.input, max_frames=args.max_frames, size=args.size)
    atlas = sources.load_stamps(args.stamps, size=args.stamp_size)
    config = FitConfig.from_dict(_fit_fields(args), source="options")
    res = fit_video(frames, atlas, num_primitives=args.num_primitives, steps=args.steps,
                    steps_next=args.steps_next, key=jax.random.key(args.seed), config=config, freeze=args.freeze,
                    temporal_weight=args.temporal_weight, batch=args.batch, progress=bool(args.progress))
    t, h, w = frames.shape[:3]
    shown = np.concatenate([frames, res.frames], axis=2) if args.side_by_side else res.frames
    with AtomicWriter(out) as writer:
        write_frames(writer.path(f"video.{args.format}"), list(shown), fps=args.fps, fmt=args.format)
        with open(writer.path("params.npz"), "wb") as fh:
            save_params(fh, res.stacked_params(), h, w, config.color_blend)
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": res.psnr.tolist(), "mean_psnr": float(res.psnr.mean()), "flicker": res.flicker,
                       "frozen": res.frozen.tolist(), "respawned": res.respawned.tolist(),
                       "frame_time": res.frame_time.tolist(), "wall_time": res.wall_time,
                       "input": str(args.input), "frames": int(t)}, fh, indent=1)
    outputs = writer.outputs
    print(f"{t} frames  mean PSNR {res.psnr.mean():.2f} dB  flicker {res.flicker:+.4f}  "
          f"wall time {res.wall_time:.1f} s  -> {out}/")
    return {"psnr": res.psnr.tolist(), "flicker": res.flicker, "wall_time": res.wall_time, "outputs": outputs}


def run_regions(args) -> dict:
    """Runs ``regions`` from parsed ``args``; returns a summary dict."""
    if args.steps < 0 or args.stamp_size < 1:
        raise ValueError("steps must be non-negative and stamp_size positive")
    from .io import check_out_dir
    out = check_out_dir(args.out)
    specs = [parse_region(s) for s in args.region]
    import jax
    from PIL import Image
    from . import sources
    from .cli import load_target
    from .config import FitConfig
    from .io import AtomicWriter, primitive_arrays, save_params, to_u8
    from .regions import fit_regions

    target = load_target(args.target)
    groups = []
    for k, (mask, stamps, n) in enumerate(specs):
        if not Path(mask).is_file():
            raise FileNotFoundError(f"region {k}: no such mask file: {mask!r}")
        groups.append((mask, sources.load_stamps([stamps], size=args.stamp_size), n))
    config = FitConfig.from_dict(_fit_fields(args), source="options")
    res = fit_regions(target, groups, steps=args.steps, key=jax.random.key(args.seed), config=config,
                      margin=args.margin)
    h, w = target.shape[:2]
    with AtomicWriter(out) as writer:
        Image.fromarray(to_u8(res.image)).save(writer.path("result.png"), format="PNG")
        with open(writer.path("params.npz"), "wb") as fh:
            save_params(fh, primitive_arrays(res.params), h, w, config.color_blend,
                        template=np.asarray(res.template, np.int32), group=res.group)
        with open(writer.path("history.json"), "w") as fh:
            json.dump({"psnr": res.psnr, "ssim": res.ssim, "wall_time": res.wall_time,
                       "regions": list(args.region)}, fh, indent=1)
    outputs = writer.outputs
    print(f"PSNR {res.psnr:.2f} dB  SSIM {res.ssim:.4f}  wall time {res.wall_time:.1f} s  -> {out}/")
    return {"psnr": res.psnr, "ssim": res.ssim, "wall_time": res.wall_time, "outputs": outputs}
