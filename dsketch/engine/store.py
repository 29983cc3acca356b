"""Where stores live: local paths and fsspec URLs, temporary siblings, atomic replacement.

Owns the file-system side of every write dsketch makes: telling local paths from fsspec
URLs (``s3://``, ``gs://``...), creating, moving and removing whole directories, the one
atomic "write next to it, then rename into place" step (:func:`replace`, :func:`staged`)
that dataset ingestion, result writing and model files share, cleaning the temporary
siblings a killed write left behind (:func:`clean_stale`), telling what kind of thing sits
at a path before replacing it (:func:`check_overwrite_target`), and opening a Zarr group at
a URL.  Must not know any array layout (that is :mod:`dsketch.engine.dataset`) and must
never remove anything but the temporary and replaced directories it was given.

Atomicity
---------
A new result is written into a hidden sibling (``.<name>.<tag>-<uuid>.<host>.<pid>``) and
renamed into place only when complete.  An existing destination is never touched unless
``overwrite=True``, and even then it is replaced only by a complete new one (rename-aside,
rename-in, delete-old); a failure puts the old one back.  On local file systems each step
is an ``os.rename`` (atomic on POSIX); on object stores it is a copy-then-delete through
fsspec, which is not atomic: a crash during that last step can leave a partial destination.

A killed process leaves its sibling behind; the next :func:`staged` write on the same path
removes those whose writer is gone (same host, process no longer running, or written by a
version that recorded no owner), and ``dsketch info --clean`` (:func:`clean_stale`) removes
the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
import zlib
from pathlib import Path
from typing import Iterator

import zarr
from fsspec.core import url_to_fs

from ..backend import InvalidInputError

__all__ = ["MODEL_FILE", "is_model_dir", "is_local", "local_path", "filesystem", "exists",
           "check_absent", "check_parent",
           "sibling", "remove",
           "move", "replace", "staged", "open_group", "clean_stale", "target_kind",
           "check_overwrite_target", "same_path"]

#: ``.<name>.<tmp|old>-<uuid12>[.<host8>.<pid>]`` (the owner part is absent in old versions)
_STALE = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-[0-9a-f]{12}"
                    r"(?:\.(?P<host>[0-9a-f]{8})\.(?P<pid>\d+))?$")


#: The file that makes a directory a dsketch model (written by :mod:`dsketch.model_io`).
MODEL_FILE = "model.json"


def is_model_dir(url: str, storage_options: dict | None = None) -> bool:
    """Whether ``url`` is a directory holding a dsketch model (:data:`MODEL_FILE`)."""
    url = os.fspath(url).rstrip("/")
    if is_local(url):
        return (local_path(url) / MODEL_FILE).is_file()
    fs, path = filesystem(url, storage_options)
    return fs.isfile(f"{path}/{MODEL_FILE}")


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


def check_parent(url: str) -> None:
    """Raise ``InvalidInputError`` when something that is not a directory sits above the
    local path ``url`` (a plain file where a parent directory should be): names the path
    and what is in the way, instead of a bare ``[Errno 17] File exists``."""
    if not is_local(url):
        return
    for parent in local_path(url).absolute().parents:
        if parent.is_dir():
            return
        if parent.exists() or parent.is_symlink():
            what = "a plain file" if parent.is_file() else "not a directory"
            raise InvalidInputError(f"cannot write {url}: {parent} is {what}, so no directory "
                                    f"can be created below it; choose another path (or move "
                                    f"{parent} away)")


def _host() -> str:
    return f"{zlib.crc32(socket.gethostname().encode()):08x}"


def sibling(url: str, tag: str) -> str:
    """A fresh hidden name ``.<name>.<tag>-<uuid>.<host>.<pid>`` next to ``url``.

    The host hash and process id let :func:`clean_stale` tell a live writer's sibling
    from one a killed process left behind.
    """
    stripped = url.rstrip("/")
    head, _, tail = stripped.rpartition("/")
    name = f".{tail}.{tag}-{uuid.uuid4().hex[:12]}.{_host()}.{os.getpid()}"
    return f"{head}/{name}" if head else name


def _listdir(url: str, storage_options: dict | None) -> list[str]:
    """Names directly inside the directory (or prefix) ``url``; ``[]`` when there is none."""
    try:
        if is_local(url):
            return sorted(os.listdir(local_path(url) if url else "."))
        fs, path = filesystem(url, storage_options)
        return sorted(p.rstrip("/").rpartition("/")[2] for p in fs.ls(path, detail=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _writer_alive(host: str | None, pid: str | None) -> bool | None:
    """True/False for a sibling written on this host; None when written elsewhere or unknown."""
    if host is None:
        return False  # written before owners were recorded: no live writer of this version
    if host != _host():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def clean_stale(path, storage_options: dict | None = None, *, foreign: bool = True) -> list[str]:
    """Remove the ``.NAME.tmp-*`` / ``.NAME.old-*`` siblings a killed write left at ``path``.

    Looks next to ``path`` (siblings of it) and, when ``path`` is a directory, inside it
    (the ``.<array>.old-*`` of a replaced array).  A sibling whose writer still runs on
    this host is kept.  ``foreign=False`` also keeps those written from another host
    (whose process cannot be checked): what :func:`staged` does before every write;
    ``foreign=True`` (``dsketch info --clean``) removes them.

    Returns
    -------
    list of str
        The URLs removed.
    """
    url = os.fspath(path).rstrip("/")
    head, _, tail = url.rpartition("/")
    if head.endswith(":/"):  # at the root of a bucket / file system: "s3://name"
        head += "/"
    places = [(head, lambda nm: nm == tail)]
    places.append((url, lambda nm: True))
    removed = []
    for where, wanted in places:
        for entry in _listdir(where, storage_options):
            m = _STALE.match(entry)
            if not m or not wanted(m.group("name")):
                continue
            alive = _writer_alive(m.group("host"), m.group("pid"))
            if alive or (alive is None and not foreign):
                continue
            target = f"{where}{'' if where.endswith('/') else '/'}{entry}" if where else entry
            remove(target, storage_options)
            removed.append(target)
    return removed


def same_path(a, b) -> bool:
    """Whether local paths ``a`` and ``b`` name the same file, or ``a`` lies inside ``b``."""
    a, b = os.fspath(a), os.fspath(b)
    if not (is_local(a) and is_local(b)):
        return a.rstrip("/") == b.rstrip("/")
    ra, rb = local_path(a).resolve(), local_path(b).resolve()
    return ra == rb or rb in ra.parents


def target_kind(url: str, storage_options: dict | None = None) -> str:
    """What sits at ``url``: ``"absent"``, ``"file"``, ``"empty"`` (directory), ``"model"``
    (has ``model.json``), ``"dataset"`` (Zarr group written by dsketch), ``"zarr"`` (other
    Zarr group or array) or ``"directory"`` (anything else)."""
    url = os.fspath(url).rstrip("/")
    if is_local(url):
        p = local_path(url)
        if not p.exists():
            return "absent"
        if not p.is_dir():
            return "file"
    else:
        fs, path = filesystem(url, storage_options)
        if not fs.exists(path):
            return "absent"
        if fs.isfile(path):
            return "file"
    names = _listdir(url, storage_options)
    if not names:
        return "empty"
    if MODEL_FILE in names:
        return "model"
    if "zarr.json" not in names:
        return "zarr" if {".zgroup", ".zarray"} & set(names) else "directory"
    try:
        if is_local(url):
            meta = (p / "zarr.json").read_bytes()
        else:
            meta = fs.cat_file(f"{path}/zarr.json")
        doc = json.loads(meta)
    except (OSError, ValueError):
        return "zarr"
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    return "dataset" if isinstance(attrs, dict) and "dsketch" in attrs else "zarr"


_ACCEPTS = {"dataset": {"absent", "empty", "dataset", "zarr"},
            "store": {"absent", "empty", "dataset", "zarr"},
            "model": {"absent", "empty", "model"}}
_WHAT = {"file": "a plain file", "empty": "an empty directory", "model": "a dsketch model directory",
         "dataset": "a dsketch dataset (Zarr store)", "zarr": "a Zarr store",
         "directory": "a directory that is neither a Zarr store nor a dsketch model"}
_EXPECTED = {"dataset": "a dsketch dataset (Zarr store)", "store": "a Zarr store",
             "model": "a dsketch model directory"}


def check_overwrite_target(path, expect_kind: str, storage_options: dict | None = None) -> str:
    """Refuse, before any work, to write a ``expect_kind`` over something of another kind.

    ``expect_kind`` is ``"dataset"`` (``ingest``), ``"store"`` (a Zarr store an array is
    written into: ``write_array``, ``predict --out``) or ``"model"`` (``save_model``).
    Nothing, an empty directory or a thing of the expected kind passes (``"dataset"`` and
    ``"store"`` accept any Zarr store); a plain file, a model where data is expected, a
    store where a model is expected or any other directory raises.

    Returns
    -------
    str
        The kind found (see :func:`target_kind`).

    Raises
    ------
    InvalidInputError
        The message names the path, what it is and what was expected.
    """
    if expect_kind not in _ACCEPTS:
        raise ValueError(f"expect_kind must be one of {sorted(_ACCEPTS)}, got {expect_kind!r}")
    kind = target_kind(path, storage_options)
    if kind not in _ACCEPTS[expect_kind]:
        raise InvalidInputError(
            f"{os.fspath(path)} is {_WHAT[kind]}, not {_EXPECTED[expect_kind]}: refusing to "
            f"write over it (choose another path, or remove it first)")
    return kind


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
    Siblings of ``dest`` left by killed writes on this host are removed first
    (:func:`clean_stale` with ``foreign=False``).
    """
    check_parent(dest)
    clean_stale(dest, storage_options, foreign=False)
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
    """``zarr.open_group`` of a local path or an fsspec URL.

    Raises
    ------
    InvalidInputError
        Opening an existing group (modes ``"r"``, ``"a"``): its ``zarr.json`` is not valid
        group metadata (the message names the file), or ``url`` is a Zarr array.
    """
    try:
        if is_local(url):
            return zarr.open_group(str(local_path(url)), mode=mode)
        return zarr.open_group(url, mode=mode, storage_options=storage_options)
    except (OSError, zarr.errors.GroupNotFoundError, InvalidInputError):
        raise
    except zarr.errors.ContainsArrayError:
        raise InvalidInputError(f"{url} is a Zarr array, not a group (a store)") from None
    except Exception as exc:
        if mode == "w":
            raise
        raise InvalidInputError(f"{url.rstrip('/')}/zarr.json is corrupted ({type(exc).__name__}: "
                                f"{exc}); restore the store or write it again") from None
