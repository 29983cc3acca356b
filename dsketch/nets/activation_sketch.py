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
   sum (an SRHT of it, as NT PR #142 applies to the concatenation, is an isometry).  Per
   pixel, degrees above ``q/2`` of little coefficient mass come out of a narrower subtree
   and fill the first ``m/4`` columns only (:func:`high_degree_width`);
3. the same with ``Rdot_l`` gives derivative features ``g`` with
   ``E⟨g(x), g(y)⟩ ≈ E[φ'(u)φ'(v)]``, and ``ntk' = TensorSRHT(ntk, g)`` (``E`` = Θ·E[φ'φ']),
   NTK features narrower than m being first spread to width m by an SRHT (a TensorSRHT
   factor with few Hadamard coordinates has a high variance: this halves the NTK error
   of the first activation of a net) and wider ones summed in SRHT-rotated blocks of
   width m (``readout.FitWidth(blocks=True)``), so the TensorSRHT uses each coordinate once;
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

Estimators (``options.method``; measured by ``benchmarks/fidelity.py``, rows of norms
1.6–21 scaled ×0.1…×100): ``"hermite"`` is the above.  ``"random"`` keeps the exact
constant column and gives the rest to Monte-Carlo features of the residual
``r_x(z) = φ(√v z) − R_0(v)`` at ``z = x̂·g`` (g Gaussian, shared by both branches), valid
for any activation; ``"mix"`` gives Hermite degrees ≤ ``MIX_DEGREE`` to PolySketch and the
residual of the series above them to the Monte-Carlo block, added under its own random
signs into the same coordinates: unbiased at every correlation (no truncation), and each
row's budget follows its own variance (where the tail mass is small the Monte-Carlo block
is near zero and adds no noise).  With either, a narrow input (``8·w_in ≤ m``: the first
activation) gets degree 1 as an exact block ``R_1(v)·x̂``, and derivative rows are
rescaled to their exact norm E[φ'(u)²] (the bump φ' of saturating activations at large
variance makes those the noisiest entries: erf depth-2 NTK at ×100 0.40 → 0.27).
``"auto"`` (default, :func:`resolve_method`): ``"hermite"`` for positively homogeneous
and fast-growing activations, ``"mix"`` for the others where the input is at most m/2
wide (the first activation of a net, where input norms, hence variances, are arbitrary),
``"hermite"`` past it (measured: the same error at depth 2 and 3, without an m × m GEMM).
On nearly diagonal kernels (bounded activations at large input norms) every width-m
oblivious sketch has an error of about the JL floor √(Σ_ij (K_ii K_jj + K_ij²)/m)/‖K‖_F;
with the block sums (step 3, the readout), ``"auto"`` measured at most 1.33× it (NNGP)
and 1.21× (NTK) on depth-2/3 nets, m = 1024 and 4096, inputs ×0.1…×100.

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

from ..backend import InvalidInputError, get_namespace, resolve_dtype
from ..sketch import SRHT, GaussianProjection, PolySketch, TensorSRHT
from ..sketch.hadamard import next_pow2
from ..sketch.linear import SignedSum
from .base import Features, FeatureShape, LayerSketch, SketchOptions
from .hermite_series import subtract_series
from .readout import FitWidth

__all__ = ["ActivationSketch", "plan_activation_sketch", "folded_expansion", "resolve_method",
           "high_degree_width", "METHODS", "MIX_DEGREE", "check_resolved", "MC_RESOLVE"]

_PROBE_VARIANCES = (0.37, 1.9, 11.3)

#: The estimators of an activation's sketch (``SketchOptions.method``).
METHODS = ("auto", "hermite", "random", "mix")
#: Hermite degrees (above the exact ones) that ``"mix"`` gives to PolySketch; the rest of
#: the series goes to Monte-Carlo features of the residual function.
MIX_DEGREE = 1
#: The exact degree-1 block is used when ``LINEAR_SHARE · w_in ≤ m``.
LINEAR_SHARE = 8
#: ``"auto"`` uses ``"mix"`` only on inputs of width ``w_in ≤ m / AUTO_MC_SHARE``.
AUTO_MC_SHARE = 2
#: Per-pixel Hermite degrees above ``q/2`` holding at most this share of the (non-constant)
#: coefficient mass get ``m / HIGH_SHARE`` columns (:func:`high_degree_width`).
HIGH_MASS = 0.3
HIGH_SHARE = 4
#: A row's Monte-Carlo derivative features are "unresolved" when their squared norm is off
#: from the exact E[φ'²] by more than this factor (:func:`check_resolved`).
MC_RESOLVE = 100.0


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


