"""Differentiable CLIP image preprocessing and augmentation, in JAX.

Everything here takes images ``[..., H, W, 3]`` float in [0, 1] (the renderer's
output after compositing) and is differentiable with respect to the pixels, so
CLIP losses back-propagate into the primitives.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "normalize", "resize_center_crop",
           "preprocess", "random_cutouts"]

# Per-channel RGB statistics of CLIP's training set (HF CLIPImageProcessor defaults).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(images, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    """``(images - mean) / std`` per channel; ``images [..., 3]`` in [0, 1]."""
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)
    return (images - mean) / std


def resize_center_crop(images, size: int, method: str = "bicubic"):
    """Resizes the shorter side to ``size`` pixels, then centre-crops ``size x size``.

    Mirrors HF's CLIPImageProcessor geometry (``shortest_edge`` then
    ``crop_size``), using ``jax.image.resize`` (antialiased when shrinking) so
    it is differentiable.

    Args:
      images: ``[..., H, W, C]``.
      size: output side in pixels (the model's ``image_size``).
      method: ``jax.image.resize`` method (``"bicubic"``, ``"linear"``, ...).

    Returns:
      ``[..., size, size, C]``.
    """
    h, w = images.shape[-3], images.shape[-2]
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    method = {"bicubic": "cubic", "bilinear": "linear"}.get(method, method)
    out = jax.image.resize(images, images.shape[:-3] + (nh, nw, images.shape[-1]), method=method)
    top, left = (nh - size) // 2, (nw - size) // 2
    return out[..., top:top + size, left:left + size, :]


def preprocess(images, size: int, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
               method: str = "bicubic"):
    """``[..., H, W, 3]`` in [0, 1] -> CLIP input ``[..., size, size, 3]`` (normalised)."""
    return normalize(resize_center_crop(images, size, method), mean, std)


def _homography(src, dst):
    """3x3 ``M`` with ``M @ [dst, 1] ~ [src, 1]`` from four point pairs ``[4, 2]``."""
    rows, rhs = [], []
    for i in range(4):
        x, y = dst[i, 0], dst[i, 1]
        u, v = src[i, 0], src[i, 1]
        z, o = jnp.zeros_like(x), jnp.ones_like(x)
        rows.append(jnp.stack([x, y, o, z, z, z, -u * x, -u * y]))
        rows.append(jnp.stack([z, z, z, x, y, o, -v * x, -v * y]))
        rhs += [u, v]
    sol = jnp.linalg.solve(jnp.stack(rows), jnp.stack(rhs))
    return jnp.append(sol, 1.0).reshape(3, 3)


def _sample_bilinear(image, xs, ys, fill):
    """Samples ``image [H, W, C]`` at pixel coords ``xs, ys [S, S]``; ``fill`` outside."""
    h, w, _ = image.shape
    x0, y0 = jnp.floor(xs), jnp.floor(ys)
    tx, ty = (xs - x0)[..., None], (ys - y0)[..., None]

    def tap(yy, xx):
        inside = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
        v = image[jnp.clip(yy, 0, h - 1).astype(jnp.int32), jnp.clip(xx, 0, w - 1).astype(jnp.int32)]
        return jnp.where(inside[..., None], v, fill)

    return (tap(y0, x0) * (1 - tx) * (1 - ty) + tap(y0, x0 + 1) * tx * (1 - ty)
            + tap(y0 + 1, x0) * (1 - tx) * ty + tap(y0 + 1, x0 + 1) * tx * ty)


def random_cutouts(key, image, num: int, size: int, *, crop_scale=(0.7, 0.9),
                   distortion: float = 0.5, flip: bool = True, fill=0.0,
                   include_full: bool = True):
    """CLIPDraw-style augmented views of one image, as one projective warp each.

    Each view composes a random resized crop (area fraction in ``crop_scale``,
    square), a random perspective distortion (each corner moved inwards by up to
    ``distortion / 2`` of the crop side, like torchvision's RandomPerspective)
    and a horizontal flip (probability 1/2), then samples bilinearly at
    ``size x size``. One warp instead of three resamplings keeps it cheap and
    differentiable with respect to ``image``.

    Args:
      key: PRNG key.
      image: ``[H, W, 3]`` in [0, 1].
      num: number of views ``K``.
      size: output side in pixels (the CLIP ``image_size``).
      crop_scale: (min, max) fraction of the image area kept by the crop.
      distortion: perspective strength in [0, 1]; 0 disables it.
      flip: random horizontal flips.
      fill: value for pixels mapped outside the image.
      include_full: make view 0 the whole image resized to ``size x size``
        (no augmentation; a non-square image is squashed), which keeps the
        global composition in the loss.

    Returns:
      ``[K, size, size, 3]`` views in [0, 1] (not normalised).
    """
    # Shrink big renders first (antialiased) so that even the smallest crop is
    # sampled at no more than ~1 source pixel per output pixel: plain bilinear
    # taps would alias thin strokes away.
    limit = int(size / (crop_scale[0] ** 0.5)) + 1
    if min(image.shape[0], image.shape[1]) > limit:
        f = limit / min(image.shape[0], image.shape[1])
        image = jax.image.resize(image, (round(image.shape[0] * f), round(image.shape[1] * f), image.shape[2]),
                                 method="linear")
    h, w = image.shape[0], image.shape[1]
    k_area, k_pos, k_persp, k_flip = jax.random.split(key, 4)
    area = jax.random.uniform(k_area, (num,), minval=crop_scale[0], maxval=crop_scale[1])
    side = jnp.sqrt(area)  # fraction of each image side
    # Crop corner positions (fractions), uniformly inside the image.
    off = jax.random.uniform(k_pos, (num, 2)) * (1.0 - side[:, None])
    unit = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    inward = jnp.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    jitter = jax.random.uniform(k_persp, (num, 4, 2)) * (distortion / 2.0)
    src_unit = unit[None] + inward[None] * jitter  # distorted corners in crop units
    flips = (jax.random.bernoulli(k_flip, 0.5, (num,)) & flip)
    # A flip swaps left and right corners of the source quad.
    src_unit = jnp.where(flips[:, None, None], src_unit[:, jnp.array([1, 0, 3, 2])], src_unit)
    src = (off[:, None, :] + src_unit * side[:, None, None]) * jnp.array([w, h], jnp.float32)
    if include_full:
        src = src.at[0].set(unit * jnp.array([w, h], jnp.float32))
    # Edges in pixel-edge coordinates: pixel centres are at +0.5.
    src = src - 0.5
    dst = unit * size - 0.5
    mats = jax.vmap(_homography, in_axes=(0, None))(src, dst)
    grid = jnp.arange(size, dtype=jnp.float32)
    gx, gy = jnp.meshgrid(grid, grid)
    pts = jnp.stack([gx, gy, jnp.ones_like(gx)], -1)  # [S, S, 3]

    def warp(m):
        q = pts @ m.T
        return _sample_bilinear(image, q[..., 0] / q[..., 2], q[..., 1] / q[..., 2], fill)

    return jax.vmap(warp)(mats)
