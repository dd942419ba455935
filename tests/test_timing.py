"""Where a fit's time goes: compile time vs step time, the progress bar's "compiling", -q / -v."""

import time

import numpy as np
import jax

import diffbmp_jax as db
from diffbmp_jax.cli import app as cli
from diffbmp_jax.fitting.timing import COMPILE_EVENTS, FitClock
from fit_scenes import shape_atlas


def test_clock_counts_nested_spans_once():
    """A trace inside another (nested jit) must not count twice; other events and threads do not count."""
    now = time.time()
    with FitClock() as clock:
        jax.monitoring.record_event_time_span(COMPILE_EVENTS[0], now, now + 2.0, fun_name="outer")
        jax.monitoring.record_event_time_span(COMPILE_EVENTS[0], now + 0.5, now + 1.0, fun_name="inner")
        jax.monitoring.record_event_time_span(COMPILE_EVENTS[2], now + 3.0, now + 3.5, fun_name="outer")
        jax.monitoring.record_event_time_span("/jax/something/else", now, now + 9.0)
    jax.monitoring.record_event_time_span(COMPILE_EVENTS[2], now, now + 50.0)  # after the clock closed
    assert abs(clock.compile_time - 2.5) < 1e-9
    assert abs(clock.compiled_since(now + 1.5) - 1.0) < 1e-9  # 0.5 of the first span + the third


def test_fit_splits_compile_and_step_time(capsys):
    target = np.random.default_rng(0).uniform(size=(16, 16, 3)).astype(np.float32)
    atlas = shape_atlas(4)
    # A fresh length and shape: this fit compiles its chunk.
    r = db.fit(target, atlas, num_primitives=5, steps=6, key=0, progress=True, log_every=3, backend="cpu")
    assert r.compile_time > 0 and r.step_time > 0
    assert r.compile_time + r.step_time <= r.wall_time
    err = capsys.readouterr().err
    # The bar reads "compiling" until the first chunk is compiled, then the plain description.
    assert "fit (compiling)" in err and "fit: 100%" in err
    # Compiled already: a second fit (another length, same chunk) spends far less on compiling.
    again = db.fit(target, atlas, num_primitives=5, steps=9, key=0, progress=False, log_every=3, backend="cpu")
    assert again.compile_time < r.compile_time


def test_batch_and_region_fits_split_compile_and_step_time():
    """fit_batch and fit_regions report compile and step time as fit does (one FitClock per call)."""
    from diffbmp_jax.tasks.regions import fit_regions
    rng = np.random.default_rng(3)
    targets = rng.uniform(size=(2, 14, 14, 3)).astype(np.float32)
    batch = db.fit_batch(targets, shape_atlas(3), num_primitives=4, steps=4, key=0, log_every=2, backend="cpu")
    mask = np.zeros((14, 14), bool)
    mask[2:12, 2:12] = True
    regions = fit_regions(targets[0], [(mask, shape_atlas(3), 4)], steps=4, key=0, log_every=2, backend="cpu")
    for r in (batch, regions):
        assert r.compile_time > 0 and r.step_time > 0, type(r).__name__
        assert r.compile_time + r.step_time <= r.wall_time, type(r).__name__


def test_video_fit_splits_compile_and_step_time():
    """fit_video counts frame 0's fit and the later frames' runs in one clock."""
    video = np.random.default_rng(4).uniform(size=(3, 12, 12, 3)).astype(np.float32)
    r = db.fit_video(video, shape_atlas(3), num_primitives=4, steps=4, steps_next=2, key=0, log_every=2,
                     backend="cpu")
    assert r.compile_time > 0 and r.step_time > 0
    assert r.compile_time + r.step_time <= r.wall_time
    assert r.step_time < np.sum(r.frame_time)  # frames' times include compiling and evaluation


def test_timing_line():
    from diffbmp_jax.cli.logs import timing
    assert timing(9.14, 1.23, 4.4, 300) == "wall time 9.1 s (compiling 1.2 s, 300 steps 4.4 s, 14.7 ms/step)"
    assert timing(2.0, 0.5, 0.0, 0) == "wall time 2.0 s (compiling 0.5 s, 0 steps 0.0 s)"
    assert timing(2.0, 0.5, 1.0) == "wall time 2.0 s (compiling 0.5 s, steps 1.0 s)"


def test_cli_quiet_and_verbose(tmp_path, capsys):
    target = tmp_path / "t.png"
    from PIL import Image
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 20, 3), np.uint8)).save(target)
    stamps = str(tmp_path / "s.png")
    Image.fromarray(np.full((8, 8, 4), 255, np.uint8)).save(stamps)
    common = [str(target), "--stamps", stamps, "-n", "4", "--steps", "3", "--stamp-size", "8"]
    assert cli.main(["fit", *common, "-o", str(tmp_path / "a"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "it/s" not in out.err  # no summary, no progress bar
    assert cli.main(["fit", *common, "-o", str(tmp_path / "b"), "-v", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "compiling" in out and "steps" in out and "PSNR" in out
    assert "4 primitives" in out and "stamp bitmaps" in out  # -v: the set-up stage's line
    assert cli.main(["fit", *common, "-o", str(tmp_path / "c"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("PSNR") and "compiling" in out  # one summary line
