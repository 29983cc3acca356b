"""scikit-learn estimators: random-feature transformers and sketched ridge models.

Owns the public modelling API: the transformers (:class:`NTKSketch`, :class:`NNGPSketch`,
:class:`CNTKSketch`, :class:`NTKRandomFeatures`, :class:`PolynomialSketch`,
:class:`RandomFourierFeatures`, :class:`ArcCosineFeatures`), :class:`SketchRidge` and
:class:`SketchRidgeClassifier`.  They follow scikit-learn 1.9's conventions (keyword-only
``__init__`` that only stores, validation in ``fit`` through ``_parameter_constraints`` and
``validate_data``, randomness drawn in ``fit``, trailing-underscore fitted attributes,
``get_feature_names_out``/``set_output``, ``__sklearn_tags__``).

Inputs
------
* NumPy arrays (and SciPy sparse matrices for the maps that take them): computed in memory,
  no cluster needed.
* ``dask.array`` arrays: ``transform``/``predict`` return lazy dask arrays
  (``dsketch.engine.embed`` / ``dsketch.engine.predict``); ``fit`` runs one pass on the
  current dask scheduler (a ``distributed`` client when one is active) through
  ``dsketch.engine.gram`` / ``dsketch.engine.fit_ridge``.
* a Zarr store path or URL (``str`` / ``os.PathLike``): opened with
  ``dsketch.engine.open_dataset`` (arrays ``X`` and, for ``fit``, ``y``), then as dask.

Seeds
-----
``random_state`` follows scikit-learn: an ``int`` is used *as is* as the feature map's seed
(``NTKSketch(random_state=7)`` ≡ ``net.sketch(..., seed=7)``); a ``RandomState``/``Generator``
instance gives one draw; ``None`` draws a fresh seed from OS entropy in ``fit`` (no global
random state is touched).  The seed actually used is stored in ``seed_`` (and in saved
models), so a fitted model is always reproducible.

Must not hold kernel maths (``dsketch.nets`` / ``dsketch.sketch``) or Dask graph code
(``dsketch.engine``): it wires them.
"""

from __future__ import annotations

import math
import os
import time
from numbers import Integral, Real

import numpy as np
import scipy.linalg
import scipy.sparse
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    RegressorMixin,
    TransformerMixin,
    _fit_context,
    clone,
)
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_array as _sk_check_array
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

__all__ = [
    "NTKSketch",
    "NNGPSketch",
    "CNTKSketch",
    "NTKRandomFeatures",
    "PolynomialSketch",
    "RandomFourierFeatures",
    "ArcCosineFeatures",
    "SketchRidge",
    "SketchRidgeClassifier",
]

#: Above this many features ``solver="auto"`` solves in-memory input by CG instead of
#: forming and factoring the m × m Gram matrix.
_AUTO_DIRECT_MAX_FEATURES = 8192


# =============================================================================== inputs
def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask" and hasattr(x, "chunks")


def _is_store(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def _open_store(url, *, with_y: bool):
    from . import engine

    ds = engine.open_dataset(os.fspath(url), y="y" if with_y else None)
    if with_y and ds.y is None:
        raise ValueError(f"the store {os.fspath(url)!r} has no target array 'y'; pass y explicitly")
    return ds


def _draw_seed(random_state) -> int:
    """The feature-map seed for ``random_state`` (see the module docstring)."""
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint32)[0])
    if isinstance(random_state, Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(np.iinfo(np.int32).max))
    raise ValueError(f"random_state must be None, an int or a RandomState, got {random_state!r}")


def _client_or_none():
    """The active ``distributed`` client, or ``None`` (never starts one)."""
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _rechunk_like_rows(y, X):
    """``y`` (NumPy or dask, (n,) or (n, k)) as a dask array chunked like the rows of ``X``."""
    import dask.array as da

    if not _is_dask(y):
        y = np.asarray(y)
        return da.from_array(y, chunks=(X.chunks[0],) + tuple((s,) for s in y.shape[1:]))
    if y.shape[0] != X.shape[0] and not math.isnan(y.shape[0]):
        raise ValueError(f"y has {y.shape[0]} rows but X has {X.shape[0]}")
    return y.rechunk({0: X.chunks[0]} | {i: -1 for i in range(1, y.ndim)})


