"""Frame sequences in and out: reading videos (MP4 through ffmpeg, GIF, folders of
frames) and writing animations (GIF with Pillow, H.264 MP4 with imageio-ffmpeg)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from diffbmp_jax.files import atomic_output, check_output_path
from diffbmp_jax.io.images import IMAGE_SUFFIXES, to_uint8
from diffbmp_jax.validation import check_count

__all__ = ["VIDEO_SUFFIXES", "ANIMATION_FORMATS", "load_video", "video_fps", "write_frames", "animation_format", "subsample", "ffmpeg_subprocess"]

VIDEO_SUFFIXES = (".mp4", ".gif", ".mov", ".avi", ".mkv", ".webm")


@contextlib.contextmanager
def ffmpeg_subprocess():
    """Silences JAX's ``os.fork()`` warning around imageio-ffmpeg calls.

    imageio-ffmpeg starts ffmpeg with ``subprocess`` (fork immediately followed
    by exec; no Python runs in the child), which is safe in a multithreaded
    process, so the warning would only alarm users.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def _resize(frame: np.ndarray, size) -> np.ndarray:
    if size is None or max(frame.shape[:2]) <= size:
        return frame
    from PIL import Image
    s = size / max(frame.shape[:2])
    im = Image.fromarray(frame)
    return np.asarray(im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS))


def _to_rgb_u8(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    if a.shape[-1] == 4:  # transparent pixels over white
        al = a[..., 3:].astype(np.float32) / 255.0
        a = (a[..., :3] * al + 255.0 * (1 - al) + 0.5).astype(np.uint8)
    return a[..., :3]


def load_video(path, max_frames: int | None = None, size: int | None = None) -> np.ndarray:
    """Reads a video as float32 ``[T, H, W, 3]`` in [0, 1].

    Args:
      path: an ``.mp4`` (or other ffmpeg-readable video, through
        ``imageio-ffmpeg``), an animated ``.gif``, or a folder of frame images
        (sorted by name).
      max_frames: keep at most this many leading frames (``None`` = all).
      size: downscale (Lanczos) so the longer side is at most ``size`` pixels.

    Raises:
      FileNotFoundError naming ``path``; ValueError when the file cannot be
      decoded, holds no frames, or frames differ in size.
    """
    if max_frames is not None:
        max_frames = check_count("max_frames", max_frames, 1)
    if size is not None:
        size = check_count("size", size, 1)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: no such file or folder: {str(path)!r}")
    frames: list[np.ndarray] = []
    if p.is_dir():
        from PIL import Image, UnidentifiedImageError
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"path: folder {str(path)!r} holds no frame images ({', '.join(IMAGE_SUFFIXES)})")
        for f in files[:max_frames]:
            try:
                with Image.open(f) as im:
                    frames.append(_to_rgb_u8(np.asarray(im.convert("RGBA"))))
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ValueError(f"path: cannot read frame image {str(f)!r}: {e}") from e
    else:
        try:
            if p.suffix.lower() == ".gif":
                from PIL import Image, ImageSequence
                with Image.open(p) as im:
                    for k, fr in enumerate(ImageSequence.Iterator(im)):
                        if max_frames is not None and k >= max_frames:
                            break
                        frames.append(_to_rgb_u8(np.asarray(fr.convert("RGBA"))))
            else:
                import imageio.v2 as iio2
                with ffmpeg_subprocess(), iio2.get_reader(str(p), format="FFMPEG") as reader:
                    for k, fr in enumerate(reader):
                        if max_frames is not None and k >= max_frames:
                            break
                        frames.append(_to_rgb_u8(np.asarray(fr)))
        except Exception as e:  # decoders raise many types (OSError, RuntimeError, IndexError...)
            raise ValueError(f"path: cannot read video {str(path)!r}: {type(e).__name__}: {e}") from e
    if not frames:
        raise ValueError(f"path: video {str(path)!r} holds no frames")
    frames = [_resize(f, size) for f in frames]
    for k, f in enumerate(frames):
        if f.shape != frames[0].shape:
            raise ValueError(f"path: frame {k} of {str(path)!r} has size {f.shape[:2]}, frame 0 has "
                             f"{frames[0].shape[:2]}")
    return np.stack(frames).astype(np.float32) / 255.0


