"""Video fitting, flicker metric, spatially constrained regions, and their CLI."""

import json

import numpy as np
import pytest
from PIL import Image

import diffbmp_jax as db
from diffbmp_jax.cli import app as cli
from diffbmp_jax.tasks.regions import combine_atlases, fit_regions
from diffbmp_jax.tasks.video import (changed_pixels, touches, fit_video, flicker, footprint_radius,
                                     frame_psnr, synthetic_video)
from diffbmp_jax.io.video import load_video, video_fps

STAMPS = str(cli.ASSETS / "stamps")
H = W = 32


@pytest.fixture(scope="module")
def atlas():
    return db.stamps.load_images(STAMPS, size=16)


def moving_stamp_video(t=5, size=H):
    """A dark disc moving right by 2 px per frame over a static textured background."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = np.stack([0.6 + 0.3 * np.sin(xs / 5), 0.5 + 0.3 * np.cos(ys / 4), 0.4 + 0.0 * xs], -1)
    frames = []
    for k in range(t):
        f = bg.copy()
        f[(xs - (6 + 2 * k)) ** 2 + (ys - 8) ** 2 <= 9] = (0.1, 0.1, 0.8)
        frames.append(f)
    return np.clip(np.stack(frames), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def video():
    return moving_stamp_video()


@pytest.fixture(scope="module")
def full(video, atlas):
    return fit_video(video, atlas, num_primitives=40, steps=50, steps_next=15, key=0)


def test_flicker_metric():
    a = np.zeros((3, 4, 4, 3), np.float32)
    b = a.copy()
    b[1] = 0.5  # a flash in the middle frame
    assert flicker(a, a) == 0.0
    assert flicker(b, a) == pytest.approx(0.5)  # |0.5 - 0| twice, averaged over 2 transitions
    assert flicker(a, b) == pytest.approx(-0.5)
    np.testing.assert_allclose(frame_psnr(a + 0.1, a), [20.0] * 3, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        flicker(a, a[:2])


def test_freezing_keeps_untouched_primitives_bit_identical(full, video, atlas):
    assert full.frames.shape == video.shape and len(full.params) == len(video)
    radius = footprint_radius(atlas)[np.asarray(full.template)]
    total_frozen = 0
    for k in range(2, len(video)):  # frame 1 onward is carried in optimiser space
        prev, cur = full.params[k - 1], full.params[k]
        changed = changed_pixels(video[k - 1], video[k], 0.05, 2)
        frozen = ~touches(changed, prev, radius)
        frozen &= np.asarray(prev.opacity) >= full.config.prune_opacity  # invisible ones may respawn
        total_frozen += int(frozen.sum())
        for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit"):
            a, b = np.asarray(getattr(prev, f))[frozen], np.asarray(getattr(cur, f))[frozen]
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f
        # and the primitives over the moving disc did move
        assert not np.array_equal(np.asarray(prev.xy)[~frozen], np.asarray(cur.xy)[~frozen])
    assert total_frozen > 0 and full.frozen[1:].sum() > 0


def test_full_method_flickers_less_than_independent_fits(full, video, atlas):
    indep = fit_video(video, atlas, num_primitives=40, steps=50, key=0, warm_start=False)
    assert full.flicker < 0.7 * indep.flicker
    assert full.psnr.mean() >= indep.psnr.mean() - 0.5
    assert np.all(np.isfinite(full.psnr)) and np.isfinite(full.flicker)


def test_batched_window_and_temporal_loss(video, atlas):
    r = fit_video(video[:4], atlas, num_primitives=20, steps=20, steps_next=6, key=1, batch=3,
                  temporal_weight=0.01)
    assert r.frames.shape == (4, H, W, 3) and len(r.params) == 4
    assert np.all(np.isfinite(r.psnr)) and r.psnr.min() > 8.0
    # frames of a window start from the same primitives; with a huge motion
    # penalty they stay close to them
    still = fit_video(video[:3], atlas, num_primitives=20, steps=20, steps_next=6, key=1, temporal_weight=1e4,
                      freeze=False, prune=False)
    moved = np.abs(np.asarray(still.params[2].xy) - np.asarray(still.params[1].xy)).max()
    assert moved < 0.2


def test_frame_maps_on_the_cpu_come_from_the_host(video, monkeypatch):
    """On the CPU backend every frame's maps are the NumPy ones, equal to the traceable maps."""
    from diffbmp_jax.fitting import init
    from diffbmp_jax.tasks import video as V
    frame = np.asarray(video[1])
    want = init.structure_maps(frame, 40)
    monkeypatch.setattr(init, "structure_maps", lambda *a, **k: pytest.fail("traced maps on the CPU"))
    got = V.frame_maps(frame, 40, 3.0)
    for name in ("prob", "scale", "angle"):
        span = float(np.ptp(np.asarray(want[name]))) or 1.0
        assert np.max(np.abs(got[name] - np.asarray(want[name]))) <= 2e-4 * span, name


