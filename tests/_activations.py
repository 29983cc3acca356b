"""The shared table of activations the tests run: one row per activation instance.

A row is an activation with its test parameters: the tags of the generic test groups that
take it and, for the fully-connected reference recursion, ``(W_std, input scale)``.
Every registered activation class needs a row tagged ``closed`` or ``numeric``
(``test_nets_registry.py`` checks it), so adding an activation is its file plus a row here.

Tags
----
closed       closed-form exact face: duals against independent integration, zero
             variances, no NaN, kernel map, Hermite expansion (test_nets_dense_activations)
numeric      ``Elementwise`` (quadrature) cases run alongside the closed forms, and kernel-only
             activations without a finite-width function (``ExpNormalized``)
dual_nan     extra instances of the no-NaN dual test
relu_family  homogeneity of ReLU-family nets (test_nets_fc_exact)
mc           NNGP against wide random finite networks (test_nets_fc_exact)
ntk_mc       NTK against the empirical NTK of wide finite networks (test_nets_fc_exact)
fold         folded Hermite expansion exact at ρ = ±1 (test_nets_fc_sketch)
unbiased     one sketched activation face is unbiased over seeds (test_nets_fc_sketch)
chunk        feature maps are chunk invariant (test_nets_fc_sketch)
sketch_nan   feature maps never produce NaN (test_nets_fc_sketch)
fidelity     sketch error shrinks with the width (test_nets_fc_sketch)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from dsketch.nets import (
    ABRelu, Abs, Activation, Cos, Elementwise, Erf, Exp, ExpNormalized, Gaussian, Gelu, Hermite,
    Identity, LeakyRelu, Monomial, Polynomial, Rbf, RectifiedMonomial, Relu, Sigmoid_like, Sign, Sin,
    Step,
)

__all__ = ["Case", "CASES", "acts", "fc_cases", "ids"]


@dataclass(frozen=True)
class Case:
    """One activation instance and the test groups (tags) that run it."""

    act: Activation
    tags: frozenset
    fc: Optional[tuple] = None   # (W_std, input scale) of the FC reference recursion


def _row(act, *tags, fc=None) -> Case:
    return Case(act, frozenset(tags), fc)


# Smooth closed forms first, then the positively homogeneous ones, then the numeric ones.
# fc input scales: "wide" (norms 1e-3..1e3), "mid" (3e-2..10: variances grow like v^q),
# "moderate" (1e-3..1.3: keeps the Gauss–Hermite reference of smooth ones exact).
CASES = (
    _row(Identity(), "closed", fc=(1.1, "wide")),
    _row(Erf(), "closed", "mc", "ntk_mc", "fold", "unbiased", "sketch_nan", "fidelity", fc=(1.0, "moderate")),
    _row(Erf(2.0, 0.7, 0.3), "closed"),
    _row(Erf(0.5, -1.5, -0.2), "closed"),
    _row(Erf(1.5, 0.7, 0.2), fc=(1.0, "moderate")),
    _row(Erf(1.5, 0.6, 0.3), "fold"),
    _row(Gelu(), "closed", "mc", "ntk_mc", "fold", "unbiased", "chunk", "sketch_nan", "fidelity",
         fc=(1.0, "moderate")),
    _row(Sin(), "closed", "mc", fc=(1.0, "moderate")),
    _row(Sin(1.3, 0.8, 0.4), "closed"),
    _row(Sin(0.8, 1.2, 0.3), "fold"),
    _row(Cos(), "closed"),
    _row(Cos(0.5, 1.5, -0.3), "closed"),
    _row(Cos(1.0, 0.8, 0.3), fc=(1.0, "moderate")),
    _row(Exp(), "closed"),
    _row(Exp(0.7, -0.5), "closed"),
    _row(Exp(0.7, 0.5), fc=(1.0, "moderate")),
    _row(Gaussian(), "closed", "mc", fc=(1.0, "moderate")),
    _row(Gaussian(2.0, -0.3), "closed", fc=(0.8, "moderate")),
    _row(Monomial(0), "closed"),
    _row(Monomial(1), "closed"),
    _row(Monomial(2), "closed", fc=(0.8, "moderate")),
    _row(Monomial(3), "closed", fc=(0.6, "moderate")),
    _row(Monomial(5), "closed"),
    _row(Relu(), "closed", "relu_family", "mc", "ntk_mc", "fold", "unbiased", "chunk", "sketch_nan",
         "fidelity", fc=(1.4, "wide")),
    _row(LeakyRelu(0.1), "closed", "mc"),
    _row(LeakyRelu(-0.3), "closed"),
    _row(LeakyRelu(0.2), "ntk_mc", "fold", fc=(1.2, "wide")),
    _row(LeakyRelu(0.3), "relu_family"),
    _row(ABRelu(-0.5, 2.0), "closed"),
    _row(ABRelu(1.5, 0.25), "closed"),
    _row(ABRelu(-0.3, 1.5), fc=(1.0, "wide")),
    _row(ABRelu(-0.2, 0.9), "relu_family"),
    _row(Abs(), "closed", "relu_family", "mc", "fold", "sketch_nan", fc=(1.0, "wide")),
    _row(Sign(), "closed", "fold", "chunk", "sketch_nan", fc=(1.0, "wide")),
    _row(Step(), "closed", "mc", "fold", fc=(1.0, "wide")),
    _row(RectifiedMonomial(0), "closed"),
    _row(RectifiedMonomial(1), "closed"),
    _row(RectifiedMonomial(2), "closed", fc=(0.8, "mid")),
    _row(RectifiedMonomial(3), "closed", fc=(0.6, "mid")),
    _row(Sigmoid_like(), "closed", "mc", "ntk_mc", "fold", "unbiased", "sketch_nan", "fidelity",
         fc=(1.0, "moderate")),
    _row(Rbf(), "closed", "mc", "fold", fc=(1.0, "moderate")),
    _row(Rbf(0.3), "closed", "sketch_nan"),
    _row(Polynomial((0.2, -0.5, 0.3, 0.1)), "closed", "fold", fc=(0.8, "moderate")),
    _row(Polynomial((0.1, 0.8, 0.3)), "closed", "mc"),
    _row(Polynomial((1.0,)), "closed"),
    _row(Hermite(1), "closed"),
    _row(Hermite(2), "closed", "mc", "fold", fc=(1.0, "moderate")),
    _row(Hermite(3), "closed", "fold"),
    _row(ExpNormalized(), "numeric", "fold"),
    _row(ExpNormalized(0.5, 0.2), "numeric"),
    _row(Elementwise("tanh"), "numeric", "mc", "ntk_mc", "fold", "chunk", "sketch_nan", "fidelity"),
    _row(Elementwise("softplus"), "numeric"),
    _row(Elementwise("softplus", quad_degree=16), "dual_nan"),
)


def acts(*tags: str) -> list:
    """Activations of the rows carrying any of ``tags``, in table order."""
    return [c.act for c in CASES if c.tags.intersection(tags)]


def fc_cases() -> list:
    """``(activation, W_std, input scale)`` of the rows in the FC reference recursion."""
    return [(c.act, *c.fc) for c in CASES if c.fc is not None]


def ids(activations) -> list:
    """pytest ids: the activations' reprs."""
    return [repr(a) for a in activations]
