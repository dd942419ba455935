"""Bad inputs get clear errors naming the argument; files, names and frame rates come back as written."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from PIL import Image

import diffbmp_jax as db
from scenes import random_atlas, random_scene

H = W = 16


@pytest.fixture
def small():
    rng = np.random.default_rng(3)
    atlas = random_atlas(rng, num=2, h=6, w=6)
    target = rng.uniform(size=(H, W, 3)).astype(np.float32)
    return atlas, target


@pytest.mark.parametrize("bad, match", [(np.nan, r"params.scale contains 1 non-finite"), (-1.0, "params.scale must be > 0")])
def test_fit_refuses_broken_init_params(small, bad, match):
    atlas, target = small
    params = db.Primitives.create(xy=[[4.0, 4.0], [8.0, 8.0]], scale=[3.0, bad])
    with pytest.raises(ValueError, match=f"init_params: {match}"):
        db.fit(target, atlas, num_primitives=2, steps=2, key=0, progress=False,
               init_params=(params, np.zeros(2, np.int32)))
    with pytest.raises(TypeError, match="init_params must be a pair"):
        db.fit(target, atlas, num_primitives=2, steps=2, key=0, progress=False, init_params=params)


@pytest.mark.parametrize("name", ["adam_b1", "adam_b2"])
def test_adam_betas_of_one_are_refused(name):
    with pytest.raises(ValueError, match=rf"config.{name} must be in \[0, 1\)"):
        db.FitConfig(**{name: 1.0})
    assert getattr(db.FitConfig(**{name: 0.5}), name) == 0.5


def test_numpy_ints_are_accepted_as_ints():
    cfg = db.FitConfig(log_every=np.int64(5), prune_every=np.int32(10))
    assert cfg.log_every == 5 and type(cfg.log_every) is int and type(cfg.prune_every) is int
    with pytest.raises(ValueError, match="config.log_every must be an int >= 1"):
        db.FitConfig(log_every=np.int64(0))
    assert hash(cfg) == hash(db.FitConfig(log_every=5, prune_every=10))


def test_blur_wider_than_the_bitmaps_is_refused_before_any_step(small):
    atlas, target = small
    with pytest.raises(ValueError, match=r"blur_sigma must be at most the bitmaps' size \(6 px\)"):
        db.fit(target, atlas, num_primitives=2, steps=2, key=0, progress=False, blur_sigma=1e6)


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_psd_chunk_must_be_positive(tmp_path, small, chunk):
    atlas, _ = small
    params = random_scene(np.random.default_rng(4), 3, H, W)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        db.export_psd(tmp_path / "x.psd", params, atlas, height=H, width=W, chunk=chunk)
    assert os.listdir(tmp_path) == []


def test_psd_layer_names_round_trip_in_unicode(tmp_path, small):
    psd_tools = pytest.importorskip("psd_tools")
    atlas, _ = small
    params = random_scene(np.random.default_rng(5), 3, H, W)
    names = ["🌸 flower", "Größe", "plain"]
    path = tmp_path / "names.psd"
    db.export_psd(path, params, atlas, height=H, width=W, layer_names=names)
    layers = list(psd_tools.PSDImage.open(path))
    assert [layer.name for layer in layers] == ["Background"] + names


def test_files_written_by_the_api_honour_the_umask(tmp_path, small):
    atlas, _ = small
    params = random_scene(np.random.default_rng(6), 3, H, W)
    old = os.umask(0o027)
    try:
        png = db.export_png(tmp_path / "a.png", params, atlas, height=H, width=W)
        gif = db.export.write_frames(tmp_path / "a.gif", [np.zeros((4, 4, 3))] * 2, fps=5)
    finally:
        os.umask(old)
    for path in (png, gif):
        assert os.stat(path).st_mode & 0o777 == 0o640, path


def test_gif_frame_delays_follow_the_frame_rate(tmp_path):
    frames = [np.full((4, 4, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    path = db.export.write_frames(tmp_path / "a.gif", frames, fps=5)
    with Image.open(path) as im:
        delays = []
        for k in range(im.n_frames):
            im.seek(k)
            delays.append(im.info["duration"])
    assert delays == [200, 200, 200]


@pytest.mark.parametrize("kw, match", [
    (dict(xy=3.0, scale=1.0), r"xy must have shape \(N, 2\)"),
    (dict(xy=[[1, 2], [3, 4]], scale=[1, 2, 3]), r"scale must be a scalar or have shape \(2,\)"),
    (dict(xy=[[1, 2], [3, 4]], scale=1, color=[[1, 0, 0]] * 3), r"color must be a scalar or have shape \(2, 3\)"),
])
def test_primitives_create_names_the_argument(kw, match):
    with pytest.raises(ValueError, match=match):
        db.Primitives.create(**kw)


@pytest.mark.parametrize("name, value", [("DIFFBMP_NUM_THREADS", v) for v in ("abc", "-1", "2.5", "0")]
                         + [("DIFFBMP_CPU_PAIRS_PER_GROUP", "x")])
def test_bad_cpu_kernel_settings_are_refused(name, value):
    script = textwrap.dedent("""
        import numpy as np, diffbmp_jax as db
        atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))
        params = db.Primitives.create(xy=[[4.0, 4.0]], scale=2.0)
        try:
            db.render(params, atlas, height=8, width=8, backend="cpu")
        except ValueError as e:
            print("ValueError:", e)
    """)
    from diffbmp_jax.rendering.registry import CPU_ENV
    env = dict(os.environ, JAX_PLATFORMS="cpu", **{name: value})
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert f"ValueError: {name} must be a positive integer ({CPU_ENV[name]}), got '{value}'" \
        in out.stdout, out.stdout + out.stderr[-2000:]


_X64 = textwrap.dedent("""
    import jax, numpy as np
    assert jax.config.jax_enable_x64
    import diffbmp_jax as db
    rng = np.random.default_rng(0)
    atlas = db.Atlas.from_arrays(rng.uniform(size=(2, 6, 6)).astype(np.float32),
                                 rng.uniform(size=(2, 6, 6, 3)).astype(np.float32))
    target = rng.uniform(size=(16, 16, 3))  # float64, as x64 code makes them
    opts = dict(num_primitives=5, key=0, progress=False, log_every=2, prune_every=2)
    r = db.fit(target, atlas, steps=4, **opts)  # the chunked loop with respawn
    v = db.fit_video(np.stack([target] * 2), atlas, steps=4, steps_next=2, **opts)  # the masked engine runs
    dtypes = {str(getattr(r.params, f).dtype) for f in ("xy", "scale", "rotation", "opacity_logit", "color_logit")}
    dtypes |= {str(r.image.dtype), str(db.render(r.params, atlas, height=16, width=16)[0].dtype)}
    dtypes |= {str(db.render_mse(r.params, atlas, target, 1.0, height=16, width=16).dtype)}  # the folded loss
    finite = all(np.isfinite(x).all() for x in (r.psnr, v.psnr))
    print("X64", sorted(dtypes), finite)
