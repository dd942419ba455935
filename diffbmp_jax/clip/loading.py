"""Reading (and writing) Hugging Face CLIP checkpoints without the network.

A checkpoint directory holds ``config.json`` and ``model.safetensors`` (or a
sharded ``model.safetensors.index.json``, or ``pytorch_model.bin`` when torch is
installed), plus tokenizer files (``tokenizer.json`` or ``vocab.json`` +
``merges.txt``) and optionally ``preprocessor_config.json``. It may be any local
folder or a snapshot in the Hugging Face cache
(``$HF_HUB_CACHE`` or ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``, layout
``models--ORG--NAME/snapshots/REVISION/``). Nothing here downloads.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.clip.model import CLIP, ClipConfig

__all__ = ["ClipModelNotFoundError", "resolve_model_dir", "read_hf_config", "load_weights",
           "convert_hf_state_dict", "to_hf_state_dict", "init_params", "WEIGHT_FILES",
           "TOKENIZER_FILES", "DEFAULT_MODEL"]

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json")


class ClipModelNotFoundError(FileNotFoundError):
    """A CLIP checkpoint is missing or incomplete; the message says what to place where."""


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, honouring ``HF_HUB_CACHE`` and ``HF_HOME``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _has_weights(d: Path) -> bool:
    return (d / "config.json").is_file() and any((d / f).is_file() for f in WEIGHT_FILES)


def _how_to_fix(name: str, cache: Path) -> str:
    repo = name if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) else DEFAULT_MODEL
    org, model = repo.split("/")
    return (
        "Place these files (from https://huggingface.co/{repo}) in one folder:\n"
        "  config.json, model.safetensors        (weights; pytorch_model.bin also works if torch is installed)\n"
        "  tokenizer.json  or  vocab.json + merges.txt   (plus tokenizer_config.json, special_tokens_map.json)\n"
        "  preprocessor_config.json              (optional: image mean/std)\n"
        "then pass that folder (e.g. --clip-model /path/to/folder), or put them in the Hugging Face cache as\n"
        "  {cache}/models--{org}--{model}/snapshots/<any-revision>/\n"
        "On a machine with internet, for example:\n"
        "  hf download {repo} config.json model.safetensors tokenizer.json vocab.json merges.txt "
        "tokenizer_config.json special_tokens_map.json preprocessor_config.json --local-dir ./{model}\n"
        "(older huggingface_hub: huggingface-cli download ... with the same arguments)\n"
        "(diffbmp_jax never downloads.)"
    ).format(repo=repo, cache=cache, org=org, model=model)


def resolve_model_dir(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """Finds a local checkpoint folder for a path or a hub id like ``openai/clip-vit-base-patch32``.

    A path to an existing folder is used as is (it must contain ``config.json``
    and weights). A hub id is looked up in the Hugging Face cache: the snapshot
    that ``refs/main`` names if complete, else the newest complete snapshot.

    Raises:
      ClipModelNotFoundError: nothing usable found; the message lists the files
        needed and where to put them.
    """
    name = os.fspath(name_or_path)
    cache = hf_cache_dir()
    p = Path(name).expanduser()
    if p.is_dir():
        if _has_weights(p):
            return p
        missing = [f for f in ("config.json",) if not (p / f).is_file()]
        if not any((p / f).is_file() for f in WEIGHT_FILES):
            missing.append(" or ".join(WEIGHT_FILES))
        raise ClipModelNotFoundError(
            f"CLIP model folder {p} is incomplete: missing {', '.join(missing)}.\n" + _how_to_fix(name, cache))
    if p.is_file():
        raise ClipModelNotFoundError(
            f"clip model must be a folder (or a hub id), got the file {p}; pass the folder that holds "
            f"config.json and model.safetensors.\n" + _how_to_fix(DEFAULT_MODEL, cache))
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        repo_dir = cache / ("models--" + name.replace("/", "--"))
        snaps = repo_dir / "snapshots"
        candidates = []
        ref = repo_dir / "refs" / "main"
        if ref.is_file():
            candidates.append(snaps / ref.read_text().strip())
        if snaps.is_dir():
            candidates += sorted(snaps.iterdir(), key=lambda d: d.stat().st_mtime, reverse=True)
        for c in candidates:
            if c.is_dir() and _has_weights(c):
                return c
        where = (f"the cache has {repo_dir} but no snapshot there holds config.json and weights"
                 if repo_dir.exists() else f"it is not a folder and not in the Hugging Face cache ({cache})")
        raise ClipModelNotFoundError(f"CLIP model {name!r} not found: {where}.\n" + _how_to_fix(name, cache))
    raise ClipModelNotFoundError(f"CLIP model {name!r} not found: no such folder, and it is not a hub id "
                                 f"(ORG/NAME).\n" + _how_to_fix(DEFAULT_MODEL, cache))


def read_hf_config(model_dir: str | os.PathLike):
    """``transformers.CLIPConfig`` from ``model_dir/config.json`` (local file only)."""
    try:
        from transformers import CLIPConfig
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("loading CLIP needs transformers: pip install 'diffbmp-jax[clip]'") from e
    path = Path(model_dir) / "config.json"
    with open(path) as f:
        d = json.load(f)
    if d.get("model_type", "clip") != "clip":
        raise ValueError(f"{path} describes a {d.get('model_type')!r} model; a full CLIP model "
                         "(model_type 'clip', both towers) is needed")
    return CLIPConfig.from_dict(d)


def _read_state_dict(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of the checkpoint as float32 numpy arrays, keyed by HF name."""
    from safetensors import safe_open

    def read_safetensors(path):
        out = {}
        # The "flax" framework also decodes bfloat16, which numpy cannot.
        with safe_open(str(path), framework="flax") as f:
            for k in f.keys():
                out[k] = np.asarray(jnp.asarray(f.get_tensor(k), jnp.float32))
        return out

    if (model_dir / "model.safetensors").is_file():
        return read_safetensors(model_dir / "model.safetensors")
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for s in shards:
            out.update(read_safetensors(model_dir / s))
        return out
    try:
        import torch
    except ImportError:
        raise ClipModelNotFoundError(
            f"{model_dir} has only pytorch_model.bin, which needs torch to read; install torch or place "
            "model.safetensors there instead") from None
    sd = torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in sd.items()}


