"""Spatially constrained compositions: groups of primitives confined to masks.

Each group is ``(mask [H, W], atlas, N)``: its ``N`` primitives show bitmaps of
its own atlas and may only draw inside the mask grown by ``margin`` pixels.
All groups are fitted together in one scene (later groups paint on top).

The confinement holds by construction, after every step:

* positions are projected: a centre whose pixel is not an *allowed centre*
  of its group is moved into the (closed) pixel cell of the nearest allowed
  centre ``m``; allowed centres are mask pixels with room for at least a
  ``min_scale`` stamp;
* scales are capped: ``scale * radius <= room(m)``, where ``radius`` is the
  bitmap's footprint radius per unit scale (:func:`diffbmp_jax.tasks.video.footprint_radius`)
  and ``room(m) = D(m) - sqrt(2)/2`` with ``D(m)`` the distance from ``m`` to
  the nearest pixel centre outside the dilated mask. Every pixel ``q`` the
  stamp can touch has ``|q - m| < radius * scale + sqrt(2)/2 <= D(m)``, so ``q``
  lies in the dilated mask, whatever the rotation.

Respawned primitives (``config.prune_every``) are drawn from the error inside
their group's mask (:func:`diffbmp_jax.fitting.respawn.respawn` with a region), so they
land where the group can improve the image, not on the edge nearest to a
larger error outside.

Atlases of different bitmap sizes are combined into one: each bitmap is
padded to a square and resized to the largest side; template ids are offset.
"""

from __future__ import annotations

import functools
import dataclasses
import math
import time

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.fitting import init as _init
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.fitting.cache import enable_compilation_cache
from diffbmp_jax.fitting.canvas import resolve_background
from diffbmp_jax.fitting.config import FitConfig, resolve_config
from diffbmp_jax.fitting.metrics import score_ssim
from diffbmp_jax.fitting.optim import initial_state, make_optimizer, to_theta
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.validation import as_key, as_target, check_count, nonnegative_number
from diffbmp_jax.fitting.engine import Data, Region, Static, evaluate, project, run_fit_chunk
from diffbmp_jax.fitting.loop import run_chunks
from diffbmp_jax.fitting.timing import clocked
from diffbmp_jax.tasks.video import footprint_radius

__all__ = ["fit_regions", "RegionFitResult", "combine_atlases", "region_tables", "dilate_mask"]


@dataclasses.dataclass
class RegionFitResult:
    """What :func:`fit_regions` returns.

    Attributes:
      params: :class:`Primitives` of all groups, concatenated in group order (pixel units).
      template: ``[N]`` int32 ids into ``atlas``.
      group: ``[N]`` int32 group index of each primitive.
      atlas: the combined :class:`Atlas` of all groups.
      image: ``[H, W, 3]`` final render.
      psnr, ssim: final quality against the target.
      masks: ``[G, H, W]`` bool dilated masks each group is confined to.
      wall_time: seconds.
      config: the :class:`FitConfig` used.
      compile_time: seconds spent tracing, lowering and compiling (or loading
        compiled programs from the persistent cache).
      step_time: seconds spent running the steps (compilation excluded).
    """

    params: Primitives
    template: jax.Array
    group: np.ndarray
    atlas: Atlas
    image: jax.Array
    psnr: float
    ssim: float
    masks: np.ndarray
    wall_time: float
    config: FitConfig
    compile_time: float = 0.0
    step_time: float = 0.0


def combine_atlases(atlases) -> tuple[Atlas, list[int]]:
    """One atlas holding every bitmap of ``atlases``; returns it and each atlas' id offset.

    Bitmaps are centred on a transparent square of their longer side, then
    resized (bilinear, antialiased) to the largest side among all atlases, so
    that a primitive's ``scale`` keeps its meaning (half the longer side).
    Atlases without ``rgb`` get white colours when another one has ``rgb``.
    """
    atlases = list(atlases)
    side = max(max(a.size) for a in atlases)
    any_rgb = any(a.rgb is not None for a in atlases)
    masks, rgbs, offsets, off = [], [], [], 0
    for a in atlases:
        m = np.asarray(a.mask, np.float32)
        c = np.asarray(a.colors, np.float32)
        h, w = m.shape[1:]
        s = max(h, w)
        py, px = (s - h) // 2, (s - w) // 2
        m = np.pad(m, ((0, 0), (py, s - h - py), (px, s - w - px)))
        c = np.pad(c, ((0, 0), (py, s - h - py), (px, s - w - px), (0, 0)), constant_values=1.0)
        if s != side:
            m = np.asarray(jax.image.resize(m, (m.shape[0], side, side), "linear"))
            c = np.asarray(jax.image.resize(c, (c.shape[0], side, side, 3), "linear"))
        masks.append(np.clip(m, 0, 1)), rgbs.append(np.clip(c, 0, 1))
        offsets.append(off)
        off += m.shape[0]
    rgb = np.concatenate(rgbs) if any_rgb else None
    return Atlas.from_arrays(np.concatenate(masks), rgb), offsets


