"""Exact-kernel ridge models on all rows: :class:`KernelRidge` and :class:`KernelRidgeClassifier`.

Owns the scikit-learn wiring of ridge regression with a network's exact kernel (no
intercept): parameters, input dispatch (NumPy, dask, Zarr store), target encoding
(one-vs-rest for the classifier), the choice of Falkon centres, and the fitted attributes.
The fit is ONE engine call, :func:`~dsketch.engine.fit_ridge_model` on a
:class:`~dsketch.engine.KernelSystem` (the full ``n × n`` system by preconditioned CG, or
Falkon's Nyström system; λ chosen on training rows), prediction
:func:`~dsketch.engine.kernel_predict`.  Must not hold any of that maths.
"""

from __future__ import annotations

import math
import time
from numbers import Integral, Real

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, clone
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from .. import engine
from ..backend import InvalidInputError
from ..dashboard import track_fit
from ..engine.cluster import current_client
from ..engine.kernel_cg import SELECTION_ROWS
from ..engine.kernel_ops import (CHUNK_ROWS, KernelFunction, MapKernelFunction, kernel_predict,
                                 make_kernel)
from ..engine.ridge import KernelSystem, auto_kernel_solver, check_params
from ..nets import Relu, fully_connected
from ..nets.nystroem import sample_landmarks
from ._data import check_class_labels, draw_seed, is_dask, is_store, open_store, validate_input
from .transformers import KernelMapSketch
from .neural_nystroem import NeuralNystroem
from .ridge import SketchRidge, SketchRidgeClassifier

__all__ = ["KernelRidge", "KernelRidgeClassifier", "make_model", "LEVERAGE_FEATURES"]

#: Width of the cheap sketch whose ridge leverage scores draw Falkon centres (``landmarks="leverage"``).
LEVERAGE_FEATURES = 512


