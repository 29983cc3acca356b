"""dsketch.engine.cluster: connect() order, embedded cluster life cycle, worker facts."""

from __future__ import annotations

import json
import os

import pytest

from dsketch import engine
from dsketch.engine.cluster import machine_size, worker_memory


@pytest.fixture(scope="module")
def running():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                      memory_limit="1GiB") as cluster:
        yield cluster


def test_embedded_cluster_is_multiprocess_and_closed_on_exit(capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with engine.connect(n_workers=1, threads_per_worker=1, memory_limit="1GiB",
                        dashboard_address=":0") as client:
        pids = client.run(os.getpid)
        assert len(pids) == 1 and os.getpid() not in pids.values()
        cluster = client.cluster
        assert worker_memory(client) == {"workers": 1, "min": 2**30, "total": 2**30}
        assert client.submit(sum, [1, 2, 3]).result() == 6
    assert "embedded cluster, 1 worker(s)" in capsys.readouterr().err
    assert cluster.status.name == "closed"


def test_connect_order_address_file_env(running, tmp_path, monkeypatch, capsys):
    addr = running.scheduler_address
    with engine.connect(addr, quiet=True) as c:
        assert c.scheduler.address == addr
    assert running.status.name == "running"  # joined, not started: left running
    f = tmp_path / "scheduler.json"
    f.write_text(json.dumps({"address": addr, "type": "Scheduler"}))
    with engine.connect(scheduler_file=str(f), quiet=True) as c:
        assert c.scheduler.address == addr
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", addr)
    with engine.connect() as c:
        assert c.scheduler.address == addr
        link = engine.dashboard_link(c)
        assert link is None or link.startswith("http")
    err = capsys.readouterr().err
    assert f"scheduler {addr}" in err
    assert running.status.name == "running"


def test_gpu_needs_dask_cuda(monkeypatch):
    try:
        import dask_cuda

        del dask_cuda
    except ImportError:
        monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
        with pytest.raises(RuntimeError, match="dask-cuda"):
            with engine.connect(gpu=True, quiet=True):
                pass
    else:  # pragma: no cover - GPU machines
        pytest.skip("dask-cuda installed; covered by the GPU run")


def test_machine_size():
    nw, tpw = machine_size()
    assert nw >= 1 and tpw >= 1
    assert machine_size(3, 2) == (3, 2)
    assert machine_size(n_workers=1)[0] == 1
