"""Final step of every network sketch: bring both feature kinds to exactly ``n_features``.

Narrower features are zero-padded (Gram matrix unchanged); wider ones are projected with
an SRHT (unbiased: E⟨Sx, Sy⟩ = ⟨x, y⟩).  Nets whose output is still an image are refused:
their kernel has pixel-pair axes that no single feature row can represent.
"""

from __future__ import annotations

from dataclasses import dataclass
from ..backend import get_namespace
from .base import Features, FeatureShape, LayerSketch, SketchOptions

__all__ = ["plan_readout", "Readout"]


@dataclass(frozen=True)
class _FitWidth:
    """Map width ``d_in`` to ``d_out``: identity, zero-padding or an SRHT projection."""

    d_in: int
    d_out: int
    seed: int
    path: tuple

    def projection(self):
        if self.d_in <= self.d_out:
            return None
        from ..sketch.primitives import SRHT

        return SRHT(self.d_in, self.d_out, self.seed, self.path)

    def __call__(self, x):
        if self.d_in == self.d_out:
            return x
        proj = self.projection()
        if proj is not None:
            return proj(x)
        xp = get_namespace(x)
        pad = xp.zeros(x.shape[:-1] + (self.d_out - self.d_in,), dtype=x.dtype)
        return xp.concatenate([x, pad], axis=-1)


@dataclass(frozen=True)
class Readout(LayerSketch):
    """Fits ``nngp`` and ``ntk`` features to exactly ``out.nngp == out.ntk == n_features``."""

    nngp: _FitWidth
    ntk: _FitWidth
    out: FeatureShape

    def __call__(self, f: Features) -> Features:
        return Features(nngp=self.nngp(f.nngp), ntk=self.ntk(f.ntk), var=f.var)


def plan_readout(shape: FeatureShape, options: SketchOptions, seed: int,
                 path: tuple) -> Readout:
    """Plan the readout of a net whose last layer produced features of ``shape``."""
    if shape.spatial:
        raise ValueError(
            f"the network's output is still an image with spatial shape {shape.spatial}; "
            "end it with Flatten() or GlobalAvgPool() (then Dense) to sketch it")
    m = options.n_features
    return Readout(
        nngp=_FitWidth(shape.nngp, m, seed, path + ("nngp",)),
        ntk=_FitWidth(shape.ntk, m, seed, path + ("ntk",)),
        out=FeatureShape((), m, m),
    )
