"""``Dense``: the fully-connected affine layer, exact face and sketch face.

Convention (neural-tangents ``stax.Dense``, ``parameterization="ntk"``): the finite layer is
``z = W_std/√N · W x + b_std · b`` with standard-normal ``W``, ``b`` and ``N`` the input
width, so in the infinite-width limit

    Σ' = W_std² Σ + b_std²,        Θ' = Σ' + W_std² Θ.

The output width does not enter the NTK-parameterized kernel; ``out_dim`` only matters to
a following ``parameterization="standard"`` layer (Θ' = N·Σ + σ_W² Θ + 1, N its input width:
each layer's weight term scales with its *fan-in*, the previous layer's output width, never
with its own ``out_dim``).  Defaults are neural-tangents' ``stax.Dense``: ``W_std=1``,
``b_std=None`` (no bias); under ``"standard"`` a bias with ``b_std=0`` is still a trained
parameter and adds 1 to Θ, so ``Dense(out_dim=1)`` and ``Dense(out_dim=1, b_std=0)`` differ
there (by 1/Θ: 1.7e-3 relative on issue 21's width-512 ReLU net, whose default was 0).  On
images it maps channels and acts on every pixel pair alike (the bias is shared across
pixels, so b_std² is added to every pixel-pair covariance).  Its sketch face is exact and
deterministic: ``nngp' = [W_std·nngp, b_std·1]`` and ``ntk' = [W_std·ntk, nngp']``.
No Dask here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

from ..backend import InvalidInputError, check_int, get_namespace
from .base import Features, FeatureShape, Kernel, Layer, LayerSketch, SketchOptions, check_param

__all__ = ["Dense", "DenseSketch", "check_parameterization"]


def check_parameterization(value, layer: str) -> str:
    """``"ntk"`` or ``"standard"`` (case-insensitive), else ``ValueError`` naming ``layer``."""
    p = value.lower() if isinstance(value, str) else value
    if p not in ("ntk", "standard"):
        raise ValueError(f"{layer}: parameterization must be 'ntk' or 'standard', got {value!r}")
    return p


@dataclass(frozen=True)
class Dense(Layer):
    """Fully-connected layer of infinite width, NTK parameterization.

    Parameters
    ----------
    W_std : float
        Weight standard deviation σ_W ≥ 0 (weights are σ_W/√N · N(0, 1)).
    b_std : float or None, default None
        Bias standard deviation σ_b ≥ 0.  ``None`` (neural-tangents' default) means no
        bias; under ``"ntk"`` it is the same as 0, under ``"standard"`` a bias (even with
        σ_b = 0) is trained and adds 1 to the NTK (neural-tangents).
    parameterization : {"ntk", "standard"}
        neural-tangents' parameterizations.  ``"standard"``: weights σ_W/√N · N(0, 1)
        stored as parameters, z = W x + b, so the NNGP is the same and
        Θ' = N·Σ + σ_W² Θ (+ 1 with a bias), N the input width (the data width, or the
        ``out_dim`` of the layer before; bound by ``serial``).
    out_dim : int, optional
        Output width (neural-tangents' ``out_dim``): ignored by the ``"ntk"`` kernel, it
        is the next ``"standard"`` layer's N.  ``None`` keeps the input width.

    Notes
    -----
    Exact face: ``Σ' = σ_W² Σ + σ_b²``, ``Θ' = Σ' + σ_W² Θ`` on every entry (cross and
    self kernels, every pixel pair). Sketch face: exact, widths ``w + [σ_b > 0]`` (NNGP)
    and ``w_ntk + w_nngp'`` (NTK).
    """

    W_std: float = 1.0
    b_std: Optional[float] = None
    parameterization: str = "ntk"
    out_dim: Optional[int] = None
    fan_in: Optional[int] = field(default=None, compare=False, repr=False)  # set by bind()

    def __post_init__(self):
        object.__setattr__(self, "W_std", check_param("W_std", self.W_std, nonneg=True))
        if self.b_std is not None:
            object.__setattr__(self, "b_std", check_param("b_std", self.b_std, nonneg=True))
        object.__setattr__(self, "parameterization", check_parameterization(self.parameterization, "Dense"))
        if self.out_dim is not None:
            object.__setattr__(self, "out_dim", check_int(self.out_dim, "out_dim", minimum=1))

    @property
    def _b2(self) -> float:
        return 0.0 if self.b_std is None else self.b_std ** 2

    def bind(self, input_shape: tuple) -> "Dense":
        if self.parameterization != "standard":
            return self
        return replace(self, fan_in=int(input_shape[-1]))

    def _fan_in(self) -> int:
        if self.fan_in is None:
            raise InvalidInputError('Dense(parameterization="standard") needs its input width: '
                             "use it inside serial(...), which binds it")
        return self.fan_in

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) not in (1, 3):
            raise ValueError(f"Dense takes rows of shape (d,) or (H, W, C), got {tuple(input_shape)}")
        if self.out_dim is None:
            return tuple(input_shape)
        return tuple(input_shape[:-1]) + (self.out_dim,)

    # ------------------------------------------------------------------------- exact
    def kernel(self, k: Kernel) -> Kernel:
        w2, b2 = self.W_std ** 2, self._b2

        def affine(a):
            return w2 * a + b2

        nngp = affine(k.nngp)
        if self.parameterization == "standard":  # Θ' = N Σ + σ_W² Θ (+ 1 with a bias)
            ntk = self._fan_in() * k.nngp + w2 * k.ntk + float(self.b_std is not None)
        else:
            ntk = nngp + w2 * k.ntk
        if k.diagonal:
            cov1, cov2 = nngp, None
        else:
            cov1 = affine(k.cov1)
            cov2 = None if k.cov2 is None else affine(k.cov2)
        return k.replace(nngp=nngp, ntk=ntk, cov1=cov1, cov2=cov2)

    # ------------------------------------------------------------------------ sketch
    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple) -> "DenseSketch":
        b_std = 0.0 if self.b_std is None else self.b_std
        w_nngp = shape.nngp + int(b_std > 0)
        if self.parameterization == "standard":
            bias = self.b_std is not None
            out = FeatureShape(tuple(shape.spatial), w_nngp, shape.ntk + shape.nngp + int(bias))
            return DenseSketch(W_std=self.W_std, b_std=b_std, out=out,
                               standard=(math.sqrt(self._fan_in()), bias))
        out = FeatureShape(tuple(shape.spatial), w_nngp, shape.ntk + w_nngp)
        return DenseSketch(W_std=self.W_std, b_std=b_std, out=out)


@dataclass(frozen=True)
class DenseSketch(LayerSketch):
    """Sketch face of :class:`Dense` (exact, no randomness).

    ``nngp' = [σ_W·nngp, σ_b·1]`` (the constant column only when σ_b > 0),
    ``ntk' = [σ_W·ntk, nngp']``, ``var' = σ_W² var + σ_b²``; with ``standard = (√N, bias)``
    (``parameterization="standard"``) ``ntk' = [σ_W·ntk, √N·nngp, 1 if bias]``.
    """

    W_std: float
    b_std: float
    out: FeatureShape
    standard: Optional[tuple] = None

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        dt = f.nngp.dtype
        parts = [f.nngp * dt.type(self.W_std)]
        if self.b_std > 0:
            parts.append(xp.full(f.nngp.shape[:-1] + (1,), self.b_std, dtype=dt))
        nngp = xp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        head = f.ntk.astype(dt, copy=False) * dt.type(self.W_std)
        if self.standard is None:
            ntk = xp.concatenate([head, nngp], axis=-1)
        else:
            root_n, bias = self.standard
            tail = [f.nngp * dt.type(root_n)]
            if bias:
                tail.append(xp.ones(f.nngp.shape[:-1] + (1,), dtype=dt))
            ntk = xp.concatenate([head, *tail], axis=-1)
        var = self.W_std ** 2 * f.var + self.b_std ** 2
        return Features(nngp=nngp, ntk=ntk, var=var)
