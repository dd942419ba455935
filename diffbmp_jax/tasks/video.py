"""Videos: fitting a sequence of frames with temporally coherent primitives.

Frame 0 is fitted fully with :func:`diffbmp_jax.fit`. Every later frame starts
from the previous frame's primitives and runs fewer steps (``steps_next``):

* **freezing** -- primitives whose footprint (the disc that can receive any
  of their alpha, see :func:`footprint_radius`) touches no pixel that changed
  between the two input frames are frozen: their optimiser updates are
  multiplied by 0 and the step keeps their old values (bit-identical);
* **pruning** -- invisible primitives (opacity below ``prune_opacity``, off the
  canvas, or tiny) are re-initialised where the error is largest
  (:mod:`diffbmp_jax.fitting.respawn`), at the start of the frame and periodically;
* **temporal loss** -- optionally ``temporal_weight * mean_n |theta_n - theta_n^prev|^2``
  (in the optimiser's normalised space) penalises parameter motion.

With ``batch=K > 1`` a window of ``K`` frames is fitted at once: every frame of
the window starts from the last fitted frame before it and the ``K`` fits run
as one ``jax.vmap`` of the step function.

The optimiser and parameter space (:mod:`diffbmp_jax.fitting.optim`), blur annealing,
backgrounds (:mod:`diffbmp_jax.fitting.canvas`) and respawn (:mod:`diffbmp_jax.fitting.respawn`)
are those of :func:`diffbmp_jax.fit` (same :class:`~diffbmp_jax.fitting.config.FitConfig`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.fitting import init as _init
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.fitting.cache import enable_compilation_cache
from diffbmp_jax.fitting.canvas import check_background_image, resolve_background
from diffbmp_jax.fitting.config import GENTLE_STEPS, FitConfig, resolve_config
from diffbmp_jax.fitting.engine import Data, Static, evaluate, run_steps, run_steps_batched, stack_data
from diffbmp_jax.fitting.image import fit
from diffbmp_jax.fitting.loop import progress_bar
from diffbmp_jax.fitting.metrics import psnr as _psnr
from diffbmp_jax.fitting.optim import Theta, make_optimizer, to_params, to_theta
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.fitting.respawn import invisible, respawn
from diffbmp_jax.fitting.timing import clocked, current_clock
from diffbmp_jax.validation import as_key, as_target, check_count, nonnegative_number

__all__ = ["fit_video", "VIDEO_FIT_DEFAULTS", "VideoFitResult", "flicker", "frame_psnr", "footprint_radius",
           "synthetic_video"]

_LOG = logging.getLogger(__name__)



# --------------------------------------------------------------------------- metrics

def flicker(rendered, inputs) -> float:
    """Flicker added by a rendering of a video (0 = none).

    ``mean |R_{t+1} - R_t| - mean |I_{t+1} - I_t|``: the mean absolute change
    per pixel and channel between consecutive rendered frames minus that of
    the input frames (intensities in [0, 1]). Positive values mean the
    rendering changes more from frame to frame than the video does.

    Args:
      rendered, inputs: ``[T, H, W, 3]`` (or lists of ``[H, W, 3]``), ``T >= 2``.
    """
    r = np.asarray(rendered, np.float32)
    i = np.asarray(inputs, np.float32)
    if r.shape != i.shape:
        raise ValueError(f"rendered and inputs must have the same shape, got {r.shape} and {i.shape}")
    if r.ndim != 4 or r.shape[0] < 2:
        raise ValueError(f"rendered must have shape (T, H, W, 3) with T >= 2, got {r.shape}")
    return float(np.mean(np.abs(np.diff(r, axis=0))) - np.mean(np.abs(np.diff(i, axis=0))))


def frame_psnr(rendered, inputs) -> np.ndarray:
    """``[T]`` PSNR in dB of each rendered frame against its input frame."""
    r = jnp.asarray(np.asarray(rendered, np.float32))
    i = jnp.asarray(np.asarray(inputs, np.float32))
    if r.shape != i.shape or r.ndim != 4:
        raise ValueError(f"rendered and inputs must both be (T, H, W, 3), got {r.shape} and {i.shape}")
    return np.asarray(jax.vmap(_psnr)(r, i))


def synthetic_video(num_frames: int = 10, height: int = 64, width: int = 64, *, num_shapes: int = 3,
                    speed: float = 2.0, seed: int = 0) -> np.ndarray:
    """A small test video ``[T, H, W, 3]`` float32 in [0, 1]: a few coloured
    discs and squares moving in straight lines (``speed`` pixels per frame)
    over a static textured background (smooth gradients plus a checker)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack([0.55 + 0.3 * np.sin(xs / width * 3.0 + 0.5), 0.5 + 0.25 * np.cos(ys / height * 4.0),
                   0.45 + 0.2 * np.sin((xs + ys) / (height + width) * 5.0)], -1)
    checker = ((xs // 8 + ys // 8) % 2)[..., None] * 0.12
    bg = np.clip(bg - checker, 0.0, 1.0)
    r0 = max(3.0, 0.1 * min(height, width))
    pos = rng.uniform([r0, r0], [width - r0, height - r0], (num_shapes, 2))
    ang = rng.uniform(0, 2 * np.pi, num_shapes)
    vel = speed * np.stack([np.cos(ang), np.sin(ang)], -1)
    cols = rng.uniform(0.0, 1.0, (num_shapes, 3))
    out = []
    for t in range(num_frames):
        img = bg.copy()
        for k in range(num_shapes):
            cx, cy = pos[k] + t * vel[k]
            if k % 2 == 0:
                inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= r0 ** 2
            else:
                inside = (np.abs(xs - cx) <= r0) & (np.abs(ys - cy) <= r0)
            img[inside] = cols[k]
        out.append(img)
    return np.stack(out).astype(np.float32)


def as_frames(frames) -> jax.Array:
    """Validates ``frames`` (``[T, H, W, 3]`` array or list of images) -> float32 ``[T, H, W, 3]``."""
    if isinstance(frames, (str, bytes, os.PathLike)):
        raise TypeError("frames must be an array [T, H, W, 3] or a list of images; read files with "
                        "diffbmp_jax.load_video(path)")
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("frames: no frames given")
        out = []
        for k, f in enumerate(frames):
            try:
                out.append(as_target(f))
            except (TypeError, ValueError) as e:
                raise type(e)(f"frames[{k}]: {e}") from e
        for k, f in enumerate(out):
            if f.shape != out[0].shape:
                raise ValueError(f"frames[{k}] has shape {tuple(f.shape)}, frames[0] has {tuple(out[0].shape)}")
        return jnp.stack(out)
    a = np.asarray(frames)
    if a.ndim != 4 or a.shape[0] == 0:
        raise ValueError(f"frames must have shape (T, H, W, 3) with T >= 1, got {a.shape}")
    try:
        return jnp.stack([as_target(f) for f in a])
    except (TypeError, ValueError) as e:
        raise type(e)(f"frames: {e}") from e


# --------------------------------------------------------------------------- footprints

def footprint_radius(atlas: Atlas, slack: float = 1e-3) -> np.ndarray:
    """``[P]`` radius, in units of ``scale``, of the disc that holds every canvas
    pixel a primitive showing bitmap ``p`` can give non-zero alpha.

    Bilinear sampling is non-zero only within one texel of a non-zero texel;
    the radius is the farthest corner of those texel neighbourhoods in the
    bitmap frame, where ``[-1, 1]`` spans the longer side (the renderer's
    mapping: texel ``j`` has its centre at ``u = (2 j + 1 - w) / max(h, w)``).
    A primitive at ``xy`` with scale ``s`` thus draws only inside the disc of
    radius ``radius * s`` pixels around ``xy``, whatever its rotation.
    """
    m = np.asarray(atlas.mask)
    _, h, w = m.shape
    half = max(h, w) / 2.0
    out = np.zeros(m.shape[0], np.float32)
    for k in range(m.shape[0]):
        iy, ix = np.nonzero(m[k] > 0)
        if iy.size == 0:
            continue
        # fx in (j - 1, j + 1)  <=>  u in ((j - 1 - w/2 + 0.5) / half, (j + 1 - w/2 + 0.5) / half)
        ux = np.maximum(np.abs(ix - 1 - w / 2 + 0.5), np.abs(ix + 1 - w / 2 + 0.5)) / half
        vy = np.maximum(np.abs(iy - 1 - h / 2 + 0.5), np.abs(iy + 1 - h / 2 + 0.5)) / half
        out[k] = float(np.sqrt(ux * ux + vy * vy).max())
    return out * (1.0 + slack) + 1e-6


# --------------------------------------------------------------------------- freezing

def changed_pixels(prev, cur, threshold: float, dilate: int) -> np.ndarray:
    """``[H, W]`` bool: pixels whose colour changed by more than ``threshold``
    (max over channels), grown by ``dilate`` pixels (square neighbourhood)."""
    from scipy.ndimage import maximum_filter
    d = np.max(np.abs(np.asarray(cur) - np.asarray(prev)), axis=-1) > threshold
    if dilate > 0:
        d = maximum_filter(d, size=2 * dilate + 1, mode="constant", cval=False)
    return d


def touches(changed: np.ndarray, params: Primitives, radius: np.ndarray) -> np.ndarray:
    """``[N]`` bool: the primitive's footprint box (see :func:`footprint_radius`)
    holds a changed pixel; an O(1) lookup per primitive in a summed-area table."""
    h, w = changed.shape
    sat = np.zeros((h + 1, w + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(changed, 0), 1)
    xy = np.asarray(params.xy, np.float64)
    r = radius * np.asarray(params.scale, np.float64) + 1.0
    x0 = np.clip(np.floor(xy[:, 0] - r), 0, w).astype(int)
    x1 = np.clip(np.ceil(xy[:, 0] + r) + 1, 0, w).astype(int)
    y0 = np.clip(np.floor(xy[:, 1] - r), 0, h).astype(int)
    y1 = np.clip(np.ceil(xy[:, 1] + r) + 1, 0, h).astype(int)
    count = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    return count > 0


def _dead(static: Static, theta: Theta) -> np.ndarray:
    """``[N]`` bool, fit's pruning rule: invisible, off the canvas or tiny."""
    return invisible(theta, static.cfg, static.height, static.width, static.unit, xp=np)


@functools.partial(jit, static_argnums=0)
def _respawn_now(static, data, theta, image, key):
    """Respawns the invisible primitives of ``theta`` against ``image`` before a frame's run."""
    opt_state = make_optimizer(static.cfg, static.chunk).init(theta)  # init reads no schedule
    theta, _, count = respawn(theta, opt_state, image, key, cfg=static.cfg, height=static.height,
                              width=static.width, unit=static.unit, target=data.target, weight=data.weight,
                              guide_scale=data.guide_scale, guide_angle=data.guide_angle)
    return theta, count


# --------------------------------------------------------------------------- fit_video

@dataclasses.dataclass
class VideoFitResult:
    """What :func:`fit_video` returns.

    Attributes:
      params: list of ``T`` :class:`Primitives` (``N`` each, pixel units), one per frame.
      template: ``[N]`` int32 bitmap ids (shared by all frames).
      frames: ``[T, H, W, 3]`` float32 renders (sharp atlas, ``output_background``).
      psnr: ``[T]`` PSNR in dB of each render against its input frame.
      flicker: added flicker (:func:`flicker`; 0 = none, ``nan`` for one frame).
      frozen: ``[T]`` number of frozen primitives per frame (0 for frame 0).
      respawned: ``[T]`` primitives re-initialised at the start of each frame.
      frame_time: ``[T]`` seconds per frame (compilation included; for a
        batched window, the window's time split evenly).
      wall_time: seconds in all.
      config: the :class:`FitConfig` used.
      compile_time: seconds spent tracing, lowering and compiling (or loading
        compiled programs from the cache), frame 0's fit included.
      step_time: seconds spent running the frames' steps (compilation excluded).
    """

    params: list
    template: jax.Array
    frames: np.ndarray
    psnr: np.ndarray
    flicker: float
    frozen: np.ndarray
    respawned: np.ndarray
    frame_time: np.ndarray
    wall_time: float
    config: FitConfig
    compile_time: float = 0.0
    step_time: float = 0.0

    def stacked_params(self) -> dict:
        """Per-frame parameters stacked along a leading ``T`` axis (numpy), plus ``template``."""
        out = {f: np.stack([np.asarray(getattr(p, f)) for p in self.params])
               for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit")}
        out["template"] = np.asarray(self.template, np.int32)
        return out


VIDEO_FIT_DEFAULTS = {**GENTLE_STEPS, "init_opacity": 0.3}
"""FitConfig fields whose image-fitting defaults do not suit a video: image fitting's larger steps
move warm-started primitives further each frame, and the video flickers more."""


def frame_maps(frame, num: int, coverage: float) -> dict:
    """The structure maps of one frame (``init.structure_maps``), where they are cheapest.

    On the CPU backend the NumPy maps (``init.host_structure_maps``), which multiply only each
    filter matrix's band: 0.05 s a 512 px frame on 2 cores against 0.12 s for the traceable
    maps, whose first frame also compiles for a second (``benchmarks/RESULTS.md``, stop 25). On
    a GPU the traceable maps' dense products run on the device, and the frame stays there.
    """
    if jax.default_backend() == "cpu":
        return _init.host_structure_maps(np.asarray(frame), num, coverage=coverage)
    return _init.structure_maps(frame, num, coverage=coverage)


@clocked
def fit_video(frames, atlas: Atlas, *, num_primitives: int, steps: int, steps_next: int | None = None,
              key=0, config: FitConfig | dict | None = None, freeze: bool = True, prune: bool = True,
              temporal_weight: float = 0.0, change_threshold: float = 0.05, change_dilate: int = 2,
              warm_start: bool = True, batch: int = 1, background_image=None, progress: bool = False,
              **options) -> VideoFitResult:
    """Fits a video frame by frame with temporally coherent primitives.

    Args:
      frames: ``[T, H, W, 3]`` float in [0, 1] (or uint8), or a list of images.
      atlas: the :class:`Atlas`.
      num_primitives: ``N >= 1`` (the same primitives move through the video).
      steps: optimisation steps for frame 0 (a full :func:`~diffbmp_jax.fit`).
      steps_next: steps for each later frame (default ``steps // 4``).
      key: ``jax.random.key`` or int seed.
      config: :class:`FitConfig` or dict (default ``FitConfig(**VIDEO_FIT_DEFAULTS)``);
        ``**options`` override fields. The same settings serve every frame
        (the schedule restarts each frame).
      freeze: freeze primitives whose footprint touches no changed pixel.
      prune: re-initialise invisible primitives at the start of each frame
        (periodic respawn during a frame follows ``config.prune_every``).
      temporal_weight: weight (>= 0) of the parameter-motion penalty.
      change_threshold: a pixel changed when some channel moved by more than this.
      change_dilate: grow the changed region by this many pixels.
      warm_start: ``False`` fits every frame independently with ``steps``
        steps and the same key (the baseline; ``freeze``/``prune``/
        ``temporal_weight`` are then unused).
      batch: frames fitted together as one ``vmap`` (``K >= 1``); each frame of a
        window starts from the last frame fitted before the window.
      background_image: ``[H, W, 3]`` for ``background="image"``.
      progress: show a tqdm bar over the frames (PSNR of the last one); each
        frame's line goes to the ``diffbmp_jax.tasks.video`` logger (DEBUG).

    Returns:
      :class:`VideoFitResult`.
    """
    t0 = time.perf_counter()
    enable_compilation_cache()
    video = as_frames(frames)
    if not isinstance(atlas, Atlas):
        raise TypeError(f"atlas must be a diffbmp_jax.Atlas, got {type(atlas).__name__}")
    config = resolve_background(resolve_config(config, options, defaults=VIDEO_FIT_DEFAULTS),
                                transparent=False)  # frames are opaque
    n = check_count("num_primitives", num_primitives, 1)
    steps = check_count("steps", steps, 0)
    steps_next = max(1, steps // 4) if steps_next is None else check_count("steps_next", steps_next, 0)
    batch = check_count("batch", batch, 1)
    change_dilate = check_count("change_dilate", change_dilate, 0)
    temporal_weight = nonnegative_number("temporal_weight", temporal_weight)
    change_threshold = nonnegative_number("change_threshold", change_threshold)
    key = as_key(key)
    t_count, h, w = int(video.shape[0]), int(video.shape[1]), int(video.shape[2])
    bg_image = check_background_image(config, background_image, h, w)

    k_first, k_rest = jax.random.split(key)
    fit_kw = dict(num_primitives=n, config=config, progress=False, background_image=background_image)
    clock = current_clock()  # this fit's (clocked); a frame's own fit() keeps its step time apart
    first = fit(video[0], atlas, steps=steps, key=k_first, **fit_kw)
    clock.step_time += first.step_time
    template = first.template
    unit = float(_init.base_scale(h, w, n, config.coverage))
    theta0 = to_theta(first.params, unit)
    atlas_f = Atlas(mask=jnp.asarray(atlas.mask, jnp.float32), rgb=atlas.rgb)
    radius = footprint_radius(atlas)[np.asarray(template)]

    # One scan of a frame's whole run (run_steps): its length is the chunk.
    static = Static(config, h, w, max(steps_next, 1), unit, temporal_weight=float(temporal_weight))
    run_length = np.int32(steps_next)
    eval_static = static

    def data_for(k, free, key_k):
        maps = frame_maps(video[k], n, config.coverage)
        return Data(video[k], None, atlas_f, template, None, bg_image, maps["scale"], maps["angle"], key_k,
                    free=jnp.asarray(free, jnp.float32))

    def finish(k, theta):
        img, p, params = evaluate(eval_static, data_for(k, np.ones(n), key), theta)
        return np.asarray(img), float(p), params

    bar = progress_bar(progress, total=t_count, unit="frame", desc="video")

    def frame_done(k, line, p):
        _LOG.debug(f"frame {k}: {line}")
        bar.update(1)
        bar.set_postfix(psnr=f"{p:.2f}")

    images, psnrs, params_out = [], [], []
    frozen, respawned, times = [0], [0], []
    img, p, prm = finish(0, theta0)
    images.append(img), psnrs.append(p), params_out.append(prm)
    times.append(time.perf_counter() - t0)
    frame_done(0, f"PSNR {p:.2f} dB ({times[-1]:.1f} s)", p)

    if not warm_start:
        for k in range(1, t_count):
            tk = time.perf_counter()
            r = fit(video[k], atlas, steps=steps, key=k_first, **fit_kw)
            clock.step_time += r.step_time
            img, p, prm = finish(k, to_theta(r.params, unit))
            images.append(img), psnrs.append(p), params_out.append(prm)
            frozen.append(0), respawned.append(0), times.append(time.perf_counter() - tk)
            frame_done(k, f"PSNR {p:.2f} dB ({times[-1]:.1f} s)", p)
    else:
        theta_prev, last = theta0, 0
        frame_keys = jax.random.split(k_rest, t_count)
        k = 1
        while k < t_count:
            tk = time.perf_counter()
            window = list(range(k, min(k + batch, t_count)))
            prev_params = to_params(theta_prev, unit)
            starts, datas, n_frozen, n_resp = [], [], [], []
            for j in window:
                dead = _dead(static, theta_prev) if prune else np.zeros(n, bool)
                if freeze:
                    changed = changed_pixels(video[last], video[j], change_threshold, change_dilate)
                    free = touches(changed, prev_params, radius) | dead
                else:
                    free = np.ones(n, bool)
                k_resp, k_loop = jax.random.split(frame_keys[j])
                data = data_for(j, free, k_loop)
                th = theta_prev
                count = 0
                if prune and dead.any():
                    img_prev = evaluate(eval_static, data, theta_prev)[0]
                    th, count = _respawn_now(static, data, theta_prev, img_prev, k_resp)
                    count = int(count)
                starts.append(th), datas.append(data)
                n_frozen.append(int(n - free.sum())), n_resp.append(count)
            with clock.steps():  # compilation in it is subtracted
                if len(window) == 1:
                    results = [run_steps(static, datas[0], starts[0], starts[0], run_length)[0]]
                else:
                    stack = lambda xs: jax.tree_util.tree_map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
                    out = run_steps_batched(static, stack_data(datas), stack(starts), stack(starts), run_length)[0]
                    results = [jax.tree_util.tree_map(lambda a: a[i], out) for i in range(len(window))]
                jax.block_until_ready(results)  # dispatch is asynchronous: time the work itself
            dt = (time.perf_counter() - tk) / len(window)
            for j, th, data, nf, nr in zip(window, results, datas, n_frozen, n_resp):
                img, p, prm = evaluate(eval_static, data, th)
                images.append(np.asarray(img)), psnrs.append(float(p)), params_out.append(prm)
                frozen.append(nf), respawned.append(nr), times.append(dt)
                frame_done(j, f"PSNR {float(p):.2f} dB, {nf} frozen, {nr} respawned ({dt:.2f} s)", float(p))
            theta_prev, last = results[-1], window[-1]
            k = window[-1] + 1

    bar.close()
    frames_out = np.stack(images)
    fl = flicker(frames_out, np.asarray(video)) if t_count > 1 else float("nan")
    return VideoFitResult(params=params_out, template=template, frames=frames_out, psnr=np.asarray(psnrs),
                          flicker=fl, frozen=np.asarray(frozen), respawned=np.asarray(respawned),
                          frame_time=np.asarray(times), wall_time=time.perf_counter() - t0, config=config)
