"""Bad input gets a clear Python error naming the argument; nothing crashes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax import validation as V


@pytest.fixture
def atlas():
    return db.Atlas.from_arrays(np.ones((2, 4, 4), np.float32), np.ones((2, 4, 4, 3), np.float32))


@pytest.fixture
def params():
    return db.Primitives.create([[3.0, 3.0], [5.0, 4.0]], [2.0, 3.0])


def _render(p, a, **kw):
    kw = {"height": 8, "width": 8, "backend": "cpu", **kw}
    return db.render(p, a, **kw)


def _replace(p, **fields):
    return db.Primitives(**{**p.to_dict(), **fields})


@pytest.mark.parametrize("field,value,match", [
    ("xy", np.zeros((2, 3), np.float32), r"params\.xy must have shape \(2, 2\)"),
    ("scale", np.ones((3,), np.float32), r"params\.scale"),
    ("rotation", np.zeros((2, 1), np.float32), r"params\.rotation must have shape \(2,\)"),
    ("color_logit", np.zeros((2,), np.float32), r"params\.color_logit must have shape \(2, 3\)"),
])
def test_wrong_shapes(atlas, params, field, value, match):
    with pytest.raises(ValueError, match=match):
        _render(_replace(params, **{field: value}), atlas)


def test_wrong_dtype(atlas, params):
    with pytest.raises(TypeError, match=r"params\.xy must be a float array"):
        _render(_replace(params, xy=np.zeros((2, 2), np.int32)), atlas)
    with pytest.raises(TypeError, match="params must be a diffbmp_jax.Primitives"):
        _render({"xy": 1}, atlas)
    with pytest.raises(TypeError, match="atlas must be a diffbmp_jax.Atlas"):
        _render(params, np.ones((1, 4, 4)))


@pytest.mark.parametrize("field", ["xy", "scale", "rotation", "opacity_logit", "color_logit"])
def test_nan_and_inf(atlas, params, field):
    bad = np.array(getattr(params, field))
    bad.flat[0] = np.nan
    with pytest.raises(ValueError, match=rf"params\.{field} contains 1 non-finite"):
        _render(_replace(params, **{field: bad}), atlas)
    bad.flat[0] = np.inf
    with pytest.raises(ValueError, match=rf"params\.{field}"):
        _render(_replace(params, **{field: bad}), atlas)


def test_non_positive_scale(atlas, params):
    with pytest.raises(ValueError, match=r"params\.scale must be > 0"):
        _render(_replace(params, scale=np.array([1.0, 0.0], np.float32)), atlas)


def test_template(atlas, params):
    with pytest.raises(ValueError, match=r"template ids must lie in \[0, 2\)"):
        _render(params, atlas, template=np.array([0, 2], np.int32))
    with pytest.raises(ValueError, match="template ids"):
        _render(params, atlas, template=np.array([-1, 0], np.int32))
    with pytest.raises(TypeError, match="template must be an integer array"):
        _render(params, atlas, template=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"template must have shape \(2,\)"):
        _render(params, atlas, template=np.array([0, 1, 1], np.int32))


@pytest.mark.parametrize("kw,exc,match", [
    ({"height": 0}, ValueError, "height must be a positive int"),
    ({"width": -3}, ValueError, "width must be a positive int"),
    ({"height": 8.0}, TypeError, "height must be a positive int"),
    ({"color_blend": 1.5}, ValueError, "color_blend must be in"),
    ({"alpha_max": 1.0}, ValueError, "alpha_max must be in"),
    ({"alpha_max": 0.0}, ValueError, "alpha_max must be in"),
    ({"backend": "opengl"}, ValueError, "backend must be one of"),
])
def test_bad_settings(atlas, params, kw, exc, match):
    with pytest.raises(exc, match=match):
        _render(params, atlas, **kw)


def test_color_blend_needs_rgb(params):
    atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="color_blend > 0 needs an atlas with rgb"):
        _render(params, atlas, color_blend=0.5)


def test_atlas_constructors():
    with pytest.raises(ValueError, match="Atlas.mask is empty"):
        db.Atlas.from_arrays(np.zeros((0, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"Atlas.mask must have shape \(P, h, w\)"):
        db.Atlas(mask=jnp.ones((4,)))
    with pytest.raises(ValueError, match="Atlas.rgb must have shape"):
        db.Atlas.from_arrays(np.ones((2, 4, 4)), np.ones((2, 4, 5, 3)))
    with pytest.raises(ValueError, match="Atlas.mask contains 1 non-finite"):
        one_nan = np.full((1, 3, 3), 0.5)
        one_nan[0, 1, 1] = np.nan
        db.Atlas.from_arrays(one_nan)
    with pytest.raises(ValueError, match=r"Atlas.mask must be <= 1.0"):
        db.Atlas.from_arrays(np.full((1, 3, 3), 2.0))
    with pytest.raises(ValueError, match=r"Atlas.rgb must be >= 0.0"):
        db.Atlas.from_arrays(np.ones((1, 3, 3)), np.full((1, 3, 3, 3), -0.5))
    with pytest.raises(TypeError, match="Atlas.mask must be a float array"):
        db.Atlas(mask=jnp.ones((1, 3, 3), jnp.int32))


def test_atlas_from_files_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        db.stamps.load_images([tmp_path / "missing.png"])
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image"):
        db.stamps.load_images([bad])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        db.stamps.load_images(tmp_path / "empty")


def test_bad_values_inside_jit_are_harmless():
    """Under jit values cannot be checked: such primitives draw nothing, nothing crashes."""
    atlas = db.Atlas.from_arrays(np.ones((2, 4, 4), np.float32))
    xy = jnp.array([[4.0, 4.0], [np.nan, 3.0], [4.0, 4.0], [4.0, 4.0], [4.0, 4.0]])
    scale = jnp.array([2.0, 2.0, -1.0, 1e30, 2.0])
    params = db.Primitives.create(xy, scale, opacity=0.5)
    template = jnp.array([0, 0, 0, 0, 7], jnp.int32)  # id 7 is out of range

    @jax.jit
    def f(p, t):
        return db.render(p, atlas, height=8, width=8, template=t, backend="cpu")

    c, a = f(params, template)
    assert np.all(np.isfinite(np.asarray(c))) and np.all(np.isfinite(np.asarray(a)))
    # Only primitive 0 and the huge one (covering everything, clipped to the canvas) draw.
    only = db.Primitives.create(xy[jnp.array([0, 3])], scale[jnp.array([0, 3])], opacity=0.5)
    c2, a2 = f(only, jnp.zeros(2, jnp.int32))
    np.testing.assert_allclose(np.asarray(a), np.asarray(a2), atol=1e-6)
    g = jax.grad(lambda p: jnp.sum(f(p, template)[0]))(params)
    assert np.all(np.isfinite(np.asarray(g.xy)))


_COMPILED = []  # names of the functions XLA compiled since the listener was registered


@pytest.fixture(scope="module")
def compile_log():
    jax.monitoring.register_event_time_span_listener(
        lambda event, *_, **kw: _COMPILED.append(kw.get("fun_name")) if event.endswith("backend_compile_duration")
        else None)
    return _COMPILED


@pytest.mark.parametrize("seed", [0, 1, 2**31, 2**32 + 7, -1, -2**40, 2**63 - 1, -2**63])
def test_int_seed_gives_jax_random_key_without_compiling(seed, compile_log):
    """as_key(int) is jax.random.key(int), built on the host (no seeding program compiled)."""
    jax.clear_caches()  # so that a seeding program would compile again here
    compile_log.clear()
    key = V.as_key(seed)
    assert not compile_log, compile_log
    want = jax.random.key(seed)
    assert key.dtype == want.dtype
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(key)), np.asarray(jax.random.key_data(want)))


def test_env_count_names_the_variable():
    from diffbmp_jax.validation import env_count
    assert env_count("X_THREADS", None, 1, "threads") is None
    assert env_count("X_THREADS", " 8 ", 1, "threads") == 8
    assert env_count("X_PAIRS", "0", 0, "pairs") == 0
    for bad in ("0", "-1", "abc", "2.5", ""):
        with pytest.raises(ValueError, match=r"X_THREADS must be a positive integer \(threads\), got"):
            env_count("X_THREADS", bad, 1, "threads")
    with pytest.raises(ValueError, match=r"X_PAIRS must be an integer >= 0 \(pairs\), got '-3'"):
        env_count("X_PAIRS", "-3", 0, "pairs")
