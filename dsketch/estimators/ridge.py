"""Sketched ridge models: :class:`SketchRidge` and :class:`SketchRidgeClassifier`.

Owns the scikit-learn wiring of ridge regression (no intercept) on the features of a
transformer of :mod:`.transformers`: parameters, target encoding (one-vs-rest for the
classifier), the fitted attributes and progress reporting.  The fit is ONE engine call,
:func:`~dsketch.engine.fit_ridge_model` (the parameter checks, the solver choice and why,
the Gram pass, Cholesky, CG, the regularization path with k-fold CV or GCV, the posterior
factor), and prediction :func:`~dsketch.engine.predict`; both serve NumPy and dask input
alike.  Must not hold any of that maths itself.
"""

from __future__ import annotations

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
from ..dashboard import track_fit
from ..engine.cluster import current_client
from ..engine.path import AlphaGridWarning
from ..engine.ridge import check_params
from ._data import check_class_labels, is_dask, is_store, open_store, rechunk_like_rows, validate_input
from .transformers import NTKSketch

__all__ = ["SketchRidge", "SketchRidgeClassifier", "AlphaGridWarning"]


def same_params(a, b) -> bool:
    """Equal parameters: estimators by class and parameters (recursively), arrays by value."""
    if isinstance(a, BaseEstimator) or isinstance(b, BaseEstimator):
        return type(a) is type(b) and same_params(a.get_params(deep=False), b.get_params(deep=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_params(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - incomparable values differ
        return False


class _SketchRidgeBase(BaseEstimator):
    """Ridge regression (no intercept) on the features of a sketch transformer.

    Subclasses encode targets (``_encode_y``) and decode predictions.
    """

    _parameter_constraints: dict = {
        "sketch": [None, HasMethods(["fit", "transform"])],
        "alpha": [Interval(Real, 0, None, closed="neither"), "array-like"],
        "solver": [StrOptions({"auto", "direct", "cg"})],
        "cv": [None, Interval(Integral, 2, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "posterior_std": ["boolean"],
        "scoring": [None, StrOptions({"accuracy", "neg_mean_squared_error"})],
    }

    #: What ``scoring=None`` means for this model.
    _default_scoring = "neg_mean_squared_error"

    def __init__(self, *, sketch=None, alpha=1.0, solver="auto", cv=5, tol=1e-6, max_iter=200,
                 posterior_std=False, scoring=None):
        self.sketch = sketch
        self.alpha = alpha
        self.solver = solver
        self.cv = cv
        self.tol = tol
        self.max_iter = max_iter
        self.posterior_std = posterior_std
        self.scoring = scoring

    # ---------------------------------------------------------------------- helpers
    def _params(self):
        """``(alphas, scoring)``: the engine's one check of the ridge parameters."""
        return check_params(self.alpha, solver=self.solver, scoring=self.scoring,
                            n_folds=self.cv, posterior=self.posterior_std,
                            classifier=isinstance(self, ClassifierMixin),
                            default_scoring=self._default_scoring, who=type(self).__name__)

    def _sketch_template(self):
        return NTKSketch() if self.sketch is None else self.sketch

    def check_fitted_state(self) -> None:
        """Raise ``ValueError`` naming the attribute when the fitted state contradicts itself.

        ``sketch_`` must carry the parameters of ``sketch`` (and its own consistent state),
        ``coef_`` one finite row per feature (a column per class), ``posterior_factor_``
        ``m × m``; :func:`dsketch.load_model` asks this of a loaded model.
        """
        sketch, coef = getattr(self, "sketch_", None), getattr(self, "coef_", None)
        if sketch is None or coef is None:
            raise ValueError("a fitted model needs sketch_ and coef_")
        template = self._sketch_template()
        if not same_params(template, sketch):
            raise ValueError(f"sketch_ (the fitted {type(sketch).__name__}) does not have the "
                             f"parameters of params.sketch ({type(template).__name__}); the file "
                             f"was edited or corrupted")
        sketch.check_fitted_state()
        m = sketch.feature_map_.n_features
        if coef.dtype.kind != "f" or coef.ndim not in (1, 2) or coef.shape[0] != m:
            raise ValueError(f"coef_ has shape {coef.shape} and dtype {coef.dtype}; expected float "
                             f"with {m} rows")
        if not np.all(np.isfinite(coef)):
            raise ValueError("coef_ holds NaN or Inf")
        if hasattr(self, "classes_") and (coef.ndim != 2 or coef.shape[1] != len(self.classes_)):
            raise ValueError(f"coef_ has shape {coef.shape} but there are {len(self.classes_)} classes")
        post = getattr(self, "posterior_factor_", None)
        if post is not None and post.shape != (m, m):
            raise ValueError(f"posterior_factor_ has shape {post.shape}, expected {(m, m)}")
        if getattr(self, "n_features_in_", None) != getattr(sketch, "n_features_in_", None):
            raise ValueError("n_features_in_ differs between the model and its sketch")

    def _sketch_flags(self):
        s = self._sketch_template()
        return getattr(s, "_accepts_sparse", False), getattr(s, "_image_input", False)

    def _validate_X(self, X, y=None, *, reset: bool):
        sparse, images = self._sketch_flags()
        return validate_input(self, X, y, reset=reset, sparse=sparse, images=images)

    # -------------------------------------------------------------------------- fit
    def _fit(self, X, y):
        self._params()  # refuse bad parameters before any work
        if is_store(X):
            ds = open_store(X, with_y=y is None)
            X, y = ds.X, (ds.y if y is None else y)
        start = time.perf_counter()
        if is_dask(X):
            self.sketch_ = clone(self._sketch_template()).fit(X)
            self.n_features_in_ = self.sketch_.n_features_in_
            Y = self._encode_y_dask(rechunk_like_rows(y, X) if y is not None else None)
        else:
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            X, y = self._validate_X(X, y, reset=True)
            Y = self._encode_y(y)
            self.sketch_ = clone(self._sketch_template()).fit(X)
        self._solve(self.sketch_.transform(X), Y, start)
        return self

    def _fold_seed(self) -> int:
        return int(getattr(self.sketch_, "seed_", 0) or 0)

    def _encode_y_dask(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = y.astype(np.float64)
        return y[:, None] if y.ndim == 1 else y

    def _solve(self, Phi, Y, start):
        """``engine.fit_ridge_model`` with progress; the fitted attributes from its RidgeFit."""
        alphas, scoring = self._params()
        lazy = is_dask(Phi)
        n, m = int(Phi.shape[0]), int(self.sketch_.n_components)
        with track_fit(current_client() if lazy else None, estimator=type(self).__name__,
                       n_rows=n, n_features=m, Phi=Phi if lazy else None) as progress:
            progress.phase("gram")  # the first pass: the Gram, or CG's setup pass
            fit = engine.fit_ridge_model(
                Phi, Y, alphas, solver=self.solver, n_folds=self.cv, fold_seed=self._fold_seed(),
                scoring=scoring, classes=getattr(self, "classes_", None),
                posterior=self.posterior_std, tol=self.tol, maxiter=self.max_iter,
                callback=progress.residual, phase=lambda name: progress.phase(name, rows_done=n))
            fit.report.seconds = time.perf_counter() - start
            if fit.cv_results is not None:
                progress.update(cv=fit.cv_results, alpha=fit.alpha)
            progress.update(residuals=fit.report.residuals,
                            column_residuals=fit.report.column_residuals)
        self.alpha_ = fit.alpha
        self.cv_results_ = fit.cv_results
        if self.posterior_std:
            self.posterior_factor_ = fit.extra["posterior_factor"]
        self.fit_report_ = fit.report.to_dict()
        self.n_iter_ = int(fit.report.iterations or 1)
        self._set_coef(np.asarray(fit.W, dtype=np.float64))

    def _set_coef(self, W):
        self.coef_ = W

    # ---------------------------------------------------------------------- predict
    def _features(self, X):
        check_is_fitted(self)
        if is_store(X):
            X = open_store(X, with_y=False).X
        if is_dask(X):
            return self.sketch_.transform(X)
        X = self._validate_X(X, reset=False)
        return self.sketch_.transform(X)

    def _decision(self, Phi):
        """Φ W (``engine.predict``: NumPy in memory, lazy for dask); always 2-D."""
        return engine.predict(Phi, self.coef_ if self.coef_.ndim == 2 else self.coef_[:, None])

    def _std(self, Phi):
        if getattr(self, "posterior_factor_", None) is None:
            raise ValueError("return_std=True needs a model fitted with posterior_std=True")
        return engine.predict_std(Phi, self.posterior_factor_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sparse, _ = self._sketch_flags()
        tags.input_tags.sparse = sparse
        return tags


class SketchRidge(RegressorMixin, _SketchRidgeBase):
    """Ridge regression on random features: kernel ridge regression at linear cost.

    Minimizes ‖Y − Φ W‖² + α‖W‖² with Φ = ``sketch.transform(X)`` and, like
    :class:`sklearn.kernel_ridge.KernelRidge`, no intercept (center ``y`` or add a bias
    through the kernel, e.g. ``b_std > 0``).

    Parameters
    ----------
    sketch : transformer, default=None
        One of this module's transformers (cloned in ``fit``); ``None`` means
        ``NTKSketch()``.
    alpha : float or array-like of floats, default=1.0
        Ridge penalty (> 0).  A grid selects ``alpha_`` by ``cv``-fold cross-validation
        from ONE pass over the data (``dsketch.engine.fit_path``): the per-fold Grams G_k
        give every fold's training Gram as G − G_k and its validation error in closed
        form (one Cholesky per fold and alpha); in-memory input with fewer rows than
        features uses the n × n kernel ΦΦᵀ instead.  A choice at an end of the grid warns
        (``dsketch.estimators.AlphaGridWarning``).
    solver : {"auto", "direct", "cg"}, default="auto"
        "direct": the regularization path — the m × m Gram in one pass, factored (or, in
        memory with fewer rows than features, the n × n kernel), a grid in closed form;
        "cg": conjugate gradients whose matvec is a pass over Φ (for large m; a single
        alpha only); "auto": the engine's choice
        (``dsketch.engine.ridge.choose_ridge_solver``): direct for a grid, and for m ≤ 8192
        while the Gram fits the workers' memory, else CG.  ``fit_report_["reason"]`` says why.
    cv : int or None, default=5
        Folds for an alpha grid (rows are assigned to folds by
        ``dsketch.engine.fold_ids(n, cv, seed_)``, the same for NumPy and dask input);
        ``None`` uses generalized cross-validation (GCV) on the full Gram instead.  In-memory
        features wider than 8,192 score the grid on the first fold only (two ``m × m``
        arrays instead of ``cv + 1`` Grams; ``fit_report_["reason"]`` says so and
        ``cv_results_["holdout"]`` is True).
    tol : float, default=1e-6
        Relative residual tolerance of CG.
    max_iter : int, default=200
        CG iterations at most.
    posterior_std : bool, default=False
        Keep the m × m posterior factor so that ``predict(X, return_std=True)`` works.
    scoring : {"neg_mean_squared_error", "accuracy"} or None, default=None
        What CV maximizes over the grid (None: ``"neg_mean_squared_error"``; ``"accuracy"``
        is for :class:`SketchRidgeClassifier`, whose default it is).

    Attributes
    ----------
    sketch_ : transformer
        The fitted transformer (its ``feature_map_`` and ``seed_``).
    coef_ : ndarray (m,) or (m, k)
        Weights on the features (float64).
    alpha_ : float
        The alpha used (selected from the grid when ``alpha`` is one).
    cv_results_ : dict or None
        For a grid: ``alphas``, ``scoring``, ``mean_test_score``, ``std_test_score``,
        ``split{k}_test_score`` (the means weighted by fold size) and the CV MSE as
        ``mean_test_mse``, ``std_test_mse``, ``split{k}_test_mse``; with ``cv=None``
        ``gcv_mse`` and ``mean_test_score`` (= −GCV).
    fit_report_ : dict
        ``dsketch.engine.FitReport.to_dict()``: solver, reason, n_samples, n_features,
        n_targets, alpha, iterations, residuals, converged, seconds, persisted,
        preconditioner, passes, seconds_per_iteration, timings, column_residuals (CG).
    n_iter_ : int
        CG iterations; 1 for the direct solver (one pass over the data).
    posterior_factor_ : ndarray (m, m)
        Only with ``posterior_std=True``; see Notes.
    n_features_in_ : int

    Notes
    -----
    **Posterior standard deviation.**  Read the features as a Bayesian linear model
    f(x) = φ(x)ᵀw with prior w ~ N(0, I) (so f is a GP with kernel k̂(x, x') = φ(x)ᵀφ(x'))
    and Gaussian noise of variance α.  The posterior of w is N(μ, Σ) with
    Σ = (ΦᵀΦ/α + I)⁻¹ = α (ΦᵀΦ + αI)⁻¹ and μ = (ΦᵀΦ + αI)⁻¹ΦᵀY = ``coef_``, so the ridge
    prediction is the posterior mean and Var f(x) = α · φ(x)ᵀ(ΦᵀΦ + αI)⁻¹φ(x).  With
    ΦᵀΦ = V Λ Vᵀ, ``posterior_factor_`` = V diag(√(α / (λ + α))) and
    σ(x) = ‖φ(x)ᵀ S‖.  This is the latent function's std (add α for a noisy
    observation's variance).  With :class:`NNGPSketch` it approximates the NNGP posterior
    of the infinitely wide Bayesian network; with an NTK sketch it is the GP with the NTK
    as prior covariance, not the spread of an ensemble trained by gradient descent.
    """

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit on NumPy/SciPy/dask ``X`` and ``y``, or on a Zarr store (``y`` read from it).

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def _encode_y(self, y):
        y = np.asarray(y, dtype=np.float64)
        self._y_1d = y.ndim == 1
        return y[:, None] if y.ndim == 1 else y

    def _encode_y_dask(self, y):
        if y is not None:
            self._y_1d = y.ndim == 1
        return super()._encode_y_dask(y)

    def _set_coef(self, W):
        self.coef_ = W[:, 0] if self._y_1d else W
        del self._y_1d

    def predict(self, X, return_std: bool = False):
        """Predictions Φ(X) ``coef_``; lazy dask for dask input or a store URL.

        Parameters
        ----------
        X : array-like, sparse matrix, dask array or Zarr store URL
        return_std : bool, default=False
            Also return the posterior standard deviation (needs ``posterior_std=True``;
            see Notes).

        Returns
        -------
        y_pred : (n,) or (n, k)
        y_std : (n,), only with ``return_std``
        """
        Phi = self._features(X)
        pred = self._decision(Phi)
        if self.coef_.ndim == 1:
            pred = pred[:, 0]
        if return_std:
            return pred, self._std(Phi)
        return pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SketchRidgeClassifier(ClassifierMixin, _SketchRidgeBase):
    """One-vs-rest least-squares classification on random features.

    Each class gets a ridge regression on targets +1 (its rows) / −1 (the others), or
    one-hot 1 / 0 — the way the neural-kernel papers classify CIFAR-10 — and ``predict``
    takes the class with the largest score.  Parameters as in :class:`SketchRidge`, plus:

    Parameters
    ----------
    targets : {"signed", "onehot"}, default="signed"
        ±1 or 0/1 encoding of the one-vs-rest targets.
    scoring : {"accuracy", "neg_mean_squared_error"} or None, default=None
        What CV maximizes over an alpha grid; None means ``"accuracy"`` (from the folds'
        validation predictions for every alpha: for dask input one extra pass over the
        data); ``"neg_mean_squared_error"`` scores the encoded targets from the per-fold
        Grams alone.  ``cv=None`` (GCV) scores the MSE.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    coef_ : ndarray (m, n_classes)
    sketch_, alpha_, cv_results_, fit_report_, n_features_in_
        As in :class:`SketchRidge`.
    """

    _parameter_constraints: dict = {
        **_SketchRidgeBase._parameter_constraints,
        "targets": [StrOptions({"signed", "onehot"})],
    }

    _default_scoring = "accuracy"

    def __init__(self, *, sketch=None, alpha=1.0, solver="auto", cv=5, tol=1e-6, max_iter=200,
                 posterior_std=False, targets="signed", scoring=None):
        super().__init__(sketch=sketch, alpha=alpha, solver=solver, cv=cv, tol=tol,
                         max_iter=max_iter, posterior_std=posterior_std, scoring=scoring)
        self.targets = targets

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Fit on NumPy/SciPy/dask ``X`` and labels ``y``, or on a Zarr store.

        Returns
        -------
        self
        """
        return self._fit(X, y)

    def _levels(self):
        return (-1.0, 1.0) if self.targets == "signed" else (0.0, 1.0)

    def _encode_y(self, y):
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        idx = enc.transform(y)
        lo, hi = self._levels()
        Y = np.full((len(y), len(self.classes_)), lo)
        Y[np.arange(len(y)), idx] = hi
        return Y

    def _encode_y_dask(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if y.ndim != 1:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            else:
                raise ValueError(f"classification labels y must be 1-D, got shape {y.shape}")
        self.classes_ = np.asarray(da.unique(y).compute())
        check_class_labels(self.classes_, int(y.shape[0]))
        lo, hi = self._levels()
        classes = self.classes_
        return y.map_blocks(lambda b: np.where(b[:, None] == classes[None, :], hi, lo),
                            dtype=np.float64, new_axis=1, chunks=(y.chunks[0], (len(classes),)))

    def decision_function(self, X):
        """Class scores Φ(X) ``coef_`` (n, n_classes); for two classes the (n,) score of
        ``classes_[1]`` (half the difference of the two columns; > 0 means ``classes_[1]``)."""
        d = self._decision(self._features(X))
        if len(self.classes_) == 2:
            return (d[:, 1] - d[:, 0]) / 2
        return d

    def predict(self, X):
        """Predicted labels; lazy dask for dask input or a store URL."""
        d = self._decision(self._features(X))
        classes = self.classes_
        if is_dask(d):
            return d.map_blocks(lambda b: classes[np.argmax(b, axis=1)], dtype=classes.dtype,
                                drop_axis=1)
        return classes[np.argmax(d, axis=1)]
