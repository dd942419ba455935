"""Files in and out: images (one suffix list, targets, uint8), videos and
animations, atomic writing, and a fit's output folder (``params.npz``)."""

from diffbmp_jax.io.files import AtomicWriter, atomic_output
from diffbmp_jax.io.images import IMAGE_SUFFIXES, load_target, to_uint8
from diffbmp_jax.io.video import VIDEO_SUFFIXES, load_video, write_frames

__all__ = ["AtomicWriter", "atomic_output", "IMAGE_SUFFIXES", "load_target", "to_uint8", "VIDEO_SUFFIXES",
           "load_video", "write_frames"]
