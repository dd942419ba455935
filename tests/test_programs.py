"""Compiled programs stored by their arguments (diffbmp_jax.rendering.programs): keys, loads, damaged entries."""

import pickle

import numpy as np
import jax
import pytest

import diffbmp_jax as db
from diffbmp_jax.fitting.config import FitConfig, resolve_config
from diffbmp_jax.fitting.engine import AHEAD, PIXEL_LOSS, RESPAWN, Static, evaluate, step as fit_step
from diffbmp_jax.fitting.image import prepare
from diffbmp_jax.fitting.loop import run_chunk
from diffbmp_jax.fitting.optim import make_optimizer
from diffbmp_jax.rendering import programs
from diffbmp_jax.rendering.compiling import jit


def test_descriptions_are_stable_and_tell_settings_apart():
    a, b = FitConfig(), FitConfig(lr_xy=FitConfig().lr_xy * (1 + 1e-12))
    assert programs.describe(a) == programs.describe(FitConfig())
    assert programs.describe(a) != programs.describe(b)  # floats exactly, not rounded
    static = Static(a, 8, 8, 5, 1.5)
    assert "PixelLoss" in programs.describe(static) and "diffbmp_jax.fitting.engine.Static" in programs.describe(static)
    assert programs.describe(evaluate) != programs.describe(db.render)
    assert programs.describe((1, 2.5, "x", None, True)) == programs.describe((1, 2.5, "x", None, True))

    class Local:
        pass

    for unstable in (lambda x: x, Local(), Local, object(), Static(a, 8, 8, 5, 1.5, objective=Local())):
        with pytest.raises(programs.Unstable):
            programs.describe(unstable)


def test_objectives_of_other_classes_are_other_programs():
    """Static settings compare by the objective's class too: a NamedTuple objective equal in value to
    PIXEL_LOSS (here a subclass scoring otherwise) is not served PIXEL_LOSS's compiled program."""
    static, data, theta = _setup()

    class Halved(type(PIXEL_LOSS)):
        def score(self, static, data, image):
            return 0.5 * super().score(static, data, image)

    other = static._replace(objective=Halved())
    assert tuple(other) == tuple(static) and other != static and hash(other) != hash(static)
    assert static == static._replace() and hash(static) == hash(static._replace())
    plain = float(evaluate(static, data, theta)[1])
    halved = float(evaluate(other, data, theta)[1])
    np.testing.assert_allclose(halved, 0.5 * plain, rtol=1e-6)


def test_use_folder_names_a_bad_argument():
    with pytest.raises(TypeError, match="folder must be a path"):
        programs.use_folder(3)
    assert programs.current_folder() is None


def test_persist_is_for_the_package_functions_only():
    with pytest.raises(ValueError, match="package's own functions"):
        jit(lambda x: x, persist=True)
    with pytest.raises(ValueError, match="static_argnums only"):
        jit(evaluate.__wrapped__, persist=True, static_argnames=("static",))


def _setup(n=6, size=12):
    atlas = db.load_stamps(["text:AB"], size=8)
    target = np.random.default_rng(0).uniform(size=(size, size, 3)).astype(np.float32)
    static, data, carry = prepare(target, atlas, num_primitives=n, steps=5, key=jax.random.key(0),
                                  config=resolve_config(None, {}))
    return static, data, carry[0]


def _traced(fn):
    """Runs ``fn()`` and returns (its result, the function names JAX traced meanwhile; a new
    process's view only for functions not traced before in this one)."""
    names = []

    def on_span(event, start, end, **kw):
        if event == "/jax/core/compile/jaxpr_trace_duration":
            names.append(kw.get("fun_name", "?"))

    jax.monitoring.register_event_time_span_listener(on_span)
    try:
        out = jax.block_until_ready(fn())
    finally:
        jax.monitoring.unregister_event_time_span_listener(on_span)
    return out, names


def _loads(fn):
    """Runs ``fn()``; returns (its result, the number of stored programs loaded meanwhile)."""
    loads = []

    def on_load(event, start, end, **kw):
        if event == programs.LOAD_EVENT:
            loads.append(end - start)

    jax.monitoring.register_event_time_span_listener(on_load)
    try:
        out = jax.block_until_ready(fn())
    finally:
        jax.monitoring.unregister_event_time_span_listener(on_load)
    return out, len(loads)


def test_a_stored_program_loads_without_tracing_and_gives_the_same_result(tmp_path, on_cpu):
    static, data, theta = _setup()
    expected = jax.block_until_ready(evaluate(static, data, theta))  # no folder: a plain jax.jit call
    store = evaluate.persisted
    programs.use_folder(tmp_path)
    try:
        store.programs.clear()
        first = jax.block_until_ready(evaluate(static, data, theta))
        entries = list(tmp_path.glob("evaluate-*.bin"))
        assert len(entries) == 1
        store.programs.clear()  # as in a new process
        (again, traced), loads = _loads(lambda: _traced(lambda: evaluate(static, data, theta)))
        assert "evaluate" not in traced and loads == 1
        assert len(store) == 1
        for out in (first, again):
            for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        # Another shape is another program.
        s2, d2, t2 = _setup(n=7)
        jax.block_until_ready(evaluate(s2, d2, t2))
        assert len(list(tmp_path.glob("evaluate-*.bin"))) == 2
    finally:
        programs.use_folder(None)
        store.programs.clear()


