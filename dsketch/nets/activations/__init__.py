"""Elementwise nonlinearities: one file per activation family, each registering itself.

- :mod:`.base`: the base classes and their documented hooks (how to define an activation);
- :mod:`.registry`: ``register_activation`` and the table of classes and names that
  ``dsketch.nets``, ``dsketch.spec`` and ``dsketch fit --activation`` read;
- one file per family, each with its exact dual and its sketch data side by side:
  :mod:`.relu` (ReLU family, sign, step, rectified monomials), :mod:`.erf`, :mod:`.gelu`,
  :mod:`.trig`, :mod:`.exponential` (exp, Gaussian), :mod:`.monomial` (monomials,
  identity), :mod:`.polynomial` (``Polynomial``, ``Hermite``), :mod:`.sigmoid_like`,
  :mod:`.rbf`, :mod:`.exp_normalized` (neural-tangents' ``Sigmoid_like``, ``Rbf``,
  ``ExpNormalized``), :mod:`.elementwise` (any callable, and the named numeric functions).

Adding an activation is one new file here (and a row in the shared test table
``tests/_activations.py``): every module of this package is imported below, in name order,
which registers its classes; ``__all__`` follows the registry.
"""

from . import base, registry
from .base import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
import importlib
import pkgutil

# every family file of this package, in name order: importing it registers its classes
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _info.name not in ("base", "registry"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        globals().update({_name: getattr(_module, _name) for _name in _module.__all__})
del _info, _module

__all__ = [*base.__all__, *registry.__all__,
           *(cls.__name__ for cls in registry.activation_classes()), "ACTIVATION_FUNCTIONS"]
