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

#: Sketch face: a block of per-pixel features wider than ``WIDTH_FACTOR * n_features`` is
#: reduced to about that width with SRHTs (unbiased), so cost stays linear in the pixel count.
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


def _offset_range(g: _Axis, d: int):
    """Output positions p whose input position s·p + d − lo lies inside the image.

    Returns ``(out_slice, in_slice)`` or ``None`` when no output position sees offset d.
    """
    o = d - g.lo
    p_lo = 0 if o >= 0 else -(o // g.stride)  # ceil(-o / s): first p with s·p + o ≥ 0
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
    ``cov2``.  Cost O((fh + fw) · batch · (HW)²) per array (separable: a diagonal window sum
    over the two height axes, then over the two width axes, shifted slices, no loop over
    pixels, no padded copy); temporaries are the intermediate and the output, i.e.
    O(block² (HW)²) for a block pair of ``serial.kernel``.  The first layer's Θ = 0 is
    detected and skipped.

    Sketch face (``sketch``): each output pixel's NNGP feature is the concatenation of the
    |F| shifted (zero padded) input features times W_std/√|F| (plus a constant b_std
    column); its NTK feature is ``[W_std/√|F| · shifted NTK features, new NNGP feature]``.
    Both are exact while |F|·width ≤ ``WIDTH_FACTOR · n_features``; beyond that each
    offset's copy goes through its own independent SRHT to ``WIDTH_FACTOR · n_features //
    |F|`` columns (unbiased), so widths stay ≤ 2·WIDTH_FACTOR·n_features + 1 and the cost per
    image is linear in the number of pixels (|F| transforms of size ~width per pixel).  The
    per-pixel variance is exact: var' = W_std²/|F| · (window sum of var) + b_std².
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
        cap = WIDTH_FACTOR * options.n_features
        scale = self.W_std / math.sqrt(self.filter_size)
        path = tuple(path)

        def shifter(d_in, name):
            return _ShiftConcat(geom, d_in, _per_offset_width(d_in, self.filter_size, cap), scale,
                                seed, path + (name,))

        nngp = shifter(shape.nngp, "nngp")
        ntk = shifter(shape.ntk, "ntk")
        w_nngp = nngp.d_out + int(self.b_std > 0)
        out = FeatureShape((geom[0].out, geom[1].out), w_nngp, ntk.d_out + w_nngp)
        return ConvSketch(b_std=self.b_std, geom=geom, out=out, nngp=nngp, ntk=ntk)


# ------------------------------------------------------------------------ sketch helpers
def _per_offset_width(d_in: int, filter_size: int, cap: int) -> int:
    """Width kept per filter offset: all of ``d_in`` while |F|·d_in ≤ cap, else cap // |F|."""
    if d_in * filter_size <= cap:
        return d_in
    return max(1, cap // filter_size)


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


@dataclass(frozen=True)
class _ShiftConcat:
    """``(n, H, W, d_in)`` → ``(n, H', W', |F|·k)``: the |F| zero-padded, strided shifts of the
    per-pixel features, times ``scale``, concatenated in row-major (dh, dw) offset order.

    When ``k < d_in`` every offset first goes through its own independent SRHT
    ``d_in → k`` (a block-diagonal sketch of the concatenation: unbiased, with the variance
    of one SRHT of the whole concatenation), so the transforms stay of size ~``d_in`` per
    pixel instead of ~|F|·``d_in``.  Memory O(n · H'W' · |F| k) plus one projected copy.
    """

    geom: tuple
    d_in: int
    k: int
    scale: float
    seed: int
    path: tuple

    @property
    def d_out(self) -> int:
        gh, gw = self.geom
        return gh.window * gw.window * self.k

    def write(self, x, out) -> None:
        """Write the shifted features into ``out[..., :d_out]`` (the rest is left alone)."""
        if self.d_in == 0:
            return
        gh, gw = self.geom
        dt = out.dtype.type(self.scale)
        reduce = self.k < self.d_in
        if reduce:
            from ..sketch.primitives import SRHT
        i = 0
        for dh in range(gh.window):
            rh = _offset_range(gh, dh)
            for dw in range(gw.window):
                rw = _offset_range(gw, dw)
                cols = slice(i * self.k, (i + 1) * self.k)
                i += 1
                if rh is None or rw is None:
                    continue  # this offset only ever sees padding
                src = x[:, rh[1], rw[1], :]
                if reduce:
                    src = SRHT(self.d_in, self.k, self.seed, self.path + (dh, dw))(src, check=False)
                out[:, rh[0], rw[0], cols] = src * dt


@dataclass(frozen=True)
class ConvSketch(LayerSketch):
    """Planned sketch face of a ``Conv`` (see ``Conv`` notes)."""

    b_std: float
    geom: tuple
    out: FeatureShape
    nngp: _ShiftConcat
    ntk: _ShiftConcat

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        n = f.nngp.shape[0]
        gh, gw = self.geom
        lead = (n, gh.out, gw.out)
        dtype = f.nngp.dtype
        nngp = xp.zeros(lead + (self.out.nngp,), dtype=dtype)
        self.nngp.write(f.nngp, nngp)
        if self.b_std > 0:
            nngp[..., -1] = self.b_std
        ntk = xp.empty(lead + (self.out.ntk,), dtype=dtype)
        if self.ntk.d_out:
            ntk[..., :self.ntk.d_out] = 0
            self.ntk.write(f.ntk, ntk)
        ntk[..., self.ntk.d_out:] = nngp
        # exact per-pixel variance: the same window sum on the pixel diagonal
        var = window_sum(window_sum(f.var, 1, gh), 2, gw)
        var *= self.scale2
        if self.b_std > 0:
            var += self.b_std ** 2
        return Features(nngp=nngp, ntk=ntk, var=var)

    @property
    def scale2(self) -> float:
        return self.nngp.scale ** 2
