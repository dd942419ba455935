"""The chunked loop (diffbmp_jax.loop): branch-free steps, periodic work between groups of steps."""

import functools
import math
from typing import NamedTuple

import numpy as np
import pytest
import jax
import jax.numpy as jnp

import diffbmp_jax as db
from diffbmp_jax.fitting.engine import AHEAD, RESPAWN, step as fit_step
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.fitting.config import resolve_config
from diffbmp_jax.fitting.loop import Ahead, Periodic, run_chunk, scan_steps
from fit_scenes import shape_atlas


class Toy(NamedTuple):
    steps: int
    chunk: int
    every: int
    until: int  # periodic work only after steps t with t + 1 < until


def toy_step(static, data, carry, t, steps):
    # carry: (running sum, number of steps taken); loss = t, aux = 0 (a count)
    s, n = carry
    return (s + t * data, n + 1), (t.astype(jnp.float32), jnp.zeros((), jnp.int32))


def toy_periodic(static, data, carry, t, steps):
    s, n = carry
    return (s * 2, n), jnp.asarray(7, jnp.int32) + t


TOY = Periodic(every=lambda st: st.every, due=lambda st, t, steps: t + 1 < st.until, apply=toy_periodic)


def python_loop(static, data, carry, start):
    """What scan_steps must compute, as a plain loop."""
    s, n = carry
    losses, aux = [], []
    for t in range(start, start + static.chunk):
        if t >= static.steps:
            losses.append(np.nan)
            aux.append(0)
            continue
        s, n = s + t * data, n + 1
        losses.append(float(t))
        a = 0
        if static.every and (t + 1) % static.every == 0 and t + 1 < static.until:
            s, a = s * 2, 7 + t
        aux.append(a)
    return (s, n), losses, aux


@functools.partial(jax.jit, static_argnums=(0, 1, 6, 7))
def chunk_of(step, static, data, carry, start, steps, periodic, branch_past_end):
    ts = start + jnp.arange(static.chunk, dtype=jnp.int32)
    return scan_steps(step, static, data, carry, ts, steps, periodic, branch_past_end=branch_past_end)


@pytest.mark.parametrize("branch_past_end", [False, True])
@pytest.mark.parametrize("steps,chunk,every,until", [
    (10, 10, 0, 99),    # no periodic work: one group
    (12, 5, 5, 99),     # periodic at chunk ends; last chunk partly past the end
    (30, 10, 4, 99),    # gcd(10, 4) = 2: groups of 2 steps
    (7, 6, 3, 5),       # `due` stops it; groups past the end are skipped
    (25, 25, 25, 99),   # the fit's defaults: one group, one periodic run per chunk
])
def test_scan_steps_matches_a_python_loop(steps, chunk, every, until, branch_past_end):
    static = Toy(steps, chunk, every, until)
    data = jnp.asarray(3, jnp.int32)
    carry = (jnp.asarray(1, jnp.int32), jnp.asarray(0, jnp.int32))
    want_carry = (1, 0)
    for start in range(0, steps, chunk):
        carry, (loss, aux) = chunk_of(toy_step, static, data, carry, jnp.int32(start), jnp.int32(steps), TOY,
                                      branch_past_end)
        want_carry, want_loss, want_aux = python_loop(static, 3, want_carry, start)
        np.testing.assert_array_equal(np.asarray(loss), np.asarray(want_loss, np.float32))
        np.testing.assert_array_equal(np.asarray(aux), want_aux)
        assert (int(carry[0]), int(carry[1])) == want_carry
    assert int(carry[1]) == steps  # steps past the end changed nothing


def toy_entries(static, data, ts, steps):
    return {"x": ts * 10 + data, "pad": jnp.zeros((ts.shape[0], 3), jnp.int32)}  # 16 bytes an entry


TOY_AHEAD = Ahead(toy_entries, lambda data, x: x["x"])


