"""Progress of dsketch fits: published to the scheduler, shown on its dashboard and terminal.

How progress travels
--------------------
* A fit on a ``distributed`` cluster (``SketchRidge.fit`` on dask input) opens a
  :class:`FitProgress`.  At each phase change (``gram``, ``solve``, ``cg``...), CG
  iteration and at the end it writes a small JSON-able record to the scheduler with
  ``Client.set_metadata(["dsketch-progress", fit_id], record)`` — the scheduler's public
  metadata store, so it works on any scheduler (local or remote) without a plugin.
* Rows done are *live*: the record carries the fit's row chunks; the page (or
  :func:`snapshot`, run on the scheduler) finds the task group of the pass running now
  (``dsketch-gram-chunk-*``, ``dsketch-cg-matvec-chunk-*``... with one task per row chunk)
  in ``Scheduler.task_groups`` and counts its finished tasks.  Two fits running at once on
  one scheduler with the same number of chunks can be confused; the published phase,
  residuals and final row count are always exact.
* The page: this module exposes ``routes`` for the scheduler's
  ``distributed.scheduler.http.routes`` config.  :func:`enable` adds it to the dask config
  of this process (do it before a ``LocalCluster`` starts, e.g. before
  ``dsketch.engine.connect()``, as the CLI does); a stand-alone scheduler needs the module in its config, e.g.
  ``DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES='["distributed.http.scheduler.prometheus",
  "distributed.http.scheduler.info", "distributed.http.scheduler.json",
  "distributed.http.health", "distributed.http.proxy", "distributed.http.statics",
  "dsketch.dashboard"]'``.  Then ``http://<scheduler>:8787/dsketch`` shows every fit
  (phase, rows done, CG residual curve — the largest over columns, live — and the last
  residual of each CG column, target or class, live: ``column_residuals``,
  CV curve) and ``/dsketch/json`` the same as JSON.
* In a terminal, :class:`TerminalProgress` draws one line on stderr for the fit running in
  this process.

Task names: the engine names its tasks ``dsketch-embed-<kernel>``, ``dsketch-gram``,
``dsketch-cg-matvec``, ``dsketch-predict`` (alphabetic words, so ``key_split`` keeps them
whole on the dashboard's task stream and progress bars).

Progress never breaks a fit: publishing errors are logged and ignored.  This module is the
user layer: the engine never imports it.
"""

from __future__ import annotations

import collections
import contextlib
import html
import json
import logging
import math
import re
import sys
import threading
import time
import uuid
from typing import Any, Iterator

import dask.config
from distributed.http.utils import RequestHandler

__all__ = ["enable", "FitProgress", "track_fit", "snapshot", "routes", "TerminalProgress",
           "METADATA_KEY", "ROUTE_MODULE"]

logger = logging.getLogger(__name__)

METADATA_KEY = "dsketch-progress"
ROUTE_MODULE = "dsketch.dashboard"
_MAX_KEPT = 20  # finished fits kept on the scheduler for display
_MAX_COLUMNS = 20  # CG columns listed per fit (the rest summarized by the worst)
_DONE_STATES = ("memory", "released", "forgotten", "erred")  # released: run, result passed on
_PASS_PHASES = ("gram", "cg", "embed", "predict")
# task groups of one task per row chunk (a group's name is its key without the chunk index)
_PASS_PREFIXES = ("dsketch-gram-", "dsketch-cg-setup-", "dsketch-cg-matvec-", "dsketch-cv-score-",
                  "dsketch-embed-", "dsketch-predict-", "dsketch-write-")


# =============================================================================== config
def enable() -> None:
    """Add this module to ``distributed.scheduler.http.routes`` in this process's config.

    Idempotent.  Affects schedulers started afterwards in this process (``LocalCluster``).
    """
    current = list(dask.config.get("distributed.scheduler.http.routes", []) or [])
    if ROUTE_MODULE not in current:
        dask.config.set({"distributed.scheduler.http.routes": current + [ROUTE_MODULE]})


