"""Fit quality over seeds: PSNR of the demo fit (bundled target and stamps) for several keys.

    python benchmarks/fit_quality.py --seeds 6            # 128², 300 stamps, 300 steps

A change to the fitting loop that moves the mean by less than the spread over
seeds is not a change in quality. Prints one line: the PSNRs (dB) and their mean.
"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

import diffbmp_jax as db
from diffbmp_jax.assets import ASSETS


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    atlas = db.load_stamps([str(ASSETS / "stamps")], size=64)
    target = Image.open(ASSETS / "target.png").convert("RGB").resize((args.size, args.size), Image.BICUBIC)
    target = np.asarray(target, np.float32) / 255.0
    psnr = [db.fit(target, atlas, num_primitives=args.n, steps=args.steps, key=seed, progress=False).psnr
            for seed in range(args.seeds)]
    print(" ".join(f"{p:.2f}" for p in psnr), f"mean {np.mean(psnr):.2f} dB, std {np.std(psnr):.2f}")


if __name__ == "__main__":
    main()