def _validate_input(est, X, y=None, *, reset: bool, sparse: bool, images: bool):
    """``validate_data`` for 2-D input; images (n, H, W, C) checked with ``allow_nd``.

    ``n_features_in_`` is the flattened row width in both cases.  Returns ``X`` or
    ``(X, y)`` when ``y`` is given.
    """
    if not (images and hasattr(X, "ndim") and X.ndim > 2):
        kw = dict(accept_sparse="csr" if sparse else False, dtype=[np.float64, np.float32])
        if y is None:
            return validate_data(est, X, reset=reset, **kw)
        return validate_data(est, X, y, reset=reset, multi_output=True, **kw)
    X = _sk_check_array(X, allow_nd=True, dtype=[np.float64, np.float32], input_name="X",
                        estimator=est)
    width = int(np.prod(X.shape[1:]))
    if reset:
        est.n_features_in_ = width
    elif width != est.n_features_in_:
        raise ValueError(f"X has {width} features per row (shape {X.shape[1:]}), but "
                         f"{type(est).__name__} is expecting {est.n_features_in_}")
    if y is None:
        return X
    from sklearn.utils.validation import check_consistent_length

    y = _sk_check_array(y, ensure_2d=False, dtype=None, input_name="y")
    check_consistent_length(X, y)
    return X, y


