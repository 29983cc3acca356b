"""Elementwise nonlinearities: one file per activation family, each registering itself.

- :mod:`.base`: the base classes and their documented hooks (how to define an activation);
- :mod:`.registry`: ``register_activation`` and the table of classes and names that
  ``dsketch.nets``, ``dsketch.spec`` and ``dsketch fit --activation`` read;
- one file per family, each with its exact dual and its sketch data side by side:
  :mod:`.relu` (ReLU family, sign, step, rectified monomials), :mod:`.erf`, :mod:`.gelu`,
  :mod:`.trig`, :mod:`.exponential` (exp, Gaussian), :mod:`.monomial` (monomials,
  identity), :mod:`.elementwise` (any callable, and the named numeric functions).

Adding an activation is one new file here plus its import line below (and a row in the
shared test table ``tests/_activations.py``); ``__all__`` follows the registry.
"""

from . import base, registry
from .base import *  # noqa: F401,F403
from .registry import *  # noqa: F401,F403
# one line per family file: importing it registers its classes and names
from .relu import *  # noqa: F401,F403
from .erf import *  # noqa: F401,F403
from .gelu import *  # noqa: F401,F403
from .trig import *  # noqa: F401,F403
from .exponential import *  # noqa: F401,F403
from .monomial import *  # noqa: F401,F403
from .elementwise import *  # noqa: F401,F403

__all__ = [*base.__all__, *registry.__all__,
           *(cls.__name__ for cls in registry.activation_classes()), "ACTIVATION_FUNCTIONS"]
