"""Input handling of the estimators: which kind of input, validation, seeds.

Owns telling NumPy/SciPy input from dask arrays and Zarr store URLs, opening a store,
scikit-learn validation of in-memory input (2-D rows or images), lining targets up with
the row chunks of a dask ``X``, and turning ``random_state`` into the feature map's seed.
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

__all__ = ["is_dask", "is_store", "open_store", "draw_seed", "rechunk_like_rows",
           "validate_input", "check_row_width"]


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
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


def rechunk_like_rows(y, X):
    """``y`` (NumPy or dask, (n,) or (n, k)) as a dask array chunked like the rows of ``X``."""
    if not is_dask(y):
        y = np.asarray(y)
        return da.from_array(y, chunks=(X.chunks[0],) + tuple((s,) for s in y.shape[1:]))
    if y.shape[0] != X.shape[0] and not math.isnan(y.shape[0]):
        raise ValueError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
    return y.rechunk({0: X.chunks[0]} | {i: -1 for i in range(1, y.ndim)})


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
    if not (images and hasattr(X, "ndim") and X.ndim > 2):
        kw = dict(accept_sparse="csr" if sparse else False, dtype=[np.float64, np.float32])
        if y is None:
            return validate_data(est, X, reset=reset, **kw)
        return validate_data(est, X, y, reset=reset, multi_output=True, **kw)
    X = check_array(X, allow_nd=True, dtype=[np.float64, np.float32], input_name="X",
                    estimator=est)
    check_row_width(est, X, reset=reset)
    if y is None:
        return X
    y = check_array(y, ensure_2d=False, dtype=None, input_name="y")
    check_consistent_length(X, y)
    return X, y