# ========================================================================= transformers
class _BaseSketch(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Shared machinery of every random-feature transformer.

    A subclass only says how to build its feature map (``_make_map(input_shape, seed)``,
    returning an object of the engine's feature-map protocol), which exact kernel it
    approximates (``_exact_kernel``) and whether it takes sparse or image input.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "dtype": [StrOptions({"float32", "float64"})],
    }
    _accepts_sparse = False
    _image_input = False

    # ------------------------------------------------------------------ subclass hooks
    def _make_map(self, input_shape: tuple, seed: int):  # pragma: no cover - interface
        raise NotImplementedError

    def _exact_kernel(self, X, Y):  # pragma: no cover - interface
        raise NotImplementedError

    # --------------------------------------------------------------------- validation
    def _prepare(self, X):
        """Hook to reshape inputs (``CNTKSketch`` turns flat rows into images)."""
        return X

    def _validate(self, X, *, reset: bool):
        """Validate in-memory ``X``; sets/checks ``n_features_in_`` (rows flattened)."""
        return _validate_input(self, X, reset=reset, sparse=self._accepts_sparse,
                               images=self._image_input)

    def _check_row_shape(self, shape: tuple):
        if tuple(shape) != tuple(self.feature_map_.input_shape):
            raise ValueError(f"X rows have shape {tuple(shape)}, but {type(self).__name__} was fitted "
                             f"on rows of shape {tuple(self.feature_map_.input_shape)}")

    def _as_dask_input(self, X, *, reset: bool):
        from . import engine

        if scipy.sparse.issparse(getattr(X, "_meta", None)) and not self._accepts_sparse:
            raise ValueError(f"{type(self).__name__} does not accept sparse input; densify it first")
        if not str(X.name).startswith("dsketch-validate-"):  # open_dataset already attached it
            X = engine.validate_rows(X, name="X")
        X = self._prepare(X)
        width = int(np.prod(X.shape[1:]))
        if reset:
            self.n_features_in_ = width
        elif width != self.n_features_in_:
            raise ValueError(f"X has {width} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return X

    # ------------------------------------------------------------------------ the API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the seed and plan the feature map for rows shaped like those of ``X``.

        Parameters
        ----------
        X : array-like (n, d), sparse matrix, dask array or Zarr store URL
            Only its row shape is used (no data pass).
        y : ignored

        Returns
        -------
        self
        """
        if _is_store(X):
            X = _open_store(X, with_y=False).X
        if _is_dask(X):
            X = self._as_dask_input(X, reset=True)
        else:
            X = self._prepare(self._validate(X, reset=True))
        self.seed_ = _draw_seed(self.random_state)
        self.feature_map_ = self._make_map(tuple(int(s) for s in X.shape[1:]), self.seed_)
        self._n_features_out = self.n_components
        return self

    def transform(self, X):
        """Features of ``X``: ``(n, n_components)`` of ``dtype``.

        NumPy/SciPy input gives a NumPy array; dask input (or a store URL) gives a lazy
        dask array (``dsketch.engine.embed``) whose row chunks follow ``X``'s.
        """
        check_is_fitted(self)
        if _is_store(X):
            X = _open_store(X, with_y=False).X
        if _is_dask(X):
            from . import engine

            X = self._as_dask_input(X, reset=False)
            self._check_row_shape(X.shape[1:])
            return engine.embed(X, self.feature_map_)
        X = self._prepare(self._validate(X, reset=False))
        self._check_row_shape(X.shape[1:])
        return np.asarray(self.feature_map_(X))

    def exact_kernel(self, X, Y=None):
        """The exact kernel that ``transform(X) @ transform(Y).T`` approximates (NumPy)."""
        check_is_fitted(self)
        X = self._prepare(self._validate(X, reset=False))
        Y = X if Y is None else self._prepare(self._validate(Y, reset=False))
        return np.asarray(self._exact_kernel(X, Y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = self._accepts_sparse
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags


class _NetSketch(_BaseSketch):
    """A network's NTK or NNGP features: ``net.sketch(...).output(_output)``."""

    _output = "ntk"
    _parameter_constraints: dict = {
        **_BaseSketch._parameter_constraints,
        "net": [None, HasMethods(["sketch", "kernel"])],
        "degree": [Interval(Integral, 1, None, closed="left")],
        "relu_method": [StrOptions({"poly", "random"})],
    }

    def __init__(self, *, net=None, n_components=1024, random_state=None, degree=8,
                 relu_method="poly", dtype="float32"):
        self.net = net
        self.n_components = n_components
        self.random_state = random_state
        self.degree = degree
        self.relu_method = relu_method
        self.dtype = dtype

    @staticmethod
    def _default_net():
        from .nets import Relu, fully_connected

        return fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.0)

    def _resolved_net(self):
        """The network used (``net`` or the default)."""
        return self.net if self.net is not None else self._default_net()

    def _make_map(self, input_shape, seed):
        fmap = self._resolved_net().sketch(input_shape, self.n_components, seed, degree=self.degree,
                                relu_method=self.relu_method, dtype=self.dtype)
        return fmap.output(self._output)

    def _exact_kernel(self, X, Y):
        return getattr(self._resolved_net().kernel(X, Y), self._output)


class NTKSketch(_NetSketch):
    """Random features of a network's neural tangent kernel (NTK).

    ``NTKSketch(net=net, n_components=m, random_state=s).fit_transform(X)`` equals
    ``net.sketch(X.shape[1:], m, seed=s)(X).ntk`` exactly.

    Parameters
    ----------
    net : Serial, default=None
        A network from :mod:`dsketch.nets` (``serial(...)``, ``fully_connected``...).
        ``None`` means ``fully_connected(2, Relu(), W_std=√2, b_std=0)``.
    n_components : int, default=1024
        Number of features ``m``.
    random_state : int, RandomState instance or None, default=None
        Seed of the feature map (see the module docstring); the seed used is ``seed_``.
    degree : int, default=8
        Truncation degree of each activation's polynomial expansion.
    relu_method : {"poly", "random"}, default="poly"
        ReLU-family sketch: arc-cosine polynomial fit + PolySketch, or random features.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the features.

    Attributes
    ----------
    feature_map_ : SelectedFeatures
        The hashable feature-map spec (``net.sketch(...).output("ntk")``).
    seed_ : int
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from dsketch.estimators import NTKSketch
    >>> X = np.random.default_rng(0).normal(size=(5, 3))
    >>> NTKSketch(n_components=64, random_state=0).fit_transform(X).shape
    (5, 64)
    """

    _output = "ntk"


class NNGPSketch(_NetSketch):
    """Random features of a network's NNGP kernel (the infinitely wide Bayesian network).

    Same parameters as :class:`NTKSketch`; ``fit_transform(X)`` equals
    ``net.sketch(X.shape[1:], m, seed=s)(X).nngp``.  With :class:`SketchRidge`,
    ``predict(X, return_std=True)`` gives the NNGP posterior's standard deviation.
    """

    _output = "nngp"


class CNTKSketch(_NetSketch):
    """Random features of a convolutional network's NTK (CNTK), for images.

    Parameters
    ----------
    net : Serial, default=None
        A convolutional network ending in ``GlobalAvgPool``/``Flatten`` + ``Dense``;
        ``None`` means ``myrtle(5)``.
    image_shape : tuple (H, W, C), default=None
        When given, 2-D input rows of width ``H·W·C`` are reshaped to channels-last images
        (so flat Zarr arrays and scikit-learn pipelines work); 4-D ``(n, H, W, C)`` input is
        always accepted.
    n_components, random_state, degree, relu_method, dtype
        As in :class:`NTKSketch`.
    """

    _output = "ntk"
    _image_input = True
    _parameter_constraints: dict = {**_NetSketch._parameter_constraints, "image_shape": [None, tuple]}

    def __init__(self, *, net=None, image_shape=None, n_components=1024, random_state=None,
                 degree=8, relu_method="poly", dtype="float32"):
        super().__init__(net=net, n_components=n_components, random_state=random_state,
                         degree=degree, relu_method=relu_method, dtype=dtype)
        self.image_shape = image_shape

    @staticmethod
    def _default_net():
        from .nets import myrtle

        return myrtle(5)

    def _prepare(self, X):
        if X.ndim == 2:
            if self.image_shape is None:
                raise ValueError("CNTKSketch takes images (n, H, W, C); for flat rows pass "
                                 "image_shape=(H, W, C)")
            shape = tuple(int(s) for s in self.image_shape)
            if len(shape) != 3 or int(np.prod(shape)) != X.shape[1]:
                raise ValueError(f"image_shape {shape} does not match rows of width {X.shape[1]}")
            return X.reshape((X.shape[0],) + shape)
        if X.ndim != 4:
            raise ValueError(f"CNTKSketch takes images (n, H, W, C), got shape {X.shape}")
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


class _KernelSketch(_BaseSketch):
    """A map of :mod:`dsketch.sketch.kernels`: ``_map_name`` built with ``_map_params``."""

    _map_name = ""
    _map_params: tuple = ()

    def _map_class(self):
        from .sketch import kernels

        return getattr(kernels, self._map_name)

    def _make_map(self, input_shape, seed):
        kwargs = {k: getattr(self, k) for k in self._map_params}
        return self._map_class()(input_dim=int(input_shape[0]), n_features=self.n_components,
                                 seed=seed, dtype=self.dtype, **kwargs)

    def _exact_kernel(self, X, Y):
        return self.feature_map_.kernel(X, Y)


class NTKRandomFeatures(_KernelSketch):
    """Random features of the NTK of a fully connected ReLU network (arc-cosine based).

    Parameters
    ----------
    depth : int, default=1
        Number of hidden layers.
    W_std, b_std : float
        neural-tangents NTK parameterization.
    leverage : bool, default=True
        Leverage-score sampling of the first layer's features.
    n_components, random_state, dtype
        As in :class:`NTKSketch`.
    """

    _map_name = "NTKRandomFeatures"
    _map_params = ("depth", "W_std", "b_std", "leverage")
    _parameter_constraints: dict = {
        **_BaseSketch._parameter_constraints,
        "depth": [Interval(Integral, 1, None, closed="left")],
        "W_std": [Interval(Real, 0, None, closed="neither")],
        "b_std": [Interval(Real, 0, None, closed="left")],
        "leverage": ["boolean"],
    }

    def __init__(self, *, depth=1, W_std=1.0, b_std=0.0, leverage=True, n_components=1024,
                 random_state=None, dtype="float32"):
        self.depth = depth
        self.W_std = W_std
        self.b_std = b_std
        self.leverage = leverage
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype


class PolynomialSketch(_KernelSketch):
    """Sketch of the polynomial kernel ``(gamma·⟨x, y⟩ + coef0)^degree``.

    Parameters
    ----------
    degree : int, default=2
    gamma : float, default=1.0
    coef0 : float, default=0.0
    method : {"polysketch", "ctr", "tensorsketch"}, default="polysketch"
        Sketching method of :class:`dsketch.sketch.kernels.PolynomialSketch`
        ("tensorsketch" is scikit-learn's ``PolynomialCountSketch`` estimator).
    leaf : {"srht", "countsketch"}, default="srht"
        Leaves of the polysketch tree; "countsketch" runs in input-sparsity time.
    n_components, random_state, dtype
        As in :class:`NTKSketch`.

    Notes
    -----
    SciPy sparse input (and dask arrays of sparse blocks) is accepted with
    ``method="tensorsketch"`` or ``leaf="countsketch"``; the other settings refuse it with
    a ``TypeError`` before computing anything.
    """

    _map_name = "PolynomialSketch"
    _map_params = ("degree", "gamma", "coef0", "method", "leaf")
    _parameter_constraints: dict = {
        **_BaseSketch._parameter_constraints,
        "degree": [Interval(Integral, 1, None, closed="left")],
        "gamma": [Interval(Real, 0, None, closed="neither")],
        "coef0": [Interval(Real, 0, None, closed="left")],
        "method": [StrOptions({"polysketch", "ctr", "tensorsketch"})],
        "leaf": [StrOptions({"srht", "countsketch"})],
    }

    def __init__(self, *, degree=2, gamma=1.0, coef0=0.0, method="polysketch", leaf="srht",
                 n_components=1024, random_state=None, dtype="float32"):
        self.degree = degree
        self.gamma = gamma
        self.coef0 = coef0
        self.method = method
        self.leaf = leaf
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype

    @property
    def _accepts_sparse(self) -> bool:
        return self.method == "tensorsketch" or self.leaf == "countsketch"


class RandomFourierFeatures(_KernelSketch):
    """Random Fourier features of the Gaussian kernel ``exp(-gamma·‖x − y‖²)``.

    Parameters
    ----------
    gamma : float, default=1.0
    n_components, random_state, dtype
        As in :class:`NTKSketch`.
    """

    _map_name = "RandomFourierFeatures"
    _map_params = ("gamma",)
    _parameter_constraints: dict = {
        **_BaseSketch._parameter_constraints,
        "gamma": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, gamma=1.0, n_components=1024, random_state=None, dtype="float32"):
        self.gamma = gamma
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype


class ArcCosineFeatures(_KernelSketch):
    """Random features of the arc-cosine kernel of ``order`` 0, 1 or 2 (Cho & Saul).

    Parameters
    ----------
    order : int, default=1
    n_components, random_state, dtype
        As in :class:`NTKSketch`.
    """

    _map_name = "ArcCosineFeatures"
    _map_params = ("order",)
    _parameter_constraints: dict = {
        **_BaseSketch._parameter_constraints,
        "order": [Interval(Integral, 0, 2, closed="both")],
    }

    def __init__(self, *, order=1, n_components=1024, random_state=None, dtype="float32"):
        self.order = order
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype


# ====================================================================== ridge on a Gram
def _memory_gram(Phi, Y, n_folds: int | None, fold_seed: int, slab: int = 8192):
    """In-memory equivalent of ``dsketch.engine.gram`` (same ``Gram`` record, same folds).

    Accumulates in float64 over slabs of ``slab`` rows, so the float64 copy of Φ is bounded.
    """
    from .engine import Gram, fold_ids

    n, m, k = int(Phi.shape[0]), int(Phi.shape[1]), int(Y.shape[1])
    F = int(n_folds or 1)
    ids = fold_ids(n, F, fold_seed) if n_folds else np.zeros(n, dtype=np.int64)
    Gs, Bs = np.zeros((F, m, m)), np.zeros((F, m, k))
    yys, ns = np.zeros((F, k)), np.zeros(F, dtype=np.int64)
    for start in range(0, n, slab):
        P = np.asarray(Phi[start:start + slab], dtype=np.float64)
        Ys, fs = Y[start:start + slab], ids[start:start + slab]
        for f in range(F):
            rows = fs == f
            Pf, Yf = (P, Ys) if F == 1 else (P[rows], Ys[rows])
            Gs[f] += Pf.T @ Pf
            Bs[f] += Pf.T @ Yf
            yys[f] += np.sum(Yf * Yf, axis=0)
            ns[f] += Pf.shape[0]
    gram = Gram(G=Gs.sum(axis=0), B=Bs.sum(axis=0), yy=yys.sum(axis=0), n=n)
    if n_folds:
        gram.G_folds, gram.B_folds = list(Gs), list(Bs)
        gram.yy_folds, gram.n_folds = list(yys), [int(c) for c in ns]
    return gram


def _eig(G):
    lam, V = scipy.linalg.eigh(G, driver="evd")
    return np.maximum(lam, 0.0), V


def _path_errors(G, B, Gv, Bv, yyv, alphas):
    """Squared validation error Σ‖Y_v − Φ_v W(α)‖² of ridge fitted on (G, B), per alpha.

    One eigendecomposition G = V Λ Vᵀ; for each α, W = V (VᵀB / (λ + α)) and
    err = yy_v − 2·tr(WᵀB_v) + tr(Wᵀ G_v W): O(m²·k) per alpha after the O(m³) eigh.
    """
    lam, V = _eig(G)
    C = V.T @ B
    out = np.empty(len(alphas))
    for j, a in enumerate(alphas):
        W = V @ (C / (lam + a)[:, None])
        out[j] = float(np.sum(yyv) - 2.0 * np.sum(W * Bv) + np.sum(W * (Gv @ W)))
    return np.maximum(out, 0.0)


def _cv_curve(gram, alphas):
    """Per-fold validation MSE of every alpha from the per-fold partial Grams.

    The train Gram of fold k is G − G_k (and B − B_k): no extra pass over the data.
    """
    nf = len(gram.G_folds)
    t = gram.B.shape[1]
    errs = np.empty((nf, len(alphas)))
    for k in range(nf):
        sq = _path_errors(gram.G - gram.G_folds[k], gram.B - gram.B_folds[k],
                          gram.G_folds[k], gram.B_folds[k], gram.yy_folds[k], alphas)
        errs[k] = sq / max(gram.n_folds[k] * t, 1)
    weights = np.asarray(gram.n_folds, dtype=float)
    mean = (weights[:, None] * errs).sum(axis=0) / weights.sum()
    results = {"alphas": [float(a) for a in alphas], "mean_test_mse": mean.tolist(),
               "std_test_mse": errs.std(axis=0).tolist()}
    for k in range(nf):
        results[f"split{k}_test_mse"] = errs[k].tolist()
    return results, mean


def _gcv_curve(gram, lam, V, alphas):
    """Generalized cross-validation n·RSS/(n − df)² from the full Gram only (cv=None)."""
    C = V.T @ gram.B
    n, t = gram.n, gram.B.shape[1]
    scores = np.empty(len(alphas))
    for j, a in enumerate(alphas):
        Wr = C / (lam + a)[:, None]
        rss = float(np.sum(gram.yy) - 2.0 * np.sum(Wr * C) + np.sum(Wr * (lam[:, None] * Wr)))
        df = float(np.sum(lam / (lam + a)))
        scores[j] = n * max(rss, 0.0) / t / max(n - df, 1e-12) ** 2
    return {"alphas": [float(a) for a in alphas], "gcv_mse": scores.tolist()}, scores


def _memory_cg(Phi, Y, alpha, tol, maxiter):
    """CG on (ΦᵀΦ + αI) W = ΦᵀY for in-memory Φ (column by column; scipy's CG)."""
    from scipy.sparse.linalg import LinearOperator, cg

    m = Phi.shape[1]
    P = Phi.astype(np.float64, copy=False)
    op = LinearOperator((m, m), matvec=lambda v: P.T @ (P @ v) + alpha * v, dtype=np.float64)
    B = P.T @ Y
    W = np.zeros((m, Y.shape[1]))
    residuals: list[float] = []
    iters, converged = 0, True
    bnorm = np.linalg.norm(B, axis=0)
    for j in range(Y.shape[1]):
        hist: list[float] = []

        def cb(xk, j=j, hist=hist):
            r = B[:, j] - op.matvec(xk)
            hist.append(float(np.linalg.norm(r) / max(bnorm[j], 1e-300)))

        W[:, j], info = cg(op, B[:, j], rtol=tol, maxiter=maxiter, callback=cb)
        converged &= info == 0
        iters = max(iters, len(hist))
        residuals = hist if len(hist) > len(residuals) else residuals
    return W, iters, residuals, bool(converged)


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
    }

    def __init__(self, *, sketch=None, alpha=1.0, solver="auto", cv=5, tol=1e-6, max_iter=200,
                 posterior_std=False):
        self.sketch = sketch
        self.alpha = alpha
        self.solver = solver
        self.cv = cv
        self.tol = tol
        self.max_iter = max_iter
        self.posterior_std = posterior_std

    # ---------------------------------------------------------------------- helpers
    def _alphas(self) -> np.ndarray:
        a = np.atleast_1d(np.asarray(self.alpha, dtype=np.float64))
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"alpha must be a positive number or a 1-D grid, got {self.alpha!r}")
        if not np.all(np.isfinite(a)) or np.any(a <= 0):
            raise ValueError(f"alpha values must be finite and > 0, got {a.tolist()}")
        return a

    def _sketch_template(self):
        return NTKSketch() if self.sketch is None else self.sketch

    def _sketch_flags(self):
        s = self._sketch_template()
        return getattr(s, "_accepts_sparse", False), getattr(s, "_image_input", False)

    def _validate_X(self, X, y=None, *, reset: bool):
        sparse, images = self._sketch_flags()
        return _validate_input(self, X, y, reset=reset, sparse=sparse, images=images)

    # -------------------------------------------------------------------------- fit
    def _fit(self, X, y):
        alphas = self._alphas()
        grid = alphas.size > 1
        if (grid or self.posterior_std) and self.solver == "cg":
            what = "an alpha grid is selected" if grid else "posterior_std is computed"
            raise ValueError(f"{what} from the m×m Gram matrix (solver='direct' or 'auto'); "
                             "with solver='cg' pass a single alpha and posterior_std=False")
        if _is_store(X):
            ds = _open_store(X, with_y=y is None)
            X, y = ds.X, (ds.y if y is None else y)
        start = time.perf_counter()
        if _is_dask(X):
            self.sketch_ = clone(self._sketch_template()).fit(X)
            self.n_features_in_ = self.sketch_.n_features_in_
            Y = self._encode_y_dask(_rechunk_like_rows(y, X) if y is not None else None)
            Phi = self.sketch_.transform(X)
            n = int(X.shape[0])
        else:
            if y is None:
                raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
            X, y = self._validate_X(X, y, reset=True)
            Y = self._encode_y(y)
            self.sketch_ = clone(self._sketch_template()).fit(X)
            Phi = self.sketch_.transform(X)
            n = int(Phi.shape[0])
        m = int(self.sketch_.n_components)
        self._solve(Phi, Y, alphas, grid, n, m, start)
        return self

    def _encode_y_dask(self, y):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = y.astype(np.float64)
        return y[:, None] if y.ndim == 1 else y

    def _solve(self, Phi, Y, alphas, grid, n, m, start):
        from . import engine
        from .dashboard import track_fit

        lazy = _is_dask(Phi)
        t = int(Y.shape[1])
        solver = self.solver
        if solver == "auto" and not lazy:
            solver = "direct" if m <= _AUTO_DIRECT_MAX_FEATURES else "cg"
        need_gram = grid or self.posterior_std or solver == "direct"
        n_folds = self.cv if (grid and self.cv) else None
        fold_seed = int(getattr(self.sketch_, "seed_", 0) or 0)
        self.cv_results_ = None
        with track_fit(_client_or_none() if lazy else None, estimator=type(self).__name__,
                       n_rows=n, n_features=m, Phi=Phi if lazy else None) as progress:
            lam = V = None
            if need_gram:
                progress.phase("gram")
                gram = (engine.gram(Phi, Y, n_folds=n_folds, fold_seed=fold_seed) if lazy
                        else _memory_gram(Phi, Y, n_folds, fold_seed))
                progress.phase("solve", rows_done=n)
                if grid:
                    if n_folds:
                        self.cv_results_, score = _cv_curve(gram, alphas)
                    else:
                        lam, V = _eig(gram.G)
                        self.cv_results_, score = _gcv_curve(gram, lam, V, alphas)
                    alpha = float(alphas[int(np.argmin(score))])
                    progress.update(cv=self.cv_results_, alpha=alpha)
                else:
                    alpha = float(alphas[0])
                if self.posterior_std or grid:
                    if lam is None:
                        lam, V = _eig(gram.G)
                    W = V @ ((V.T @ gram.B) / (lam + alpha)[:, None])
                else:
                    W = np.asarray(engine.solve_gram(gram, alpha), dtype=np.float64)
                if self.posterior_std:
                    self.posterior_factor_ = V * np.sqrt(alpha / (lam + alpha))[None, :]
                report = dict(solver="direct", reason="alpha grid (regularization path)" if grid
                              else ("posterior_std" if self.posterior_std else f"solver={self.solver!r}"),
                              iterations=None, residuals=[], converged=True)
            elif lazy:
                alpha = float(alphas[0])
                progress.phase("gram")  # the first pass: the Gram, or CG's setup pass
                W, rep = engine.fit_ridge(Phi, Y, alpha=alpha, solver=solver, tol=self.tol,
                                          maxiter=self.max_iter,
                                          **_maybe_callback(engine.fit_ridge, progress))
                W = np.asarray(W, dtype=np.float64)
                report = rep.to_dict() if hasattr(rep, "to_dict") else dict(rep)
            else:
                alpha = float(alphas[0])
                progress.phase("cg")
                W, iters, residuals, converged = _memory_cg(Phi, Y, alpha, self.tol, self.max_iter)
                report = dict(solver="cg", reason=f"solver={self.solver!r}", iterations=iters,
                              residuals=residuals, converged=converged)
            report.update(n_samples=n, n_features=m, n_targets=t, alpha=alpha,
                          seconds=time.perf_counter() - start)
            progress.update(residuals=report.get("residuals", []))
        self.alpha_ = alpha
        self.fit_report_ = report
        self.n_iter_ = int(report.get("iterations") or 1)
        self._set_coef(W)

    def _set_coef(self, W):
        self.coef_ = W

    # ---------------------------------------------------------------------- predict
    def _features(self, X):
        check_is_fitted(self)
        if _is_store(X):
            X = _open_store(X, with_y=False).X
        if _is_dask(X):
            return self.sketch_.transform(X)
        X = self._validate_X(X, reset=False)
        return self.sketch_.transform(X)

    def _decision(self, Phi):
        """Φ W: NumPy in memory, lazy for dask (``engine.predict``); always 2-D."""
        W = self.coef_ if self.coef_.ndim == 2 else self.coef_[:, None]
        if _is_dask(Phi):
            from . import engine

            return engine.predict(Phi, W)
        return Phi @ W

    def _std(self, Phi):
        if getattr(self, "posterior_factor_", None) is None:
            raise ValueError("return_std=True needs a model fitted with posterior_std=True")
        S = self.posterior_factor_
        if _is_dask(Phi):
            from . import engine

            return (engine.predict(Phi, S) ** 2).sum(axis=1) ** 0.5  # S travels as one key
        return np.sqrt(np.sum((Phi.astype(np.float64) @ S) ** 2, axis=1))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        sparse, _ = self._sketch_flags()
        tags.input_tags.sparse = sparse
        return tags


