"""Starting or joining a ``dask.distributed`` cluster, and showing what it does.

Owns the choice of cluster (explicit scheduler address, scheduler file,
``DASK_SCHEDULER_ADDRESS``, else an embedded ``LocalCluster(processes=True)`` sized to the
machine, or ``dask_cuda.LocalCUDACluster`` for ``gpu=True``), printing the dashboard link,
the progress bar of long computations, and questions about the workers (memory, count).
Must not contain kernel maths or data I/O, and must not import the user layer: callers
that want the ``/dsketch`` dashboard page call ``dsketch.dashboard.enable()`` before
:func:`connect` starts a cluster (the CLI does).

Memory contract of the engine (stated here once, relied on everywhere): nothing ``n × m``
is ever gathered on the client; a worker task holds at most one row chunk of inputs and
features (``rows × (d + m)`` elements) plus float64 partial sums of size ``m × m``
(Gram) or ``m × k`` (CG), and reduction tasks hold ``split_every + 1`` partials.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

import psutil
from distributed import Client, LocalCluster, default_client, progress
from distributed.deploy.utils import nprocesses_nthreads

from ..backend import usable_cores

__all__ = ["connect", "dashboard_link", "show_progress", "worker_memory", "machine_size",
           "is_interactive", "current_client", "worker_memory_limits"]


def machine_size(n_workers: int | None = None, threads_per_worker: int | None = None) -> tuple[int, int]:
    """Workers and threads per worker filling this machine's usable cores.

    Uses the CPU affinity mask (containers, SLURM cgroups) and distributed's own split
    (``distributed.deploy.utils.nprocesses_nthreads``) when neither is given.
    """
    cores = usable_cores()
    if n_workers is None and threads_per_worker is None:
        return nprocesses_nthreads(cores)
    if n_workers is None:
        return max(1, cores // max(1, threads_per_worker)), int(threads_per_worker)
    if threads_per_worker is None:
        return int(n_workers), max(1, cores // max(1, n_workers))
    return int(n_workers), int(threads_per_worker)


def dashboard_link(client) -> str | None:
    """The dashboard URL of ``client``'s scheduler, or None when it serves none."""
    try:
        services = client.scheduler_info(n_workers=0).get("services", {})
    except TypeError:  # pragma: no cover - older distributed
        services = client.scheduler_info().get("services", {})
    except Exception:
        services = {}
    if "dashboard" not in services:
        return None
    try:
        return client.dashboard_link
    except Exception:  # pragma: no cover
        return None


def is_interactive() -> bool:
    """True in an interactive interpreter / notebook or when stderr is a terminal."""
    if hasattr(sys, "ps1"):
        return True
    try:
        return sys.stderr.isatty()
    except Exception:  # pragma: no cover
        return False


def show_progress(futures, *, enabled: bool | None = None) -> None:
    """``distributed.progress`` bar for ``futures`` — only when asked or interactive."""
    if enabled is False or (enabled is None and not is_interactive()):
        return
    try:
        progress(futures)
    except Exception:  # progress is cosmetic
        pass


def current_client(client=None):
    """``client``, else the active ``distributed`` client, else ``None`` (never starts one)."""
    if client is not None:
        return client
    try:
        return default_client()
    except ValueError:
        return None


def worker_memory_limits(client) -> tuple[int, int, int]:
    """(workers, smallest memory limit, total memory limit) in bytes (0 = unknown)."""
    if client is None:
        return 0, 0, 0
    try:
        info = client.scheduler_info(n_workers=-1)["workers"]
    except TypeError:  # older distributed
        info = client.scheduler_info()["workers"]
    except Exception:  # pragma: no cover
        return 0, 0, 0
    lims = [int(w.get("memory_limit") or 0) for w in info.values()]
    if not lims:
        return 0, 0, 0
    if any(v == 0 for v in lims):  # unlimited workers: use the machine's memory
        try:
            tot = int(psutil.virtual_memory().total)
        except Exception:  # pragma: no cover
            tot = 0
        lims = [v or tot // len(lims) for v in lims]
    return len(lims), min(lims), sum(lims)


def worker_memory(client) -> dict:
    """Workers' count and memory limits in bytes: ``{"workers", "min", "total"}``."""
    w, mn, tot = worker_memory_limits(client)
    return {"workers": w, "min": mn, "total": tot}


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, scheduler_file: str | None = None,
            n_workers: int | None = None, threads_per_worker: int | None = None,
            memory_limit: str | None = None, gpu: bool = False, quiet: bool = False,
            dashboard_address: str | None = ":8787", **cluster_kwargs) -> Iterator:
    """Connect to a cluster, or start one on this machine; yield a ``distributed.Client``.

    Order: ``scheduler`` address, ``scheduler_file``, the ``DASK_SCHEDULER_ADDRESS``
    environment variable, else an embedded cluster: ``LocalCluster(processes=True)``
    sized by :func:`machine_size` (``memory_limit`` per worker, default distributed's
    share of the machine's memory), or ``dask_cuda.LocalCUDACluster`` (one worker per GPU)
    when ``gpu=True``.  Prints the dashboard link unless ``quiet``.  On exit, closes the
    client and whatever cluster it started (never a cluster it merely joined).

    Parameters
    ----------
    scheduler : str, optional
        ``tcp://host:8786`` (or ``tls://``...).
    scheduler_file : str, optional
        JSON file written by ``dask scheduler --scheduler-file`` (SLURM, jobqueue).
    n_workers, threads_per_worker, memory_limit : optional
        Embedded cluster only.
    gpu : bool
        Embedded cluster on GPUs; needs ``dask-cuda`` (``pip install dsketch[gpu]``).
    quiet : bool
        Do not print the dashboard link.
    dashboard_address : str or None
        Embedded cluster's dashboard (``None``: no dashboard).
    **cluster_kwargs
        Passed to the embedded cluster's constructor.
    """
    cluster = None
    address = scheduler or None
    env = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        client = Client(address)
    elif scheduler_file:
        client = Client(scheduler_file=os.fspath(scheduler_file))
    elif env:
        client = Client(env)
    else:
        kw = dict(cluster_kwargs)
        if dashboard_address is not None:
            kw.setdefault("dashboard_address", dashboard_address)
        if gpu:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError as exc:
                raise RuntimeError("gpu=True needs dask-cuda (pip install 'dsketch[gpu]'); "
                                   f"import failed: {exc}") from None
            if n_workers is not None:
                kw.setdefault("n_workers", n_workers)
            if threads_per_worker is not None:
                kw.setdefault("threads_per_worker", threads_per_worker)
            if memory_limit is not None:
                kw.setdefault("memory_limit", memory_limit)
            cluster = LocalCUDACluster(**kw)
        else:
            nw, tpw = machine_size(n_workers, threads_per_worker)
            cluster = LocalCluster(n_workers=nw, threads_per_worker=tpw, processes=True,
                                   memory_limit=memory_limit if memory_limit is not None else "auto",
                                   **kw)
        client = Client(cluster)
    try:
        if not quiet:
            link = dashboard_link(client)
            where = "embedded cluster" if cluster is not None else f"scheduler {client.scheduler.address}"
            n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            msg = f"dsketch: {where}, {n} worker(s)"
            print(msg + (f"; dashboard: {link}" if link else "; no dashboard (install bokeh)"),
                  file=sys.stderr)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
