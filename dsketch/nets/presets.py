"""Ready-made networks: ``fully_connected`` and ``myrtle`` (Shankar et al. 2020).

Owns only the wiring of existing layers; no maths and no Dask here.
"""

from __future__ import annotations

import math

from .activations import Relu
from ..backend import check_int
from .conv import Conv
from .dense import Dense
from .pooling import AvgPool, GlobalAvgPool
from .serial import Serial, serial

__all__ = ["fully_connected", "myrtle", "MYRTLE_LAYER_FACTOR"]

#: Convolutions per stage of the Myrtle family (Shankar et al. 2020; neural-tangents example).
MYRTLE_LAYER_FACTOR = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def fully_connected(depth: int, activation=None, W_std: float = 1.0, b_std: float = 0.0) -> Serial:
    """``depth`` hidden layers ``[Dense(W_std, b_std), activation]`` then a ``Dense`` readout.

    Parameters
    ----------
    depth : int
        Number of hidden (Dense, activation) pairs, ≥ 0.
    activation : Layer, optional
        Defaults to ``Relu()``.
    W_std, b_std : float
        Of every ``Dense`` (neural-tangents NTK parameterization).
    """
    depth = check_int(depth, "depth", minimum=0)
    act = Relu() if activation is None else activation
    layers = []
    for _ in range(depth):
        layers += [Dense(W_std, b_std), act]
    layers.append(Dense(W_std, b_std))
    return serial(*layers)


def myrtle(depth: int = 5, W_std: float = math.sqrt(2.0), b_std: float = 0.0, activation=None) -> Serial:
    """Myrtle CNN of depth 5, 7 or 10 (Shankar et al. 2020, as in the neural-tangents example).

    ``[Conv(3×3, SAME), act] × f0``, ``AvgPool(2, 2)``, ``[Conv, act] × f1``,
    ``AvgPool(2, 2)``, ``[Conv, act] × f2``, ``GlobalAvgPool()``, ``Dense`` with
    ``(f0, f1, f2) = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}[depth]``, so depth 5 has
    four convolutions (32×32, 32×32, 16×16, 8×8 maps for CIFAR-sized inputs).

    The original ends with three 2×2 average pools and a ``Flatten`` for 32×32 inputs
    (the 8×8 map pooled to 1×1); ``GlobalAvgPool`` is identical there and also works on
    small images (e.g. 8×8, 16×16; the side must be at least 2 after two 2×2 VALID
    pools, i.e. at least 4).

    Parameters
    ----------
    depth : {5, 7, 10}
    W_std, b_std : float
        Of every ``Conv`` and of the final ``Dense``.
    activation : Layer, optional
        Defaults to ``Relu()``.
    """
    depth = check_int(depth, "depth", minimum=0)
    if depth not in MYRTLE_LAYER_FACTOR:
        raise ValueError(f"myrtle depth must be one of {sorted(MYRTLE_LAYER_FACTOR)}, got {depth!r}")
    f0, f1, f2 = MYRTLE_LAYER_FACTOR[depth]
    act = Relu() if activation is None else activation

    def conv():
        return Conv((3, 3), W_std=W_std, b_std=b_std, padding="SAME")

    layers = []
    layers += [conv(), act] * f0
    layers += [AvgPool((2, 2), strides=(2, 2))]
    layers += [conv(), act] * f1
    layers += [AvgPool((2, 2), strides=(2, 2))]
    layers += [conv(), act] * f2
    layers += [GlobalAvgPool(), Dense(W_std, b_std)]
    return serial(*layers)