def _maybe_callback(func, progress) -> dict:
    """``callback=`` for ``engine.fit_ridge`` when it takes one (per-iteration residuals)."""
    import inspect

    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return {}
    return {"callback": progress.residual} if "callback" in params else {}


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
        from ONE pass over the data: the per-fold Grams G_k give every fold's training
        Gram as G − G_k and its validation error in closed form, for every alpha, after
        one eigendecomposition per fold.
    solver : {"auto", "direct", "cg"}, default="auto"
        "direct": form the m × m Gram in one pass and factor it; "cg": conjugate gradients
        whose matvec is a pass over Φ (for large m; a single alpha only); "auto": direct for
        in-memory input with m ≤ 8192, the engine's choice for dask input.
    cv : int or None, default=5
        Folds for an alpha grid (rows are assigned to folds by
        ``dsketch.engine.fold_ids(n, cv, seed_)``, the same for NumPy and dask input);
        ``None`` uses generalized cross-validation (GCV) on the full Gram instead.
    tol : float, default=1e-6
        Relative residual tolerance of CG.
    max_iter : int, default=200
        CG iterations at most.
    posterior_std : bool, default=False
        Keep the m × m posterior factor so that ``predict(X, return_std=True)`` works.

    Attributes
    ----------
    sketch_ : transformer
        The fitted transformer (its ``feature_map_`` and ``seed_``).
    coef_ : ndarray (m,) or (m, k)
        Weights on the features (float64).
    alpha_ : float
        The alpha used (selected from the grid when ``alpha`` is one).
    cv_results_ : dict or None
        For a grid: ``alphas``, ``mean_test_mse``, ``std_test_mse``, ``split{k}_test_mse``
        (or ``gcv_mse`` when ``cv=None``).
    fit_report_ : dict
        solver, reason, n_samples, n_features, n_targets, alpha, iterations, residuals,
        converged, seconds (plus the engine's extra fields for dask input).
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
        ±1 or 0/1 encoding of the one-vs-rest targets.  An alpha grid is selected by the
        cross-validated mean squared error on these encoded targets (computable from the
        per-fold Grams), not by accuracy.

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

    def __init__(self, *, sketch=None, alpha=1.0, solver="auto", cv=5, tol=1e-6, max_iter=200,
                 posterior_std=False, targets="signed"):
        super().__init__(sketch=sketch, alpha=alpha, solver=solver, cv=cv, tol=tol,
                         max_iter=max_iter, posterior_std=posterior_std)
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
        import dask.array as da

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        if y.ndim != 1:
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            else:
                raise ValueError(f"classification labels y must be 1-D, got shape {y.shape}")
        self.classes_ = np.asarray(da.unique(y).compute())
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
        if _is_dask(d):
            return d.map_blocks(lambda b: classes[np.argmax(b, axis=1)], dtype=classes.dtype,
                                drop_axis=1)
        return classes[np.argmax(d, axis=1)]
