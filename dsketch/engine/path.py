"""The regularization path: pick ``α`` from a grid by k-fold CV or GCV, then solve.

Owns :func:`fit_path` (features in, the selected weights out: the Gram pass, the path, an
accuracy pass when asked, the final refit), :func:`ridge_path` (the same from a
:class:`.passes.Gram` alone), the choice between the **feature-space** form (the ``m × m``
Gram, per-fold Grams ``G − G_f``) and the **sample-space** form (for in-memory ``Φ`` with
fewer rows than features: the ``n × n`` kernel ``ΦΦᵀ``, folds as its sub-blocks,
``W = Φᵀ(K + αI)⁻¹Y``) or, for in-memory features wider than
:data:`.holdout.HOLDOUT_MIN_FEATURES`, the grid on one hold-out fold (:mod:`.holdout`), CV
scoring (``"neg_mean_squared_error"`` in closed form from the Grams, ``"accuracy"`` from
validation predictions — for a dask ``Φ`` one extra pass, tasks ``dsketch-cv-score``), and
:class:`AlphaGridWarning` for a choice at the grid's edge.

Must not stream over chunks itself (passes go through :func:`.passes.reduce_rows`) or
hold kernel maths; factorizations are :mod:`.linalg`'s.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from ..backend import (InvalidInputError, asnumpy, check_floats, check_int, get_namespace, is_cupy,
                       to_namespace)
from .cluster import current_client
from .holdout import HOLDOUT_MIN_FEATURES, holdout_refit, holdout_scores
from .linalg import EIGH_MIN_ALPHAS, RidgeSystem, check_weights, symmetrize_upper, syrk_acc
from .passes import (SLAB_ROWS, SPLIT_EVERY, Gram, as_targets, check_features, check_finite_sums,
                     check_folds, fmt_bytes, fold_ids, gram, reduce_rows, slabs)

__all__ = ["AlphaGridWarning", "RidgePath", "ridge_path", "fit_path", "choose_form",
           "score_chunk", "SCORINGS"]

#: Accepted ``scoring`` names (as in scikit-learn).
SCORINGS = ("neg_mean_squared_error", "accuracy")


class AlphaGridWarning(UserWarning):
    """The selected ``alpha`` is at an end of the grid: the optimum may lie beyond it."""


@dataclass
class RidgePath:
    """Result of :func:`ridge_path` / :func:`fit_path`: weights ``W`` (m, k) at ``alpha``.

    ``form`` is ``"feature"`` or ``"sample"``; ``timings`` holds seconds per phase.
    """

    W: np.ndarray
    alpha: float
    cv_results: dict | None = None
    posterior_factor: np.ndarray | None = None
    form: str = "feature"
    reason: str = ""
    timings: dict = field(default_factory=dict)


# =========================================================================== helpers
def _check_scoring(scoring) -> str:
    scoring = "neg_mean_squared_error" if scoring is None else scoring
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {SCORINGS} or None, got {scoring!r}")
    return scoring


def _curve(errs, sizes, alphas, scores=None, name="neg_mean_squared_error"):
    """cv_results from per-fold MSEs ``errs`` (F, A) and, for accuracy, ``scores``."""
    w = np.asarray(sizes, dtype=float)
    mean_mse = (w[:, None] * errs).sum(axis=0) / w.sum()
    res = {"alphas": [float(a) for a in alphas], "mean_test_mse": mean_mse.tolist(),
           "std_test_mse": errs.std(axis=0).tolist()}
    for f in range(len(errs)):
        res[f"split{f}_test_mse"] = errs[f].tolist()
    sc = -errs if scores is None else scores
    res["scoring"] = name
    res["mean_test_score"] = ((w[:, None] * sc).sum(axis=0) / w.sum()).tolist()
    res["std_test_score"] = sc.std(axis=0).tolist()
    for f in range(len(sc)):
        res[f"split{f}_test_score"] = sc[f].tolist()
    return res


def _select(res: dict, alphas) -> float:
    """The alpha of the best mean score (ties: the lower CV MSE, then the first); warns at
    an end of the grid."""
    score = np.asarray(res["mean_test_score"])
    mse = np.asarray(res.get("mean_test_mse", -score))
    best = np.flatnonzero(score == score.max())
    j = int(best[np.argmin(mse[best])])
    if len(alphas) > 1 and j in (0, len(alphas) - 1):
        side = "smallest" if j == 0 else "largest"
        warnings.warn(f"the selected alpha={alphas[j]:g} is the {side} of the grid "
                      f"{[float(f'{a:.4g}') for a in alphas]}; the best alpha may lie beyond it: "
                      f"extend the grid {'downwards' if j == 0 else 'upwards'}",
                      AlphaGridWarning, stacklevel=2)
    return float(alphas[j])


def _labels(Y):
    return Y.argmax(axis=1)


# ============================================================== feature-space form
def _sq_err(W, Bv, Gv, yyv) -> float:
    """Σ‖Y_v − Φ_v W‖² from the validation fold's sums alone."""
    return float(np.sum(yyv) - 2.0 * np.sum(W * Bv) + np.sum(W * (Gv @ W)))


