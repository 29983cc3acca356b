"""Nyström features of a network's exact kernel: φ(x) = K(x, L) · K(L, L)^{-1/2}.

Owns the data-dependent counterpart of the oblivious sketches: landmark selection
(uniform, or by approximate ridge leverage scores computed from a cheap sketch pass),
the stable inverse square root of the landmark kernel, and :class:`NystroemMap`, the
feature map (same protocol as ``net.sketch(...)``: ``n_features``, ``dtype``,
``input_shape``, hashable, row-wise) whose Gram matrix ``ΦΦᵀ = K(X, L) K(L, L)⁺ K(L, X)``
is the Nyström approximation of the exact NNGP or NTK.  Unlike the random features it
carries data (the landmark rows), so its identity is a digest of its arrays.  Must not
import Dask (the engine distributes it like any other map).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from scipy.linalg import solve_triangular

from ..backend import (InvalidInputError, check_overflow, device_key, get_namespace, resolve_dtype, rng,
                       rows_matmul, to_namespace)
from ..execution import is_sparse, map_rows
from .exact import KINDS
from .serial import Serial

__all__ = ["NystroemMap", "inverse_sqrt", "sample_landmarks", "ridge_leverage_scores",
           "leverage_factor", "leverage_rows", "LANDMARK_METHODS"]

#: Landmark selection rules of :func:`sample_landmarks`.
LANDMARK_METHODS = ("uniform", "leverage")
#: Rows per slab of :meth:`NystroemMap.__call__` (bounds the n × m float64 kernel block).
_SLAB_ROWS = 2048


def inverse_sqrt(K, rcond: float = 1e-8):
    """Symmetric pseudo-inverse square root ``U diag(s^{-1/2}) Uᵀ`` of a PSD matrix.

    Eigenvalues at or below ``rcond · max(s)`` (round-off, duplicate landmarks) are dropped
    instead of inverted, so features stay bounded; the result keeps ``K``'s size, so the
    feature width is exactly the number of landmarks.
    """
    K = np.asarray(K, dtype=np.float64)
    s, U = np.linalg.eigh((K + K.T) / 2)
    top = float(s.max()) if s.size else 0.0
    if not np.isfinite(top) or top <= 0:
        raise InvalidInputError("the landmark kernel K(L, L) is not positive (all landmarks zero?)")
    keep = s > rcond * top
    g = np.zeros_like(s)
    g[keep] = 1.0 / np.sqrt(s[keep])
    return (U * g) @ U.T


def leverage_factor(G, lam: Optional[float] = None):
    """Cholesky factor C of ``G + λI`` (``G = ZᵀZ``) for :func:`leverage_rows`.

    ``λ`` defaults to ``trace(G) / width``: the scale at which about ``width`` directions
    count, so the scores rank rows by how much of the kernel's top spectrum they carry.
    """
    G = np.asarray(G, dtype=np.float64)
    if lam is None:
        lam = max(float(np.trace(G)) / max(G.shape[0], 1), 1e-300)
    return np.linalg.cholesky(G + lam * np.eye(G.shape[0]))


def leverage_rows(Z, C):
    """Ridge leverage scores ``zᵢᵀ (ZᵀZ + λI)⁻¹ zᵢ`` of a block of rows, given C (row-wise)."""
    A = solve_triangular(C, np.asarray(Z, dtype=np.float64).T, lower=True)  # column i: C⁻¹ zᵢ
    return np.einsum("ij,ij->j", A, A)


def ridge_leverage_scores(Z, lam: Optional[float] = None):
    """Ridge leverage scores of the rows of an in-memory feature matrix ``Z``."""
    Z = np.asarray(Z, dtype=np.float64)
    return leverage_rows(Z, leverage_factor(Z.T @ Z, lam))


def sample_landmarks(n_rows: int, n_landmarks: int, seed: int, scores=None) -> np.ndarray:
    """Sorted indices of ``n_landmarks`` distinct rows, drawn by ``seed``.

    Uniformly without replacement, or (``scores`` given) with probabilities ∝ half the
    normalized scores plus half uniform — the mixture keeps every row reachable, so a poor
    score estimate costs at most a factor two against uniform sampling.
    """
    if n_landmarks > n_rows:
        raise InvalidInputError(f"n_components={n_landmarks} landmarks need at least as many rows; "
                         f"X has {n_rows}")
    gen = rng(seed, "nystroem", "landmarks")
    if scores is None:
        idx = gen.choice(n_rows, size=n_landmarks, replace=False)
    else:
        s = np.clip(np.asarray(scores, dtype=np.float64), 0, None)
        if s.shape != (n_rows,) or not np.all(np.isfinite(s)) or s.sum() <= 0:
            raise InvalidInputError("leverage scores must be n_rows finite non-negative numbers")
        p = 0.5 * s / s.sum() + 0.5 / n_rows
        idx = gen.choice(n_rows, size=n_landmarks, replace=False, p=p / p.sum())
    return np.sort(idx)


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:32]


@dataclass(frozen=True, eq=False, repr=False)
class NystroemMap:
    """φ(x) = K(x, L) · T with T = K(L, L)^{-1/2}: Nyström features of ``net``'s exact kernel.

    Parameters
    ----------
    net : Serial
        The network whose exact ``kernel`` ("ntk" or "nngp") is approximated.
    landmarks : ndarray (m, *input_shape) or sparse matrix (m, d)
        The landmark rows L (float64, read-only copy; sparse rows stay CSR, so wide sparse
        data never gives an m × d dense array).
    normalization : ndarray (m, m)
        T, usually :func:`inverse_sqrt` of ``net.kernel(L, L, get=kernel)``.
    kernel : {"ntk", "nngp"}
    dtype : {"float32", "float64"}
        Output dtype (the kernel itself is computed in float64).

    Notes
    -----
    Row-wise (a row's features do not depend on its batch) and hashable by content, so
    the engine ships it as one graph key and workers cache the landmarks per device.
    Cost per row: one exact kernel row against m landmarks plus an m × m product.
    """

    net: Serial
    landmarks: Any
    normalization: Any
    kernel: str = "ntk"
    dtype: str = "float32"
    _digest: str = field(default="", init=False, compare=False, repr=False)
    _device: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    task_name = "nystroem"
    carries_data = True  # the engine ships the map once per graph, not per task

    def __post_init__(self):
        if not isinstance(self.net, Serial):
            raise InvalidInputError(f"net must be a network built with serial(...), got {type(self.net).__name__}")
        if self.kernel not in KINDS:
            raise InvalidInputError(f"kernel must be one of {KINDS}, got {self.kernel!r}")
        resolve_dtype(self.dtype)
        sparse = is_sparse(self.landmarks)
        if sparse:
            L = self.landmarks.tocsr().astype(np.float64, copy=True)
            L.sum_duplicates()
            parts = (L.data, L.indices.astype(np.int64), L.indptr.astype(np.int64),
                     np.asarray(L.shape))
        else:
            L = np.array(self.landmarks, dtype=np.float64, copy=True)
            parts = (L,)
        T = np.array(self.normalization, dtype=np.float64, copy=True)
        if L.ndim not in (2, 4) or L.shape[0] < 1:
            raise InvalidInputError(f"landmarks must be (m, d) or (m, H, W, C) rows, got shape {L.shape}")
        if T.shape != (L.shape[0], L.shape[0]):
            raise InvalidInputError(f"normalization must be {(L.shape[0],) * 2}, got {T.shape}")
        if not (np.all(np.isfinite(parts[0])) and np.all(np.isfinite(T))):
            raise InvalidInputError("landmarks and normalization must be finite")
        self.net.output_shape(tuple(L.shape[1:]))
        for a in parts[:1] + (T,):
            a.setflags(write=False)
        object.__setattr__(self, "landmarks", L)
        object.__setattr__(self, "normalization", T)
        object.__setattr__(self, "dtype", str(np.dtype(self.dtype)))
        object.__setattr__(self, "_digest", _digest(*parts, T))

    # ------------------------------------------------------------------- identity
    def _key(self):
        return (self.net, self.kernel, self.dtype, self._digest)

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        return type(other) is type(self) and self._key() == other._key()

    def __repr__(self):
        return (f"NystroemMap(net={self.net!r}, kernel={self.kernel!r}, "
                f"n_landmarks={self.n_features}, dtype={self.dtype!r}, digest={self._digest!r})")

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_device"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # ----------------------------------------------------------------- protocol
    @property
    def n_features(self) -> int:
        return int(self.landmarks.shape[0])

    @property
    def input_shape(self) -> tuple:
        return tuple(int(s) for s in self.landmarks.shape[1:])

    def _on_device(self, xp):
        key = device_key(xp)
        if key not in self._device:
            L = self.landmarks
            if is_sparse(L) and xp is not np:  # pragma: no cover - GPU only
                import cupyx.scipy.sparse as csp

                L = csp.csr_matrix(L)
            elif not is_sparse(L):
                L = to_namespace(L, xp)
            self._device[key] = (L, to_namespace(self.normalization, xp))
        return self._device[key]

    def __call__(self, X, *, n_jobs: Optional[int] = None):
        """Features of the rows of ``X`` (NumPy or CuPy, dense or sparse), ``(n, m)``."""
        xp = get_namespace(X.data if is_sparse(X) else X)
        if tuple(X.shape[1:]) != self.input_shape:
            raise InvalidInputError(f"X rows have shape {tuple(X.shape[1:])}, but the landmarks have "
                             f"shape {self.input_shape}")
        L, T = self._on_device(xp)
        dtype = np.dtype(self.dtype)

        def rows(block):
            out = rows_matmul(self.net.kernel(block, L, get=self.kernel, n_jobs=n_jobs), T)
            with np.errstate(over="ignore"):  # reported below, naming the input
                out = out.astype(dtype)
            return check_overflow(out, "the Nyström features", {"X": block})

        return map_rows(rows, X, _SLAB_ROWS)
