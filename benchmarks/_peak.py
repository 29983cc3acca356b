"""Peak resident memory of THIS process during a ``with`` block (a sampling thread).

Serves the kernel-ridge benchmarks (``realdata.py`` groups ``kernel``/``falkon``,
``krr_scaling.py``) and ``sparse.py``; not part of the ``dsketch`` package.
"""

from __future__ import annotations

import threading

import psutil

__all__ = ["ProcessPeak"]


class ProcessPeak:
    """``with ProcessPeak() as p: ...``; then ``p.peak`` and ``p.start`` (bytes of RSS)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.proc = psutil.Process()
        self.start = self.peak = 0

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()

        def loop():
            while not self._stop.wait(self.interval):
                self.peak = max(self.peak, self.proc.memory_info().rss)

        self._thread = threading.Thread(target=loop, daemon=True, name="peak-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        return False

    @property
    def extra(self) -> int:
        """Peak RSS above the value at entry (bytes)."""
        return self.peak - self.start

    @property
    def peak_gib(self) -> float:
        return self.peak / 2**30
