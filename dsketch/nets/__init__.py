"""The layer algebra: exact kernels and seeded sketches of infinitely wide networks.

Vocabulary of neural-tangents ``stax`` (``parameterization="ntk"``): build a net with
``serial(Dense(...), Relu(), ...)``, get exact kernels with ``net.kernel(x1, x2)`` and a
random-feature map with ``net.sketch(input_shape, n_features, seed)``.

The activations (and the registry that lists them) are exported as the
:mod:`.activations` subpackage declares them, so a new activation file needs no edit here.
"""

from . import activations
from .activations import *  # noqa: F401,F403 - every registered activation and the registry
from .base import Features, FeatureShape, Kernel, Layer, SketchOptions
from .conv import Conv
from .dense import Dense
from .dual import NumericalDualWarning
from .pooling import AvgPool, Flatten, GlobalAvgPool
from .presets import fully_connected, myrtle
from .serial import FeatureMap, KernelResult, SelectedFeatures, Serial, SketchOutput, serial

__all__ = [
    "serial", "Serial", "FeatureMap", "SelectedFeatures", "SketchOutput", "KernelResult",
    "Kernel", "Features", "FeatureShape", "Layer", "SketchOptions",
    "Dense", "Conv", "AvgPool", "NumericalDualWarning", "GlobalAvgPool", "Flatten", "fully_connected", "myrtle",
    *activations.__all__,
]
