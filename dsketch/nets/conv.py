"""``Conv``: 2-D convolution of an infinitely wide CNN, exact (CNTK) face and sketch face.

Owns the convolution layer and the spatial geometry helpers (padding, window sums over
pixel-pair axes) that ``pooling.py`` shares.  Conventions are neural-tangents ``stax.Conv``
with ``parameterization="ntk"``, images channels-last ``(n, H, W, C)``:

    z_p = W_std / sqrt(|F| C) * sum_{d in F} W_d x_{s p + d - lo} + b_std * b

with standard normal ``W``, ``b``, zero padding (``SAME``: neural-tangents/XLA pads,
``lo = total // 2``) and |F| the full filter size (also at the borders, where part of the
window is padding).  In the infinite-width limit, for every pixel pair (p, q):

    Σ'(p, q) = W_std² / |F| · Σ_d Σ(s p + d, s q + d) + b_std²
    Θ'(p, q) = Σ'(p, q) + W_std² / |F| · Σ_d Θ(s p + d, s q + d)

The channel count does not enter the limit; ``output_shape`` keeps it.  No Dask here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ..backend import get_namespace
from .base import Features, FeatureShape, Kernel, Layer, LayerSketch, SketchOptions

__all__ = ["Conv", "WIDTH_FACTOR"]

PADDINGS = ("SAME", "VALID")

#: Sketch face: a per-pixel feature wider than ``WIDTH_FACTOR * n_features`` is reduced
#: to that width with an SRHT (unbiased), so that cost stays linear in the pixel count.
WIDTH_FACTOR = 2


# ------------------------------------------------------------------------------ geometry
def _pair(value, name: str) -> tuple:
    """``value`` as a 2-tuple of positive ints (an int ``k`` means ``(k, k)``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    try:
        out = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}") from None
    if len(out) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in out):
        raise ValueError(f"{name} must be a pair of positive ints (2-D images), got {value!r}")
    return tuple(int(v) for v in out)


def _padding(value) -> str:
    if not isinstance(value, str) or value.upper() not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {value!r}")
    return value.upper()


@dataclass(frozen=True)
class _Axis:
    """Geometry of one spatial dimension: window, stride, pads and output size."""

    size: int
    window: int
    stride: int
    lo: int
    hi: int
    out: int

    @property
    def span(self) -> int:
        return self.stride * (self.out - 1) + 1


