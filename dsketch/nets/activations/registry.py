"""The registry of activations: the one table that ``dsketch.nets``, specs and the CLI read.

Owns two tables, filled by the activation files as they are imported:

- the activation classes: every concrete activation class registers itself with the
  :func:`register_activation` decorator (with or without a name).  ``dsketch.nets``
  exports them (:func:`activation_classes`), and so ``dsketch.spec`` allows them in saved
  models under ``"nets.<ClassName>"``;
- names → factories (zero-argument callables returning an activation), read by
  ``dsketch fit --activation NAME`` through :func:`make_activation`.  A name registered
  by a class means that class with its default parameters (``"relu"`` → ``Relu()``); a
  *numeric* name (``numeric=True``: ``"tanh"`` → ``Elementwise("tanh")``) gives way to
  a class registered under the same name, whatever the import order.

Must not import the activation files (they import this module).
"""

from __future__ import annotations

from typing import Callable, Optional

from .base import Activation

__all__ = ["register_activation", "activation_classes", "activation_names", "make_activation"]

_CLASSES: dict[str, type] = {}
_EXACT: dict[str, Callable[[], Activation]] = {}
_NUMERIC: dict[str, Callable[[], Activation]] = {}


def _origin(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _add(table: dict, key: str, value, what: str) -> None:
    old = table.get(key)
    if old is not None and old is not value and _origin(old) != _origin(value):
        raise ValueError(f"{what} {key!r} is already registered by {_origin(old)}")
    table[key] = value


def register_activation(name: Optional[str] = None, factory: Optional[Callable[[], Activation]] = None,
                        *, numeric: bool = False):
    """Register an activation class (decorator) or a named factory (call).

    Parameters
    ----------
    name : str, optional
        Name accepted by :func:`make_activation` (and ``--activation``), lower case.
    factory : callable, optional
        A zero-argument callable returning an :class:`Activation`.  Given: registers
        ``name`` → ``factory`` and returns ``factory``.  Omitted: returns a class
        decorator that registers the class (and ``name`` → the class, when given).
    numeric : bool
        The name is a fallback (e.g. ``Elementwise("tanh")``): a class registered under
        the same name takes precedence.

    Examples
    --------
    >>> @register_activation("relu")          # doctest: +SKIP
    ... @dataclass(frozen=True)
    ... class Relu(HomogeneousActivation): ...
    >>> register_activation("tanh", partial(Elementwise, "tanh"), numeric=True)  # doctest: +SKIP
    """
    if name is not None:
        if not isinstance(name, str) or not name or name != name.lower():
            raise ValueError(f"activation names are non-empty lower-case strings, got {name!r}")
    table = _NUMERIC if numeric else _EXACT
    if factory is not None:
        if name is None:
            raise ValueError("register_activation(factory=...) needs a name")
        _add(table, name, factory, "activation name")
        return factory

    def decorator(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Activation)):
            raise TypeError(f"register_activation decorates Activation subclasses, got {cls!r}")
        _add(_CLASSES, cls.__name__, cls, "activation class")
        if name is not None:
            _add(table, name, cls, "activation name")
        return cls

    return decorator


def activation_classes() -> tuple:
    """Every registered activation class, sorted by name."""
    return tuple(_CLASSES[k] for k in sorted(_CLASSES))


def activation_names() -> tuple:
    """Every name :func:`make_activation` accepts, sorted."""
    return tuple(sorted(set(_EXACT) | set(_NUMERIC)))


def make_activation(name: str) -> Activation:
    """The activation registered under ``name`` (case-insensitive), with default parameters.

    Raises ``ValueError`` listing the known names when ``name`` is not registered.
    """
    key = name.lower() if isinstance(name, str) else name
    factory = _EXACT.get(key) or _NUMERIC.get(key)
    if factory is None:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(activation_names())}")
    return factory()
