"""Test-session settings shared by every test module.

One BLAS thread per process: on the 2-core CI machines OpenBLAS threads contending with
Dask worker processes slow small factorizations by an order of magnitude.  Set before any
worker process starts, so LocalCluster workers inherit it.  ``dashboard_client``: the cluster
with dsketch's ``/dsketch`` page, shared by the dashboard tests.
"""

import os

import pytest

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

try:  # numpy may already be imported by a plugin: limit its pools too
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    pass


@pytest.fixture(scope="module")
def dashboard_client():
    """A 2-process ``LocalCluster`` whose scheduler serves dsketch's ``/dsketch`` page."""
    import dask.config
    from distributed import Client, LocalCluster

    from dsketch import dashboard

    routes = list(dask.config.get("distributed.scheduler.http.routes"))
    with dask.config.set({"distributed.scheduler.http.routes": routes + [dashboard.ROUTE_MODULE]}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
            yield c