def _feature_cv(g: Gram, alphas, keep_weights: bool):
    """Per-fold MSE (F, A) from the per-fold Grams, and the weights W_f(α) if asked."""
    F, t = len(g.G_folds), g.B.shape[1]
    errs = np.empty((F, len(alphas)))
    Ws = []
    for f in range(F):
        system = RidgeSystem(g.G - g.G_folds[f], len(alphas))
        Btr = g.B - g.B_folds[f]
        for j, a in enumerate(alphas):
            W = system.solve(float(a), Btr)
            errs[f, j] = max(_sq_err(W, g.B_folds[f], g.G_folds[f], g.yy_folds[f]), 0.0)
            if keep_weights:
                Ws.append(W)
        errs[f] /= max(g.n_folds[f] * t, 1)
    return errs, Ws


def _gcv(system: RidgeSystem, B, yy, G, n, alphas, sample: bool):
    """GCV n·RSS/(n − df)² per alpha; ``sample``: ``system`` is on the n × n kernel."""
    t = B.shape[1]
    out = np.empty(len(alphas))
    for j, a in enumerate(alphas):
        a = float(a)
        if sample:  # residual Y − K(K + αI)⁻¹Y = α(K + αI)⁻¹Y
            rss = a * a * float(np.sum(system.solve(a, B) ** 2))
            df = n - a * system.trace_inv(a)
        else:
            W = system.solve(a, B)
            rss = _sq_err(W, B, G, yy)
            df = G.shape[0] - a * system.trace_inv(a)
        out[j] = n * max(rss, 0.0) / t / max(n - df, 1e-12) ** 2
    return out


def _gcv_results(scores, alphas):
    return {"alphas": [float(a) for a in alphas], "gcv_mse": scores.tolist(),
            "scoring": "neg_mean_squared_error", "mean_test_score": (-scores).tolist()}


def score_chunk(phi, y, w, rows, *, n_folds: int, fold_seed: int, n_alphas: int, slab: int):
    """Correct validation labels per (fold, alpha) of one chunk, a (1, F·A) float64 row.

    ``w`` stacks the fold weights ``W_f(α)`` as ``(m, F·A·k)`` (fold-major); a row of fold
    ``f`` is predicted by its own fold's weights only; labels are ``argmax`` of ``y``.
    """
    xp = get_namespace(phi)
    k = y.shape[1]
    A = n_alphas
    W = to_namespace(np.asarray(w, dtype=np.float64), xp)
    fid = fold_ids(phi.shape[0], n_folds, fold_seed, int(np.asarray(rows).ravel()[0]))
    hits = np.zeros((n_folds, A))
    for sl in slabs(phi.shape[0], slab):
        P = phi[sl].astype(xp.float64, copy=False)
        lab = _labels(np.asarray(asnumpy(y[sl]), dtype=np.float64))
        for f in range(n_folds):
            idx = np.nonzero(fid[sl] == f)[0]
            if idx.size == 0:
                continue
            pred = P[to_namespace(idx, xp)] @ W[:, f * A * k:(f + 1) * A * k]
            guess = asnumpy(pred.reshape(idx.size, A, k).argmax(axis=2))
            hits[f] += (guess == lab[idx, None]).sum(axis=0)
    return hits.reshape(1, -1)


def _accuracy_pass(Phi, Y2, Ws, F, A, fold_seed, client, split_every, slab_rows, progress):
    Wst = np.concatenate(Ws, axis=1)
    hits = reduce_rows(score_chunk, "dsketch-cv-score", Phi, Y=Y2, V=Wst, rows=True, P=F * A,
                       client=client, split_every=split_every, progress=progress, by_slabs=True,
                       n_folds=F, fold_seed=int(fold_seed), n_alphas=A, slab=int(slab_rows))
    return hits.reshape(F, A)


