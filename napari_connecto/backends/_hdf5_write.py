"""HDF5 file access for the backend: locks, safe opening, and copy-on-write commits.

Every h5py call on a file goes through its :func:`file_lock`. A killed writer must
never damage a file, but h5py writes in place: a process killed half-way through
a write (or between a chunk and the B-tree that indexes it) can leave a file
HDF5 no longer opens. So every batch of block writes is applied to a copy:

1. copy the file to ``.<name>.<pid>-<uuid>.connecto-tmp`` in the same directory
   (``os.copy_file_range``, which may share extents on btrfs / XFS);
2. open the copy with h5py ``r+``, write every block, close it;
3. ``fsync`` the copy, ``os.replace`` it over the original, ``fsync`` the directory.

At every instant the file's name points at either the old or the new complete
file. A failed commit removes its copy and leaves the original untouched. A
writer killed before the rename leaves a temporary file behind: it is never
opened as data (:func:`is_temp_file`) and :func:`remove_stale_temp_files`
deletes it once its writer is dead or it is older than a minute.

The cost is a copy of the whole file per batch (and free space for it), so
callers should batch edits. Hard links to the file keep the old contents, and
the file's owner becomes the writing user (its permission bits are kept).

Within one process, handles of a replaced file are re-opened on their next
read (see :func:`generation`); other processes call ``refresh()``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import h5py
import numpy as np

from napari_connecto import _killpoints
from napari_connecto.errors import ChunkError, MetadataError, ReadOnlyError, SourceNotFoundError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from napari_connecto.source import Source
    from napari_connecto.volume.scale import Scale

__all__ = [
    "CACHE_BYTES",
    "SIGNATURE",
    "STALE_AFTER_S",
    "TEMP_SUFFIX",
    "BlockWrite",
    "bump_generation",
    "check_writable",
    "commit_blocks",
    "fetch_datasets",
    "file_lock",
    "generation",
    "has_hdf5_signature",
    "is_temp_file",
    "open_file",
    "remove_stale_temp_files",
    "reopen",
    "temp_path",
]

logger = logging.getLogger(__name__)

SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The eight bytes every HDF5 superblock starts with."""
_SIGNATURE_OFFSETS = (0, *(2**k for k in range(9, 17)))
CACHE_BYTES = 2**20
"""HDF5 raw-data chunk cache per open file (bytes): small, the project caches chunks itself."""
TEMP_SUFFIX = ".connecto-tmp"
"""Suffix of the temporary copies a commit writes (``.<name>.<pid>-<uuid>.connecto-tmp``)."""
STALE_AFTER_S = 60.0
"""Age (seconds since last modified) after which a temporary copy is stale even if its pid lives."""
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]{32})\.connecto-tmp$")
_COPY_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM}
_COMMIT_ERRORS = (OSError, ValueError, RuntimeError, TypeError, KeyError)
_COPY_BLOCK = 8 * 2**20

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_generations: dict[str, int] = {}
_generations_guard = threading.Lock()


@dataclass(frozen=True, slots=True)
class BlockWrite:
    """One block to store in a commit."""

    dataset: str
    """Absolute path of the dataset inside the file."""
    selection: tuple[slice, ...]
    """Where in the dataset (in its own rank: 2D datasets get a 2D selection)."""
    data: np.ndarray
    """The voxels, shaped like the selection, in the dataset's dtype."""
    scale: int
    """Scale index (for error messages)."""
    region: str
    """Voxel region ``z0:z1,y0:y1,x0:x1`` (for error messages)."""


# -- opening -----------------------------------------------------------------------------------
def has_hdf5_signature(path: str) -> bool:
    """Whether the local file ``path`` holds the HDF5 signature at 0 or after a userblock.

    HDF5 looks for its superblock at 0, 512, 1024, 2048, ... bytes; offsets up
    to 64 KiB are checked (eight bytes each), never raising.
    """
    try:
        with open(path, "rb") as fh:
            for offset in _SIGNATURE_OFFSETS:
                fh.seek(offset)
                if fh.read(len(SIGNATURE)) == SIGNATURE:
                    return True
    except (OSError, ValueError):
        return False
    return False


