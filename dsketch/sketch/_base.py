"""Private base of the kernel feature maps: validation and the engine's feature-map protocol.

Must not import Dask.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_namespace, resolve_dtype
from .primitives import _pos_int, _prepare, _Random, _rows


def _pos_float(obj, name: str, *, allow_zero: bool = False) -> None:
    value = getattr(obj, name)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{type(obj).__name__}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise ValueError(f"{type(obj).__name__}: {name} must be finite and {bound}, got {value!r}")
    object.__setattr__(obj, name, v)


class _KernelMap(_Random):
    """Common validation, the engine protocol and the call/kernel plumbing."""

    def _check_common(self) -> None:
        _pos_int(self, "input_dim")
        _pos_int(self, "n_features")
        _pos_int(self, "seed", minimum=0)
        object.__setattr__(self, "dtype", resolve_dtype(self.dtype))

    @property
    def input_shape(self) -> tuple:
        return (self.input_dim,)

    @property
    def output_shape(self) -> tuple:
        return (self.n_features,)

    def _features(self, x2):  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, X):
        """Features of the rows of ``X``: ``(..., input_dim) → (..., n_features)`` in ``dtype``."""
        name = type(self).__name__
        x = _prepare(X, self.input_dim, name, "X", field="input_dim").astype(self.dtype,
                                                                             copy=False)
        x2, lead = _rows(x, self.input_dim)
        return self._features(x2).reshape(lead + (self.n_features,))

    def _kernel_inputs(self, X1, X2):
        name = type(self).__name__
        x1 = _prepare(X1, self.input_dim, name, "X1", field="input_dim").astype(np.float64)
        x1 = _rows(x1, self.input_dim)[0]
        if X2 is None:
            return x1, x1
        x2 = _prepare(X2, self.input_dim, name, "X2", field="input_dim").astype(np.float64)
        get_namespace(x1, x2)
        return x1, _rows(x2, self.input_dim)[0]