""")


def test_fits_and_renders_work_under_x64(tmp_path):
    env = dict(os.environ, JAX_ENABLE_X64="1", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _X64], env=env, capture_output=True, text=True, timeout=600,
                         cwd=tmp_path)
    assert "X64 ['float32'] True" in out.stdout, out.stdout + out.stderr[-3000:]


def test_svg_declaring_a_huge_size_is_rasterised_at_the_stamp_size(tmp_path):
    pytest.importorskip("resvg_py")
    svg = tmp_path / "huge.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1000000" height="1000000">'
                   '<circle cx="500000" cy="500000" r="400000" fill="red"/></svg>')
    script = textwrap.dedent(f"""
        import numpy as np, diffbmp_jax as db
        atlas = db.load_stamps([{str(svg)!r}], size=32)
        m = np.asarray(atlas.mask)
        print("SVG", m.shape, round(float(m[0, 16, 16]), 2), round(float(m[0, 0, 0]), 2))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert "SVG (1, 32, 32) 1.0 0.0" in out.stdout, out.stdout + out.stderr[-2000:]


def test_a_canvas_too_large_for_memory_is_refused_before_allocating(tmp_path, small):
    atlas, _ = small
    params = random_scene(np.random.default_rng(7), 3, 32, 32)
    with pytest.raises(ValueError, match=r"height/width: a 3200000x3200000 canvas needs about"):
        db.export.export("png", tmp_path / "x.png", params, atlas, height=32, width=32, scale=100000)
    with pytest.raises(ValueError, match=r"height/width: a 3000000x3000000 canvas"):
        db.render(params, atlas, height=3_000_000, width=3_000_000)
    assert os.listdir(tmp_path) == []


