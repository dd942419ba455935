"""CLIP vision and text transformers in ``flax.linen``.

The module tree and parameter names mirror Hugging Face's ``CLIPModel`` so that
the weight converter (:mod:`diffbmp_jax.clip.loading`) is a renaming plus
transposes; the maths follows the same order of operations (pre-LN encoder
layers, causal text attention, EOS pooling, bias-free projections) so that the
embeddings agree with the PyTorch model to float32 round-off.

Layouts: images are ``NHWC`` (``[B, S, S, 3]``), already normalised by the
CLIP mean/std (see :mod:`diffbmp_jax.clip.preprocess`); token ids are
``[B, L]`` int32 with ``L <= max_position_embeddings``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

try:
    import flax.linen as nn
except ImportError as e:  # flax comes with the `clip` extra
    raise ImportError("CLIP (text-guided fitting, diffbmp_jax.clip) needs flax and transformers: "
                      "pip install 'diffbmp-jax[clip]'") from e

__all__ = ["TowerConfig", "ClipConfig", "CLIP", "VisionTransformer", "TextTransformer"]


def _quick_gelu(x):
    # OpenAI's approximation, used by the original CLIP checkpoints.
    return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS = {
    "quick_gelu": _quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # HF "gelu" is the exact erf form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """Hyper-parameters of one transformer tower (hashable, so Flax can hold it).

    Attributes:
      hidden_size: width ``D`` of the residual stream.
      intermediate_size: hidden width of the MLP.
      num_layers: number of encoder layers.
      num_heads: attention heads (``D`` must be divisible by it).
      hidden_act: activation name as in HF configs (``quick_gelu``, ``gelu``, ...).
      layer_norm_eps: LayerNorm epsilon.
      image_size, patch_size, num_channels: vision tower only (pixels).
      vocab_size, max_position_embeddings, eos_token_id: text tower only.
    """

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    image_size: int = 0
    patch_size: int = 0
    num_channels: int = 3
    vocab_size: int = 0
    max_position_embeddings: int = 0
    eos_token_id: int = 2

    def __post_init__(self):
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act={self.hidden_act!r} is not supported; expected one of "
                             f"{sorted(_ACTIVATIONS)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_heads}")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Both towers plus the shared embedding size ``projection_dim``."""

    vision: TowerConfig
    text: TowerConfig
    projection_dim: int

    @classmethod
    def from_hf(cls, config) -> "ClipConfig":
        """Builds from a ``transformers.CLIPConfig`` (or anything with the same fields)."""
        v, t = config.vision_config, config.text_config
        vision = TowerConfig(
            hidden_size=v.hidden_size, intermediate_size=v.intermediate_size,
            num_layers=v.num_hidden_layers, num_heads=v.num_attention_heads,
            hidden_act=v.hidden_act, layer_norm_eps=v.layer_norm_eps,
            image_size=v.image_size, patch_size=v.patch_size,
            num_channels=getattr(v, "num_channels", 3))
        text = TowerConfig(
            hidden_size=t.hidden_size, intermediate_size=t.intermediate_size,
            num_layers=t.num_hidden_layers, num_heads=t.num_attention_heads,
            hidden_act=t.hidden_act, layer_norm_eps=t.layer_norm_eps,
            vocab_size=t.vocab_size, max_position_embeddings=t.max_position_embeddings,
            eos_token_id=t.eos_token_id if t.eos_token_id is not None else 2)
        return cls(vision=vision, text=text, projection_dim=config.projection_dim)


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (HF layout)."""

    cfg: TowerConfig

    @nn.compact
    def __call__(self, x, bias=None):
        """``x [B, L, D]``; ``bias`` additive ``[B or 1, 1, L, L]`` (0 or -inf-ish)."""
        b, l, d = x.shape
        h = self.cfg.num_heads
        hd = d // h

        def heads(name):
            return nn.Dense(d, name=name)(x).reshape(b, l, h, hd)

        q, k, v = heads("q_proj"), heads("k_proj"), heads("v_proj")
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) * (hd ** -0.5)
        if bias is not None:
            logits = logits + bias
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, l, d)
        return nn.Dense(d, name="out_proj")(out)


class MLP(nn.Module):
    cfg: TowerConfig

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.cfg.intermediate_size, name="fc1")(x)
        x = _ACTIVATIONS[self.cfg.hidden_act](x)
        return nn.Dense(self.cfg.hidden_size, name="fc2")(x)


class EncoderLayer(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    cfg: TowerConfig

    @nn.compact
    def __call__(self, x, bias=None):
        eps = self.cfg.layer_norm_eps
        x = x + Attention(self.cfg, name="self_attn")(nn.LayerNorm(eps, name="layer_norm1")(x), bias)
        x = x + MLP(self.cfg, name="mlp")(nn.LayerNorm(eps, name="layer_norm2")(x))
        return x


class Encoder(nn.Module):
    cfg: TowerConfig

    @nn.compact
    def __call__(self, x, bias=None):
        for i in range(self.cfg.num_layers):
            x = EncoderLayer(self.cfg, name=f"layers_{i}")(x, bias)
        return x


class VisionTransformer(nn.Module):
    """ViT image tower. ``pixels [B, S, S, C]`` (normalised) -> pooled ``[B, D]``."""

    cfg: TowerConfig

    @nn.compact
    def __call__(self, pixels):
        cfg = self.cfg
        s, p = cfg.image_size, cfg.patch_size
        if pixels.shape[-3:] != (s, s, cfg.num_channels):
            raise ValueError(f"pixels must have shape (B, {s}, {s}, {cfg.num_channels}) for this CLIP "
                             f"model, got {tuple(pixels.shape)}; resize with clip.preprocess first")
        d = cfg.hidden_size
        patches = nn.Conv(d, (p, p), strides=(p, p), padding="VALID", use_bias=False,
                          name="patch_embedding")(pixels)
        b = patches.shape[0]
        patches = patches.reshape(b, -1, d)  # row-major over the patch grid, as torch's flatten(2)
        cls = self.param("class_embedding", nn.initializers.normal(1.0), (d,))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(patches.dtype), patches], axis=1)
        pos = self.param("position_embedding", nn.initializers.normal(0.02), ((s // p) ** 2 + 1, d))
        x = x + pos[None]
        x = nn.LayerNorm(cfg.layer_norm_eps, name="pre_layrnorm")(x)
        x = Encoder(cfg, name="encoder")(x)
        return nn.LayerNorm(cfg.layer_norm_eps, name="post_layernorm")(x[:, 0])


class TextTransformer(nn.Module):
    """Causal text tower. ``input_ids [B, L]`` -> pooled EOS state ``[B, D]``."""

    cfg: TowerConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None):
        cfg = self.cfg
        b, l = input_ids.shape
        if l > cfg.max_position_embeddings:
            raise ValueError(f"input_ids has length {l}, more than this CLIP model's "
                             f"max_position_embeddings={cfg.max_position_embeddings}")
        d = cfg.hidden_size
        tok = nn.Embed(cfg.vocab_size, d, name="token_embedding")(input_ids)
        pos = self.param("position_embedding", nn.initializers.normal(0.02),
                         (cfg.max_position_embeddings, d))
        x = tok + pos[None, :l]
        # Large finite negative instead of -inf: a fully masked row stays finite.
        neg = jnp.finfo(x.dtype).min
        allowed = jnp.tril(jnp.ones((l, l), bool))[None, None]
        if attention_mask is not None:
            allowed = allowed & (attention_mask[:, None, None, :] > 0)
        bias = jnp.where(allowed, 0.0, neg).astype(x.dtype)
        x = Encoder(cfg, name="encoder")(x, bias)
        x = nn.LayerNorm(cfg.layer_norm_eps, name="final_layer_norm")(x)
        ids = input_ids.astype(jnp.int32)
        if cfg.eos_token_id == 2:
            # Legacy configs (the original OpenAI ones): EOS is the largest id in
            # the sequence, so HF pools at argmax(input_ids). Kept for parity.
            eos_pos = jnp.argmax(ids, axis=-1)
        else:
            # First occurrence of eos_token_id (pad may equal eos).
            eos_pos = jnp.argmax((ids == cfg.eos_token_id).astype(jnp.int32), axis=-1)
        return x[jnp.arange(b), eos_pos]


class CLIP(nn.Module):
    """Both towers and their bias-free projections into the shared space.

    Use through :meth:`encode_image` / :meth:`encode_text` with ``apply(...,
    method=...)``; :class:`diffbmp_jax.clip.ClipModel` wraps this.
    """

    config: ClipConfig

    def setup(self):
        self.vision_model = VisionTransformer(self.config.vision)
        self.text_model = TextTransformer(self.config.text)
        self.visual_projection = nn.Dense(self.config.projection_dim, use_bias=False)
        self.text_projection = nn.Dense(self.config.projection_dim, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(math.log(1 / 0.07)), ())

    def encode_image(self, pixels):
        """``[B, S, S, 3]`` normalised pixels -> ``[B, projection_dim]`` (not unit-norm)."""
        return self.visual_projection(self.vision_model(pixels))

    def encode_text(self, input_ids, attention_mask=None):
        """``[B, L]`` token ids -> ``[B, projection_dim]`` (not unit-norm)."""
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def __call__(self, pixels, input_ids, attention_mask=None):
        return self.encode_image(pixels), self.encode_text(input_ids, attention_mask)