def _flax_path(key: str):
    """HF parameter name -> (flax path tuple, how to convert) or None to skip."""
    if key.endswith("position_ids"):
        return None  # a buffer, not a parameter
    parts = key.split(".")
    if parts[0] in ("clip", "model") and len(parts) > 1 and parts[1] in ("vision_model", "text_model"):
        parts = parts[1:]
    parts = [p for p in parts if p != "embeddings"]
    # "encoder.layers.3" -> "encoder", "layers_3"
    merged = []
    i = 0
    while i < len(parts):
        if parts[i] == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit():
            merged.append(f"layers_{parts[i + 1]}")
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    parts = merged
    if parts == ["logit_scale"]:
        return ("logit_scale",), "raw"
    leaf, module = parts[-1], parts[-2] if len(parts) > 1 else ""
    if module in ("position_embedding",) or leaf == "class_embedding":
        return tuple(parts[:-1] if leaf == "weight" else parts), "raw"
    if module == "token_embedding":
        return tuple(parts[:-1]) + ("embedding",), "raw"
    if module == "patch_embedding":
        return tuple(parts[:-1]) + ("kernel",), "conv"
    if "norm" in module or "layrnorm" in module:
        return tuple(parts[:-1]) + ("scale" if leaf == "weight" else "bias",), "raw"
    if leaf == "weight":
        return tuple(parts[:-1]) + ("kernel",), "linear"
    return tuple(parts), "raw"


def _param_shapes(config: ClipConfig):
    """Shape/dtype pytree of the Flax params (traced only: nothing is computed)."""
    s = config.vision.image_size
    pixels = jax.ShapeDtypeStruct((1, s, s, config.vision.num_channels), jnp.float32)
    ids = jax.ShapeDtypeStruct((1, config.text.max_position_embeddings), jnp.int32)
    return jax.eval_shape(CLIP(config).init, jax.random.key(0), pixels, ids)["params"]


