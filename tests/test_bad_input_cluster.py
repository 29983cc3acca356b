"""Cluster connection with bad input, by class: every wait is bounded and every error says why.

Classes: missing scheduler files (immediate error, or after ``wait_for_file``); files that
are not scheduler files; embedded clusters of zero workers or threads; unreachable
scheduler addresses (``TimeoutError`` after ``timeout``, saying what was waited for); bad
timeouts.  Worker logs: the "Compute Failed" traceback of an ``InvalidInputError`` is
dropped (the client reports the error once).  Each test has a hard timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest

from dsketch import engine
from dsketch.backend import InvalidInputError
from dsketch.engine.cluster import QuietInvalidInput, connect_timeout, machine_size, read_scheduler_file

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def running():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        yield cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _elapsed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def test_missing_scheduler_file_fails_at_once(tmp_path):
    path = tmp_path / "missing.json"

    def go():
        with pytest.raises(InvalidInputError, match=f"scheduler file '{path}' does not exist"):
            with engine.connect(scheduler_file=path, quiet=True):
                pass

    assert _elapsed(go) < 5


def test_scheduler_file_waited_for_a_bounded_time(tmp_path, running):
    path = tmp_path / "late.json"

    def go():
        with pytest.raises(InvalidInputError, match="does not exist after waiting 1 s"):
            read_scheduler_file(path, wait=1.0)

    assert 0.9 < _elapsed(go) < 10
    # a file that appears within the wait is used
    threading.Timer(0.5, lambda: path.write_text(json.dumps({"address": running.scheduler_address}))).start()
    with engine.connect(scheduler_file=path, wait_for_file=30, quiet=True) as client:
        assert client.scheduler.address == running.scheduler_address


GARBAGE = {
    "not json": ("hello", "is not the JSON written by `dask scheduler --scheduler-file`"),
    "empty": ("", "is not the JSON written by"),
    "a list": ("[1, 2]", "has no scheduler 'address'"),
    "no address": ('{"type": "Scheduler"}', "has no scheduler 'address' (like tcp://host:8786); found keys ['type']"),
    "address a number": ('{"address": 5}', "found address 5"),
    "address without protocol": ('{"address": "localhost"}', "found address 'localhost'"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "is not the JSON written by"),
}


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_scheduler_file_is_a_clear_error(tmp_path, case):
    text, fragment = GARBAGE[case]
    path = tmp_path / "scheduler.json"
    path.write_text(text)

    def go():
        with pytest.raises(InvalidInputError) as info:
            with engine.connect(scheduler_file=str(path), quiet=True):
                pass
        assert fragment in str(info.value) and str(path) in str(info.value)

    assert _elapsed(go) < 10


def test_scheduler_file_that_is_a_directory(tmp_path):
    with pytest.raises(InvalidInputError, match="is a directory"):
        read_scheduler_file(tmp_path)


@pytest.mark.parametrize("kw", [{"n_workers": 0}, {"threads_per_worker": 0}, {"n_workers": 2.5},
                                {"n_workers": -1}, {"threads_per_worker": True}, {"n_workers": "2"},
                                {"n_workers": float("nan")}, {"threads_per_worker": float("inf")}])
def test_embedded_cluster_of_no_workers_refused(kw, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    name = next(iter(kw))
    with pytest.raises(InvalidInputError, match=f"{name} must be a whole number >= 1"):
        with engine.connect(quiet=True, dashboard_address=None, **kw):
            pass
    with pytest.raises(InvalidInputError, match=name):
        machine_size(**kw)


def test_unreachable_scheduler_times_out_saying_what_it_waited_for():
    address = f"tcp://127.0.0.1:{_free_port()}"
    said = []

    def go():
        with pytest.raises(TimeoutError) as info:
            with engine.connect(address, timeout=2, log=said.append):
                pass
        assert f"no dask scheduler answered at {address}" in str(info.value)
        assert "within 2 s" in str(info.value)

    assert _elapsed(go) < 30
    assert said == [f"dsketch: connecting to the scheduler {address}; waiting up to 2 s"]


def test_timeout_from_dask_config_and_env(monkeypatch):
    import dask.config

    with dask.config.set({"distributed.comm.timeouts.connect": "7s"}):
        assert connect_timeout() == 7.0
    assert connect_timeout("2m") == 120.0 and connect_timeout(1.5) == 1.5
    address = f"tcp://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with pytest.raises(TimeoutError, match="from DASK_SCHEDULER_ADDRESS"):
        with engine.connect(timeout=1, quiet=True):
            pass


@pytest.mark.parametrize("timeout", [0, -1, "abc", float("nan"), float("inf")])
def test_bad_timeout_refused(timeout):
    with pytest.raises(InvalidInputError, match="timeout must be a positive number of seconds"):
        with engine.connect("tcp://127.0.0.1:1", timeout=timeout, quiet=True):
            pass


def test_joined_scheduler_without_workers_is_announced():
    from distributed import LocalCluster

    said = []
    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        with engine.connect(cluster.scheduler_address, timeout=10, log=said.append):
            pass
    assert any("has no workers yet" in line for line in said)


def _compute_failed_record(exc: Exception) -> logging.LogRecord:
    """The record ``distributed.worker`` logs when a task raises ``exc``."""
    return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1,
                             "Compute Failed\nKey:       %s\nState:     %s\nTask:  %s\nException: %r\n"
                             "Traceback: %r\n", ("key", "executing", "task", repr(exc), "tb"), None)


def test_worker_log_of_invalid_input_dropped_on_embedded_workers(monkeypatch):
    """A real embedded cluster's workers get the filter; other failures are still logged."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)

    def probe(records):
        log = logging.getLogger("distributed.worker")
        return [all(f.filter(r) for f in log.filters) for r in records]

    with engine.connect(n_workers=1, threads_per_worker=1, dashboard_address=None, quiet=True) as client:
        kept = client.run(probe, [_compute_failed_record(InvalidInputError("X has NaN in chunk 3")),
                                  _compute_failed_record(ZeroDivisionError("oops"))])
    assert list(kept.values()) == [[False, True]]


def test_quiet_plugin_is_idempotent():
    log = logging.getLogger("distributed.worker")
    before = list(log.filters)
    try:
        QuietInvalidInput().setup()
        QuietInvalidInput().setup()
        assert len(log.filters) == len(before) + 1
    finally:
        log.filters[:] = before
