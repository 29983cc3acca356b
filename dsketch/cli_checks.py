"""What the ``dsketch`` command checks before it starts any work.

Owns the CLI's exit-code errors (:class:`InputError` exits 2, :class:`RunFailure` exits 1),
opening ``--data`` stores and ``--model`` directories with messages that say what to do
(a plain file or an empty directory is not a store: ``dsketch ingest`` makes one), refusing
an output path that exists without ``--overwrite`` or holds the wrong kind of thing.  The
labels check (``--task classify``, evaluating a classifier) and the metrics are the
library's (:mod:`dsketch.engine.metrics`).  No argument parsing (that is :mod:`dsketch.cli`)
and no modelling (estimators, model files and the engine do that).
"""

from __future__ import annotations

import os

import click

from . import engine
from .backend import InvalidInputError
from .engine.store import check_overwrite_target, check_parent, target_kind
from .model_io import load_model

__all__ = ["InputError", "RunFailure", "open_data", "load_model_dir", "check_output", "check_target"]


class InputError(click.ClickException):
    """Bad usage or input: exit code 2."""

    exit_code = 2


class RunFailure(click.ClickException):
    """A failure while running: exit code 1."""

    exit_code = 1


def _local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def open_data(url: str, *, y: bool, flag: str = "--data"):
    """The dataset at ``url`` (lazy, validated per chunk); ``InputError`` says what it is instead."""
    if not (os.path.exists(url) or not _local(url)):
        raise InputError(f"data store {url!r} does not exist")
    kind = target_kind(url) if _local(url) else "dataset"
    make = f"make one with `dsketch ingest SOURCE {url}` (SOURCE: .npy, .csv or svmlight)"
    if kind == "file":
        raise InvalidInputError(f"{flag} {url!r} is a plain file, not a dsketch data store; convert it with "
                         f"`dsketch ingest {url} STORE.zarr` and pass the store")
    if kind in ("empty", "directory"):
        what = "an empty directory" if kind == "empty" else "a directory without zarr.json"
        raise InvalidInputError(f"{flag} {url!r} is {what}, not a dsketch data store; {make}")
    if kind == "model":
        raise InvalidInputError(f"{flag} {url!r} is a dsketch model directory, not a data store "
                         "(pass it as --model)")
    try:
        ds = engine.open_dataset(url, y="y" if y else None)
    except KeyError as exc:
        raise InputError(f"{flag} {url!r}: {exc.args[0] if exc.args else exc}") from None
    if y and ds.y is None:
        raise InputError(f"data store {url!r} has no target array 'y'")
    return ds


def load_model_dir(path: str):
    """The fitted regressor or classifier saved at ``path``; ``InputError`` when ``path`` is
    not a model directory, ``InvalidInputError`` when its files are bad or it cannot predict."""
    if not os.path.isdir(path):
        what = "is a plain file" if os.path.exists(path) else "does not exist"
        raise InputError(f"model {path!r} {what} (expected a directory written by `dsketch fit`)")
    est = load_model(path)
    if not hasattr(est, "predict"):
        raise InvalidInputError(f"model {path!r} is a {type(est).__name__} transformer, not a fitted "
                                "regressor or classifier (`dsketch fit` writes those)")
    return est


def check_output(path: str, overwrite: bool, what: str) -> None:
    """Refuse, before any work, an output that exists without ``--overwrite``, or one below a
    plain file (``engine.store.check_parent``)."""
    check_parent(path)
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{what} {path!r} already exists; pass --overwrite to replace it")


def check_target(path: str, kind: str, flag: str) -> None:
    """Refuse, before any work, to write a ``kind`` (``"model"`` or ``"store"``) over
    something else (``engine.store.check_overwrite_target``; an empty directory is no model,
    and a dataset is no place for predictions), or below a plain file."""
    check_parent(path)
    if _local(path) and not os.path.exists(path):
        return
    found = check_overwrite_target(path, kind)
    if kind == "store" and found == "dataset":
        raise InvalidInputError(f"{flag} {path!r} is a dsketch dataset (a Zarr store with X/y); "
                                "write predictions to a store of their own")
    if kind == "model" and found == "empty":
        raise InvalidInputError(f"{flag} {path!r} is an empty directory, not a dsketch model; "
                                "remove it or choose another path")
