"""A small, real seeded feature map for engine tests (NumPy/CuPy), independent of nets.

``RFF`` is a genuine random Fourier feature map of the Gaussian kernel
exp(-gamma‖x − y‖²): φ(x) = √(2/m) cos(xW + b), W ~ N(0, 2γ), b ~ U[0, 2π), drawn from
``dsketch.backend.rng(seed, ...)`` and cached per process and device.  It follows the
engine's feature-map protocol (hashable frozen spec, ``n_features``, ``dtype``,
``input_shape``, ``__call__``).  Row i's features depend only on row i, bitwise
(its product goes through ``backend.rows_matmul``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsketch.backend import device_cache, get_namespace, rng, rows_matmul


@dataclass(frozen=True)
class RFF:
    input_shape: tuple
    n_features: int
    gamma: float = 0.5
    seed: int = 0
    dtype_name: str = "float32"
    task_name: str = "rff"

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dtype_name)

    @device_cache
    def params(self, xp):
        d = int(np.prod(self.input_shape))
        g = rng(self.seed, "tests", "rff")
        W = g.standard_normal((d, self.n_features)) * math.sqrt(2.0 * self.gamma)
        b = g.uniform(0.0, 2.0 * math.pi, self.n_features)
        return xp.asarray(W.astype(self.dtype)), xp.asarray(b.astype(self.dtype))

    def __call__(self, x):
        xp = get_namespace(x)
        if hasattr(x, "tocsr"):  # scipy.sparse block
            W, b = self.params(np)
            z = np.asarray(x @ W.astype(np.float64)) + b
            return (math.sqrt(2.0 / self.n_features) * np.cos(z)).astype(self.dtype)
        W, b = self.params(xp)
        x2 = x.reshape(x.shape[0], -1).astype(self.dtype, copy=False)
        return (math.sqrt(2.0 / self.n_features) * xp.cos(rows_matmul(x2, W) + b)).astype(self.dtype)


def dense_ridge(Phi: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """The in-memory reference: (ΦᵀΦ + αI)⁻¹ ΦᵀY in float64 with numpy.linalg.solve."""
    P = Phi.astype(np.float64)
    Y2 = Y.reshape(Y.shape[0], -1).astype(np.float64)
    return np.linalg.solve(P.T @ P + alpha * np.eye(P.shape[1]), P.T @ Y2)
