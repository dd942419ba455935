"""The examples run: the quickstart notebook's code cells (small sizes) and the grad example."""

import json
import os
import runpy
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nb = json.loads((EXAMPLES / "quickstart.ipynb").read_text())
    assert nb["nbformat"] == 4
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    monkeypatch.setenv("QUICKSTART_SIZE", "32")
    monkeypatch.setenv("QUICKSTART_N", "20")
    monkeypatch.setenv("QUICKSTART_STEPS", "10")
    monkeypatch.chdir(tmp_path)  # the notebook saves a file
    ns: dict = {}
    for i, src in enumerate(cells):
        exec(compile(src, f"quickstart.ipynb[code cell {i}]", "exec"), ns)
    assert ns["result"].image.shape == ns["target"].shape
    assert os.path.exists(tmp_path / "quickstart_params.npz")


def test_render_grad_example_reduces_loss():
    mod = runpy.run_path(str(EXAMPLES / "render_grad_in_your_model.py"), run_name="example")
    assert mod["main"](steps=30) < 0.5
