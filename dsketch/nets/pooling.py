"""Pooling layers of infinitely wide CNNs: ``AvgPool``, ``GlobalAvgPool``, ``Flatten``.

Exact face and sketch face of each, neural-tangents ``stax`` semantics
(``parameterization="ntk"``, channels-last images).  All three are linear, parameter-free
maps of each image, so the exact face averages the kernel over windows in *both* pixel
indices and the sketch face applies the same linear map to per-pixel features.  Spatial
geometry (pads, window sums) comes from ``spatial.py``, the width reduction of
``Flatten`` from ``readout.py``.  No Dask here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..backend import get_namespace, to_namespace
from .base import Features, FeatureShape, Kernel, Layer, LayerSketch, SketchOptions
from .readout import WIDTH_FACTOR, FitWidth
from .spatial import (
    as_pair, check_image_kernel, check_image_shape, check_padding, geometry, map_kernel_arrays,
    window_sum,
)

__all__ = ["AvgPool", "GlobalAvgPool", "Flatten", "AvgPoolSketch", "GlobalAvgPoolSketch",
           "FlattenSketch"]


def _edge_counts(g, xp):
    """Number of real (non-padding) positions in each output window of one dimension."""
    ones = np.ones(g.size)
    return to_namespace(window_sum(ones, 0, g), xp)


# ------------------------------------------------------------------------------- AvgPool
@dataclass(frozen=True)
class AvgPool(Layer):
    """Average pooling (neural-tangents ``stax.AvgPool``).

    Parameters
    ----------
    window_shape : (int, int)
        Pooling window; an int ``k`` means ``(k, k)``.
    strides : (int, int), optional
        Defaults to ``window_shape`` (non-overlapping windows).
    padding : {"VALID", "SAME"}
        Zero padding as in XLA.
    normalize_edges : bool
        ``False`` (neural-tangents default, "count_include_pad"): divide by the full window
        size, padding included.  ``True``: divide by the number of real pixels in the window.

    Notes
    -----
    Exact face: Σ'(P, Q) = Σ_{p∈P} Σ_{q∈Q} Σ(p, q) / (|P||Q|) on ``nngp``, ``ntk``, ``cov1``
    and ``cov2`` (separable window sums over the four pair-spatial axes, shifted slices
    with implicit zero padding; temporaries: the intermediates, O(block² (HW)²)).

    Sketch face: the features of an output pixel are the average of the input features
    over its window (exact linear map).  The new per-pixel variance needs covariances
    between different pixels of one image, which the sketch does not carry; it is
    estimated by the squared norm of the pooled NNGP features (unbiased when those are).
    """

    window_shape: tuple = (2, 2)
    strides: Optional[tuple] = None
    padding: str = "VALID"
    normalize_edges: bool = False

    def __post_init__(self):
        object.__setattr__(self, "window_shape", as_pair(self.window_shape, "window_shape"))
        strides = self.window_shape if self.strides is None else self.strides
        object.__setattr__(self, "strides", as_pair(strides, "strides"))
        object.__setattr__(self, "padding", check_padding(self.padding))
        object.__setattr__(self, "normalize_edges", bool(self.normalize_edges))

    def _geom(self, spatial):
        return geometry(spatial, self.window_shape, self.strides, self.padding, "AvgPool")

    def _divisor(self, geom, xp, pairs: bool):
        """Divisor array (or scalar) for the window sums: per pixel, or per pixel pair."""
        if not (self.normalize_edges and self.padding == "SAME"):
            size = self.window_shape[0] * self.window_shape[1]
            return float(size * size if pairs else size)
        ch = _edge_counts(geom[0], xp)
        cw = _edge_counts(geom[1], xp)
        pix = ch[:, None] * cw[None, :]
        if not pairs:
            return pix
        return pix[:, :, None, None] * pix[None, None, :, :]

    def output_shape(self, input_shape: tuple) -> tuple:
        h, w, c = check_image_shape(input_shape, "AvgPool")
        gh, gw = self._geom((h, w))
        return (gh.out, gw.out, c)

    def kernel(self, k: Kernel) -> Kernel:
        check_image_kernel(k, "AvgPool")
        geom = self._geom(k.spatial)
        xp = get_namespace(k.nngp)
        div = self._divisor(geom, xp, pairs=True)

        def pool(a):
            b = a.ndim - 4
            for i, g in enumerate((geom[0], geom[1], geom[0], geom[1])):
                a = window_sum(a, b + i, g)
            a /= div
            return a

        new = map_kernel_arrays(k, pool, spatial=(geom[0].out, geom[1].out))
        return new.replace(ntk=pool(k.ntk))

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        if len(shape.spatial) != 2:
            raise ValueError(f"AvgPool needs image features (spatial (H, W)), got spatial {shape.spatial}")
        geom = self._geom(shape.spatial)
        out = FeatureShape((geom[0].out, geom[1].out), shape.nngp, shape.ntk)
        return AvgPoolSketch(layer=self, geom=geom, out=out)


@dataclass(frozen=True)
class AvgPoolSketch(LayerSketch):
    """Planned sketch face of an ``AvgPool``: window averages of per-pixel features."""

    layer: AvgPool
    geom: tuple
    out: FeatureShape

    def _pool(self, x, div):
        x = window_sum(window_sum(x, 1, self.geom[0]), 2, self.geom[1])
        if isinstance(div, float):
            x *= x.dtype.type(1.0 / div)
        else:
            x /= div[None, :, :, None].astype(x.dtype)
        return x

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        div = self.layer._divisor(self.geom, xp, pairs=False)
        nngp = self._pool(f.nngp, div)
        ntk = self._pool(f.ntk, div)
        var = xp.sum(nngp.astype(xp.float64) ** 2, axis=-1)
        return Features(nngp=nngp, ntk=ntk, var=var)


# ------------------------------------------------------------------------- GlobalAvgPool
@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    """Global average pooling over all pixels (neural-tangents ``stax.GlobalAvgPool``).

    Exact face: the mean of every kernel array over all pixel pairs (p, q); the record
    becomes a vector record (``spatial == ()``, arrays keep only their batch axes).
    Sketch face: the mean of the per-pixel features (exact linear map); the variance is the
    squared norm of the pooled NNGP features (the exact one needs the cross-pixel
    covariances, which the sketch does not carry).
    """

    def output_shape(self, input_shape: tuple) -> tuple:
        h, w, c = check_image_shape(input_shape, "GlobalAvgPool")
        return (c,)

    def kernel(self, k: Kernel) -> Kernel:
        check_image_kernel(k, "GlobalAvgPool")

        def gap(a):
            return a.mean(axis=tuple(range(a.ndim - 4, a.ndim)))

        new = map_kernel_arrays(k, gap, spatial=())
        return new.replace(ntk=gap(k.ntk))

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        if len(shape.spatial) != 2:
            raise ValueError(f"GlobalAvgPool needs image features (spatial (H, W)), got spatial {shape.spatial}")
        return GlobalAvgPoolSketch(out=FeatureShape((), shape.nngp, shape.ntk))


@dataclass(frozen=True)
class GlobalAvgPoolSketch(LayerSketch):
    """Planned sketch face of ``GlobalAvgPool``."""

    out: FeatureShape

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        nngp = f.nngp.mean(axis=(1, 2))
        ntk = f.ntk.mean(axis=(1, 2))
        var = xp.sum(nngp.astype(xp.float64) ** 2, axis=-1)
        return Features(nngp=nngp, ntk=ntk, var=var)


# ------------------------------------------------------------------------------- Flatten
@dataclass(frozen=True)
class Flatten(Layer):
    """Flatten an image to a vector (neural-tangents ``stax.Flatten``, NTK parameterization).

    A following ``Dense`` has fan-in H·W·C, so in the limit the kernel is the mean of the
    kernel over the *diagonal* pixel pairs: Σ' = (1/HW) Σ_p Σ(p, p) (trace / HW), and the
    same for Θ, ``cov1``, ``cov2``.  Vector records pass through unchanged (as in
    neural-tangents).  Sketch face: concatenation of the pixel features divided by √(HW)
    (exact), reduced by an SRHT when wider than ``WIDTH_FACTOR · n_features``; the
    variance is the mean of the per-pixel variances (exact).
    """

    def output_shape(self, input_shape: tuple) -> tuple:
        shape = tuple(input_shape)
        return (int(math.prod(shape)),)

    def kernel(self, k: Kernel) -> Kernel:
        if not k.spatial:
            return k
        check_image_kernel(k, "Flatten")
        hw = int(k.spatial[0] * k.spatial[1])

        def trace_mean(a):
            flat = a.reshape(a.shape[:-4] + (hw, hw))
            return flat.diagonal(axis1=-2, axis2=-1).mean(axis=-1)

        new = map_kernel_arrays(k, trace_mean, spatial=())
        return new.replace(ntk=trace_mean(k.ntk))

    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        if not shape.spatial:
            return FlattenSketch(hw=1, out=shape, nngp=None, ntk=None)
        if len(shape.spatial) != 2:
            raise ValueError(f"Flatten needs image or vector features, got spatial {shape.spatial}")
        hw = int(shape.spatial[0] * shape.spatial[1])
        cap = WIDTH_FACTOR * options.n_features
        d_nngp, d_ntk = hw * shape.nngp, hw * shape.ntk
        out = FeatureShape((), min(d_nngp, cap), min(d_ntk, cap))
        return FlattenSketch(hw=hw, out=out,
                             nngp=FitWidth(d_nngp, out.nngp, seed, tuple(path) + ("nngp",), check=False),
                             ntk=FitWidth(d_ntk, out.ntk, seed, tuple(path) + ("ntk",), check=False))


@dataclass(frozen=True)
class FlattenSketch(LayerSketch):
    """Planned sketch face of ``Flatten``."""

    hw: int
    out: FeatureShape
    nngp: Optional[FitWidth]
    ntk: Optional[FitWidth]

    def __call__(self, f: Features) -> Features:
        if self.nngp is None:
            return f
        n = f.nngp.shape[0]
        scale = 1.0 / math.sqrt(self.hw)

        def flat(x):
            x = x.reshape(n, -1) * x.dtype.type(scale)
            return x

        var = f.var.reshape(n, -1).mean(axis=-1)
        return Features(nngp=self.nngp(flat(f.nngp)), ntk=self.ntk(flat(f.ntk)), var=var)