def file_lock(location: str) -> threading.Lock:
    """The one lock guarding every h5py call on the file at ``location``."""
    key = os.path.realpath(location)
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def open_file(source: Source, mode: Literal["r", "r+"] = "r") -> h5py.File:
    """Open the HDF5 file of ``source`` (call with its :func:`file_lock` held).

    Raises
    ------
    SourceNotFoundError
        If the file does not exist.
    MetadataError
        If it is remote, a directory, a commit's temporary copy, not HDF5,
        truncated or otherwise unreadable.
    ReadOnlyError
        If ``mode="r+"`` and the file cannot be opened for writing.
    """
    where = source.location
    if source.is_remote:
        raise MetadataError(where, "", "HDF5 files can only be opened from local disk")
    path = source.path
    if not path.exists():
        raise SourceNotFoundError(where)
    if not path.is_file():
        raise MetadataError(where, "", "is a directory or special file, expected an HDF5 file")
    if is_temp_file(path):
        raise MetadataError(where, "", "is the temporary copy of an unfinished write, not data")
    if not has_hdf5_signature(where):
        raise MetadataError(where, "", "not an HDF5 file (no HDF5 signature)")
    try:
        return h5py.File(where, mode, rdcc_nbytes=CACHE_BYTES)
    except OSError as exc:
        message = str(exc)
        if mode == "r+" and ("already open" in message or isinstance(exc, PermissionError)):
            raise ReadOnlyError(f"cannot open {where} for writing: {message}") from exc
        raise MetadataError(where, "", f"not a readable HDF5 file ({message})") from exc


def check_writable(source: Source) -> None:
    """Refuse writes where the file or its directory (for the temporary copy) is read-only.

    Raises
    ------
    ReadOnlyError
        If either cannot be written by this process.
    """
    path = os.path.realpath(source.location)
    if not os.access(path, os.W_OK) or not os.access(os.path.dirname(path), os.W_OK | os.X_OK):
        raise ReadOnlyError(f"cannot open {source.location} for writing: no write permission")


# -- temporary files ---------------------------------------------------------------------
def temp_path(target: Path) -> Path:
    """A fresh temporary sibling of ``target`` naming this process's pid."""
    return target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex}{TEMP_SUFFIX}")


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a commit's temporary copy (never data)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (assumed so where it cannot be told)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def remove_stale_temp_files(
    path: str | os.PathLike[str], *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Delete temporary copies of ``path`` left by killed or stalled writers.

    Only files named exactly ``.<name>.<pid>-<32 hex>.connecto-tmp`` next to
    ``path`` are considered; one is removed if process ``pid`` no longer
    exists or it was last modified over ``max_age_s`` seconds ago. Removing
    the copy of a writer that is in fact still running (another host on a
    network filesystem) only makes that writer's commit fail; it never
    damages the file.

    Parameters
    ----------
    path : str or os.PathLike
        The HDF5 file whose temporary copies to look for.
    max_age_s : float
        Age after which a copy is stale whatever its pid.

    Returns
    -------
    list of Path
        The files removed.
    """
    target = Path(path)
    now = time.time()
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError as exc:
        logger.warning("cannot list %s for stale temporary files: %s", target.parent, exc)
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match.group("name") != target.name:
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if _pid_alive(int(match.group("pid"))) and age <= max_age_s:
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("cannot remove stale temporary file %s: %s", entry.path, exc)
            continue
        logger.info("removed stale temporary file %s", entry.path)
        removed.append(Path(entry.path))
    return removed


# -- generations: notice that a file was replaced -----------------------------------------
def generation(key: str) -> tuple[int, int]:
    """``(replacements by this process, inode)`` of the file ``key`` (a real path).

    A copy-on-write commit renames a new file over the old one, so the inode changes
    whichever process committed: a reader comparing generations re-opens the file.
    """
    with _generations_guard:
        count = _generations.get(key, 0)
    try:
        inode = os.stat(key).st_ino
    except OSError:
        inode = -1
    return count, inode


def bump_generation(key: str) -> int:
    """Record that the file ``key`` was replaced; returns the new generation."""
    with _generations_guard:
        _generations[key] = _generations.get(key, 0) + 1
        return _generations[key]


# -- the commit ------------------------------------------------------------------------------
def commit_blocks(target: Path, blocks: Sequence[BlockWrite], *, where: str) -> None:
    """Write ``blocks`` into a copy of ``target`` and atomically replace it with the copy.

    Call with the file's lock held. The caller's own h5py handles keep reading
    the old file until re-opened.

    Parameters
    ----------
    target : Path
        The HDF5 file (a real path, not a symlink: the rename replaces the name).
    blocks : sequence of BlockWrite
        What to write, in order.
    where : str
        The source, for error messages.

    Raises
    ------
    ChunkError
        If copying, writing, syncing or renaming fails; ``target`` is then
        untouched and the copy removed.
    """
    tmp = temp_path(target)
    current: BlockWrite | None = None
    try:
        _copy_file(target, tmp)
        with h5py.File(tmp, "r+") as h5:
            for index, current in enumerate(blocks):
                _write_block(h5, current)
                if index == 0:
                    _killpoints.reach("mid-chunk-write")
            current = None
        _fsync_file(tmp)
        _killpoints.reach("before-rename")
        os.replace(tmp, target)
    except BaseException as exc:
        _discard(tmp)
        if not isinstance(exc, _COMMIT_ERRORS):
            raise
        scale = current.scale if current else blocks[0].scale
        region = current.region if current else f"{len(blocks)} block(s)"
        raise ChunkError(where, scale, region, f"HDF5 write failed: {exc}") from exc
    _fsync_dir(target.parent)


def _write_block(h5: h5py.File, block: BlockWrite) -> None:
    """Store one block in the open copy."""
    ds = h5[block.dataset]
    if not isinstance(ds, h5py.Dataset):
        raise KeyError(f"{block.dataset} is not a dataset")
    ds.write_direct(block.data, dest_sel=block.selection)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to the new file ``dst`` (kernel-side where possible), keeping its mode."""
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        info = os.fstat(fin.fileno())
        os.chmod(dst, stat.S_IMODE(info.st_mode))
        try:
            _copy_range(fin.fileno(), fout.fileno(), info.st_size)
        except OSError as exc:
            if exc.errno not in _COPY_FALLBACK:
                raise
            fin.seek(0)
            fout.seek(0)
            fout.truncate()
            shutil.copyfileobj(fin, fout, _COPY_BLOCK)


