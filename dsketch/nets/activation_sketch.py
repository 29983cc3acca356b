"""The sketch face shared by every activation: Hermite-weighted PolySketch features.

Owns turning an activation's Hermite expansion into random features that act on the last
axis of a :class:`~dsketch.nets.base.Features` record (so per-pixel image features work
unchanged).  For a row (or pixel) with NNGP features ``x`` of exact variance ``v``:

1. ``x̂ = x/‖x‖`` (zero rows stay zero) and a :class:`~dsketch.sketch.PolySketch`
   gives ``S_l x̂`` with ``E⟨S_l x̂, S_l ŷ⟩ = ⟨x̂, ŷ⟩^l`` for ``l = 1..p`` (``p = options.degree``);
2. the blocks ``R_l(v)·S_l x̂`` (radial Hermite factors, exact for inputs anywhere in R^d),
   cut to m − 1 coordinates and rescaled, are added under independent random signs per
   degree (:class:`~dsketch.sketch.SignedSum`), after the exact constant column ``R_0(v)``:
   ``E⟨f(x), f(y)⟩ = Σ_{l≤p} R_l(v_x) R_l(v_y) ρ^l`` (cross-degree terms have mean zero).
   The degrees stream out of the tree one at a time and feed the NNGP and derivative sums
   together, so no ``p·m``-wide concatenation is formed and no transform is spent on the
   sum (an SRHT of it, as NT PR #142 applies to the concatenation, is an isometry);
3. the same with ``Rdot_l`` gives derivative features ``g`` with
   ``E⟨g(x), g(y)⟩ ≈ E[φ'(u)φ'(v)]``, and ``ntk' = TensorSRHT(ntk, g)`` (``E`` = Θ·E[φ'φ']),
   NTK features narrower than m being first spread to width m by an SRHT (a TensorSRHT
   factor with few Hadamard coordinates has a high variance: this halves the NTK error
   of the first activation of a net);
4. ``var' = E[φ(√v z)²]`` exactly.

Truncation at degree ``p`` is made exact at ρ = ±1: the Hermite mass above ``p`` of even
(odd) degrees, known in closed form from E[φ(u)φ(±u)], is folded into the top even (odd)
coefficient.  So each row's self-kernel and its kernel with ±itself are unbiased, and the
polynomial error elsewhere is at most twice that tail mass times |ρ|^{p−1}.

Choice of coefficients (measured): for the ReLU family the Hermite coefficients with this
fold approximate the arc-cosine kernels about as well as a non-negative least-squares fit
on [-1, 1] (degree 8: max error of κ1 1e-3 vs 4e-4, of κ0 0.041 vs 0.036) and need no
fitting, so every activation uses them; the polynomial bias of whole depth-3 ReLU, erf and
GeLU nets is then below 1e-3 (relative Frobenius) and the sketch variance dominates.

``options.relu_method == "random"`` switches positively homogeneous activations (ReLU
family, Sign, Step, rectified monomials) to random features: ``f = φ(x G)/√m`` and
``g = φ'(x G')/√m`` with Gaussian ``G, G'`` (unbiased for E over (u, v) ~ N(0, [[‖x‖², ⟨x,y⟩],
...]) for any φ), then the same TensorSRHT for the NTK.

It reads an activation only through its public faces (``expansion``, ``diagonal``,
``fn``, ``deriv``, ``homogeneity``) and imports no activation module: the activation
base class calls :func:`plan_activation_sketch`, and an activation with a better map
overrides ``sketch`` instead (e.g. ``Identity``).  No Dask here; every random matrix
comes from ``dsketch.sketch`` primitive specs seeded by ``(seed, *path, component)`` and
cached per device by them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import get_namespace, resolve_dtype
from ..sketch import SRHT, GaussianProjection, PolySketch, TensorSRHT
from ..sketch.linear import SignedSum
from .base import Features, FeatureShape, LayerSketch, SketchOptions

__all__ = ["ActivationSketch", "plan_activation_sketch", "folded_expansion"]

_PROBE_VARIANCES = (0.37, 1.9, 11.3)


def folded_expansion(act, var, degree: int):
    """Hermite factors ``(R, Rdot)`` (``var.shape + (degree+1,)``) exact at ρ = ±1.

    The truncated series misses ``e_±(v) = E[φ(u)φ(±u)] − Σ_{l≤p} (±1)^l R_l(v)²``; its
    even part ``(e_+ + e_−)/2`` is added (in square) to the top even coefficient and its odd
    part ``(e_+ − e_−)/2`` to the top odd one, keeping each coefficient's sign.
    """
    xp = get_namespace(var)
    var = xp.maximum(xp.asarray(var, dtype=xp.float64), 0)
    R, Rdot = act.expansion(var, degree)
    plus = act.diagonal(var, 1)
    minus = act.diagonal(var, -1)
    out = []
    for k, coef in enumerate((R, Rdot)):
        coef = xp.array(coef, copy=True)
        sq = coef * coef
        even_total = (plus[k] + minus[k]) / 2
        odd_total = (plus[k] - minus[k]) / 2
        for parity, total in ((0, even_total), (1, odd_total)):
            top = degree if degree % 2 == parity else degree - 1
            if top < 0:
                continue
            missing = xp.maximum(total - xp.sum(sq[..., parity::2], axis=-1), 0)
            missing = xp.where(xp.isfinite(missing), missing, 0)
            c = coef[..., top]
            sign = xp.where(c < 0, -1.0, 1.0)
            coef[..., top] = sign * xp.sqrt(c * c + missing)
        out.append(coef)
    return out[0], out[1]


def _active_degrees(act, degree: int):
    """Degrees whose coefficient is not identically zero (probed at a few variances)."""
    v = np.asarray(_PROBE_VARIANCES, dtype=np.float64)
    R, Rdot = folded_expansion(act, v, degree)
    R, Rdot = np.asarray(R), np.asarray(Rdot)
    act_n = tuple(l for l in range(degree + 1) if np.any(R[:, l] != 0))
    act_d = tuple(l for l in range(degree + 1) if np.any(Rdot[:, l] != 0))
    return act_n, act_d


def plan_activation_sketch(act, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
    """Plan the sketch face of activation ``act`` on features of ``shape``."""
    resolve_dtype(options.dtype)
    p = int(options.degree)
    if p < 1:
        raise ValueError(f"degree must be at least 1, got {p}")
    m = int(options.n_features)
    if m < 2:
        raise ValueError(f"n_features must be at least 2 for an activation sketch, got {m}")
    method = "hermite"
    if options.relu_method == "random" and act.homogeneity is not None:
        method = "random"
    elif options.relu_method not in ("poly", "random"):
        raise ValueError(f"relu_method must be 'poly' or 'random', got {options.relu_method!r}")
    if method == "random":
        act_n, act_d = (), ()
        zero_dot = act.homogeneity == 0
    else:
        act_n, act_d = _active_degrees(act, p)
        zero_dot = not act_d
    # Θ' = Θ ⊙ E[φ'φ'] is identically 0 when Θ = 0 (no NTK features yet) or φ' = 0.
    w_ntk = 0 if (shape.ntk == 0 or zero_dot) else m
    out = FeatureShape(tuple(shape.spatial), m, w_ntk)
    return ActivationSketch(act=act, w_in=shape.nngp, w_ntk_in=shape.ntk, out=out, degree=p,
                            method=method, active_nngp=act_n, active_dot=act_d,
                            dtype=str(np.dtype(options.dtype)), seed=int(seed), path=tuple(path))


@dataclass(frozen=True)
class ActivationSketch(LayerSketch):
    """Planned sketch face of an activation (see the module docstring).

    A small hashable spec: the activation, incoming widths, output shape, degree, method,
    the nonzero Hermite degrees, dtype, seed and path.  Random maps are primitive specs
    derived from it; they cache their matrices per device.
    """

    act: object
    w_in: int
    w_ntk_in: int
    out: FeatureShape
    degree: int
    method: str
    active_nngp: tuple
    active_dot: tuple
    dtype: str
    seed: int
    path: tuple

    # --------------------------------------------------------------- random maps
    @property
    def _m(self) -> int:
        return self.out.nngp

    def _poly(self):
        top = max([l for l in self.active_nngp + self.active_dot if l >= 1], default=0)
        if top == 0:
            return None
        return PolySketch(self.w_in, self._m, top, self.seed, self.path + ("poly",))

    def _mix(self, which: str):
        """Signed sum of the degree blocks, cut to ``m − 1`` coordinates (see ``_poly_features``)."""
        return SignedSum(self._m - 1, self.degree + 1, self.seed, self.path + (which,))

    def _expand(self):
        """Narrow NTK features are first spread to width m by an SRHT (see ``__call__``)."""
        if self.out.ntk == 0 or self.w_ntk_in >= self._m:
            return None
        return SRHT(self.w_ntk_in, self._m, self.seed, self.path + ("ntk-expand",))

    def _tensor(self):
        if self.out.ntk == 0:
            return None
        d1 = max(self.w_ntk_in, self._m)
        return TensorSRHT(d1, self._m, self._m, self.seed, self.path + ("ntk",))

    # ----------------------------------------------------------------- the map
    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        dt = np.dtype(self.dtype)
        x = f.nngp.astype(dt, copy=False)
        if self.method == "random":
            nngp, dot = self._random_features(x)
        else:
            nngp, dot = self._poly_features(x, f.var)
        if self.out.ntk:
            a = f.ntk.astype(dt, copy=False)
            expand = self._expand()
            if expand is not None:
                # TensorSRHT pairs Hadamard coordinates of both factors; a factor of few
                # coordinates (e.g. the input features) leaves few distinct values and a
                # high variance. An SRHT to width m (an isometry when m is a multiple of
                # its padded width) spreads it first.
                a = expand(a, check=False)
            ntk = self._tensor()(a, dot, check=False)
        else:
            ntk = xp.zeros(x.shape[:-1] + (0,), dtype=dt)
        var_new = self.act.diagonal(f.var)[0]
        return Features(nngp=nngp, ntk=ntk, var=var_new)

    def _poly_features(self, x, var):
        xp = get_namespace(x)
        dt = x.dtype
        m = self._m
        lead = x.shape[:-1]
        norm = xp.sqrt(xp.sum(x.astype(xp.float64) ** 2, axis=-1, keepdims=True))
        xhat = (x / xp.where(norm > 0, norm, 1).astype(dt)).astype(dt, copy=False)
        R, Rdot = folded_expansion(self.act, var, self.degree)
        want_dot = bool(self.out.ntk)
        rows = int(np.prod(lead, dtype=np.int64))
        outs = {"nngp": (R, {l for l in self.active_nngp if l >= 1})}
        if want_dot:
            outs["dot"] = (Rdot, {l for l in self.active_dot if l >= 1})
        needed = sorted(set().union(*(act for _, act in outs.values())))
        # Each degree's S_l x̂ leaves the tree once and feeds both outputs: its first m − 1
        # coordinates (each carries 1/m of ⟨x̂, ŷ⟩ˡ, hence the rescale) are added under
        # independent random signs per degree and output (cross terms have mean zero).
        # An SRHT of the sum would be an isometry: it would cost a transform, not help.
        cut = math.sqrt(m / (m - 1))
        res = {}
        for which, (coef, _) in outs.items():
            out = xp.empty((rows, m), dtype=dt)
            out[:, 0] = coef[..., 0].reshape(-1)
            res[which] = out
        if needed:
            mixes = {which: self._mix("mix-" + which) for which in outs}
            acc = {which: None for which in outs}
            x2 = xhat.reshape(-1, self.w_in)
            for l, s_l in self._poly().iter_degrees(x2, needed):
                head = s_l[:, :m - 1]
                for which, (coef, active) in outs.items():
                    if l in active:
                        c = (coef[..., l].reshape(-1, 1) * cut).astype(dt)
                        acc[which] = mixes[which].add(acc[which], l, head, c)
                del s_l, head
            for which in outs:
                res[which][:, 1:] = 0 if acc[which] is None else acc[which]
        else:
            for which in outs:
                res[which][:, 1:] = 0
        nngp = res["nngp"].reshape(lead + (m,))
        dot = res["dot"].reshape(lead + (m,)) if want_dot else None
        return nngp, dot

    def _random_features(self, x):
        # Projections in float64 (then cast): BLAS blocking differs with the batch size,
        # and float64 keeps that round-off below float32 resolution (chunk invariance).
        m = self._m
        x64 = x.astype(np.float64)
        scale = 1 / math.sqrt(m)

        def project(name):
            proj = GaussianProjection(self.w_in, m, self.seed, self.path + (name,))
            return proj(x64, check=False) * math.sqrt(m)               # x·G, G ~ N(0, 1)

        nngp = (self.act.fn(project("gaussian")) * scale).astype(x.dtype)
        dot = None
        if self.out.ntk:
            dot = (self.act.deriv(project("gaussian-dot")) * scale).astype(x.dtype)
        return nngp, dot