def ridge_path(gram: Gram, alphas, *, posterior: bool = False) -> RidgePath:
    """Select alpha from a grid by CV MSE (folds) or GCV, from ONE Gram, and solve.

    Parameters
    ----------
    gram : Gram
        With per-fold sums (``gram(..., n_folds=F)``) a grid is scored by F-fold CV: fold
        ``f`` trains on ``G − G_f`` and is validated in closed form for every alpha.
        Without folds, by generalized CV (GCV).
    alphas : array of float
        One value (no selection) or a grid; the best mean score wins (ties: the lower CV
        MSE, then the smaller alpha); a choice at an end of a grid warns
        (:class:`AlphaGridWarning`).
    posterior : bool
        Also return ``posterior_factor`` ``S`` with ``SSᵀ = α(ΦᵀΦ + αI)⁻¹``, so that
        ``α·φᵀ(ΦᵀΦ + αI)⁻¹φ = ‖φᵀS‖²`` (see :func:`.solve.predict_std`).

    Returns
    -------
    RidgePath
        ``cv_results``: ``alphas``, ``mean_test_mse``, ``std_test_mse``,
        ``split{f}_test_mse`` and the same as ``*_test_score`` (= −MSE), or ``gcv_mse``;
        None for a single alpha.  Solves are one Cholesky per alpha (one ``eigh`` for
        grids longer than :data:`.linalg.EIGH_MIN_ALPHAS`).
    """
    return _gram_path(gram, np.atleast_1d(np.asarray(alphas, dtype=np.float64)), posterior,
                      None)


def _gram_path(g: Gram, alphas, posterior, accuracy) -> RidgePath:
    """Feature-space path; ``accuracy(Ws) -> hits (F, A)`` scores by accuracy if given."""
    t0 = time.perf_counter()
    grid = alphas.size > 1
    cv_results = None
    system = None
    check_finite_sums(None, None, [g.G], [g.B, g.yy], "the Gram given to the ridge path")
    if grid and g.G_folds is not None:
        errs, Ws = _feature_cv(g, alphas, keep_weights=accuracy is not None)
        if accuracy is not None:
            t1 = time.perf_counter()
            acc = accuracy(Ws) / np.asarray(g.n_folds, dtype=float)[:, None].clip(1)
            del Ws
            cv_results = _curve(errs, g.n_folds, alphas, acc, "accuracy")
            cv_results["score_pass_s"] = time.perf_counter() - t1
        else:
            cv_results = _curve(errs, g.n_folds, alphas)
    elif grid:
        system = RidgeSystem(g.G, len(alphas))
        cv_results = _gcv_results(_gcv(system, g.B, g.yy, g.G, g.n, alphas, False), alphas)
    alpha = _select(cv_results, alphas) if grid else float(alphas[0])
    if system is None:
        system = RidgeSystem(g.G, 1)
    W = check_weights(system.solve(alpha, g.B), f"the ridge path's solve (alpha={alpha:g})")
    factor = system.posterior_factor(alpha) if posterior else None
    return RidgePath(W=W, alpha=alpha, cv_results=cv_results, posterior_factor=factor,
                     form="feature", timings={"path_s": time.perf_counter() - t0})


# =============================================================== sample-space form
def choose_form(n: int, m: int, k: int, n_folds: int, n_alphas: int, *, in_memory: bool,
                posterior: bool) -> tuple[str, str]:
    """``("feature" | "sample", reason)`` by counting flops of the two forms.

    feature: ``n·m²`` (Gram) + per fold and alpha a Cholesky ``m³/3`` (for long grids one
    ``eigh`` per fold, counted as :data:`.linalg.EIGH_MIN_ALPHAS` Choleskys; one fold above
    :data:`.holdout.HOLDOUT_MIN_FEATURES` in memory) + the refit ``m³/3``.  sample
    (in-memory ``Φ`` only, no posterior factor): ``n²·m`` (kernel) + the same per fold on
    ``n_f × n_f`` blocks + the refit ``n³/3 + n·m·k``.
    """
    F, A = max(int(n_folds or 0), 1), max(int(n_alphas), 1)
    n_tr = n * (F - 1) / F if n_folds else n
    # the feature form of an in-memory Φ this wide scores one hold-out fold (:mod:`.holdout`)
    F_feat = 1 if (in_memory and n_folds and m > HOLDOUT_MIN_FEATURES) else F

    def path(s, folds=F):
        return folds * min(A, EIGH_MIN_ALPHAS) * s ** 3 / 3.0

    feat = n * m * m + (path(m, F_feat) if A > 1 else 0.0) + m ** 3 / 3.0
    samp = n * n * m + (path(n_tr) if A > 1 else 0.0) + n ** 3 / 3.0 + n * m * k
    if not in_memory:
        return "feature", "feature space: Φ is distributed (one Gram pass)"
    if posterior:
        return "feature", "feature space: posterior_std needs the m×m factor"
    if samp < feat:
        return "sample", (f"sample space: n={n} rows < m={m} features, the n×n kernel path "
                          f"costs {samp / feat:.2g}× the m×m Gram path")
    return "feature", f"feature space: n={n} ≥ m={m} or the m×m path is cheaper"