def _copy_range(src: int, dst: int, size: int) -> None:
    """``os.copy_file_range`` until ``size`` bytes are copied (raises ENOSYS if unavailable)."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    done = 0
    while done < size:
        n = copy(src, dst, size - done)
        if n == 0:
            raise OSError(errno.EIO, f"file shrank while copying ({done} of {size} bytes)")
        done += n


def _fsync_file(path: Path) -> None:
    """Flush a written file's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (warns where directories cannot be synced)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        logger.warning("cannot fsync directory %s after a commit: %s", directory, exc)


def _discard(path: Path) -> None:
    """Remove a failed commit's copy (logging, never raising)."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("cannot remove temporary file %s: %s", path, exc)


# -- re-opening ------------------------------------------------------------------------------
def fetch_datasets(
    h5: h5py.File, names: Sequence[str], scales: Sequence[Scale], where: str
) -> list[h5py.Dataset]:
    """The datasets ``names`` in a re-opened file, checked against the scales they had.

    Raises
    ------
    MetadataError
        If a dataset is gone, or its shape or dtype changed.
    """
    datasets = []
    for name, scale in zip(names, scales, strict=True):
        ds = h5.get(name)
        if not isinstance(ds, h5py.Dataset):
            raise MetadataError(where, name, "the dataset is gone from the re-opened file")
        shape = tuple(ds.shape) if ds.ndim == 3 else (1, *ds.shape)
        if shape != tuple(scale.shape) or ds.dtype.newbyteorder("=") != scale.dtype:
            raise MetadataError(
                where, name, f"changed to {shape} {ds.dtype}; was {scale.shape} {scale.dtype}"
            )
        datasets.append(ds)
    return datasets


def reopen(
    source: Source, names: Sequence[str], scales: Sequence[Scale], scale: int = 0, region: str = ""
) -> tuple[h5py.File, list[h5py.Dataset]]:
    """A fresh read-only handle on the file now at ``source`` and its datasets ``names``.

    Raises
    ------
    ChunkError
        If the file cannot be opened or no longer holds the datasets with
        their shapes and dtypes (``scale`` and ``region`` name the request).
    """
    where = str(source)
    try:
        h5 = open_file(source)
    except (SourceNotFoundError, MetadataError) as exc:
        raise ChunkError(where, scale, region, f"cannot re-open the file: {exc}") from exc
    try:
        return h5, fetch_datasets(h5, names, scales, where)
    except BaseException as exc:
        h5.close()
        if not isinstance(exc, _COMMIT_ERRORS):
            raise
        raise ChunkError(where, scale, region, f"the re-opened file changed: {exc}") from exc
