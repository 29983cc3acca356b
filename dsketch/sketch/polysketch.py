"""The PolySketch tree of Ahle et al. (real and complex-to-real) and dot-product kernel sketches.

Owns

- :class:`PolySketch` and :class:`CtRPolySketch`: one binary tree of tensor sketches that
  gives every degree ``1 ≤ l ≤ p`` with ``E⟨S_l x, S_l y⟩ = ⟨x, y⟩ˡ``; their public
  per-degree iterator :meth:`~PolySketch.iter_degrees` streams the degrees out of the tree
  one at a time;
- :class:`DotProductSketch`: features with ``E⟨f(x), f(y)⟩ = Σ_l c_l ⟨x, y⟩ˡ``.

Built from :mod:`.linear` (leaves, output SRHTs) and :mod:`.tensor` (nodes); same spec
conventions (last axis, NumPy/CuPy, dtype-preserving, host draws from
``rng(seed, *path, ...)``, ``check=False`` for internal callers). Must not import Dask and
holds no random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import check_int, get_namespace, pairs_matmul
from ._base import (
    RandomSpec,
    as_rows,
    check_sparse,
    check_spec,
    float_dtype,
    is_sparse,
    pos_int,
    prepare_input,
)
from .hadamard import next_pow2
from .linear import SRHT, ComplexSRHT, CountSketch, SignedSum
from .tensor import ComplexTensorSRHT, TensorSRHT, ctr_real

__all__ = ["PolySketch", "CtRPolySketch", "DotProductSketch"]


class _TreeMixin(RandomSpec):
    """Ahle et al. binary tree shared by :class:`PolySketch` and :class:`CtRPolySketch`.

    ``q = 2^⌈log₂ p⌉`` leaf slots, ``log₂ q`` levels of tensor nodes. The sketch of degree
    ``l`` is the tree applied to ``x^{⊗l} ⊗ e^{⊗(q−l)}``: slots ``0..l−1`` see ``x``, the
    others a fixed unit vector ``e``, so ``E⟨S_l x, S_l y⟩ = ⟨x,y⟩ˡ``. Node ``(k, j)`` with
    ``r`` of its ``2^k`` slots on ``x`` is computed once per distinct ``r`` and shared by
    every degree that needs it.

    Three savings over the literal tree, none of which changes any degree's Gram matrix in
    distribution:

    - *constant subtrees*: a subtree that only sees ``e`` is replaced by the unit vector
      ``e₀``; ``H D e₀`` is a constant ±1 (a phase for complex signs) per sign block, so a node
      whose second factor is constant is ``±`` its first factor's transform;
    - *pass-through*: that transform of a width-``d_out`` value is an isometry up to the
      gather and adds no information, so a node with ``r ≤ 2^{k−1}`` passes its left child's
      value up unchanged (a degree-``l`` sketch costs its own products only);
    - *no leaf sketches* for dense input (``leaf="srht"``): the first-level nodes are
      TensorSRHTs of ``x`` itself (``d_in × d_in → d_out``), whose Hadamard transforms of
      ``x`` do what the leaf SRHTs did. ``leaf="countsketch"`` keeps CountSketch leaves
      (input-sparsity time, sparse input) below nodes of width ``d_out``; degree 1 alone
      (``p = 1``) is the single leaf. With ``fold=True`` (:class:`PolySketch`) inputs padded
      wider than ``d_out`` enter those nodes folded (``TensorSRHT(fold=True)``): one
      transform of width ``≈ d_out`` each. A fold adds coordinate pairs (i, i + n): fit for
      incoherent inputs (Hadamard-mixed features), not for ones with heavy coordinates
      (a bias or constant column next to features: measured worse on FC nets at m = 4096).

    All degrees ``1..p`` then cost ``≈ p·log₂q`` width-``d_out`` transforms (19 for
    ``p = 8``; 7, four of them of width ``n = 2^⌈log₂ d_in⌉``, or ``≈ d_out`` folded, for ``p = 4``).
    """

    hadamard_bound = True

    def _leaf_spec(self, i):  # pragma: no cover - interface
        raise NotImplementedError

    def _node_spec(self, k, j):  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def _q(self) -> int:
        return next_pow2(self.degree)

    @property
    def _levels(self) -> int:
        return self._q.bit_length() - 1

    @property
    def _direct(self) -> bool:
        """First-level nodes act on ``x`` itself (no leaf sketches)."""
        return self.leaf != "countsketch"

    def _node_width(self, k) -> int:
        """Input width of the full-width nodes of level ``k``."""
        return self.d_in if (k == 1 and self._direct) else self._width

    @property
    def _high(self) -> int:
        """Width of the degrees above ``q/2`` (``_width`` unless ``high_width`` narrows them)."""
        return min(getattr(self, "high_width", 0) or self._width, self._width)

    def _narrow(self, k, j) -> bool:
        """Whether node ``(k, j)`` works at :attr:`_high`: the root, and its right subtree
        (slots ``≥ q/2``), which only degrees above ``q/2`` use."""
        return self._high < self._width and (k == self._levels or (j << k) >= self._q // 2)

    def _out_width(self, k, j) -> int:
        """Output width of node ``(k, j)`` (``k = 0``: leaf ``j``)."""
        return self._high if (k > 0 and self._narrow(k, j)) else self._width

    def _node_inputs(self, k, j) -> tuple:
        """Input widths ``(d1, d2)`` of node ``(k, j)``."""
        if k == 1 and self._direct:
            return self.d_in, self.d_in
        return self._out_width(k - 1, 2 * j), self._out_width(k - 1, 2 * j + 1)

    def degree_width(self, l: int) -> int:
        """Width of ``S_l x`` (``d_out``; ``high_width`` for ``l > q/2`` when it narrows them)."""
        if self._high < self._width and self._levels and l > self._q // 2:
            return self._high
        return self.d_out

    def _build(self, xp, dtype):
        q = self._q
        if self._levels == 0 or not self._direct:
            leaves = tuple(self._leaf_spec(i) for i in range(q))
        else:
            leaves = ()
        nodes = {(k, j): self._node_spec(k, j)
                 for k in range(1, self._levels + 1) for j in range(q >> k)}
        return leaves, nodes

    def iter_degrees(self, x, degrees):
        """Yield ``(l, S_l x)`` for each of the sorted ``degrees``, streaming the tree.

        Parameters
        ----------
        x : array or sparse matrix
            Validated 2-D rows ``(R, d_in)`` of float32/float64 (as :meth:`evaluate` prepares
            them; no checks here). 2-D sparse rows with ``leaf="countsketch"``.
        degrees : sorted sequence of int
            Distinct degrees in ``1..degree``.

        Yields
        ------
        (int, array)
            ``l`` and ``S_l x`` ``(R, degree_width(l))`` (real; the complex-to-real output
            for :class:`CtRPolySketch`), in increasing ``l``; ``E⟨S_l x, S_l y⟩ = ⟨x, y⟩ˡ``.
            Yielded arrays may be reused by the tree afterwards: do not modify them in place.

        Notes
        -----
        Level by level, keeping only the node values still needed (a node's children are
        freed once it is done; the full left child's transform is shared by every degree
        that needs it): the peak is about one level's values plus two transforms,
        ``≈ (p + 2)·rows·width`` numbers.
        """
        data = x.data if is_sparse(x) else x
        xp, dt = get_namespace(data), float_dtype(data)
        leaves, nodes = self._params(xp, dt)
        top_level = self._levels
        if top_level == 0:  # degree 1: the single leaf
            yield 1, self._finish(leaves[0](x, check=False))
            return
        # keys (j, r) needed at each level: node j with its first r slots on x (r ≥ 1)
        need = {top_level: {(0, l) for l in degrees}}
        for k in range(top_level, 0, -1):
            half = 1 << (k - 1)
            below = set()
            for j, r in need[k]:
                below.add((2 * j, min(r, half)))
                if r > half:
                    below.add((2 * j + 1, r - half))
            need[k - 1] = below
        if self._direct:
            values = {key: x for key in need[0]}
        else:
            values = {key: leaves[key[0]](x, check=False) for key in sorted(need[0])}
        for k in range(1, top_level + 1):
            half = 1 << (k - 1)
            through = not (k == 1 and self._direct)  # children already have width d_out
            level: dict = {}
            for j in sorted({j for j, _ in need[k]}):
                node = nodes[(k, j)]
                full_left = None
                for r in sorted(r for jj, r in need[k] if jj == j):
                    if r <= half and through:
                        v = values[(2 * j, r)]
                    else:  # here r ≥ half; the left transform is shared by every r
                        if full_left is None:
                            full_left = node.transform(values[(2 * j, half)], 1)
                        if r > half:
                            v = node.transform_product(full_left, values[(2 * j + 1, r - half)])
                        else:
                            v = node.combine(full_left, None)
                    if k == top_level:
                        yield r, self._finish(v)
                    else:
                        level[(j, r)] = v
                    del v
                del full_left
                for key in [key for key in values if key[0] in (2 * j, 2 * j + 1)]:
                    del values[key]
            values = level

    def _input(self, x, check):
        """``(x2, lead, xp, dtype)``: 2-D rows (dense or sparse) and the leading shape."""
        name = type(self).__name__
        if is_sparse(x):
            if self.leaf != "countsketch":
                raise ValueError(f"{name}: sparse input needs leaf='countsketch'")
            x = check_sparse(x, self.d_in, name)
            return x, (x.shape[0],), get_namespace(x.data), float_dtype(x.data)
        x = prepare_input(x, self.d_in, name, check=check)
        x2, lead = as_rows(x, self.d_in)
        return x2, lead, get_namespace(x), x.dtype

    def _finish(self, y):
        """Root value → output features (identity; complex-to-real for the CtR tree)."""
        return y

    def evaluate(self, x, degrees, *, check: bool = True) -> dict:
        """``{l: S_l x}`` for the requested degrees ``1 ≤ l ≤ p`` only (shared tree work)."""
        degrees = sorted({int(l) for l in degrees})
        for l in degrees:
            if not 1 <= l <= self.degree:
                raise ValueError(f"{type(self).__name__}: degree {l} outside 1..{self.degree}")
        x2, lead, _, _ = self._input(x, check)
        return {l: v.reshape(lead + (self.degree_width(l),)) for l, v in self.iter_degrees(x2, degrees)}

    def top(self, x, *, check: bool = True):
        """``S_p x`` only, shape ``(..., d_out)``."""
        return self.evaluate(x, [self.degree], check=check)[self.degree]

    def __call__(self, x, *, check: bool = True) -> list:
        """``[ones (...,1), S_1 x, …, S_p x]``: a list of ``degree + 1`` arrays."""
        x2, lead, xp, dt = self._input(x, check)
        degrees = list(range(1, self.degree + 1))
        out = dict(self.iter_degrees(x2, degrees))
        return [xp.ones(lead + (1,), dtype=dt)] + [
            out[l].reshape(lead + (self.degree_width(l),)) for l in degrees]


@dataclass(frozen=True)
class PolySketch(_TreeMixin):
    """Ahle et al. (SODA 2020) polynomial sketch: all degrees ``1..p`` of ``x^{⊗l}``.

    Binary tree with ``q = 2^⌈log₂ p⌉`` leaves and TensorSRHT (width ``d_out``) at the
    internal nodes; leaves are ``SRHT(d_in → d_out)`` (default) or ``CountSketch`` (input-
    sparsity time; also accepts 2-D sparse input). Lower degrees come out of the same tree
    by Ahle et al.'s ``e₁`` trick (unused leaves see a fixed unit vector; here every
    all-``e`` subtree is replaced by the unit vector ``e₀`` of its output space, which makes
    the padding levels exact isometries — see ``_TreeMixin``), so ``__call__``
    returns ``[ones (...,1), S_1 x, …, S_p x]`` with ``E⟨S_l x, S_l y⟩ = ⟨x,y⟩ˡ``. Variance
    grows polynomially in ``p`` (tree depth ``log₂ p``), unlike the flat
    TensorSketch/TensorSRHT (exponential in ``p``).

    Cost per row (dense input): ``q`` Hadamard transforms of ``x`` (size ``n``, the padded
    ``d_in``) and about ``2(q/2 − 1)`` of width ``d_out`` for :meth:`top`, ``≈ p·log₂q`` for
    all degrees (see ``_TreeMixin``). ``fold=True``: first-level transforms of inputs padded
    wider than ``d_out`` cost one of width ``≈ d_out`` (``TensorSRHT(fold=True)``; for
    Hadamard-mixed inputs only, see ``_TreeMixin``). ``high_width`` (0: ``d_out``) narrows
    the degrees above ``q/2``: the root and its right subtree (slots ``≥ q/2``, used by those
    degrees only) work at that width, so for ``p = 8`` about half the transforms shrink
    (with ``fold``: to ``high_width``) while degrees ``≤ q/2`` are unchanged; each degree
    stays unbiased, those above ``q/2`` with the variance of width ``high_width`` (for
    dot-product kernels whose high degrees carry little mass, see
    :mod:`dsketch.nets.activation_sketch`). Draws: leaves at ``(*path, "leaf", i)``
    (CountSketch leaves, or the single SRHT when ``p = 1``), nodes at
    ``(*path, "node", level, j)``.
    """

    d_in: int
    d_out: int
    degree: int
    seed: int
    path: tuple = ()
    leaf: str = "srht"
    fold: bool = False
    high_width: int = 0

    def __post_init__(self):
        check_spec(self, "d_in", "d_out", "degree")
        check_int(self.high_width, "PolySketch: high_width", minimum=0)
        if self.leaf not in ("srht", "countsketch"):
            raise ValueError(f"PolySketch: leaf must be 'srht' or 'countsketch', got {self.leaf!r}")

    def _leaf_spec(self, i):
        cls = SRHT if self.leaf == "srht" else CountSketch
        return cls(self.d_in, self.d_out, self.seed, self.path + ("leaf", i))

    @property
    def _width(self) -> int:
        return self.d_out

    def _node_spec(self, k, j):
        d1, d2 = self._node_inputs(k, j)
        return TensorSRHT(d1, d2, self._out_width(k, j), self.seed, self.path + ("node", k, j),
                          fold=self.fold)


@dataclass(frozen=True)
class CtRPolySketch(_TreeMixin):
    """Complex-to-real PolySketch: the Ahle tree with complex Rademacher signs (Wacker et al.).

    Leaves are :class:`ComplexSRHT` and nodes :class:`ComplexTensorSRHT`, all of complex
    width ``c = ⌈d_out/2⌉``; each degree's complex sketch ``z_l`` satisfies
    ``E[Σ z_l(x) conj z_l(y)] = ⟨x,y⟩ˡ`` and ``E[Σ z_l(x) z_l(y)] = 0``, and is returned as
    ``d_out`` real features ``[Re z, Im z]`` (:func:`ctr_real`), whose inner product
    ``Re Σ z(x) conj z(y)`` is an unbiased estimator of ``⟨x,y⟩ˡ``. At equal output width
    its variance is lower than the real tree's for strongly correlated pairs (measured,
    d = 256, m = 64, ρ = 0.9: 0.067/0.076/0.092 vs 0.107/0.244/0.187 for p = 2/4/8) and
    about the same for weakly correlated ones. Same output list and cost profile as
    :class:`PolySketch` (complex arithmetic at half the width). Draws: leaves at
    ``(*path, "ctr-leaf", i)``, nodes at ``(*path, "ctr-node", level, j)``.
    """

    d_in: int
    d_out: int
    degree: int
    seed: int
    path: tuple = ()
    leaf: str = "srht"

    def __post_init__(self):
        check_spec(self, "d_in", "d_out", "degree")
        if self.leaf != "srht":
            raise ValueError(f"CtRPolySketch: leaf must be 'srht', got {self.leaf!r}")

    @property
    def _width(self) -> int:
        return (self.d_out + 1) // 2

    def _leaf_spec(self, i):
        return ComplexSRHT(self.d_in, self._width, self.seed, self.path + ("ctr-leaf", i))

    def _node_spec(self, k, j):
        w = self._node_width(k)
        return ComplexTensorSRHT(w, w, self._width, self.seed, self.path + ("ctr-node", k, j))

    def _finish(self, y):
        return ctr_real(y, self.d_out)


# ------------------------------------------------------------------ dot-product kernels
@dataclass(frozen=True)
class DotProductSketch(RandomSpec):
    """Features of a dot-product kernel ``k(x, y) = Σ_{l=0}^{p} c_l ⟨x, y⟩ˡ`` (all ``c_l ≥ 0``).

    One polynomial tree (:class:`PolySketch`, or :class:`CtRPolySketch` with
    ``method="ctr"``) of internal width ``width`` gives ``S_1 x, …, S_p x``; each block
    ``√c_l · S_l x`` (``c_l > 0``) is cut to its first ``d_out − 1`` coordinates (rescaled:
    every coordinate of a tree output carries the same share of the kernel) and the blocks
    are merged by a :class:`SignedSum` (independent ±1 diagonals ``D_l``), after the exact
    constant feature ``√c_0`` (when ``c_0 > 0``; otherwise all ``d_out`` features are the sum):

    ``f(x) = [√c_0, Σ_l √c_l D_l S_l x]``,  ``E⟨f(x), f(y)⟩ = Σ_l c_l ⟨x, y⟩ˡ`` exactly —
    the cross terms ``E⟨D_l a, D_k b⟩`` (``l ≠ k``) vanish.

    This is the NT PR #142 / Zandieh et al. construction (``expand_feats`` +
    ``standardsrht``) with the SRHT of the concatenated blocks replaced by the signed sum:
    an SRHT of full width is an isometry, so it adds nothing to the estimate that the
    signed sum does not already give, and the sum costs one multiply-add per entry instead
    of ``p`` transforms. Degrees stream out of the tree one at a time (memory: about one
    tree level). A ``width`` narrower than the output is spread by one SRHT of the sum
    (likewise an odd-width CtR tree, whose coordinates are not interchangeable).

    Parameters
    ----------
    d_in, d_out : int
        Input width and output width (``d_out ≥ 2`` when ``c_0 > 0``).
    coeffs : tuple of float
        ``(c_0, …, c_p)``, non-negative and finite, ``p ≥ 1``; trailing zeros are dropped.
    seed, path
        Draws: the tree at ``(*path, "tree")``, the signs at ``(*path, "mix")``, the SRHT of
        a narrow width at ``(*path, "fit")``.
    width : int or None
        Internal width of the tree (default ``d_out``).
    method : {"polysketch", "ctr"}
        Real tree or complex-to-real tree.
    leaf : {"srht", "countsketch"}
        Leaves of the real tree; ``"countsketch"`` also accepts 2-D sparse input.
    """

    hadamard_bound = True

    d_in: int
    d_out: int
    coeffs: tuple
    seed: int
    path: tuple = ()
    width: Any = None
    method: str = "polysketch"
    leaf: str = "srht"

    def __post_init__(self):
        check_spec(self, "d_in", "d_out")
        try:
            coeffs = tuple(float(c) for c in self.coeffs)
        except (TypeError, ValueError):
            raise ValueError(f"DotProductSketch: coeffs must be a sequence of numbers, "
                             f"got {self.coeffs!r}") from None
        if len(coeffs) < 2 or not all(math.isfinite(c) and c >= 0 for c in coeffs):
            raise ValueError("DotProductSketch: coeffs must hold ≥ 2 finite non-negative "
                             f"numbers (c_0..c_p), got {coeffs}")
        while len(coeffs) > 2 and coeffs[-1] == 0:
            coeffs = coeffs[:-1]
        if not any(coeffs[1:]):
            raise ValueError("DotProductSketch: all coefficients of degree ≥ 1 are zero")
        object.__setattr__(self, "coeffs", coeffs)
        if self.width is not None:
            pos_int(self, "width")
        if self.method not in ("polysketch", "ctr"):
            raise ValueError(f"DotProductSketch: method must be 'polysketch' or 'ctr', "
                             f"got {self.method!r}")
        if coeffs[0] > 0 and self.d_out < 2:
            raise ValueError("DotProductSketch: d_out must be ≥ 2 when coeffs[0] > 0")
        if self.leaf not in ("srht", "countsketch") or (
                self.method == "ctr" and self.leaf != "srht"):
            raise ValueError(f"DotProductSketch: leaf must be 'srht' or 'countsketch' "
                             f"('srht' with method='ctr'), got {self.leaf!r}")

    @property
    def degree(self) -> int:
        return len(self.coeffs) - 1

    @property
    def _active(self) -> tuple:
        return tuple(l for l in range(1, self.degree + 1) if self.coeffs[l] > 0)

    def _build(self, xp, dtype):
        w = self.width or self.d_out
        if self.method == "polysketch":
            tree = PolySketch(self.d_in, w, self.degree, self.seed, self.path + ("tree",),
                              leaf=self.leaf)
        else:
            tree = CtRPolySketch(self.d_in, w, self.degree, self.seed, self.path + ("tree",))
        n_out = self.d_out - (1 if self.coeffs[0] > 0 else 0)
        # cut to n_out coordinates (rescaled), or spread the narrow sum by one SRHT
        cut = w >= n_out and not (self.method == "ctr" and w % 2)
        keep = n_out if cut else w
        mix = SignedSum(keep, self.degree + 1, self.seed, self.path + ("mix",))
        fit = None if cut else SRHT(w, n_out, self.seed, self.path + ("fit",))
        return tree, mix, fit, math.sqrt(w / keep)

    def __call__(self, x, *, check: bool = True):
        """``(..., d_in) → (..., d_out)`` with ``E⟨f(x), f(y)⟩ = Σ c_l ⟨x,y⟩ˡ``.

        2-D sparse ``x`` is accepted with ``leaf="countsketch"``.
        """
        if is_sparse(x):
            if self.leaf != "countsketch":
                raise ValueError("DotProductSketch: sparse input needs leaf='countsketch'")
            x2 = check_sparse(x, self.d_in, type(self).__name__)
            return self.compose(x2, [math.sqrt(c) for c in self.coeffs])
        x = prepare_input(x, self.d_in, type(self).__name__, check=check)
        x2, lead = as_rows(x, self.d_in)
        f = self.compose(x2, [math.sqrt(c) for c in self.coeffs])
        return f.reshape(lead + (self.d_out,))

    def compose(self, x2, scales):
        """Features of validated 2-D rows with per-row degree weights (no input checks).

        Parameters
        ----------
        x2 : array or sparse matrix
            ``(R, d_in)`` float32/float64 rows (sparse with ``leaf="countsketch"``).
        scales : sequence
            ``scales[l]`` for ``l = 0..degree``: a scalar or an ``(R, 1)`` array.

        Returns
        -------
        array
            ``(R, d_out)`` with ``E⟨f(x), f(y)⟩ = Σ_l scales[l](x)·scales[l](y)·⟨x, y⟩ˡ``;
            degrees whose coefficient is zero are skipped whatever their scale (``__call__``
            uses ``scales = √c``; :class:`~dsketch.sketch.GaussianMaclaurin` per-row ones).
        """
        data = x2.data if is_sparse(x2) else x2
        xp = get_namespace(data)
        tree, mix, fit, rescale = self._params(xp, float_dtype(data))
        f = None
        for l, s_l in tree.iter_degrees(x2, self._active):
            scale = scales[l] * rescale
            f = mix.add(f, l, s_l[:, :mix.width], scale)
            del s_l
        if fit is not None:
            f = fit(f, check=False)
        if self.coeffs[0] > 0:
            c0 = xp.ones((f.shape[0], 1), dtype=f.dtype) * scales[0]
            f = xp.concatenate([c0.astype(f.dtype, copy=False), f], axis=-1)
        return f

    def kernel(self, x1, x2=None):
        """Exact ``Σ c_l ⟨x₁, x₂⟩ˡ`` (float64) for 2-D inputs."""
        x1 = prepare_input(x1, self.d_in, type(self).__name__, "x1").astype(np.float64)
        x2 = x1 if x2 is None else prepare_input(x2, self.d_in, type(self).__name__, "x2").astype(
            np.float64)
        g = pairs_matmul(x1, x2)
        k = 0.0
        for c in reversed(self.coeffs):  # Horner
            k = k * g + c
        return k
