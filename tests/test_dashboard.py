"""The dsketch page on a real scheduler's dashboard, fetched over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from dsketch import dashboard


@pytest.fixture(scope="module")
def client(dashboard_client):
    return dashboard_client


def _base(client) -> str:
    port = client.cluster.scheduler.http_server.port
    return f"http://127.0.0.1:{port}"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - loopback only
        assert r.status == 200
        return r.read().decode()


def test_enable_adds_route_module_once():
    import dask.config

    with dask.config.set({"distributed.scheduler.http.routes": ["distributed.http.health"]}):
        dashboard.enable()
        dashboard.enable()
        assert dask.config.get("distributed.scheduler.http.routes") == [
            "distributed.http.health", dashboard.ROUTE_MODULE]


def test_page_shows_a_running_fit_phase_rows_and_residuals(client):
    p = dashboard.FitProgress(client, estimator="SketchRidge", n_rows=50_000, n_features=256)
    p.phase("cg", rows_done=12_345)
    for r in (1.0, 0.1, 0.01):
        p.residual(r)
    page = _get(_base(client) + "/dsketch")
    assert p.id in page and "running" in page and ">cg<" in page
    assert "rows done: 12,345 / 50,000" in page
    assert "1.00e-02" in page and "<polyline" in page  # residual curve drawn
    data = json.loads(_get(_base(client) + "/dsketch/json"))
    assert data[p.id]["residuals"] == [1.0, 0.1, 0.01]
    p.close("done")
    data = json.loads(_get(_base(client) + "/dsketch/json"))
    assert data[p.id]["status"] == "done" and data[p.id]["rows_done"] == 50_000


def test_a_real_fit_publishes_its_progress(client):
    import dask.array as da

    from dsketch.estimators import RandomFourierFeatures, SketchRidge

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 4))
    y = np.sin(X[:, 0])
    Xd, yd = da.from_array(X, chunks=500), da.from_array(y, chunks=500)
    est = SketchRidge(sketch=RandomFourierFeatures(n_components=64, random_state=0), alpha=0.1, solver="cg")
    est.fit(Xd, yd)
    grid = SketchRidge(sketch=RandomFourierFeatures(n_components=64, random_state=0), alpha=[0.01, 0.1, 1.0], cv=3)
    grid.fit(Xd, yd)
    data = json.loads(_get(_base(client) + "/dsketch/json"))
    fits = [f for f in data.values() if f["estimator"] == "SketchRidge" and f["n_rows"] == 2000]
    assert len(fits) >= 2 and all(f["status"] == "done" and f["rows_done"] == 2000 for f in fits)
    cg = [f for f in fits if f["residuals"]]
    assert cg and cg[0]["residuals"][-1] <= 1e-6 * 10
    cv = [f for f in fits if f.get("cv")]
    assert cv and cv[0]["alpha"] == grid.alpha_
    page = _get(_base(client) + "/dsketch")
    assert "CG residual curve" in page and "done" in page


def test_page_shows_the_residual_of_every_cg_column(client):
    """A kernel fit's last residual per column (one per class) reaches the page as a table."""
    import dask.array as da

    from dsketch import KernelRidgeClassifier

    rng = np.random.default_rng(1)
    X = rng.normal(size=(240, 4))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    est = KernelRidgeClassifier(alpha=0.5, rank=16, tol=1e-8, max_iter=300, random_state=0)
    est.fit(da.from_array(X, chunks=80), da.from_array(y, chunks=80))
    cols = est.fit_report_["column_residuals"]
    data = json.loads(_get(_base(client) + "/dsketch/json"))
    fit = [f for f in data.values() if f["estimator"] == "KernelRidgeClassifier"][-1]
    assert fit["column_residuals"] == cols and len(cols) == 3
    page = _get(_base(client) + "/dsketch")
    assert "CG residual per column" in page
    for j, r in enumerate(cols):
        assert f"<td>{j}</td><td>{r:.2e}</td>" in page


