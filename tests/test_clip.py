"""CLIP in JAX: loading, parity with transformers, tokenisation, text-guided fitting.

Everything runs on a tiny randomly initialised CLIP (hidden 32, 2 layers, 32x32
images) written to a temporary folder in the Hugging Face layout, so no
download is needed. The PyTorch parity checks run when torch is installed.
"""

import json
import string

import numpy as np
import pytest
import jax
import jax.numpy as jnp

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

import diffbmp_jax as db
from diffbmp_jax import clip
from diffbmp_jax.clip import ClipModelNotFoundError, load_clip
from diffbmp_jax.tasks.text import fit_text

# Tiny BPE vocabulary: letters, their word-final forms, merges for "galaxy" and "star".
_LETTERS = list(string.ascii_lowercase)
_MERGES = ["g a", "ga l", "gal a", "gala x", "galax y</w>", "s t", "st a", "sta r</w>"]
_VOCAB = (_LETTERS + [c + "</w>" for c in _LETTERS] + ["ga", "gal", "gala", "galax", "galaxy</w>", "st", "sta",
          "star</w>", "<|startoftext|>", "<|endoftext|>"])
BOS, EOS = len(_VOCAB) - 2, len(_VOCAB) - 1


def tiny_config(eos_token_id=EOS):
    return transformers.CLIPConfig(
        text_config=dict(vocab_size=len(_VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=BOS,
                         eos_token_id=eos_token_id, pad_token_id=EOS),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)


def write_tokenizer(d):
    with open(d / "vocab.json", "w") as f:
        json.dump({t: i for i, t in enumerate(_VOCAB)}, f)
    with open(d / "merges.txt", "w") as f:
        f.write("#version: 0.2\n" + "\n".join(_MERGES) + "\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny CLIP written through ClipModel.save_pretrained, plus tokenizer files."""
    d = tmp_path_factory.mktemp("tiny_clip")
    clip.ClipModel.from_hf_config(tiny_config(), jax.random.key(0)).save_pretrained(d)
    write_tokenizer(d)
    return d


@pytest.fixture(scope="module")
def model(model_dir):
    return load_clip(model_dir)


def test_load_roundtrip_and_tokenizer(model_dir, model):
    again = clip.ClipModel.from_hf_config(tiny_config(), jax.random.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(model.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert model.image_size == 32 and model.context_length == 16
    ids, mask = model.tokenize("A galaxy of stars")
    assert ids.shape == (1, 16) and ids.dtype == np.int32
    want = [BOS, _VOCAB.index("a</w>"), _VOCAB.index("galaxy</w>"), _VOCAB.index("o"), _VOCAB.index("f</w>")]
    assert ids[0, :5].tolist() == want
    assert mask[0].sum() == int(np.argmax(ids[0] == EOS)) + 1
    # String path and token-id path give the same embedding.
    np.testing.assert_allclose(model.embed_text("a galaxy"), model.encode_text(*model.tokenize("a galaxy")),
                               atol=1e-6)


def test_hf_cache_lookup(model_dir, tmp_path, monkeypatch):
    snap = tmp_path / "hub" / "models--someorg--tiny-clip" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    m = load_clip("someorg/tiny-clip")
    assert m.path == snap
    assert m.tokenize("star")[0][0, 1] == _VOCAB.index("star</w>")


def test_missing_model_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub"))
    with pytest.raises(ClipModelNotFoundError) as e:
        load_clip("openai/clip-vit-base-patch32")
    msg = str(e.value)
    for needle in ("config.json", "model.safetensors", "vocab.json", "merges.txt",
                   str(tmp_path / "empty_hub" / "models--openai--clip-vit-base-patch32" / "snapshots")):
        assert needle in msg, needle
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text("{}")
    with pytest.raises(ClipModelNotFoundError, match="incomplete: missing model.safetensors"):
        load_clip(tmp_path / "partial")
    with pytest.raises(ClipModelNotFoundError, match="no such folder"):
        load_clip(tmp_path / "nowhere")


def test_tokenizer_missing_error(model_dir, tmp_path):
    d = tmp_path / "notok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        (d / f).write_bytes((model_dir / f).read_bytes())
    m = load_clip(d)
    with pytest.raises(ClipModelNotFoundError, match="tokenizer.json"):
        m.tokenize("a galaxy")
    m.encode_text(np.array([[BOS, 3, EOS]]))  # ids need no tokenizer


@pytest.mark.parametrize("eos_token_id", [2, EOS])  # 2: legacy argmax pooling; else first EOS
def test_matches_transformers(tmp_path, eos_token_id):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    hf = transformers.CLIPModel(tiny_config(eos_token_id)).eval()
    hf.save_pretrained(tmp_path)
    m = load_clip(tmp_path)
    rng = np.random.RandomState(0)
    pixels = rng.randn(2, 3, 32, 32).astype(np.float32)
    ids = np.full((2, 16), EOS, np.int64)  # padded with EOS, like the real tokenizer
    ids[:, 0] = BOS
    ids[0, 1:4] = [3, 30, 7]
    ids[1, 1:9] = rng.randint(0, BOS, 8)
    mask = (np.arange(16)[None] <= np.array([[4], [9]])).astype(np.int64)
    with torch.no_grad():
        want_img = hf.get_image_features(pixel_values=torch.tensor(pixels)).pooler_output.numpy()
        want_txt = hf.get_text_features(input_ids=torch.tensor(ids),
                                        attention_mask=torch.tensor(mask)).pooler_output.numpy()
    got_img = np.asarray(m.encode_image(pixels.transpose(0, 2, 3, 1)))  # NCHW -> NHWC
    got_txt = np.asarray(m.encode_text(ids, mask))
    np.testing.assert_allclose(got_img, want_img, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got_txt, want_txt, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(m.encode_text(ids)), want_txt, atol=1e-4, rtol=1e-4)
    # And the other direction: our writer produces a checkpoint transformers reads.
    m.save_pretrained(tmp_path / "ours")
    back = transformers.CLIPModel.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        again = back.get_image_features(pixel_values=torch.tensor(pixels)).pooler_output.numpy()
    np.testing.assert_allclose(again, want_img, atol=1e-5)
    # pytorch_model.bin (older snapshots) is read through torch when no safetensors file exists.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_bytes((tmp_path / "config.json").read_bytes())
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    np.testing.assert_allclose(np.asarray(load_clip(tmp_path / "bin").encode_text(ids, mask)), want_txt,
                               atol=1e-4, rtol=1e-4)


def test_preprocess_and_cutouts(model):
    img = jax.random.uniform(jax.random.key(1), (40, 48, 3))
    x = clip.preprocess(img[None], 32)
    assert x.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(clip.normalize(jnp.asarray(clip.OPENAI_CLIP_MEAN)), 0.0, atol=1e-7)
    cutouts = jax.jit(clip.random_cutouts, static_argnums=(2, 3))
    views = cutouts(jax.random.key(2), img[:32, :32], 5, 32)
    assert views.shape == (5, 32, 32, 3)
    np.testing.assert_allclose(views[0], img[:32, :32], atol=1e-5)  # view 0: the whole canvas
    assert float(jnp.abs(views[1:] - views[0]).mean()) > 1e-3
    g = jax.jit(jax.grad(lambda im: jnp.sum(cutouts(jax.random.key(3), im, 3, 32) ** 2)))(img)
    assert g.shape == img.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
    with pytest.raises(ValueError, match="resize with clip.preprocess"):
        model.encode_image(np.zeros((1, 16, 16, 3), np.float32))


def _disc_atlas():
    yy, xx = np.mgrid[:16, :16]
    return db.Atlas.from_arrays(((xx - 7.5) ** 2 + (yy - 7.5) ** 2 < 49).astype(np.float32)[None])


def test_fit_text_increases_similarity(model):
    ids = np.array([BOS, _VOCAB.index("galaxy</w>"), EOS, EOS], np.int32)  # token-id path
    r = fit_text(ids, _disc_atlas(), model=model, num_primitives=12, steps=30, key=0, height=32, width=32,
                 num_cutouts=4, progress=False, log_every=10, lr_xy=0.01, lr_color=0.1)
    s = r.history["clip_score"]
    assert r.image.shape == (32, 32, 3) and r.params.num == 12
    assert s[-1] > s[0] + 0.02, s
    assert np.all(np.isfinite(r.history["loss"][1:]))
    assert r.compile_time > 0 and r.step_time > 0 and r.compile_time + r.step_time <= r.wall_time


def test_fit_text_errors(model):
    with pytest.raises(ValueError, match="prompt contains an empty prompt"):
        fit_text("  ", _disc_atlas(), model=model, num_primitives=2, steps=1, key=0, progress=False)
    with pytest.raises(ValueError, match="negative_prompts token ids must lie in"):
        fit_text("star", _disc_atlas(), model=model, num_primitives=2, steps=1, key=0, progress=False,
                 negative_prompts=np.array([BOS, 999, EOS]))
    with pytest.raises(TypeError, match="model must be"):
        fit_text("x", _disc_atlas(), model=None, num_primitives=2, steps=1, key=0)


def test_text_cli_with_negative_prompt_and_target(model_dir, tmp_path):
    """`diffbmp-jax text` end to end: string prompt (tokenizer), negative prompt, image target."""
    from PIL import Image
    from diffbmp_jax.cli.app import main, run
    stamp = np.zeros((16, 16, 4), np.uint8)
    stamp[4:12, 4:12] = 255
    Image.fromarray(stamp).save(tmp_path / "sq.png")
    target = np.zeros((24, 32, 3), np.uint8)
    target[:, :16] = 255
    Image.fromarray(target).save(tmp_path / "target.png")
    out = tmp_path / "out"
    summary = run(["text", "a galaxy", "--stamps", str(tmp_path / "sq.png"), "--clip-model", str(model_dir),
                   "-n", "6", "--steps", "2", "--cutouts", "2", "--negative", "star", "--target",
                   str(tmp_path / "target.png"), "--image-weight", "0.5", "--stamp-size", "16", "-o", str(out),
                   "--no-progress", "--frames", "2"])
    assert np.isfinite(summary["clip_score"])
    assert Image.open(out / "result.png").size == (32, 24)  # the target's size wins
    assert np.load(out / "params.npz")["xy"].shape == (6, 2)
    history = json.loads((out / "history.json").read_text())
    assert history["prompt"] == "a galaxy" and history["compile_time"] > 0 and history["step_time"] > 0
    assert (out / "progress.gif").is_file()
    # A missing model is a one-line-per-fact error with exit status 2, not a traceback.
    assert main(["text", "x", "--stamps", str(tmp_path / "sq.png"), "--clip-model", str(tmp_path / "none"),
                 "-o", str(tmp_path / "out2")]) == 2
    assert not (tmp_path / "out2").exists()
