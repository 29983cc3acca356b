"""``Conv``: 2-D convolution of an infinitely wide CNN, exact (CNTK) face and sketch face.

Owns the convolution layer, its exact face (diagonal window sums over pixel pairs) and its
sketch face (shifted, concatenated per-pixel features); the padding geometry and window
sums it shares with pooling live in ``spatial.py``.  Conventions are neural-tangents
``stax.Conv`` with ``parameterization="ntk"``, images channels-last ``(n, H, W, C)``:

    z_p = W_std / sqrt(|F| C) * sum_{d in F} W_d x_{s p + d - lo} + b_std * b

with standard normal ``W``, ``b``, zero padding (``SAME``: neural-tangents/XLA pads,
``lo = total // 2``) and |F| the full filter size (also at the borders, where part of the
window is padding).  In the infinite-width limit, for every pixel pair (p, q):

    Σ'(p, q) = W_std² / |F| · Σ_d Σ(s p + d, s q + d) + b_std²
    Θ'(p, q) = Σ'(p, q) + W_std² / |F| · Σ_d Θ(s p + d, s q + d)

The channel count does not enter the limit; ``output_shape`` keeps it (or sets ``out_chan``).
With ``parameterization="standard"`` (neural-tangents) the NNGP is the same and
Θ'(p, q) = C · Σ_d Σ(s p + d, s q + d) + W_std²/|F| · Σ_d Θ(...) (+ 1 with a bias), C the
input channels (fan-in C·|F| times the window average).  No Dask here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from ..backend import InvalidInputError, check_int, get_namespace, rng, to_namespace
from ..sketch import RandomSpec, random_signs
from ..sketch.hadamard import hadamard_blocks, next_pow2
from .base import Features, FeatureShape, Kernel, Layer, LayerSketch, SketchOptions
from .conv_shift import shift_features
from .dense import check_parameterization
from .readout import WIDTH_FACTOR
from .spatial import (
    as_pair, check_image_kernel, check_image_shape, check_padding, diag_window_sum, geometry,
    map_kernel_arrays, offset_range, window_sum,
)

__all__ = ["Conv", "ConvSketch", "conv_pairs"]


def conv_pairs(a, geom):
    """Diagonal window sum over both spatial dimensions of a ``batch + (H, W, H, W)`` array."""
    b = a.ndim - 4
    a = diag_window_sum(a, (b, b + 2), geom[0])
    return diag_window_sum(a, (b + 1, b + 3), geom[1])


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
    b_std : float or None, default None
        Bias standard deviation (``None``, neural-tangents' default, or 0 for no bias under
        ``"ntk"``; under ``"standard"`` only ``None`` means no bias).
    padding : {"SAME", "VALID"}
        Zero padding as in XLA/neural-tangents.  The normalization is by the full filter
        size |F| even where the window overlaps the padding.
    strides : (int, int)
        Output stride.
    parameterization : {"ntk", "standard"}
        neural-tangents' parameterizations (see the module docstring); under
        ``"standard"`` a ``b_std`` of ``None`` means no bias, any number a trained bias.
    out_chan : int, optional
        Output channels (neural-tangents' ``out_chan``): the next standard layer's C.

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
    offset's copy goes through its own SRHT to ``k = WIDTH_FACTOR · n_features // |F|``
    columns (unbiased), so widths stay ≤ 2·WIDTH_FACTOR·n_features + 1.  The |F| SRHTs are
    disjoint coordinate sets of the same ⌈|F|·k / n⌉ signed Hadamard transforms of each input
    pixel (``_OffsetSRHT``): about one transform of the output width per pixel instead of |F|
    (measured on Myrtle-5, 14×14, m = 1024: same kernel error), cost linear in the pixels.
    On the host the shifts (and the SRHT gathers) are one compiled pass over the output
    (``nets.conv_shift``); the exact face of ``Serial.kernel`` runs ``nets.cnn_kernel``.
    The per-pixel variance is exact: var' = W_std²/|F| · (window sum of var) + b_std².
    """

    filter_shape: tuple = (3, 3)
    W_std: float = 1.0
    b_std: Optional[float] = None
    padding: str = "SAME"
    strides: tuple = (1, 1)
    parameterization: str = "ntk"
    out_chan: Optional[int] = None
    in_chan: Optional[int] = field(default=None, compare=False, repr=False)  # set by bind()

    def __post_init__(self):
        object.__setattr__(self, "parameterization", check_parameterization(self.parameterization, "Conv"))
        if self.out_chan is not None:
            object.__setattr__(self, "out_chan", check_int(self.out_chan, "out_chan", minimum=1))
        object.__setattr__(self, "filter_shape", as_pair(self.filter_shape, "filter_shape"))
        object.__setattr__(self, "strides", as_pair(self.strides, "strides"))
        object.__setattr__(self, "padding", check_padding(self.padding))
        b = 0.0 if self.b_std is None else self.b_std
        for name, v in (("W_std", self.W_std), ("b_std", b)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise InvalidInputError(f"Conv: {name} must be a finite non-negative number, got {v!r}")
        object.__setattr__(self, "W_std", float(self.W_std))
        object.__setattr__(self, "b_std", None if self.b_std is None else float(b))

    @property
    def _has_bias(self) -> bool:
        return self.b_std is not None

    @property
    def _b(self) -> float:
        return 0.0 if self.b_std is None else self.b_std

    def bind(self, input_shape: tuple) -> "Conv":
        if self.parameterization != "standard":
            return self
        return replace(self, in_chan=int(input_shape[-1]))

    def _in_chan(self) -> int:
        if self.in_chan is None:
            raise InvalidInputError('Conv(parameterization="standard") needs its input channels: '
                             "use it inside serial(...), which binds them")
        return self.in_chan

    @property
    def filter_size(self) -> int:
        return self.filter_shape[0] * self.filter_shape[1]

    def _geom(self, spatial):
        return geometry(spatial, self.filter_shape, self.strides, self.padding, "Conv filter")

    # ------------------------------------------------------------------------- shapes
    def output_shape(self, input_shape: tuple) -> tuple:
        h, w, c = check_image_shape(input_shape, "Conv")
        gh, gw = self._geom((h, w))
        return (gh.out, gw.out, c if self.out_chan is None else self.out_chan)

    # -------------------------------------------------------------------------- exact
    def kernel(self, k: Kernel) -> Kernel:
        check_image_kernel(k, "Conv")
        geom = self._geom(k.spatial)
        scale = self.W_std ** 2 / self.filter_size
        b2 = self._b ** 2

        def affine(a):
            out = conv_pairs(a, geom)
            out *= scale
            if b2:
                out += b2
            return out

        new = map_kernel_arrays(k, affine, spatial=(geom[0].out, geom[1].out))
        if self.parameterization == "standard":
            ntk = conv_pairs(k.nngp, geom)
            ntk *= self._in_chan()
            if k.ntk.any():
                ntk += (self.W_std ** 2 / self.filter_size) * conv_pairs(k.ntk, geom)
            if self._has_bias:
                ntk += 1.0
            return new.replace(ntk=ntk)
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
        w_nngp = nngp.d_out + int(self._b > 0)
        spatial = (geom[0].out, geom[1].out)
        if self.parameterization == "standard":
            # Θ' = C Σ_d Σ + ...: the same shifted NNGP copies (same SRHTs), scaled by √C
            std = replace(nngp, scale=math.sqrt(self._in_chan()))
            out = FeatureShape(spatial, w_nngp, ntk.d_out + std.d_out + int(self._has_bias))
            return ConvSketch(b_std=self._b, geom=geom, out=out, nngp=nngp, ntk=ntk,
                              standard=(std, self._has_bias))
        out = FeatureShape(spatial, w_nngp, ntk.d_out + w_nngp)
        return ConvSketch(b_std=self._b, geom=geom, out=out, nngp=nngp, ntk=ntk)


# ------------------------------------------------------------------------ sketch helpers
def _per_offset_width(d_in: int, filter_size: int, cap: int) -> int:
    """Width kept per filter offset: all of ``d_in`` while |F|·d_in ≤ cap, else cap // |F|."""
    if d_in * filter_size <= cap:
        return d_in
    return max(1, cap // filter_size)


@dataclass(frozen=True)
class _OffsetSRHT(RandomSpec):
    """One SRHT per filter offset, all cut from the same Hadamard transform of each pixel.

    Offset ``o`` maps ``x ↦ (H D_b x̃)[P_o] / √k`` where ``P_o`` are ``k`` coordinates of the
    ``B·n`` coordinates of ``B`` signed transforms (``n = 2^⌈log₂ d_in⌉``, ``D_b`` independent
    ±1 diagonals) and the ``P_o`` of different offsets are disjoint (a random permutation cut
    into ``|F|`` groups).  Each offset is marginally an SRHT ``d_in → k`` (unbiased), and an
    input pixel is transformed ``B = ⌈|F|·k / n⌉`` times instead of ``|F|`` times.  Draws:
    ``rng(seed, *path, "offset-srht")``.
    """

    d_in: int
    k: int
    offsets: int
    seed: int
    path: tuple

    @property
    def _n(self) -> int:
        return next_pow2(self.d_in)

    @property
    def blocks(self) -> int:
        return -(-self.offsets * self.k // self._n)

    def _build(self, xp, dtype):
        gen = rng(self.seed, *self.path, "offset-srht")
        signs = random_signs(gen, (self.blocks, self._n), False) / math.sqrt(self.k)
        idx = gen.permutation(self.blocks * self._n)[:self.offsets * self.k]
        idx = np.sort(idx.reshape(self.offsets, self.k), axis=1)
        return to_namespace(signs.astype(dtype), xp), to_namespace(idx.astype(np.int64), xp)

    def transform(self, x):
        """``(..., d_in) → (..., B·n)``: every coordinate any offset may take."""
        xp = get_namespace(x)
        signs, _ = self._params(xp, x.dtype)
        lead = x.shape[:-1]
        return hadamard_blocks(x.reshape(-1, self.d_in), signs).reshape(lead + (-1,))

    def index(self, xp, dtype, o: int):
        """Coordinates ``P_o`` of offset ``o`` in the output of :meth:`transform`."""
        return self._params(xp, dtype)[1][o]

    def indices(self, xp, dtype):
        """``(offsets, k)``: the coordinates of every offset (row ``o`` is :meth:`index`)."""
        return self._params(xp, dtype)[1]


@dataclass(frozen=True)
class _ShiftConcat:
    """``(n, H, W, d_in)`` → ``(n, H', W', |F|·k)``: the |F| zero-padded, strided shifts of the
    per-pixel features, times ``scale``, concatenated in row-major (dh, dw) offset order.

    When ``k < d_in`` every offset goes through its own SRHT ``d_in → k``
    (:class:`_OffsetSRHT`: a block-diagonal sketch of the concatenation, unbiased), all cut
    from ``⌈|F|·k / n⌉`` Hadamard transforms of each input pixel, so the work per pixel is
    about one transform of the output width.  Memory: the output plus the transforms.
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

    def _srht(self):
        gh, gw = self.geom
        return _OffsetSRHT(self.d_in, self.k, gh.window * gw.window, self.seed, self.path)

    def write(self, x, out) -> None:
        """Write the shifted features into ``out[..., :d_out]`` (the rest is left alone)."""
        if self.d_in == 0:
            return
        xp = get_namespace(x)
        gh, gw = self.geom
        reduce = self.k < self.d_in
        if _compiled(x, out):  # host: one pass over the output (nets.conv_shift)
            if reduce:
                srht = self._srht()
                idx = srht.indices(np, x.dtype)
                shift_features(srht.transform(x), self.geom, self.k, self.scale, out, idx)
            else:
                shift_features(x, self.geom, self.k, self.scale, out)
            return
        if reduce:
            srht = self._srht()
            x = srht.transform(x)
            if self.scale != 1.0:
                x *= x.dtype.type(self.scale)
        else:
            dt = out.dtype.type(self.scale)
        i = 0
        for dh in range(gh.window):
            rh = offset_range(gh, dh)
            for dw in range(gw.window):
                rw = offset_range(gw, dw)
                cols = slice(i * self.k, (i + 1) * self.k)
                o = i
                i += 1
                if rh is None or rw is None:
                    continue  # this offset only ever sees padding
                src = x[:, rh[1], rw[1], :]
                if reduce:
                    out[:, rh[0], rw[0], cols] = xp.take(src, srht.index(xp, x.dtype, o), axis=-1)
                else:
                    out[:, rh[0], rw[0], cols] = src * dt


def _compiled(x, out) -> bool:
    """Whether :func:`.conv_shift.shift_features` writes these host arrays."""
    return (type(x) is np.ndarray and type(out) is np.ndarray and out.flags.c_contiguous
            and x.dtype == out.dtype and x.dtype in (np.float32, np.float64))


@dataclass(frozen=True)
class ConvSketch(LayerSketch):
    """Planned sketch face of a ``Conv`` (see ``Conv`` notes)."""

    b_std: float
    geom: tuple
    out: FeatureShape
    nngp: _ShiftConcat
    ntk: _ShiftConcat
    standard: Optional[tuple] = None   # (√C-scaled NNGP shifter, bias) under "standard"

    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        n = f.nngp.shape[0]
        gh, gw = self.geom
        lead = (n, gh.out, gw.out)
        dtype = f.nngp.dtype
        # the compiled shifts write every column they own (zeros in the padding)
        full = self.nngp.d_in > 0 and _compiled(f.nngp, np.empty((0,), dtype=dtype))
        nngp = (xp.empty if full else xp.zeros)(lead + (self.out.nngp,), dtype=dtype)
        self.nngp.write(f.nngp, nngp)
        if self.b_std > 0:
            nngp[..., -1] = self.b_std
        ntk = xp.empty(lead + (self.out.ntk,), dtype=dtype)
        if self.ntk.d_out:
            if not (self.ntk.d_in > 0 and _compiled(f.ntk, ntk)):
                ntk[..., :self.ntk.d_out] = 0
            self.ntk.write(f.ntk, ntk)
        if self.standard is None:
            ntk[..., self.ntk.d_out:] = nngp
        else:
            std, bias = self.standard
            ntk[..., self.ntk.d_out:] = 0
            view = ntk[..., self.ntk.d_out:self.ntk.d_out + std.d_out]
            std.write(f.nngp, view)
            if bias:
                ntk[..., -1] = 1
        # exact per-pixel variance: the same window sum on the pixel diagonal
        var = window_sum(window_sum(f.var, 1, gh), 2, gw)
        var *= self.scale2
        if self.b_std > 0:
            var += self.b_std ** 2
        return Features(nngp=nngp, ntk=ntk, var=var)

    @property
    def scale2(self) -> float:
        return self.nngp.scale ** 2
