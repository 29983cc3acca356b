"""Special functions of the Gaussian on NumPy or CuPy arrays: ``erf``, the normal CDF and density.

Owns :func:`erf` (SciPy on the host, ``cupyx.scipy.special`` on a GPU), :func:`norm_cdf` and
:func:`norm_pdf`, elementwise on the caller's device.  No Dask, no random state.
"""

from __future__ import annotations

import math

from scipy import special

from ..backend import get_namespace, is_cupy

__all__ = ["erf", "norm_cdf", "norm_pdf"]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2 * math.pi)


def erf(x):
    """The error function, elementwise, on the device of ``x`` (SciPy or cupyx)."""
    if is_cupy(x):  # pragma: no cover - GPU only
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x)
    return special.erf(x)


def norm_cdf(x):
    """Standard normal CDF Φ(x) = (1 + erf(x/√2))/2."""
    return 0.5 * (1 + erf(x / _SQRT2))


def norm_pdf(x):
    """Standard normal density φ_N(x) = exp(−x²/2)/√(2π)."""
    xp = get_namespace(x)
    return xp.exp(-0.5 * x * x) / _SQRT2PI
