"""Randomized sketching primitives and non-network kernel feature maps (NumPy/CuPy, no Dask).

- :mod:`.hadamard`: fast Walsh–Hadamard transform along the last axis.
- :mod:`.primitives`: SRHT, Gaussian projection, CountSketch, TensorSRHT, TensorSketch,
  PolySketch (Ahle et al.), complex-to-real variants (Wacker et al.), dot-product sketches.
- :mod:`.kernels`: polynomial, random Fourier / Gaussian Maclaurin, arc-cosine and ReLU-NTK
  random-feature maps with their exact kernels.
"""

from .hadamard import fwht, hadamard_matrix, next_pow2
from .primitives import (
    SRHT,
    ComplexSRHT,
    ComplexTensorSRHT,
    CountSketch,
    CtRPolySketch,
    CtRTensorSRHT,
    DotProductSketch,
    GaussianProjection,
    PolySketch,
    TensorSketch,
    TensorSketchPower,
    TensorSRHT,
    ctr_real,
)
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
]