def page_url(client) -> str | None:
    """The URL of the dsketch page on ``client``'s scheduler dashboard, if it has one."""
    link = getattr(client, "dashboard_link", None)
    if not link:
        return None
    return link.rsplit("/", 1)[0] + "/dsketch" if link.endswith("/status") else link.rstrip("/") + "/dsketch"


# ============================================================================ publisher
_local_lock = threading.Lock()
_local_active: list["FitProgress"] = []
_local_finished: collections.deque = collections.deque(maxlen=8)  # for TerminalProgress's last lines


class FitProgress:
    """Progress record of one fit, published to the scheduler on every change.

    Parameters
    ----------
    client : distributed.Client or None
        ``None`` makes every method a cheap no-op publish (state is still kept locally).
    estimator : str
    n_rows, n_features : int
    Phi : dask.array.Array, optional
        The fit's feature array: its task-group name lets the page count rows done live.
    """

    def __init__(self, client, *, estimator: str, n_rows: int, n_features: int, Phi=None):
        self.client = client
        self.id = f"{estimator}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        self.state: dict[str, Any] = {
            "id": self.id, "estimator": estimator, "status": "running", "phase": "start",
            "n_rows": int(n_rows), "n_features": int(n_features), "rows_done": 0,
            "groups": [Phi.name] if Phi is not None and hasattr(Phi, "name") else [],
            "chunks": _row_chunks(Phi), "residuals": [], "alpha": None, "cv": None,
            "started": now, "updated": now, "passes": 0,
        }
        self._publish()

    # -------------------------------------------------------------------- updates
    def update(self, **fields) -> None:
        self.state.update({k: _jsonable(v) for k, v in fields.items()})
        self.state["updated"] = time.time()
        self._publish()

    def phase(self, name: str, **fields) -> None:
        """Enter phase ``name`` (``gram``, ``solve``, ``cg``, ``predict``...)."""
        self.update(phase=name, **fields)

    def residual(self, value: float, *args, columns=None, **kwargs) -> None:
        """Record one CG residual, and each column's when given (usable directly as a
        solver callback: the engine's CG passes ``columns=``)."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            return
        self.state["residuals"] = list(self.state["residuals"]) + [value]
        live = {} if columns is None else {"column_residuals": [float(c) for c in columns]}
        self.update(phase="cg", **live)

    def close(self, status: str = "done") -> None:
        if status == "done":
            self.update(status=status, phase="done", rows_done=self.state["n_rows"])
        else:
            self.update(status=status)

    # ----------------------------------------------------------------- publishing
    def _publish(self) -> None:
        if self.client is None:
            return
        try:
            self.client.set_metadata([METADATA_KEY, self.id], dict(self.state))
            if self.state["status"] != "running":
                self.client.run_on_scheduler(_prune, _MAX_KEPT)
        except Exception:  # pragma: no cover - progress must never break a fit
            logger.debug("could not publish dsketch progress", exc_info=True)


@contextlib.contextmanager
def track_fit(client, **kwargs) -> Iterator[FitProgress]:
    """``with track_fit(client, estimator=..., n_rows=..., n_features=..., Phi=...) as p``.

    Marks the fit ``done`` on normal exit and ``failed`` on an exception; while it runs the
    record is visible to :class:`TerminalProgress` in this process.
    """
    progress = FitProgress(client, **kwargs)
    with _local_lock:
        _local_active.append(progress)
    try:
        yield progress
    except BaseException as exc:
        progress.update(error=f"{type(exc).__name__}: {exc}")
        progress.close("failed")
        raise
    else:
        progress.close("done")
    finally:
        with _local_lock:
            _local_active.remove(progress)
            _local_finished.append(progress)


def _row_chunks(Phi) -> list[int] | None:
    chunks = getattr(Phi, "chunks", None)
    if not chunks:
        return None
    return [int(c) for c in chunks[0]] if all(not math.isnan(c) for c in chunks[0]) else None


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return v.item()
    return v


# ============================================================== scheduler-side reading
def _prune(keep: int = _MAX_KEPT, dask_scheduler=None) -> None:
    fits = dask_scheduler.task_metadata.get(METADATA_KEY, {})
    done = sorted((f.get("updated", 0), k) for k, f in fits.items() if f.get("status") != "running")
    for _, key in done[:-keep] if len(done) > keep else []:
        fits.pop(key, None)


def _live_rows(scheduler, fit: dict) -> int:
    """Rows of the current pass whose chunks have finished, from the scheduler's task groups.

    A pass over the data is one task group of one task per row chunk: the engine's
    ``dsketch-gram-*``, ``dsketch-cg-setup-*``, ``dsketch-cg-matvec-*`` (into which the
    ``dsketch-embed-*`` tasks of Φ fuse) or Φ's own group.  The newest such group with as
    many tasks as the fit has row chunks is the pass running now; its tasks in memory or
    already released (run, result passed on) are done.
    """
    published = int(fit.get("rows_done", 0) or 0)
    chunks = fit.get("chunks") or []
    if fit.get("status") != "running" or fit.get("phase") not in _PASS_PHASES or not chunks:
        return published
    names = tuple(fit.get("groups", [])) + _PASS_PREFIXES
    current = None
    for name, tg in list(getattr(scheduler, "task_groups", {}).items()):
        if name.startswith(names) and sum(tg.states.values()) == len(chunks):
            current = tg
    if current is None:
        return published
    done = sum(current.states.get(s, 0) for s in _DONE_STATES)
    n = int(fit.get("n_rows", 0) or 0)
    return min(n, int(round(n * done / len(chunks))))


def snapshot(dask_scheduler=None) -> dict[str, dict]:
    """Every published fit with live ``rows_done`` and ``elapsed`` (run on the scheduler).

    ``elapsed`` (seconds) is the time since the fit started, now, while it runs (a pass
    publishes nothing for minutes: the last publish time would freeze the clock), and its
    duration once it has ended.
    """
    fits = dask_scheduler.task_metadata.get(METADATA_KEY, {}) if dask_scheduler else {}
    out = {}
    now = time.time()
    for key, fit in list(fits.items()):
        fit = dict(fit)
        fit["rows_done"] = _live_rows(dask_scheduler, fit)
        end = now if fit.get("status") == "running" else fit.get("updated", now)
        fit["elapsed"] = max(0.0, float(end) - float(fit.get("started", end)))
        out[key] = fit
    return out


# =============================================================================== pages
def _svg_curve(values: list[float], *, log: bool, width=360, height=120, label="") -> str:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not log)]
    if len(vals) < 1:
        return '<span class="muted">none yet</span>'
    ys = [math.log10(v) for v in vals] if log else list(vals)
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    n = len(ys)
    pts = " ".join(f"{6 + (width - 12) * (i / max(n - 1, 1)):.1f},"
                   f"{6 + (height - 12) * (1 - (y - lo) / span):.1f}" for i, y in enumerate(ys))
    top = f"{10 ** hi:.1e}" if log else f"{hi:.3g}"
    bottom = f"{10 ** lo:.1e}" if log else f"{lo:.3g}"
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(label)}">'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>'
            f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{pts}"/>'
            f'<text x="8" y="14" font-size="10">{top}</text>'
            f'<text x="8" y="{height - 4}" font-size="10">{bottom}</text></svg>')


def _column_table(cols, limit: int = _MAX_COLUMNS) -> str:
    """The last relative residual of each CG column (target / class), the worst marked."""
    vals = [float(c) for c in cols or [] if isinstance(c, (int, float))]
    if not vals:
        return ""
    worst = max(range(len(vals)), key=vals.__getitem__)
    rows = "".join(f"<tr{' class=worst' if j == worst else ''}><td>{j}</td><td>{r:.2e}</td></tr>"
                   for j, r in enumerate(vals[:limit]))
    if len(vals) > limit:
        rows += (f"<tr><td colspan='2' class='muted'>{len(vals) - limit} more; worst: column "
                 f"{worst}, {vals[worst]:.2e}</td></tr>")
    return (f"<table class='columns' aria-label='CG residual per column'><tr><th>column</th>"
            f"<th>residual</th></tr>{rows}</table>")


def _fmt_alpha(a) -> str:
    return "" if a is None else f"{a:.3g}"


def render_page(fits: dict[str, dict]) -> str:
    """HTML of the dsketch page for the records of :func:`snapshot`."""
    rows = []
    order = sorted(fits.values(), key=lambda f: (f.get("status") != "running", -f.get("started", 0)))
    for f in order:
        n = max(int(f.get("n_rows", 0) or 0), 1)
        done = int(f.get("rows_done", 0) or 0)
        pct = 100.0 * done / n
        res = f.get("residuals") or []
        cv = f.get("cv") or {}
        cv_vals = cv.get("mean_test_mse") or cv.get("gcv_mse") or []
        elapsed = f.get("elapsed", f.get("updated", 0) - f.get("started", 0))
        rows.append(
            f"<tr data-fit='{html.escape(str(f.get('id')))}'>"
            f"<td><code>{html.escape(str(f.get('id')))}</code></td>"
            f"<td class='status-{html.escape(str(f.get('status')))}'>{html.escape(str(f.get('status')))}</td>"
            f"<td class='phase'>{html.escape(str(f.get('phase')))}</td>"
            f"<td class='progress'><div class='bar'><div style='width:{pct:.1f}%'></div></div>"
            f"rows done: {done:,} / {int(f.get('n_rows', 0)):,}</td>"
            f"<td>{int(f.get('n_features', 0)):,}</td>"
            f"<td>{_fmt_alpha(f.get('alpha'))}</td>"
            f"<td class='time'>{elapsed:.1f} s</td>"
            f"<td class='cg'>CG residuals ({len(res)}): {', '.join(f'{r:.2e}' for r in res[-3:])}<br>"
            f"{_svg_curve(res, log=True, label='CG residual curve')}"
            f"{_column_table(f.get('column_residuals'))}</td>"
            f"<td>{_svg_curve(cv_vals, log=False, label='CV curve') if cv_vals else ''}</td>"
            + (f"<td class='error'>{html.escape(str(f.get('error')))}</td>" if f.get("error") else "<td></td>")
            + "</tr>")
    body = "".join(rows) or "<tr><td colspan='10'>No dsketch fit has run on this scheduler yet.</td></tr>"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<link rel="icon" href="data:,">
<title>dsketch fits</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; }}
.bar {{ width: 160px; height: 10px; background: #eee; }} .bar div {{ height: 10px; background: #2ca02c; }}
.columns td, .columns th {{ padding: 1px 6px; font-size: 90%; }} .columns .worst {{ color: #d62728; }}
.status-running {{ color: #1f77b4; }} .status-failed, .error {{ color: #d62728; }} .muted {{ color: #888; }}
</style></head><body>
<h1>dsketch fits</h1>
<p>Phases: <b>gram</b> (one pass: features and ΦᵀΦ, ΦᵀY), <b>solve</b> (factor the Gram, regularization path),
<b>cg</b> (conjugate gradients, one pass per iteration). Tasks on the status page:
<code>dsketch-embed-*</code>, <code>dsketch-gram</code>, <code>dsketch-cg-*</code>, <code>dsketch-predict</code>.
<a href="dsketch/json">JSON</a></p>
<table><tr><th>fit</th><th>status</th><th>phase</th><th>progress</th><th>features</th><th>alpha</th>
<th>time</th><th>CG residual curve, residual per column</th><th>CV curve (MSE per alpha)</th><th></th></tr>
{body}</table></body></html>"""


