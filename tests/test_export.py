"""Exporters: PSD, SVG, PNG, GIF/MP4; each read back and compared with render."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import diffbmp_jax as db
from diffbmp_jax.export import FORMATS, export, write_frames

psd_tools = pytest.importorskip("psd_tools")
iio = pytest.importorskip("imageio.v3")

H, W = 40, 48
BG = (1.0, 0.5, 0.2)


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:16, :16]
    disc = ((xx - 7.5) ** 2 + (yy - 7.5) ** 2 < 40).astype(np.float32)
    bar = ((yy > 3) & (yy < 12) & (xx > 1) & (xx < 14)).astype(np.float32)
    # Smooth per-bitmap colour fields (gradients): the bitmaps' own colours.
    ramp = np.stack([xx / 15.0, yy / 15.0, 1 - xx / 15.0], -1).astype(np.float32)
    rgb = np.stack([ramp, ramp[::-1]])
    atlas = db.Atlas.from_arrays(np.stack([disc, bar]), rgb)
    n = 24
    params = db.Primitives.create(xy=rng.random((n, 2)) * [W, H], scale=rng.uniform(3, 12, n),
                                  rotation=rng.uniform(-3, 3, n), opacity=rng.uniform(0.2, 1, n),
                                  color=rng.random((n, 3)))
    template = jnp.asarray(rng.integers(0, 2, n), jnp.int32)
    return params, atlas, template


def _reference(scene, color_blend=0.0, scale=1, antialias=True):
    """The picture the rendered formats must hold (they antialias by default; an SVG embeds the bitmaps)."""
    params, atlas, template = scene
    h, w = H, W
    if scale != 1:
        params = db.Primitives(xy=params.xy * scale + (scale - 1) / 2, scale=params.scale * scale,
                               rotation=params.rotation, opacity_logit=params.opacity_logit,
                               color_logit=params.color_logit)
        h, w = H * scale, W * scale
    c, a = db.render(params, atlas, height=h, width=w, template=template, color_blend=color_blend,
                     antialias=antialias)
    return np.asarray(db.composite(c, a, jnp.asarray(BG)))


def _no_partials(folder):
    return [f for f in os.listdir(folder) if ".part" in f] == []


@pytest.mark.parametrize("color_blend", [0.0, 1.0])
def test_psd_layers_and_composite(tmp_path, scene, color_blend):
    params, atlas, template = scene
    path = tmp_path / "out.psd"
    export("psd", path, params, atlas, height=H, width=W, template=template, color_blend=color_blend,
           background=BG)
    psd = psd_tools.PSDImage.open(path)
    assert (psd.width, psd.height) == (W, H)
    layers = list(psd)
    assert len(layers) == params.num + 1
    assert layers[0].name == "Background" and layers[0].bbox == (0, 0, W, H)
    t = np.asarray(template)
    op = 0.99 / (1 + np.exp(-np.asarray(params.opacity_logit)))
    for i, layer in enumerate(layers[1:]):  # painter's order: bottom to top
        assert layer.name == f"{i:04d} stamp {t[i]}"
        assert layer.opacity == int(np.clip(round(255 * op[i]), 1, 255))
        x0, y0, x1, y1 = layer.bbox
        if x1 > x0:  # placed at its bounding box, not the full canvas
            assert (x1 - x0) * (y1 - y0) < W * H
    ref = _reference(scene, color_blend)
    # Composited from the layers by psd-tools: within 8-bit quantisation.
    img = np.asarray(psd.composite(force=True).convert("RGB"), np.float32) / 255
    err = np.abs(img - ref)
    assert err.max() < 4 / 255 and err.mean() < 1 / 255
    # The stored merged image (what simple viewers show) matches too.
    merged = np.asarray(psd.composite().convert("RGB"), np.float32) / 255
    assert np.abs(merged - ref).max() < 4 / 255


def test_psd_scale_and_offcanvas(tmp_path, scene):
    params, atlas, template = scene
    far = db.Primitives.create(xy=[[-500.0, -500.0]], scale=[4.0])
    p = db.Primitives(**{k: jnp.concatenate([getattr(params, k), getattr(far, k)]) for k in params.to_dict()})
    t = jnp.concatenate([template, jnp.zeros(1, jnp.int32)])
    export("psd", tmp_path / "x2.psd", p, atlas, height=H, width=W, template=t, background=BG, scale=2)
    psd = psd_tools.PSDImage.open(tmp_path / "x2.psd")
    assert (psd.width, psd.height) == (2 * W, 2 * H)
    assert len(list(psd)) == p.num + 1
    img = np.asarray(psd.composite(force=True).convert("RGB"), np.float32) / 255
    assert np.abs(img - _reference(scene, 0.0, scale=2)).max() < 4 / 255


def _tiny_stamp_pngs(folder):
    """Two tiny RGBA stamp files, ``flower.png`` and ``leaf.png``, in ``folder``."""
    from PIL import Image
    folder.mkdir()
    yy, xx = np.mgrid[:8, :8]
    disc = np.zeros((8, 8, 4), np.uint8)
    disc[..., 0] = 255
    disc[..., 3] = np.where((xx - 3.5) ** 2 + (yy - 3.5) ** 2 < 12, 255, 0)
    bar = np.zeros((8, 8, 4), np.uint8)
    bar[..., 1] = 200
    bar[2:6, 1:7, 3] = 255
    Image.fromarray(disc, "RGBA").save(folder / "flower.png")
    Image.fromarray(bar, "RGBA").save(folder / "leaf.png")
    return folder


def test_psd_layer_names_come_from_stamp_files(tmp_path):
    folder = _tiny_stamp_pngs(tmp_path / "stamps")
    # A folder (each file's stem, sorted), a single file and a text: spec.
    atlas = db.load_stamps([str(folder), str(folder / "leaf.png"), "text:word:Hi"], size=8)
    assert atlas.names == ("flower", "leaf", "leaf", "Hi")
    n = 6
    rng = np.random.default_rng(1)
    params = db.Primitives.create(xy=rng.random((n, 2)) * [W, H], scale=rng.uniform(3, 8, n))
    template = jnp.asarray([0, 1, 2, 3, 0, 1], jnp.int32)
    path = tmp_path / "named.psd"
    export("psd", path, params, atlas, height=H, width=W, template=template)
    names = [layer.name for layer in psd_tools.PSDImage.open(path)]
    assert names == ["Background", "0000 flower", "0001 leaf", "0002 leaf", "0003 Hi", "0004 flower",
                     "0005 leaf"]
    assert len(set(names)) == len(names)  # the index keeps repeated stamps apart
    # Explicit layer_names still win; an atlas from arrays keeps the old default names.
    db.export_psd(path, params, atlas, height=H, width=W, template=template, layer_names=list("abcdef"))
    assert [layer.name for layer in psd_tools.PSDImage.open(path)][1:] == list("abcdef")
    plain = db.Atlas.from_arrays(np.asarray(atlas.mask), np.asarray(atlas.rgb))
    assert plain.names is None
    export("psd", path, params, plain, height=H, width=W, template=template)
    assert [layer.name for layer in psd_tools.PSDImage.open(path)][1:] == [
        f"{i:04d} stamp {t}" for i, t in enumerate([0, 1, 2, 3, 0, 1])]
    # Unnamed entries fall back per bitmap; Unicode and whitespace are handled.
    mixed = db.Atlas.from_arrays(np.asarray(atlas.mask), names=["🌸 flower", None, "two\nlines", "Größe"])
    export("psd", path, params, mixed, height=H, width=W, template=template)
    assert [layer.name for layer in psd_tools.PSDImage.open(path)][1:5] == [
        "0000 🌸 flower", "0001 stamp 1", "0002 two lines", "0003 Größe"]


def test_atlas_names_are_static_metadata():
    import jax
    mask = np.ones((2, 4, 4), np.float32)
    named = db.Atlas.from_arrays(mask, names=["a", "b"])
    assert named.names == ("a", "b")
    # Not a leaf: grad and tree_map see the arrays only and carry the names along.
    assert len(jax.tree_util.tree_leaves(named)) == 1
    assert jax.grad(lambda a: a.mask.sum())(named).names == ("a", "b")
    # render does not see them: the same picture with or without names.
    params = db.Primitives.create(xy=[[10.0, 12.0], [30.0, 20.0]], scale=[6.0, 9.0])
    plain = db.Atlas.from_arrays(mask)
    c1, a1 = db.render(params, named, height=H, width=W)
    c2, a2 = db.render(params, plain, height=H, width=W)
    assert np.array_equal(np.asarray(c1), np.asarray(c2)) and np.array_equal(np.asarray(a1), np.asarray(a2))
    with pytest.raises(ValueError, match=r"Atlas.names must have 2 entries"):
        db.Atlas.from_arrays(mask, names=["a"])
    with pytest.raises(TypeError, match=r"Atlas.names\[1\] must be a str"):
        db.Atlas.from_arrays(mask, names=["a", 3])
    with pytest.raises(TypeError, match=r"Atlas.names must be a sequence"):
        db.Atlas.from_arrays(mask, names="ab")


@pytest.mark.parametrize("color_blend", [0.0, 1.0])
def test_svg_rasterised_matches_render(tmp_path, scene, color_blend):
    params, atlas, template = scene
    path = tmp_path / "out.svg"
    export("svg", path, params, atlas, height=H, width=W, template=template, color_blend=color_blend,
           background=BG)
    text = path.read_text()
    assert text.count("<use ") == params.num
    assert "<image " in text and "data:image/png;base64," in text
    from diffbmp_jax.export.svg import rasterize_svg_file
    img = rasterize_svg_file(path)[..., :3]
    assert img.shape == (H, W, 3)
    err = np.abs(img - _reference(scene, color_blend, antialias=False))
    # resvg resamples the embedded bitmaps with its own bilinear filter (premultiplied),
    # the renderer samples mask and colour separately: small differences at edges.
    assert err.mean() < 2 / 255 and np.percentile(err, 99) < 0.03 and err.max() < 0.15
    # scale only changes the displayed size; rasterised at 2x it is twice as large.
    export("svg", tmp_path / "x2.svg", params, atlas, height=H, width=W, template=template, scale=2)
    assert rasterize_svg_file(tmp_path / "x2.svg").shape[:2] == (2 * H, 2 * W)


@pytest.mark.parametrize("scale", [1, 2])
def test_png_at_scale(tmp_path, scene, scale):
    params, atlas, template = scene
    path = tmp_path / f"out{scale}.png"
    export("png", path, params, atlas, height=H, width=W, template=template, background=BG, scale=scale)
    img = iio.imread(path).astype(np.float32) / 255
    assert img.shape == (H * scale, W * scale, 3)
    assert np.abs(img - _reference(scene, 0.0, scale)).max() <= 0.51 / 255 + 1e-6
    if scale == 2:  # the same picture, sharper: 2x2 means agree with the 1x render
        small = img.reshape(H, 2, W, 2, 3).mean((1, 3))
        assert np.abs(small - _reference(scene)).mean() < 0.03


def test_gif_buildup_and_progress(tmp_path, scene):
    params, atlas, template = scene
    path = tmp_path / "build.gif"
    export("gif", path, params, atlas, height=H, width=W, template=template, background=BG,
           num_frames=4, hold=0)
    frames = iio.imread(path, index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (H, W)
    last = frames[-1][..., :3].astype(np.float32) / 255
    assert np.abs(last - _reference(scene)).mean() < 0.03  # GIF palette quantisation
    first = frames[0][..., :3].astype(np.float32) / 255
    assert np.abs(first - last).mean() > 0.01  # it builds up
    # Optimisation progress: one frame per params snapshot.
    export("gif", tmp_path / "prog.gif", [params[:5], params[:12], params], atlas, height=H, width=W,
           background=BG)
    assert iio.imread(tmp_path / "prog.gif", index=None).shape[0] == 3


def test_mp4(tmp_path, scene):
    pytest.importorskip("imageio_ffmpeg")
    params, atlas, template = scene
    path = tmp_path / "build.mp4"
    export("mp4", path, params, atlas, height=H, width=W, template=template, background=BG,
           num_frames=3, hold=2, fps=5)
    frames = db.load_video(path)  # float [T, H, W, 3] in [0, 1], read through imageio-ffmpeg
    assert frames.shape[0] == 5 and frames.shape[1:3] == (H, W)
    assert np.abs(frames[-1] - _reference(scene)).mean() < 0.05  # lossy H.264
    # Odd sizes are padded to even ones for H.264.
    write_frames(tmp_path / "odd.mp4", [np.zeros((9, 11, 3))] * 2, fps=2)
    assert db.load_video(tmp_path / "odd.mp4").shape[1:3] == (10, 12)


def test_mp4_without_ffmpeg_is_a_clear_error(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(ImportError, match="imageio-ffmpeg"):
        write_frames(tmp_path / "a.mp4", [np.zeros((4, 4, 3))], fps=2)
    assert not (tmp_path / "a.mp4").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_unwritable_path_leaves_nothing(tmp_path, scene, fmt):
    params, atlas, template = scene
    kw = dict(height=H, width=W, template=template)
    if fmt in ("gif", "mp4"):
        kw["num_frames"] = 2
    with pytest.raises(FileNotFoundError, match="path"):
        export(fmt, tmp_path / "no" / "such" / f"out.{fmt}", params, atlas, **kw)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="path"):
        export(fmt, blocker / f"out.{fmt}", params, atlas, **kw)
    with pytest.raises(IsADirectoryError, match="path"):
        export(fmt, tmp_path, params, atlas, **kw)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_failure_mid_write_leaves_no_partial_file(tmp_path, scene, monkeypatch):
    params, atlas, template = scene
    from diffbmp_jax.export import psd as psd_mod

    calls = {"n": 0}
    real = psd_mod.write_layer

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(psd_mod, "write_layer", flaky)
    with pytest.raises(RuntimeError, match="simulated"):
        export("psd", tmp_path / "out.psd", params, atlas, height=H, width=W, template=template)
    assert os.listdir(tmp_path) == []
    # An existing file is kept intact on failure.
    (tmp_path / "out.psd").write_bytes(b"old")
    calls["n"] = 0
    with pytest.raises(RuntimeError):
        export("psd", tmp_path / "out.psd", params, atlas, height=H, width=W, template=template)
    assert (tmp_path / "out.psd").read_bytes() == b"old" and _no_partials(tmp_path)


def test_bad_arguments(tmp_path, scene):
    params, atlas, template = scene
    with pytest.raises(ValueError, match="fmt"):
        export("bmp", tmp_path / "a.bmp", params, atlas, height=H, width=W)
    with pytest.raises(ValueError, match="template"):
        export("psd", tmp_path / "a.psd", params, atlas, height=H, width=W, template=jnp.full(params.num, 7))
    with pytest.raises(ValueError, match="background"):
        export("svg", tmp_path / "a.svg", params, atlas, height=H, width=W, background=(1, 2))
    with pytest.raises(ValueError, match="scale"):
        export("png", tmp_path / "a.png", params, atlas, height=H, width=W, scale=0)
    with pytest.raises(TypeError, match="height"):
        export("png", tmp_path / "a.png", params, atlas, height=1.5, width=W)
    no_rgb = db.Atlas.from_arrays(np.asarray(atlas.mask))
    with pytest.raises(ValueError, match="color_blend"):
        export("svg", tmp_path / "a.svg", params, no_rgb, height=H, width=W, color_blend=1.0)
    with pytest.raises(ValueError, match="frames"):
        write_frames(tmp_path / "a.gif", [])
    assert os.listdir(tmp_path) == []