class _KernelRidgeBase(BaseEstimator):
    """Ridge regression (no intercept) with a network's exact NTK / NNGP on all rows."""

    _parameter_constraints: dict = {
        "net": [None, HasMethods(["sketch", "kernel"])],
        "kernel": [StrOptions({"ntk", "nngp"}), KernelMapSketch],
        "alpha": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "solver": [StrOptions({"pcg", "falkon", "auto"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "landmarks": [StrOptions({"uniform", "leverage"})],
        "preconditioner": [StrOptions({"rpcholesky", "sketch"}), None],
        "rank": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "selection_rows": [Interval(Integral, 2, None, closed="left")],
        "cache": ["boolean", StrOptions({"auto"})],
        "chunk_rows": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "scoring": [None, StrOptions({"accuracy", "neg_mean_squared_error"})],
    }
    _default_scoring = "neg_mean_squared_error"

    def __init__(self, *, net=None, kernel="ntk", alpha=1.0, solver="pcg", n_components=4096,
                 landmarks="uniform", preconditioner="rpcholesky", rank=1024, tol=1e-3,
                 max_iter=100,
                 selection_rows=SELECTION_ROWS, cache="auto", chunk_rows=CHUNK_ROWS,
                 random_state=None, scoring=None):
        self.net = net
        self.kernel = kernel
        self.alpha = alpha
        self.solver = solver
        self.n_components = n_components
        self.landmarks = landmarks
        self.preconditioner = preconditioner
        self.rank = rank
        self.tol = tol
        self.max_iter = max_iter
        self.selection_rows = selection_rows
        self.cache = cache
        self.chunk_rows = chunk_rows
        self.random_state = random_state
        self.scoring = scoring

    # ---------------------------------------------------------------------- helpers
    def check_fitted_state(self) -> None:
        """Raise ``ValueError`` naming the attribute when the fitted state contradicts itself.

        The training rows ``X_fit_`` (finite floats of ``input_shape_``), one row of
        ``dual_coef_`` per training row (a column per class) and ``component_indices_`` agree;
        :func:`dsketch.load_model` asks this of a loaded model.
        """
        X, W = getattr(self, "X_fit_", None), getattr(self, "dual_coef_", None)
        if X is None or W is None:
            raise ValueError("a fitted kernel model needs X_fit_ and dual_coef_")
        shape = getattr(self, "input_shape_", None)
        if not isinstance(shape, (list, tuple)) or tuple(X.shape[1:]) != tuple(shape):
            raise ValueError(f"X_fit_ has rows of shape {tuple(X.shape[1:])}, input_shape_ is {shape!r}")
        if int(np.prod(X.shape[1:])) != getattr(self, "n_features_in_", None):
            raise ValueError("n_features_in_ does not match the rows of X_fit_")
        if X.dtype.kind != "f" or not np.all(np.isfinite(X)):
            raise ValueError("X_fit_ must hold finite floats")
        if W.dtype.kind != "f" or W.ndim not in (1, 2) or W.shape[0] != X.shape[0]:
            raise ValueError(f"dual_coef_ has shape {W.shape}; expected {X.shape[0]} rows (one per "
                             f"row of X_fit_)")
        if not np.all(np.isfinite(W)):
            raise ValueError("dual_coef_ holds NaN or Inf")
        if hasattr(self, "classes_") and (W.ndim != 2 or W.shape[1] != len(self.classes_)):
            raise ValueError(f"dual_coef_ has shape {W.shape} but there are {len(self.classes_)} classes")
        idx = getattr(self, "component_indices_", None)
        if idx is not None and idx.shape != (X.shape[0],):
            raise ValueError(f"component_indices_ has shape {idx.shape}, expected ({X.shape[0]},)")

    def _resolved_net(self):
        if self.net is not None:
            return self.net
        return fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.0)

    def _params(self):
        """``(alphas, scoring)``: the engine's one check of the ridge parameters."""
        return check_params(self.alpha, solver=self.solver, scoring=self.scoring, kernel=True,
                            classifier=isinstance(self, ClassifierMixin),
                            default_scoring=self._default_scoring, who=type(self).__name__)

    def _classical(self) -> bool:
        """``kernel`` is a classical kernel map (RandomFourierFeatures(gamma=…), …)."""
        if isinstance(self.kernel, str):
            return False
        if self.net is not None:
            raise InvalidInputError("net= is for kernel='ntk' or 'nngp'; a classical kernel map "
                                    f"({type(self.kernel).__name__}) brings its own kernel")
        if len(self.input_shape_) != 1:
            raise InvalidInputError(f"a classical kernel takes flat rows, got rows of shape "
                                    f"{tuple(self.input_shape_)}")
        return True

    def _kfn(self):
        if self._classical():
            return MapKernelFunction(self._feature_map(self.kernel.n_components, 0))
        return KernelFunction(self._resolved_net(), self.kernel, tuple(self.input_shape_))

    def _feature_map(self, width: int, seed: int, **net_kw):
        """A ``width``-wide float64 feature map of the kernel: the net's sketch (``net_kw``
        passed on) or the classical map (the preconditioner's and the leverage scores' features)."""
        if self._classical():
            kmap = clone(self.kernel).set_params(n_components=width, dtype="float64")
            return kmap._make_map(tuple(self.input_shape_), seed)
        return self._resolved_net().sketch(tuple(self.input_shape_), width, seed, dtype="float64",
                                           **net_kw).output(self.kernel)

    # -------------------------------------------------------------------------- fit
    def _fit(self, X, y):
        alphas, scoring = self._params()  # refuse bad parameters before any work
        if is_store(X):
            ds = open_store(X, with_y=y is None)
            X, y = ds.X, (ds.y if y is None else y)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        start = time.perf_counter()
        if is_dask(X):
            if X.ndim not in (2, 4):
                raise InvalidInputError(f"X must be 2-D rows or 4-D images, got shape {X.shape}")
            self.n_features_in_ = int(np.prod(X.shape[1:]))
            y = np.asarray(y.compute() if is_dask(y) else y)
            if y.shape[0] != X.shape[0]:
                raise InvalidInputError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
            X = engine.validate_rows(X.astype(np.float64), name="X", ndim=(2, 4))
        else:
            X, y = validate_input(self, X, y, reset=True, sparse=False, images=True)
        self.input_shape_ = [int(s) for s in X.shape[1:]]
        if not self._classical():
            self._resolved_net().output_shape(tuple(self.input_shape_))
        Y = self._encode_y(y)
        if not np.all(np.isfinite(Y)):
            raise InvalidInputError("y contains NaN or Inf")
        self.seed_ = draw_seed(self.random_state)
        n = int(X.shape[0])
        client = current_client() if is_dask(X) else None
        op = make_kernel(X, self._kfn(), client=client, cache=self.cache, chunk=self.chunk_rows)
        solver = auto_kernel_solver(op) if self.solver == "auto" else self.solver
        with track_fit(client, estimator=type(self).__name__, n_rows=n,
                       n_features=n if solver == "pcg" else self.n_components) as progress:
            system = self._system(op, X, solver)
            fit = engine.fit_ridge_model(
                system, Y, alphas, solver=self.solver, scoring=scoring,
                preconditioner=self.preconditioner, rank=self.rank, tol=self.tol,
                maxiter=self.max_iter, selection_rows=self.selection_rows, seed=self.seed_,
                callback=progress.residual, phase=progress.phase)
            progress.update(residuals=fit.report.residuals,
                            column_residuals=fit.report.column_residuals)
        fit.report.seconds = time.perf_counter() - start
        if solver == "pcg":
            self.X_fit_ = np.asarray(X.compute() if is_dask(X) else X)
        self.alpha_ = float(fit.alpha)
        self.cv_results_ = fit.cv_results
        self.fit_report_ = {**fit.report.to_dict(), **fit.extra}
        self.n_iter_ = int(fit.report.iterations or 0)
        self._set_coef(np.asarray(fit.W, dtype=np.float64))
        return self

    def _system(self, op, X, solver: str) -> KernelSystem:
        """The engine's kernel system: the full kernel (with the net's sketch features for
        ``preconditioner="sketch"``), or Falkon's centres drawn here (``X_fit_``)."""
        if solver == "pcg":
            features = None
            if self.preconditioner == "sketch":
                fmap = self._feature_map(self.rank, self.seed_)
                features = (np.asarray(engine.embed(X, fmap).compute()) if is_dask(X)
                            else np.asarray(fmap(X)))
            return KernelSystem(op, features=features)
        n = int(X.shape[0])
        if self.n_components > n:
            raise InvalidInputError(f"n_components={self.n_components} centres need at least as "
                                    f"many rows, but X has {n}")
        scores = None
        if self.landmarks == "leverage":  # ridge leverage of a cheap sketch (as NeuralNystroem)
            cheap = self._feature_map(LEVERAGE_FEATURES, self.seed_, relu_method="random")
            scores = engine.leverage_scores(engine.embed(X, cheap) if is_dask(X) else cheap(X))
        idx = sample_landmarks(n, self.n_components, self.seed_, scores)
        C = engine.take_rows(X, idx)
        self.X_fit_ = C.reshape((len(idx),) + tuple(self.input_shape_))
        self.component_indices_ = idx
        return KernelSystem(op, centres=C.reshape(len(idx), -1), cache=self.cache,
                            chunk=self.chunk_rows)

    def _encode_y(self, y):
        raise NotImplementedError  # pragma: no cover - subclasses

    def _set_coef(self, W):
        self.dual_coef_ = W

    # ---------------------------------------------------------------------- predict
    def _decision(self, X):
        """``K(X, X_fit_) dual_coef_`` ``(n, k)``: NumPy, or lazy dask for dask/store input."""
        check_is_fitted(self)
        if is_store(X):
            X = open_store(X, with_y=False).X
        if is_dask(X):
            if int(np.prod(X.shape[1:])) != self.n_features_in_:
                raise ValueError(f"X has {int(np.prod(X.shape[1:]))} features per row, but "
                                 f"{type(self).__name__} is expecting {self.n_features_in_}")
            X = engine.validate_rows(X.astype(np.float64), name="X", ndim=(2, 4))
        else:
            X = validate_input(self, X, reset=False, sparse=False, images=True)
        W = self.dual_coef_ if self.dual_coef_.ndim == 2 else self.dual_coef_[:, None]
        return kernel_predict(X, self._kfn(), self.X_fit_, W)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


class KernelRidge(RegressorMixin, _KernelRidgeBase):
    """Kernel ridge regression with a network's exact NTK / NNGP on all training rows.

    Solves ``(K + αI) W = Y`` for the dual coefficients ``W`` (no intercept), like
    :class:`sklearn.kernel_ridge.KernelRidge` with the network's kernel ``K``, but never
    forms a factorization of the ``n × n`` kernel; predictions are ``K(X, X_fit_) W``.

    Parameters
    ----------
    net : Serial, default=None
        A network of :mod:`dsketch.nets`; ``None`` means
        ``fully_connected(2, Relu(), W_std=√2, b_std=0)``.
    kernel : {"ntk", "nngp"} or a classical kernel map, default="ntk"
        The net's exact NTK or NNGP, or the exact kernel of a classical map of
        :mod:`dsketch` given as its estimator (``RandomFourierFeatures(gamma=…)``: Gaussian,
        ``PolynomialSketch(degree=…, gamma=…, coef0=…)``, ``ArcCosineFeatures(order=…)``,
        ``NTKRandomFeatures()``; flat rows, ``net`` left None); its features then serve
        ``preconditioner="sketch"`` and the leverage scores.
    alpha : float or array-like of floats, default=1.0
        Ridge penalty (> 0).  A grid is decided inside ``fit`` on training rows only: a
        seeded subsample of ``selection_rows`` training rows is split 4:1, the exact
        kernel of the four fifths is factored (one Cholesky per alpha) and each alpha is
        scored on the held-out fifth (``cv_results_``); ties go to the larger alpha.
    solver : {"pcg", "falkon", "auto"}, default="pcg"
        "pcg": the full ``n × n`` system by block preconditioned CG (one CG per target);
        the kernel blocks per pair of row chunks are cached as float32 when they fit
        (``cache``), else recomputed every iteration.  "falkon": Nyström kernel ridge with
        ``n_components`` uniformly drawn centres solved by Falkon's preconditioned CG
        (``K_nm`` streamed in row chunks, no ``n·m²`` Gram); prediction needs only the
        centres.  "auto": "pcg" when the kernel blocks fit in memory (the exact answer),
        else "falkon" (the engine's memory model; ``fit_report_["reason"]`` says which).
    n_components : int, default=4096
        Falkon centres (``solver="falkon"`` only).
    landmarks : {"uniform", "leverage"}, default="uniform"
        How the Falkon centres are drawn: uniformly, or with probabilities ∝ half the ridge
        leverage scores of a cheap 512-wide sketch plus half uniform (one extra pass).
    preconditioner : {"rpcholesky", "sketch"} or None, default="rpcholesky"
        Low-rank preconditioner ``P = FFᵀ + (α + δ)I`` of ``solver="pcg"``: ``F`` of rank
        ``rank`` from randomly pivoted Cholesky of ``K``, or ``F`` = the net's own sketch
        features (``net.sketch(..., rank)``); ``δ = tr(K − FFᵀ)/(n − rank)``, the spectral
        shift; ``None``: plain CG.
    rank : int, default=1024
    tol : float, default=1e-3
        CG stops when every column's relative residual is at most ``tol``.
    max_iter : int, default=100
        CG iterations at most (a warning when not converged).
    selection_rows : int, default=10000
    cache : bool or "auto", default="auto"
        Keep the kernel blocks (float32) in memory / on the workers; "auto": when they take
        at most 60% of the available memory (``fit_report_["cache"]`` says which).
    chunk_rows : int, default=4096
        Rows per kernel block of in-memory input (dask input keeps its own row chunks).
    random_state : int, RandomState instance or None, default=None
        Seed of the preconditioner's pivots, the selection subsample and the centres.
    scoring : {"neg_mean_squared_error", "accuracy"} or None, default=None

    Attributes
    ----------
    X_fit_ : ndarray (n_fit, ...)
        The rows predictions need: every training row (``"pcg"``) or the centres
        (``"falkon"``).  A saved model holds them as a checksummed ``.npy``.
    dual_coef_ : ndarray (n_fit,) or (n_fit, k)
    alpha_ : float
    cv_results_ : dict or None
    fit_report_ : dict
        ``FitReport`` fields (``reason``: which solver ran and why; ``column_residuals``: the
        final relative residual per target) plus ``cache`` (whether the kernel blocks were
        cached, and why), ``cache_bytes``.
    n_iter_ : int
    component_indices_ : ndarray (m,), ``"falkon"`` only
    seed_, input_shape_, n_features_in_
    """

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit on NumPy/dask ``X`` and ``y``, or on a Zarr store (``y`` read from it)."""
        return self._fit(X, y)

    def _encode_y(self, y):
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        return y[:, None] if y.ndim == 1 else y

    def _set_coef(self, W):
        self.dual_coef_ = W[:, 0] if self._y_1d else W
        del self._y_1d

    def predict(self, X):
        """``K(X, X_fit_) dual_coef_``; lazy dask for dask input or a store URL."""
        d = self._decision(X)
        return d[:, 0] if self.dual_coef_.ndim == 1 else d

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class KernelRidgeClassifier(ClassifierMixin, _KernelRidgeBase):
    """One-vs-rest least-squares classification with a network's exact kernel on all rows.

    Each class is a kernel ridge regression on targets +1 / −1 (``targets="signed"``) or
    1 / 0; ``predict`` takes the largest score.  Parameters as :class:`KernelRidge`; an
    alpha grid is scored by hold-out ``accuracy`` unless ``scoring`` says otherwise.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    dual_coef_ : ndarray (n_fit, n_classes)
    X_fit_, alpha_, cv_results_, fit_report_, n_iter_, seed_
        As in :class:`KernelRidge`.
    """

    _parameter_constraints: dict = {
        **_KernelRidgeBase._parameter_constraints,
        "targets": [StrOptions({"signed", "onehot"})],
    }
    _default_scoring = "accuracy"

    def __init__(self, *, net=None, kernel="ntk", alpha=1.0, solver="pcg", n_components=4096,
                 landmarks="uniform", preconditioner="rpcholesky", rank=1024, tol=1e-3,
                 max_iter=100,
                 selection_rows=SELECTION_ROWS, cache="auto", chunk_rows=CHUNK_ROWS,
                 random_state=None, scoring=None, targets="signed"):
        super().__init__(net=net, kernel=kernel, alpha=alpha, solver=solver,
                         n_components=n_components, landmarks=landmarks,
                         preconditioner=preconditioner, rank=rank,
                         tol=tol, max_iter=max_iter, selection_rows=selection_rows, cache=cache,
                         chunk_rows=chunk_rows, random_state=random_state, scoring=scoring)
        self.targets = targets

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit on NumPy/dask ``X`` and labels ``y``, or on a Zarr store."""
        return self._fit(X, y)

    def _encode_y(self, y):
        y = column_or_1d(y, warn=True)
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise InvalidInputError("y contains NaN or Inf")
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        check_class_labels(self.classes_, len(y))
        lo, hi = (-1.0, 1.0) if self.targets == "signed" else (0.0, 1.0)
        Y = np.full((len(y), len(self.classes_)), lo)
        Y[np.arange(len(y)), enc.transform(y)] = hi
        return Y

    def decision_function(self, X):
        """Class scores ``(n, n_classes)``; for two classes the ``(n,)`` score of ``classes_[1]``."""
        d = self._decision(X)
        if len(self.classes_) == 2:
            return (d[:, 1] - d[:, 0]) / 2
        return d

    def predict(self, X):
        """Predicted labels; lazy dask for dask input or a store URL."""
        d = self._decision(X)
        classes = self.classes_
        if isinstance(d, da.Array):
            return d.map_blocks(lambda b: classes[np.argmax(b, axis=1)], dtype=classes.dtype,
                                drop_axis=1)
        return classes[np.argmax(d, axis=1)]


def make_model(method: str, *, net, kernel: str, classify: bool, alpha, n_components: int,
               random_state, cv=5, solver="auto"):
    """The estimator a method name stands for (``dsketch fit --method``).

    "nystroem": ``SketchRidge[Classifier]`` on ``NeuralNystroem`` features (``cv``/``solver``
    are its); "falkon": ``KernelRidge[Classifier](solver="falkon")``; "kernel":
    ``KernelRidge[Classifier](solver="pcg")`` — ``n_components`` landmarks / centres.
    """
    if method == "nystroem":
        sketch = NeuralNystroem(net=net, kernel=kernel, n_components=n_components,
                                random_state=random_state)
        cls = SketchRidgeClassifier if classify else SketchRidge
        return cls(sketch=sketch, alpha=alpha, solver=solver, cv=cv)
    if method not in ("falkon", "kernel"):
        raise InvalidInputError(f"method must be 'nystroem', 'falkon' or 'kernel', got {method!r}")
    cls = KernelRidgeClassifier if classify else KernelRidge
    return cls(net=net, kernel=kernel, alpha=alpha, random_state=random_state,
               solver="falkon" if method == "falkon" else "pcg", n_components=n_components)
