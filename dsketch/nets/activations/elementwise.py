"""``Elementwise``: any elementwise function, exact face by numerical quadrature at any variance.

Owns the table of named numeric functions :data:`ACTIVATION_FUNCTIONS` (name →
(function, derivative), NumPy or CuPy) that ``Elementwise("tanh")`` and specs refer to,
and registers each name as a numeric activation (``"tanh"`` → ``Elementwise("tanh")``),
which a closed-form class of the same name overrides (``"relu"`` → ``Relu()``).
Must not import Dask.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

from ...backend import check_int, get_namespace
from .. import dual as D
from .base import Activation
from .gelu import gelu, gelu_deriv, gelu_tanh, gelu_tanh_deriv
from .registry import register_activation

__all__ = ["Elementwise", "ACTIVATION_FUNCTIONS"]

_SELU_L, _SELU_A = 1.0507009873554805, 1.6732632423543772


# ----------------------------------------------------------------- named numeric functions
def _sigmoid(x):
    xp = get_namespace(x)
    return 0.5 * (1 + xp.tanh(0.5 * x))


def _softplus(x):
    xp = get_namespace(x)
    return xp.logaddexp(0, x)


def _xpf(name):
    return lambda x: getattr(get_namespace(x), name)(x)


def _where(cond, a, b):
    return get_namespace(cond).where(cond, a, b)


def _softsign(x):
    return x / (1 + get_namespace(x).abs(x))


def _mish(x):
    return x * get_namespace(x).tanh(_softplus(x))


def _mish_deriv(x):
    xp = get_namespace(x)
    t = xp.tanh(_softplus(x))
    return t + x * (1 - t * t) * _sigmoid(x)


def _hard_sigmoid(x):
    return get_namespace(x).clip(x / 6 + 0.5, 0, 1)


def _silu(x):
    return x * _sigmoid(x)


def _silu_deriv(x):
    return _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))


def _elu(x):
    xp = get_namespace(x)
    return _where(x > 0, x, xp.expm1(xp.minimum(x, 0)))


def _elu_deriv(x):
    xp = get_namespace(x)
    return _where(x > 0, 1.0, xp.exp(xp.minimum(x, 0)))


def _selu(x):
    xp = get_namespace(x)
    return _SELU_L * _where(x > 0, x, _SELU_A * xp.expm1(xp.minimum(x, 0)))


def _selu_deriv(x):
    xp = get_namespace(x)
    return _SELU_L * _where(x > 0, 1.0, _SELU_A * xp.exp(xp.minimum(x, 0)))


#: Named functions accepted by ``Elementwise(fn="name")``: name -> (fn, derivative).
ACTIVATION_FUNCTIONS = {
    "identity": (lambda x: x, lambda x: get_namespace(x).ones_like(x)),
    "tanh": (_xpf("tanh"), lambda x: 1 - get_namespace(x).tanh(x) ** 2),
    "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    "softplus": (_softplus, _sigmoid),
    "silu": (_silu, _silu_deriv),
    "swish": (_silu, _silu_deriv),
    "elu": (_elu, _elu_deriv),
    "selu": (_selu, _selu_deriv),
    "relu": (lambda x: get_namespace(x).maximum(x, 0), lambda x: (x > 0) * 1.0),
    "leaky_relu": (lambda x: _where(x > 0, x, 0.01 * x), lambda x: _where(x > 0, 1.0, 0.01)),
    "relu6": (lambda x: get_namespace(x).clip(x, 0, 6), lambda x: ((x > 0) & (x < 6)) * 1.0),
    "abs": (_xpf("abs"), _xpf("sign")),
    "hard_tanh": (lambda x: get_namespace(x).clip(x, -1, 1), lambda x: ((x > -1) & (x < 1)) * 1.0),
    "hard_sigmoid": (_hard_sigmoid, lambda x: ((x > -3) & (x < 3)) / 6.0),
    "hard_swish": (lambda x: x * _hard_sigmoid(x),
                   lambda x: _hard_sigmoid(x) + x * (((x > -3) & (x < 3)) / 6.0)),
    "softsign": (_softsign, lambda x: 1 / (1 + get_namespace(x).abs(x)) ** 2),
    "mish": (_mish, _mish_deriv),
    "log_sigmoid": (lambda x: -_softplus(-x), lambda x: _sigmoid(-x)),
    "gelu": (gelu, gelu_deriv),
    "gelu_tanh": (gelu_tanh, gelu_tanh_deriv),
    "erf": (D.erf, lambda x: (2 / math.sqrt(math.pi)) * get_namespace(x).exp(-x * x)),
    "sin": (_xpf("sin"), _xpf("cos")),
    "cos": (_xpf("cos"), lambda x: -get_namespace(x).sin(x)),
    "exp": (_xpf("exp"), _xpf("exp")),
    "gaussian": (lambda x: get_namespace(x).exp(-0.5 * x * x), lambda x: -x * get_namespace(x).exp(-0.5 * x * x)),
    "sign": (_xpf("sign"), lambda x: get_namespace(x).zeros_like(x)),
    "step": (lambda x: (x > 0) * 1.0, lambda x: get_namespace(x).zeros_like(x)),
}


def _numerical_derivative(fn: Callable) -> Callable:
    def deriv(x):
        xp = get_namespace(x)
        h = 6e-6 * xp.maximum(xp.abs(x), 1.0)
        return (fn(x + h) - fn(x - h)) / (2 * h)

    return deriv


# ---------------------------------------------------------------------------- the layer
@register_activation()
@dataclass(frozen=True)
class Elementwise(Activation):
    """Any elementwise function, dual by the split Gauss–Legendre rule of ``dual.pair_expectations``.

    Parameters
    ----------
    fn : str or callable
        A name from :data:`ACTIVATION_FUNCTIONS` (``"tanh"``, ``"sigmoid"``, ``"softplus"``,
        ``"silu"``/``"swish"``, ``"elu"``, ``"selu"``, ``"mish"``, …; serializable) or a
        vectorized callable on NumPy/CuPy arrays.
    deriv : callable, optional
        Derivative of ``fn``; defaults to the table's analytic one for names and to a
        central finite difference for callables.
    quad_degree : int
        Gauss–Legendre nodes per piece of the first 2-D rule (two pieces per axis: cost
        4·quad_degree² evaluations per kernel entry, plus ~0.7× that for its check).  Entries
        whose error estimate exceeds 1e-6 relative to √(E φ(u)² E φ(v)²) are refined by
        composite panels (``dual.pair_expectations``): functions growing at most
        polynomially, kinks and jumps at 0 (step, sign, ReLU′ at |ρ| → 1) and oscillations
        (sin at variance ≤ ~100) meet it for variances 1e-4…1e4; where the work cap
        stops short a :class:`~dsketch.nets.dual.NumericalDualWarning` says so, and
        :meth:`dual_error` estimates the error of any entry.
    """

    function: Union[str, Callable] = None  # type: ignore[assignment]
    derivative: Optional[Callable] = None
    quad_degree: int = D.QUAD_NODES

    def __init__(self, fn: Union[str, Callable], deriv: Optional[Callable] = None, quad_degree: int = D.QUAD_NODES):
        if isinstance(fn, str):
            key = fn.lower()
            if key not in ACTIVATION_FUNCTIONS:
                raise ValueError(f"unknown activation name {fn!r}; known: {sorted(ACTIVATION_FUNCTIONS)}")
            fn = key
        elif not callable(fn):
            raise ValueError(f"fn must be a callable or an activation name, got {fn!r}")
        if deriv is not None and not callable(deriv):
            raise ValueError(f"deriv must be callable, got {deriv!r}")
        object.__setattr__(self, "function", fn)
        object.__setattr__(self, "derivative", deriv)
        object.__setattr__(self, "quad_degree",
                           check_int(quad_degree, "quad_degree", minimum=2, maximum=D.MAX_QUAD_DEGREE))

    def __repr__(self) -> str:
        return f"Elementwise({self.name!r}, quad_degree={self.quad_degree})"

    @property
    def name(self) -> str:
        f = self.function
        return f if isinstance(f, str) else getattr(f, "__name__", "callable")

    def _functions(self):
        f, d = self.function, self.derivative
        if isinstance(f, str):
            named_f, named_d = ACTIVATION_FUNCTIONS[f]
            return named_f, (d or named_d)
        return f, (d or _numerical_derivative(f))

    def fn(self, x):
        return self._functions()[0](x)

    def deriv(self, x):
        return self._functions()[1](x)


for _name in ACTIVATION_FUNCTIONS:
    register_activation(_name, functools.partial(Elementwise, _name), numeric=True)
del _name
