"""Saved results: Primitives.save / load, load_result on a fit's folder, fit from a file or PIL image, py.typed."""

import os
import pathlib
import zipfile

import numpy as np
import jax
import pytest
from PIL import Image

import diffbmp_jax as db
from diffbmp_jax.files import AtomicWriter
from diffbmp_jax.io.images import as_target_image
from diffbmp_jax.io.results import write_image_outputs
from diffbmp_jax.scene.primitives import FIELDS

from fit_scenes import shape_atlas

H = W = 16


def random_params(n=5, seed=0) -> db.Primitives:
    rng = np.random.default_rng(seed)
    return db.Primitives(xy=rng.uniform(-2, 18, (n, 2)).astype(np.float32),
                         scale=rng.uniform(0.5, 6, n).astype(np.float32),
                         rotation=rng.normal(0, 3, n).astype(np.float32),
                         opacity_logit=rng.normal(0, 4, n).astype(np.float32),
                         color_logit=rng.normal(0, 4, (n, 3)).astype(np.float32))


def assert_same_params(a: db.Primitives, b: db.Primitives):
    for f in FIELDS:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert y.dtype == np.float32 and x.shape == y.shape, f
        assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), f  # bit for bit


@pytest.fixture(scope="module")
def target_png(tmp_path_factory) -> pathlib.Path:
    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([xx * 15, yy * 15, 255 - xx * 8 - yy * 7], -1).astype(np.uint8)
    rgb[4:9, 5:11] = (250, 40, 30)
    path = tmp_path_factory.mktemp("target") / "target.png"
    Image.fromarray(rgb).save(path)
    return path


def tiny_fit(target):
    return db.fit(target, shape_atlas(8), num_primitives=4, steps=2, key=jax.random.key(3), progress=False)


@pytest.fixture(scope="module")
def fitted(target_png, tmp_path_factory):
    """A real fit from the PNG's array, written as ``diffbmp-jax fit`` writes its folder."""
    target = np.asarray(Image.open(target_png))
    result = tiny_fit(target)
    out = tmp_path_factory.mktemp("fit") / "out"
    with AtomicWriter(out) as writer:
        write_image_outputs(writer, result.image, result.params, result.template, H, W,
                            result.config.color_blend, [], 0)
    return result, out


# --- Primitives.save / load ---------------------------------------------------------------------------------------

def test_save_load_round_trip_is_bit_exact(tmp_path):
    params = random_params()
    path = tmp_path / "p.npz"
    params.save(path, template=np.array([1, 0, 1, 1, 0]), height=H, width=W + 1, color_blend=0.25)
    assert os.listdir(tmp_path) == ["p.npz"]  # no temporary file left, no ".npz" appended
    assert_same_params(params, db.Primitives.load(path))
    assert_same_params(params, db.Primitives.load(str(path)))
    with np.load(path) as z:  # the keys and dtypes of a fit's params.npz
        assert sorted(z.files) == sorted(FIELDS + ("template", "height", "width", "color_blend"))
        assert z["template"].dtype == np.int32 and z["height"].dtype == z["width"].dtype == np.int32
        assert z["color_blend"].dtype == np.float32 and z["xy"].dtype == np.float32
    r = db.load_result(path)
    assert_same_params(params, r.params)
    assert (r.height, r.width, r.color_blend, r.image) == (H, W + 1, 0.25, None)
    assert r.template.dtype == np.int32 and r.template.tolist() == [1, 0, 1, 1, 0]


def test_save_without_extras_and_overwrite(tmp_path):
    path = tmp_path / "p.npz"
    random_params(3, seed=1).save(path)
    params = random_params(7, seed=2)
    params.save(path)  # replaces the file
    assert_same_params(params, db.Primitives.load(path))
    with np.load(path) as z:
        assert sorted(z.files) == sorted(FIELDS)