class _Page(RequestHandler):
    """``/dsketch``: the HTML page."""

    def get(self):
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(render_page(snapshot(self.server)))


class _JSON(RequestHandler):
    """``/dsketch/json``: the same records as JSON."""

    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(snapshot(self.server)))


routes = [("dsketch", _Page, {}), ("dsketch/json", _JSON, {})]


# ============================================================================ terminal
class TerminalProgress:
    """Progress on stderr for the fit running in this process (a context manager).

    Shows the phase, rows done (live, from the scheduler), the last CG residual and the
    elapsed time.  On a terminal: one line redrawn in place.  On anything else (a log file,
    a pipe, a batch job's output): a new line at each phase change, each further tenth of
    the rows of a phase and at least every ``log_every`` seconds, and a last line with the
    final state, so a log always shows the fit advancing.
    """

    def __init__(self, client=None, stream=None, interval: float = 0.5, log_every: float = 60.0):
        self.client = client
        self.stream = stream or sys.stderr
        self.interval = interval
        self.log_every = log_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dsketch-progress", daemon=True)
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._seen: FitProgress | None = None  # the fit shown last
        self._entered = 0.0
        self._logged: tuple = (None, None, -1)  # (fit id, phase, tenth of rows) of the last line
        self._logged_at = 0.0
        self._last_line = ""

    def __enter__(self):
        self._entered = time.time()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
            return
        with _local_lock:
            finished = [p for p in _local_finished if p.state["started"] >= self._entered]
        if finished and finished[-1] is not self._seen:  # a fit that ran between two polls
            self._finish()
            self._seen = finished[-1]
        self._finish()

    def _finish(self) -> None:
        """Log the state of the fit shown last (done / failed), unless that line is already out."""
        if self._seen is None:
            return
        line = self.format(dict(self._seen.state))
        if _strip_time(line) != _strip_time(self._last_line):
            self._write(line + "\n")
            self._last_line = line

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _current(self) -> dict | None:
        with _local_lock:
            active = list(_local_active)
        if not active:
            return None
        if self._seen is not None and self._seen is not active[-1] and not self._tty:
            self._finish()  # the previous fit's last line
        self._seen = active[-1]
        fit = dict(self._seen.state)
        if self.client is not None and fit.get("phase") in _PASS_PHASES:
            try:
                live = self.client.run_on_scheduler(snapshot)
                fit["rows_done"] = live.get(fit["id"], fit).get("rows_done", fit["rows_done"])
            except Exception:  # pragma: no cover
                pass
        return fit

    def _due(self, fit: dict) -> bool:
        """Whether a log line is due: new fit or phase, a further tenth of the rows, or time."""
        n = max(int(fit.get("n_rows", 0) or 0), 1)
        tenth = int(10 * min(int(fit.get("rows_done", 0) or 0) / n, 1.0))
        fit_id, phase, logged_tenth = self._logged
        now = time.monotonic()
        same = (fit_id, phase) == (fit.get("id"), fit.get("phase"))
        if same and tenth <= logged_tenth and now - self._logged_at < self.log_every:
            return False
        self._logged = (fit.get("id"), fit.get("phase"), max(tenth, logged_tenth) if same else tenth)
        self._logged_at = now
        return True

    def _run(self):
        while not self._stop.wait(self.interval):
            fit = self._current()
            if fit is None:
                continue
            line = self.format(fit)
            if self._tty:
                self._write("\r" + line[:119].ljust(119))
            elif self._due(fit):
                self._write(line + "\n")
                self._last_line = line

    @staticmethod
    def format(fit: dict) -> str:
        n = max(int(fit.get("n_rows", 0) or 0), 1)
        done = int(fit.get("rows_done", 0) or 0)
        width = 24
        full = int(width * min(done / n, 1.0))
        bar = "#" * full + "-" * (width - full)
        res = fit.get("residuals") or []
        tail = f"  residual {res[-1]:.2e}" if res else ""
        elapsed = time.time() - fit.get("started", time.time())
        failed = "  FAILED" if fit.get("status") == "failed" else ""
        return f"[{fit.get('phase', '?'):>5}] [{bar}] {done:,}/{n:,} rows{tail}{failed}  {elapsed:5.1f}s"


def _strip_time(line: str) -> str:
    """A progress line without its elapsed-time field (to tell real changes)."""
    return re.sub(r"\s+[0-9.]+s$", "", line)
