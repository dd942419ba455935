"""Fit quality per iteration on the shared benchmark scenes, beside the paper's own code.

    python benchmarks/quality.py                      # the full suite (one device call on a GPU)
    python benchmarks/quality.py --quick              # scaled down: a few minutes on 2 CPU cores
    python benchmarks/quality.py --quick --only vangogh1-fp-100 --set lr_xy=0.1   # one ablation

The scenes and the protocol are those of ``../shared/bench/README.md``: the
target resized with Pillow ``LANCZOS`` to width ``W`` (height
``int(h * W / w)``), stamps at 128 px, MSE loss, structure-aware
initialisation, the given number of iterations and ``color_blend``, PSNR of the
final image over white against the resized target. Everything else is the
library's defaults (the point is to measure them), so the same settings run
every scene. The bundled demo (the ``diffbmp-jax demo`` fit) is measured too,
at 100 and 300 iterations.

Per scene: PSNR and SSIM of the final image, and timing from two runs in one
process: ``wall cold`` (first run, compilation included), ``wall warm`` (the
same fit again, compiled chunks cached) and ``ms/step`` (warm wall over the
steps, set-up and logging included). ``--quick`` fits every scene at width
256 with ``N`` scaled by the area (the same stamp density) and 64 px stamps; its PSNRs are not
comparable with the reference column, only with other ``--quick`` runs.

Prints a table (reference column beside ours, and the margin) and writes JSON
(``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parents[2] / "shared" / "bench"


class Scene(NamedTuple):
    name: str
    target: str            # file under targets/, or "demo"
    width: int
    num: int
    steps: int
    stamps: tuple          # paths under stamps/, or "demo"
    color_blend: float
    reference: float | None  # the paper's code, PSNR dB (../shared/bench/README.md)
    reference_ms: float | None


SCENES = (
    Scene("vangogh1-fp-100", "vangogh1.jpg", 512, 1000, 100, ("fingerprint.jpg",), 0.0, 24.27, 75),
    Scene("vangogh1-fp-300", "vangogh1.jpg", 512, 1000, 300, ("fingerprint.jpg",), 0.0, 24.49, 81),
    Scene("vangogh1-circle-100", "vangogh1.jpg", 512, 1000, 100, ("circle.png",), 0.0, 24.49, 90),
    Scene("vangogh1-1024-fp-300", "vangogh1.jpg", 1024, 5000, 300, ("fingerprint.jpg",), 0.0, 24.70, 307),
    Scene("starry-fp-100", "starry_night.jpg", 512, 1000, 100, ("fingerprint.jpg",), 0.0, 20.06, 56),
    Scene("starry-flowers-300", "starry_night.jpg", 512, 1000, 300, ("flowers",), 0.3, 19.79, 58),
    Scene("starry-1024-fp-100", "starry_night.jpg", 1024, 5000, 100, ("fingerprint.jpg",), 0.0, 19.78, 235),
    # A photomosaic: every stamp keeps its own colours (color_blend 1), each primitive starts
    # with the stamp whose colours suit the target under it (templates "color").
    Scene("vangogh1-mosaic-300", "vangogh1.jpg", 512, 1000, 300, ("flowers", "fingerprint.jpg", "circle.png"),
          1.0, None, None),
    Scene("demo-100", "demo", 128, 300, 100, "demo", 0.0, None, None),
    Scene("demo-300", "demo", 128, 300, 300, "demo", 0.0, None, None),
)


QUICK_WIDTH = 256


def quick(scene: Scene) -> Scene:
    """The scene at width 256 with ``N`` scaled by the area (the same stamp density; the demo stays)."""
    if scene.target == "demo":
        return scene
    f = QUICK_WIDTH / scene.width
    return scene._replace(width=QUICK_WIDTH, num=max(1, round(scene.num * f * f)))


def load_target(scene: Scene, bench: Path) -> np.ndarray:
    """``[H, W, 3]`` float32 in [0, 1], resized by the protocol (Lanczos to width ``W``)."""
    if scene.target == "demo":
        from diffbmp_jax.assets import ASSETS
        from diffbmp_jax.io.images import load_target as cli_target
        return cli_target(ASSETS / "target.png", scene.width)
    with Image.open(bench / "targets" / scene.target) as im:
        im = im.convert("RGB")
        w, h = im.size
        im = im.resize((scene.width, int(h * scene.width / w)), Image.LANCZOS)
        return np.asarray(im, np.float32) / 255.0


def load_atlas(scene: Scene, bench: Path, size: int):
    import diffbmp_jax as db
    if scene.stamps == "demo":
        from diffbmp_jax.assets import ASSETS
        return db.load_stamps([str(ASSETS / "stamps")], size=64)
    return db.load_stamps([str(bench / "stamps" / s) for s in scene.stamps], size=size)


def parse_set(items) -> dict:
    """``["lr_xy=0.1", "background=white"]`` -> FitConfig overrides (numbers parsed)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set: expected KEY=VALUE, got {item!r}")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def run_scene(scene: Scene, bench: Path, stamp_size: int, overrides: dict, warm: bool, seed: int) -> dict:
    import jax
    import diffbmp_jax as db
    target = load_target(scene, bench)
    atlas = load_atlas(scene, bench, stamp_size)

    def once():
        t0 = time.perf_counter()
        mosaic = {"templates": "color"} if scene.color_blend == 1.0 else {}
        r = db.fit(target, atlas, num_primitives=scene.num, steps=scene.steps, key=jax.random.key(seed),
                   progress=False, color_blend=scene.color_blend, **{**mosaic, **overrides})
        jax.block_until_ready(r.image)
        return r, time.perf_counter() - t0

    r, cold = once()
    warm_wall = once()[1] if warm else None
    # A stamp is used when a visible primitive shows it (opacity above the pruning threshold).
    visible = np.asarray(jax.nn.sigmoid(r.params.opacity_logit)) > r.config.prune_opacity
    used = int(np.unique(np.asarray(r.template)[visible]).size)
    return {"scene": scene.name, "width": int(target.shape[1]), "height": int(target.shape[0]), "n": scene.num,
            "steps": scene.steps, "stamps": list(scene.stamps) if scene.stamps != "demo" else "demo",
            "color_blend": scene.color_blend, "psnr": float(r.psnr), "ssim": float(r.ssim),
            "wall_cold_s": cold, "wall_warm_s": warm_wall,
            "ms_per_step": None if warm_wall is None else 1e3 * warm_wall / max(scene.steps, 1),
            "stamps_used": used, "stamps_total": int(atlas.num),
            "reference_psnr": scene.reference, "reference_ms": scene.reference_ms}


