"""The options every fitting subcommand shares (diffbmp_jax.cli.options): parsing,
--help defaults, --version, the early -o check, config files, video frame rates,
and regions' progress bar and exports."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

import diffbmp_jax
from diffbmp_jax.cli import app as cli, options, video as video_cli
from diffbmp_jax.io.video import video_fps, write_frames

STAMPS = str(cli.ASSETS / "stamps")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per subcommand: the arguments it needs besides the shared ones (files need not exist to parse).
COMMANDS = {
    "fit": (["fit", "t.png", "--stamps", STAMPS, "-n", "7"], True),
    "demo": (["demo", "-n", "7"], True),
    "batch": (["batch", "t.png", "--stamps", STAMPS, "-n", "7"], True),
    "text": (["text", "a cat", "--stamps", STAMPS, "-n", "7"], True),
    "video": (["video", "v.gif", "--stamps", STAMPS, "-n", "7"], True),
    "regions": (["regions", "t.png", "--region", f"m.png:{STAMPS}:3"], False),
}
SHARED_ARGV = ["--steps", "5", "-o", "o", "--config", "c.toml", "--size", "40", "--export", "png,svg",
               "--export-scale", "2", "--no-progress", "--font", "F.ttf", "--seed", "3", "--backend", "reference",
               "--stamp-size", "16", "--color-blend", "0.5", "--mask-rule", "alpha"]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_parses_the_shared_options(command):
    argv, has_n = COMMANDS[command]
    args = cli.build_parser().parse_args(argv + SHARED_ARGV)
    want = dict(steps=5, out="o", config="c.toml", size=40, export="png,svg", export_scale=2.0, progress=False,
                font="F.ttf", seed=3, backend="reference", stamp_size=16, color_blend=0.5, mask_rule="alpha")
    assert {k: getattr(args, k) for k in want} == want
    if has_n:
        assert args.num_primitives == 7
    # Not given: None, so that a config file can fill it in (resolve()).
    bare = cli.build_parser().parse_args(argv)
    assert bare.steps is None and bare.size is None and bare.export is None and bare.progress is None


def test_choices_mirror_the_library():
    from diffbmp_jax import export, stamps
    from diffbmp_jax.fitting.config import TEMPLATE_CHOICES
    from diffbmp_jax.rendering.api import BACKENDS
    assert options.BACKEND_CHOICES == BACKENDS
    assert options.MASK_RULE_CHOICES == stamps.MASK_RULES
    assert options.TEMPLATE_CHOICES == TEMPLATE_CHOICES
    assert set(options.EXPORT_FORMATS) == set(export.FORMATS)


def test_help_shows_defaults(capsys):
    for command, default in (("fit", "500"), ("batch", "300"), ("video", "300"), ("regions", "300"),
                             ("text", "500")):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        text = " ".join(capsys.readouterr().out.split())  # unwrap
        assert f"optimisation steps (default: {default})" in text or \
            f"optimisation steps for frame 0 (default: {default})" in text, (command, text)
        assert "--export-scale" in text and "--config" in text and "--font" in text
    with pytest.raises(SystemExit):
        cli.main(["video", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: mp4)" in text and "(default: the input's rate, else 10)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"diffbmp-jax {diffbmp_jax.__version__}\n"
    assert options.version() == diffbmp_jax.__version__


def test_building_the_parser_imports_no_jax():
    """The cli package alone (the package root stubbed: its __init__ imports JAX) builds every parser."""
    code = f"""
import sys, types
pkg = types.ModuleType("diffbmp_jax"); pkg.__path__ = [{os.path.join(ROOT, "diffbmp_jax")!r}]
sys.modules["diffbmp_jax"] = pkg
from diffbmp_jax.cli.app import build_parser
for argv in (["--version"], ["--help"], *([c, "--help"] for c in ("fit", "demo", "batch", "text", "video",
                                                                  "regions"))):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "transformers")
               or m.startswith(("diffbmp_jax.fitting", "diffbmp_jax.tasks", "diffbmp_jax.rendering")))
print("HEAVY", heavy)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "diffbmp-jax " in r.stdout and "HEAVY []" in r.stdout, r.stdout


@pytest.fixture
def no_fit(monkeypatch):
    """Every fitter (and the CLIP loader) fails if called."""
    import diffbmp_jax.clip
    import diffbmp_jax.fitting.batch
    import diffbmp_jax.fitting.image
    import diffbmp_jax.tasks.regions
    import diffbmp_jax.tasks.text
    import diffbmp_jax.tasks.video

    def boom(*a, **k):
        raise AssertionError("a fit ran although the options were bad")

    for mod, name in ((diffbmp_jax.fitting.image, "fit"), (diffbmp_jax.fitting.batch, "fit_batch"),
                      (diffbmp_jax.tasks.text, "fit_text"), (diffbmp_jax.tasks.video, "fit_video"),
                      (diffbmp_jax.tasks.regions, "fit_regions"), (diffbmp_jax.clip, "load_clip")):
        monkeypatch.setattr(mod, name, boom)


