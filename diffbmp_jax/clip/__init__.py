"""CLIP in JAX (flax.linen): load Hugging Face checkpoints offline, embed images and text.

    from diffbmp_jax import clip
    model = clip.load_clip("openai/clip-vit-base-patch32")   # HF cache or a folder
    sim = model.similarity(images, ["a galaxy"])            # images [B, H, W, 3] in [0, 1]

Image preprocessing and augmentations are differentiable JAX, so CLIP scores can
drive optimisation (see :func:`diffbmp_jax.tasks.text.fit_text`).
"""

from diffbmp_jax.clip.api import ClipModel, cosine_similarity, image_features, load_clip, text_features
from diffbmp_jax.clip.loading import DEFAULT_MODEL, ClipModelNotFoundError, resolve_model_dir
from diffbmp_jax.clip.model import CLIP, ClipConfig, TowerConfig
from diffbmp_jax.clip.preprocess import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, normalize, preprocess,
                                         random_cutouts, resize_center_crop)

__all__ = ["ClipModel", "load_clip", "image_features", "text_features", "cosine_similarity",
           "ClipModelNotFoundError", "resolve_model_dir", "DEFAULT_MODEL", "CLIP", "ClipConfig",
           "TowerConfig", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "normalize", "preprocess",
           "random_cutouts", "resize_center_crop"]