def table(rows: list[dict], quick_mode: bool) -> str:
    head = ("| scene | W x H | N | iters | paper's code | diffbmp-jax | margin | SSIM | ms/step | wall cold / warm (s) |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    lines = [head]
    for r in rows:
        ref = r["reference_psnr"]
        comparable = ref is not None and not quick_mode
        ref_s = f"{ref:.2f} dB" if comparable else "-"
        margin = f"{r['psnr'] - ref:+.2f}" if comparable else "-"
        ms = "-" if r["ms_per_step"] is None else f"{r['ms_per_step']:.2f}"
        warm = "-" if r["wall_warm_s"] is None else f"{r['wall_warm_s']:.1f}"
        lines.append(f"| {r['scene']} | {r['width']}x{r['height']} | {r['n']} | {r['steps']} | {ref_s} | "
                     f"{r['psnr']:.2f} dB | {margin} | {r['ssim']:.3f} | {ms} | {r['wall_cold_s']:.1f} / {warm} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="width 256, N scaled by the area, 64 px stamps")
    ap.add_argument("--only", nargs="+", default=None, help="scene names to run (default: all)")
    ap.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE",
                    help="FitConfig overrides for every scene (for ablations; the suite runs defaults)")
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="skip the second (warm) run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bench", default=str(BENCH), help="folder with targets/ and stamps/ (../shared/bench)")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)

    import jax
    bench = Path(args.bench)
    if not (bench / "targets").is_dir():
        raise SystemExit(f"--bench: {bench} has no targets/ folder")
    names = [s.name for s in SCENES]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        raise SystemExit(f"--only: unknown scene(s) {unknown}; scenes are {names}")
    scenes = [s for s in SCENES if args.only is None or s.name in args.only]
    if args.quick:
        scenes = [quick(s) for s in scenes]
    overrides = parse_set(args.set)
    stamp_size = 64 if args.quick else 128
    rows = []
    for s in scenes:
        row = run_scene(s, bench, stamp_size, overrides, args.warm, args.seed)
        rows.append(row)
        print(f"{row['scene']:22s} {row['psnr']:6.2f} dB  SSIM {row['ssim']:.3f}  cold {row['wall_cold_s']:.1f} s"
              f"  stamps used {row['stamps_used']}/{row['stamps_total']}", flush=True)
    print()
    print(table(rows, args.quick))
    if args.json:
        meta = {"device": str(jax.devices()[0]), "backend": jax.default_backend(), "host": platform.node(),
                "quick": args.quick, "overrides": overrides, "seed": args.seed, "stamp_size": stamp_size}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