def test_column_table_lists_columns_and_summarizes_the_rest():
    html = dashboard.render_page({"f": {"id": "f", "status": "done", "n_rows": 10,
                                        "residuals": [1.0, 1e-4],
                                        "column_residuals": [1e-5] * 24 + [3e-4]}})
    assert html.count("<td>1.00e-05</td>") == 20 and "5 more; worst: column 24, 3.00e-04" in html
    assert "CG residual per column" not in dashboard.render_page(
        {"g": {"id": "g", "status": "done", "n_rows": 1, "residuals": []}})


def test_terminal_line_format():
    line = dashboard.TerminalProgress.format({"phase": "gram", "n_rows": 1000, "rows_done": 500,
                                              "residuals": [0.5, 1e-3], "started": 0})
    assert "[ gram]" in line and "500/1,000 rows" in line and "residual 1.00e-03" in line


def test_page_url():
    class C:
        dashboard_link = "http://127.0.0.1:8787/status"

    assert dashboard.page_url(C()) == "http://127.0.0.1:8787/dsketch"


def _rows(lines):
    import re

    return [int(re.search(r"\] ([\d,]+)/[\d,]+ rows", line).group(1).replace(",", "")) for line in lines]


def test_non_terminal_progress_prints_advancing_lines(client):
    """A log file (not a TTY) gets a line per tenth of the rows and a final line, not one stale line."""
    import io
    import time
    import uuid

    import dask.array as da
    from distributed import wait

    def slow(block):
        time.sleep(0.1)
        return block

    Phi = da.ones((2000, 4), chunks=(50, 4)).map_blocks(slow, name=f"dsketch-embed-slowtest-{uuid.uuid4().hex}")
    stream = io.StringIO()
    with dashboard.TerminalProgress(client, stream=stream, interval=0.05):
        with dashboard.track_fit(client, estimator="Slow", n_rows=2000, n_features=4, Phi=Phi) as p:
            p.phase("embed")
            wait(client.persist(Phi))
    lines = stream.getvalue().splitlines()
    rows = _rows(lines)
    assert rows == sorted(rows) and len(set(rows)) >= 3, lines
    assert rows[-1] == 2000 and lines[-1].startswith("[ done]"), lines


def test_non_terminal_progress_repeats_a_line_while_a_phase_runs():
    import io
    import time

    stream = io.StringIO()
    with dashboard.TerminalProgress(None, stream=stream, interval=0.02, log_every=0.2):
        with dashboard.track_fit(None, estimator="Solve", n_rows=10, n_features=2) as p:
            p.phase("solve")
            time.sleep(1.0)
    lines = stream.getvalue().splitlines()
    assert sum(line.startswith("[solve]") for line in lines) >= 3, lines
    assert lines[-1].startswith("[ done]") and _rows(lines)[-1] == 10


def test_elapsed_time_is_live_between_publishes(client):
    """A pass publishes nothing for minutes: the page's time still advances (was "0.0 s")."""
    import re
    import time

    p = dashboard.FitProgress(client, estimator="Live", n_rows=10, n_features=2)
    p.phase("gram")
    first = json.loads(_get(_base(client) + "/dsketch/json"))[p.id]["elapsed"]
    time.sleep(1.2)
    second = json.loads(_get(_base(client) + "/dsketch/json"))[p.id]["elapsed"]
    assert second - first >= 1.0
    page = _get(_base(client) + "/dsketch")
    row = page[page.index(f"data-fit='{p.id}'"):]
    assert float(re.search(r"class='time'>([\d.]+) s<", row).group(1)) >= 1.0
    p.close("done")
    done = json.loads(_get(_base(client) + "/dsketch/json"))[p.id]["elapsed"]
    time.sleep(0.5)  # a finished fit's time is its duration: it stops
    assert json.loads(_get(_base(client) + "/dsketch/json"))[p.id]["elapsed"] == done
