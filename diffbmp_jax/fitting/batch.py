"""Many independent fits at once: a batch of targets, one compiled loop, many devices.

:func:`fit_batch` runs ``B`` fits side by side. Scene ``b`` is exactly the
:func:`diffbmp_jax.fit` of ``targets[b]`` with key ``jax.random.fold_in(key, b)``
(same initialisation, same steps), only batched:

* one step of all scenes is one ``jax.vmap`` of the single-scene step, so the
  FFI kernels render a device's whole share of scenes in **one launch** per
  forward and per backward (:mod:`diffbmp_jax.rendering.kernels`);
* the scenes are sharded over a 1-D device mesh (axis ``"scenes"``,
  :func:`scene_mesh`) with ``jax.shard_map``: each device runs its own share
  and nothing crosses devices inside a step; ``log_every`` steps run as one
  compiled ``lax.scan``, so the host only wakes between chunks to move the
  progress bar (and not at all, apart from dispatch, with ``progress=False``);
  the steps have no branches, and the respawn waits on the host once per
  chunk with the defaults (:mod:`diffbmp_jax.fitting.loop`);
* ``B`` is padded to a multiple of the device count with copies of the last
  scene, which are dropped from the result.

Multi-host: start every process with ``jax.distributed.initialize()`` (see
the README), then call :func:`fit_batch` with the same arguments on every
process. ``jax.devices()`` then lists the devices of all hosts, the mesh spans
them, each process places only the scenes of its own devices, and the result
is gathered on every process at the end.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Sequence

import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from diffbmp_jax.rendering.compiling import jit
from diffbmp_jax.scene.atlas import Atlas
from diffbmp_jax.fitting.cache import enable_compilation_cache
from diffbmp_jax.fitting.canvas import resolve_background
from diffbmp_jax.fitting.config import FitConfig, resolve_config
from diffbmp_jax.fitting.engine import AHEAD, PACKED, Data, Static, evaluate, periodic, step
from diffbmp_jax.fitting.image import FitResult, prepare
from diffbmp_jax.fitting.loop import run_chunks, scan_steps
from diffbmp_jax.fitting.metrics import score_ssim
from diffbmp_jax.fitting.timing import clocked
from diffbmp_jax.scene.primitives import Primitives
from diffbmp_jax.validation import as_key, split_alpha

__all__ = ["fit_batch", "BatchFitResult", "scene_mesh", "SCENE_AXIS"]

SCENE_AXIS = "scenes"


@dataclasses.dataclass
class BatchFitResult:
    """What :func:`fit_batch` returns (host NumPy arrays, leading axis ``B``).

    Attributes:
      params: :class:`Primitives` with fields ``[B, N, ...]`` (pixel units).
      template: ``[B, N]`` int32 bitmap ids.
      images: ``[B, H, W, 3]`` final renders (sharp atlas, ``output_background``).
      psnr, ssim: ``[B]`` final quality per scene (dB / unitless).
      history: lists over logged steps -- step 0 and the end of every chunk
        of ``log_every`` steps with ``progress`` or a ``callback``, only the last step without
        (no read-back while the chunks run): ``step``, ``loss`` (per scene,
        the training loss of that step; ``None`` at step 0), ``psnr`` (per
        scene, dB), ``time`` (seconds since the start, compilation included),
        ``respawned`` (per scene, primitives re-initialised since the
        previous entry), ``reassigned`` (always 0: not supported here).
      wall_time: seconds for the whole batch, compilation included.
      devices: number of devices the scenes were sharded over.
      config: the :class:`FitConfig` used.
      compile_time: seconds spent tracing, lowering and compiling (or loading
        compiled programs from the persistent cache).
      step_time: seconds spent running the steps (compilation excluded).
    """

    params: Primitives
    template: np.ndarray
    images: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray
    history: dict
    wall_time: float
    devices: int
    config: FitConfig
    compile_time: float = 0.0
    step_time: float = 0.0

    def __len__(self) -> int:
        return int(self.template.shape[0])

    def scene(self, b: int) -> FitResult:
        """Scene ``b`` as a :class:`~diffbmp_jax.FitResult` (its history holds that scene's values)."""
        if not -len(self) <= b < len(self):
            raise IndexError(f"scene index {b} out of range for a batch of {len(self)}")
        history = {"step": list(self.history["step"]), "time": list(self.history["time"]),
                   "loss": [None if v is None else v[b] for v in self.history["loss"]]}
        for name in ("psnr", "respawned", "reassigned"):
            history[name] = [v[b] for v in self.history[name]]
        return FitResult(params=jax.tree.map(lambda x: x[b], self.params), template=self.template[b],
                         image=self.images[b], history=history, psnr=float(self.psnr[b]),
                         ssim=float(self.ssim[b]), wall_time=self.wall_time, config=self.config)


def scene_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 1-D mesh (axis :data:`SCENE_AXIS`) that :func:`fit_batch` shards scenes over.

    ``devices`` defaults to ``jax.devices()`` (every device of every process).
    """
    if isinstance(devices, (str, jax.Device)):
        devices = [devices]
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    for k, d in enumerate(devices):
        if not isinstance(d, jax.Device):
            raise TypeError(f"devices must be jax.Device objects (e.g. jax.devices()[:2]), got {d!r} at devices[{k}]")
    if len(set(devices)) != len(devices):
        raise ValueError("devices: each device may appear only once")
    return Mesh(np.array(devices), (SCENE_AXIS,))


# --------------------------------------------------------------------------- compiled parts

# vmap axes of the per-scene data (the atlas is shared, passed separately).
_SCENE_AXES = Data(target=0, target_alpha=0, atlas=None, template=0, weight=0, bg_image=0, guide_scale=0, guide_angle=0,
                   key=0)


def _local(scenes: Data, atlas: Atlas) -> Data:
    """One device's scenes, with typed keys and the shared atlas put back."""
    return scenes._replace(atlas=atlas, key=jax.random.wrap_key_data(scenes.key))


@functools.partial(jit, static_argnums=(0, 1, 7))
def run_batch_chunk(static: Static, mesh: Mesh, scenes: Data, atlas: Atlas, carry, start, steps, full: bool = False):
    """``static.chunk`` steps of every scene from step ``start`` of a run of ``steps``
    (int32 scalars; ``full``: the chunk ends by ``steps``, nothing masked):
    ``(carry, (loss [chunk, B], respawned [chunk, B]))``."""

    def local(scenes, atlas, carry, start, steps):
        # The step and the respawn of fit, over the scene axis; the step index
        # and the run's length (and so every branch of the loop) are shared by all scenes.
        def over_scenes(fn):
            batched = jax.vmap(lambda d, c, t, n: fn(static, d, c, t, n), in_axes=(_SCENE_AXES, 0, None, None))
            return lambda _, d, c, t, n: batched(d, c, t, n)

        spawn = periodic(static)
        if spawn is not None:
            spawn = spawn._replace(apply=over_scenes(spawn.apply))
        ts = start + jnp.arange(static.chunk, dtype=jnp.int32)
        return scan_steps(over_scenes(step), static, _local(scenes, atlas), carry, ts, steps, spawn,
                          past_end=not full, ahead=AHEAD, form=PACKED)

    # check_vma=False: nothing here communicates across devices, and the FFI
    # calls inside have no rule for shard_map's replication checker.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(SCENE_AXIS), P(), P(SCENE_AXIS), P(), P()),
                         out_specs=(P(SCENE_AXIS), P(None, SCENE_AXIS)), check_vma=False)(
        scenes, atlas, carry, start, jnp.asarray(steps, jnp.int32))


