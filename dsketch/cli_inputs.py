"""What the ``dsketch`` command checks before it starts any work, and its metrics pass.

Owns the CLI's exit-code errors (:class:`InputError` exits 2, :class:`RunFailure` exits 1),
opening ``--data`` stores and ``--model`` directories with messages that say what to do
(a plain file or an empty directory is not a store: ``dsketch ingest`` makes one), refusing
an output path that exists without ``--overwrite`` or holds the wrong kind of thing, the
labels check of ``--task classify`` and of evaluating a classifier (a continuous target is
bad input, not accuracy 0), and :func:`evaluate_model`.  No argument parsing (that is
:mod:`dsketch.cli`) and no modelling (estimators, model files and the engine do that).
"""

from __future__ import annotations

import os

import click
import dask
import dask.array as da
import numpy as np

from . import engine
from .backend import InvalidInputError
from .engine.store import check_overwrite_target, target_kind
from .model_io import load_model

__all__ = ["InputError", "RunFailure", "open_data", "load_model_dir", "check_output", "check_target",
           "is_label_dtype", "check_classify_target", "evaluate_model"]


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
    """Refuse, before any work, an output that exists without ``--overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{what} {path!r} already exists; pass --overwrite to replace it")


def check_target(path: str, kind: str, flag: str) -> None:
    """Refuse, before any work, to write a ``kind`` (``"model"`` or ``"store"``) over
    something else (``engine.store.check_overwrite_target``; an empty directory is no model,
    and a dataset is no place for predictions)."""
    if _local(path) and not os.path.exists(path):
        return
    found = check_overwrite_target(path, kind)
    if kind == "store" and found == "dataset":
        raise InvalidInputError(f"{flag} {path!r} is a dsketch dataset (a Zarr store with X/y); "
                                "write predictions to a store of their own")
    if kind == "model" and found == "empty":
        raise InvalidInputError(f"{flag} {path!r} is an empty directory, not a dsketch model; "
                                "remove it or choose another path")


def is_label_dtype(dtype) -> bool:
    """Integer, bool or string targets: labels of a classifier."""
    return np.dtype(dtype).kind in "biuUSO"


def _fractional(y):
    """Lazy count of target values that are not whole numbers (0 for non-float targets)."""
    if np.dtype(y.dtype).kind not in "fc":
        return da.zeros((), dtype=np.int64)
    return (y != da.floor(y.real if np.dtype(y.dtype).kind == "c" else y)).sum()


def _continuous(where: str, n_bad: int, n: int, hint: str) -> InvalidInputError:
    return InvalidInputError(
        f"the target y of {where} is continuous ({n_bad:,} of {n:,} values are not whole numbers): "
        f"a classifier needs labels (integers or strings); {hint}")


def check_classify_target(y, where: str) -> None:
    """``--task classify``: refuse a continuous target (one pass over ``y``)."""
    (n_bad,) = dask.compute(_fractional(y))
    if int(n_bad):
        raise _continuous(where, int(n_bad), int(y.shape[0]), "use --task regress for a continuous target")


def evaluate_model(est, X, y, where: str = "the data") -> dict:
    """Metrics of ``est`` on dask ``X``/``y`` in one pass (one ``compute``).

    Classifiers: accuracy; a continuous target, one of another type than the classes
    (numbers against strings) or one with none of the model's classes raises
    :class:`~dsketch.backend.InvalidInputError`.  Regressors: RMSE and R².
    """
    pred = est.predict(X)
    y = y.rechunk({0: pred.chunks[0]} | {i: -1 for i in range(1, y.ndim)})
    n = int(y.shape[0])
    if hasattr(est, "classes_"):
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        classes = np.asarray(est.classes_)
        if (classes.dtype.kind in "USO") != (np.dtype(y.dtype).kind in "USO"):
            raise InvalidInputError(f"the target y of {where} is {y.dtype} but the classifier's classes "
                                    f"are {classes.dtype} ({classes[:5].tolist()}...): not the same labels")
        correct, known, n_bad = dask.compute((pred == y).sum(), da.isin(y, classes).sum(), _fractional(y))
        whole = classes.dtype.kind not in "fc" or bool(np.all(classes == np.floor(classes.real)))
        if int(n_bad) and whole:
            raise _continuous(where, int(n_bad), n, "this model is a classifier: evaluate it on labels")
        if n and not int(known):
            raise InvalidInputError(f"none of the {n:,} target values of {where} is a class of the model "
                                    f"(classes {classes[:10].tolist()})")
        return {"n_rows": n, "accuracy": float(correct) / n}
    yf = y.astype(np.float64)
    pf = pred.astype(np.float64).reshape(yf.shape)
    sse, s1, s2 = dask.compute(((pf - yf) ** 2).sum(axis=0), yf.sum(axis=0), (yf ** 2).sum(axis=0))
    sst = s2 - s1 ** 2 / n
    r2 = np.where(sst > 0, 1 - sse / np.where(sst > 0, sst, 1), 0.0)
    return {"n_rows": n, "rmse": float(np.sqrt(np.sum(sse) / (n * max(np.size(sse), 1)))),
            "r2": float(np.mean(r2))}