def video_fps(path) -> float | None:
    """The frame rate of the video at ``path``, or None when it states none.

    MP4 and other ffmpeg-readable files: the ``fps`` of imageio-ffmpeg's
    metadata. Animated GIF: 1000 / the most common frame ``duration`` (ms; GIF
    stores hundredths of a second, so 5 fps = 200 ms reads back exactly; the
    most common, as Pillow merges repeated frames and sums their delays). A
    folder of frames, or a GIF without delays: None.

    Raises:
      FileNotFoundError naming ``path``; ValueError when the file cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"path: no such file or folder: {str(path)!r}")
    if p.is_dir():
        return None
    try:
        if p.suffix.lower() == ".gif":
            from PIL import Image, ImageSequence
            with Image.open(p) as im:
                delays = [fr.info.get("duration") for fr in ImageSequence.Iterator(im)]
            delays = [float(d) for d in delays if isinstance(d, (int, float)) and d > 0]
            if not delays:
                return None
            # The most common delay (the shorter on a tie): writers merge repeated
            # frames into one with their delays summed.
            counts = {d: delays.count(d) for d in delays}
            return 1000.0 / min(counts, key=lambda d: (-counts[d], d))
        import imageio.v2 as iio2
        with ffmpeg_subprocess(), iio2.get_reader(str(p), format="FFMPEG") as reader:
            fps = reader.get_meta_data().get("fps")
    except Exception as e:  # decoders raise many types (OSError, RuntimeError, IndexError...)
        raise ValueError(f"path: cannot read video {str(path)!r}: {type(e).__name__}: {e}") from e
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        return None
    return fps if np.isfinite(fps) and fps > 0 else None


def subsample(frames: list, count: int) -> list:
    """At most ``count`` of ``frames``, evenly spread, first and last kept."""
    if len(frames) > count:
        idx = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
        frames = [frames[i] for i in idx]
    return frames


ANIMATION_FORMATS = ("gif", "mp4")


def animation_format(path, fmt) -> str:
    """``"gif"`` or ``"mp4"``, from ``fmt`` or else from ``path``'s extension; ValueError otherwise."""
    fmt = (fmt or os.path.splitext(str(path))[1].lstrip(".")).lower()
    if fmt not in ANIMATION_FORMATS:
        raise ValueError(f"fmt must be one of {ANIMATION_FORMATS} (or path must end in .gif/.mp4), got {fmt!r}")
    return fmt


def write_frames(path, frames, *, fps: float = 10.0, fmt: str | None = None, loop: int = 0,
                 atomic: bool = True) -> str:
    """Writes frames as an animated GIF (Pillow) or an H.264 MP4 (imageio-ffmpeg).

    Args:
      path: output file; the format comes from ``fmt`` or the extension.
      frames: non-empty sequence of ``[H, W, 3]`` images, float in [0, 1] or uint8,
        all one size.
      fps: frames per second (> 0); a GIF stores each frame's delay in whole
        milliseconds (``round(1000 / fps)``, at least 10).
      fmt: ``"gif"`` or ``"mp4"``.
      loop: GIF loop count (0 = forever).
      atomic: write under a temporary name and rename at the end (off when
        ``path`` is already a temporary name, e.g. from an :class:`AtomicWriter`).

    MP4 needs the ``imageio-ffmpeg`` package (it ships an ffmpeg binary); its
    frames are padded to even sizes as H.264 requires.
    """
    fmt = animation_format(path, fmt)
    frames = list(frames)
    if not frames:
        raise ValueError("frames: no frames given")
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    arr = []
    for k, f in enumerate(frames):
        a = np.asarray(f)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise ValueError(f"frames[{k}] must have shape (H, W, 3), got {a.shape}")
        a = a[..., :3] if a.dtype == np.uint8 else to_uint8(a[..., :3])
        if arr and a.shape != arr[0].shape:
            raise ValueError(f"frames[{k}] has shape {a.shape}, but frames[0] has {arr[0].shape}")
        arr.append(a)
    if fmt == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError as e:
            raise ImportError("MP4 export needs imageio-ffmpeg: pip install imageio-ffmpeg "
                              "(or 'diffbmp-jax[export]'); GIF needs nothing more") from e
        h, w = arr[0].shape[:2]
        ph, pw = h % 2, w % 2
        if ph or pw:
            arr = [np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge") for a in arr]
    write = _write_gif if fmt == "gif" else _write_mp4
    if not atomic:
        check_output_path(path)
        write(os.fspath(path), arr, fps, loop)
        return str(path)
    with atomic_output(path) as tmp:
        write(tmp, arr, fps, loop)
    return str(path)


def _write_gif(path, frames, fps, loop):
    from PIL import Image
    ims = [Image.fromarray(f) for f in frames]
    delay = max(10, int(round(1000.0 / fps)))  # ms; browsers treat < 10 ms as 100 ms
    ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=delay, loop=loop)


def _write_mp4(path, frames, fps, loop):
    import imageio.v2 as iio2
    # macro_block_size=1: sizes were made even above; no silent resize.
    with ffmpeg_subprocess(), iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                              quality=8, macro_block_size=1, pixelformat="yuv420p") as w:
        for f in frames:
            w.append_data(f)
