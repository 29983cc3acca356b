"""The random-feature transformers: scikit-learn wiring of ``dsketch.nets`` / ``dsketch.sketch`` maps.

Owns :class:`NTKSketch`, :class:`NNGPSketch`, :class:`CNTKSketch` (a network's features,
``net.sketch(...)``) and :class:`NTKRandomFeatures`, :class:`PolynomialSketch`,
:class:`RandomFourierFeatures`, :class:`ArcCosineFeatures` (maps of
:mod:`dsketch.sketch.kernels`).  ``fit`` draws the seed and plans the map (no data pass, but for :class:`CNTKSketch`'s
optional ZCA whitening, one); ``transform`` runs it in memory, or lazily through
``dsketch.engine.embed`` for dask input.
Every transformer but :class:`CNTKSketch` takes SciPy sparse rows (CSR; CSC converted) and
sparse stores, with the features of their dense copy (see :mod:`dsketch.nets.input_layer`).
Must not hold kernel maths or Dask graph code: it wires them.
"""

from __future__ import annotations

import dataclasses

import math
from numbers import Integral, Real

import numpy as np
import scipy.sparse
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                          _fit_context)
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from .. import engine, sketch
from ..backend import InvalidInputError
from ..nets import Relu, fully_connected, myrtle
from ..nets.activation_sketch import METHODS
from ..nets.input_layer import check_sparse_rows
from ..nets.serial import check_net
from ._data import check_row_width, draw_seed, is_dask, is_store, open_store, validate_input

__all__ = ["NTKSketch", "NNGPSketch", "CNTKSketch", "NTKRandomFeatures", "PolynomialSketch",
           "RandomFourierFeatures", "ArcCosineFeatures"]


