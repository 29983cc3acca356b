"""Scoring a fitted model on (dask) data, and the one test of "is this target made of labels".

Owns :func:`evaluate` (accuracy of a classifier, RMSE and R² of a regressor, in one pass
over dask ``X``/``y``: one ``compute``), :func:`check_class_labels`, the single answer to
"is this a classifier's target" shared by the estimators (from the distinct labels they
compute anyway) and the ``dsketch`` command (from a one-pass count of non-whole values,
:func:`check_label_target`), and :func:`is_label_dtype`.  A model is read only through
``predict`` and ``classes_``; must not import the estimators nor parse arguments (the CLI
only prints what these return).
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
from sklearn.utils.multiclass import type_of_target

from ..backend import InvalidInputError

__all__ = ["evaluate", "check_class_labels", "check_label_target", "fractional_count",
           "is_label_dtype"]


def is_label_dtype(dtype) -> bool:
    """Integer, bool or string targets: labels of a classifier."""
    return np.dtype(dtype).kind in "biuUSO"


def fractional_count(y):
    """Lazy count of target values that are not whole numbers (0 for non-float targets)."""
    if np.dtype(y.dtype).kind not in "fc":
        return da.zeros((), dtype=np.int64)
    return (y != da.floor(y.real if np.dtype(y.dtype).kind == "c" else y)).sum()


def check_class_labels(classes=None, n: int = 0, *, n_fractional: int | None = None,
                       where: str = "y", hint: str = "") -> None:
    """Refuse a continuous target for a classifier; the one test, whatever is at hand.

    Either the distinct labels ``classes`` of ``n`` rows (what a classifier computes:
    non-integral floats are ``'continuous'``, scikit-learn's ``type_of_target``; more
    distinct labels than half of ``n`` (> 20) rows warns, as scikit-learn does), or
    ``n_fractional``, a count of values that are not whole numbers (one cheap pass, without
    gathering the distinct values).  ``where`` names the target, ``hint`` says what to do.
    Raises :class:`~dsketch.backend.InvalidInputError` with scikit-learn's
    "Unknown label type: continuous" wording.
    """
    if n_fractional is not None:
        if not int(n_fractional):
            return
        detail, kind = f"{int(n_fractional):,} of {n:,} values are not whole numbers", "continuous"
    else:
        kind = type_of_target(np.asarray(classes), input_name="y")
        if kind in ("binary", "multiclass"):
            if n > 20 and len(classes) > round(0.5 * n):
                warnings.warn("The number of unique classes is greater than 50% of the number of "
                              "samples. `y` could represent a regression problem, not a "
                              "classification problem.", UserWarning, stacklevel=3)
            return
        detail = f"{len(classes):,} distinct values in {n:,} rows"
    raise InvalidInputError(
        f"Unknown label type: {kind}. The target {where} is {kind} ({detail}): a classifier "
        f"needs labels (integers or strings), not a regression target with continuous "
        f"values{'; ' + hint if hint else ''}")


def check_label_target(y, where: str, hint: str = "") -> None:
    """:func:`check_class_labels` of a dask target ``y`` by one pass counting non-whole values."""
    (n_bad,) = dask.compute(fractional_count(y))
    check_class_labels(n=int(y.shape[0]), n_fractional=int(n_bad), where=where, hint=hint)


def evaluate(est, X, y, where: str = "the data") -> dict:
    """Metrics of ``est`` on dask ``X``/``y`` in one pass (one ``compute``).

    Classifiers (``est.classes_``): ``{"n_rows", "accuracy"}``; a continuous target, one of
    another type than the classes (numbers against strings) or one with none of the model's
    classes raises :class:`~dsketch.backend.InvalidInputError`.  Regressors:
    ``{"n_rows", "rmse", "r2"}`` (R² averaged over targets).
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
        correct, known, n_bad = dask.compute((pred == y).sum(), da.isin(y, classes).sum(),
                                             fractional_count(y))
        whole = classes.dtype.kind not in "fc" or bool(np.all(classes == np.floor(classes.real)))
        if whole:
            check_class_labels(n=n, n_fractional=int(n_bad), where=f"y of {where}",
                               hint="this model is a classifier: evaluate it on labels")
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
