"""The diffbmp-jax command line, in-process: outputs, config files, bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from diffbmp_jax.cli import app as cli

STAMPS = str(cli.ASSETS / "stamps")


@pytest.fixture
def target_png(tmp_path):
    rng = np.random.default_rng(0)
    img = np.kron(rng.uniform(size=(4, 4, 3)), np.ones((6, 6, 1)))
    path = tmp_path / "t.png"
    Image.fromarray((img * 255).astype(np.uint8)).save(path)
    return str(path)


def test_fit_end_to_end(tmp_path, target_png, capsys):
    out = tmp_path / "out"
    rc = cli.main(["fit", target_png, "--stamps", STAMPS, "-n", "12", "--steps", "10", "-o", str(out),
                   "--seed", "1", "--stamp-size", "16", "--no-progress", "--color-blend", "0.5"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"result.png", "params.npz", "progress.gif", "history.json"}
    assert Image.open(out / "result.png").size == (24, 24)
    z = np.load(out / "params.npz")
    assert z["xy"].shape == (12, 2) and z["color_logit"].shape == (12, 3) and z["template"].dtype == np.int32
    assert int(z["height"]) == 24 and int(z["width"]) == 24
    hist = json.loads((out / "history.json").read_text())
    assert hist["history"]["step"][-1] == 10
    printed = capsys.readouterr().out
    assert "PSNR" in printed and "SSIM" in printed and "wall time" in printed


def test_config_file_sets_options(tmp_path, target_png):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'stamps = ["{STAMPS}"]\nn = 6\nsteps = 4\nstamp_size = 16\nprogress = false\nframes = 0\n'
                   'lr_xy = 0.1\n[fit]\ninit = "grid"\nlog_every = 2\n')
    out = tmp_path / "o"
    summary = cli.run(["fit", target_png, "--config", str(cfg), "-o", str(out)])
    assert not (out / "progress.gif").exists()
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["init"] == "grid" and h["config"]["lr_xy"] == 0.1 and h["history"]["step"] == [0, 2, 4]
    assert np.load(out / "params.npz")["xy"].shape == (6, 2) and np.isfinite(summary["psnr"])


def test_template_flags_reach_the_fit(tmp_path, target_png):
    out = tmp_path / "t"
    cli.run(["fit", target_png, "--stamps", STAMPS, "-n", "6", "--steps", "4", "-o", str(out),
             "--stamp-size", "16", "--no-progress", "--frames", "0", "--color-blend", "1",
             "--templates", "color", "--reassign-every", "2"])
    h = json.loads((out / "history.json").read_text())
    assert h["config"]["templates"] == "color" and h["config"]["reassign_every"] == 2
    assert len(h["history"]["reassigned"]) == len(h["history"]["step"])


def _bad(tmp_path, argv, exc, word):
    out = tmp_path / "out"
    with pytest.raises(exc, match=word):
        cli.run(argv + ["-o", str(out), "--no-progress"])
    assert not out.exists()  # nothing written
    assert cli.main(argv + ["-o", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_missing_and_unreadable_files(tmp_path, target_png):
    _bad(tmp_path, ["fit", str(tmp_path / "nope.png"), "--stamps", STAMPS], FileNotFoundError, "target")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    _bad(tmp_path, ["fit", str(junk), "--stamps", STAMPS], ValueError, "target")
    _bad(tmp_path, ["fit", target_png, "--stamps", str(tmp_path / "none.png")], FileNotFoundError, "none.png")


def test_bad_numbers_and_config(tmp_path, target_png):
    base = ["fit", target_png, "--stamps", STAMPS]
    _bad(tmp_path, base + ["-n", "0"], ValueError, "num_primitives")
    _bad(tmp_path, base + ["--steps", "-3"], ValueError, "steps")
    cfg = tmp_path / "bad.toml"
    cfg.write_text("n = 4\nlearning_rate = 3\n")
    _bad(tmp_path, base + ["--config", str(cfg)], ValueError, "learning_rate")
    cfg.write_text("[fit]\nlr_xyz = 3\n")
    _bad(tmp_path, base + ["--config", str(cfg)], ValueError, "lr_xyz")
    cfg.write_text("n = [\n")
    _bad(tmp_path, base + ["--config", str(cfg)], ValueError, "config")
    _bad(tmp_path, base + ["--config", str(tmp_path / "missing.toml")], FileNotFoundError, "config")
    _bad(tmp_path, base + ["--export", "png,nosuchformat"], ValueError, "export")


def test_the_cli_asks_for_gpu_memory_on_demand_unless_told(tmp_path, monkeypatch):
    """The CLI owns its process: XLA_PYTHON_CLIENT_PREALLOCATE defaults to false, a user's value stays."""
    monkeypatch.delenv(cli.PREALLOCATE_ENV, raising=False)
    assert cli.main(["fit", str(tmp_path / "nope.png"), "--stamps", STAMPS, "-o", str(tmp_path / "o")]) == 2
    assert cli.os.environ[cli.PREALLOCATE_ENV] == "false"
    monkeypatch.setenv(cli.PREALLOCATE_ENV, "true")
    cli.own_process_defaults()
    assert cli.os.environ[cli.PREALLOCATE_ENV] == "true"


