"""Feature widths: the one width-fitting map, the per-pixel width cap, the final readout.

Owns :class:`FitWidth` (width ``d_in`` → ``d_out``: identity, zero-padding, an SRHT
projection, or a sum of SRHT-rotated blocks; unbiased: E⟨Sx, Sy⟩ = ⟨x, y⟩),
:data:`WIDTH_FACTOR` (how wide ``Conv`` and ``Flatten`` let features grow before reducing
them), and the last step of every network sketch, which brings both feature kinds to
exactly ``n_features``.  Nets whose output is still an image are refused: their kernel has
pixel-pair axes that no single feature row can represent.  No Dask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_namespace
from ..sketch import SRHT
from ..sketch.linear import srht_block_sum
from .base import Features, FeatureShape, LayerSketch, SketchOptions

__all__ = ["WIDTH_FACTOR", "FitWidth", "Readout", "plan_readout"]

#: A block of (per-pixel) features wider than ``WIDTH_FACTOR * n_features`` is reduced to
#: about that width with SRHTs (unbiased), so sketch cost stays linear in the pixel count.
WIDTH_FACTOR = 2


@dataclass(frozen=True)
class FitWidth:
    """Map the last axis from width ``d_in`` to ``d_out``.

    Identity when equal, zero-padding when narrower (Gram matrix unchanged), otherwise the
    SRHT ``d_in → d_out`` seeded by ``(seed, *path)``.  ``check`` makes the SRHT validate
    its input (finite values) first.

    With ``blocks`` a wider input is instead cut into blocks of ``d_out`` columns, each
    rotated by its own SRHT ``→ d_out`` (an isometry when ``d_out`` is a power of two) and
    summed: the cross-block terms have mean zero and a standard deviation of order
    ‖a‖‖b‖/√d_out, where one SRHT of the concatenation, which keeps half of its padded
    coordinates, adds (‖a‖² + ‖b‖²)/√(2·d_out).  The network readout uses it: its input is
    ``[σ_W·ntk, nngp, bias]`` of the last ``Dense``, and a dominant block (the NNGP alone,
    or Θ ⊙ E[φ'φ'] at large input norms) passes nearly exactly (measured at m = 4096:
    ReLU depth-2 NNGP error 0.032 → 0.021, erf depth-2 NTK at inputs ×100 0.27 → 0.22).
    """

    d_in: int
    d_out: int
    seed: int
    path: tuple
    check: bool = True
    blocks: bool = False

    def projection(self):
        """The SRHT used when ``d_in > d_out`` without ``blocks`` (else ``None``)."""
        if self.d_in <= self.d_out or self.blocks:
            return None
        return SRHT(self.d_in, self.d_out, self.seed, self.path)

    def __call__(self, x):
        if self.d_in == self.d_out:
            return x
        if self.blocks and self.d_in > self.d_out:  # one transform of the signed block sum
            return srht_block_sum(x, self.d_out, self.seed, self.path, check=self.check)
        proj = self.projection()
        if proj is not None:
            return proj(x, check=self.check)
        xp = get_namespace(x)
        pad = xp.zeros(x.shape[:-1] + (self.d_out - self.d_in,), dtype=x.dtype)
        return xp.concatenate([x, pad], axis=-1)


@dataclass(frozen=True)
class Readout(LayerSketch):
    """Fits ``nngp`` and ``ntk`` features to exactly ``out.nngp == out.ntk == n_features``."""

    nngp: FitWidth
    ntk: FitWidth
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
        nngp=FitWidth(shape.nngp, m, seed, path + ("nngp",), blocks=True),
        ntk=FitWidth(shape.ntk, m, seed, path + ("ntk",), blocks=True),
        out=FeatureShape((), m, m),
    )
