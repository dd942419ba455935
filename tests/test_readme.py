"""The README's render + grad example runs as written."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_render_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    scope: dict = {}
    exec(blocks[0], scope)  # noqa: S102 - our own documentation
    grads = scope["grads"]
    assert grads.xy.shape == (2, 2)
    assert np.all(np.isfinite(np.asarray(grads.xy))) and np.any(np.asarray(grads.xy) != 0)


def test_ci_runs_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    command = 'python -m pip install ".[test]" && pytest'
    assert command in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert command in ci


def test_readme_render_mse_claim():
    """render_mse gives the README example's loss and gradients."""
    import jax
    import diffbmp_jax as db

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    scope: dict = {}
    exec(blocks[0], scope)  # noqa: S102 - our own documentation
    params, atlas, target = scope["params"], scope["atlas"], scope["target"]
    value, grads = jax.value_and_grad(lambda p: db.render_mse(p, atlas, target, 1.0, height=64, width=64))(params)
    np.testing.assert_allclose(float(value), float(scope["loss"](params)), rtol=1e-5)
    for name in ("xy", "scale", "rotation", "opacity_logit", "color_logit"):
        np.testing.assert_allclose(np.asarray(getattr(grads, name)), np.asarray(getattr(scope["grads"], name)),
                                   rtol=1e-4, atol=1e-7)
