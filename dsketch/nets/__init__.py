"""The layer algebra: exact kernels and seeded sketches of infinitely wide networks.

Vocabulary of neural-tangents ``stax`` (``parameterization="ntk"``): build a net with
``serial(Dense(...), Relu(), ...)``, get exact kernels with ``net.kernel(x1, x2)`` and a
random-feature map with ``net.sketch(input_shape, n_features, seed)``.
"""

from .base import Features, FeatureShape, Kernel, Layer, SketchOptions
from .serial import FeatureMap, KernelResult, SelectedFeatures, Serial, SketchOutput, serial
from .dense import Dense
from .activations import (
    ABRelu, Abs, Activation, Cos, Elementwise, Erf, Exp, Gaussian, Gelu, Identity, LeakyRelu,
    Monomial, RectifiedMonomial, Relu, Sign, Sin, Step,
)
from .conv import Conv
from .pooling import AvgPool, Flatten, GlobalAvgPool
from .presets import fully_connected, myrtle

__all__ = [
    "serial", "Serial", "FeatureMap", "SelectedFeatures", "SketchOutput", "KernelResult",
    "Kernel", "Features", "FeatureShape", "Layer", "SketchOptions",
    "Dense", "Activation", "Relu", "LeakyRelu", "ABRelu", "Abs", "Sign", "Step", "Identity",
    "Erf", "Gelu", "Sin", "Cos", "Exp", "Gaussian", "Monomial", "RectifiedMonomial",
    "Elementwise", "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "fully_connected", "myrtle",
]