def test_fit_video_bad_inputs(atlas, tmp_path):
    with pytest.raises(ValueError, match="frames"):
        fit_video(np.zeros((4, 4, 3)), atlas, num_primitives=4, steps=1)
    with pytest.raises(TypeError, match="load_video"):
        fit_video("clip.mp4", atlas, num_primitives=4, steps=1)
    with pytest.raises(ValueError, match="frames\\[1\\]"):
        fit_video([np.zeros((4, 4, 3)), np.zeros((5, 4, 3))], atlas, num_primitives=4, steps=1)
    with pytest.raises(ValueError, match="temporal_weight"):
        fit_video(np.zeros((2, 4, 4, 3)), atlas, num_primitives=4, steps=1, temporal_weight=-1.0)
    with pytest.raises(ValueError, match="batch"):
        fit_video(np.zeros((2, 4, 4, 3)), atlas, num_primitives=4, steps=1, batch=0)


def test_load_video_gif_folder_and_errors(tmp_path):
    vid = synthetic_video(3, 20, 24, seed=1)
    u8 = (vid * 255 + 0.5).astype(np.uint8)
    db.export.write_frames(tmp_path / "v.gif", list(u8), fps=5)
    g = load_video(tmp_path / "v.gif")
    assert g.shape == (3, 20, 24, 3) and g.dtype == np.float32
    assert np.abs(g - vid).mean() < 0.05  # GIF palette
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, f in enumerate(u8):
        Image.fromarray(f).save(folder / f"{k:03d}.png")
    d = load_video(folder, max_frames=2, size=12)
    assert d.shape == (2, 10, 12, 3)
    np.testing.assert_allclose(load_video(folder)[1], u8[1] / 255.0, atol=1e-6)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match="path: cannot read video"):
        load_video(bad)
    with pytest.raises(FileNotFoundError, match="path"):
        load_video(tmp_path / "missing.gif")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frame images"):
        load_video(tmp_path / "empty")


def test_load_video_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    vid = synthetic_video(3, 16, 16, seed=2)
    db.export.write_frames(tmp_path / "v.mp4", list(vid), fps=5)
    m = load_video(tmp_path / "v.mp4")
    assert m.shape == (3, 16, 16, 3) and np.abs(m - vid).mean() < 0.1


def _masks():
    ys, xs = np.mgrid[0:H, 0:W]
    left = (xs - 9) ** 2 + (ys - 16) ** 2 < 64
    right = (xs >= 20) & (ys >= 4) & (ys < 28)
    return left, right


def test_regions_confine_every_rendered_pixel(atlas):
    target = synthetic_video(1, H, W, seed=3)[0]
    small = db.stamps.load_images(STAMPS + "/heart.png", size=24)  # another bitmap size: combined
    left, right = _masks()
    r = fit_regions(target, [(left, atlas, 15), (right.astype(np.uint8) * 255, small, 12)], steps=30, key=0,
                    margin=1.0)
    assert r.atlas.size == (24, 24) and r.atlas.num == atlas.num + 1
    assert set(np.asarray(r.template)[r.group == 1]) == {atlas.num}
    for g, m in enumerate((left, right)):
        sel = r.group == g
        _, alpha = db.render(r.params[sel], r.atlas, height=H, width=W, template=r.template[sel])
        drawn = np.asarray(alpha) > 0
        assert drawn.sum() > 10  # the group does paint
        assert not (drawn & ~r.masks[g]).any(), f"group {g} draws outside its dilated mask"
        assert r.masks[g][m].all()
        # centres inside the mask itself
        xy = np.rint(np.asarray(r.params.xy)[sel]).astype(int)
        assert m[xy[:, 1], xy[:, 0]].all()
    assert np.isfinite(r.psnr)