@pytest.mark.parametrize("branch_past_end", [False, True])
@pytest.mark.parametrize("max_bytes", [16, 32, 50, 1 << 20])
@pytest.mark.parametrize("steps,chunk,every", [(12, 5, 5), (30, 10, 4), (14, 10, 0)])
def test_ahead_gives_each_step_its_entry(steps, chunk, every, max_bytes, branch_past_end):
    """Steps computed ahead in blocks (of 1 or 2 steps or the whole group, as max_bytes allows: the
    largest divisor of the group within it)
    see the entry of their own step index: the loop of a step that reads 10 t + 3 as its data."""
    static = Toy(steps, chunk, every, 99)
    ahead = TOY_AHEAD._replace(max_bytes=max_bytes)
    carry = (jnp.asarray(1, jnp.int32), jnp.asarray(0, jnp.int32))
    s, n = 1, 0
    for start in range(0, steps, chunk):
        ts = start + jnp.arange(chunk, dtype=jnp.int32)
        carry, (loss, aux) = jax.jit(lambda c, ts: scan_steps(toy_step, static, jnp.int32(3), c, ts, jnp.int32(steps),
                                                              TOY, branch_past_end=branch_past_end, ahead=ahead))(
            carry, ts)
        for t in range(start, min(start + chunk, steps)):
            s, n = s + t * (10 * t + 3), n + 1
            if every and (t + 1) % every == 0:
                s *= 2
        np.testing.assert_array_equal(np.asarray(loss), [t if t < steps else np.nan for t in range(start, start + chunk)])
        assert (int(carry[0]), int(carry[1])) == (s, n)


def test_run_chunk_is_scan_steps():
    static = Toy(12, 5, 5, 99)
    args = (jnp.asarray(3, jnp.int32), (jnp.int32(1), jnp.int32(0)), jnp.int32(10), jnp.int32(12))
    got = run_chunk(toy_step, static, *args, TOY)
    want = chunk_of(toy_step, static, *args, TOY, False)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _branches(text: str) -> int:
    return text.count("stablehlo.case") + text.count("stablehlo.if")


def test_no_branch_per_step():
    """On a GPU every lax.cond waits for its predicate on the host; a chunk of
    the fit's defaults (25 steps, respawn every 25) holds exactly one there."""
    args = (toy_step, Toy(100, 25, 25, 99), jnp.asarray(3, jnp.int32), (jnp.int32(0), jnp.int32(0)), jnp.int32(0),
            jnp.int32(100))
    assert _branches(chunk_of.lower(*args, TOY, False).as_text()) == 1
    assert _branches(chunk_of.lower(*args, None, False).as_text()) == 0
    # On the CPU the steps past the end are skipped by a branch (one more).
    assert _branches(chunk_of.lower(*args, TOY, True).as_text()) == 2
    # Periodic every 4 steps in chunks of 10: groups of gcd = 2 steps, each under
    # one branch (skipped past the end) holding the periodic one.
    text = chunk_of.lower(toy_step, Toy(100, 10, 4, 99), *args[2:], TOY, False).as_text()
    assert _branches(text) == 2 and math.gcd(10, 4) == 2