def _axis_geometry(size: int, window: int, stride: int, padding: str, what: str) -> _Axis:
    """Output size and zero pads of one dimension (XLA ``padtype_to_pads`` semantics)."""
    if padding == "VALID":
        if window > size:
            raise ValueError(f"{what} window {window} is larger than the image size {size} "
                             "with padding='VALID'")
        return _Axis(size, window, stride, 0, 0, (size - window) // stride + 1)
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return _Axis(size, window, stride, total // 2, total - total // 2, out)


def _geometry(spatial: tuple, window: tuple, strides: tuple, padding: str, what: str):
    return tuple(_axis_geometry(int(s), w, st, padding, what)
                 for s, w, st in zip(spatial, window, strides))


def _image_shape(input_shape, layer: str) -> tuple:
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{layer} needs images of shape (H, W, C), got input shape {shape}")
    return shape


def _image_kernel(k: Kernel, layer: str) -> None:
    if len(k.spatial) != 2:
        raise ValueError(f"{layer} needs an image kernel record (spatial (H, W)), "
                         f"got spatial {tuple(k.spatial)}")


def _pad_axes(a, axes, lo: int, hi: int):
    if not (lo or hi):
        return a
    xp = get_namespace(a)
    widths = [(0, 0)] * a.ndim
    for ax in axes:
        widths[ax] = (lo, hi)
    return xp.pad(a, widths)


def _offset_range(g: _Axis, d: int):
    """Output positions p whose input position s·p + d − lo lies inside the image.

    Returns ``(out_slice, in_slice)`` or ``None`` when no output position sees offset d.
    """
    o = d - g.lo
    p_lo = max(0, -(o // g.stride)) if o < 0 else 0
    while g.stride * p_lo + o < 0:
        p_lo += 1
    p_hi = min(g.out - 1, (g.size - 1 - o) // g.stride)
    if p_hi < p_lo:
        return None
    start = g.stride * p_lo + o
    stop = g.stride * p_hi + o + 1
    return slice(p_lo, p_hi + 1), slice(start, stop, g.stride)


def _window_apply(a, axes: tuple, g: _Axis):
    """Σ_d a[.., s p + d − lo, ..] with the same offset d on every axis of ``axes``.

    Zero padding is implicit: each offset adds into the part of the output it reaches, so
    no padded copy is made.  Temporaries: the output (plus one strided view per offset).
    """
    xp = get_namespace(a)
    shape = list(a.shape)
    for ax in axes:
        shape[ax] = g.out
    ranges = [_offset_range(g, d) for d in range(g.window)]
    full = next((r for r in ranges if r is not None and r[0] == slice(0, g.out)), None)
    if full is not None:
        idx = [slice(None)] * a.ndim
        for ax in axes:
            idx[ax] = full[1]
        acc = a[tuple(idx)].copy()
    else:
        acc = xp.zeros(tuple(shape), dtype=a.dtype)
    for r in ranges:
        if r is None or r is full:
            continue
        o_idx = [slice(None)] * a.ndim
        i_idx = [slice(None)] * a.ndim
        for ax in axes:
            o_idx[ax], i_idx[ax] = r
        acc[tuple(o_idx)] += a[tuple(i_idx)]
    return acc


def diag_window_sum(a, axes: tuple, g: _Axis):
    """Σ_d a[.., s p + d, .., s q + d, ..] over the pair of axes ``axes`` (zero padded).

    ``axes`` are the two axes of one spatial dimension (pixel of x1, pixel of x2).  The
    same offset d moves both: a convolution's filter is shared by the two inputs.
    """
    return _window_apply(a, tuple(axes), g)


def window_sum(a, axis: int, g: _Axis):
    """Σ_d a[.., s p + d, ..] along one ``axis`` (zero padded): pooling windows."""
    return _window_apply(a, (axis,), g)


def conv_pairs(a, geom):
    """Diagonal window sum over both spatial dimensions of a ``batch + (H, W, H, W)`` array."""
    b = a.ndim - 4
    a = diag_window_sum(a, (b, b + 2), geom[0])
    return diag_window_sum(a, (b + 1, b + 3), geom[1])


def map_kernel_arrays(k: Kernel, fn, **changes) -> Kernel:
    """Apply ``fn`` to ``nngp``, ``cov1`` and ``cov2`` of ``k`` (reusing ``nngp`` as ``cov1`` in
    diagonal mode); ``ntk`` is the caller's business."""
    nngp = fn(k.nngp)
    if k.diagonal and k.cov1 is k.nngp:
        cov1 = nngp
    else:
        cov1 = fn(k.cov1)
    cov2 = None if k.cov2 is None else fn(k.cov2)
    return k.replace(nngp=nngp, cov1=cov1, cov2=cov2, **changes)


# ---------------------------------------------------------------------------------- Conv
@dataclass(frozen=True)
class Conv(Layer):
    """2-D convolution layer of an infinitely wide CNN (neural-tangents ``stax.Conv``).

    Parameters
    ----------
    filter_shape : (int, int)
        Spatial filter size ``(fh, fw)``; an int ``k`` means ``(k, k)``.
    W_std : float
        Weight standard deviation (NTK parameterization: divided by √(|F|·C) in the net).
    b_std : float
        Bias standard deviation (``None`` or 0 for no bias).
    padding : {"SAME", "VALID"}
        Zero padding as in XLA/neural-tangents.  The normalization is by the full filter
        size |F| even where the window overlaps the padding.
    strides : (int, int)
        Output stride.

    Notes
    -----
    Exact face (``kernel``): Σ' = W_std²/|F| Σ_d Σ(sp+d, sq+d) + b_std² and
    Θ' = Σ' + W_std²/|F| Σ_d Θ(sp+d, sq+d), applied to ``nngp``, ``ntk``, ``cov1`` and
    ``cov2``.  Cost O(|F| · batch · (HW)²) per array; temporaries are one zero-padded copy of
    an input array plus the output, i.e. O(block² (HW)²) for a block pair of
    ``serial.kernel`` — no loop over pixels.

    Sketch face (``sketch``): each output pixel's NNGP feature is the concatenation of the
    |F| shifted (zero padded) input features times W_std/√|F| (plus a constant b_std
    column); its NTK feature is ``[W_std/√|F| · shifted NTK features, new NNGP feature]``.
    Both are exact; a width above ``WIDTH_FACTOR · n_features`` is reduced by an SRHT
    (unbiased), so the cost per image is linear in the number of pixels.  The per-pixel
    variance is updated exactly: var' = W_std²/|F| · (window sum of var) + b_std².
    """

    filter_shape: tuple = (3, 3)
    W_std: float = 1.0
    b_std: Optional[float] = 0.0
    padding: str = "SAME"
    strides: tuple = (1, 1)

    def __post_init__(self):
        object.__setattr__(self, "filter_shape", _pair(self.filter_shape, "filter_shape"))
        object.__setattr__(self, "strides", _pair(self.strides, "strides"))
        object.__setattr__(self, "padding", _padding(self.padding))
        b = 0.0 if self.b_std is None else self.b_std
        for name, v in (("W_std", self.W_std), ("b_std", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite non-negative number, got {v!r}")
        object.__setattr__(self, "W_std", float(self.W_std))
        object.__setattr__(self, "b_std", float(b))

    @property
    def filter_size(self) -> int:
        return self.filter_shape[0] * self.filter_shape[1]

    def _geom(self, spatial):
        return _geometry(spatial, self.filter_shape, self.strides, self.padding, "Conv filter")

    # ------------------------------------------------------------------------- shapes
    def output_shape(self, input_shape: tuple) -> tuple:
        h, w, c = _image_shape(input_shape, "Conv")
        gh, gw = self._geom((h, w))
        return (gh.out, gw.out, c)

    # -------------------------------------------------------------------------- exact
    def kernel(self, k: Kernel) -> Kernel:
        _image_kernel(k, "Conv")
        geom = self._geom(k.spatial)
        scale = self.W_std ** 2 / self.filter_size
        b2 = self.b_std ** 2

        def affine(a):
            out = conv_pairs(a, geom)
            out *= scale
            if b2:
                out += b2
            return out

        new = map_kernel_arrays(k, affine, spatial=(geom[0].out, geom[1].out))
        if not k.ntk.any():  # first layer: Θ = 0, skip its window sums
            return new.replace(ntk=new.nngp.copy())
        ntk = conv_pairs(k.ntk, geom)
        ntk *= scale
        ntk += new.nngp
        return new.replace(ntk=ntk)

    # ------------------------------------------------------------------------- sketch
    def sketch(self, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
        if len(shape.spatial) != 2:
            raise ValueError(f"Conv needs image features (spatial (H, W)), got spatial {shape.spatial}")
        geom = self._geom(shape.spatial)
        f = self.filter_size
        bias = self.b_std > 0
        nngp_full = f * shape.nngp + int(bias)
        ntk_full = f * shape.ntk + nngp_full
        cap = WIDTH_FACTOR * options.n_features
        out = FeatureShape((geom[0].out, geom[1].out), min(nngp_full, cap), min(ntk_full, cap))
        return ConvSketch(layer=self, geom=geom, out=out,
                          nngp=_Reduce(nngp_full, out.nngp, seed, tuple(path) + ("nngp",)),
                          ntk=_Reduce(ntk_full, out.ntk, seed, tuple(path) + ("ntk",)))


# ------------------------------------------------------------------------ sketch helpers
@dataclass(frozen=True)
class _Reduce:
    """Width ``d_in`` → ``d_out``: identity when equal, otherwise an SRHT (unbiased)."""

    d_in: int
    d_out: int
    seed: int
    path: tuple

    def __call__(self, x):
        if self.d_in == self.d_out:
            return x
        from ..sketch.primitives import SRHT

        return SRHT(self.d_in, self.d_out, self.seed, self.path)(x, check=False)


def shifted_patches(x, geom, scale: float):
    """``(n, H, W, w)`` → ``(n, H', W', |F|·w)``: the zero-padded shifted copies, times ``scale``.

    Offsets are concatenated in row-major (dh, dw) order.  Memory O(n · H'W' · |F| w).
    """
    xp = get_namespace(x)
    gh, gw = geom
    x = _pad_axes(_pad_axes(x, (1,), gh.lo, gh.hi), (2,), gw.lo, gw.hi)
    parts = []
    for dh in range(gh.window):
        for dw in range(gw.window):
            parts.append(x[:, dh:dh + gh.span:gh.stride, dw:dw + gw.span:gw.stride, :])
    out = xp.concatenate(parts, axis=-1)
    if scale != 1.0:
        out *= out.dtype.type(scale)
    return out


@dataclass(frozen=True)
class ConvSketch(LayerSketch):
    """Planned sketch face of a ``Conv`` (see ``Conv`` notes)."""

    layer: Conv
    geom: tuple
    out: FeatureShape
    nngp: _Reduce
    ntk: _Reduce

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        layer = self.layer
        scale = layer.W_std / math.sqrt(layer.filter_size)
        nngp = shifted_patches(f.nngp, self.geom, scale)
        if layer.b_std > 0:
            col = xp.full(nngp.shape[:-1] + (1,), layer.b_std, dtype=nngp.dtype)
            nngp = xp.concatenate([nngp, col], axis=-1)
        if f.ntk.shape[-1]:
            ntk = xp.concatenate([shifted_patches(f.ntk, self.geom, scale), nngp], axis=-1)
        else:
            ntk = nngp
        # exact per-pixel variance: the same window sum on the pixel diagonal
        gh, gw = self.geom
        var = window_sum(window_sum(f.var, 1, gh), 2, gw)
        var *= layer.W_std ** 2 / layer.filter_size
        if layer.b_std > 0:
            var += layer.b_std ** 2
        return Features(nngp=self.nngp(nngp), ntk=self.ntk(ntk), var=var)