def dilate_mask(mask: np.ndarray, margin: float) -> np.ndarray:
    """``[H, W]`` bool: pixels whose centre is within ``margin`` (Euclidean) of a mask pixel."""
    from scipy.ndimage import distance_transform_edt
    mask = np.asarray(mask, bool)
    if mask.all():
        return mask.copy()
    return distance_transform_edt(~mask) <= margin


def region_tables(mask: np.ndarray, margin: float, min_room: float):
    """Lookup tables confining one group (see the module docstring).

    Args:
      mask: ``[H, W]`` bool group mask.
      margin: dilation (pixels) of the mask a stamp may reach into.
      min_room: smallest footprint radius (pixels) an allowed centre must fit.

    Returns:
      ``(nearest [H, W] int32, room [H, W] float32, dilated [H, W] bool, num_allowed)``:
      for each pixel the flat index of the nearest allowed centre pixel, the
      room (pixels) at each pixel, the dilated mask, and the number of allowed centres.
    """
    from scipy.ndimage import distance_transform_edt
    h, w = mask.shape
    dil = dilate_mask(mask, margin)
    if dil.all():
        dist = np.full((h, w), 4.0 * (h + w), np.float64)  # nothing outside: no limit but the canvas'
    else:
        dist = distance_transform_edt(dil)  # distance to the nearest pixel centre outside `dil`
    room = (dist - math.sqrt(0.5)).astype(np.float32)
    allowed = mask & (room >= min_room)
    if not allowed.any():
        return None, room, dil, 0
    _, (iy, ix) = distance_transform_edt(~allowed, return_indices=True)
    return (iy * w + ix).astype(np.int32), room, dil, int(allowed.sum())


def _as_mask(mask, h: int, w: int, name: str) -> np.ndarray:
    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__"):
        from PIL import Image
        try:
            with Image.open(mask) as im:
                mask = np.asarray(im.convert("L"), np.float32) / 255.0
        except (OSError, ValueError) as e:
            raise ValueError(f"{name}: cannot read mask image {str(mask)!r}: {e}") from e
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] in (1, 3, 4):
        m = m[..., 3] if m.shape[-1] == 4 else m.mean(-1)
    if m.ndim != 2:
        raise ValueError(f"{name} must be an [H, W] mask, got shape {tuple(np.shape(mask))}")
    if m.shape != (h, w):
        raise ValueError(f"{name} has size {m.shape}, but the target is {(h, w)}: masks must match the target")
    if m.dtype == np.uint8:
        m = m / 255.0
    m = m.astype(np.float32)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contains non-finite values")
    return m > 0.5


