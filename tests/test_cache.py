"""The persistent compilation cache: where it lives, turning it off, and a folder that cannot be written."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


def _fit(tmp_path, out, *extra, **env):
    target = tmp_path / "t.png"
    if not target.exists():
        Image.fromarray((np.random.default_rng(0).uniform(size=(16, 16, 3)) * 255).astype(np.uint8)).save(target)
    environ = {k: v for k, v in os.environ.items() if k != "DIFFBMP_JAX_CACHE"}
    environ.update(JAX_PLATFORMS="cpu", **env)
    return subprocess.run([sys.executable, "-m", "diffbmp_jax", "fit", str(target), "--stamps", "text:AB", "-n", "4",
                           "--steps", "4", "--stamp-size", "8", "--no-progress", "-o", str(tmp_path / out), *extra],
                          cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=300)


def test_the_cache_fills_its_folder_and_a_second_run_gives_the_same_result(tmp_path):
    home = tmp_path / "cachehome"
    first = _fit(tmp_path, "a", XDG_CACHE_HOME=str(home), JAX_LOG_COMPILES="1")
    assert first.returncode == 0, first.stderr[-2000:]
    entries = os.listdir(home / "diffbmp-jax" / "jax")
    # The fit's two programs: its chunk of steps and the closing render (the start is made on the host).
    assert {"jit_run_chunk", "jit_evaluate"} <= {e.split("-")[0] for e in entries}, entries
    stored = os.listdir(home / "diffbmp-jax" / "programs")
    assert {"run_chunk", "evaluate"} == {e.split("-")[0] for e in stored}, stored
    assert "Finished tracing run_chunk" in first.stderr
    second = _fit(tmp_path, "b", XDG_CACHE_HOME=str(home), JAX_LOG_COMPILES="1")
    assert second.returncode == 0, second.stderr[-2000:]
    # The second process loads both programs as stored: it neither traces nor lowers them.
    for name in ("run_chunk", "evaluate"):
        assert f"tracing {name}" not in second.stderr and f"jit({name})" not in second.stderr, second.stderr[-3000:]
    # Programs JAX loads from its own cache are not stored again (re-serialised, a loaded CPU
    # executable lost its functions and the next run failed).
    shutil.rmtree(home / "diffbmp-jax" / "programs")
    third = _fit(tmp_path, "c", XDG_CACHE_HOME=str(home))
    assert third.returncode == 0, third.stderr[-2000:]
    folder = home / "diffbmp-jax" / "programs"
    assert not (folder.exists() and os.listdir(folder))
    a, b = np.load(tmp_path / "a" / "params.npz"), np.load(tmp_path / "b" / "params.npz")
    c = np.load(tmp_path / "c" / "params.npz")
    for name in ("xy", "scale", "rotation", "opacity_logit", "color_logit", "template"):
        np.testing.assert_array_equal(a[name], b[name])
        np.testing.assert_array_equal(a[name], c[name])


@pytest.mark.slow
def test_the_cache_can_be_turned_off_and_an_unwritable_folder_only_warns(tmp_path):
    home = tmp_path / "off"
    off = _fit(tmp_path, "c", XDG_CACHE_HOME=str(home), DIFFBMP_JAX_CACHE="0")
    assert off.returncode == 0, off.stderr[-2000:]
    assert not home.exists()
    flag = _fit(tmp_path, "e", "--no-cache", XDG_CACHE_HOME=str(home))
    assert flag.returncode == 0 and not home.exists(), flag.stderr[-2000:]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    bad = _fit(tmp_path, "d", XDG_CACHE_HOME=str(blocker))
    assert bad.returncode == 0, bad.stderr[-2000:]
    assert "compilation cache off: cannot write" in bad.stderr
    assert (tmp_path / "d" / "result.png").exists()
