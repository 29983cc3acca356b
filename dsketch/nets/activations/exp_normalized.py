"""``ExpNormalized`` (neural-tangents ``ExpNormalized``): the "Gaussian normalized kernel".

Σ' = √(Σxx Σyy)·exp(γ(ρ + shift)), Θ' = γ·exp(γ(ρ + shift))·Θ, ρ = Σxy/√(Σxx Σyy)
(Shankar et al. 2020, "Neural Kernels Without Tangents", p. 6).  A kernel map without a
finite-width function: positively homogeneous of degree 1 in the sense of the duals, with
constant Hermite coefficients r_l = √(e^{γ·shift} γ^l / l!).  Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from ...backend import get_namespace
from ..base import check_param
from .base import HomogeneousActivation
from .registry import register_activation

__all__ = ["ExpNormalized"]


@register_activation("exp_normalized")
@dataclass(frozen=True)
class ExpNormalized(HomogeneousActivation):
    """Σ' = √(Σxx Σyy) exp(γ(ρ + shift)), Θ' = γ exp(γ(ρ + shift)) Θ (neural-tangents).

    Parameters
    ----------
    gamma : float
        Exponent coefficient γ (≥ 0 for a sketch: the Hermite coefficients are √(γ^l ...)).
    shift : float
        Added to the normalized covariance ρ before exponentiation.
    do_clip : bool
        neural-tangents clips ρ to [-1, 1] when True; here ρ is always clipped (the
        sanitized moments), so the flag only records the parameter.

    There is no finite-width function: ``fn``/``deriv`` (and ``relu_method="random"``)
    raise ``NotImplementedError``, as neural-tangents' ``apply_fn`` does.
    """

    homogeneity: ClassVar[int] = 1
    gamma: float = 1.0
    shift: float = -1.0
    do_clip: bool = False

    def __post_init__(self):
        object.__setattr__(self, "gamma", check_param("gamma", self.gamma))
        object.__setattr__(self, "shift", check_param("shift", self.shift))
        if not isinstance(self.do_clip, bool):
            raise ValueError(f"do_clip must be a bool, got {self.do_clip!r}")

    def fn(self, x):
        raise NotImplementedError("ExpNormalized has no finite-width function (a kernel map only)")

    deriv = fn

    def normalized_dual(self, rho):
        xp = get_namespace(rho)
        g = xp.exp(self.gamma * (rho + self.shift))
        return g, self.gamma * g

    def hermite_coefficients(self, degree: int):
        if self.gamma < 0:
            raise ValueError(f"ExpNormalized(gamma={self.gamma}) has no sketch face: its dual "
                             "is not a positive-definite series for gamma < 0")
        base = self.gamma * self.shift
        r = [math.exp(0.5 * (base + l * math.log(self.gamma) - math.lgamma(l + 1)))
             if self.gamma > 0 else float(l == 0) * math.exp(0.5 * base) for l in range(degree + 1)]
        rdot = [math.sqrt(self.gamma) * v for v in r]
        return r, rdot
