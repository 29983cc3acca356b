"""dsketch: distributed sketches of neural, polynomial and Gaussian kernels.

Exact kernels and seeded random-feature maps of infinitely wide networks (``dsketch.nets``),
randomized sketching primitives (``dsketch.sketch``), a Dask/Zarr engine (``dsketch.engine``)
and scikit-learn estimators (``dsketch.estimators``, re-exported here).
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0"

_EXPORTS = {
    "NTKSketch": "estimators", "NNGPSketch": "estimators", "CNTKSketch": "estimators",
    "NTKRandomFeatures": "estimators", "PolynomialSketch": "estimators",
    "RandomFourierFeatures": "estimators", "ArcCosineFeatures": "estimators",
    "NeuralNystroem": "estimators",
    "SketchRidge": "estimators", "SketchRidgeClassifier": "estimators", "AlphaGridWarning": "estimators",
    "KernelRidge": "estimators", "KernelRidgeClassifier": "estimators",
    "save_model": "model_io", "load_model": "model_io",
    "nets": None, "sketch": None, "engine": None,
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    """Import public names on first use, so ``import dsketch`` stays light."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsketch' has no attribute {name!r}")
    module = _EXPORTS[name]
    if module is None:
        return importlib.import_module(f"dsketch.{name}")
    return getattr(importlib.import_module(f"dsketch.{module}"), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
