"""``Rbf``: √2·sin(√(2γ)·x + π/4) (neural-tangents ``Rbf``), the dual of the RBF kernel.

A ``Sin`` with derived parameters: Σ' = exp(−γ(Σxx + Σyy − 2Σxy)), E[φ'φ'] = 2γ Σ', and
Hermite factors in closed form.  Must not import Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..base import check_param
from .base import Activation, AliasActivation
from .registry import register_activation
from .trig import Sin

__all__ = ["Rbf"]


@register_activation("rbf")
@dataclass(frozen=True)
class Rbf(AliasActivation):
    """``√2·sin(√(2γ)·x + π/4)``: Σ' = exp(−γ(Σxx + Σyy − 2Σxy)), Θ' = 2γ Σ' Θ.

    Parameters
    ----------
    gamma : float
        γ = 1/(2ℓ²) ≥ 0, ℓ the length scale of the RBF kernel of the pre-activations.
    """

    gamma: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "gamma", check_param("gamma", self.gamma, nonneg=True))

    @property
    def target(self) -> Activation:
        return Sin(math.sqrt(2.0), math.sqrt(2 * self.gamma), math.pi / 4)