@clocked
def fit_regions(target, groups, *, steps: int, key=0, config: FitConfig | dict | None = None,
                margin: float = 1.0, min_scale: float = 0.5, progress: bool = False,
                **options) -> RegionFitResult:
    """Fits primitives to ``target``, each group confined to its own mask.

    Args:
      target: ``[H, W, 3]`` image in [0, 1] (uint8 accepted).
      groups: list of ``(mask, atlas, N)``: ``mask`` ``[H, W]`` (bool, float
        > 0.5 is inside, uint8, or an image path), the group's :class:`Atlas`
        and its number of primitives ``N >= 1``.
      steps: optimisation steps.
      key: ``jax.random.key`` or int seed.
      config: :class:`FitConfig` or dict; ``**options`` override fields.
      margin: pixels by which a group's stamps may reach beyond its mask.
      min_scale: smallest scale (pixels) every stamp must be able to take;
        mask pixels too close to the edge for it are not allowed centres.
      progress: show a tqdm bar with loss and PSNR (updated every
        ``config.log_every`` steps).

    Returns:
      :class:`RegionFitResult`. Every pixel a group's primitive can draw on
      (non-zero alpha) lies in that group's mask dilated by ``margin``.
    """
    t0 = time.perf_counter()
    enable_compilation_cache()
    target = as_target(target)
    h, w = int(target.shape[0]), int(target.shape[1])
    config = resolve_background(resolve_config(config, options), transparent=False)  # the target is opaque
    if "image" in (config.background, config.output_background):
        raise ValueError("fit_regions does not support background='image' / output_background='image'")
    steps = check_count("steps", steps, 0)
    key = as_key(key)
    margin = nonnegative_number("margin", margin)
    min_scale = nonnegative_number("min_scale", min_scale)
    if min_scale <= 0:
        raise ValueError(f"min_scale must be > 0, got {min_scale!r}")
    if not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError("groups must be a non-empty list of (mask, atlas, num_primitives)")
    masks, atlases, counts = [], [], []
    for g, item in enumerate(groups):
        if not isinstance(item, (list, tuple)) or len(item) != 3:
            raise ValueError(f"groups[{g}] must be a (mask, atlas, num_primitives) triple")
        m = _as_mask(item[0], h, w, f"groups[{g}] mask")
        if not m.any():
            raise ValueError(f"groups[{g}] mask is empty: no pixel is inside the region")
        if not isinstance(item[1], Atlas):
            raise TypeError(f"groups[{g}] atlas must be a diffbmp_jax.Atlas, got {type(item[1]).__name__}")
        masks.append(m), atlases.append(item[1])
        counts.append(check_count(f"groups[{g}] num_primitives", item[2], 1))
    atlas, offsets = combine_atlases(atlases)
    radius_t = footprint_radius(atlas)
    n = sum(counts)

    nearest, rooms, dilated = [], [], []
    for g, m in enumerate(masks):
        r_max = float(radius_t[offsets[g]: offsets[g] + atlases[g].num].max())
        near, room, dil, num_allowed = region_tables(m, margin, r_max * min_scale)
        if num_allowed == 0:
            raise ValueError(f"groups[{g}] mask is too thin: no pixel has room for a stamp of scale {min_scale} "
                             f"within the mask dilated by margin={margin}; widen the mask or raise margin")
        nearest.append(near), rooms.append(room), dilated.append(dil)

    # Per-group initialisation: structure-aware sampling restricted to the group's centres.
    maps = _init.host_structure_maps(target, n, coverage=config.coverage)  # NumPy: nothing to compile
    keys = jax.random.split(key, len(groups) + 1)
    parts, templates, group_ids = [], [], []
    for g, (m, a, ng) in enumerate(zip(masks, atlases, counts)):
        kxy, kt = jax.random.split(keys[g])
        prob = np.asarray(maps["prob"]) * (nearest[g].reshape(-1) == np.arange(h * w))
        xy = _init.sample_pixels(jnp.asarray(prob + 0.0), kxy, ng, h, w)
        area = float(m.sum())
        s = _init.sample_colors(maps["scale"][..., None], xy)[:, 0] * math.sqrt(area / (h * w) * n / ng)
        order = jnp.argsort(-s)  # big stamps at the bottom of the group
        xy, s = xy[order], s[order]
        col = _init.sample_colors(target, xy)
        parts.append(Primitives(xy=xy, scale=s, rotation=_init.sample_colors(maps["angle"][..., None], xy)[:, 0],
                                opacity_logit=jnp.full((ng,), _init.logit(config.init_opacity, 1e-4)),
                                color_logit=_init.logit(col, 0.02)))
        templates.append(jax.random.randint(kt, (ng,), 0, a.num, dtype=jnp.int32) + offsets[g])
        group_ids.append(np.full(ng, g, np.int32))
    params = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *parts)
    template = jnp.concatenate(templates)
    group = np.concatenate(group_ids)

    unit = float(_init.base_scale(h, w, n, config.coverage))
    allowed = [near == np.arange(h * w).reshape(h, w) for near in nearest]
    region = Region(group=jnp.asarray(group), nearest=jnp.asarray(np.stack(nearest)),
                    room=jnp.asarray(np.stack(rooms)), radius=jnp.asarray(radius_t[np.asarray(template)]),
                    mask=jnp.asarray(np.stack(masks), jnp.float32), allowed=jnp.asarray(np.stack(allowed), jnp.float32))
    static = Static(config, h, w, config.log_every, unit, constrained=True)
    data = Data(target, None, Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb), template, None, None,
                jax.device_put(maps["scale"]), jax.device_put(maps["angle"]), keys[-1], region=region)
    theta = project(static, region, to_theta(params, unit))

    def log(step, carry, loss, counts):
        return None, ({"psnr": f"{float(evaluate(static, data, carry[0])[1]):.2f}"} if progress else {})

    carry = (theta, initial_state(make_optimizer(config, steps), theta))
    carry, _ = run_chunks(functools.partial(run_fit_chunk, static), data, carry, steps=steps, chunk=static.chunk,
                          log=log, progress=progress, desc="regions", watch=progress)
    # The final projection is the one the guarantee rests on (steps end with
    # one too; this also covers steps=0).
    theta = project(static, region, carry[0])
    image, p, params = evaluate(static, data, theta)
    return RegionFitResult(params=params, template=template, group=group, atlas=atlas, image=image,
                           psnr=float(p), ssim=float(score_ssim(image, target)), masks=np.stack(dilated),
                           wall_time=time.perf_counter() - t0, config=config)
