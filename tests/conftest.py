"""Test-session settings shared by every test module.

One BLAS thread per process: on the 2-core CI machines OpenBLAS threads contending with
Dask worker processes slow small factorizations by an order of magnitude.  Set before any
worker process starts, so LocalCluster workers inherit it.
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:  # numpy may already be imported by a plugin: limit its pools too
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    pass