def _files(tmp_path):
    """A 32x32 target, a mask of it and a 2-frame GIF; returns argv per subcommand."""
    rng = np.random.default_rng(0)
    img = (np.kron(rng.uniform(size=(4, 4, 3)), np.ones((8, 8, 1))) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "t.png")
    Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "m.png")
    write_frames(tmp_path / "v.gif", [img, img[::-1]], fps=5)
    t, m, v = (str(tmp_path / f) for f in ("t.png", "m.png", "v.gif"))
    return {"fit": ["fit", t, "--stamps", STAMPS], "demo": ["demo"], "batch": ["batch", t, "--stamps", STAMPS],
            "text": ["text", "a cat", "--stamps", STAMPS], "video": ["video", v, "--stamps", STAMPS],
            "regions": ["regions", t, "--region", f"{m}:{STAMPS}:3"]}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_impossible_out_fails_before_fitting(command, tmp_path, capsys, no_fit):
    argv = _files(tmp_path)[command]
    (tmp_path / "afile").write_text("a file, not a folder")
    t0 = time.perf_counter()
    assert cli.main(argv + ["-o", str(tmp_path / "afile" / "sub"), "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "-o/--out" in err and "afile" in err, err
    assert cli.main(argv + ["-o", str(tmp_path / "afile"), "--no-progress"]) == 2
    assert "-o/--out" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 10


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_fails_before_fitting(tmp_path, capsys, no_fit):
    argv = _files(tmp_path)["fit"]
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert cli.main(argv + ["-o", str(ro / "sub")]) == 2
        assert "-o/--out" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_shared_values_name_the_option(command, tmp_path, capsys, no_fit):
    argv = _files(tmp_path)[command] + ["-o", str(tmp_path / "out"), "--no-progress"]
    cfg = tmp_path / "c.toml"
    cfg.write_text('size = "big"\n')
    for extra, word in ((["--export-scale", "0"], "--export-scale"), (["--color-blend", "1.5"], "--color-blend"),
                        (["--steps", "-1"], "--steps"), (["--export", "png,nosuch"], "--export"),
                        (["--font", "no-such-font-anywhere"], "font"), (["--config", str(cfg)], "--size")):
        assert cli.main(argv + extra) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and word in err and "Traceback" not in err, (extra, err)
    assert not (tmp_path / "out").exists()


def test_config_merges_below_the_command_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('steps = 4\nexport = "svg"\nmargin = 2.0\nlr_xy = 0.1\n[fit]\nlog_every = 2\n')
    args = cli.build_parser().parse_args(["regions", "t.png", "--region", "m.png:s:3", "--config", str(cfg),
                                          "--steps", "6"])
    opts, fit, given = options.resolve(args, video_cli.REGIONS_DEFAULTS)
    assert opts["steps"] == 6 and opts["export"] == "svg" and opts["margin"] == 2.0
    assert opts["stamp_size"] == 32 and opts["progress"] is True  # defaults
    assert fit == {"lr_xy": 0.1, "log_every": 2} and {"steps", "export", "margin", "region"} <= given
    cfg.write_text("steps_next = 3\n")  # a video option: unknown to regions
    with pytest.raises(ValueError, match="unknown key 'steps_next'"):
        options.resolve(args, video_cli.REGIONS_DEFAULTS)


def test_video_fps(tmp_path):
    frames = [np.full((8, 8, 3), k / 3, np.float32) for k in range(3)]
    write_frames(tmp_path / "a.gif", frames, fps=5)
    assert video_fps(tmp_path / "a.gif") == pytest.approx(5.0, abs=1e-6)
    write_frames(tmp_path / "b.gif", frames + [frames[-1]] * 3, fps=4)  # the repeats merge into one frame
    assert video_fps(tmp_path / "b.gif") == pytest.approx(4.0, abs=1e-6)
    (tmp_path / "frames").mkdir()
    assert video_fps(tmp_path / "frames") is None
    with pytest.raises(FileNotFoundError, match="path"):
        video_fps(tmp_path / "missing.gif")
    pytest.importorskip("imageio_ffmpeg")
    write_frames(tmp_path / "c.mp4", frames, fps=5)
    assert video_fps(tmp_path / "c.mp4") == pytest.approx(5.0, abs=1e-6)


@pytest.fixture
def quick_video_fit(monkeypatch):
    """fit_video replaced by a stand-in that returns the input frames as renders."""
    import diffbmp_jax.tasks.video as video_task
    from diffbmp_jax.scene.primitives import Primitives

    def fake(frames, atlas, *, num_primitives, config, **kw):
        t, n = len(frames), num_primitives
        p = Primitives(xy=np.full((n, 2), 4.0, np.float32), scale=np.full(n, 3.0, np.float32),
                       rotation=np.zeros(n, np.float32), opacity_logit=np.zeros(n, np.float32),
                       color_logit=np.zeros((n, 3), np.float32))
        z = np.zeros(t)
        return video_task.VideoFitResult(params=[p] * t, template=np.zeros(n, np.int32), frames=frames, psnr=z,
                                         flicker=0.0, frozen=z.astype(int), respawned=z.astype(int), frame_time=z,
                                         wall_time=0.0, config=config)

    monkeypatch.setattr(video_task, "fit_video", fake)


def test_video_cli_writes_at_the_input_frame_rate(tmp_path, quick_video_fit):
    pytest.importorskip("imageio_ffmpeg")
    files = _files(tmp_path)  # v.gif: 2 frames at 5 fps
    base = files["video"] + ["-n", "3", "--stamp-size", "16", "--no-progress"]
    cfg = tmp_path / "v.toml"
    cfg.write_text('export = "mp4,svg"\nsteps = 2\n')
    out = tmp_path / "o1"
    s = cli.run(base + ["--config", str(cfg), "-o", str(out)])
    assert s["fps"] == pytest.approx(5.0)
    assert sorted(p.name for p in out.iterdir()) == ["frames", "history.json", "params.npz", "video.mp4"]
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["0.svg", "1.svg"]
    assert json.loads((out / "history.json").read_text())["fps"] == pytest.approx(5.0)
    assert video_fps(out / "video.mp4") == pytest.approx(5.0, abs=1e-6)
    # --fps given explicitly wins; --format is --export's one-video spelling
    cli.run(base + ["--fps", "4", "--format", "gif", "-o", str(tmp_path / "o2")])
    assert video_fps(tmp_path / "o2" / "video.gif") == pytest.approx(4.0, abs=1e-6)
    # a folder of frames states no rate: 10 fps
    folder = tmp_path / "fr"
    folder.mkdir()
    for k in range(2):
        Image.fromarray(np.full((16, 16, 3), 60 * k, np.uint8)).save(folder / f"{k}.png")
    cli.run(["video", str(folder), "--stamps", STAMPS, "-n", "3", "--stamp-size", "16", "--no-progress",
             "--export", "gif", "-o", str(tmp_path / "o3")])
    assert video_fps(tmp_path / "o3" / "video.gif") == pytest.approx(video_cli.FALLBACK_FPS, abs=1e-6)


def test_video_cli_export_scale(tmp_path, quick_video_fit, capsys):
    base = _files(tmp_path)["video"] + ["-n", "3", "--stamp-size", "16", "--no-progress", "--export-scale", "2"]
    out = tmp_path / "o"
    cli.run(base + ["--export", "gif,png", "-o", str(out)])
    from diffbmp_jax.io.video import load_video
    # re-rendered at twice the 32 px input (the two renders are equal: the GIF may merge them)
    assert load_video(out / "video.gif").shape[1:] == (64, 64, 3)
    assert Image.open(out / "frames" / "1.png").size == (64, 64)
    assert cli.main(base + ["--side-by-side", "-o", str(tmp_path / "o2")]) == 2
    assert "--export-scale" in capsys.readouterr().err and not (tmp_path / "o2").exists()


@pytest.mark.slow
def test_regions_progress_export_size_and_config(tmp_path, capsys):
    files = _files(tmp_path)  # t.png 32x32, m.png all white (32x32)
    half = np.zeros((32, 32), np.uint8)
    half[:, :16] = 255
    Image.fromarray(half).save(tmp_path / "left.png")
    cfg = tmp_path / "r.toml"
    cfg.write_text('steps = 4\nexport = "png"\nstamp_size = 16\n[fit]\nlog_every = 2\n')
    out = tmp_path / "out"
    s = cli.run(files["regions"] + ["--region", f"{tmp_path / 'left.png'}:{STAMPS}:2", "--config", str(cfg),
                                    "--size", "24", "--export", "png,svg", "--export-scale", "2", "-o", str(out)])
    assert np.isfinite(s["psnr"])
    assert "regions" in capsys.readouterr().err  # the progress bar's description
    assert {p.name for p in out.iterdir()} == {"result.png", "result.svg", "params.npz", "history.json"}
    assert Image.open(out / "result.png").size == (48, 48)  # the 24 px canvas, re-rendered at --export-scale 2
    assert "<svg" in (out / "result.svg").read_text()[:500]
    h = json.loads((out / "history.json").read_text())
    assert h["size"] == [24, 24] and h["config"]["log_every"] == 2  # target and masks downscaled together
    z = np.load(out / "params.npz")
    assert list(np.bincount(z["group"])) == [3, 2]
    # the left group never leaves its (downscaled) half: centres within the left 12 px + margin
    assert np.all(z["xy"][z["group"] == 1][:, 0] < 12 + 1.5)
