"""Text-guided composition with real CLIP weights, for the GPU machine.

    python benchmarks/clip_text_run.py [--clip-model PATH_OR_HUB_ID] [--prompt "a galaxy"] [--out DIR]

Looks for a Hugging Face CLIP checkpoint (a folder, or the HF cache entry of
``openai/clip-vit-base-patch32``). If found, fits stamps to the prompt and
writes ``result.png``, ``progress.png`` (a strip of logged frames) and
``clip_text_run.json`` (CLIP score per logged step, compile and per-step
times) into ``--out`` (default ``$OUT``, else ``./clip_text_out``).

If the weights are not there, it prints the loader's error (which lists the
files to place and where), and, unless ``--no-smoke``, runs the same loop
with a *randomly initialised* CLIP of ViT-B/32 shape on token ids, so the
speed of the pipeline (render + augmentations + CLIP forward/backward) is still
measured; that image is meaningless and is saved as ``smoke_random_clip.png``.
Exit status 0 in both cases; 1 only if something crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _stamps(spec):
    import diffbmp_jax as db
    from diffbmp_jax import stamps
    if spec:
        return stamps.load_stamps(spec, size=64)
    bundled = Path(db.__file__).resolve().parent / "assets" / "stamps"
    if bundled.is_dir():
        return stamps.load_stamps([str(bundled)], size=64)
    # Fallback: a soft disc and a ring.
    yy, xx = np.mgrid[:64, :64]
    r = np.sqrt((xx - 31.5) ** 2 + (yy - 31.5) ** 2)
    return db.Atlas.from_arrays(np.stack([(r < 28).astype(np.float32), ((r < 28) & (r > 18)).astype(np.float32)]))


def _save(path, image):
    from PIL import Image
    Image.fromarray((np.clip(np.asarray(image), 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip-model", default="openai/clip-vit-base-patch32")
    ap.add_argument("--prompt", default="a galaxy")
    ap.add_argument("--negative", nargs="*", default=["a blurry image", "text"])
    ap.add_argument("--stamps", nargs="*", default=None, help="stamp specs (default: the bundled stamps)")
    ap.add_argument("-n", "--num-primitives", type=int, default=256)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=224, help="canvas side in pixels")
    ap.add_argument("--cutouts", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.environ.get("OUT") or "clip_text_out")
    ap.add_argument("--no-smoke", action="store_true", help="without weights, only print the error")
    args = ap.parse_args(argv)

    import jax
    import diffbmp_jax as db
    from diffbmp_jax import clip

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": str(jax.devices()[0]), "jax": jax.__version__, "prompt": args.prompt,
              "num_primitives": args.num_primitives, "steps": args.steps, "size": args.size,
              "cutouts": args.cutouts}
    try:
        model = clip.load_clip(args.clip_model)
        report["clip_model"] = str(model.path)
        prompt, negative, name = args.prompt, args.negative or None, "result.png"
    except clip.ClipModelNotFoundError as e:
        print("CLIP weights not found; the loader says:\n" + str(e), flush=True)
        report["clip_model"] = None
        report["error"] = str(e)
        if args.no_smoke:
            (out / "clip_text_run.json").write_text(json.dumps(report, indent=1))
            return 0
        import transformers
        print("\nRunning the smoke test with a random ViT-B/32-shaped CLIP (timings only).", flush=True)
        model = clip.ClipModel.from_hf_config(transformers.CLIPConfig(), jax.random.key(0))
        prompt = np.array([49406, 320, 1579, 49407] + [49407] * 73, np.int32)  # arbitrary ids: the model is random
        negative, name = None, "smoke_random_clip.png"

    atlas = _stamps(args.stamps)
    frames, stamps_t = [], []

    def cb(step, params, image, metrics):
        frames.append(np.asarray(image))
        stamps_t.append(time.perf_counter())
        loss = "-" if metrics["loss"] is None else f"{metrics['loss']:.4f}"
        print(f"step {step:5d}  loss {loss:>7}  clip {metrics['clip_score']:.4f}", flush=True)

    t0 = time.perf_counter()
    result = db.fit_text(prompt, atlas, model=model, num_primitives=args.num_primitives, steps=args.steps,
                         key=args.seed, height=args.size, width=args.size, negative_prompts=negative,
                         num_cutouts=args.cutouts, progress=False, callback=cb, log_every=25)
    jax.block_until_ready(result.image)
    total = time.perf_counter() - t0
    hist = result.history
    # The first chunk includes compilation; later chunks give the steady step time.
    steady = None
    if len(hist["step"]) >= 3:
        steady = (hist["time"][-1] - hist["time"][1]) / max(hist["step"][-1] - hist["step"][1], 1)
    report.update(clip_score=result.clip_score, wall_time=total, seconds_per_step=steady,
                  first_chunk_time=hist["time"][1] if len(hist["time"]) > 1 else None,
                  history=hist, image=str(out / name))
    _save(out / name, result.image)
    if frames:
        idx = np.unique(np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int))
        _save(out / "progress.png", np.concatenate([frames[i] for i in idx], axis=1))
    (out / "clip_text_run.json").write_text(json.dumps(report, indent=1, default=float))
    print(f"\nCLIP score {result.clip_score:.4f}; {total:.1f} s total, "
          f"{'%.4f s/step steady' % steady if steady else 'too few steps for a steady time'}; "
          f"wrote {out / name}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:
        traceback.print_exc()
        sys.exit(1)
