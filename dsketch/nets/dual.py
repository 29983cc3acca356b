"""Dual-activation numerics, one import for the activations: ``from .. import dual as D``.

Re-exports, by topic, the pieces every activation's exact face and sketch face share:

- :mod:`.moments` — :class:`Moments`, :func:`moments`: the sanitized second moments of a
  Gaussian pair (zero variances, ``|ρ| = 1``, huge norms);
- :mod:`.special` — :func:`erf`, :func:`norm_cdf`, :func:`norm_pdf` on NumPy or CuPy;
- :mod:`.quadrature` — numerical duals at any variance: :func:`gaussian_rule`,
  :func:`pair_expectations`, :func:`pair_quadrature_error`, :func:`gaussian_expectations`,
  :class:`NumericalDualWarning` and the ``QUAD_*`` settings;
- :mod:`.hermite_series` — :func:`normalized_hermite`, :func:`hermite_radial`;
- :mod:`.hermite_moments` — closed-form Hermite moments (:func:`phi_cdf_moments`,
  :func:`phi_pdf_moments`, :func:`relu_power_moments`, :func:`monomial_moments`) and the
  exact dual of a rectified monomial (:func:`rectified_monomial_dual`).

Holds no code of its own.  Knows no activation class; no Dask and no random state.
"""

from __future__ import annotations

from .hermite_moments import (double_factorial_ratio, half_normal_moment, monomial_moments,
                              phi_cdf_moments, phi_pdf_moments, rectified_monomial_dual,
                              relu_power_moments, safe_power)
from .hermite_series import hermite_radial, normalized_hermite
from .moments import Moments, moments
from .quadrature import (MAX_QUAD_DEGREE, QUAD_MAX_PANELS, QUAD_NODES, QUAD_PANEL_NODES, QUAD_RTOL,
                         QUAD_ZMAX, NumericalDualWarning, gaussian_expectations, gaussian_rule,
                         pair_expectations, pair_quadrature_error)
from .special import erf, norm_cdf, norm_pdf

__all__ = [
    "Moments", "moments", "hermite_radial", "normalized_hermite", "gaussian_rule",
    "pair_expectations", "pair_quadrature_error", "gaussian_expectations", "QUAD_NODES",
    "QUAD_ZMAX", "QUAD_RTOL", "QUAD_PANEL_NODES", "QUAD_MAX_PANELS", "NumericalDualWarning",
    "phi_cdf_moments", "phi_pdf_moments", "relu_power_moments", "monomial_moments",
    "rectified_monomial_dual", "half_normal_moment", "double_factorial_ratio", "erf", "norm_cdf",
    "norm_pdf", "safe_power", "MAX_QUAD_DEGREE",
]
