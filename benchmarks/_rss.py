"""Peak resident memory of Dask worker processes, sampled inside the workers.

Serves the scaling benchmark (and the engine test that reports worker memory during a
fit); not part of the ``dsketch`` package.  Must not change what the workers compute.
"""

from __future__ import annotations

import threading
import uuid

import psutil

__all__ = ["PeakRSS"]

_SAMPLERS: dict = {}  # on each worker: token -> sampler state


def _rss_start(token: str, interval: float) -> int:
    """On a worker: sample this process's RSS every ``interval`` s in a daemon thread."""
    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "stop": threading.Event()}
    state["start"] = state["peak"]

    def loop():
        while not state["stop"].wait(interval):
            state["peak"] = max(state["peak"], proc.memory_info().rss)

    threading.Thread(target=loop, daemon=True, name="dsketch-rss").start()
    _SAMPLERS[token] = state
    return state["start"]


def _rss_stop(token: str) -> tuple[int, int]:
    """On a worker: stop the sampler of ``token``; ``(start, peak)`` RSS in bytes."""
    state = _SAMPLERS.pop(token, None)
    if state is None:  # a worker that started after the monitor (e.g. restarted)
        rss = psutil.Process().memory_info().rss
        return rss, rss
    state["stop"].set()
    state["peak"] = max(state["peak"], psutil.Process().memory_info().rss)
    return state["start"], state["peak"]


class PeakRSS:
    """Peak resident memory of every worker process during a ``with`` block.

    Each worker samples its own RSS in a thread (default every 20 ms), so the client
    does no polling.  After the block, ``start`` and ``peak`` map worker address to bytes.
    Workers that died during the block report only what their replacement saw.

    Parameters
    ----------
    client : distributed.Client
    interval : float
        Seconds between two samples on each worker.
    """

    def __init__(self, client, interval: float = 0.02):
        self.client = client
        self.interval = float(interval)
        self.token = uuid.uuid4().hex
        self.start: dict = {}
        self.peak: dict = {}

    def __enter__(self) -> "PeakRSS":
        self.start = self.client.run(_rss_start, self.token, self.interval)
        return self

    def __exit__(self, *exc) -> None:
        out = self.client.run(_rss_stop, self.token)
        self.peak = {a: v[1] for a, v in out.items()}
        for a, v in out.items():
            self.start.setdefault(a, v[0])

    @property
    def max_peak(self) -> int:
        """The largest peak of any worker, bytes (0 before the block ends)."""
        return max(self.peak.values()) if self.peak else 0
