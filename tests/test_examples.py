"""The examples run: the quickstart notebook's code cells (small sizes) and the grad example."""

import json
import os
import re
import runpy
import sys
from pathlib import Path

import numpy as np

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _notebook() -> dict:
    return json.loads((EXAMPLES / "quickstart.ipynb").read_text())


def _code_cells(nb) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


class _FakeIPython:
    """Stands in for ``get_ipython()``: records line magics instead of running them."""

    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line):
        self.magics.append((name, line))


def test_quickstart_notebook_is_valid_nbformat_4_with_a_colab_header():
    nb = _notebook()
    assert nb["nbformat"] == 4 and nb["nbformat_minor"] >= 5 and isinstance(nb["metadata"], dict)
    ids = [c["id"] for c in nb["cells"]]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", i) for i in ids)
    for c in nb["cells"]:
        assert c["cell_type"] in ("markdown", "code") and isinstance(c["metadata"], dict)
        assert isinstance(c["source"], list) and all(isinstance(line, str) for line in c["source"])
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    first, second = nb["cells"][:2]
    assert first["cell_type"] == "markdown"
    assert re.search(r"https://colab\.research\.google\.com/github/[^/\s]+/[^/\s]+/blob/main/"
                     r"examples/quickstart\.ipynb", "".join(first["source"]))
    install = "".join(second["source"])
    assert second["cell_type"] == "code" and 'run_line_magic("pip", "install' in install


def test_quickstart_install_cell_installs_only_where_the_package_is_missing(monkeypatch):
    install = _code_cells(_notebook())[0]
    code = compile(install, "quickstart.ipynb[code cell 0]", "exec")
    ip = _FakeIPython()
    exec(code, {"get_ipython": lambda: ip})
    assert ip.magics == []  # importable here: a no-op
    monkeypatch.setitem(sys.modules, "diffbmp_jax", None)  # `import diffbmp_jax` now fails
    exec(code, {"get_ipython": lambda: ip})
    assert len(ip.magics) == 1 and ip.magics[0][0] == "pip"
    assert re.fullmatch(r"install -q git\+https://github\.com/[^/\s]+/diffbmp-jax\.git", ip.magics[0][1])


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    nb = _notebook()
    assert nb["nbformat"] == 4
    cells = _code_cells(nb)
    monkeypatch.setenv("QUICKSTART_SIZE", "32")
    monkeypatch.setenv("QUICKSTART_N", "20")
    monkeypatch.setenv("QUICKSTART_STEPS", "10")
    monkeypatch.chdir(tmp_path)  # the notebook saves a file
    ip = _FakeIPython()
    ns: dict = {"get_ipython": lambda: ip}
    for i, src in enumerate(cells):  # the install cell (cell 0) included
        exec(compile(src, f"quickstart.ipynb[code cell {i}]", "exec"), ns)
    assert ip.magics == []  # the package is importable here: nothing installed
    assert ns["result"].image.shape == ns["target"].shape
    assert np.isfinite(ns["result"].psnr) and np.isfinite(ns["mosaic"].psnr)
    assert os.path.exists(tmp_path / "quickstart_params.npz")


def test_render_grad_example_reduces_loss():
    mod = runpy.run_path(str(EXAMPLES / "render_grad_in_your_model.py"), run_name="example")
    assert mod["main"](steps=30) < 0.5