def test_fit_chunk_has_one_branch():
    """The real fitting step: no branch inside; one for the respawn per chunk."""
    target = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    cfg = resolve_config(None, {"log_every": 5, "prune_every": 5, "backend": "reference"})
    static, data, carry = prepare(target, shape_atlas(8), num_primitives=4, steps=10, key=jax.random.key(0),
                                   config=cfg)
    text = chunk_of.lower(fit_step, static, data, carry, jnp.int32(0), jnp.int32(10), RESPAWN, False).as_text()
    assert _branches(text) == 1
    with_ahead = jax.jit(lambda d, c: scan_steps(fit_step, static, d, c, jnp.arange(5, dtype=jnp.int32), jnp.int32(10),
                                                 RESPAWN, branch_past_end=False, ahead=AHEAD))
    assert _branches(with_ahead.lower(data, carry).as_text()) == 1  # the atlases computed ahead add none


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("colours", [False, True])
def test_step_atlases_are_each_steps_own(colours, antialias):
    """canvas.step_atlases, the atlases of a block of steps in one batched pass: entry i is what
    step ts[i] filters for itself (its annealed blur, its levels), also past the annealing's end."""
    from diffbmp_jax.fitting.canvas import step_atlases
    from diffbmp_jax.rendering.blur import annealed_blur
    from diffbmp_jax.rendering.mipmap import prefilter
    rng = np.random.default_rng(4)
    atlas = db.Atlas.from_arrays(rng.random((3, 16, 16)).astype(np.float32), rng.random((3, 16, 16, 3)))
    cfg = resolve_config(None, {"antialias": antialias, "color_blend": 0.5 if colours else 0.0, "blur_sigma": 1.5})
    ts = jnp.asarray([0, 5, 11, 19], jnp.int32)
    stacked = jax.jit(lambda ts: step_atlases(cfg, atlas, ts, jnp.int32(20)))(ts)
    for i, t in enumerate(np.asarray(ts)):
        own = prefilter(atlas.mask, atlas.rgb if colours else None, annealed_blur(t, 20, 1.5, cfg.blur_anneal, 16),
                        antialias)
        for a, b in zip(jax.tree.leaves(own), jax.tree.leaves(stacked)):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), atol=1e-6)
    assert (stacked.rgb is None) != colours
    assert not np.allclose(stacked.mask[0], stacked.mask[3], atol=1e-3)  # the blur anneals


@pytest.mark.parametrize("colours", [False, True])
def test_fit_chunk_with_atlases_ahead_matches_filtering_per_step(colours):
    """The fit's chunks with each step's filtered atlas computed ahead (engine.AHEAD) fit as the
    chunks whose steps filter it themselves: the first loss to float rounding, then the same
    curve (Adam's normalised first steps carry rounding-sized gradient differences a little
    further), the same respawns."""
    rng = np.random.default_rng(3)
    target = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    atlas = db.Atlas.from_arrays(rng.random((2, 16, 16)).astype(np.float32), rng.random((2, 16, 16, 3)))
    cfg = resolve_config(None, {"log_every": 10, "prune_every": 5, "backend": "reference", "antialias": True,
                                "color_blend": 0.5 if colours else 0.0, "blur_sigma": 1.5})
    static, data, carry = prepare(target, atlas, num_primitives=8, steps=20, key=jax.random.key(0), config=cfg)
    outs = []
    for ahead in (None, AHEAD):
        c, losses, counts = carry, [], []
        for start in (0, 10):
            c, (loss, count) = run_chunk(fit_step, static, data, c, jnp.int32(start), jnp.int32(20), RESPAWN, True,
                                         ahead)
            losses.append(np.asarray(loss))
            counts.append(np.asarray(count))
        outs.append((np.concatenate(losses), np.concatenate(counts)))
    (l0, n0), (l1, n1) = outs
    np.testing.assert_allclose(l1[0], l0[0], rtol=1e-6)
    np.testing.assert_allclose(l1, l0, rtol=5e-3)
    assert l1[-1] < 0.9 * l1[0]  # it fits
    np.testing.assert_array_equal(n1, n0)


def test_respawn_still_runs_in_fit():
    """Respawn moved out of the step: fit still reports it, at the chunk ends."""
    target = np.zeros((24, 24, 3), np.float32)
    target[:, 12:] = 1.0
    # Opacity pruning threshold above the initial opacity: every primitive is
    # invisible at the first respawn.
    res = db.fit(target, shape_atlas(8), num_primitives=6, steps=8, key=0, progress=False, backend="reference",
                 log_every=4, prune_every=4, prune_until=1.0, prune_opacity=0.99)
    assert res.history["step"] == [0, 4, 8]
    assert res.history["respawned"][1] == 6