def test_the_backend_starts_beside_the_commands_loading(monkeypatch):
    """start_backend_beside starts JAX's default backend on a thread (its devices are then known to JAX),
    and drops an error there: the command's own first use of JAX reports it."""
    import jax
    from jax._src import xla_bridge
    from diffbmp_jax.cli import app as cli_app
    thread = cli_app.start_backend_beside()
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert xla_bridge.backends_are_initialized()
    assert jax.devices()[0].platform == jax.default_backend()

    def broken():
        raise RuntimeError("no GPU today")
    monkeypatch.setattr(jax, "devices", broken)
    failed = []
    monkeypatch.setattr(cli_app.threading, "excepthook", lambda hook_args: failed.append(hook_args))
    thread = cli_app.start_backend_beside()
    thread.join(timeout=60)
    assert not thread.is_alive() and not failed


def test_fitting_commands_start_the_backend_unless_asked_for_the_cpu(monkeypatch, tmp_path):
    """run() starts the backend beside the loading for auto/cuda (the default), not for --backend cpu."""
    from diffbmp_jax.cli import app as cli_app
    from diffbmp_jax.fitting.cache import CACHE_ENV
    monkeypatch.setenv(CACHE_ENV, "0")  # --no-cache sets it; the test leaves the process as it found it
    started, ran = [], []
    monkeypatch.setattr(cli_app, "start_backend_beside", lambda: started.append(1))
    monkeypatch.setattr(cli_app, "run_fit", lambda args: ran.append(args.backend) or {})
    cli_app.run(["demo", "-o", str(tmp_path / "a"), "--no-cache"])
    cli_app.run(["demo", "-o", str(tmp_path / "b"), "--no-cache", "--backend", "cpu"])
    assert ran == [None, "cpu"] and started == [1]


@pytest.fixture
def transparent_png(tmp_path):
    """A 24 x 24 RGBA target: an opaque red square in a transparent (hidden green) field."""
    img = np.zeros((24, 24, 4), np.uint8)
    img[..., 1] = 255                 # hidden colour of the transparent pixels
    img[6:18, 6:18] = (255, 0, 0, 255)
    path = tmp_path / "logo.png"
    Image.fromarray(img, "RGBA").save(path)
    return str(path)


def test_load_target_keeps_alpha_only_when_asked(transparent_png, target_png):
    from diffbmp_jax.io.images import load_target
    rgba = load_target(transparent_png, keep_alpha=True)
    assert rgba.shape == (24, 24, 4)
    np.testing.assert_array_equal(rgba[..., 3], (np.pad(np.ones((12, 12)), 6)).astype(np.float32))
    flat = load_target(transparent_png)  # the default: over white
    assert flat.shape == (24, 24, 3)
    np.testing.assert_allclose(flat[0, 0], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(flat[12, 12], [1.0, 0.0, 0.0])
    assert load_target(target_png, keep_alpha=True).shape == (24, 24, 3)  # opaque: no alpha to keep
    small = load_target(transparent_png, 12, keep_alpha=True)  # resized with premultiplied colours
    assert small.shape == (12, 12, 4)
    edge = small[small[..., 3] > 0.05]
    assert np.all(edge[:, 1] < 0.05), "the hidden green bled into the visible edge"


@pytest.mark.parametrize("shape", [(600, 440), (97, 1203)])
def test_a_large_jpeg_target_is_downscaled_as_from_its_full_size(tmp_path, shape):
    """load_target decodes a JPEG at a reduced DCT scale before the Lanczos resize: the same size
    as resizing the full image, and the same picture to well under a grey level."""
    from diffbmp_jax.io.images import load_target
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * xx) * np.cos(7 * yy), np.cos(5 * xx + 3 * yy), np.sin(4 * yy)], -1)
    path = tmp_path / "photo.jpg"
    Image.fromarray(((img * 0.5 + 0.5) * 255).astype(np.uint8), "RGB").save(path, quality=95)
    got = load_target(str(path), 64)
    with Image.open(path) as im:
        scale = 64 / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        want = np.asarray(im.convert("RGB").resize(size, Image.LANCZOS), np.float32) / 255.0
    assert got.shape == want.shape == (size[1], size[0], 3)
    assert 10 * np.log10(1.0 / np.mean((got - want) ** 2)) > 40.0


def test_fit_command_keeps_the_targets_transparency(tmp_path, transparent_png, monkeypatch):
    """`diffbmp-jax fit` hands a transparent target to the fit with its alpha, as db.fit(path) reads it."""
    import diffbmp_jax.fitting.image as image
    seen = []
    real = image.fit

    def spy(target, *args, **kwargs):
        seen.append(np.asarray(target))
        return real(target, *args, **kwargs)

    monkeypatch.setattr(image, "fit", spy)
    out = tmp_path / "out"
    cli.run(["fit", transparent_png, "--stamps", STAMPS, "-n", "6", "--steps", "4", "-o", str(out),
             "--stamp-size", "16", "--no-progress", "--frames", "0"])
    from diffbmp_jax.io.images import as_target_image
    np.testing.assert_allclose(seen[0], as_target_image(transparent_png), atol=1e-6)
    assert Image.open(out / "result.png").mode == "RGB" and (out / "params.npz").exists()
