"""Image geometry shared by ``Conv`` and the pooling layers (channels-last, 2-D).

Owns the parameter checks of spatial layers (pairs, padding, image shapes and records),
the XLA/neural-tangents padding geometry of one dimension (:class:`Axis`), and the window
sums over pixel and pixel-pair axes with implicit zero padding.  Knows no layer; no Dask.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..backend import get_namespace
from .base import Kernel

__all__ = [
    "PADDINGS", "Axis", "as_pair", "check_padding", "axis_geometry", "geometry",
    "check_image_shape", "check_image_kernel", "offset_range", "window_sum",
    "diag_window_sum", "map_kernel_arrays",
]

PADDINGS = ("SAME", "VALID")


# ------------------------------------------------------------------------------ checks
def as_pair(value, name: str) -> tuple:
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


def check_padding(value) -> str:
    """``"SAME"`` or ``"VALID"`` (case-insensitive), else ``ValueError``."""
    if not isinstance(value, str) or value.upper() not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {value!r}")
    return value.upper()


def check_image_shape(input_shape, layer: str) -> tuple:
    """``input_shape`` as ``(H, W, C)``, else a ``ValueError`` naming ``layer``."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"{layer} needs images of shape (H, W, C), got input shape {shape}")
    return shape


def check_image_kernel(k: Kernel, layer: str) -> None:
    """Refuse a kernel record that is not an image record (spatial ``(H, W)``)."""
    if len(k.spatial) != 2:
        raise ValueError(f"{layer} needs an image kernel record (spatial (H, W)), "
                         f"got spatial {tuple(k.spatial)}")


# ---------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Axis:
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


def axis_geometry(size: int, window: int, stride: int, padding: str, what: str) -> Axis:
    """Output size and zero pads of one dimension (XLA ``padtype_to_pads`` semantics)."""
    if padding == "VALID":
        if window > size:
            raise ValueError(f"{what} window {window} is larger than the image size {size} "
                             "with padding='VALID'")
        return Axis(size, window, stride, 0, 0, (size - window) // stride + 1)
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return Axis(size, window, stride, total // 2, total - total // 2, out)


def geometry(spatial: tuple, window: tuple, strides: tuple, padding: str, what: str) -> tuple:
    """One :class:`Axis` per spatial dimension."""
    return tuple(axis_geometry(int(s), w, st, padding, what)
                 for s, w, st in zip(spatial, window, strides))


def offset_range(g: Axis, d: int):
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


# ------------------------------------------------------------------------- window sums
def _window_apply(a, axes: tuple, g: Axis):
    """Σ_d a[.., s p + d − lo, ..] with the same offset d on every axis of ``axes``.

    Zero padding is implicit: each offset adds into the part of the output it reaches, so
    no padded copy is made.  Temporaries: the output (plus one strided view per offset).
    """
    xp = get_namespace(a)
    shape = list(a.shape)
    for ax in axes:
        shape[ax] = g.out
    ranges = [offset_range(g, d) for d in range(g.window)]
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


def diag_window_sum(a, axes: tuple, g: Axis):
    """Σ_d a[.., s p + d, .., s q + d, ..] over the pair of axes ``axes`` (zero padded).

    ``axes`` are the two axes of one spatial dimension (pixel of x1, pixel of x2).  The
    same offset d moves both: a convolution's filter is shared by the two inputs.
    """
    return _window_apply(a, tuple(axes), g)


def window_sum(a, axis: int, g: Axis):
    """Σ_d a[.., s p + d, ..] along one ``axis`` (zero padded): pooling windows."""
    return _window_apply(a, (axis,), g)


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
