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