def init_params(config: ClipConfig, key=None):
    """Randomly initialised parameters, for tests and demos (not a training init).

    Kernels and embeddings ~ N(0, 1/fan_in), LayerNorm scale 1, biases 0,
    ``logit_scale = log(1/0.07)``. Drawn with numpy from ``key`` (a
    ``jax.random.key`` or an int seed): a jitted Flax ``init`` would spend
    seconds compiling random-number kernels, even for a tiny model.
    """
    if key is None:
        seed = 0
    elif isinstance(key, (int, np.integer)):
        seed = int(key)
    else:
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "logit_scale":
            v = np.full(leaf.shape, np.log(1 / 0.07))
        elif name == "scale":
            v = np.ones(leaf.shape)
        elif name == "bias":
            v = np.zeros(leaf.shape)
        else:
            fan_in = int(np.prod(leaf.shape[:-1])) if name == "kernel" else leaf.shape[-1]
            v = rng.standard_normal(leaf.shape) / np.sqrt(max(fan_in, 1))
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, _param_shapes(config))


def convert_hf_state_dict(state_dict: dict, config: ClipConfig, source: str = "checkpoint"):
    """HF ``CLIPModel`` tensors -> Flax params of :class:`~diffbmp_jax.clip.model.CLIP`.

    Linear weights ``[out, in]`` become kernels ``[in, out]``; the patch conv
    ``[D, C, p, p]`` becomes ``[p, p, C, D]``; LayerNorm ``weight`` becomes
    ``scale``. Every expected parameter must be present with the right shape.

    Raises:
      ValueError: missing parameters or shape mismatches, naming them.
    """
    expected = _param_shapes(config)
    flat_expected = {tuple(getattr(k, "key", k) for k in path): leaf.shape
                     for path, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]}
    flat = {}
    unexpected = []
    for k, v in state_dict.items():
        m = _flax_path(k)
        if m is None:
            continue
        path, kind = m
        v = np.asarray(v, np.float32)
        if kind == "linear":
            v = v.T
        elif kind == "conv":
            v = v.transpose(2, 3, 1, 0)
        if path not in flat_expected:
            unexpected.append(k)
            continue
        flat[path] = v
    missing = ["/".join(p) for p in flat_expected if p not in flat]
    bad = [f"{'/'.join(p)}: {flat[p].shape} vs expected {s}" for p, s in flat_expected.items()
           if p in flat and tuple(flat[p].shape) != tuple(s)]
    if missing or bad:
        raise ValueError(f"{source} does not match its config.json as a CLIPModel: "
                         + (f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}; " if missing else "")
                         + (f"shape mismatch {bad[:8]}" if bad else ""))
    params: dict = {}
    for path, v in flat.items():
        d = params
        for p in path[:-1]:
            d = d.setdefault(p, {})
        d[path[-1]] = jnp.asarray(v)
    return params


def to_hf_state_dict(params) -> dict[str, np.ndarray]:
    """Inverse of :func:`convert_hf_state_dict`: Flax params -> HF ``CLIPModel`` names."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = [str(getattr(k, "key", k)) for k in path]
        v = np.asarray(leaf, np.float32)
        if len(parts) == 1:  # logit_scale
            out[parts[0]] = v
            continue
        tower = parts[0]
        rest = parts[1:]
        names = []
        for p in rest:
            m = re.fullmatch(r"layers_(\d+)", p)
            names += ["layers", m.group(1)] if m else [p]
        leaf_name = names[-1] if names else ""
        if tower in ("vision_model", "text_model") and names[0] in (
                "class_embedding", "patch_embedding", "position_embedding", "token_embedding"):
            names = ["embeddings"] + names
        if leaf_name == "kernel":
            if "patch_embedding" in names:
                v = v.transpose(3, 2, 0, 1)
            else:
                v = v.T
            names[-1] = "weight"
        elif leaf_name in ("scale", "embedding"):
            names[-1] = "weight"
        elif leaf_name == "position_embedding":
            names.append("weight")
        out[".".join([tower] + names)] = np.ascontiguousarray(v)
    return out


def load_weights(model_dir: str | os.PathLike, config: ClipConfig):
    """Flax params for ``config`` from the checkpoint in ``model_dir``."""
    model_dir = Path(model_dir)
    return convert_hf_state_dict(_read_state_dict(model_dir), config, source=str(model_dir))