def test_fit_steps_past_the_end_same_both_ways(on_cpu):
    """The real step: discarding steps past the end (GPU) equals branching around them (CPU)."""
    target = np.random.default_rng(1).uniform(size=(16, 16, 3)).astype(np.float32)
    cfg = resolve_config(None, {"log_every": 5, "prune_every": 5, "prune_until": 1.0, "backend": "cpu"})
    static, data, carry = prepare(target, shape_atlas(8), num_primitives=6, steps=7, key=jax.random.key(0),
                                   config=cfg)
    outs = []
    for branch in (False, True):
        c = carry
        losses = []
        for start in (0, 5):  # the second chunk runs steps 5..9 of 7
            c, (loss, count) = chunk_of(fit_step, static, data, c, jnp.int32(start), jnp.int32(7), RESPAWN, branch)
            losses.append(np.asarray(loss))
        outs.append((c, np.concatenate(losses)))
    (c0, l0), (c1, l1) = outs
    np.testing.assert_array_equal(l0, l1)
    assert np.all(np.isfinite(l0[:7])) and np.all(np.isnan(l0[7:]))
    for a, b in zip(jax.tree.leaves(c0), jax.tree.leaves(c1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_compiled_chunk_for_any_step_count():
    """The run's length is traced: fits of 3, 8 and 30 steps (chunks of 5) share two
    compiled chunks, the full one and the masked one for a last, partial chunk;
    a fit of 0 steps compiles none."""
    target = np.random.default_rng(2).uniform(size=(12, 12, 3)).astype(np.float32)
    opts = dict(num_primitives=3, key=0, progress=False, backend="reference", log_every=5, prune_every=5,
                lr_schedule="cosine")
    before = run_chunk._cache_size()
    results = {steps: db.fit(target, shape_atlas(4), steps=steps, **opts) for steps in (3, 8, 30)}
    assert run_chunk._cache_size() == before + 2
    db.fit(target, shape_atlas(4), steps=0, **opts)
    db.fit(target, shape_atlas(4), steps=15, **opts)  # full chunks only
    assert run_chunk._cache_size() == before + 2
    assert results[3].history["step"] == [0, 3] and results[30].history["step"][-1] == 30


@pytest.mark.parametrize("kind", ["cosine", "linear", "exponential", "constant"])
def test_schedule_with_a_traced_length_matches_optax(kind):
    """lr_multiplier takes the fit's length as a traced scalar and decays like Optax's schedules."""
    import optax
    from diffbmp_jax.fitting.schedules import lr_multiplier
    want = {"cosine": optax.cosine_decay_schedule(1.0, 40, alpha=0.1),
            "linear": optax.linear_schedule(1.0, 0.1, 40),
            "exponential": optax.exponential_decay(1.0, 40, 0.1),
            "constant": optax.constant_schedule(1.0)}[kind]
    counts = jnp.arange(41)
    got = jax.jit(lambda n: jax.vmap(lr_multiplier(kind, n, 0.1))(counts))(jnp.int32(40))
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.vmap(want)(counts)), rtol=1e-6, atol=1e-7)
    assert abs(float(got[-1]) - (1.0 if kind == "constant" else 0.1)) < 1e-6


@pytest.mark.parametrize("branch_past_end", [False, True])
def test_full_chunk_skips_the_masks(branch_past_end):
    """A chunk that ends by the run's end gives the same results without the past-end masks or branches."""
    static = Toy(30, 10, 4, 99)
    data = jnp.asarray(3, jnp.int32)
    carry = (jnp.int32(1), jnp.int32(0))
    full = jax.jit(lambda c, start: scan_steps(toy_step, static, data, c, start + jnp.arange(10, dtype=jnp.int32),
                                               jnp.int32(30), TOY, past_end=False))
    for start in (0, 10, 20):
        want = chunk_of(toy_step, static, data, carry, jnp.int32(start), jnp.int32(30), TOY, branch_past_end)
        got = full(carry, jnp.int32(start))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        carry = got[0]
    # Only the periodic work's branch is left (one per group of gcd(10, 4) = 2 steps, in one loop body),
    # and no carry is selected per step.
    def text(past_end):
        return jax.jit(lambda c: scan_steps(toy_step, static, data, c, jnp.arange(10, dtype=jnp.int32),
                                            jnp.int32(30), TOY, past_end=past_end, branch_past_end=False)
                       ).lower(carry).as_text()
    full_text, masked_text = text(False), text(True)
    assert _branches(full_text) == 1 and _branches(masked_text) == 2
    assert full_text.count("stablehlo.select") < masked_text.count("stablehlo.select")


