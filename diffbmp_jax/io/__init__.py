"""Files in and out: images (one suffix list, targets, uint8), videos and
animations, and a fit's output folder (``params.npz``). Atomic writing is the
base layer's :mod:`diffbmp_jax.files`."""

from diffbmp_jax.io.images import IMAGE_SUFFIXES, load_target, to_uint8
from diffbmp_jax.io.video import VIDEO_SUFFIXES, load_video, write_frames

__all__ = ["IMAGE_SUFFIXES", "load_target", "to_uint8", "VIDEO_SUFFIXES",
           "load_video", "write_frames"]