def test_regions_bad_inputs(atlas):
    target = np.zeros((H, W, 3), np.float32)
    left, _ = _masks()
    with pytest.raises(ValueError, match=r"groups\[0\] mask has size"):
        fit_regions(target, [(left[:10], atlas, 4)], steps=1)
    with pytest.raises(ValueError, match=r"groups\[1\] mask is empty"):
        fit_regions(target, [(left, atlas, 4), (np.zeros((H, W)), atlas, 4)], steps=1)
    thin = np.zeros((H, W), bool)
    thin[5, 5] = True
    with pytest.raises(ValueError, match=r"groups\[0\] mask is too thin"):
        fit_regions(target, [(thin, atlas, 4)], steps=1, margin=0.0)
    with pytest.raises(ValueError, match=r"groups\[0\] num_primitives"):
        fit_regions(target, [(left, atlas, 0)], steps=1)
    with pytest.raises(ValueError, match="groups"):
        fit_regions(target, [], steps=1)


def test_combine_atlases_offsets(atlas):
    other = db.Atlas.from_arrays(np.ones((2, 8, 4), np.float32))
    comb, off = combine_atlases([other, atlas])
    assert off == [0, 2] and comb.size == (16, 16) and comb.rgb is not None
    m = np.asarray(comb.mask[0])
    assert m[:, :3].max() == 0 and m[:, 5:11].min() > 0.9  # padded to a square, centred


@pytest.mark.slow
def test_cli_video_end_to_end(tmp_path, capsys):
    vid = moving_stamp_video(t=3, size=20)
    gif = tmp_path / "in.gif"
    db.export.write_frames(gif, list(vid), fps=5)
    out = tmp_path / "out"
    rc = cli.main(["video", str(gif), "--stamps", STAMPS, "-n", "10", "--steps", "8", "--steps-next", "4",
                   "-o", str(out), "--format", "gif", "--side-by-side", "--stamp-size", "16", "--no-progress"])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"video.gif", "params.npz", "history.json"}
    v = load_video(out / "video.gif")
    assert v.shape == (3, 20, 40, 3)  # input | render
    z = np.load(out / "params.npz")
    assert z["xy"].shape == (3, 10, 2) and z["template"].shape == (10,) and int(z["height"]) == 20
    h = json.loads((out / "history.json").read_text())
    assert len(h["psnr"]) == 3 and "flicker" in h
    assert h["compile_time"] > 0 and h["step_time"] > 0
    printed = capsys.readouterr().out
    assert "flicker" in printed and "compiling" in printed
    # written at the input's frame rate (5 fps = 200 ms a frame)
    assert h["fps"] == pytest.approx(5.0) and video_fps(out / "video.gif") == pytest.approx(5.0, abs=1e-6)
    # unreadable input: exit code 2, one-line error naming the argument, nothing written
    bad = tmp_path / "bad.gif"
    bad.write_text("nope")
    assert cli.main(["video", str(bad), "--stamps", STAMPS, "-o", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "path: cannot read video" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_cli_regions(tmp_path, capsys):
    target = synthetic_video(1, H, W, seed=4)[0]
    Image.fromarray((target * 255).astype(np.uint8)).save(tmp_path / "t.png")
    left, right = _masks()
    Image.fromarray(left.astype(np.uint8) * 255).save(tmp_path / "l.png")
    Image.fromarray(right.astype(np.uint8) * 255).save(tmp_path / "r.png")
    out = tmp_path / "out"
    s = cli.run(["regions", str(tmp_path / "t.png"), "--region", f"{tmp_path / 'l.png'}:{STAMPS}:8",
                 "--region", f"{tmp_path / 'r.png'}:{STAMPS}/star.png:6", "--steps", "10", "--stamp-size", "16",
                 "-o", str(out)])
    assert np.isfinite(s["psnr"])
    z = np.load(out / "params.npz")
    assert z["xy"].shape == (14, 2) and list(np.bincount(z["group"])) == [8, 6]
    h = json.loads((out / "history.json").read_text())
    assert h["compile_time"] > 0 and h["step_time"] > 0
    assert "10 steps" in capsys.readouterr().out
    with pytest.raises(ValueError, match="region: expected MASK:STAMPS:N"):
        cli.run(["regions", str(tmp_path / "t.png"), "--region", "nocolons", "-o", str(out)])
    small = tmp_path / "s.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(small)
    with pytest.raises(ValueError, match=r"groups\[0\] mask has size"):
        cli.run(["regions", str(tmp_path / "t.png"), "--region", f"{small}:{STAMPS}:3", "-o", str(tmp_path / "x")])
