"""Files, safely: every output appears complete under its final name or not at all,
and archives are read without unpickling anything.

:class:`AtomicWriter` writes a run's several outputs under temporary names
in one folder and renames them together once everything succeeded;
:func:`atomic_output` does the same for one file. Both honour the umask
(``mkstemp`` alone would leave 0600 files). :func:`read_npz` reads an
``.npz`` archive with clear errors. A base layer (like ``validation``):
imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["AtomicWriter", "check_out_dir", "check_output_path", "atomic_output", "read_npz"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        # Folders made here are removed again on abort (an interrupted run leaves no empty folder).
        self.made += [d for d in reversed([self.out, *self.out.parents]) if not d.exists()]
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
        # The extension stays last (writers pick formats by it); ".part" marks it unfinished.
        fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
        os.close(fd)
        self.pending.append((tmp, final))
        return tmp

    def folder(self, name: str) -> "_Folder":
        """This writer seen from its sub-folder ``name``: ``.path(f)`` is ``self.path(name/f)``."""
        return _Folder(self, name)

    def commit(self) -> list[str]:
        """Renames every pending file to its final name (usual permissions); returns the final paths."""
        self.outputs = [str(final) for _, final in self.pending]
        umask = _umask()
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


def check_output_path(path, argname: str = "path"):
    """Checks early that ``path`` names a file in an existing folder; returns
    ``(path, folder)``."""
    try:
        path = os.fspath(path)
    except TypeError as e:
        raise TypeError(f"{argname} must be a file path, got {type(path).__name__}") from e
    if not path:
        raise ValueError(f"{argname} must be a non-empty file path")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argname}: {path!r} is a folder; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{argname}: cannot write {path!r}: folder {folder!r} does not exist")
    return path, folder


@contextlib.contextmanager
def atomic_output(path, argname: str = "path"):
    """Yields a temporary file name beside ``path``; renames it onto ``path`` on
    success, deletes it on any error, so no partial output is ever left.

    One file through an :class:`AtomicWriter`: the temporary name keeps
    ``path``'s extension (writers pick formats by it). Raises a clear error
    naming ``argname`` if the folder is missing or not writable.
    """
    path, folder = check_output_path(path, argname)
    writer = AtomicWriter(Path(folder))
    try:
        tmp = writer.path(os.path.basename(path))
    except OSError as e:
        raise PermissionError(f"{argname}: cannot write {path!r}: folder {folder!r} is not writable ({e})") from e
    with writer:
        yield tmp


def read_npz(path, argname: str = "path") -> dict:
    """Every array of the ``.npz`` archive at ``path``, as numpy arrays by name.

    Pickled (object) arrays are refused, never unpickled. Raises
    FileNotFoundError / IsADirectoryError / ValueError that start with
    ``argname`` and name the file: no such file, a folder, or not an npz
    archive (a ``.npy`` array, a truncated, empty or foreign file).
    """
    try:
        path = os.fspath(path)
    except TypeError as e:
        raise TypeError(f"{argname} must be a file path, got {type(path).__name__}") from e
    if os.path.isdir(path):
        raise IsADirectoryError(f"{argname}: {path!r} is a folder, not an .npz file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argname}: no such file: {path!r}")
    unreadable = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)
    what = f"{argname}: {path!r} is not an .npz archive of arrays"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise ValueError(f"{what} (cannot read it: {e})") from e
    if magic == b"\x93NUMPY":
        raise ValueError(f"{what} (it holds a single array, as numpy.save writes)")
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):  # numpy's zip test; it would unpickle the rest
        raise ValueError(f"{what} ({'the file is empty' if not magic else 'it is not a zip archive'})")
    try:
        z = np.load(path, allow_pickle=False)
    except unreadable as e:
        raise ValueError(f"{what} ({type(e).__name__}: {e})") from e
    with z:  # a zip archive always loads as an NpzFile
        try:
            return {k: z[k] for k in z.files}
        except unreadable as e:
            raise ValueError(f"{what} ({type(e).__name__}: {e})") from e
