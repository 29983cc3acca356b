"""How flat input rows, dense or ``scipy.sparse``, enter a network: the input face.

Owns the input record both faces start from for 2-D rows of any width and format: rows
wider than :data:`dsketch.sketch.linear.REDUCE_ABOVE` enter the sketch face through a
seeded CountSketch (O(nnz) per sparse row, and dense rows alike, so the features of a matrix
and of its dense copy agree to float rounding and nothing is ever ``d`` wide per row);
narrower sparse rows are densified chunk by chunk; variances come from the rows themselves.
The exact face takes sparse rows through sparse products (``x1 @ x2ᵀ``, sparse row norms).
Nets on images refuse sparse rows naming the first layer that needs images.  Must not
import Dask nor hold layer maths (``serial`` calls it; the layers see ordinary records).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ..backend import InvalidInputError, get_namespace
from ..execution import is_sparse
from ..sketch import check_sparse
from ..sketch.linear import CountSketch, first_layer_rows, input_reduction, row_sq_norms
from .base import Features, Kernel, SketchOptions

__all__ = ["input_reduction_of", "flat_input_features", "sparse_input_kernel",
           "check_sparse_rows"]


def input_reduction_of(input_shape: tuple, options: SketchOptions, seed: int) -> Optional[CountSketch]:
    """The CountSketch wide flat rows enter a sketch through (None for images, narrow rows)."""
    if len(input_shape) != 1:
        return None
    return input_reduction(int(input_shape[0]), options.n_features, seed, ("input",))


def flat_input_features(x, dtype, reduction: Optional[CountSketch]) -> Features:
    """Input features of 2-D rows (dense or sparse): ``R x/√d``, exact variances ``‖x‖²/d``.

    ``R`` is ``reduction`` (a CountSketch, unbiased for inner products) or the identity;
    sparse rows without one are densified (they are then at most ``REDUCE_ABOVE`` wide).
    """
    d = x.shape[-1]
    rows = first_layer_rows(x, reduction)
    xp = get_namespace(rows)
    nngp = (rows / math.sqrt(d)).astype(dtype, copy=False)
    return Features(nngp=nngp, ntk=xp.zeros((x.shape[0], 0), dtype=dtype),
                    var=row_sq_norms(x) / d)


def sparse_input_kernel(x1, x2, diagonal: bool) -> Kernel:
    """Input record ``Σ⁰ = ⟨x, y⟩/d`` of flat rows of which one or both are sparse."""
    d = x1.shape[-1]
    cov1 = row_sq_norms(x1) / d
    if diagonal:
        return Kernel(nngp=cov1, ntk=np.zeros_like(cov1), cov1=cov1, cov2=None, diagonal=True)
    nngp = x1 @ x2.T
    nngp = (nngp.toarray() if is_sparse(nngp) else np.asarray(nngp)) / d
    return Kernel(nngp=nngp, ntk=np.zeros_like(nngp), cov1=cov1, cov2=row_sq_norms(x2) / d)


def check_sparse_rows(x, layers: tuple, input_shape: tuple, name: str = "X"):
    """Sparse rows validated as float CSR (CSC converted) for a net taking ``input_shape``.

    Raises :class:`~dsketch.backend.InvalidInputError` naming the first layer that cannot
    take flat rows (``Conv``, pooling) when the net takes images, and for bad shapes/values.
    """
    if len(input_shape) != 1:
        shape, culprit = (int(np.prod(input_shape)),), None
        for i, layer in enumerate(layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError:
                culprit = f"layer {i} ({type(layer).__name__})"
                break
        culprit = culprit or "the net"
        raise InvalidInputError(
            f"{name} is a sparse matrix, but {culprit} takes images (H, W, C): "
            "sparse input needs a net on flat rows (d,) such as Dense first; densify "
            f"{name} for this net")
    return check_sparse(x, int(input_shape[0]), name, "input width")
