"""The one ridge entry of the engine: features or a kernel system in, a :class:`RidgeFit` out.

Owns :func:`fit_ridge_model` (what every ridge estimator calls), :class:`KernelSystem` (an
exact kernel over the training rows, with Falkon centres or preconditioner features when
used), :func:`choose_ridge_solver` (direct, CG, full-kernel PCG or Falkon, and why) and
the checks of the parameters every ridge model shares (:func:`check_params`,
:func:`check_alphas`, :func:`check_cv`).  The solvers are :mod:`.path` ("direct": one Gram
pass — or the in-memory ``n × n`` kernel — the regularization path for a grid, CV/GCV in
closed form), :mod:`.solve` (feature CG), :mod:`.kernel_cg` (full-kernel PCG) and
:mod:`.falkon`.  Must not hold their maths, stream over chunks, nor touch scikit-learn.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import dask.array as da
import numpy as np

from ..backend import InvalidInputError, check_floats, check_int
from .cluster import current_client, worker_memory_limits
from .falkon import fit_falkon
from .kernel_cg import SELECTION_ROWS, fit_kernel_ridge, select_alpha
from .kernel_ops import CHUNK_ROWS
from .passes import SPLIT_EVERY, check_folds, fmt_bytes, fold_class_counts, fold_ids
from .path import SCORINGS, fit_path
from .solve import FitReport, RidgeFit, choose_solver, fit_ridge

__all__ = ["fit_ridge_model", "KernelSystem", "choose_ridge_solver", "check_grid_memory",
           "auto_kernel_solver", "check_params", "check_alphas", "check_cv", "RidgeFit", "FEATURE_SOLVERS",
           "KERNEL_SOLVERS", "CV_CHECK_MAX_ROWS"]

#: ``solver`` values for features and for a :class:`KernelSystem` (besides ``"auto"``).
FEATURE_SOLVERS = ("direct", "cg")
KERNEL_SOLVERS = ("pcg", "falkon")
#: Fold sizes (and a classifier's classes per training fold) are checked on the client up
#: to this many rows; beyond it an empty fold is astronomically unlikely and the Gram
#: pass's own per-fold row counts still refuse one.
CV_CHECK_MAX_ROWS = 1_000_000
#: Per-solver CG defaults: ``(tol, maxiter)``.
_CG_DEFAULTS = {"cg": (1e-6, 200), "pcg": (1e-3, 100), "falkon": (1e-3, 100)}


@dataclass(frozen=True)
class KernelSystem:
    """``(K + λI) W = Y`` on the training rows of a kernel operator ``op``.

    ``op`` is a :mod:`.kernel_ops` operator (``make_kernel``).  With ``centres`` (``m``
    rows, flattened) the system is Falkon's Nyström one; ``features`` (``(n, r)``) feed
    ``preconditioner="sketch"``; ``cache`` and ``chunk`` say how Falkon keeps ``K_nm``.
    """

    op: Any
    centres: np.ndarray | None = None
    features: np.ndarray | None = None
    cache: bool | str = "auto"
    chunk: int = CHUNK_ROWS


# ========================================================================== checks
def check_alphas(alpha) -> np.ndarray:
    """``alpha`` (a number or a 1-D grid) as a float64 1-D array of finite values > 0."""
    a = np.atleast_1d(check_floats(alpha, "alpha"))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise InvalidInputError(f"alpha must be a positive number or a 1-D grid of finite "
                                f"positive numbers, got {alpha!r}")
    return a


def check_params(alpha, *, solver: str = "auto", scoring=None, n_folds=None,
                 posterior: bool = False, kernel: bool = False, classifier: bool | None = None,
                 default_scoring: str | None = None, who: str = "this model"):
    """``(alphas, scoring)`` of a ridge fit, or :class:`InvalidInputError` naming what is wrong.

    The one check of what every ridge model shares: ``alpha`` (:func:`check_alphas`),
    ``solver`` (:data:`FEATURE_SOLVERS` or, for a kernel system, :data:`KERNEL_SOLVERS`;
    a grid and ``posterior`` need the direct path), and ``scoring`` (None means
    ``default_scoring``, else the MSE; ``"accuracy"`` is for classifiers — ``classifier``
    None: not checked — and, on features, needs CV folds since GCV scores the MSE).
    """
    alphas = check_alphas(alpha)
    grid = alphas.size > 1
    allowed = ("auto",) + (KERNEL_SOLVERS if kernel else FEATURE_SOLVERS)
    if solver not in allowed:
        raise InvalidInputError(f"solver must be one of {allowed}, got {solver!r}")
    if posterior and kernel:
        raise InvalidInputError("posterior is computed from the m×m Gram of features, not a kernel system")
    if (grid or posterior) and solver == "cg":
        what = "an alpha grid is selected" if grid else "posterior_std is computed"
        raise InvalidInputError(f"{what} from the m×m Gram matrix (solver='direct' or 'auto'); "
                                "with solver='cg' pass a single alpha and posterior_std=False")
    out = scoring if scoring is not None else (default_scoring or SCORINGS[0])
    if out not in SCORINGS:
        raise InvalidInputError(f"scoring must be one of {SCORINGS} or None, got {scoring!r}")
    if out == "accuracy" and classifier is False:
        raise InvalidInputError(f"scoring='accuracy' is for classifiers; {who} scores by "
                                f"'neg_mean_squared_error'")
    if grid and not kernel and not n_folds:  # GCV scores the MSE only
        if scoring == "accuracy":
            raise InvalidInputError("scoring='accuracy' needs cv folds (cv=None selects by GCV, "
                                    "which scores the mean squared error)")
        out = SCORINGS[0]
    return alphas, out


def check_cv(n: int, cv: int, fold_seed: int, class_counts=None, classes=None) -> None:
    """Refuse ``cv`` folds that cannot be scored, naming ``cv`` and ``n``.

    ``n < cv`` or a fold left empty by the row hash (:func:`.passes.fold_ids`) is an error,
    as scikit-learn's ``KFold`` refuses ``n_splits > n_samples``.  With a classifier's
    ``class_counts`` (``(cv, k)`` rows per fold and class, :func:`.passes.fold_class_counts`):
    a training fold holding a single class is an error, one lacking a class warns (as
    scikit-learn's ``StratifiedKFold`` does).  ``classes`` names the columns in messages.
    Without counts, fold sizes are checked up to :data:`CV_CHECK_MAX_ROWS` rows.
    """
    check_folds(n, cv, name="cv")
    if class_counts is None:
        if n <= CV_CHECK_MAX_ROWS:
            sizes = np.bincount(fold_ids(n, cv, fold_seed), minlength=cv)
            check_folds(n, cv, sizes.tolist(), name="cv")
        return
    counts = np.asarray(class_counts)
    names = np.asarray(classes) if classes is not None else np.arange(counts.shape[1])
    check_folds(n, cv, counts.sum(axis=1).astype(int).tolist(), name="cv")
    present = counts.sum(axis=0) > 0
    for f in range(cv):
        train = (counts.sum(axis=0) - counts[f]) > 0
        if train.sum() < 2 <= present.sum():
            raise InvalidInputError(
                f"cv={cv}: the training rows of fold {f} (n={n} rows in all) hold only "
                f"class {names[np.argmax(train)].tolist()!r}; a classifier needs at least two classes "
                f"in every training fold: use fewer folds or more rows")
        missing = np.flatnonzero(present & ~train)
        if missing.size:
            warnings.warn(f"cv={cv}: the training rows of fold {f} lack class(es) "
                          f"{names[missing].tolist()} (n={n} rows): those classes are never "
                          f"predicted in that fold's score", UserWarning, stacklevel=3)
            return


# ========================================================================== policy
def choose_ridge_solver(data, n: int, m: int, k: int, *, solver: str = "auto",
                        grid: bool = False, posterior: bool = False, n_folds: int | None = None,
                        client=None) -> tuple[str, str]:
    """``(solver, reason)``: which solver a fit runs, and why.

    Features: a grid or ``posterior`` needs the direct path (one Gram pass, the grid in
    closed form; on dask features :func:`check_grid_memory` first); else ``"auto"`` is
    :func:`.solve.choose_solver` (direct while the ``m × m`` Gram fits the workers'
    memory, else CG).  A :class:`KernelSystem`: the full kernel by
    PCG, unless it has centres and ``"auto"`` finds by the operator's memory model
    (:func:`.kernel_ops.plan_cache`) that the kernel blocks would not stay in memory: then
    Falkon on the centres.
    """
    if isinstance(data, KernelSystem):
        full = f"the full {n}×{n} kernel system"
        if data.centres is None:
            if solver == "falkon":
                raise InvalidInputError("solver='falkon' needs a kernel system with centres")
            if solver == "auto" and data.op.cached:
                return "pcg", f"pcg: {full} is kept in memory ({data.op.reason}), so it is solved exactly"
            return "pcg", f"pcg: {full}"
        if solver != "auto":
            return solver, (f"falkon: solver='falkon' requested, m={m} centres" if solver == "falkon"
                            else f"pcg: solver='pcg' requested, {full} (centres unused)")
        if auto_kernel_solver(data.op) == "pcg":
            return "pcg", f"pcg: {full} is kept in memory ({data.op.reason}), so it is solved exactly"
        return "falkon", (f"falkon: {full} would be recomputed every iteration ({data.op.reason}); "
                          f"Falkon's m={m} centres cost n·m per iteration")
    if grid:
        check_grid_memory(m, n_folds, client)
        return "direct", "direct: an alpha grid is selected on the regularization path"
    if posterior:
        return "direct", "direct: posterior_std needs the m×m factor"
    if solver != "auto":
        return solver, f"{solver}: solver={solver!r} requested"
    return choose_solver(n, m, k, client)


def check_grid_memory(m: int, n_folds: int | None, client) -> None:
    """Refuse a grid on dask features whose per-fold Gram reduction would not fit a worker.

    The Gram pass of a grid carries ``max(1, n_folds)`` float64 ``m × m`` sums per partial
    and a reduction task holds ``SPLIT_EVERY + 2`` partials; past half of the smallest
    worker's memory (:func:`.cluster.worker_memory_limits`) that is an out-of-memory worker
    later, so it is an :class:`InvalidInputError` naming the remedies now.  No client
    (in-memory features): nothing to check (:mod:`.holdout` takes wide grids).
    """
    workers, wmin, _ = worker_memory_limits(client)
    need = 8.0 * m * m * max(1, int(n_folds or 0)) * (SPLIT_EVERY + 2)
    if wmin and need > 0.5 * wmin:
        raise InvalidInputError(
            f"an alpha grid on dask features of width m={m} needs a Gram reduction of "
            f"~{fmt_bytes(need)} per task ({max(1, int(n_folds or 0))} fold Gram(s) of "
            f"{fmt_bytes(8.0 * m * m)}), more than half of the smallest worker's memory "
            f"({fmt_bytes(wmin)}): pass one alpha (solved by CG), fewer features or folds, "
            f"workers with more memory, or in-memory features (a wide grid is then scored "
            f"on one hold-out fold)")


def auto_kernel_solver(op) -> str:
    """``solver="auto"`` on a kernel operator: "pcg" (the exact answer) when its blocks are
    kept in memory (:func:`.kernel_ops.plan_cache` decided), else "falkon"."""
    return "pcg" if op.cached else "falkon"


# ============================================================================ entry
def fit_ridge_model(data, Y, alpha, *, solver: str = "auto", n_folds: int | None = None,
                    fold_seed: int = 0, scoring: str | None = None, classes=None,
                    posterior: bool = False, tol: float | None = None,
                    maxiter: int | None = None, preconditioner: str | None = "auto",
                    rank: int | None = None, seed: int = 0,
                    selection_rows: int = SELECTION_ROWS, client=None,
                    callback: Callable | None = None,
                    phase: Callable | None = None) -> RidgeFit:
    """Ridge regression on features or a kernel system, the solver chosen and said why.

    Parameters
    ----------
    data : array, dask.array.Array or KernelSystem
        ``(n, m)`` features (NumPy/CuPy/SciPy or lazy dask: passes run on the cluster), or
        the exact kernel of the training rows.
    Y : array or dask.array.Array
        ``(n,)`` or ``(n, k)`` float targets (a one-vs-rest encoding for classification).
    alpha : float or 1-D grid (> 0)
        A grid is selected by ``n_folds``-fold CV or GCV from one Gram pass (features), or
        on a hold-out of ``selection_rows`` training rows (kernel).
    solver : {"auto", "direct", "cg"} for features, {"auto", "pcg", "falkon"} for a kernel
        See :func:`choose_ridge_solver`.
    n_folds, fold_seed : CV folds of a grid on features (None: GCV), rows by :func:`.passes.fold_ids`
    scoring : {"neg_mean_squared_error", "accuracy", None}
    classes : array, optional
        The labels of ``Y``'s columns when ``Y`` encodes classes: every CV training fold
        must hold two classes (a pass counting them).
    posterior : bool
        Features only: ``extra["posterior_factor"]`` (see :func:`.path.ridge_path`).
    tol, maxiter : CG stopping rule; None: 1e-6 / 200 (feature CG), 1e-3 / 100 (kernel)
    preconditioner : str or None
        Feature CG: "nystrom", "jacobi", None; "auto": "nystrom" for dask features, none in
        memory.  Kernel PCG: "rpcholesky", "sketch" (``data.features``), None; "auto":
        "rpcholesky".
    rank : int, optional
        Preconditioner rank (kernel default 1024).
    seed : int
        Seed of the preconditioner and of the selection subsample.
    callback : ``callback(residual, iteration)`` after each CG iteration
    phase : ``phase(name)`` at each phase change (progress reporting)

    Returns
    -------
    RidgeFit
        ``W`` ``(m, k)`` (features, Falkon centres) or ``(n, k)`` (full kernel, dual);
        ``report.solver`` is "direct", "cg", "kernel-pcg" or "falkon" and ``report.reason``
        says why; ``report.column_residuals`` the final residual per column of a CG fit.
    """
    kernel = isinstance(data, KernelSystem)
    alphas, scoring = check_params(alpha, solver=solver, scoring=scoring, n_folds=n_folds,
                                   posterior=posterior, kernel=kernel,
                                   classifier=None if classes is None else True)
    grid = alphas.size > 1
    phase = phase or (lambda name: None)
    if kernel:
        n = int(data.op.n)
        m = n if data.centres is None else int(len(data.centres))
    else:
        n, m = int(data.shape[0]), int(data.shape[1])
        client = current_client(client) if isinstance(data, da.Array) else None
    k = int(np.shape(Y)[1]) if len(np.shape(Y)) == 2 else 1
    chosen, why = choose_ridge_solver(data, n, m, k, solver=solver, grid=grid,
                                      posterior=posterior, n_folds=n_folds, client=client)
    d_tol, d_maxiter = _CG_DEFAULTS.get(chosen, (None, None))
    cg = dict(tol=d_tol if tol is None else tol, maxiter=d_maxiter if maxiter is None else maxiter,
              callback=callback)
    if chosen == "direct":
        if grid and n_folds:
            counts = None if classes is None else fold_class_counts(Y, n_folds, fold_seed)
            check_cv(n, n_folds, fold_seed, counts, classes)
        return _fit_path(data, Y, alphas, why, n_folds=n_folds if grid else None,
                         fold_seed=fold_seed, scoring=scoring, posterior=posterior,
                         client=client, phase=phase)
    if chosen == "cg":
        pc = (("nystrom" if isinstance(data, da.Array) else None) if preconditioner == "auto"
              else preconditioner)
        W, report = fit_ridge(data, Y, alpha=float(alphas[0]), solver="cg", preconditioner=pc,
                              rank=rank, seed=seed, client=client, reason=why, **cg)
        return RidgeFit(W=W, alpha=report.alpha, cv_results=None, report=report)
    if chosen == "pcg":
        fit = fit_kernel_ridge(data.op, Y, alphas, preconditioner="rpcholesky"
                               if preconditioner == "auto" else preconditioner,
                               rank=1024 if rank is None else rank, features=data.features,
                               selection_rows=selection_rows, scoring=scoring, seed=seed,
                               phase=phase, **cg)
    else:
        fit = _fit_falkon(data, Y, alphas, client=client, selection_rows=selection_rows,
                          scoring=scoring, seed=seed, phase=phase, **cg)
    fit.report.reason = f"{why}; {fit.report.reason}"
    fit.report.column_residuals = fit.extra.pop("column_residuals", None)
    return fit


def _fit_path(Phi, Y, alphas, why, *, n_folds, fold_seed, scoring, posterior, client,
              phase) -> RidgeFit:
    """The direct solve: :func:`.path.fit_path` (one Gram pass or the in-memory kernel)."""
    t0 = time.perf_counter()
    path = fit_path(Phi, Y, alphas, n_folds=n_folds, fold_seed=fold_seed, scoring=scoring,
                    posterior=posterior, client=client, phase=phase)
    passes = 0 if path.form == "sample" else 1 + int("score_pass_s" in path.timings)
    solve_s = time.perf_counter() - t0 - path.timings.get("gram_s", 0.0)
    report = FitReport(solver="direct", reason=f"{why}; {path.reason}", n_samples=int(Phi.shape[0]),
                       n_features=int(path.W.shape[0]), n_targets=int(path.W.shape[1]),
                       alpha=path.alpha, passes=passes,
                       timings={**path.timings, "solve_s": solve_s})
    extra = {"posterior_factor": path.posterior_factor} if posterior else {}
    return RidgeFit(W=path.W, alpha=path.alpha, cv_results=path.cv_results, report=report,
                    extra=extra)


def _fit_falkon(system: KernelSystem, Y, alphas, *, client, selection_rows, scoring, seed,
                phase, tol, maxiter, callback) -> RidgeFit:
    """λ on a hold-out of training rows (a grid), then :func:`.falkon.fit_falkon`."""
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y[:, None] if Y.ndim == 1 else Y
    cv, t0 = None, time.perf_counter()
    if alphas.size > 1:
        phase("select")
        lam, cv = select_alpha(system.op.submatrix, Y, alphas,
                               rows=check_int(selection_rows, "selection_rows", minimum=2),
                               seed=seed, scoring=scoring)
    else:
        lam = float(alphas[0])
    select_s = time.perf_counter() - t0
    op_client = client if client is not None else getattr(system.op, "client", None)
    fit = fit_falkon(system.op, system.centres, Y, lam, tol=tol, maxiter=maxiter,
                     cache=system.cache, client=op_client, chunk=system.chunk,
                     callback=callback, phase=phase)
    fit.cv_results = cv
    fit.report.timings["select_s"] = select_s
    if cv:
        fit.report.reason += f"; alpha={lam:g} chosen by {cv['selection']}"
    return fit
