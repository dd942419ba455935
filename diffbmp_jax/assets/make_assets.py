"""Generates the bundled demo assets (no downloads): stamp PNGs and a target.

Run ``python -m diffbmp_jax.assets.make_assets`` to regenerate; the outputs
are committed. Shapes are drawn at 4x and downsampled for smooth edges.

* ``stamps/*.png``: 64x64 RGBA stamps (alpha is the coverage mask; each has
  its own colour, used by ``color_blend > 0``).
* ``target.png``: a 128x128 landscape (sky, sun, hills, a tree, a house).
"""

from __future__ import annotations

import math
import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))
SS = 4  # supersampling factor


def _stamp(draw_fn, color, size=64) -> Image.Image:
    big = size * SS
    im = Image.new("RGBA", (big, big), color[:3] + (0,))
    d = ImageDraw.Draw(im)
    draw_fn(d, big, color + (255,) if len(color) == 3 else color)
    return im.resize((size, size), Image.LANCZOS)


def _circle(d, s, c):
    m = s * 0.04
    d.ellipse([m, m, s - m, s - m], fill=c)


def _square(d, s, c):
    m = s * 0.08
    d.rounded_rectangle([m, m, s - m, s - m], radius=s * 0.12, fill=c)


def _triangle(d, s, c):
    m = s * 0.04
    d.polygon([(s / 2, m), (s - m, s - m * 3), (m, s - m * 3)], fill=c)


def _star(d, s, c):
    cx = cy = s / 2
    pts = []
    for i in range(10):
        r = (0.48 if i % 2 == 0 else 0.2) * s
        a = -math.pi / 2 + i * math.pi / 5
        pts.append((cx + r * math.cos(a), cy + 0.04 * s + r * math.sin(a)))
    d.polygon(pts, fill=c)


def _heart(d, s, c):
    pts = []
    for i in range(200):
        t = 2 * math.pi * i / 200
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((s / 2 + x * s / 36, s / 2 - 0.03 * s - y * s / 36))
    d.polygon(pts, fill=c)


def _leaf(d, s, c):
    pts = []
    for i in range(200):
        t = 2 * math.pi * i / 200
        x = 0.46 * s * math.cos(t)
        y = 0.22 * s * math.sin(t) * (1 - 0.3 * math.cos(t))
        pts.append((s / 2 + x, s / 2 + y))
    d.polygon(pts, fill=c)


STAMPS = {
    "circle": (_circle, (235, 180, 40)),
    "heart": (_heart, (220, 40, 70)),
    "star": (_star, (250, 210, 60)),
    "triangle": (_triangle, (60, 140, 220)),
    "square": (_square, (70, 170, 90)),
    "leaf": (_leaf, (90, 160, 60)),
}


def make_target(size=128) -> Image.Image:
    big = size * SS
    im = Image.new("RGB", (big, big))
    d = ImageDraw.Draw(im)
    for y in range(big):  # sky: deep blue to warm orange at the horizon
        t = y / (0.65 * big)
        t = min(t, 1.0)
        col = tuple(int(a + (b - a) * t) for a, b in zip((40, 80, 170), (250, 170, 110)))
        d.line([(0, y), (big, y)], fill=col)
    d.ellipse([0.62 * big, 0.12 * big, 0.84 * big, 0.34 * big], fill=(255, 235, 150))
    d.ellipse([-0.3 * big, 0.5 * big, 0.8 * big, 1.4 * big], fill=(60, 120, 60))
    d.ellipse([0.3 * big, 0.58 * big, 1.4 * big, 1.5 * big], fill=(40, 95, 50))
    d.rectangle([0.2 * big, 0.52 * big, 0.25 * big, 0.72 * big], fill=(90, 60, 35))
    d.ellipse([0.1 * big, 0.34 * big, 0.35 * big, 0.58 * big], fill=(30, 110, 45))
    d.rectangle([0.55 * big, 0.66 * big, 0.78 * big, 0.84 * big], fill=(230, 225, 210))
    d.polygon([(0.52 * big, 0.67 * big), (0.665 * big, 0.54 * big), (0.81 * big, 0.67 * big)], fill=(170, 50, 40))
    d.rectangle([0.64 * big, 0.74 * big, 0.69 * big, 0.84 * big], fill=(110, 70, 40))
    return im.resize((size, size), Image.LANCZOS)


def main(out_dir: str = HERE) -> None:
    os.makedirs(os.path.join(out_dir, "stamps"), exist_ok=True)
    for name, (fn, color) in STAMPS.items():
        _stamp(fn, color).save(os.path.join(out_dir, "stamps", f"{name}.png"), optimize=True)
    make_target().save(os.path.join(out_dir, "target.png"), optimize=True)


if __name__ == "__main__":
    main()