def _sample_path(Phi, Y, alphas, n_folds, fold_seed, scoring) -> RidgePath:
    """Sample-space path on an in-memory ``Φ`` (NumPy): kernel ``K = ΦΦᵀ`` in float64."""
    t0 = time.perf_counter()
    P = np.asarray(Phi, dtype=np.float64)
    check_finite_sums(P, Y, [P], [Y], "the sample-space path")
    K = np.zeros((P.shape[0], P.shape[0]), order="F")
    syrk_acc(K, P.T)  # ΦΦᵀ, tiled above SYRK_MAX rows (one large syrk segfaults here)
    K = symmetrize_upper(K)
    check_finite_sums(P, Y, [K], [], "the sample-space kernel ΦΦᵀ")
    n, t = Y.shape
    grid = alphas.size > 1
    cv_results = None
    system = None
    if grid and n_folds:
        ids = fold_ids(n, n_folds, fold_seed)
        check_folds(n, n_folds, np.bincount(ids, minlength=n_folds).tolist())
        errs = np.empty((n_folds, len(alphas)))
        acc = np.empty_like(errs)
        sizes = []
        lab = _labels(Y)
        for f in range(n_folds):
            tr, va = np.flatnonzero(ids != f), np.flatnonzero(ids == f)
            sizes.append(va.size)
            sys_f = RidgeSystem(K[np.ix_(tr, tr)], len(alphas))
            Kvt = K[np.ix_(va, tr)]
            for j, a in enumerate(alphas):
                pred = Kvt @ sys_f.solve(float(a), Y[tr])
                errs[f, j] = np.sum((Y[va] - pred) ** 2) / max(va.size * t, 1)
                acc[f, j] = np.mean(pred.argmax(axis=1) == lab[va]) if va.size else 0.0
        cv_results = (_curve(errs, sizes, alphas, acc, "accuracy") if scoring == "accuracy"
                      else _curve(errs, sizes, alphas))
    elif grid:
        system = RidgeSystem(K, len(alphas))
        cv_results = _gcv_results(_gcv(system, Y, None, None, n, alphas, True), alphas)
    alpha = _select(cv_results, alphas) if grid else float(alphas[0])
    if system is None:
        system = RidgeSystem(K, 1)
    W = check_weights(P.T @ system.solve(alpha, Y), f"the ridge path's solve (alpha={alpha:g})")
    return RidgePath(W=W, alpha=alpha, cv_results=cv_results, form="sample",
                     timings={"path_s": time.perf_counter() - t0})


# ===================================================================== hold-out form
def _holdout(Phi, Y, alphas, F, fold_seed, scoring, slab_rows, reason) -> RidgePath:
    """The grid on one hold-out fold (:mod:`.holdout`): two ``m × m`` arrays, not ``F + 1``."""
    m = Phi.shape[1]
    g, errs, accs, timings = holdout_scores(Phi, Y, alphas, n_folds=F, fold_seed=fold_seed,
                                            slab_rows=slab_rows)
    sizes = [len(g.val)]
    cv_results = (_curve(errs, sizes, alphas, accs, "accuracy") if scoring == "accuracy"
                  else _curve(errs, sizes, alphas))
    cv_results["holdout"] = True
    alpha = _select(cv_results, alphas)
    t0 = time.perf_counter()
    W = holdout_refit(g, Phi, Y, alpha, slab_rows=slab_rows)
    timings["path_s"] += time.perf_counter() - t0
    why = (f"{reason}; alpha on a hold-out fold (fold 0 of {F}, {len(g.val)} of {Phi.shape[0]} "
           f"rows): m={m} > {HOLDOUT_MIN_FEATURES} features, so {F}-fold CV's {F + 1} Grams "
           f"({fmt_bytes((F + 1) * 8.0 * m * m)}) are not formed; one Gram and one factor "
           f"({fmt_bytes(2 * 8.0 * m * m)})")
    return RidgePath(W=W, alpha=alpha, cv_results=cv_results, form="feature", reason=why,
                     timings=timings)


