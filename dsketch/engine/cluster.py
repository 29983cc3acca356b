"""Starting or joining a ``dask.distributed`` cluster, and showing what it does.

Owns the choice of cluster (explicit scheduler address, scheduler file,
``DASK_SCHEDULER_ADDRESS``, else an embedded ``LocalCluster(processes=True)`` sized to the
machine, or ``dask_cuda.LocalCUDACluster`` for ``gpu=True``), printing the dashboard link,
the progress bar of long computations, and questions about the workers (memory, count).
Must not contain kernel maths or data I/O, and must not import the user layer: callers
that want the ``/dsketch`` dashboard page call ``dsketch.dashboard.enable()`` before
:func:`connect` starts a cluster (the CLI does).

Bounded waits: joining a scheduler waits at most ``timeout`` seconds (default the Dask
config's ``distributed.comm.timeouts.connect``, 30 s) and then raises ``TimeoutError`` naming
the address; a scheduler file that does not exist raises at once (or after ``wait_for_file``
seconds), and one that is not a scheduler file raises ``InvalidInputError``; an embedded
cluster of zero workers or threads is refused.  A joined scheduler that has no workers yet is
announced, not waited for (an adaptive cluster starts workers when work arrives).

Memory contract of the engine (stated here once, relied on everywhere): nothing ``n × m``
is ever gathered on the client; a worker task holds at most one row chunk of inputs and
features (``rows × (d + m)`` elements) plus float64 partial sums of size ``m × m``
(Gram) or ``m × k`` (CG), and reduction tasks hold ``split_every + 1`` partials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from typing import Iterator

import dask.config
import psutil
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster, default_client, progress
from distributed.deploy.utils import nprocesses_nthreads
from distributed.diagnostics.plugin import WorkerPlugin

from ..backend import InvalidInputError, usable_cores

__all__ = ["connect", "dashboard_link", "show_progress", "worker_memory", "machine_size",
           "is_interactive", "current_client", "worker_memory_limits", "connect_timeout",
           "read_scheduler_file", "QuietInvalidInput"]

_MAX_SCHEDULER_FILE_BYTES = 1 << 20


def _positive_count(value, name: str) -> int | None:
    """``value`` as an int >= 1 (None passes), else ``InvalidInputError`` naming ``name``."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or value != int(value) or value < 1):
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {value!r}"
                                + (" (a cluster without workers would wait forever)" if value == 0 else ""))
    return int(value)


def machine_size(n_workers: int | None = None, threads_per_worker: int | None = None) -> tuple[int, int]:
    """Workers and threads per worker filling this machine's usable cores.

    Uses the CPU affinity mask (containers, SLURM cgroups) and distributed's own split
    (``distributed.deploy.utils.nprocesses_nthreads``) when neither is given.
    """
    n_workers = _positive_count(n_workers, "n_workers")
    threads_per_worker = _positive_count(threads_per_worker, "threads_per_worker")
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


