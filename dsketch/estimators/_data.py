"""Input handling of the estimators: which kind of input, validation, seeds.

Owns telling NumPy/SciPy input from dask arrays and Zarr store URLs, opening a store,
scikit-learn validation of in-memory input (2-D rows or images), lining targets up with
the row chunks of a dask ``X`` (with the same NaN/Inf check as ``X``), NaN/Inf in
in-memory input named by row, the labels check (:func:`dsketch.engine.metrics.check_class_labels`,
re-exported) and turning ``random_state`` into the feature map's seed (the CV checks are
:func:`dsketch.engine.ridge.check_cv`'s).
Must not compute features or fit anything.
"""

from __future__ import annotations

import math
import os
from numbers import Integral

import dask.array as da
import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import check_consistent_length, validate_data

from .. import engine
from ..backend import InvalidInputError, check_seed
from ..engine.metrics import check_class_labels  # the one labels test, shared with the CLI

__all__ = ["is_dask", "is_store", "open_store", "draw_seed", "rechunk_like_rows",
           "validate_input", "check_rows_finite", "check_row_width", "check_class_labels"]


def is_dask(x) -> bool:
    """True for a ``dask.array`` array."""
    return isinstance(x, da.Array)


def is_store(x) -> bool:
    """True for a Zarr store path or URL (``str`` / ``os.PathLike``)."""
    return isinstance(x, (str, os.PathLike))


def open_store(url, *, with_y: bool):
    """``engine.open_dataset`` of ``url`` (arrays ``X`` and, with ``with_y``, ``y``)."""
    ds = engine.open_dataset(os.fspath(url), y="y" if with_y else None)
    if with_y and ds.y is None:
        raise ValueError(f"the store {os.fspath(url)!r} has no target array 'y'; pass y explicitly")
    return ds


def draw_seed(random_state) -> int:
    """The feature-map seed for ``random_state`` (see :mod:`dsketch.estimators`)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        return check_seed(random_state, "random_state")
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise InvalidInputError(f"random_state must be None, a non-negative int, a RandomState or a "
                            f"Generator, got {random_state!r}")


def rechunk_like_rows(y, X):
    """``y`` (NumPy or dask, (n,) or (n, k)) as a dask array chunked like the rows of ``X``.

    Numeric targets get the same lazy NaN/Inf check as ``X`` (``engine.validate_rows``:
    the error names ``y``, the chunk and the global row) unless they already carry it.
    """
    validated = is_dask(y) and str(y.name).startswith("dsketch-validate-")  # a store's y
    if not is_dask(y):
        y = np.asarray(y)
        if y.shape[0] != X.shape[0]:
            raise InvalidInputError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
        y = da.from_array(y, chunks=(X.chunks[0],) + tuple((s,) for s in y.shape[1:]))
    elif y.shape[0] != X.shape[0] and not math.isnan(y.shape[0]):
        raise InvalidInputError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
    else:
        y = y.rechunk({0: X.chunks[0]} | {i: -1 for i in range(1, y.ndim)})
    if not validated and np.dtype(y.dtype).kind in "biuf":
        y = engine.validate_rows(y, name="y", ndim=(1, 2))
    return y


def check_row_width(est, X, *, reset: bool) -> None:
    """Set (``reset``) or check ``est.n_features_in_`` against X's flattened row width."""
    width = int(np.prod(X.shape[1:]))
    if reset:
        est.n_features_in_ = width
    elif width != est.n_features_in_:
        raise ValueError(f"X has {width} features per row (shape {tuple(X.shape[1:])}), but "
                         f"{type(est).__name__} is expecting {est.n_features_in_} features as input")


def validate_input(est, X, y=None, *, reset: bool, sparse: bool, images: bool):
    """``validate_data`` for 2-D input; images (n, H, W, C) checked with ``allow_nd``.

    ``n_features_in_`` is the flattened row width in both cases.  Returns ``X`` or
    ``(X, y)`` when ``y`` is given.
    """
    fin = dict(ensure_all_finite=False)  # checked below, naming the first bad row
    if not (images and hasattr(X, "ndim") and X.ndim > 2):
        kw = dict(accept_sparse="csr" if sparse else False, dtype=[np.float64, np.float32], **fin)
        if y is None:
            return check_rows_finite(validate_data(est, X, reset=reset, **kw), "X")
        X, y = validate_data(est, X, y, reset=reset, multi_output=True, **kw)
        return check_rows_finite(X, "X"), check_rows_finite(y, "y")
    X = check_array(X, allow_nd=True, dtype=[np.float64, np.float32], input_name="X",
                    estimator=est, **fin)
    check_row_width(est, X, reset=reset)
    check_rows_finite(X, "X")
    if y is None:
        return X
    y = check_array(y, ensure_2d=False, dtype=None, input_name="y", **fin)
    check_consistent_length(X, y)
    return X, check_rows_finite(y, "y")


def check_rows_finite(a, name: str):
    """Return in-memory ``a`` (NumPy or SciPy sparse); ``InvalidInputError`` naming ``name``
    and the first row holding NaN/Inf otherwise (scikit-learn's message names no row)."""
    data = a.data if hasattr(a, "tocsr") else np.asarray(a)
    if np.dtype(data.dtype).kind not in "fc" or np.isfinite(data).all():
        return a
    if hasattr(a, "tocsr"):
        coo = a.tocoo()
        row = int(coo.row[np.argmax(~np.isfinite(coo.data))])
    else:
        row = int(np.argmax(~np.isfinite(data.reshape(data.shape[0], -1)).all(axis=1)))
    raise InvalidInputError(f"{name} contains NaN or Inf (first at row {row}): every value of "
                            f"{name} must be finite (drop or impute those rows)")
