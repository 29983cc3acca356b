"""``serial``: chaining layers, running the exact face in bounded memory, planning sketches.

Owns the input kernel/feature construction (input covariance ⟨x, y⟩/d, channels-last
images with ⟨x_p, y_q⟩/C), blocking of exact kernels over row blocks, and the
``FeatureMap`` returned by ``net.sketch``.  Layer maths lives in the layer modules; this one
imports no concrete layer and no Dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..backend import check_array, get_namespace, resolve_dtype
from .base import Features, FeatureShape, Kernel, Layer, SketchOptions
from .chunks import map_row_chunks
from .exact import blocked_kernel, default_block_size, resolve_get
from .readout import plan_readout

__all__ = ["serial", "Serial", "FeatureMap", "SelectedFeatures", "SketchOutput", "KernelResult",
           "input_features", "input_feature_shape"]


@dataclass(frozen=True)
class KernelResult:
    """Exact kernels of a network: ``nngp`` and ``ntk`` arrays (n1 × n2, or (n,) diagonal)."""

    nngp: Any
    ntk: Any


def _input_kernel(x1, x2, diagonal: bool) -> Kernel:
    """Input record: Σ⁰(x, y) = ⟨x, y⟩ / (last-axis width); NTK starts at zero."""
    xp = get_namespace(x1, x2)
    c = x1.shape[-1]
    spatial = tuple(x1.shape[1:-1])
    s = len(spatial)

    def self_cov(x):
        if not s:
            return xp.sum(x * x, axis=-1) / c
        n = x.shape[0]
        flat = x.reshape(n, -1, c)
        cov = xp.einsum("npc,nqc->npq", flat, flat) / c
        return cov.reshape((n,) + spatial + spatial)

    cov1 = self_cov(x1)
    if diagonal:
        return Kernel(nngp=cov1, ntk=xp.zeros_like(cov1), cov1=cov1, cov2=None,
                      spatial=spatial, diagonal=True)
    cov2 = self_cov(x2)
    if not s:
        nngp = x1 @ x2.T / c
    else:
        n1, n2 = x1.shape[0], x2.shape[0]
        nngp = xp.einsum("ipc,jqc->ijpq", x1.reshape(n1, -1, c), x2.reshape(n2, -1, c)) / c
        nngp = nngp.reshape((n1, n2) + spatial + spatial)
    return Kernel(nngp=nngp, ntk=xp.zeros_like(nngp), cov1=cov1, cov2=cov2, spatial=spatial)


@dataclass(frozen=True)
class Serial(Layer):
    """A network: layers applied in order. Build with :func:`serial`."""

    layers: tuple

    # ----------------------------------------------------------------------- shapes
    def output_shape(self, input_shape: tuple) -> tuple:
        shape = tuple(input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {exc}") from None
        return shape

    def kernel(self, x1, x2=None, get=None, *, diagonal: bool = False,
               block_size: Optional[int] = None, n_jobs: Optional[int] = None):
        """Exact NNGP and NTK of the infinitely wide network (neural-tangents 'ntk' param.).

        Parameters
        ----------
        x1 : array (n1, d) or (n1, H, W, C)
            NumPy or CuPy; the result lives on the same device.
        x2 : array (n2, ...), optional
            Defaults to ``x1`` (then only the upper block triangle is computed).
        get : {None, "nngp", "ntk"} or tuple of them
            What to return, as in neural-tangents: ``None`` gives a :class:`KernelResult`
            with both; a string gives that kernel's array alone; a tuple gives a
            ``KernelResult`` whose other field is ``None``.  Only what is asked for is
            kept, so ``get="ntk"`` peaks near the size of the NTK itself.
        diagonal : bool
            Only k(x_i, x_i) for rows of ``x1`` (``x2`` must be omitted): cost linear in n.
        block_size : int, optional
            Rows per block; blocks of ``x1`` × blocks of ``x2`` are computed independently.
            Peak memory is the outputs plus O(block_size² · P) per thread, P = (H·W)² for
            images (1 for vectors).  Default: 512 for vectors, chosen so one block pair
            stays under ~64 MB for images (see ``nets.exact``).
        n_jobs : int, optional
            Threads computing blocks (default: every usable core; 1 on CuPy).

        Returns
        -------
        KernelResult or array
            ``nngp`` and ``ntk``, each ``(n1, n2)`` (``(n,)`` when ``diagonal``); conv nets
            without a final ``Flatten``/``GlobalAvgPool`` keep pixel-pair axes.
        """
        kinds, single = resolve_get(get)
        x1 = check_array(x1, "x1", ndim=(2, 4))
        if diagonal and x2 is not None:
            raise ValueError("x2 must be omitted when diagonal=True")
        same = x2 is None
        x2 = x1 if same else check_array(x2, "x2", ndim=(2, 4))
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"x1 and x2 differ in shape: {tuple(x1.shape[1:])} vs {tuple(x2.shape[1:])}")
        out_shape = self.output_shape(tuple(x1.shape[1:]))  # validates the whole chain up front
        xp = get_namespace(x1, x2)
        x1 = x1.astype(xp.float64, copy=False)
        x2 = x2.astype(xp.float64, copy=False)
        if block_size is None:
            block_size = default_block_size(x1, x2)
        if isinstance(block_size, bool) or int(block_size) != block_size or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        pair_shape = tuple(out_shape[:-1]) * 2

        def run(a, b, diag):
            k = _input_kernel(a, b, diag)
            for layer in self.layers:
                k = layer.kernel(k)
            return k

        out = blocked_kernel(run, x1, x2, same=same, diagonal=diagonal, block_size=int(block_size),
                             kinds=kinds, pair_shape=pair_shape, n_jobs=n_jobs)
        if single:
            return out[kinds[0]]
        return KernelResult(out.get("nngp"), out.get("ntk"))

    # ------------------------------------------------------------------------ sketch
    def sketch(self, input_shape, n_features: int = 1024, seed: int = 0, *, degree: int = 8,
               relu_method: str = "poly", dtype: str = "float32") -> "FeatureMap":
        """Plan a random-feature map whose Gram matrices approximate ``self.kernel``.

        Parameters
        ----------
        input_shape : tuple
            Shape of one input row: ``(d,)`` or ``(H, W, C)``.
        n_features : int
            Output width ``m`` of both ``.nngp`` and ``.ntk`` features.
        seed : int
            Every random matrix is derived from it (``numpy.random.SeedSequence``).
        degree : int
            Truncation degree of the polynomial expansion of each dual activation.
        relu_method : {"poly", "random"}
            ReLU-family sketch: arc-cosine polynomial fit + PolySketch (default) or
            arc-cosine random features.
        dtype : {"float32", "float64"}

        Returns
        -------
        FeatureMap
            A small hashable spec; ``fmap(X)`` returns ``Features`` with ``.nngp``/``.ntk``.
        """
        return FeatureMap(net=self, input_shape=tuple(int(s) for s in input_shape),
                          n_features=int(n_features), seed=int(seed) if not isinstance(seed, bool) else seed,
                          degree=int(degree), relu_method=str(relu_method), dtype=str(np.dtype(dtype)))


def serial(*layers: Layer) -> Serial:
    """Chain layers into a network (neural-tangents ``stax.serial`` analogue)."""
    flat = []
    for layer in layers:
        if isinstance(layer, Serial):
            flat.extend(layer.layers)
        elif isinstance(layer, Layer):
            flat.append(layer)
        else:
            raise ValueError(f"serial() takes layers, got {type(layer).__name__}")
    return Serial(tuple(flat))


@dataclass(frozen=True)
class SketchOutput:
    """Output of a ``FeatureMap``: ``nngp`` and ``ntk`` feature arrays, each ``(n, m)``."""

    nngp: Any
    ntk: Any


@dataclass(frozen=True)
class FeatureMap:
    """Seeded random-feature map of a network: a hashable spec, a pure function of it.

    ``fmap(X)`` gives the same features for a row whatever batch it is in; random matrices
    are derived from ``seed`` on first use and cached per process and device.
    """

    net: Serial
    input_shape: tuple
    n_features: int
    seed: int = 0
    degree: int = 8
    relu_method: str = "poly"
    dtype: str = "float32"
    _plan_cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        if isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.n_features < 1:
            raise ValueError(f"n_features must be positive, got {self.n_features}")
        if self.degree < 1:
            raise ValueError(f"degree must be at least 1, got {self.degree}")
        if self.relu_method not in ("poly", "random"):
            raise ValueError(f"relu_method must be 'poly' or 'random', got {self.relu_method!r}")
        if len(self.input_shape) not in (1, 3):
            raise ValueError(f"input_shape must be (d,) or (H, W, C), got {self.input_shape}")
        resolve_dtype(self.dtype)
        self.net.output_shape(self.input_shape)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plan_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def options(self) -> SketchOptions:
        return SketchOptions(self.n_features, self.degree, self.relu_method, self.dtype)

    @property
    def plan(self):
        """The per-layer sketch faces (planned once per process)."""
        if "plan" not in self._plan_cache:
            shape = input_feature_shape(self.input_shape)
            steps = []
            for i, layer in enumerate(self.net.layers):
                step = layer.sketch(shape, self.options, self.seed, (f"layer{i}", type(layer).__name__))
                steps.append(step)
                shape = step.out
            steps.append(plan_readout(shape, self.options, self.seed, ("readout",)))
            self._plan_cache["plan"] = tuple(steps)
        return self._plan_cache["plan"]

    def output(self, which: str = "ntk") -> "SelectedFeatures":
        """A callable returning one kind of features (``"ntk"`` or ``"nngp"``) as an array."""
        return SelectedFeatures(self, which)

    def __call__(self, x) -> SketchOutput:
        x = check_array(x, "X", ndim=len(self.input_shape) + 1)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"X rows have shape {tuple(x.shape[1:])}, the feature map expects {self.input_shape}")
        return SketchOutput(*map_row_chunks(self._run, x))  # bounded memory, every core

    def _run(self, x) -> tuple:
        """``(nngp, ntk)`` features of one chunk of validated rows."""
        f = input_features(x, np.dtype(self.dtype))
        for step in self.plan:
            f = step(f)
        return f.nngp, f.ntk


def input_feature_shape(input_shape: tuple) -> FeatureShape:
    """Shape of :func:`input_features` for rows of ``input_shape``."""
    return FeatureShape(tuple(input_shape[:-1]), int(input_shape[-1]), 0)


def input_features(x, dtype) -> Features:
    """Features of the inputs: x/√C (exact), empty NTK features, exact variances."""
    xp = get_namespace(x)
    c = x.shape[-1]
    nngp = (x / math.sqrt(c)).astype(dtype, copy=False)
    ntk = xp.zeros(x.shape[:-1] + (0,), dtype=dtype)
    var = xp.sum(x.astype(xp.float64) ** 2, axis=-1) / c
    return Features(nngp=nngp, ntk=ntk, var=var)


@dataclass(frozen=True)
class SelectedFeatures:
    """``fmap.output(which)``: a hashable array-valued feature map for the engine.

    Has the engine's feature-map protocol: ``n_features``, ``dtype``, ``input_shape`` and
    ``__call__(block) -> (rows, n_features)`` array.
    """

    fmap: FeatureMap
    which: str = "ntk"

    def __post_init__(self):
        if self.which not in ("ntk", "nngp"):
            raise ValueError(f"which must be 'ntk' or 'nngp', got {self.which!r}")

    @property
    def n_features(self) -> int:
        return self.fmap.n_features

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.fmap.dtype)

    @property
    def input_shape(self) -> tuple:
        return self.fmap.input_shape

    def __call__(self, x):
        return getattr(self.fmap(x), self.which)