# ============================================================================ entry
def fit_path(Phi, Y, alphas, *, n_folds: int | None = None, fold_seed: int = 0,
             scoring: str | None = None, posterior: bool = False, form: str = "auto",
             client=None, split_every: int = SPLIT_EVERY, slab_rows: int = SLAB_ROWS,
             progress: bool | None = None, phase=None) -> RidgePath:
    """Ridge weights at the alpha a grid selects, straight from the features.

    Parameters
    ----------
    Phi : dask.array.Array or array
        ``(n, m)`` features, lazy (one Gram pass on the cluster, plus one scoring pass for
        ``scoring="accuracy"``) or in memory.
    Y : array-like
        ``(n,)`` or ``(n, k)`` targets; for ``"accuracy"`` a one-vs-rest encoding whose
        row ``argmax`` is the class (±1 or one-hot).
    alphas : float or array of float
        One value (no selection) or a grid.
    n_folds : int, optional
        k-fold CV (rows to folds by :func:`.passes.fold_ids` with ``fold_seed``);
        None scores a grid by GCV (MSE only).  An in-memory ``Φ`` of more than
        :data:`.holdout.HOLDOUT_MIN_FEATURES` features is scored on fold 0 alone
        (:mod:`.holdout`: two ``m × m`` arrays instead of ``k + 1`` Grams), said in
        ``reason``; ``cv_results["holdout"]`` is then True.
    scoring : {"neg_mean_squared_error", "accuracy", None}
        None means MSE.  The best mean score over folds (weighted by fold size) wins.
    posterior : bool
        Also return the posterior factor (feature space).
    form : {"auto", "feature", "sample"}
        ``"auto"``: :func:`choose_form`; ``"sample"`` needs an in-memory NumPy ``Φ``.
    phase : callable, optional
        ``phase(name)`` when the solve starts (``"solve"``), for progress reporting.

    Returns
    -------
    RidgePath
        ``timings``: ``gram_s`` (pass or kernel), ``path_s``, ``score_pass_s``; ``form``.
    """
    t0 = time.perf_counter()
    alphas = np.atleast_1d(check_floats(alphas, "alphas"))
    scoring = _check_scoring(scoring)
    grid = alphas.size > 1
    if not alphas.size or not np.all(np.isfinite(alphas)) or np.any(alphas < 0):
        raise InvalidInputError(f"alphas must be finite and non-negative, got {alphas.tolist()}")
    F = check_int(n_folds, "n_folds", minimum=2) if (grid and n_folds is not None) else 0
    if scoring == "accuracy" and grid and not F:
        raise InvalidInputError("scoring='accuracy' needs CV folds (n_folds ≥ 2); GCV scores MSE only")
    Phi = check_features(Phi)
    Y2, _ = as_targets(Y, Phi)
    lazy = isinstance(Phi, da.Array)
    n, m, k = int(Phi.shape[0]), int(Phi.shape[1]), int(Y2.shape[1])
    if F:
        check_folds(n, F)
    in_memory = not lazy and not is_cupy(Phi)
    if form == "auto":
        form, reason = choose_form(n, m, k, F, alphas.size, in_memory=in_memory,
                                   posterior=posterior)
    elif form == "sample" and (not in_memory or posterior):
        raise ValueError("form='sample' needs an in-memory NumPy Φ and posterior=False")
    elif form in ("feature", "sample"):
        reason = f"form={form!r} requested"
    else:
        raise ValueError(f"form must be 'auto', 'feature' or 'sample', got {form!r}")
    if form == "sample":
        if phase:
            phase("solve")
        out = _sample_path(Phi, Y2, alphas, F, fold_seed, scoring)
        out.timings = {"gram_s": 0.0, **out.timings}
        out.reason = reason
        return out
    if F and in_memory and not posterior and m > HOLDOUT_MIN_FEATURES:
        if phase:
            phase("solve")
        return _holdout(Phi, Y2, alphas, F, fold_seed, scoring, slab_rows, reason)
    client = current_client(client) if lazy else None
    g = gram(Phi, Y2, n_folds=F or None, fold_seed=fold_seed, client=client,
             split_every=split_every, slab_rows=slab_rows, progress=progress)
    t_gram = time.perf_counter() - t0
    if phase:
        phase("solve")
    accuracy = None
    if scoring == "accuracy" and F:
        def accuracy(Ws):
            return _accuracy_pass(Phi, Y2, Ws, F, alphas.size, fold_seed, client, split_every,
                                  slab_rows, progress)
    out = _gram_path(g, alphas, posterior, accuracy)
    out.timings = {"gram_s": t_gram, **out.timings}
    out.reason = reason
    if out.cv_results and "score_pass_s" in out.cv_results:
        out.timings["score_pass_s"] = out.cv_results.pop("score_pass_s")
    return out
