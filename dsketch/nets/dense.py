"""``Dense``: the fully-connected affine layer, exact face and sketch face.

Convention (neural-tangents ``stax.Dense``, ``parameterization="ntk"``): the finite layer is
``z = W_std/√N · W x + b_std · b`` with standard-normal ``W``, ``b`` and ``N`` the input
width, so in the infinite-width limit

    Σ' = W_std² Σ + b_std²,        Θ' = Σ' + W_std² Θ.

The output width does not enter the infinite-width kernel, so ``Dense`` takes none. On
images it maps channels and acts on every pixel pair alike (the bias is shared across
pixels, so b_std² is added to every pixel-pair covariance).  Its sketch face is exact and
deterministic: ``nngp' = [W_std·nngp, b_std·1]`` and ``ntk' = [W_std·ntk, nngp']``.
No Dask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_namespace
from .base import Features, FeatureShape, Kernel, Layer, LayerSketch, SketchOptions, check_param

__all__ = ["Dense", "DenseSketch"]


@dataclass(frozen=True)
class Dense(Layer):
    """Fully-connected layer of infinite width, NTK parameterization.

    Parameters
    ----------
    W_std : float
        Weight standard deviation σ_W ≥ 0 (weights are σ_W/√N · N(0, 1)).
    b_std : float
        Bias standard deviation σ_b ≥ 0; 0 means no bias.

    Notes
    -----
    Exact face: ``Σ' = σ_W² Σ + σ_b²``, ``Θ' = Σ' + σ_W² Θ`` on every entry (cross and
    self kernels, every pixel pair). Sketch face: exact, widths ``w + [σ_b > 0]`` (NNGP)
    and ``w_ntk + w_nngp'`` (NTK).
    """

    W_std: float = 1.0
    b_std: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "W_std", check_param("W_std", self.W_std, nonneg=True))
        object.__setattr__(self, "b_std", check_param("b_std", self.b_std, nonneg=True))

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) not in (1, 3):
            raise ValueError(f"Dense takes rows of shape (d,) or (H, W, C), got {tuple(input_shape)}")
        return tuple(input_shape)

    # ------------------------------------------------------------------------- exact
    def kernel(self, k: Kernel) -> Kernel:
        w2, b2 = self.W_std ** 2, self.b_std ** 2

        def affine(a):
            return w2 * a + b2

        nngp = affine(k.nngp)
        ntk = nngp + w2 * k.ntk
        if k.diagonal:
            cov1, cov2 = nngp, None
        else:
            cov1 = affine(k.cov1)
            cov2 = None if k.cov2 is None else affine(k.cov2)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    # ------------------------------------------------------------------------ sketch
    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple) -> "DenseSketch":
        bias = self.b_std > 0
        w_nngp = shape.nngp + int(bias)
        out = FeatureShape(tuple(shape.spatial), w_nngp, shape.ntk + w_nngp)
        return DenseSketch(W_std=self.W_std, b_std=self.b_std, out=out)


@dataclass(frozen=True)
class DenseSketch(LayerSketch):
    """Sketch face of :class:`Dense` (exact, no randomness).

    ``nngp' = [σ_W·nngp, σ_b·1]`` (the constant column only when σ_b > 0),
    ``ntk' = [σ_W·ntk, nngp']``, ``var' = σ_W² var + σ_b²``.
    """

    W_std: float
    b_std: float
    out: FeatureShape

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        dt = f.nngp.dtype
        parts = [f.nngp * dt.type(self.W_std)]
        if self.b_std > 0:
            parts.append(xp.full(f.nngp.shape[:-1] + (1,), self.b_std, dtype=dt))
        nngp = xp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        ntk = xp.concatenate([f.ntk.astype(dt, copy=False) * dt.type(self.W_std), nngp], axis=-1)
        var = self.W_std ** 2 * f.var + self.b_std ** 2
        return Features(nngp=nngp, ntk=ntk, var=var)
