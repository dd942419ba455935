"""``diffbmp-jax batch``: many targets in one batched fit, outputs per target, bad inputs."""

import json

import numpy as np
import pytest
from PIL import Image

from diffbmp_jax.cli import batch as batch_cli, app as cli
from diffbmp_jax import export

STAMPS = str(cli.ASSETS / "stamps")
SMALL = ["--stamps", STAMPS, "-n", "10", "--steps", "6", "--stamp-size", "16", "--no-progress"]


def _save(path, img):
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path)


@pytest.fixture
def targets(tmp_path):
    """A folder of two 24x32 images and a 40x40 one elsewhere (other aspect ratio)."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "in"
    folder.mkdir()
    _save(folder / "a.png", np.kron(rng.uniform(size=(3, 4, 3)), np.ones((8, 8, 1))))
    _save(folder / "b.png", np.kron(rng.uniform(size=(3, 4, 3)), np.ones((8, 8, 1))))
    (folder / "notes.txt").write_text("not an image, skipped")
    square = tmp_path / "square.png"
    _save(square, np.kron(rng.uniform(size=(5, 5, 3)), np.ones((8, 8, 1))))
    return folder, square


def test_batch_end_to_end(tmp_path, targets, capsys):
    folder, square = targets
    out = tmp_path / "out"
    rc = cli.main(["batch", str(folder), str(square), "--size", "32", "-o", str(out), "--export", "png,svg"]
                  + SMALL)
    assert rc == 0
    names = ["0_a", "1_b", "2_square"]
    assert sorted(p.name for p in out.iterdir()) == names + ["summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert [t["folder"] for t in summary["targets"]] == names
    assert summary["size"] == [24, 32] and summary["devices"] >= 1
    for k, name in enumerate(names):
        files = {p.name for p in (out / name).iterdir()}
        assert files == {"result.png", "params.npz", "result.svg"}, files
        # Every target was brought to the first one's size (the square one centre-cropped).
        img = np.asarray(Image.open(out / name / "result.png"), np.float32) / 255
        assert img.shape == (24, 32, 3)
        z = np.load(out / name / "params.npz")
        assert z["xy"].shape == (10, 2) and int(z["height"]) == 24 and int(z["width"]) == 32
        assert "<svg" in (out / name / "result.svg").read_text()[:500]
    # The reported PSNR is that of the written image against the (resized) target.
    _, tg = batch_cli.load_targets([str(folder), str(square)], 32)
    for k, name in enumerate(names):
        img = np.asarray(Image.open(out / name / "result.png"), np.float32) / 255
        mse = float(np.mean((img - tg[k]) ** 2))
        assert summary["targets"][k]["psnr"] == pytest.approx(-10 * np.log10(mse), abs=0.2)
    printed = capsys.readouterr().out
    assert "3 targets" in printed and "compiling" in printed and "ms/step" in printed
    assert summary["compile_time"] > 0 and summary["step_time"] > 0


def test_centre_crop_keeps_the_middle():
    img = np.zeros((10, 30, 3), np.float32)
    img[:, 10:20] = 1.0  # a white middle third
    out = batch_cli.fit_to(img, 10, 10)
    assert out.shape == (10, 10, 3) and np.all(out > 0.99)


def test_transparent_targets_keep_their_alpha(tmp_path, targets):
    """One transparent target makes the batch RGBA (the opaque ones with alpha 1), as fit_batch keeps it."""
    folder, _ = targets
    logo = np.zeros((24, 32, 4), np.uint8)
    logo[4:20, 8:24] = (255, 0, 0, 255)  # an opaque square in a transparent field
    Image.fromarray(logo, "RGBA").save(folder / "c.png")
    paths, imgs = batch_cli.load_targets([str(folder)], 32)
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"] and imgs.shape == (3, 24, 32, 4)
    np.testing.assert_array_equal(imgs[:2, ..., 3], 1.0)
    np.testing.assert_array_equal(imgs[2, ..., 3], (logo[..., 3] / 255.0).astype(np.float32))
    out = tmp_path / "out_alpha"
    assert cli.main(["batch", str(folder), "--size", "32", "-o", str(out)] + SMALL) == 0
    assert (out / "2_c" / "result.png").exists()
    paths, imgs = batch_cli.load_targets([str(folder / "a.png"), str(folder / "b.png")], 32)
    assert imgs.shape == (2, 24, 32, 3)  # all opaque: RGB as before


def _bad(tmp_path, argv, exc, word):
    out = tmp_path / "bad_out"
    with pytest.raises(exc, match=word):
        cli.run(argv + ["-o", str(out)])
    assert not out.exists()
    assert cli.main(argv + ["-o", str(out)]) == 2


def test_batch_bad_inputs(tmp_path, targets):
    folder, _ = targets
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.txt").write_text("no images")
    _bad(tmp_path, ["batch", str(empty)] + SMALL, ValueError, "targets")
    _bad(tmp_path, ["batch", str(tmp_path / "nope")] + SMALL, (ValueError, FileNotFoundError), "targets")
    _bad(tmp_path, ["batch", str(folder), "--devices", "99"] + SMALL, ValueError, "devices")
    _bad(tmp_path, ["batch", str(folder), "-n", "0"] + SMALL[:2], ValueError, "num_primitives")
    _bad(tmp_path, ["batch", str(folder), "--export", "png,nosuch"] + SMALL, ValueError, "export")


def test_batch_failure_leaves_no_files(tmp_path, targets, monkeypatch):
    """An export failing after the fit: no target folder, no summary is left behind."""
    folder, _ = targets
    calls = []

    def failing(fmt, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        open(path, "w").write("<svg/>")

    monkeypatch.setattr(export, "export", failing)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="disk full"):
        cli.run(["batch", str(folder), "--export", "png,svg", "-o", str(out)] + SMALL)
    assert len(calls) == 2
    assert list(out.rglob("*")) == []  # the folder itself may exist, empty