def connect_timeout(timeout=None) -> float:
    """Seconds to wait for a scheduler: ``timeout`` (seconds or ``"30s"``), else the Dask
    config's ``distributed.comm.timeouts.connect``."""
    if timeout is None:
        timeout = dask.config.get("distributed.comm.timeouts.connect", "30s")
    try:
        seconds = float(parse_timedelta(timeout, default="seconds"))
    except (TypeError, ValueError, KeyError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return seconds


def read_scheduler_file(path, *, wait: float = 0.0) -> str:
    """The scheduler address in a file written by ``dask scheduler --scheduler-file``.

    A missing file raises at once, or after ``wait`` seconds if it has not appeared by then;
    a file that is not such JSON (``{"address": "tcp://...", ...}``) raises too.

    Raises
    ------
    InvalidInputError
        Naming the file and what is wrong with it.
    """
    path = os.fspath(path)
    deadline = time.monotonic() + max(float(wait), 0.0)
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            waited = f" after waiting {wait:g} s" if wait else ""
            raise InvalidInputError(f"scheduler file {path!r} does not exist{waited}; start the "
                                    "scheduler with `dask scheduler --scheduler-file` first")
        time.sleep(0.05)
    retry_until = max(deadline, time.monotonic() + 0.5)  # a scheduler may be writing it now
    while True:
        found = _scheduler_file_address(path)
        if not isinstance(found, InvalidInputError):
            return found
        if time.monotonic() >= retry_until:
            raise found
        time.sleep(0.05)


def _scheduler_file_address(path: str) -> str | InvalidInputError:
    """The address in ``path``, or the error that says why there is none."""
    where = f"scheduler file {path!r}"
    try:
        if os.path.isdir(path):
            return InvalidInputError(f"{where} is a directory")
        if os.path.getsize(path) > _MAX_SCHEDULER_FILE_BYTES:
            return InvalidInputError(f"{where} is larger than {_MAX_SCHEDULER_FILE_BYTES} bytes; "
                                     "not a scheduler file")
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        return InvalidInputError(f"{where} is not the JSON written by `dask scheduler "
                                 f"--scheduler-file`: {type(exc).__name__}: {exc}")
    address = doc.get("address") if isinstance(doc, dict) else None
    if not isinstance(address, str) or "://" not in address:
        found = f"address {address!r}" if isinstance(doc, dict) and "address" in doc else (
            f"keys {sorted(doc)[:8]}" if isinstance(doc, dict) else f"a JSON {type(doc).__name__}")
        return InvalidInputError(f"{where} has no scheduler 'address' (like tcp://host:8786); "
                                 f"found {found[:120]}")
    return address


def _join(address: str, timeout: float, source: str | None, announce) -> Client:
    """A client of the scheduler at ``address``, or ``TimeoutError`` after ``timeout`` seconds."""
    source = f" (from {source})" if source else ""
    announce(f"dsketch: connecting to the scheduler {address}{source}; waiting up to {timeout:g} s")
    try:
        client = Client(address, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise TimeoutError(f"no dask scheduler answered at {address}{source} within "
                           f"{timeout:g} s: {exc}. Is it running and reachable? (wait longer with "
                           "timeout= / dsketch --timeout)") from None
    except ValueError as exc:
        raise InvalidInputError(f"scheduler address {address!r}{source}: {exc}") from None
    try:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
    except Exception:  # pragma: no cover - informational only
        workers = {"?": None}
    if not workers:
        announce(f"dsketch: the scheduler {address} has no workers yet; tasks wait until one joins")
    return client


class _DropInvalidInputLogs(logging.Filter):
    """Drops ``distributed.worker``'s "Compute Failed" record of a dsketch ``InvalidInputError``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Compute Failed") and len(args) > 3
                    and str(args[3]).startswith(f"{InvalidInputError.__name__}("))


class QuietInvalidInput(WorkerPlugin):
    """Worker plugin: bad input found by a task is reported once, by the client that gets the error.

    Without it each failing task also logs a multi-line "Compute Failed" traceback on the
    worker, which an embedded cluster prints to this process's terminal.
    """

    name = "dsketch-quiet-invalid-input"

    def setup(self, worker=None):
        log = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _DropInvalidInputLogs) for f in log.filters):
            log.addFilter(_DropInvalidInputLogs())


@contextlib.contextmanager
def connect(scheduler: str | None = None, *, scheduler_file: str | None = None,
            n_workers: int | None = None, threads_per_worker: int | None = None,
            memory_limit: str | None = None, gpu: bool = False, quiet: bool = False,
            dashboard_address: str | None = ":8787", timeout=None, wait_for_file: float = 0.0,
            log=None, **cluster_kwargs) -> Iterator:
    """Connect to a cluster, or start one on this machine; yield a ``distributed.Client``.

    Order: ``scheduler`` address, ``scheduler_file``, the ``DASK_SCHEDULER_ADDRESS``
    environment variable, else an embedded cluster: ``LocalCluster(processes=True)``
    sized by :func:`machine_size` (``memory_limit`` per worker, default distributed's
    share of the machine's memory), or ``dask_cuda.LocalCUDACluster`` (one worker per GPU)
    when ``gpu=True``.  Prints the dashboard link (and what it waits for) unless ``quiet``.
    On exit, closes the client and whatever cluster it started (never a cluster it merely
    joined).  Waits are bounded: see the module docstring.

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
    timeout : float or str, optional
        Longest wait for a scheduler to answer (seconds, or ``"2m"``); default the Dask
        config's ``distributed.comm.timeouts.connect`` (30 s).  Then ``TimeoutError``.
    wait_for_file : float
        Seconds to wait for a missing ``scheduler_file`` to appear (default: fail at once).
    log : callable, optional
        Receives the lines saying what is being waited for (default: stderr unless ``quiet``).
    **cluster_kwargs
        Passed to the embedded cluster's constructor.

    Raises
    ------
    TimeoutError
        No scheduler answered within ``timeout``.
    InvalidInputError
        A missing or malformed ``scheduler_file``, ``n_workers``/``threads_per_worker`` < 1.
    """
    cluster = None
    wait = connect_timeout(timeout)
    announce = log or ((lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr)))
    env = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if scheduler:
        client = _join(scheduler, wait, None, announce)
    elif scheduler_file:
        address = read_scheduler_file(scheduler_file, wait=wait_for_file)
        client = _join(address, wait, f"scheduler file {os.fspath(scheduler_file)}", announce)
    elif env:
        client = _join(env, wait, "DASK_SCHEDULER_ADDRESS", announce)
    else:
        n_workers = _positive_count(n_workers, "n_workers")
        threads_per_worker = _positive_count(threads_per_worker, "threads_per_worker")
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
        client.register_plugin(QuietInvalidInput())  # its workers print on our terminal
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
