"""The ``/dsketch`` page in a real headless browser during a real fit (issue 21).

Debian's ``chromium`` driven by Playwright (``pip install playwright``; no browser
download: the system binary is launched).  A ``SketchRidge`` CG fit runs on a
multi-process ``LocalCluster`` in a thread while the browser, left alone on the page (it
refreshes itself), is sampled: no console error, the fit's phase, rows done, the live
elapsed time and the CG residual curve are shown, and every one of them changes while the
fit runs.  Skips, saying why, only where no browser can be installed.  With
``DSKETCH_DASHBOARD_PNG=<path>`` the screenshot taken during the CG phase is also written
there (the README's picture: ``docs/dashboard.png``).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

import numpy as np
import pytest

from dsketch import dashboard

pytestmark = pytest.mark.timeout(600)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    path = _chromium()
    if path is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run does)")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def client(dashboard_client):
    return dashboard_client


def _read(page) -> dict | None:
    """The running (or last) fit's row as shown now; None while the page reloads."""
    try:
        row = page.locator("tr[data-fit]").first
        if row.count() == 0:
            return None
        return {
            "status": row.locator("td[class^='status-']").inner_text(timeout=2000),
            "phase": row.locator("td.phase").inner_text(timeout=2000),
            "rows": row.locator("td.progress").inner_text(timeout=2000),
            "time": row.locator("td.time").inner_text(timeout=2000),
            "cg": row.locator("td.cg").inner_text(timeout=2000),
            "curve": row.locator("td.cg polyline").count(),
            "points": (row.locator("td.cg polyline").get_attribute("points", timeout=2000)
                       if row.locator("td.cg polyline").count() else ""),
        }
    except Exception:  # the page refreshed between two reads: read again
        return None


def _seconds(text: str) -> float:
    return float(re.match(r"([\d.]+) s", text).group(1))


def _rows_done(text: str) -> int:
    return int(re.search(r"rows done: ([\d,]+)", text).group(1).replace(",", ""))


def test_page_in_a_real_browser_during_a_fit(browser, client, tmp_path):
    import dask.array as da

    from dsketch.estimators import NTKSketch, SketchRidge

    rng = np.random.default_rng(0)
    n = 60_000
    X = rng.standard_normal((n, 16)).astype(np.float32)
    y = np.sin(X[:, 0]) + 0.1 * X[:, 1]
    Xd, yd = da.from_array(X, chunks=(2500, 16)), da.from_array(y, chunks=2500)
    est = SketchRidge(sketch=NTKSketch(n_components=256, random_state=0), alpha=1e-4,
                      solver="cg", tol=1e-12, max_iter=80)  # tol unreachable: 80 passes, ≥ 10 s
    errors: list[str] = []
    outcome: dict = {}

    def fit():
        try:
            est.fit(Xd, yd)
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    port = client.cluster.scheduler.http_server.port
    page = browser.new_page(viewport={"width": 1500, "height": 420})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(f"http://127.0.0.1:{port}/dsketch")
    assert "dsketch fits" in page.title()

    worker = threading.Thread(target=fit, daemon=True)
    worker.start()
    samples, shot = [], None
    deadline = time.monotonic() + 400
    while worker.is_alive() and time.monotonic() < deadline:
        s = _read(page)  # no reload from here: the page refreshes itself
        if s and s["status"] == "running":
            samples.append(s)
            its = int(re.search(r"\((\d+)\)", s["cg"]).group(1))
            mid_pass = 0 < _rows_done(s["rows"]) < n  # a CG pass part-way: the bar shows it
            if shot is None and s["phase"] == "cg" and (its >= 4 and mid_pass or its >= 12):
                shot = tmp_path / "dashboard.png"
                page.screenshot(path=str(shot), full_page=True)
        time.sleep(0.4)
    worker.join(timeout=60)
    assert "error" not in outcome, outcome
    assert est.fit_report_["solver"] == "cg" and len(est.fit_report_["residuals"]) > 4

    final = None
    for _ in range(20):  # the page shows the finished fit within a refresh or two
        final = _read(page)
        if final and final["status"] == "done":
            break
        time.sleep(0.5)
    page.close()

    assert not errors, errors
    assert final and final["status"] == "done" and final["phase"] == "done", final
    assert _rows_done(final["rows"]) == n and final["curve"] == 1
    assert len(samples) >= 5, samples
    phases = [s["phase"] for s in samples]
    assert "cg" in phases, phases
    # every figure is live: elapsed time, rows done, residual count and curve change during the fit
    times = [_seconds(s["time"]) for s in samples]
    assert times == sorted(times) and times[-1] - times[0] >= 2.0, times
    assert len(set(times)) >= 3, times   # not frozen between two publishes (was "0.0 s")
    rows = {_rows_done(s["rows"]) for s in samples}
    assert len(rows) >= 2, rows
    counts = [int(re.search(r"\((\d+)\)", s["cg"]).group(1)) for s in samples]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert len({s["points"] for s in samples if s["curve"]}) >= 2  # the curve is redrawn
    assert shot is not None and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("DSKETCH_DASHBOARD_PNG")
    if target:
        shutil.copyfile(shot, target)