class BaseSketch(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
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
    _accepts_sparse = True
    _image_input = False

    # ------------------------------------------------------------------ subclass hooks
    def _make_map(self, input_shape: tuple, seed: int):  # pragma: no cover - interface
        raise NotImplementedError

    def _exact_kernel(self, X, Y):  # pragma: no cover - interface
        raise NotImplementedError

    def _learn(self, X) -> None:
        """Hook: learn data-dependent state from the prepared rows of ``fit`` (none here)."""

    def _preprocess(self, X):
        """Hook: the learned preprocessing of prepared rows before the map (identity here)."""
        return X

    def check_fitted_state(self) -> None:
        """Raise ``ValueError`` naming the attribute when the fitted state contradicts itself.

        ``feature_map_`` must be the map that the parameters and ``seed_`` build, with
        ``_n_features_out`` columns; :func:`dsketch.load_model` asks this of a loaded model.
        """
        fmap = getattr(self, "feature_map_", None)
        if fmap is None or not hasattr(self, "seed_"):
            raise ValueError("a fitted transformer needs feature_map_ and seed_")
        if not dataclasses.is_dataclass(fmap) or not hasattr(fmap, "input_shape"):
            raise ValueError(f"feature_map_ is a {type(fmap).__name__}, not a feature map spec")
        try:
            expected = self._make_map(tuple(fmap.input_shape), self.seed_)
        except Exception as exc:  # noqa: BLE001 - any failure means the file disagrees
            raise ValueError(f"cannot rebuild the feature map from the parameters: {exc}") from None
        if expected != fmap:
            raise ValueError("feature_map_ does not match the parameters and seed_")
        if getattr(self, "_n_features_out", fmap.n_features) != fmap.n_features:
            raise ValueError("_n_features_out does not match the feature map")

    # --------------------------------------------------------------------- validation
    def _prepare(self, X):
        """Hook to reshape inputs (``CNTKSketch`` turns flat rows into images)."""
        return X

    def _refuse_sparse(self, width: int):
        """Raise the error for sparse input to a transformer that cannot take it."""
        raise InvalidInputError(f"{type(self).__name__} does not accept sparse input; densify it first")

    def _validate(self, X, *, reset: bool):
        """Validate in-memory ``X``; sets/checks ``n_features_in_`` (rows flattened)."""
        if not self._accepts_sparse and scipy.sparse.issparse(X):
            self._refuse_sparse(X.shape[1])
        return validate_input(self, X, reset=reset, sparse=self._accepts_sparse,
                              images=self._image_input)

    def _check_row_shape(self, shape: tuple):
        if tuple(shape) != tuple(self.feature_map_.input_shape):
            raise ValueError(f"X rows have shape {tuple(shape)}, but {type(self).__name__} was fitted "
                             f"on rows of shape {tuple(self.feature_map_.input_shape)}")

    def _as_dask_input(self, X, *, reset: bool):
        if scipy.sparse.issparse(getattr(X, "_meta", None)) and not self._accepts_sparse:
            self._refuse_sparse(X.shape[1])
        if not str(X.name).startswith("dsketch-validate-"):  # open_dataset already attached it
            X = engine.validate_rows(X, name="X")
        X = self._prepare(X)
        check_row_width(self, X, reset=reset)
        return X

    def _input(self, X, *, reset: bool):
        """Any accepted input (NumPy/SciPy, dask, a store URL) validated and prepared."""
        if is_store(X):
            X = open_store(X, with_y=False).X
        if is_dask(X):
            return self._as_dask_input(X, reset=reset)
        return self._prepare(self._validate(X, reset=reset))

    # ------------------------------------------------------------------------ the API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the seed and plan the feature map for rows shaped like those of ``X``.

        Parameters
        ----------
        X : array-like (n, d), sparse matrix, dask array or Zarr store URL
            Only its row shape is used (no data pass; :class:`CNTKSketch` with
            ``zca_regularization`` makes one).
        y : ignored

        Returns
        -------
        self
        """
        X = self._input(X, reset=True)
        self.seed_ = draw_seed(self.random_state)
        self.feature_map_ = self._make_map(tuple(int(s) for s in X.shape[1:]), self.seed_)
        self._n_features_out = self.n_components
        self._learn(X)
        return self

    def transform(self, X):
        """Features of ``X``: ``(n, n_components)`` of ``dtype``.

        NumPy/SciPy input gives a NumPy array; dask input (or a store URL) gives a lazy
        dask array (``dsketch.engine.embed``) whose row chunks follow ``X``'s.
        """
        check_is_fitted(self)
        X = self._input(X, reset=False)
        self._check_row_shape(X.shape[1:])
        X = self._preprocess(X)
        if is_dask(X):
            return engine.embed(X, self.feature_map_)
        return np.asarray(self.feature_map_(X))

    def exact_kernel(self, X, Y=None):
        """The exact kernel that ``transform(X) @ transform(Y).T`` approximates (NumPy)."""
        check_is_fitted(self)
        X = self._preprocess(self._prepare(self._validate(X, reset=False)))
        Y = X if Y is None else self._preprocess(self._prepare(self._validate(Y, reset=False)))
        return np.asarray(self._exact_kernel(X, Y))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = self._accepts_sparse
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags


class _NetSketch(BaseSketch):
    """A network's NTK or NNGP features: ``net.sketch(...).output(_output)``."""

    _output = "ntk"
    _parameter_constraints: dict = {
        **BaseSketch._parameter_constraints,
        "net": [None, HasMethods(["sketch", "kernel"])],
        "degree": [Interval(Integral, 1, None, closed="left")],
        "relu_method": [StrOptions({"poly", "random"})],
        "method": [StrOptions(set(METHODS))],
    }

    def __init__(self, *, net=None, n_components=1024, random_state=None, degree=8,
                 relu_method="poly", dtype="float32", method="auto"):
        self.net = net
        self.n_components = n_components
        self.random_state = random_state
        self.degree = degree
        self.relu_method = relu_method
        self.dtype = dtype
        self.method = method

    @staticmethod
    def _default_net():
        return fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.0)

    def _resolved_net(self):
        """The network used (``net`` or the default); a bare layer is refused (``check_net``)."""
        return check_net(self.net) if self.net is not None else self._default_net()

    def _make_map(self, input_shape, seed):
        fmap = self._resolved_net().sketch(input_shape, self.n_components, seed, degree=self.degree,
                                relu_method=self.relu_method, dtype=self.dtype, method=self.method,
                                **self._hidden())
        return fmap.output(self._output)

    def _hidden(self) -> dict:
        """Per-layer width/degree arguments of ``net.sketch`` (image nets only)."""
        return {}

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
    method : {"auto", "hermite", "random", "mix"}, default="auto"
        Estimator of the other activations' sketches (see ``Serial.sketch``).

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
    n_components, random_state, degree, relu_method, dtype, method
        As in :class:`NTKSketch`; ``n_components`` and ``degree`` hold on the net's smallest
        feature map and after it (the hidden ones below on the larger maps).
    hidden_components : int or None, default=2048
        Width of the per-pixel features on the feature maps larger than the net's smallest
        one, at most ``n_components`` (None: ``n_components``).  They hold most pixels,
        hence most of the cost per image, so a wide ``n_components`` costs little more than
        this width (``Serial.sketch``'s ``hidden_features``).  Measured (Fashion-MNIST
        14×14, Myrtle-5, ``benchmarks/cntk_scale.py``): 4,096 there is no more accurate than
        2,048 at m = 8,192, and 1,024 loses about 1 pt.  On full-size 28×28 images
        (ZCA ε = 1, m = 16,384; 4,000 training images scored on 2,000 other training
        images) 1,024 is the best of 512/1,024/2,048 (0.8810/0.8870/0.8840) at half the
        cost of 2,048, and beats 14×14 images at 2,048 (0.8715); on all 60,000 28×28
        images: 0.9206 (``benchmarks/cntk_scale.py``).
    hidden_degree : int or None, default=2
        Expansion degree on the same larger maps (None: ``degree``).  Measured there: 2 is
        faster than 8 and at least as accurate; the smallest map keeps ``degree`` (8 gains
        about 0.5 pt over 2 at m = 8,192).
    zca_regularization : float or None, default=None
        When given (``ε > 0``), ``fit`` learns a ZCA whitening of the training images (one
        pass: mean and covariance, ``dsketch.engine.fit_zca``) and every image is whitened,
        ``W (x − μ)`` with ``W = (C + ε·mean eig(C)·I)^(-1/2)``, before the net: the kernel
        is the CNTK of whitened images (the kernel literature's image preprocessing).
        Measured (Fashion-MNIST 14×14, Myrtle-5, m = 16,384; 4,000 training images scored
        on 2,000 other training images): none 0.8550, ε = 0.3 0.8735, 1 0.8715, 3 0.8580;
        on all 60,000 (``benchmarks/cntk_scale.py``): 0.8988 → 0.9049 with ε = 1.

    Attributes
    ----------
    feature_map_ : SelectedFeatures
    seed_ : int
    n_features_in_ : int
    zca_mean_ : ndarray (H·W·C,)
        Training mean of the flattened images (only with ``zca_regularization``).
    zca_matrix_ : ndarray (H·W·C, H·W·C)
        The symmetric whitening matrix ``W`` (only with ``zca_regularization``).

    Examples
    --------
    Wide features at little more than the cost of narrow ones::

        CNTKSketch(n_components=16384)            # 2,048 wide on the 14×14 and 7×7 maps
        CNTKSketch(n_components=4096, hidden_components=None, hidden_degree=None)  # uniform
        CNTKSketch(n_components=16384, zca_regularization=1.0)  # whitened images
        CNTKSketch(n_components=16384, hidden_components=1024,  # 28×28 images
                   zca_regularization=1.0)
    """

    _output = "ntk"
    _image_input = True
    _accepts_sparse = False
    _parameter_constraints: dict = {
        **_NetSketch._parameter_constraints,
        "image_shape": [None, tuple],
        "hidden_components": [None, Interval(Integral, 2, None, closed="left")],  # capped at m
        "hidden_degree": [None, Interval(Integral, 1, None, closed="left")],
        "zca_regularization": [None, Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, net=None, image_shape=None, n_components=1024, random_state=None,
                 degree=8, relu_method="poly", dtype="float32", method="auto",
                 hidden_components=2048, hidden_degree=2, zca_regularization=None):
        super().__init__(net=net, n_components=n_components, random_state=random_state,
                         degree=degree, relu_method=relu_method, dtype=dtype, method=method)
        self.image_shape = image_shape
        self.hidden_components = hidden_components
        self.hidden_degree = hidden_degree
        self.zca_regularization = zca_regularization

    def _hidden(self) -> dict:
        h = self.hidden_components
        return {"hidden_features": None if h is None else min(h, self.n_components),
                "hidden_degree": self.hidden_degree}

    @staticmethod
    def _default_net():
        return myrtle(5)

    def _learn(self, X) -> None:
        for name in ("zca_mean_", "zca_matrix_"):  # a refit without whitening drops the old one
            self.__dict__.pop(name, None)
        if self.zca_regularization is not None:
            self.zca_mean_, self.zca_matrix_ = engine.fit_zca(X, float(self.zca_regularization))

    def _preprocess(self, X):
        if getattr(self, "zca_matrix_", None) is None:  # the fitted state decides, as in fit
            return X
        return engine.apply_zca(X, self.zca_mean_, self.zca_matrix_)

    def check_fitted_state(self) -> None:
        """As :meth:`BaseSketch.check_fitted_state`, and the ZCA state matches ``zca_regularization``."""
        super().check_fitted_state()
        state = [getattr(self, name, None) for name in ("zca_mean_", "zca_matrix_")]
        if self.zca_regularization is None:
            if any(a is not None for a in state):
                raise ValueError("zca_mean_/zca_matrix_ are set but zca_regularization is None")
            return
        d = math.prod(self.feature_map_.input_shape)
        for name, a, shape in zip(("zca_mean_", "zca_matrix_"), state, ((d,), (d, d))):
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype.kind != "f" \
                    or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be a finite float array of shape {shape} "
                                 "(zca_regularization is set)")

    def _refuse_sparse(self, width: int):
        """Name the net's first layer that needs images (``check_sparse_rows`` raises)."""
        shape = tuple(self.image_shape) if self.image_shape is not None else (1, 1, width)
        check_sparse_rows(None, self._resolved_net().layers, shape, "X")
        super()._refuse_sparse(width)

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


class KernelMapSketch(BaseSketch):
    """A map of :mod:`dsketch.sketch`: ``_map_name`` built with ``_map_params``."""

    _map_name = ""
    _map_params: tuple = ()

    def _map_class(self):
        return getattr(sketch, self._map_name)

    def _make_map(self, input_shape, seed):
        kwargs = {k: getattr(self, k) for k in self._map_params}
        return self._map_class()(input_dim=int(input_shape[0]), n_features=self.n_components,
                                 seed=seed, dtype=self.dtype, **kwargs)

    def _exact_kernel(self, X, Y):
        return self.feature_map_.kernel(X, Y)


class NTKRandomFeatures(KernelMapSketch):
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
        **BaseSketch._parameter_constraints,
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


class PolynomialSketch(KernelMapSketch):
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
    SciPy sparse input (and dask arrays of sparse blocks) goes in as it is with
    ``method="tensorsketch"`` or ``leaf="countsketch"`` (O(nnz) per row, any width); the
    other settings densify narrow rows chunk by chunk and CountSketch wide ones
    (``dsketch.sketch.linear.input_reduction``), dense rows alike.
    """

    _map_name = "PolynomialSketch"
    _map_params = ("degree", "gamma", "coef0", "method", "leaf")
    _parameter_constraints: dict = {
        **BaseSketch._parameter_constraints,
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


class RandomFourierFeatures(KernelMapSketch):
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
        **BaseSketch._parameter_constraints,
        "gamma": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, *, gamma=1.0, n_components=1024, random_state=None, dtype="float32"):
        self.gamma = gamma
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype


class ArcCosineFeatures(KernelMapSketch):
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
        **BaseSketch._parameter_constraints,
        "order": [Interval(Integral, 0, 2, closed="both")],
    }

    def __init__(self, *, order=1, n_components=1024, random_state=None, dtype="float32"):
        self.order = order
        self.n_components = n_components
        self.random_state = random_state
        self.dtype = dtype