def test_compile_beside_leaves_the_program_compiled_and_swallows_errors():
    """compile_beside compiles on its thread; the later call compiles nothing; a failure there is dropped."""
    from diffbmp_jax.fitting.loop import compile_beside
    compiled = []
    jax.monitoring.register_event_time_span_listener(
        lambda event, *_, **kw: compiled.append(kw.get("fun_name")) if event.endswith("backend_compile_duration")
        else None)

    @jax.jit
    def triple_sum(x):
        return jnp.sum(3.0 * x)

    x = jnp.arange(7.0)
    compile_beside(triple_sum, x).join()
    assert "jit(triple_sum)" in compiled
    compiled.clear()
    assert float(triple_sum(x)) == 63.0 and "jit(triple_sum)" not in compiled
    compile_beside(triple_sum, "not an array").join()  # raises on its thread, silently


def test_progress_bar_off_creates_no_tqdm():
    """With the bar off nothing of tqdm is created (its class lock imports multiprocessing);
    a fit without progress still runs and returns its history."""
    import subprocess
    import sys
    script = ("import sys\n"
              "import numpy as np, diffbmp_jax as db\n"
              "from diffbmp_jax.fitting.loop import progress_bar\n"
              "bar = progress_bar(False, total=3)\n"
              "bar.update(1); bar.set_postfix(loss='1'); bar.reset(total=3); bar.set_description('x'); bar.close()\n"
              "atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))\n"
              "r = db.fit(np.full((8, 8, 3), 0.3, np.float32), atlas, num_primitives=3, steps=2, key=0,\n"
              "           progress=False, log_every=1)\n"
              "print('STEPS', r.history['step'], 'TQDM', [m for m in ('tqdm', 'multiprocessing') if m in sys.modules])\n")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]  # the checkout's source, as the suite tests it
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu", "DIFFBMP_JAX_CACHE": "0"})
    assert "STEPS [0, 1, 2] TQDM []" in out.stdout, out.stdout + out.stderr[-2000:]


def test_packed_carry_steps_as_the_fields_do():
    """engine.PACKED (theta and Adam's moments as one [N, 8] array each between chunk ends) gives the
    steps of the per-field carry: pack/unpack are inverses, and a chunk with respawn in either form
    ends with the same parameters, losses and respawns (to float rounding)."""
    from diffbmp_jax.fitting.engine import PACKED
    from diffbmp_jax.fitting.optim import pack, unpack
    rng = np.random.default_rng(5)
    target = rng.uniform(size=(24, 24, 3)).astype(np.float32)
    cfg = resolve_config(None, {"log_every": 10, "prune_every": 5, "backend": "reference"})
    static, data, carry = prepare(target, shape_atlas(8), num_primitives=8, steps=10, key=jax.random.key(0),
                                   config=cfg)
    theta = carry[0]
    for a, b in zip(jax.tree.leaves(unpack(pack(theta))), jax.tree.leaves(theta)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert pack(theta).shape == (8, 8)
    with pytest.raises(TypeError, match="pack: t must be a Theta"):
        pack(tuple(theta))
    with pytest.raises(ValueError, match=r"unpack: p must have shape \[\.\.\., N, 8\]"):
        unpack(jnp.zeros((8, 7)))
    outs = [run_chunk(fit_step, static, data, carry, jnp.int32(0), jnp.int32(10), RESPAWN, True, AHEAD, form)
            for form in (None, PACKED)]
    (c0, (l0, n0)), (c1, (l1, n1)) = outs
    assert isinstance(c1[0], type(theta))  # the caller gets its own form back
    np.testing.assert_allclose(np.asarray(l1), np.asarray(l0), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n0))
    for a, b in zip(jax.tree.leaves(c1), jax.tree.leaves(c0)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
