"""Shared base of the sketch package: input and spec validation, seeded random specs.

Owns

- the validation helpers every primitive and kernel map uses (:func:`pos_int`,
  :func:`pos_float`, :func:`check_spec`, :func:`prepare_input`, :func:`check_sparse`,
  :func:`is_sparse`, :func:`sparse_namespace`, :func:`float_dtype`, ...);
- :func:`random_signs`, the host draw of (complex) Rademacher diagonals;
- re-exports of the execution helpers (:func:`is_sparse`, :func:`map_slabs`,
  :func:`map_rows`, :func:`one_blas_thread`, :func:`slab_rows`), which live in
  :mod:`dsketch.execution` (``nets`` and the layers above import them from there);
- :class:`RandomSpec`, the base of every frozen random spec: ``_params(xp, dtype)`` is
  ``_build(xp, dtype)`` cached per process, device and dtype;
- :class:`KernelMap`, the base of the kernel feature maps (:mod:`.kernels`,
  :mod:`.ntk_random_features`): their validation and the engine's feature-map protocol.

Sits at the bottom of the package: imports only :mod:`dsketch.backend` and
:mod:`dsketch.execution`, never the primitive modules. Must not import Dask and holds no random state.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from ..backend import (InvalidInputError, NonFiniteError, check_array, check_int, check_overflow,
                       check_seed, device_cache, get_namespace, is_cupy, resolve_dtype)
# the execution helpers live in dsketch.execution; re-exported for the primitive modules
from ..execution import SLAB_ELEMENTS, is_sparse, map_rows, map_slabs, one_blas_thread, slab_rows

__all__ = [
    "pos_int",
    "pos_float",
    "check_spec",
    "is_sparse",
    "sparse_namespace",
    "float_dtype",
    "complex_dtype",
    "prepare_input",
    "as_rows",
    "check_sparse",
    "random_signs",
    "slab_rows",
    "SLAB_ELEMENTS",
    "map_slabs",
    "map_rows",
    "one_blas_thread",
    "RandomSpec",
    "KernelMap",
]


# ---------------------------------------------------------------------------- fields
def pos_int(obj, name: str, minimum: int = 1) -> None:
    """Check that field ``name`` of the frozen spec ``obj`` is an integer ``≥ minimum``.

    Stores it back as a plain ``int``; raises ``InvalidInputError`` (a ``ValueError``)
    naming the class and field (:func:`dsketch.backend.check_int`: ``2.5`` and ``2.0``
    are refused, never truncated).
    """
    value = check_int(getattr(obj, name), f"{type(obj).__name__}: {name}", minimum=minimum)
    object.__setattr__(obj, name, value)


def pos_float(obj, name: str, *, allow_zero: bool = False) -> None:
    """Check that field ``name`` of ``obj`` is a finite number ``> 0`` (``≥ 0`` if allowed).

    Stores it back as a ``float``; raises ``ValueError`` naming the class and field.
    """
    value = getattr(obj, name)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"{type(obj).__name__}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = "≥ 0" if allow_zero else "> 0"
        raise InvalidInputError(
            f"{type(obj).__name__}: {name} must be finite and {bound}, got {value!r}")
    object.__setattr__(obj, name, v)


def check_spec(obj, *widths: str) -> None:
    """Validate a primitive's widths (integers ``≥ 1``), ``seed`` (``≥ 0``) and ``path``.

    ``path`` must be a tuple (a list is converted) of str or non-negative int entries.
    """
    for w in widths:
        pos_int(obj, w)
    object.__setattr__(obj, "seed", check_seed(obj.seed, f"{type(obj).__name__}: seed"))
    path = getattr(obj, "path")
    if isinstance(path, list):
        path = tuple(path)
    if not isinstance(path, tuple):
        raise InvalidInputError(
            f"{type(obj).__name__}: path must be a tuple of str/int, got {path!r}")
    for p in path:
        if isinstance(p, bool) or not isinstance(p, (str, int, np.integer)) or (
                not isinstance(p, str) and p < 0):
            raise InvalidInputError(
                f"{type(obj).__name__}: path entries must be str or non-negative int, got {p!r}")
    object.__setattr__(obj, "path", tuple(p if isinstance(p, str) else int(p) for p in path))


# ----------------------------------------------------------------------------- arrays
def sparse_namespace(x):
    """The sparse module of the sparse matrix ``x``: ``scipy.sparse`` or ``cupyx.scipy.sparse``."""
    if is_cupy(x.data):  # pragma: no cover - GPU only
        import cupyx.scipy.sparse as csp

        return csp
    return scipy.sparse


def float_dtype(x) -> np.dtype:
    """float64 for float64 (and integer/bool) data, float32 for float32/float16."""
    dt = np.dtype(x.dtype)
    if dt.kind == "f" and dt.itemsize < 8:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def complex_dtype(dtype) -> np.dtype:
    """complex64 for float32, complex128 otherwise."""
    return np.dtype(np.complex64) if np.dtype(dtype) == np.float32 else np.dtype(np.complex128)


def prepare_input(x, width: int, owner: str, name: str = "x", check: bool = True,
                  field: str = "d_in"):
    """Validate dense ``x`` and return it as float32/float64 (:func:`float_dtype`).

    Parameters
    ----------
    x : array-like
        NumPy or CuPy array (or anything ``numpy.asarray`` takes when ``check``).
    width : int
        Required size of the last axis.
    owner, name, field : str
        Class name, argument name and width field named in the error messages.
    check : bool
        Check array-likeness, last-axis width and that the data are numeric and finite;
        ``False`` for internal callers that already did (only the dtype cast is left).

    Raises
    ------
    InvalidInputError
        A ``ValueError``; for sparse input (only the CountSketch-based sketches take it)
        and failed checks.
    """
    if is_sparse(x):
        raise InvalidInputError(f"{owner}: {name} is a sparse matrix; only the CountSketch-based "
                         "sketches take sparse input (or pass a dense array)")
    if check:
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            try:
                x = np.asarray(x)
            except Exception as exc:
                raise InvalidInputError(f"{owner}: {name} is not array-like: {exc}") from None
        if len(x.shape) == 0:
            raise InvalidInputError(f"{owner}: {name} must have at least one dimension")
        if x.shape[-1] != width:
            raise InvalidInputError(
                f"{owner}: {name} has last-axis width {x.shape[-1]}, expected {field}={width}")
        x = check_array(x, f"{owner}: {name}")
    dt = float_dtype(x)
    if x.dtype != dt:
        x = x.astype(dt)
    return x


def as_rows(x, width: int):
    """``(x2, lead)``: ``x`` reshaped to 2-D rows ``(R, width)`` and its leading shape."""
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, width), lead


def check_sparse(x, width: int, owner: str, field: str = "d_in"):
    """Validate a 2-D sparse matrix (shape, numeric, finite) and return it as float CSR."""
    if len(x.shape) != 2:
        raise InvalidInputError(f"{owner}: sparse x must be 2-D, got shape {x.shape}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{owner}: x has no rows")
    if x.shape[1] != width:
        raise InvalidInputError(f"{owner}: x has last-axis width {x.shape[1]}, expected {field}={width}")
    x = x.tocsr()
    data = x.data
    kind = data.dtype.kind
    if kind not in "fiub":
        raise InvalidInputError(f"{owner}: x must be numeric (got dtype {data.dtype})")
    xp = get_namespace(data)
    if kind == "f" and data.size and not bool(xp.isfinite(data).all()):
        bad = ~xp.isfinite(data)
        row = int(xp.searchsorted(x.indptr, int(xp.argmax(bad)), side="right")) - 1
        raise NonFiniteError(f"{owner}: x contains NaN or Inf (first at row {row})")
    dt = float_dtype(data)
    if data.dtype != dt:
        x = x.astype(dt)
    return x


# ---------------------------------------------------------------------------- randomness
def random_signs(gen: np.random.Generator, shape, complex_signs: bool) -> np.ndarray:
    """Rademacher ±1 (float64) or complex Rademacher {±1, ±i} (complex128) host draws."""
    k = gen.integers(0, 4 if complex_signs else 2, size=shape)
    if complex_signs:
        return np.array([1, 1j, -1, -1j], dtype=np.complex128)[k]
    return (1 - 2 * k).astype(np.float64)


class RandomSpec:
    """Base of the random specs: ``self._params(xp, dtype)`` = ``self._build(xp, dtype)``.

    Subclasses are frozen (hashable) dataclasses and implement ``_build(xp, dtype)``,
    drawing on the host from their seed; the result is cached per process, spec, device
    and dtype (float32 or float64) by :func:`dsketch.backend.device_cache`.
    """

    #: True for specs whose work is Hadamard transforms (small-inner-dimension GEMMs that
    #: run best on one BLAS thread; see :func:`one_blas_thread`).
    hadamard_bound = False

    def _build(self, xp, dtype):  # pragma: no cover - interface
        raise NotImplementedError

    @device_cache
    def _params_f32(self, xp):
        return self._build(xp, np.dtype(np.float32))

    @device_cache
    def _params_f64(self, xp):
        return self._build(xp, np.dtype(np.float64))

    def _params(self, xp, dtype):
        if np.dtype(dtype) == np.float32:
            return self._params_f32(xp)
        return self._params_f64(xp)


class KernelMap(RandomSpec):
    """Base of the kernel feature maps: common validation and the engine protocol.

    Subclasses are frozen dataclasses with ``input_dim``, ``n_features``, ``seed`` and
    ``dtype`` fields, call :meth:`_check_common` from ``__post_init__`` and implement
    ``_features(x2)`` on validated 2-D rows in ``dtype`` (dense, or float CSR for sparse
    input: :func:`dsketch.sketch.linear.first_layer_rows` turns them into what the map's
    first layer takes).
    """

    def _check_common(self) -> None:
        pos_int(self, "input_dim")
        pos_int(self, "n_features")
        object.__setattr__(self, "seed", check_seed(self.seed, f"{type(self).__name__}: seed"))
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
        width = max(self.n_features, self.input_dim)
        if is_sparse(X):  # 2-D sparse rows: each map's ``_features`` takes them too
            x2 = check_sparse(X, self.input_dim, name, "input_dim").astype(self.dtype)
            lead, width = (x2.shape[0],), 4 * self.n_features
        else:
            x = prepare_input(X, self.input_dim, name, "X", field="input_dim").astype(
                self.dtype, copy=False)
            x2, lead = as_rows(x, self.input_dim)
        inner = self._params(get_namespace(x2), self.dtype)
        f = map_slabs(self._features, x2, width,
                      one_thread=getattr(inner, "hadamard_bound", False))
        check_overflow(f, f"the {name} features", {"X": x2})  # finite X: NaN/Inf = overflow
        return f.reshape(lead + (self.n_features,))

    def _kernel_inputs(self, X1, X2):
        """Validated float64 2-D rows ``(x1, x2)`` (``x2 is x1`` when ``X2`` is None)."""
        name = type(self).__name__

        def dense(X):  # exact kernels take sparse rows densified (n × d: evaluation sizes)
            return check_sparse(X, self.input_dim, name, "input_dim").toarray() if is_sparse(X) else X

        x1 = prepare_input(dense(X1), self.input_dim, name, "X1", field="input_dim").astype(np.float64)
        x1 = as_rows(x1, self.input_dim)[0]
        if X2 is None:
            return x1, x1
        x2 = prepare_input(dense(X2), self.input_dim, name, "X2", field="input_dim").astype(np.float64)
        get_namespace(x1, x2)
        return x1, as_rows(x2, self.input_dim)[0]
