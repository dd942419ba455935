"""``ClipModel``: weights, config, preprocessing and tokenizer in one object."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import jax
import jax.numpy as jnp

from diffbmp_jax.clip import loading
from diffbmp_jax.clip.model import CLIP, ClipConfig
from diffbmp_jax.clip.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, preprocess

__all__ = ["ClipModel", "load_clip", "image_features", "text_features", "cosine_similarity"]


@functools.partial(jax.jit, static_argnums=0)
def _image_features(config: ClipConfig, params, pixels):
    return CLIP(config).apply({"params": params}, pixels, method=CLIP.encode_image)


@functools.partial(jax.jit, static_argnums=0)
def _text_features(config: ClipConfig, params, input_ids, attention_mask):
    return CLIP(config).apply({"params": params}, input_ids, attention_mask, method=CLIP.encode_text)


def image_features(config: ClipConfig, params, pixels):
    """Pure function: normalised pixels ``[B, S, S, 3]`` -> ``[B, projection_dim]``.

    Pass ``params`` as an argument of your own ``jit``-ed function (not as a
    closed-over constant) so XLA does not embed hundreds of MB of weights.
    """
    return CLIP(config).apply({"params": params}, pixels, method=CLIP.encode_image)


def text_features(config: ClipConfig, params, input_ids, attention_mask=None):
    """Pure function: token ids ``[B, L]`` -> ``[B, projection_dim]``."""
    return CLIP(config).apply({"params": params}, input_ids, attention_mask, method=CLIP.encode_text)


def cosine_similarity(a, b):
    """Pairwise cosine similarity ``[..., M, D] x [..., K, D] -> [..., M, K]``."""
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True)
    return a @ jnp.swapaxes(b, -1, -2)


@dataclasses.dataclass(eq=False)
class ClipModel:
    """A CLIP model in JAX: Flax params plus what is needed to feed it.

    Attributes:
      config: :class:`ClipConfig` (static, hashable).
      params: Flax parameter pytree of :class:`~diffbmp_jax.clip.model.CLIP`.
      image_mean, image_std: RGB normalisation (from ``preprocessor_config.json``
        when present, else OpenAI's).
      path: the checkpoint folder, or ``None`` for an in-memory model.
      hf_config: the ``transformers.CLIPConfig`` it came from (for saving).
      tokenizer: a transformers CLIP tokenizer, loaded lazily from ``path``.
    """

    config: ClipConfig
    params: Any
    image_mean: tuple = OPENAI_CLIP_MEAN
    image_std: tuple = OPENAI_CLIP_STD
    path: Path | None = None
    hf_config: Any = None
    tokenizer: Any = None

    # -- construction -------------------------------------------------------
    @classmethod
    def from_hf_config(cls, hf_config, key=None, tokenizer=None) -> "ClipModel":
        """Randomly initialised model for a ``transformers.CLIPConfig`` (tests, demos)."""
        config = ClipConfig.from_hf(hf_config)
        return cls(config=config, params=loading.init_params(config, key), hf_config=hf_config,
                   tokenizer=tokenizer)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` in HF ``CLIPModel`` layout."""
        from safetensors.numpy import save_file
        if self.hf_config is None:
            raise ValueError("save_pretrained needs the model's transformers CLIPConfig (hf_config)")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.hf_config.to_json_file(str(d / "config.json"))
        save_file(loading.to_hf_state_dict(self.params), str(d / "model.safetensors"),
                  metadata={"format": "pt"})
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(d))
        return d

    # -- properties ---------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Side in pixels of the square images the vision tower takes."""
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        """Maximum number of tokens per text."""
        return self.config.text.max_position_embeddings

    # -- text ---------------------------------------------------------------
    def get_tokenizer(self):
        """The CLIP tokenizer from ``path`` (``tokenizer.json`` or ``vocab.json`` + ``merges.txt``)."""
        if self.tokenizer is None:
            if self.path is None:
                raise ValueError("this ClipModel has no tokenizer and no folder to load one from; pass "
                                 "token ids directly or set ClipModel.tokenizer")
            has_fast = (self.path / "tokenizer.json").is_file()
            has_bpe = (self.path / "vocab.json").is_file() and (self.path / "merges.txt").is_file()
            if not (has_fast or has_bpe):
                raise loading.ClipModelNotFoundError(
                    f"no CLIP tokenizer in {self.path}: place tokenizer.json (or vocab.json and merges.txt), "
                    "plus tokenizer_config.json and special_tokens_map.json, from the same Hugging Face "
                    "model there, or pass token ids directly")
            from transformers import CLIPTokenizer
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self.tokenizer

    def tokenize(self, texts: str | Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and attention mask, both ``[B, context_length]`` int32 (padded, truncated)."""
        if isinstance(texts, str):
            texts = [texts]
        tok = self.get_tokenizer()
        enc = tok(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                  return_tensors="np")
        return np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32)

    def encode_text(self, input_ids, attention_mask=None) -> jax.Array:
        """``[B, L]`` token ids -> ``[B, projection_dim]`` text features (not unit-norm)."""
        ids = jnp.asarray(input_ids, jnp.int32)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2:
            raise ValueError(f"input_ids must have shape (B, L), got {tuple(ids.shape)}")
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32).reshape(ids.shape)
        return _text_features(self.config, self.params, ids, mask)

    def embed_text(self, texts: str | Sequence[str]) -> jax.Array:
        """Tokenises and encodes: ``[B, projection_dim]`` text features."""
        ids, mask = self.tokenize(texts)
        return self.encode_text(ids, mask)

    # -- images -------------------------------------------------------------
    def preprocess(self, images, method: str = "bicubic") -> jax.Array:
        """``[..., H, W, 3]`` in [0, 1] -> normalised ``[..., S, S, 3]`` (differentiable)."""
        return preprocess(images, self.image_size, self.image_mean, self.image_std, method)

    def encode_image(self, pixels) -> jax.Array:
        """Normalised ``[B, S, S, 3]`` pixels -> ``[B, projection_dim]`` (not unit-norm)."""
        pixels = jnp.asarray(pixels, jnp.float32)
        if pixels.ndim == 3:
            pixels = pixels[None]
        return _image_features(self.config, self.params, pixels)

    def embed_images(self, images) -> jax.Array:
        """``[B, H, W, 3]`` (or ``[H, W, 3]``) in [0, 1], any size -> ``[B, projection_dim]``."""
        images = jnp.asarray(images, jnp.float32)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must have shape (B, H, W, 3), got {tuple(images.shape)}")
        return self.encode_image(self.preprocess(images))

    def similarity(self, images, texts) -> jax.Array:
        """Cosine similarity ``[B_images, B_texts]`` of images in [0, 1] and prompts."""
        return cosine_similarity(self.embed_images(images), self.embed_text(texts))


def load_clip(name_or_path: str | os.PathLike = loading.DEFAULT_MODEL) -> ClipModel:
    """Loads a Hugging Face CLIP checkpoint from a folder or the HF cache, offline.

    Args:
      name_or_path: a folder with ``config.json`` + ``model.safetensors`` (+
        tokenizer files), or a hub id such as ``"openai/clip-vit-base-patch32"``
        looked up in the local Hugging Face cache.

    Raises:
      ClipModelNotFoundError: the files are not there; the message lists them.
    """
    d = loading.resolve_model_dir(name_or_path)
    hf_config = loading.read_hf_config(d)
    config = ClipConfig.from_hf(hf_config)
    params = loading.load_weights(d, config)
    mean, std = OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    pp = d / "preprocessor_config.json"
    if pp.is_file():
        with open(pp) as f:
            j = json.load(f)
        mean = tuple(float(x) for x in j.get("image_mean", mean))
        std = tuple(float(x) for x in j.get("image_std", std))
    return ClipModel(config=config, params=params, image_mean=mean, image_std=std, path=d,
                     hf_config=hf_config)