def _png_header_only(path, width, height):
    """A PNG whose header declares ``width x height`` pixels (no pixel data: Pillow refuses it on open)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def test_decompression_bombs_are_refused_naming_the_argument(tmp_path):
    bomb = _png_header_only(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(ValueError, match=r"target: cannot read image .*bomb\.png.*decompression bomb"):
        db.io.load_target(bomb)
    with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png.*decompression bomb"):
        db.load_stamps([str(bomb)], size=16)


def test_counts_sizes_seeds_and_devices_out_of_range(small):
    atlas, target = small
    with pytest.raises(ValueError, match="size: stamps are at most 4096 px a side, got 100000"):
        db.load_stamps(["text:A"], size=100000)
    with pytest.raises(ValueError, match=r"num_primitives must be at most 2147483647"):
        db.fit(target, atlas, num_primitives=10**12, steps=1, key=0, progress=False)
    with pytest.raises(ValueError, match=r"key: an int seed must fit in 64 bits"):
        db.fit(target, atlas, num_primitives=2, steps=1, key=2**70, progress=False)
    with pytest.raises(TypeError, match=r"devices must be jax.Device objects .* got 'cpu' at devices\[0\]"):
        db.fit_batch(np.stack([target]), atlas, num_primitives=2, steps=1, key=0, progress=False, devices=["cpu"])


def test_ctrl_c_exits_130_with_one_line_and_no_output_folder(tmp_path):
    """SIGINT while the demo compiles and fits: exit status 130, one line on stderr, nothing written."""
    import signal
    import time
    out = tmp_path / "out"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "diffbmp_jax", "demo", "-o", str(out), "--steps", "2000",
                             "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "diffbmp-jax: interrupted", err[-3000:]
    assert "Traceback" not in err
    assert not out.exists()


def test_a_swallowed_ctrl_c_still_stops_the_cli(tmp_path, monkeypatch, capsys):
    """Python ignores a KeyboardInterrupt raised inside a gc callback (JAX has one): the CLI
    remembers the SIGINT and stops before writing anything, with status 130."""
    import signal
    from diffbmp_jax.cli import main
    from diffbmp_jax.fitting import image as fit_module
    real_fit = fit_module.fit

    def fit_with_a_swallowed_interrupt(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode
                pass
        except KeyboardInterrupt:
            pass  # what Python does inside a gc callback
        kwargs["callback"] = None  # no chunk-end check: the check before writing must catch it
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(fit_module, "fit", fit_with_a_swallowed_interrupt)
    out = tmp_path / "out"
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a background job
    rc = main(["demo", "-o", str(out), "-n", "3", "--steps", "2", "--size", "16", "--no-progress"])
    assert rc == 130 and not out.exists()
    assert capsys.readouterr().err.strip() == "diffbmp-jax: interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_missing_emoji_font_is_one_line_naming_the_option(tmp_path, monkeypatch, capsys):
    from diffbmp_jax.cli import main
    from diffbmp_jax.stamps import emoji
    monkeypatch.setattr(emoji, "find_emoji_font", lambda: None)
    target = tmp_path / "t.png"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(target)
    assert main(["fit", str(target), "--stamps", "emoji:🌸", "-n", "2", "--steps", "1", "-o",
                 str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no colour emoji font" in err[0] and "--emoji-font PATH" in err[0]
    assert not (tmp_path / "o").exists()


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


@pytest.mark.slow
@pytest.mark.skipif(_memory_bytes() < 100 * 2**30, reason="needs a machine with 100 GiB of memory")
@pytest.mark.parametrize("backend", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_kernels_address_canvases_past_2_to_31_elements(backend):
    """27000 x 27000 x 3 colour values (2.2e9 > 2^31): pixel offsets are 64-bit, forward and backward."""
    if backend not in db.rendering.available_backends():
        pytest.skip(f"{backend} kernels not available")
    side = 27000
    atlas = db.Atlas.from_arrays(np.ones((1, 4, 4), np.float32))
    params = db.Primitives.create(xy=[[3.0, 3.0], [side - 4.0, side - 4.0]], scale=2.0, opacity=0.5,
                                  color=[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    color, alpha = db.render(params, atlas, height=side, width=side, backend=backend)
    corner = np.asarray(color[side - 4, side - 4])
    assert np.allclose(corner, [0.0, 0.0, 0.99 * 0.5], atol=1e-5), corner
    assert np.allclose(np.asarray(color[3, 3]), [0.99 * 0.5, 0.0, 0.0], atol=1e-5)
    assert float(alpha[side // 2, side // 2]) == 0.0
    del color, alpha
    grad = jax.grad(lambda p: db.render(p, atlas, height=side, width=side, backend=backend)[1][side - 4, side - 2])
    g = np.asarray(grad(params).xy)
    assert np.all(g[0] == 0.0) and np.any(g[1] != 0.0), g


def test_cli_refuses_bad_numbers_before_fitting(tmp_path, monkeypatch, capsys):
    """--fps 0, a seed beyond 64 bits and a huge --stamp-size: one line, exit 2, no fit run, nothing written."""
    from diffbmp_jax.cli import main
    from diffbmp_jax.fitting import image
    from diffbmp_jax.tasks import video

    def never(*a, **k):
        raise AssertionError("the fit ran")
    monkeypatch.setattr(video, "fit_video", never)
    monkeypatch.setattr(image, "fit", never)
    frames = tmp_path / "clip.gif"
    db.export.write_frames(frames, [np.full((8, 8, 3), v, np.float32) for v in (0.2, 0.8)], fps=5)
    target = tmp_path / "t.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(target)
    stamps = ["--stamps", "text:A", "-n", "2", "--steps", "1", "--no-progress"]
    cases = [(["video", str(frames), "--fps", "0"], "--fps"),
             (["fit", str(target), "--seed", str(2**70)], "seed"),
             (["fit", str(target), "--stamp-size", "100000"], "size")]
    for k, (argv, word) in enumerate(cases):
        out = tmp_path / f"o{k}"
        assert main(argv + stamps + ["-o", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and word in err[0] and "AssertionError" not in err[0], (argv, err)
        assert not out.exists()
    from diffbmp_jax.cli import options
    from diffbmp_jax.stamps import raster
    assert options.MAX_STAMP_SIZE == raster.MAX_STAMP_SIZE
