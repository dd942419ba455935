"""The ``batch`` subcommand of ``diffbmp-jax``: many targets, one batched fit.

    diffbmp-jax batch photos/ more/*.jpg --stamps stamps/ -n 1000 --steps 300 -o out/

Every target is centre-cropped to the aspect ratio of the first and resized to
its size (after ``--size``), then all are fitted together by
:func:`diffbmp_jax.fit_batch` (one vmapped loop, sharded over ``--devices``).
Outputs: ``OUT/<k>_<name>/`` per target (``result.png``, ``params.npz``, one
``result.<fmt>`` per extra ``--export`` format) and ``OUT/summary.json``
(per-target PSNR and SSIM, devices, wall time). Files are written atomically,
only after the fit succeeded. Building the parser imports none of the fitters.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["add_batch_subcommand", "run_batch", "load_targets"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


def add_batch_subcommand(subparsers) -> None:
    """Adds ``batch`` to an argparse ``add_subparsers()`` object."""
    from .config import TEMPLATE_CHOICES
    from .render import BACKENDS
    b = subparsers.add_parser("batch", help="fit many targets at once (one batched fit, all devices)",
                              description="Fits every target with the same stamps and settings as one "
                                          "batched, device-sharded loop (diffbmp_jax.fit_batch).")
    b.add_argument("targets", nargs="+", help="target images, folders of images, or globs")
    b.add_argument("--stamps", nargs="+", required=True,
                   help="stamp images, folders, globs, text:..., emoji:... (see sources.load_stamps)")
    b.add_argument("-n", "--num-primitives", dest="num_primitives", type=int, default=1000)
    b.add_argument("--steps", type=int, default=300)
    b.add_argument("--size", type=int, default=256,
                   help="longer side of the first target after resizing; the others follow (default 256)")
    b.add_argument("--stamp-size", dest="stamp_size", type=int, default=64)
    b.add_argument("--color-blend", dest="color_blend", type=float, default=None)
    b.add_argument("--templates", default=None, choices=TEMPLATE_CHOICES)
    b.add_argument("--backend", default=None, choices=BACKENDS)
    b.add_argument("--devices", type=int, default=None, help="use the first K devices (default: all)")
    b.add_argument("--export", default="png", help="comma list of output formats (default 'png')")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("-o", "--out", default="diffbmp_batch")
    b.add_argument("--no-progress", dest="progress", action="store_false", default=True)


def _fit_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` centre-cropped to the aspect ``width / height`` and resized to ``[height, width, 3]``."""
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
    im = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(im.resize((width, height), Image.LANCZOS), np.float32) / 255.0


def load_targets(specs, size: int) -> tuple[list[Path], np.ndarray]:
    """Files, folders and globs -> ``(paths, targets [B, H, W, 3])`` of one size (see module doc)."""
    from . import sources
    from .cli import load_target
    try:
        found = sources.expand_paths(specs)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"targets: {e}") from None
    paths = [p for p in found if p.suffix.lower() in _IMAGE_SUFFIXES]
    if not paths:
        raise ValueError(f"targets: no image files in {list(map(str, specs))}")
    first = load_target(paths[0], size)
    h, w = first.shape[:2]
    images = [first] + [_fit_to(load_target(p), h, w) for p in paths[1:]]
    return paths, np.stack(images).astype(np.float32)


def _folder_names(paths: list[Path]) -> list[str]:
    """``<k>_<file stem>``: unique and in input order."""
    width = len(str(len(paths) - 1))
    return [f"{k:0{width}d}_{p.stem}" for k, p in enumerate(paths)]


def run_batch(args) -> dict:
    """Runs ``diffbmp-jax batch``; returns a summary dict (``psnr`` list, ``outputs``, ...)."""
    import jax
    from . import sources
    from .batch import fit_batch
    from .cli import _json_safe, check_exports, write_exports
    from .config import FitConfig
    from .io import AtomicWriter, check_out_dir, write_image_outputs
    from .validation import positive_int

    for name in ("num_primitives", "size", "stamp_size"):
        positive_int(name, getattr(args, name))
    if args.steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {args.steps}")
    exports = check_exports(args.export)
    out = check_out_dir(args.out)
    devices = jax.devices()
    if args.devices is not None:
        if not 1 <= args.devices <= len(devices):
            raise ValueError(f"devices must be in [1, {len(devices)}] (devices seen: {len(devices)}), "
                             f"got {args.devices}")
        devices = devices[:args.devices]

    paths, targets = load_targets(args.targets, args.size)
    atlas = sources.load_stamps(args.stamps, size=args.stamp_size)
    fields = {k: v for k, v in (("color_blend", args.color_blend), ("templates", args.templates),
                                ("backend", args.backend)) if v is not None}
    config = FitConfig.from_dict(fields, source="options")
    res = fit_batch(targets, atlas, num_primitives=args.num_primitives, steps=args.steps,
                    key=jax.random.key(args.seed), config=config, devices=devices, progress=args.progress)

    h, w = targets.shape[1:3]
    names = _folder_names(paths)
    # One writer for every folder: nothing appears unless every file was written.
    with AtomicWriter(out) as writer:
        for b, name in enumerate(names):
            scene, folder = res.scene(b), writer.folder(name)
            write_image_outputs(folder, scene.image, scene.params, scene.template, h, w, config.color_blend, [], 0)
            write_exports(folder.path, exports, scene.params, atlas, scene.template, h, w, config)
        summary = {"targets": [{"file": str(p), "folder": n, "psnr": float(res.psnr[b]), "ssim": float(res.ssim[b])}
                               for b, (p, n) in enumerate(zip(paths, names))],
                   "mean_psnr": float(np.mean(res.psnr)), "devices": res.devices, "wall_time": res.wall_time,
                   "size": [int(h), int(w)], "num_primitives": args.num_primitives, "steps": args.steps,
                   "history": _json_safe(res.history),
                   "config": {k: getattr(config, k) for k in config.fields()}}
        with open(writer.path("summary.json"), "w") as fh:
            json.dump(summary, fh, indent=1)
    outputs = writer.outputs
    print(f"{len(paths)} targets, mean PSNR {np.mean(res.psnr):.2f} dB, {res.devices} device(s), "
          f"wall time {res.wall_time:.1f} s ({args.num_primitives} primitives, {args.steps} steps, {w}x{h}) "
          f"-> {out}/")
    return {"psnr": [float(v) for v in res.psnr], "ssim": [float(v) for v in res.ssim],
            "wall_time": res.wall_time, "devices": res.devices, "outputs": outputs}
