"""Randomized sketching primitives and non-network kernel feature maps (NumPy/CuPy, no Dask).

- :mod:`.hadamard`: fast Walsh–Hadamard transform along the last axis.
- :mod:`._base` (private to this package; ``RandomSpec``, ``random_signs`` and
  ``check_sparse`` are re-exported here for ``nets``): validation helpers and the seeded
  random-spec / kernel-map bases.
- :mod:`.linear`: SRHT (real and complex signs), Gaussian projection, CountSketch.
- :mod:`.tensor`: TensorSRHT (real, complex, complex-to-real), TensorSketch(Power), ``ctr_real``.
- :mod:`.polysketch`: the PolySketch tree of Ahle et al. (real and complex-to-real, Wacker
  et al.) and dot-product kernel sketches.
- :mod:`.arccos`: the exact arc-cosine maths (Cho & Saul ``J_n``, ``arccos_kernel``).
- :mod:`.kernels`: polynomial, random Fourier / Gaussian Maclaurin and arc-cosine
  random-feature maps with their exact kernels; :mod:`.ntk_random_features`: the ReLU-NTK map.

Dependencies inside the package point one way: ``_base``/``hadamard`` ← ``linear`` ←
``tensor`` ← ``polysketch`` ← ``kernels``/``ntk_random_features``; ``arccos`` depends only
on the backend. Nothing here imports Dask.
"""

from ._base import RandomSpec, check_sparse, random_signs
from .hadamard import fwht, hadamard_matrix, next_pow2
from .linear import SRHT, ComplexSRHT, CountSketch, GaussianProjection
from .tensor import (
    ComplexTensorSRHT,
    CtRTensorSRHT,
    TensorSketch,
    TensorSketchPower,
    TensorSRHT,
    ctr_real,
)
from .polysketch import CtRPolySketch, DotProductSketch, PolySketch
from .kernels import (
    ArcCosineFeatures,
    GaussianMaclaurin,
    NTKRandomFeatures,
    PolynomialSketch,
    RandomFourierFeatures,
    arccos_kernel,
    relu_ntk,
)

__all__ = [
    "fwht", "hadamard_matrix", "next_pow2",
    "SRHT", "GaussianProjection", "CountSketch", "TensorSRHT", "TensorSketch",
    "TensorSketchPower", "PolySketch", "ComplexSRHT", "ComplexTensorSRHT", "CtRTensorSRHT",
    "CtRPolySketch", "DotProductSketch", "ctr_real",
    "PolynomialSketch", "RandomFourierFeatures", "GaussianMaclaurin", "ArcCosineFeatures",
    "NTKRandomFeatures", "arccos_kernel", "relu_ntk",
    "RandomSpec", "random_signs", "check_sparse",
]
