"""The layer algebra's records and protocol: ``Kernel`` (exact face), ``Features`` (sketch face).

Owns the two immutable records every layer transforms, the ``Layer`` protocol, the shapes
used to plan a sketch, and the validation of layer parameters (:func:`check_param`,
:func:`check_input_shape`; integers: ``backend.check_int``).  Concrete layers live in their
own modules; ``serial`` (in ``serial.py``) chains them.  Must not import Dask nor any concrete layer.

Array layout
------------
Exact face (``Kernel``): every array has a *batch* part followed by *pair-spatial* axes.
  - cross mode: ``nngp``/``ntk`` are ``(n1, n2) + P`` where ``P = (H, W, H, W)`` for images
    (pixel of x1, pixel of x2) and ``P = ()`` for vectors;
  - ``cov1``/``cov2`` are the self-kernels ``(n1,) + P`` / ``(n2,) + P`` of each input
    (for images: every pixel pair of the same image), needed for variances;
  - diagonal mode (``diagonal=True``): ``nngp``/``ntk`` are ``(n,) + P`` = k(x_i, x_i),
    ``cov1`` equals ``nngp`` and ``cov2`` is ``None``.
Sketch face (``Features``): ``nngp`` ``(n,) + S + (w_nngp,)``, ``ntk`` ``(n,) + S + (w_ntk,)``
with ``S = (H, W)`` or ``()``, and ``var`` ``(n,) + S``: the exact NNGP variance of each row
(pixel), tracked alongside so that activations can use exact radial factors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..backend import InvalidInputError, check_int

__all__ = ["Kernel", "Features", "FeatureShape", "SketchOptions", "Layer", "LayerSketch",
           "check_param", "check_input_shape"]


@dataclass(frozen=True)
class Kernel:
    """Exact kernel record (neural-tangents ``Kernel`` analogue); see module docstring."""

    nngp: Any
    ntk: Any
    cov1: Any
    cov2: Optional[Any]
    spatial: tuple = ()
    diagonal: bool = False

    replace = dataclasses.replace

    @property
    def n_spatial(self) -> int:
        return len(self.spatial)

    # -- variances ---------------------------------------------------------------------
    def _pixel_var(self, cov):
        """Per-pixel variances ``(n,) + S`` of a self-kernel ``(n,) + S + S``."""
        if not self.spatial:
            return cov
        n = cov.shape[0]
        size = 1
        for s in self.spatial:
            size *= s
        flat = cov.reshape(n, size, size)
        xp_diag = flat.diagonal(axis1=1, axis2=2)
        return xp_diag.reshape((n,) + tuple(self.spatial))

    def pair_variances(self):
        """Variances to pair with each entry of ``nngp``, ``cov1`` and ``cov2``.

        Returns ``((v_left, v_right) for nngp, (.., ..) for cov1, (.., ..) for cov2 or None)``,
        every array broadcastable against the record's array it belongs to.
        """
        s = self.n_spatial
        d1 = self._pixel_var(self.cov1)
        one = (None,) * s

        def self_pair(d):
            idx_l = (slice(None),) + (slice(None),) * s + one
            idx_r = (slice(None),) + one + (slice(None),) * s
            return d[idx_l], d[idx_r]

        self1 = self_pair(d1)
        if self.diagonal:
            return self1, self1, None
        d2 = self._pixel_var(self.cov2)
        left = d1[(slice(None), None) + (slice(None),) * s + one]
        right = d2[(None, slice(None)) + one + (slice(None),) * s]
        return (left, right), self1, self_pair(d2)


@dataclass(frozen=True)
class FeatureShape:
    """Shape of a ``Features`` record without the batch axis: spatial dims and widths."""

    spatial: tuple
    nngp: int
    ntk: int


@dataclass(frozen=True)
class Features:
    """Sketch-face record; see module docstring for the layout."""

    nngp: Any
    ntk: Any
    var: Any

    replace = dataclasses.replace

    @property
    def shape(self) -> FeatureShape:
        return FeatureShape(tuple(self.nngp.shape[1:-1]), self.nngp.shape[-1], self.ntk.shape[-1])


@dataclass(frozen=True)
class SketchOptions:
    """Knobs shared by every layer's sketch face (part of the hashable feature-map spec).

    Attributes
    ----------
    n_features : int
        Width ``m`` of the NNGP and NTK features each nonlinearity produces (and of the
        final output).
    degree : int
        Truncation degree of polynomial (Hermite / arc-cosine fit) expansions.
    relu_method : {"poly", "random"}
        ReLU-family sketch: polynomial arc-cosine fit + PolySketch, or random features.
    dtype : str
        Compute and output dtype of features: ``"float32"`` or ``"float64"``.
    method : {"auto", "hermite", "random", "mix"}
        Estimator of non-ReLU activation sketches (``nets.activation_sketch``).
    """

    n_features: int
    degree: int = 8
    relu_method: str = "poly"
    dtype: str = "float32"
    method: str = "auto"


class Layer:
    """A layer: one object that knows its exact kernel face and its sketch face.

    Subclasses are frozen dataclasses (hashable, a few bytes) and implement:

    ``output_shape(input_shape)``
        shape without the batch axis, ``(d,)`` or ``(H, W, C)``; ``ValueError`` when the
        layer cannot take that input.
    ``kernel(k: Kernel) -> Kernel``
        the exact face (neural-tangents ``parameterization="ntk"`` semantics).
    ``sketch(shape: FeatureShape, options: SketchOptions, seed: int, path: tuple) -> LayerSketch``
        plan the sketch face: returns a small hashable object that maps ``Features`` of
        ``shape`` to ``Features`` of ``.out``; random matrices it uses come from
        ``dsketch.backend.rng(seed, *path, ...)`` and are cached per device.
    """

    def output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def kernel(self, k: Kernel) -> Kernel:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} has no exact kernel face")

    def bind(self, input_shape: tuple) -> "Layer":
        """This layer for inputs of ``input_shape`` (``serial`` calls it before either face).

        Layers whose kernel depends on the input width (``parameterization="standard"``)
        return a copy that records it; the rest return ``self``.
        """
        return self

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        raise NotImplementedError(f"{type(self).__name__} has no sketch face")  # pragma: no cover


class LayerSketch:
    """Planned sketch face of one layer: ``out`` (a ``FeatureShape``) and ``__call__``."""

    out: FeatureShape

    def __call__(self, f: Features) -> Features:  # pragma: no cover - interface
        raise NotImplementedError


# --------------------------------------------------------------------------- validation
def check_param(name: str, value, *, nonneg: bool = False, positive: bool = False) -> float:
    """Validate a real, finite layer parameter and return it as ``float``.

    Raises :class:`InvalidInputError` (a ``ValueError``) naming ``name`` for booleans,
    non-numbers, NaN/Inf, and (with ``nonneg``/``positive``) negative or non-positive
    values.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise InvalidInputError(f"{name} must be finite, got {value!r}")
    if nonneg and v < 0:
        raise InvalidInputError(f"{name} must be non-negative, got {value!r}")
    if positive and v <= 0:
        raise InvalidInputError(f"{name} must be positive, got {value!r}")
    return v


def check_input_shape(shape, name: str = "input_shape") -> tuple:
    """A row shape as a tuple of positive ints: ``(d,)`` or ``(H, W, C)``.

    Refuses a bare int (``net.sketch(8, ...)``: pass ``(8,)``), other lengths, and
    entries that are not integers ≥ 1, with :class:`InvalidInputError` naming ``name``.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        raise InvalidInputError(f"{name} must be a tuple (d,) or (H, W, C), got the int "
                                f"{shape!r}: pass ({shape},)")
    try:
        dims = tuple(shape)
    except TypeError:
        raise InvalidInputError(f"{name} must be a tuple (d,) or (H, W, C), "
                                f"got {shape!r}") from None
    if len(dims) not in (1, 3):
        raise InvalidInputError(f"{name} must be (d,) or (H, W, C), got {shape!r}")
    return tuple(check_int(s, f"{name}[{i}]", minimum=1) for i, s in enumerate(dims))