def high_degree_width(act, degree: int, m: int) -> int:
    """Width of the Hermite degrees above ``q/2`` (``q = next_pow2(degree)``), 0 for ``m``.

    Their block's variance scales as (its share of the coefficient mass)² / width, and
    as ρˡ they weigh little in the kernel off the diagonal; where that share is at most
    :data:`HIGH_MASS` (at the probe variances, both branches) they get ``m / HIGH_SHARE``
    columns, and the PolySketch subtree that only they use runs at that width
    (``PolySketch.high_width``): about half the tree's transforms shrink 4×.  ReLU,
    degree 8: shares 1.4% (NNGP) and 26% (derivative, the folded tail); measured on the
    Myrtle-5 CNTK sketch, Fashion-MNIST 14×14, m = 1024, 40 images, 80 seeds: relative
    Frobenius error of the NTK 0.0598 ± 0.0035 against 0.0608 ± 0.0034 at full width
    (paired difference −0.001 ± 0.002), 1.4–1.7× faster.
    """
    q = next_pow2(degree)
    if q < 2 or m < 2 * HIGH_SHARE:
        return 0
    share = 0.0
    for coef in folded_expansion(act, np.asarray(_PROBE_VARIANCES, dtype=np.float64), degree):
        sq = np.asarray(coef, dtype=np.float64)[:, 1:] ** 2
        total = np.sum(sq, axis=1)
        high = np.sum(sq[:, q // 2:], axis=1)
        share = max(share, float(np.max(np.where(total > 0, high / np.where(total > 0, total, 1), 0))))
    return m // HIGH_SHARE if share <= HIGH_MASS else 0


def _tame(fn) -> bool:
    """Whether ``fn`` is finite and grows at most linearly on a probe grid up to ±10⁶.

    Monte-Carlo features of such a function have a bounded relative variance at every
    input norm; faster-growing ones (Exp, monomials) stay on the Hermite sketch.
    """
    t = np.concatenate([-np.geomspace(1e-3, 1e6, 40), [0.0], np.geomspace(1e-3, 1e6, 40)])
    with np.errstate(all="ignore"):
        y = np.asarray(fn(t), dtype=np.float64)
    return bool(np.all(np.isfinite(y)) and np.all(np.abs(y) <= 10 * (1 + np.abs(t))))


def resolve_method(act, method: str) -> str:
    """The estimator an activation's sketch uses for ``method`` (see the module docstring).

    ``"auto"``: ``"hermite"`` for positively homogeneous activations (their Hermite
    coefficients are constant and decay fast: measured at the JL floor) and for
    fast-growing ones; ``"mix"`` for every other activation whose φ and φ' grow at most
    linearly (bounded, GeLU-like, periodic).  The planner further keeps ``"auto"`` on
    ``"hermite"`` for inputs wider than m / ``AUTO_MC_SHARE``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if method != "auto":
        return method
    if act.homogeneity is not None:
        return "hermite"
    return "mix" if _tame(act.dual_fn) and _tame(act.dual_deriv) else "hermite"


def plan_activation_sketch(act, shape: FeatureShape, options: SketchOptions, seed: int, path: tuple):
    """Plan the sketch face of activation ``act`` on features of ``shape``."""
    resolve_dtype(options.dtype)
    p = int(options.degree)
    if p < 1:
        raise ValueError(f"degree must be at least 1, got {p}")
    m = int(options.n_features)
    if m < 2:
        raise ValueError(f"n_features must be at least 2 for an activation sketch, got {m}")
    if options.relu_method not in ("poly", "random"):
        raise ValueError(f"relu_method must be 'poly' or 'random', got {options.relu_method!r}")
    requested = getattr(options, "method", "auto")
    method = resolve_method(act, requested)
    if requested == "auto" and method == "mix" and AUTO_MC_SHARE * shape.nngp > m:
        # Past the first activation the Monte-Carlo block costs an m × m GEMM and, measured,
        # buys nothing: the variances there are moderate and the Hermite series converges.
        method = "hermite"
    if options.relu_method == "random" and act.homogeneity is not None:
        method = "relu-random"
    if method == "relu-random":
        act_n, act_d = (), ()
        zero_dot = act.homogeneity == 0
    else:
        act_n, act_d = _active_degrees(act, p)
        zero_dot = not act_d
    # An exact degree-1 block (R_1·x̂, w_in columns) when the input is narrow: no variance
    # for the linear part of the kernel (the first activation of a net).
    linear = method in ("mix", "random") and shape.nngp * LINEAR_SHARE <= m
    # Θ' = Θ ⊙ E[φ'φ'] is identically 0 when Θ = 0 (no NTK features yet) or φ' = 0.
    w_ntk = 0 if (shape.ntk == 0 or zero_dot) else m
    out = FeatureShape(tuple(shape.spatial), m, w_ntk)
    high = high_degree_width(act, p, m) if (method == "hermite" and shape.spatial) else 0
    return ActivationSketch(act=act, w_in=shape.nngp, w_ntk_in=shape.ntk, out=out, degree=p,
                            method=method, active_nngp=act_n, active_dot=act_d,
                            dtype=str(np.dtype(options.dtype)), seed=int(seed), path=tuple(path),
                            linear=linear, high_width=high)


@dataclass(frozen=True)
class ActivationSketch(LayerSketch):
    """Planned sketch face of an activation (see the module docstring).

    A small hashable spec: the activation, incoming widths, output shape, degree, the
    resolved method (``"hermite"``, ``"random"``, ``"mix"`` or ``"relu-random"``), the
    nonzero Hermite degrees, dtype, seed, path and whether degree 1 is an exact block.
    Random maps are primitive specs derived from it; they cache their matrices per device.
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
    linear: bool = False
    high_width: int = 0

    # --------------------------------------------------------------- random maps
    @property
    def _m(self) -> int:
        return self.out.nngp

    @property
    def _width(self) -> int:
        """Columns shared by the signed sum (after the constant and the exact linear block)."""
        return self._m - 1 - (self.w_in if self.linear else 0)

    @property
    def _poly_top(self) -> int:
        """Highest Hermite degree estimated by PolySketch (the rest is exact or Monte-Carlo)."""
        if self.method == "hermite":
            return self.degree
        if self.method == "mix":
            return min(self.degree, MIX_DEGREE + int(self.linear))
        return 0

    def _poly_degrees(self, active):
        low = 2 if self.linear else 1
        return {l for l in active if low <= l <= self._poly_top}

    def _poly(self):
        top = max(self._poly_degrees(self.active_nngp + self.active_dot), default=0)
        if top == 0:
            return None
        # per-pixel inputs are Conv outputs (Hadamard-mixed per offset): wide ones are folded,
        # and degrees of little coefficient mass are narrowed (see high_degree_width)
        spatial = bool(self.out.spatial)
        return PolySketch(self.w_in, self._m, top, self.seed, self.path + ("poly",),
                          fold=spatial, high_width=self.high_width if spatial else 0)

    def _mix(self, which: str):
        """Signed sum of the degree blocks (and the Monte-Carlo block, term ``degree + 1``)."""
        if self.method == "hermite":
            return SignedSum(self._m - 1, self.degree + 1, self.seed, self.path + (which,))
        return SignedSum(self._width, self.degree + 2, self.seed, self.path + (which, self.method))

    def _gaussian(self):
        """Gaussian directions of the Monte-Carlo block (shared by both branches)."""
        return GaussianProjection(self.w_in, self._width, self.seed, self.path + ("mc",))

    def _expand(self):
        """NTK features are first brought to width m (see ``__call__``)."""
        if self.out.ntk == 0 or self.w_ntk_in == self._m:
            return None
        if self.w_ntk_in > self._m:
            return FitWidth(self.w_ntk_in, self._m, self.seed, self.path + ("ntk-fold",),
                            check=False, blocks=True)
        return SRHT(self.w_ntk_in, self._m, self.seed, self.path + ("ntk-expand",))

    def _tensor(self):
        if self.out.ntk == 0:
            return None
        return TensorSRHT(self._m, self._m, self._m, self.seed, self.path + ("ntk",))

    # ----------------------------------------------------------------- the map
    def __call__(self, f: Features) -> Features:
        xp = get_namespace(f.nngp)
        dt = np.dtype(self.dtype)
        x = f.nngp.astype(dt, copy=False)
        if self.method == "relu-random":
            nngp, dot = self._random_features(x)
        else:
            nngp, dot = self._series_features(x, f.var)
        if self.out.ntk:
            a = f.ntk.astype(dt, copy=False)
            expand = self._expand()
            if isinstance(expand, SRHT):
                # TensorSRHT pairs Hadamard coordinates of both factors; a factor of few
                # coordinates (e.g. the input features) leaves few distinct values and a
                # high variance. An SRHT to width m (an isometry when m is a multiple of
                # its padded width) spreads it first.
                a = expand(a, check=False)
            elif expand is not None:
                # Wider ones ([σ_W·ntk, nngp] after a Dense) are summed in SRHT-rotated
                # blocks of width m: the TensorSRHT then uses every Hadamard coordinate of
                # the factor once, where a 4m-padded factor would keep a quarter of them
                # (measured, m = 4096: erf depth-2 NTK at inputs ×100 0.22 → 0.19).
                a = expand(a)
            ntk = self._tensor()(a, dot, check=False)
        else:
            ntk = xp.zeros(x.shape[:-1] + (0,), dtype=dt)
        var_new = self.act.diagonal(f.var)[0]
        return Features(nngp=nngp, ntk=ntk, var=var_new)

    def _series_features(self, x, var):
        """NNGP and derivative features from the Hermite series (methods other than relu-random)."""
        xp = get_namespace(x)
        dt = x.dtype
        m, width = self._m, self._width
        lead = x.shape[:-1]
        sq = x.astype(xp.float64)
        sq *= sq
        norm = xp.sqrt(xp.sum(sq, axis=-1, keepdims=True))
        del sq
        xhat = (x / xp.where(norm > 0, norm, 1).astype(dt)).astype(dt, copy=False)
        x2 = xhat.reshape(-1, self.w_in)
        var = xp.maximum(xp.asarray(var, dtype=xp.float64), 0).reshape(-1)
        if self.method == "hermite":
            R, Rdot = folded_expansion(self.act, var, self.degree)
        else:
            R, Rdot = self.act.expansion(var, self.degree)
        outs = {"nngp": (R, self.active_nngp)}
        if self.out.ntk:
            outs["dot"] = (Rdot, self.active_dot)
        rows = x2.shape[0]
        res = {}
        for which, (coef, _) in outs.items():
            out = xp.empty((rows, m), dtype=dt)
            out[:, 0] = coef[:, 0]
            if self.linear:
                out[:, 1:1 + self.w_in] = x2 * coef[:, 1:2].astype(dt)
            res[which] = out
        mixes = {which: self._mix("mix-" + which) for which in outs}
        acc = {which: None for which in outs}
        # Each degree's S_l x̂ leaves the tree once and feeds both outputs: its first
        # ``width`` coordinates (each carries 1/m of ⟨x̂, ŷ⟩ˡ, hence the rescale) are added
        # under independent random signs per degree and output (cross terms have mean zero).
        needed = sorted(set().union(*(self._poly_degrees(active) for _, active in outs.values())))
        if needed:
            for l, s_l in self._poly().iter_degrees(x2, needed):
                head = s_l[:, :width]
                cut = math.sqrt(s_l.shape[1] / head.shape[1])
                for which, (coef, active) in outs.items():
                    if l in self._poly_degrees(active):
                        c = (coef[:, l:l + 1] * cut).astype(dt)
                        acc[which] = mixes[which].add(acc[which], l, head, c)
                del s_l, head
        if self.method != "hermite":
            z = self._gaussian()(x2.astype(np.float64), check=False) * math.sqrt(width)
            u = xp.sqrt(var)[:, None] * z
            values = self.act.dual_both(u) if self.out.ntk else (self.act.dual_fn(u),)
            if len(values) == 2 and values[0] is values[1]:  # each residual overwrites its own
                values = (values[0], values[1].copy())
            del u
            top = max(self._poly_top, int(self.linear))   # degrees not left to the MC block
            for (which, (coef, _)), v in zip(outs.items(), values):
                block = _residual(v, z, coef, top)
                block /= math.sqrt(width)
                acc[which] = mixes[which].add(acc[which], self.degree + 1, block.astype(dt))
            del z, values
        for which in outs:
            res[which][:, m - width:] = 0 if acc[which] is None else acc[which]
        if "dot" in res and self.method != "hermite":
            # Exact self-kernel of the derivative branch: at large variances φ' is a narrow
            # bump and Monte-Carlo estimates of E[φ'(u)²] are the noisiest entries (they
            # dominate Θ ⊙ E[φ'φ']); rows are rescaled to their exact norm (a row-wise
            # factor 1 + O(m^-1/2): a bias of order 1/m off the diagonal).
            target = self.act.diagonal(var)[1]
            check_resolved(self.act, self.method, res["dot"], target, var)
            res["dot"] = _rescale_rows(res["dot"], target)
        nngp = res["nngp"].reshape(lead + (m,))
        dot = res["dot"].reshape(lead + (m,)) if self.out.ntk else None
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


def check_resolved(act, method: str, f, target, var) -> None:
    """Refuse derivative features whose Monte-Carlo block missed φ' (huge variances).

    At a pre-activation variance ``v`` a saturating activation's φ' is a bump of width
    ~1/√v, and a row's ``width`` Gaussian samples stop hitting it once √v approaches the
    width: the row's features then carry a tiny fraction of E[φ'²] and rescaling them to
    it (:func:`_rescale_rows`) makes every such row point the same way — a kernel off by
    more than 100% although each diagonal is right (erf at inputs ×10⁶: relative Frobenius
    1.7).  A row whose raw squared norm is off from the exact one by more than
    :data:`MC_RESOLVE` × raises ``InvalidInputError`` naming the variance and the remedy
    (``method="hermite"`` follows the kernel at every scale: the series is folded exact on
    the diagonal and tends to the arcsine limit), never a silently wrong map.
    """
    xp = get_namespace(f)
    got = xp.sum(f.astype(xp.float64) ** 2, axis=-1)
    target = xp.maximum(xp.asarray(target, dtype=xp.float64), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        off = xp.where(target > 0, xp.maximum(target / got, got / target), 1.0)
    bad = ~(off <= MC_RESOLVE)
    if not bool(xp.any(bad)):
        return
    v = float(xp.max(xp.where(bad, var, 0)))
    raise InvalidInputError(
        f"{type(act).__name__} sketch (method {method!r}): the Monte-Carlo block cannot "
        f"resolve the derivative at pre-activation variance {v:.3g} (standard deviation "
        f"{math.sqrt(v):.3g}: the input rows are too large for this sketch): the features "
        f"of {int(xp.sum(bad))} row(s) would be wrong; use method='hermite' (it follows the "
        f"kernel at every scale) or standardize the input rows")


def _rescale_rows(f, target):
    """Rows of ``f`` scaled to squared norms ``target`` (zero rows stay zero)."""
    xp = get_namespace(f)
    got = xp.sum(f.astype(xp.float64) ** 2, axis=-1)
    scale = xp.sqrt(xp.maximum(target, 0) / xp.where(got > 0, got, 1))
    return f * xp.where(got > 0, scale, 1).astype(f.dtype)[:, None]


def _residual(values, z, coef, top: int):
    """``φ(√v z) − Σ_{l≤top} R_l(v) He_l(z)/√(l!)`` per row from ``values = φ(√v z)``
    (``z``: rows × k, ``v``: rows; ``values`` may be overwritten).

    For unit rows ``z = x̂·g`` is N(0, 1) and E[r_x(z_x) r_y(z_y)] = Σ_{l>top} R_l(v_x)
    R_l(v_y) ρ^l: the Hermite tail of the dual, whatever the activation.
    """
    return subtract_series(values, z, coef, top, overwrite=True)
