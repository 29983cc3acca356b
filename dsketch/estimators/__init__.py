"""scikit-learn estimators: random-feature transformers and sketched ridge models.

Owns the public modelling API: the transformers (:class:`NTKSketch`, :class:`NNGPSketch`,
:class:`CNTKSketch`, :class:`NTKRandomFeatures`, :class:`PolynomialSketch`,
:class:`RandomFourierFeatures`, :class:`ArcCosineFeatures`; in :mod:`.transformers`;
:class:`NeuralNystroem` in :mod:`.nystroem`),
:class:`SketchRidge` and :class:`SketchRidgeClassifier` (in :mod:`.ridge`), the exact-kernel
:class:`KernelRidge` and :class:`KernelRidgeClassifier` (in :mod:`.kernel_ridge`); input handling
lives in :mod:`._inputs`.  They follow scikit-learn 1.9's conventions (keyword-only
``__init__`` that only stores, validation in ``fit`` through ``_parameter_constraints`` and
``validate_data``, randomness drawn in ``fit``, trailing-underscore fitted attributes,
``get_feature_names_out``/``set_output``, ``__sklearn_tags__``).

Inputs
------
* NumPy arrays and SciPy sparse matrices (every transformer but CNTKSketch): computed in memory,
  no cluster needed.
* ``dask.array`` arrays: ``transform``/``predict`` return lazy dask arrays
  (``dsketch.engine.embed`` / ``dsketch.engine.predict``); ``fit`` runs one pass on the
  current dask scheduler (a ``distributed`` client when one is active) through the one ridge
  entry ``dsketch.engine.fit_ridge_model``.
* a Zarr store path or URL (``str`` / ``os.PathLike``): opened with
  ``dsketch.engine.open_dataset`` (arrays ``X`` and, for ``fit``, ``y``), then as dask.

Seeds
-----
``random_state`` follows scikit-learn: an ``int`` is used *as is* as the feature map's seed
(``NTKSketch(random_state=7)`` ≡ ``net.sketch(..., seed=7)``); a ``RandomState``/``Generator``
instance gives one draw; ``None`` draws a fresh seed from OS entropy in ``fit`` (no global
random state is touched).  The seed actually used is stored in ``seed_`` (and in saved
models), so a fitted model is always reproducible.

Must not hold kernel maths (``dsketch.nets`` / ``dsketch.sketch``) or ridge maths and Dask
graph code (``dsketch.engine``): it wires them.
"""

from .kernel_ridge import KernelRidge, KernelRidgeClassifier, make_model
from .neural_nystroem import NeuralNystroem
from .ridge import AlphaGridWarning, SketchRidge, SketchRidgeClassifier
from .transformers import (ArcCosineFeatures, CNTKSketch, NNGPSketch, NTKRandomFeatures,
                           NTKSketch, PolynomialSketch, RandomFourierFeatures)

__all__ = [
    "NTKSketch",
    "NNGPSketch",
    "CNTKSketch",
    "NTKRandomFeatures",
    "PolynomialSketch",
    "RandomFourierFeatures",
    "ArcCosineFeatures",
    "NeuralNystroem",
    "SketchRidge",
    "SketchRidgeClassifier",
    "KernelRidge",
    "KernelRidgeClassifier",
    "make_model",
    "AlphaGridWarning",
]