def test_a_failed_save_leaves_the_old_file_and_no_partial_one(tmp_path, monkeypatch):
    path = tmp_path / "p.npz"
    old = random_params(3, seed=1)
    old.save(path)

    def broken(fh, **arrays):
        fh.write(b"PK half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        random_params(4).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["p.npz"]
    assert_same_params(old, db.Primitives.load(path))


def test_save_checks_its_arguments_before_writing(tmp_path):
    params = random_params(3)
    with pytest.raises(ValueError, match=r"template must be an int array of shape \(3,\)"):
        params.save(tmp_path / "p.npz", template=[0, 1])
    with pytest.raises(ValueError, match="template ids"):
        params.save(tmp_path / "p.npz", template=[0, -1, 2])
    with pytest.raises(ValueError, match="height"):
        params.save(tmp_path / "p.npz", height=0)
    with pytest.raises(ValueError, match="color_blend"):
        params.save(tmp_path / "p.npz", color_blend=2.0)
    with pytest.raises(FileNotFoundError, match="path: cannot write .*does not exist"):
        params.save(tmp_path / "missing" / "p.npz")
    with pytest.raises(IsADirectoryError, match="path: .* is a folder"):
        params.save(tmp_path)
    with pytest.raises(TypeError, match="inside jit"):
        jax.jit(lambda p: p.save(tmp_path / "p.npz"))(params)
    assert os.listdir(tmp_path) == []


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=f"path: no such file: '{missing}'"):
        db.Primitives.load(missing)
    with pytest.raises(IsADirectoryError, match="path: .* is a folder"):
        db.Primitives.load(tmp_path)
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match=f"path: '{text}' is not an .npz archive"):
        db.Primitives.load(text)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="is not an .npz archive.*empty"):
        db.Primitives.load(tmp_path / "empty.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        db.Primitives.load(tmp_path / "one.npy")
    good = tmp_path / "good.npz"
    random_params().save(good)
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.npz' is not an .npz archive"):
        db.Primitives.load(tmp_path / "cut.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match=r"other.npz' has no field\(s\) \['xy'"):
        db.Primitives.load(tmp_path / "other.npz")


def test_load_refuses_missing_and_mis_shaped_fields(tmp_path):
    fields = {f: np.asarray(a) for f, a in random_params(4).to_dict().items()}
    np.savez(tmp_path / "no_color.npz", **{f: a for f, a in fields.items() if f != "color_logit"})
    with pytest.raises(ValueError, match=r"no_color.npz' has no field\(s\) \['color_logit'\]"):
        db.Primitives.load(tmp_path / "no_color.npz")
    np.savez(tmp_path / "short.npz", **{**fields, "rotation": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"short.npz': rotation must have shape \(N,\) .* got \(3,\)"):
        db.Primitives.load(tmp_path / "short.npz")
    np.savez(tmp_path / "flat.npz", **{**fields, "xy": np.zeros(8, np.float32)})
    with pytest.raises(ValueError, match=r"xy must have shape \(N, 2\)"):
        db.Primitives.load(tmp_path / "flat.npz")
    np.savez(tmp_path / "text.npz", **{**fields, "scale": np.array(["a", "b", "c", "d"])})
    with pytest.raises(ValueError, match="scale must hold real numbers"):
        db.Primitives.load(tmp_path / "text.npz")
    stacked = {f: np.stack([a, a]) for f, a in fields.items()}  # a video fit's per-frame params.npz
    np.savez(tmp_path / "video.npz", **stacked)
    with pytest.raises(ValueError, match="one per video frame"):
        db.Primitives.load(tmp_path / "video.npz")


# --- load_result on a real fit's folder ----------------------------------------------------------------------------

def test_load_result_reads_a_fit_folder_and_re_renders_the_image(fitted):
    result, out = fitted
    for given in (out, str(out), out / "params.npz"):
        r = db.load_result(given)
        assert isinstance(r, db.SavedResult)
        assert_same_params(result.params, r.params)
        assert_same_params(result.params, db.Primitives.load(out / "params.npz"))
        assert r.template.dtype == np.int32 and np.array_equal(r.template, np.asarray(result.template))
        assert (r.height, r.width, r.color_blend) == (H, W, result.config.color_blend)
        assert r.image.dtype == np.float32 and r.image.shape == (H, W, 3)
        np.testing.assert_allclose(r.image, np.asarray(result.image), atol=0.5 / 255 + 1e-6)  # the PNG, rounded
    cfg = result.config
    color, alpha = db.render(r.params, shape_atlas(8), height=r.height, width=r.width, template=r.template,
                             color_blend=r.color_blend, alpha_max=cfg.alpha_max, antialias=cfg.antialias,
                             backend=cfg.backend)
    image = np.clip(np.asarray(db.composite(color, alpha, 1.0)), 0.0, 1.0)  # output_background "white"
    np.testing.assert_allclose(image, np.asarray(result.image), atol=1e-5, rtol=0)


def test_load_result_errors_name_the_folder(tmp_path, fitted):
    _, out = fitted
    with pytest.raises(FileNotFoundError, match="folder: no such folder or file"):
        db.load_result(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="folder: .* holds no params.npz"):
        db.load_result(tmp_path)
    (tmp_path / "params.npz").write_text("junk")
    with pytest.raises(ValueError, match="folder: .*params.npz' is not an .npz archive"):
        db.load_result(tmp_path)
    with np.load(out / "params.npz") as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "params.npz", **{k: a for k, a in arrays.items() if k != "height"})
    with pytest.raises(ValueError, match=r"has no field\(s\) \['height'\].*Primitives.load"):
        db.load_result(tmp_path)
    np.savez(tmp_path / "params.npz", **{k: a for k, a in arrays.items() if k != "scale"})
    with pytest.raises(ValueError, match=r"folder: .*has no field\(s\) \['scale'\]"):
        db.load_result(tmp_path)
    np.savez(tmp_path / "params.npz", **{**arrays, "template": arrays["template"][:2]})
    with pytest.raises(ValueError, match="template must be 4 integer ids"):
        db.load_result(tmp_path)
    np.savez(tmp_path / "params.npz", **{**arrays, "width": np.float32(16.5)})
    with pytest.raises(ValueError, match="width must be a single integer"):
        db.load_result(tmp_path)
    np.savez(tmp_path / "params.npz", **arrays)
    (tmp_path / "result.png").write_text("not a png")
    with pytest.raises(ValueError, match="folder: cannot read image .*result.png"):
        db.load_result(tmp_path)


# --- fit from a file or a PIL image ------------------------------------------------------------------------------

def test_fit_from_a_png_path_or_a_pil_image_equals_the_array(target_png, fitted):
    result, _ = fitted
    with Image.open(target_png) as im:
        others = [tiny_fit(target_png), tiny_fit(str(target_png)), tiny_fit(im)]
    for other in others:
        assert_same_params(result.params, other.params)
        assert np.array_equal(np.asarray(result.template), np.asarray(other.template))
        assert np.array_equal(np.asarray(result.image), np.asarray(other.image))


def test_as_target_image_keeps_transparency_and_size(tmp_path, target_png):
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[1:4, 2:5] = (10, 200, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cut.png")
    for given in (tmp_path / "cut.png", Image.open(tmp_path / "cut.png")):
        a = as_target_image(given)
        assert a.shape == (5, 7, 4) and a.dtype == np.float32
        np.testing.assert_array_equal(a, rgba / np.float32(255))
    assert as_target_image(target_png).shape == (H, W, 3)
    assert as_target_image(Image.open(target_png).convert("L")).shape == (H, W, 3)
    array = np.zeros((2, 2, 3))
    assert as_target_image(array) is array


def test_fit_target_file_errors_name_target(tmp_path):
    atlas = shape_atlas(8)
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=f"target: no such file: '{missing}'"):
        db.fit(missing, atlas, num_primitives=2, steps=0, key=0, progress=False)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="target: cannot read image .*bad.png"):
        db.fit(str(tmp_path / "bad.png"), atlas, num_primitives=2, steps=0, key=0, progress=False)
    with pytest.raises(ValueError, match="target: .* is a folder"):
        db.fit(tmp_path, atlas, num_primitives=2, steps=0, key=0, progress=False)


# --- packaging ---------------------------------------------------------------------------------------------------

def test_the_package_is_marked_typed():
    package = pathlib.Path(db.__file__).resolve().parent
    assert (package / "py.typed").is_file()  # wheel.packages ships the whole folder (PEP 561 marker)
