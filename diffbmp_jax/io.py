"""Writing command-line outputs: atomic file writes, uint8 images, GIFs, parameter archives.

Every subcommand writes its outputs under temporary names and renames them
only once everything succeeded (:class:`AtomicWriter`), so a failed run
leaves no partial outputs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["AtomicWriter", "check_out_dir", "to_u8", "save_gif", "subsample", "primitive_arrays",
           "save_params", "write_image_outputs"]

PRIMITIVE_FIELDS = ("xy", "scale", "rotation", "opacity_logit", "color_logit")


class AtomicWriter:
    """Writes files under temporary names in ``out`` and renames them all at the end.

    Use as ``with AtomicWriter(out) as w: write(w.path("result.png"))``: the
    folder is created on entry; on success every file is renamed to its final
    name (``w.outputs`` then lists the final paths), on any exception the
    temporary files are removed and the exception propagates.
    """

    def __init__(self, out: Path):
        self.out = Path(out)
        self.pending: list[tuple[str, Path]] = []
        self.outputs: list[str] = []
        self.made: list[Path] = []  # sub-folders created for nested names, removed again on abort

    def __enter__(self) -> AtomicWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False

    def path(self, name: str) -> str:
        """A temporary path that becomes ``out/name`` on commit (``name`` may hold sub-folders)."""
        final = self.out / name
        missing = [d for d in reversed(final.parents) if d.is_relative_to(self.out) and not d.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        self.made += missing
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=final.suffix, dir=final.parent)
        os.close(fd)
        self.pending.append((tmp, final))
        return tmp

    def folder(self, name: str) -> "_Folder":
        """This writer seen from its sub-folder ``name``: ``.path(f)`` is ``self.path(name/f)``."""
        return _Folder(self, name)

    def commit(self) -> list[str]:
        """Renames every pending file to its final name (usual permissions); returns the final paths."""
        self.outputs = [str(final) for _, final in self.pending]
        umask = os.umask(0)
        os.umask(umask)
        for tmp, final in self.pending:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files
            os.replace(tmp, final)
        self.pending = []
        return self.outputs

    def abort(self) -> None:
        """Removes every pending temporary file (and the sub-folders made for them)."""
        for tmp, _ in self.pending:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.pending = []
        for d in reversed(self.made):
            with contextlib.suppress(OSError):  # not empty: something else lives there
                d.rmdir()
        self.made = []


class _Folder:
    """A sub-folder of an :class:`AtomicWriter` (:meth:`AtomicWriter.folder`)."""

    def __init__(self, writer: AtomicWriter, name: str):
        self.writer, self.name = writer, name

    def path(self, name: str) -> str:
        return self.writer.path(f"{self.name}/{name}")


def check_out_dir(out) -> Path:
    """``out`` as a Path; ValueError when it exists and is not a folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a folder")
    return out


def to_u8(img) -> np.ndarray:
    """Image in [0, 1] (clipped) -> uint8, rounded to nearest."""
    return (np.clip(np.asarray(img, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_gif(path: str, frames: list[np.ndarray]) -> None:
    """Looping GIF of uint8 ``[H, W, 3]`` frames, 0.3 s each."""
    try:
        import imageio.v2 as imageio
        imageio.mimsave(path, frames, format="GIF", duration=0.3, loop=0)
    except ImportError:
        from PIL import Image
        ims = [Image.fromarray(f) for f in frames]
        ims[0].save(path, format="GIF", save_all=True, append_images=ims[1:], duration=300, loop=0)


def subsample(frames: list, count: int) -> list:
    """At most ``count`` of ``frames``, evenly spread, first and last kept."""
    if len(frames) > count:
        idx = np.unique(np.linspace(0, len(frames) - 1, count).round().astype(int))
        frames = [frames[i] for i in idx]
    return frames


def primitive_arrays(params) -> dict:
    """The five fields of a :class:`~diffbmp_jax.Primitives` as numpy arrays, by name."""
    return {f: np.asarray(getattr(params, f)) for f in PRIMITIVE_FIELDS}


def save_params(fh, arrays: dict, height: int, width: int, color_blend: float, **extra) -> None:
    """Writes ``params.npz``: ``arrays``, then ``height``, ``width`` (int32),
    ``color_blend`` (float32), then ``extra`` arrays."""
    np.savez(fh, **arrays, height=np.int32(height), width=np.int32(width), color_blend=np.float32(color_blend),
             **extra)


def write_image_outputs(writer: AtomicWriter, image, params, template, height: int, width: int,
                        color_blend: float, frames: list, max_frames: int) -> None:
    """Writes ``result.png`` (``image`` ``[H, W, 3]`` in [0, 1]), ``params.npz``
    (:func:`save_params` of ``params`` and the ``[N]`` ``template``) and, when
    ``frames`` (uint8) is not empty, ``progress.gif`` of at most ``max_frames``."""
    from PIL import Image
    Image.fromarray(to_u8(image)).save(writer.path("result.png"), format="PNG")
    with open(writer.path("params.npz"), "wb") as fh:
        save_params(fh, {**primitive_arrays(params), "template": np.asarray(template, np.int32)},
                    height, width, color_blend)
    if frames:
        save_gif(writer.path("progress.gif"), subsample(frames, max_frames))


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
