"""Where stores live: local paths and fsspec URLs, temporary siblings, atomic replacement.

Owns the file-system side of every write dsketch makes: telling local paths from fsspec
URLs (``s3://``, ``gs://``...), creating, moving and removing whole directories, the one
atomic "write next to it, then rename into place" step (:func:`replace`, :func:`staged`)
that dataset ingestion, result writing and model files share, and opening a Zarr group at
a URL.  Must not know any array layout (that is :mod:`dsketch.engine.dataset`) and must
never remove anything but the temporary and replaced directories it was given.

Atomicity
---------
A new result is written into a hidden sibling (``.<name>.<tag>-<uuid>``) and renamed into
place only when complete.  An existing destination is never touched unless
``overwrite=True``, and even then it is replaced only by a complete new one (rename-aside,
rename-in, delete-old); a failure puts the old one back.  On local file systems each step
is an ``os.rename`` (atomic on POSIX); on object stores it is a copy-then-delete through
fsspec, which is not atomic: a crash during that last step can leave a partial destination.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import zarr
from fsspec.core import url_to_fs

__all__ = ["is_local", "local_path", "filesystem", "exists", "check_absent", "sibling", "remove",
           "move", "replace", "staged", "open_group"]


def is_local(url: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    """The local path of a plain path or ``file://`` URL (``~`` expanded)."""
    return Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()


def filesystem(url: str, storage_options: dict | None):
    """``(fsspec file system, path)`` of ``url``."""
    return url_to_fs(url, **(storage_options or {}))


def exists(url: str, storage_options: dict | None = None) -> bool:
    """Whether anything exists at ``url``."""
    if is_local(url):
        return local_path(url).exists()
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def check_absent(url: str, overwrite: bool, storage_options: dict | None = None) -> None:
    """Raise ``FileExistsError`` when something exists at ``url`` and ``overwrite`` is False."""
    if not overwrite and exists(url, storage_options):
        raise FileExistsError(f"{url} already exists; pass overwrite=True to replace it")


def sibling(url: str, tag: str) -> str:
    """A fresh hidden name ``.<name>.<tag>-<uuid>`` next to ``url`` (same directory or prefix)."""
    stripped = url.rstrip("/")
    head, _, tail = stripped.rpartition("/")
    name = f".{tail}.{tag}-{uuid.uuid4().hex[:12]}"
    return f"{head}/{name}" if head else name


def remove(url: str, storage_options: dict | None = None) -> None:
    """Delete the directory tree at ``url``, if any (best effort: never raises)."""
    try:
        if is_local(url):
            shutil.rmtree(local_path(url), ignore_errors=True)
        else:
            fs, path = filesystem(url, storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
    except Exception:  # pragma: no cover - best effort cleanup
        pass


def move(src: str, dst: str, storage_options: dict | None = None) -> None:
    """Rename ``src`` to ``dst`` (``os.rename`` locally, a recursive move through fsspec)."""
    if is_local(src):
        os.rename(local_path(src), local_path(dst))
    else:
        fs, s = filesystem(src, storage_options)
        _, d = filesystem(dst, storage_options)
        fs.mv(s, d, recursive=True)


def replace(tmp: str, dest: str, overwrite: bool, storage_options: dict | None = None) -> None:
    """Put the complete ``tmp`` at ``dest``; an existing ``dest`` survives any failure.

    Raises
    ------
    FileExistsError
        ``dest`` exists and ``overwrite`` is False.
    """
    check_absent(dest, overwrite, storage_options)
    if exists(dest, storage_options):
        old = sibling(dest, "old")
        move(dest, old, storage_options)
        try:
            move(tmp, dest, storage_options)
        except BaseException:
            move(old, dest, storage_options)
            raise
        remove(old, storage_options)
    else:
        if is_local(dest):
            local_path(dest).parent.mkdir(parents=True, exist_ok=True)
        move(tmp, dest, storage_options)


@contextlib.contextmanager
def staged(dest: str, *, overwrite: bool, storage_options: dict | None = None,
           tag: str = "tmp") -> Iterator[str]:
    """``with staged(dest, overwrite=...) as tmp``: write ``tmp``, then it becomes ``dest``.

    Yields a fresh temporary sibling URL of ``dest`` (not created; a local parent
    directory is).  On normal exit :func:`replace` moves it to ``dest``; on any exception,
    in the block or in the replacement, it is removed and ``dest`` is left as it was.
    """
    tmp = sibling(dest, tag)
    try:
        if is_local(tmp):
            local_path(tmp).parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        replace(tmp, dest, overwrite, storage_options)
    except BaseException:
        remove(tmp, storage_options)
        raise


def open_group(url: str, mode: str, storage_options: dict | None = None):
    """``zarr.open_group`` of a local path or an fsspec URL."""
    if is_local(url):
        return zarr.open_group(str(local_path(url)), mode=mode)
    return zarr.open_group(url, mode=mode, storage_options=storage_options)
