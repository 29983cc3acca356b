"""``serial``: chaining layers, running the exact face in bounded memory, planning sketches.

Owns the input kernel/feature construction (input covariance ⟨x, y⟩/d, channels-last
images with ⟨x_p, y_q⟩/C), blocking of exact kernels over row blocks, and the
``FeatureMap`` returned by ``net.sketch``.  Layer maths lives in the layer modules; this one
imports no concrete layer and no Dask.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..backend import (InvalidInputError, NonFiniteError, check_array, check_int, check_overflow,
                       check_seed, get_namespace, overflow_error, pairs_matmul, resolve_dtype,
                       usable_cores)
from .activation_sketch import METHODS
from .base import Features, FeatureShape, Kernel, Layer, SketchOptions, check_input_shape
from .chunks import map_row_chunks, run_steps
from .cnn_kernel import image_step, kernel_threads
from .exact import blocked_kernel, default_block_size, resolve_get
from ..execution import one_blas_thread
from .fc_kernel import chain_block, fc_chain
from .input_layer import (check_sparse_rows, flat_input_features, input_reduction_of, is_sparse,
                     sparse_input_kernel)
from .readout import plan_readout

__all__ = ["serial", "bind_layers", "layer_options", "Serial", "FeatureMap", "SelectedFeatures",
           "SketchOutput", "KernelResult", "input_features", "input_feature_shape", "check_net"]


@dataclass(frozen=True)
class KernelResult:
    """Exact kernels of a network: ``nngp`` and ``ntk`` arrays (n1 × n2, or (n,) diagonal)."""

    nngp: Any
    ntk: Any


def _input_kernel(x1, x2, diagonal: bool) -> Kernel:
    """Input record: Σ⁰(x, y) = ⟨x, y⟩ / (last-axis width); NTK starts at zero."""
    if is_sparse(x1) or is_sparse(x2):
        return sparse_input_kernel(x1, x2, diagonal)
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
        nngp = pairs_matmul(x1, x2) / c
    else:
        n1, n2 = x1.shape[0], x2.shape[0]
        pix = int(np.prod(spatial))
        nngp = pairs_matmul(x1.reshape(n1 * pix, c), x2.reshape(n2 * pix, c)) / c
        nngp = nngp.reshape(n1, pix, n2, pix).transpose(0, 2, 1, 3).reshape(
            (n1, n2) + spatial + spatial)
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
               block_size: Optional[int] = None, n_jobs: Optional[int] = None, dtype=None):
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
            Threads computing blocks (default: every usable core; 1 on CuPy).  Image nets
            on the host run compiled steps (``nets.cnn_kernel``): with a single block they
            split its entries over these threads instead.
        dtype : None or a float dtype, optional
            Of the returned arrays (default float64).  Entries are always computed in
            float64 and rounded once as each block is written (``float32`` halves the output
            and skips a separate cast pass).

        Returns
        -------
        KernelResult or array
            ``nngp`` and ``ntk``, each ``(n1, n2)`` (``(n,)`` when ``diagonal``); conv nets
            without a final ``Flatten``/``GlobalAvgPool`` keep pixel-pair axes.
        """
        kinds, single = resolve_get(get)
        x1 = self._rows(x1, "x1")
        if diagonal and x2 is not None:
            raise ValueError("x2 must be omitted when diagonal=True")
        same = x2 is None
        x2 = x1 if same else self._rows(x2, "x2", x1.shape[1:])
        if x1.shape[1:] != x2.shape[1:]:
            raise ValueError(f"x1 and x2 differ in shape: {tuple(x1.shape[1:])} vs {tuple(x2.shape[1:])}")
        out_shape = self.output_shape(tuple(x1.shape[1:]))  # validates the whole chain up front
        xp = get_namespace(x1, x2)
        x1 = x1.astype(xp.float64, copy=False)
        x2 = x2.astype(xp.float64, copy=False)
        if block_size is None:
            block_size = default_block_size(x1, x2)
        block_size = check_int(block_size, "block_size")
        if n_jobs is not None:
            n_jobs = check_int(n_jobs, "n_jobs")
        pair_shape = tuple(out_shape[:-1]) * 2

        layers = bind_layers(self.layers, tuple(x1.shape[1:]))
        # dense host rows through Dense/ReLU/erf/GeLU layers: one compiled pass per block
        chain = (fc_chain(layers) if x1.ndim == 2 and not is_sparse(x1) and not is_sparse(x2)
                 else None)

        # image blocks: compiled steps (nets.cnn_kernel) on every core when one block runs,
        # on one thread each when the blocks share the cores
        n_blocks = -(-x1.shape[0] // block_size) * (1 if diagonal else -(-x2.shape[0] // block_size))
        inner = 1 if n_blocks > 1 and (n_jobs is None or n_jobs > 1) else (n_jobs or usable_cores())

        def run(a, b, diag):
            if chain is not None:
                return chain_block(chain, a, b, diag, pairs_matmul, kinds)
            with kernel_threads(inner):
                k = _input_kernel(a, b, diag)
                for layer in layers:
                    step = image_step(layer, k)
                    k = layer.kernel(k) if step is None else step
            return k

        # the blocks' Gram products run one-thread BLAS on every thread (OpenBLAS's SkylakeX
        # GEMM rounds some shapes differently on two threads: an entry would depend on n_jobs)
        with one_blas_thread():
            out = blocked_kernel(run, x1, x2, same=same, diagonal=diagonal, block_size=block_size,
                                 kinds=kinds, pair_shape=pair_shape, n_jobs=n_jobs,
                                 dtype=xp.float64 if dtype is None else dtype)
        inputs = {"x1": x1} if same else {"x1": x1, "x2": x2}
        for kind, arr in out.items():  # finite inputs: a NaN/Inf here is an overflow
            check_overflow(arr, f"the exact {kind.upper()} kernel", inputs)
        if single:
            return out[kinds[0]]
        return KernelResult(out.get("nngp"), out.get("ntk"))

    def _rows(self, x, name, shape=None):
        """Validated rows: dense ``(n, d)``/``(n, H, W, C)`` or sparse float CSR ``(n, d)``."""
        if is_sparse(x):
            return check_sparse_rows(x, self.layers, tuple(shape or x.shape[1:]), name)
        return check_array(x, name, ndim=(2, 4))

    # ------------------------------------------------------------------------ sketch
    def sketch(self, input_shape, n_features: int = 1024, seed: int = 0, *, degree: int = 8,
               relu_method: str = "poly", dtype: str = "float32", method: str = "auto",
               hidden_features: Optional[int] = None,
               hidden_degree: Optional[int] = None) -> "FeatureMap":
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
        method : {"auto", "hermite", "random", "mix"}
            Estimator of the other activations' sketches (``nets.activation_sketch``):
            Hermite–PolySketch, Monte-Carlo features of φ and φ', or low Hermite degrees
            by PolySketch plus Monte-Carlo features of the rest; ``"auto"`` picks per
            activation.
        hidden_features : int, optional
            Width of the per-pixel features on every feature map larger than the net's
            smallest one (None: ``n_features``).  The large maps hold most pixels, so they
            set the cost per image; a narrow width there and a wide one on the smallest map
            (and the output) buys wide features at little extra cost (see
            :func:`layer_options`).
        hidden_degree : int, optional
            ``degree`` on the same larger maps (None: ``degree``): measured, a low degree
            there (2, as the seed papers' CNTK sketch) is faster and, at a hidden width
            of 1024–2048, at least as accurate as 8, while the smallest map gains from 8.

        Returns
        -------
        FeatureMap
            A small hashable spec; ``fmap(X)`` returns ``Features`` with ``.nngp``/``.ntk``.

        Every argument is checked by :class:`FeatureMap` (``InvalidInputError`` naming it):
        integers must be integers (``64.7`` or ``64.0`` are refused, never truncated), the
        seed an explicit non-negative int, ``input_shape`` a tuple of positive ints.
        """
        return FeatureMap(net=self, input_shape=input_shape, n_features=n_features, seed=seed,
                          degree=degree, relu_method=relu_method, dtype=dtype, method=method,
                          hidden_features=hidden_features, hidden_degree=hidden_degree)


def check_net(net, name: str = "net") -> "Serial":
    """``net`` if it is a network (:class:`Serial`), else :class:`InvalidInputError`.

    A bare layer (``Relu()``) is refused rather than wrapped: it usually means a network
    with that activation (``fully_connected(depth, Relu())``), which the error suggests.
    """
    if isinstance(net, Serial):
        return net
    if isinstance(net, Layer):
        layer = type(net).__name__
        raise InvalidInputError(
            f"{name} must be a network built with serial(...), fully_connected(...) or "
            f"myrtle(...), got the single layer {net!r}: use e.g. "
            f"fully_connected(2, {layer}()) or serial(Dense(), {layer}())")
    raise InvalidInputError(f"{name} must be a network built with serial(...), "
                            f"got {type(net).__name__}")


def bind_layers(layers, input_shape: tuple) -> tuple:
    """``layer.bind(its input shape)`` for each layer in order (see ``Layer.bind``)."""
    out, shape = [], tuple(input_shape)
    for layer in layers:
        out.append(layer.bind(shape))
        shape = layer.output_shape(shape)
    return tuple(out)


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
    method: str = "auto"
    hidden_features: Optional[int] = None
    hidden_degree: Optional[int] = None
    _plan_cache: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self):
        put = functools.partial(object.__setattr__, self)
        put("net", check_net(self.net))
        put("input_shape", check_input_shape(self.input_shape))
        put("n_features", check_int(self.n_features, "n_features"))
        put("seed", check_seed(self.seed))
        put("degree", check_int(self.degree, "degree"))
        if self.hidden_features is not None:
            put("hidden_features", check_int(self.hidden_features, "hidden_features", minimum=2))
        if self.hidden_degree is not None:
            put("hidden_degree", check_int(self.hidden_degree, "hidden_degree"))
        if self.relu_method not in ("poly", "random"):
            raise InvalidInputError(
                f"relu_method must be 'poly' or 'random', got {self.relu_method!r}")
        put("dtype", str(resolve_dtype(self.dtype)))
        if self.method not in METHODS:
            raise InvalidInputError(f"method must be one of {', '.join(map(repr, METHODS))}, "
                                    f"got {self.method!r}")
        self.net.output_shape(self.input_shape)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_plan_cache"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    @property
    def options(self) -> SketchOptions:
        return SketchOptions(self.n_features, self.degree, self.relu_method, self.dtype, self.method)

    @property
    def plan(self):
        """The per-layer sketch faces (planned once per process)."""
        if "plan" not in self._plan_cache:
            shape = input_feature_shape(self.input_shape)
            reduction = input_reduction_of(self.input_shape, self.options, self.seed)
            if reduction is not None:  # wide rows enter through a CountSketch (sparse too)
                shape = FeatureShape((), reduction.d_out, 0)
            self._plan_cache["input"] = reduction
            steps = []
            layers = bind_layers(self.net.layers, self.input_shape)
            per_layer = layer_options(layers, self.input_shape, self.options,
                                      self.hidden_features, self.hidden_degree)
            for i, (layer, options) in enumerate(zip(layers, per_layer)):
                step = layer.sketch(shape, options, self.seed, (f"layer{i}", type(layer).__name__))
                steps.append(step)
                shape = step.out
            steps.append(plan_readout(shape, self.options, self.seed, ("readout",)))
            self._plan_cache["plan"] = tuple(steps)
        return self._plan_cache["plan"]

    def output(self, which: str = "ntk") -> "SelectedFeatures":
        """A callable returning one kind of features (``"ntk"`` or ``"nngp"``) as an array."""
        return SelectedFeatures(self, which)

    def __call__(self, x) -> SketchOutput:
        return SketchOutput(*self._map(x, ("nngp", "ntk")))

    def features(self, x, which: str = "ntk"):
        """``self(x).ntk`` (or ``.nngp``), the same numbers, without computing into or
        allocating the other output for all rows (it is dropped chunk by chunk)."""
        if which not in ("ntk", "nngp"):
            raise ValueError(f"which must be 'ntk' or 'nngp', got {which!r}")
        return self._map(x, (which,))[0]

    def _map(self, x, kinds: tuple) -> tuple:
        """The ``kinds`` outputs (of ``("nngp", "ntk")``) of validated rows ``x``."""
        if is_sparse(x):  # 2-D sparse rows (CSC converted); image nets name their layer
            x = check_sparse_rows(x, self.net.layers, self.input_shape)
        else:
            x = check_array(x, "X", ndim=len(self.input_shape) + 1)
        if tuple(x.shape[1:]) != self.input_shape:
            raise InvalidInputError(f"X rows have shape {tuple(x.shape[1:])}, the feature map "
                                    f"expects {self.input_shape}")
        run = self._run
        if kinds != ("nngp", "ntk"):
            pick = [("nngp", "ntk").index(k) for k in kinds]
            run = lambda chunk: tuple(self._run(chunk)[i] for i in pick)  # noqa: E731
        try:
            # bounded memory (chunks sized by the feature width), every core
            out = map_row_chunks(run, x, width=self.n_features)
        except NonFiniteError:  # an intermediate array of finite rows: an overflow
            raise overflow_error("an intermediate array of the features", {"X": x},
                                 dtype=self.dtype) from None
        for kind, arr in zip(kinds, out):
            check_overflow(arr, f"the {kind.upper()} features", {"X": x})
        return out

    def _run(self, x) -> tuple:
        """``(nngp, ntk)`` features of one chunk of validated rows."""
        plan = self.plan
        reduction = self._plan_cache["input"]
        if reduction is not None or is_sparse(x):
            f = flat_input_features(x, np.dtype(self.dtype), reduction)
        else:
            f = input_features(x, np.dtype(self.dtype))
        f = run_steps(plan, f)
        return f.nngp, f.ntk


def layer_options(layers, input_shape: tuple, options: SketchOptions, hidden_features=None,
                  hidden_degree=None) -> tuple:
    """Each layer's :class:`SketchOptions`: the hidden width and degree where its map is larger.

    A layer whose output is an image with more pixels than the smallest map any layer
    outputs is sketched at width ``hidden_features`` and degree ``hidden_degree``; the
    others (the smallest map, vectors after a global pool or a flatten) at
    ``options.n_features`` and ``options.degree`` (None: the same everywhere).  Per image a
    layer costs about pixels × width, so the large maps set the cost, while the smallest
    map's features (averaged into the output) set the model's width and its polynomial
    bias.  Measured on Fashion-MNIST 14×14, Myrtle-5 (``benchmarks/cntk_scale.py``).
    """
    shapes, shape = [], tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
        shapes.append(shape)
    pixels = [math.prod(s[:-1]) if len(s) == 3 else 0 for s in shapes]
    smallest = min((p for p in pixels if p), default=0)
    hidden = dataclasses.replace(
        options,
        n_features=options.n_features if hidden_features is None else hidden_features,
        degree=options.degree if hidden_degree is None else hidden_degree)
    return tuple(hidden if p > smallest else options for p in pixels)


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
        return self.fmap.features(x, self.which)
