"""``Sigmoid_like``: 0.5·erf(x/2.4020563531719796) + 0.5 (neural-tangents ``Sigmoid_like``).

An ``Erf`` with fixed parameters: exact dual and Hermite factors in closed form.
Must not import Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Activation, AliasActivation
from .erf import Erf
from .registry import register_activation

__all__ = ["Sigmoid_like"]

#: neural-tangents' constant: the erf scale closest to the logistic sigmoid on [-5, 5].
SIGMOID_LIKE_SCALE = 2.4020563531719796


@register_activation("sigmoid_like")
@dataclass(frozen=True)
class Sigmoid_like(AliasActivation):  # noqa: N801 - neural-tangents' name
    """``0.5·erf(x / 2.4020563531719796) + 0.5``: ``Erf(0.5, 1/2.4020563531719796, 0.5)``."""

    @property
    def target(self) -> Activation:
        return Erf(0.5, 1 / SIGMOID_LIKE_SCALE, 0.5)