def test_a_call_leaving_trailing_arguments_at_their_defaults_is_the_spelled_out_call(tmp_path, on_cpu):
    """run_chunk's last static arguments have defaults: a call leaving them out (as a single
    scene's fit does with ``form``) is stored and keyed as the call that passes them."""
    static, data, theta = _setup()
    carry = (theta, make_optimizer(static.cfg, 5).init(theta))
    short = (fit_step, static, data, carry, np.int32(0), np.int32(5), RESPAWN, True, AHEAD)
    expected = jax.block_until_ready(run_chunk(*short))  # no folder: a plain jax.jit call
    store = run_chunk.persisted
    programs.use_folder(tmp_path)
    try:
        store.programs.clear()
        stored = jax.block_until_ready(run_chunk(*short))
        assert len(list(tmp_path.glob("run_chunk-*.bin"))) == 1 and len(store) == 1
        store.programs.clear()  # as in a new process
        spelled, loads = _loads(lambda: run_chunk(*short, None))
        assert loads == 1 and len(list(tmp_path.glob("run_chunk-*.bin"))) == 1
        for out in (stored, spelled):
            for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(expected)):
                np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    finally:
        programs.use_folder(None)
        store.programs.clear()


def test_a_damaged_entry_is_compiled_again_and_rewritten(tmp_path, on_cpu):
    static, data, theta = _setup()
    expected = jax.block_until_ready(evaluate(static, data, theta))
    store = evaluate.persisted
    programs.use_folder(tmp_path)
    try:
        store.programs.clear()
        jax.block_until_ready(evaluate(static, data, theta))
        (entry,) = tmp_path.glob("evaluate-*.bin")
        for damage in (b"not a program", pickle.dumps((b"\x00" * 64, None, None))):
            entry.write_bytes(damage)
            store.programs.clear()
            out = jax.block_until_ready(evaluate(static, data, theta))
            np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(expected[0]))
            payload, in_tree, out_tree = pickle.loads(entry.read_bytes())  # rewritten whole
            assert isinstance(payload, bytes) and len(payload) > 1000
        assert sorted(p.name for p in tmp_path.iterdir()) == [entry.name]  # no half-written entry left behind
    finally:
        programs.use_folder(None)
        store.programs.clear()


def test_calls_without_a_stable_description_are_ordinary_jit_calls(tmp_path, on_cpu):
    static, data, theta = _setup()

    class Scored(type(PIXEL_LOSS)):  # defined here: no description the same in every process
        pass

    odd = static._replace(objective=Scored())
    programs.use_folder(tmp_path)
    try:
        out = jax.block_until_ready(evaluate(odd, data, theta))
        assert not list(tmp_path.iterdir())
        np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(evaluate(static, data, theta)[0]))
    finally:
        programs.use_folder(None)
        evaluate.persisted.programs.clear()


def test_a_folder_that_cannot_be_written_only_skips_storing(tmp_path):
    static, data, theta = _setup()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    programs.use_folder(blocker / "programs")
    try:
        evaluate.persisted.programs.clear()
        out = jax.block_until_ready(evaluate(static, data, theta))
        assert np.all(np.isfinite(np.asarray(out[0])))
    finally:
        programs.use_folder(None)
        evaluate.persisted.programs.clear()


def test_a_program_loads_once_for_arrays_that_programs_made(tmp_path, on_cpu):
    """The memory of loaded programs is keyed by shapes, dtypes and weak types: arguments that
    are the outputs of other programs (as a fit's carry is, chunk after chunk) find the program
    already loaded."""
    static, data, theta = _setup()
    store = evaluate.persisted
    programs.use_folder(tmp_path)
    try:
        store.programs.clear()
        jax.block_until_ready(evaluate(static, data, theta))  # compiles and stores
        store.programs.clear()  # as in a new process

        def chain():
            out, t = None, theta
            for _ in range(3):
                out = evaluate(static, data, t)
                t = jax.tree.map(lambda a: a + 0.0, t)  # made by a program, committed to the device
            return out
        _, loads = _loads(chain)
        assert loads == 1 and len(store) == 1
    finally:
        programs.use_folder(None)
        store.programs.clear()


def test_arrays_in_host_memory_are_ordinary_jit_calls(tmp_path, on_cpu):
    static, data, theta = _setup()
    cpu = jax.devices("cpu")[0]
    if "pinned_host" not in [m.kind for m in cpu.addressable_memories()]:
        pytest.skip("no pinned host memory on this backend")
    pinned = jax.device_put(theta, jax.sharding.SingleDeviceSharding(cpu, memory_kind="pinned_host"))
    programs.use_folder(tmp_path)
    try:
        assert evaluate.persisted((static, data, pinned), {}) is NotImplemented
        assert not list(tmp_path.iterdir())
    finally:
        programs.use_folder(None)
        evaluate.persisted.programs.clear()


@pytest.mark.gpu
def test_a_stored_program_serves_a_gpu_too(tmp_path):
    """On a GPU the stored program is loaded without tracing, once, and renders as the plain
    compilation does (to float rounding: two compilations may fuse differently)."""
    gpu = [d for d in jax.devices() if d.platform != "cpu"]
    if not gpu:
        pytest.skip("no accelerator in this process")
    store = evaluate.persisted
    with jax.default_device(gpu[0]):
        static, data, theta = _setup()
        expected = jax.block_until_ready(evaluate(static, data, theta))  # no folder: plain jax.jit
        programs.use_folder(tmp_path)
        try:
            store.programs.clear()
            jax.block_until_ready(evaluate(static, data, theta))
            assert len(list(tmp_path.glob("evaluate-*.bin"))) == 1
            store.programs.clear()
            (again, traced), loads = _loads(lambda: _traced(lambda: evaluate(static, data, theta)))
            assert "evaluate" not in traced and loads == 1
            np.testing.assert_allclose(np.asarray(again[0]), np.asarray(expected[0]), atol=1e-5)
        finally:
            programs.use_folder(None)
            store.programs.clear()

