"""``NeuralNystroem``: Nyström features of a network's exact NTK or NNGP, as a transformer.

Owns the scikit-learn wiring of :mod:`dsketch.nets.nystroem`: ``fit`` draws landmark rows by
the seed (uniformly, or by approximate ridge leverage scores from a cheap
``net.sketch`` pass over the data) and factors the landmark kernel; ``transform`` runs the
map in memory or through ``dsketch.engine.embed`` (the landmarks travel once per graph).
Must not hold kernel maths or Dask graph code: it wires them.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from .. import engine
from ..nets import Relu, fully_connected
from ..nets.nystroem import LANDMARK_METHODS, NystroemMap, inverse_sqrt, sample_landmarks
from ._data import draw_seed, is_dask
from .transformers import BaseSketch

__all__ = ["NeuralNystroem"]


class NeuralNystroem(BaseSketch):
    """Nyström features of a network's exact kernel: φ(x) = K(x, L) · K(L, L)^{-1/2}.

    The data-dependent alternative to the oblivious sketches (scikit-learn's
    :class:`~sklearn.kernel_approximation.Nystroem`, for neural kernels): ``φ(X)φ(X)ᵀ`` is
    the Nyström approximation K(X, L) K(L, L)⁺ K(L, X) of ``net.kernel(X, get=kernel)``,
    exact on the landmarks.  Usable as the ``sketch`` of :class:`SketchRidge` /
    :class:`SketchRidgeClassifier` (ridge on these features is Nyström kernel ridge
    regression) and on dask input / Zarr stores like every transformer.

    Parameters
    ----------
    net : Serial, default=None
        A network of :mod:`dsketch.nets`; ``None`` means
        ``fully_connected(2, Relu(), W_std=√2, b_std=0)``.
    kernel : {"ntk", "nngp"}, default="ntk"
    n_components : int, default=1024
        Number of landmarks m (= features).  More than the rows of ``X`` is an error.
    landmarks : {"uniform", "leverage"}, default="uniform"
        Landmark rows drawn uniformly without replacement, or with probabilities ∝ half
        their approximate ridge leverage scores (from ``net.sketch`` features of width
        ``leverage_features``, one extra pass over the data) plus half uniform.
    leverage_features : int, default=512
        Width of the cheap sketch that estimates the leverage scores.
    rcond : float, default=1e-8
        Eigenvalues of K(L, L) below ``rcond`` × the largest are dropped, not inverted.
    random_state : int, RandomState instance or None, default=None
        Seed of the landmark draw (and of the leverage sketch); the seed used is ``seed_``.
    dtype : {"float32", "float64"}, default="float32"
        Dtype of the features (kernels are computed in float64).

    Attributes
    ----------
    components_ : ndarray (m, ...)
        The landmark rows.
    component_indices_ : ndarray (m,)
        Their row indices in the training ``X``.
    normalization_ : ndarray (m, m)
        K(L, L)^{-1/2} (pseudo-inverse square root).
    feature_map_ : NystroemMap
        The map, rebuilt from the two arrays above (saved models store only those).
    seed_ : int
    n_features_in_ : int
    """

    _image_input = True
    _parameter_constraints: dict = {
        **BaseSketch._parameter_constraints,
        "net": [None, HasMethods(["sketch", "kernel"])],
        "kernel": [StrOptions({"ntk", "nngp"})],
        "landmarks": [StrOptions(set(LANDMARK_METHODS))],
        "leverage_features": [Interval(Integral, 1, None, closed="left")],
        "rcond": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, net=None, kernel="ntk", n_components=1024, landmarks="uniform",
                 leverage_features=512, rcond=1e-8, random_state=None, dtype="float32"):
        self.net = net
        self.kernel = kernel
        self.n_components = n_components
        self.landmarks = landmarks
        self.leverage_features = leverage_features
        self.rcond = rcond
        self.random_state = random_state
        self.dtype = dtype

    def _resolved_net(self):
        if self.net is not None:
            return self.net
        return fully_connected(2, Relu(), W_std=math.sqrt(2.0), b_std=0.0)

    # ---------------------------------------------------------------- the fitted map
    def _make_map(self, input_shape, seed):
        """The map of the fitted landmarks (``input_shape`` and ``seed`` are already in them)."""
        fmap = NystroemMap(self._resolved_net(), self.components_, self.normalization_,
                           kernel=self.kernel, dtype=self.dtype)
        if fmap.input_shape != tuple(input_shape):
            raise ValueError(f"landmarks have rows of shape {fmap.input_shape}, not {tuple(input_shape)}")
        return fmap

    @property
    def feature_map_(self):
        cached = self.__dict__.get("_feature_map")
        if cached is None or cached[0] is not self.components_ or cached[1] is not self.normalization_:
            fmap = self._make_map(tuple(np.shape(self.components_)[1:]), self.seed_)
            cached = (self.components_, self.normalization_, fmap)
            self.__dict__["_feature_map"] = cached
        return cached[2]

    def _exact_kernel(self, X, Y):
        return self._resolved_net().kernel(X, Y, get=self.kernel)

    # ------------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Draw the landmarks from the rows of ``X`` and factor their kernel.

        Parameters
        ----------
        X : array-like (n, d) or (n, H, W, C), dask array or Zarr store URL
        y : ignored

        Returns
        -------
        self
        """
        X = self._input(X, reset=True)
        n, shape = int(X.shape[0]), tuple(int(s) for s in X.shape[1:])
        net = self._resolved_net()
        net.output_shape(shape)
        if self.n_components > n:
            raise ValueError(f"n_components={self.n_components} landmarks need at least as many "
                             f"rows, but X has {n}")
        self.seed_ = draw_seed(self.random_state)
        scores = None
        if self.landmarks == "leverage":
            cheap = net.sketch(shape, self.leverage_features, self.seed_, relu_method="random",
                               dtype="float64").output(self.kernel)
            Z = engine.embed(X, cheap) if is_dask(X) else cheap(X)
            scores = engine.leverage_scores(Z)
        idx = sample_landmarks(n, self.n_components, self.seed_, scores)
        L = engine.take_rows(X, idx)
        K = net.kernel(L, get=self.kernel)
        self.component_indices_ = idx
        self.components_ = L
        self.normalization_ = inverse_sqrt(K, self.rcond)
        self.__dict__.pop("_feature_map", None)
        self._n_features_out = self.n_components
        return self