@functools.partial(jit, static_argnums=(0, 1))
def _evaluate_all(static: Static, mesh: Mesh, scenes: Data, atlas: Atlas, theta):
    """Final-style renders ``[B, H, W, 3]``, PSNR ``[B]`` and params of every scene."""

    def local(scenes, atlas, theta):
        data = _local(scenes, atlas)
        return jax.vmap(lambda d, th: evaluate(static, d, th), in_axes=(_SCENE_AXES, 0))(data, theta)

    return jax.shard_map(local, mesh=mesh, in_specs=(P(SCENE_AXIS), P(), P(SCENE_AXIS)),
                         out_specs=P(SCENE_AXIS), check_vma=False)(scenes, atlas, theta)


# --------------------------------------------------------------------------- host side

def _place(tree, sharding: NamedSharding):
    """Global arrays from host arrays that every process holds in full.

    Each process only transfers the slices of its own devices, so the same
    call works on one host and on many.
    """
    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])
    return jax.tree.map(put, tree)


def _to_host(tree):
    """NumPy copies of (possibly multi-host) global arrays, on every process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, tree)


def _stack(trees):
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _per_scene(name: str, value, count: int) -> list:
    """``value`` as ``count`` per-scene entries: None, or a sequence/array with leading axis ``count``."""
    if value is None:
        return [None] * count
    if len(value) != count:
        raise ValueError(f"{name} must have one entry per target ({count}), got {len(value)}")
    return list(value)


def _as_targets(targets) -> tuple[list, bool]:
    """The validated targets (``[H, W, 3]``, or ``[H, W, 4]`` where transparent) and whether any is transparent."""
    if isinstance(targets, (np.ndarray, jax.Array)):
        if targets.ndim != 4:
            raise ValueError(f"targets must have shape (B, H, W, 3), got {tuple(targets.shape)}")
        items = list(targets)
    else:
        items = list(targets)
    if not items:
        raise ValueError("targets is empty: fit_batch needs at least one target")
    split = [split_alpha(t) for t in items]
    items = [rgb if a is None else jnp.concatenate([rgb, a[..., None]], -1) for rgb, a in split]
    shape = items[0].shape[:2]
    for b, t in enumerate(items):
        if t.shape[:2] != shape:
            raise ValueError(f"targets must all have one shape: targets[0] is {tuple(items[0].shape)}, "
                             f"targets[{b}] is {tuple(t.shape)}")
    return items, any(a is not None for _, a in split)


def host_batch(items, atlas, *, num_primitives, steps, key, config, weights, backgrounds, inits,
                multiple: int = 1):
    """Every scene's start (:func:`diffbmp_jax.fitting.image.prepare`), stacked on the host.

    Returns ``(static, scenes, atlas, carry)``: ``scenes`` the per-scene
    :class:`~diffbmp_jax.fitting.engine.Data` (atlas None, raw key data) and ``carry`` with leading axis
    ``B`` padded up to a multiple of ``multiple`` with copies of the last scene.
    ``config`` has its background resolved already (one for every scene).
    """
    count = len(items)
    prepared = [prepare(items[b], atlas, num_primitives=num_primitives, steps=steps,
                        key=jax.random.fold_in(key, b), config=config, weight_mask=weights[b],
                        background_image=backgrounds[b], init_params=inits[b]) for b in range(count)]
    static, first, _ = prepared[0]
    prepared += [prepared[-1]] * (math.ceil(count / multiple) * multiple - count)
    if any(d.target_alpha is not None for _, d, _ in prepared):  # one structure for every scene
        ones = jnp.ones(first.target.shape[:2] + (1,), jnp.float32)
        prepared = [(s, d if d.target_alpha is not None else d._replace(target_alpha=ones), c)
                    for s, d, c in prepared]
    scenes = _stack([d._replace(atlas=None, key=jax.random.key_data(d.key)) for _, d, _ in prepared])
    carry = _stack([c for _, _, c in prepared])
    return static, scenes, first.atlas, carry


def place_batch(mesh: Mesh, scenes, atlas: Atlas, carry):
    """Scenes and carry split over the mesh, the atlas replicated on every device."""
    split = NamedSharding(mesh, P(SCENE_AXIS))
    return _place(scenes, split), _place(atlas, NamedSharding(mesh, P())), _place(carry, split)


@clocked
def fit_batch(targets, atlas: Atlas, *, num_primitives: int, steps: int, key,
              config: FitConfig | dict | None = None, weight_masks=None, background_images=None,
              init_params: Sequence[tuple] | None = None, devices: Sequence[jax.Device] | None = None,
              progress: bool = True, callback: Callable | None = None, **options) -> BatchFitResult:
    """Fits ``num_primitives`` stamps to each of ``B`` targets, as one batched, sharded loop.

    Args:
      targets: ``[B, H, W, 3]`` images in [0, 1] (or a sequence of ``B`` images
        of one size; uint8, grey and RGBA accepted).
      atlas: the :class:`Atlas` shared by every scene.
      num_primitives, steps, config, **options: as :func:`diffbmp_jax.fit`
        (``reassign_every`` is not supported here).
      key: ``jax.random.key`` or int seed; scene ``b`` uses ``fold_in(key, b)``.
      weight_masks, background_images: optional, one per target (see
        :func:`diffbmp_jax.fit`).
      init_params: optional, one ``(Primitives, template)`` per target.
      devices: devices to shard the scenes over; default ``jax.devices()``.
      progress: show a tqdm bar (mean loss and mean PSNR over the scenes).
      callback: called as ``callback(step, params, images, metrics)`` at step 0
        and after every chunk, like :func:`diffbmp_jax.fit`'s, with every
        scene at once: ``params`` with leading axis ``B``, ``images``
        ``[B, H, W, 3]`` (NumPy), ``metrics`` a dict of per-scene lists
        ``loss`` (None at step 0) and ``psnr``. Like ``progress``, it makes the
        host read results back after every chunk.

    Returns:
      :class:`BatchFitResult`; ``result.scene(b)`` is scene ``b`` as a :class:`FitResult`.
    """
    t0 = time.perf_counter()
    enable_compilation_cache()
    config = resolve_config(config, options)
    if config.reassign_every:
        raise ValueError("fit_batch does not support reassign_every (a host-side step); "
                         "use fit() for template re-assignment")
    items, transparent = _as_targets(targets)
    # One background for the batch: noise as soon as one target has transparent pixels.
    config = resolve_background(config, transparent)
    count = len(items)
    key = as_key(key)
    weights = _per_scene("weight_masks", weight_masks, count)
    backgrounds = _per_scene("background_images", background_images, count)
    inits = _per_scene("init_params", init_params, count)
    mesh = scene_mesh(devices)
    shards = mesh.devices.size

    static, scenes, shared_atlas, carry = host_batch(
        items, atlas, num_primitives=num_primitives, steps=steps, key=key, config=config, weights=weights,
        backgrounds=backgrounds, inits=inits, multiple=shards)
    scenes, shared_atlas, carry = place_batch(mesh, scenes, shared_atlas, carry)

    history = {"step": [], "loss": [], "psnr": [], "time": [], "respawned": [], "reassigned": []}

    def log(step, carry, loss, counts):  # loss [B] (NaN at step 0); counts: [chunk, B] per chunk
        images, psnr, params = _evaluate_all(static, mesh, scenes, shared_atlas, carry[0])
        psnr = _to_host(psnr)[:count]
        history["step"].append(step)
        history["loss"].append(None if step == 0 else [float(v) for v in np.asarray(loss)[:count]])
        history["psnr"].append([float(v) for v in psnr])
        history["time"].append(time.perf_counter() - t0)
        respawned = sum((_to_host(c).sum(0)[:count] for c in counts), np.zeros(count, np.int64))
        history["respawned"].append([int(v) for v in respawned])
        history["reassigned"].append([0] * count)
        if callback is not None:
            host_images, host_params = _to_host((images, params))
            callback(step, jax.tree.map(lambda x: x[:count], host_params), host_images[:count],
                     {"loss": history["loss"][-1], "psnr": history["psnr"][-1]})
        return (images, params, psnr), {"psnr": f"{np.mean(psnr):.2f}"}

    steps = int(steps)  # checked by prepare

    def run(scenes, carry, start, steps, full):
        return run_batch_chunk(static, mesh, scenes, shared_atlas, carry, start, steps, full)

    # Without a progress bar or callback, the chunks are only dispatched and
    # the host reads results back once, at the end.
    _, final = run_chunks(run, scenes, carry, steps=steps, chunk=static.chunk, log=log, progress=progress,
                          desc=f"fit_batch[{count}]", watch=progress or callback is not None, to_host=_to_host)

    images, params, psnr = final
    images, params = _to_host((images, params))
    images = images[:count]
    params = jax.tree.map(lambda x: x[:count], params)
    template = _to_host(scenes.template)[:count]
    targets_np = _to_host(scenes.target)[:count]
    ssim = np.array([score_ssim(i, t) for i, t in zip(images, targets_np)], np.float64)
    return BatchFitResult(params=params, template=template, images=images,
                          psnr=np.array(history["psnr"][-1]), ssim=ssim, history=history,
                          wall_time=time.perf_counter() - t0, devices=shards, config=config)
