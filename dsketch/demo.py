"""``dsketch demo``: the whole pipeline on real and generated data, offline, in under a minute.

1. Writes scikit-learn's bundled handwritten digits (1,797 8×8 images, real data, no
   network) and a generated nonlinear regression set (default 200,000 × 32) to Zarr
   stores under a work directory.
2. Fits NTK least-squares classification on digits with the layer-algebra sketch
   (``NTKSketch``: arc-cosine polynomial + PolySketch) and NTK ridge regression on the
   generated set with Nyström features of the exact NTK (``NeuralNystroem``: 512 landmark
   rows, one exact kernel row against them per data row), both of the same network
   ``fully_connected(2, Relu(), W_std=√2, b_std=0.1)``, each from its store on the current
   dask cluster, with alpha chosen by 5-fold cross-validation from one pass over the data.
3. Reports test accuracy / RMSE next to exact NTK kernel ridge regression (``net.kernel``)
   on the same training rows (digits) or on a 2,000-row subsample (regression, where the
   exact kernel of all rows would not fit), the times, and the saved model paths.

Owns only the demo's data and its report; everything else is the public API.  Runs on
the client it is given (``dsketch demo`` connects and enables the dashboard page); must not
start a cluster.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from typing import Callable

import numpy as np
import scipy.linalg
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from . import engine
from .estimators import NeuralNystroem, NTKSketch, SketchRidge, SketchRidgeClassifier
from .model_io import save_model
from .nets import Relu, fully_connected

__all__ = ["run_demo", "format_report", "make_regression"]

ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def make_regression(n_rows: int, n_cols: int = 32, seed: int = 0):
    """A smooth nonlinear target of Gaussian inputs plus noise (noise std = 0.3 × signal std).

    f(x) = z₀ + sin z₁ + z₂z₃/2 + 0.3‖x‖/√d with z = xW (four fixed random directions):
    the best possible test R² is 1/1.09 ≈ 0.917.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_cols), dtype=np.float32)
    w = np.random.default_rng(seed + 1).standard_normal((n_cols, 4)) / math.sqrt(n_cols)
    Z = X.astype(np.float64) @ w
    f = (Z[:, 0] + np.sin(Z[:, 1]) + 0.5 * Z[:, 2] * Z[:, 3]
         + 0.3 * np.linalg.norm(X, axis=1) / math.sqrt(n_cols))
    y = f + 0.3 * f.std() * rng.standard_normal(n_rows)
    return X, y.astype(np.float64)


DEPTH, W_STD, B_STD = 2, math.sqrt(2.0), 0.1


def _net():
    return fully_connected(DEPTH, Relu(), W_std=W_STD, b_std=B_STD)


def _chunk_rows(n: int, client) -> int:
    """Rows per chunk: about four chunks per worker thread (at least 256 rows)."""
    threads = 2
    if client is not None:
        try:
            threads = max(1, sum(client.nthreads().values()))
        except Exception:  # pragma: no cover - a scheduler that cannot answer
            pass
    return max(256, -(-n // (4 * threads)))


def _exact_krr(net, Xtr, Ytr, Xte, alpha):
    """Exact NTK kernel ridge regression (no intercept), the baseline the sketch approximates."""
    K = np.asarray(net.kernel(Xtr).ntk)
    coef = scipy.linalg.solve(K + alpha * np.eye(len(K)), Ytr, assume_a="pos")
    return np.asarray(net.kernel(Xte, Xtr).ntk) @ coef


def run_demo(workdir: str | None = None, *, n_rows: int = 200_000, n_features: int = 1024,
             n_landmarks: int = 512, client=None, log: Callable[[str], None] | None = print) -> dict:
    """Run the demo; returns a JSON-able report (see :func:`format_report`).

    Parameters
    ----------
    workdir : str, optional
        Where to write stores and models; default a fresh temporary directory.
    n_rows : int
        Rows of the generated regression set (plus 10% more, at most 5,000, as its test set).
    n_features : int
        Sketch width of the digits model.
    n_landmarks : int
        Landmark rows (= features) of the regression model's Nyström features.
    client : distributed.Client, optional
        The cluster to run on (default: whatever dask scheduler is current).
    log : callable or None
        Receives one line per step.
    """
    say = log or (lambda s: None)
    t_all = time.perf_counter()
    workdir = workdir or tempfile.mkdtemp(prefix="dsketch-demo-")
    os.makedirs(workdir, exist_ok=True)
    net = _net()
    report: dict = {"workdir": workdir, "n_features": n_features, "n_landmarks": n_landmarks}

    # ----------------------------------------------------------------- digits (real data)
    t0 = time.perf_counter()
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    train_url = engine.ingest(Xtr, os.path.join(workdir, "digits-train.zarr"), y=ytr, overwrite=True,
                              chunk_rows=_chunk_rows(len(Xtr), client))
    test_url = engine.ingest(Xte, os.path.join(workdir, "digits-test.zarr"), y=yte, overwrite=True,
                             chunk_rows=_chunk_rows(len(Xte), client))
    say(f"digits: {len(Xtr)} train / {len(Xte)} test rows of 64 pixels -> {train_url}")
    ds = engine.open_dataset(train_url)
    clf = SketchRidgeClassifier(sketch=NTKSketch(net=net, n_components=n_features, random_state=0),
                                alpha=list(ALPHAS), cv=5)
    clf.fit(ds.X, ds.y)
    test = engine.open_dataset(test_url)
    acc = float((np.asarray(clf.predict(test.X).compute()) == yte).mean())
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    Y = np.where(ytr[:, None] == clf.classes_[None, :], 1.0, -1.0)
    exact = _exact_krr(net, Xtr.astype(np.float64), Y, Xte.astype(np.float64), clf.alpha_)
    exact_acc = float((clf.classes_[np.argmax(exact, axis=1)] == yte).mean())
    t_exact = time.perf_counter() - t1
    digits_model = save_model(clf, os.path.join(workdir, "models", "digits-ntk"), overwrite=True)
    report["digits"] = {"n_train": len(Xtr), "n_test": len(Xte), "alpha": clf.alpha_,
                        "accuracy": acc, "exact_ntk_accuracy": exact_acc,
                        "seconds": round(t_fit, 2), "exact_seconds": round(t_exact, 2),
                        "model": digits_model}
    say(f"digits: sketch accuracy {acc:.4f} (exact NTK {exact_acc:.4f}), alpha {clf.alpha_:g}, "
        f"{t_fit:.1f} s")

    # -------------------------------------------------------- generated regression set
    t0 = time.perf_counter()
    n_test = min(max(n_rows // 10, 1000), 5000)
    Xall, yall = make_regression(n_rows + n_test, 32, seed=0)
    mean = float(yall[:n_rows].mean())
    reg_train = engine.ingest(Xall[:n_rows], os.path.join(workdir, "regression-train.zarr"),
                              y=yall[:n_rows] - mean, overwrite=True,
                              chunk_rows=_chunk_rows(n_rows, client))
    reg_test = engine.ingest(Xall[n_rows:], os.path.join(workdir, "regression-test.zarr"),
                             y=yall[n_rows:] - mean, overwrite=True,
                             chunk_rows=_chunk_rows(n_test, client))
    t_write = time.perf_counter() - t0
    say(f"regression: {n_rows:,} × 32 train / {n_test:,} test rows written in {t_write:.1f} s")
    t0 = time.perf_counter()
    ds = engine.open_dataset(reg_train)
    reg = SketchRidge(sketch=NeuralNystroem(net=net, n_components=min(n_landmarks, n_rows),
                                            random_state=0),
                      alpha=list(ALPHAS), cv=5)
    reg.fit(ds.X, ds.y)
    t_fit = time.perf_counter() - t0
    test = engine.open_dataset(reg_test)
    yte_r = yall[n_rows:] - mean
    pred = np.asarray(reg.predict(test.X).compute())
    rmse = float(np.sqrt(np.mean((pred - yte_r) ** 2)))
    r2 = 1.0 - float(np.mean((pred - yte_r) ** 2) / np.var(yte_r))
    t1 = time.perf_counter()
    n_sub = min(2000, n_rows)
    exact = _exact_krr(net, Xall[:n_sub].astype(np.float64), yall[:n_sub] - mean,
                       Xall[n_rows:].astype(np.float64), reg.alpha_)
    exact_rmse = float(np.sqrt(np.mean((exact - yte_r) ** 2)))
    t_exact = time.perf_counter() - t1
    reg_model = save_model(reg, os.path.join(workdir, "models", "regression-ntk"), overwrite=True)
    report["regression"] = {"n_train": n_rows, "n_test": n_test, "alpha": reg.alpha_, "rmse": rmse,
                            "r2": r2, "y_std": float(np.std(yte_r)),
                            "exact_ntk_rmse_subsample": exact_rmse, "exact_subsample_rows": n_sub,
                            "seconds": round(t_fit, 2), "exact_seconds": round(t_exact, 2),
                            "write_seconds": round(t_write, 2), "model": reg_model,
                            "fit_report": {k: reg.fit_report_.get(k) for k in ("solver", "seconds")}}
    say(f"regression: Nyström RMSE {rmse:.4f} (R² {r2:.3f}); exact NTK on {n_sub:,} rows "
        f"{exact_rmse:.4f}; {t_fit:.1f} s")
    report["seconds"] = round(time.perf_counter() - t_all, 2)
    return report


def format_report(r: dict) -> list[str]:
    """Human lines for the demo's report."""
    d, g = r["digits"], r["regression"]
    lines = [
        "",
        "dsketch demo — NTK of a 2-hidden-layer ReLU net, alpha by 5-fold CV",
        f"  digits: NTKSketch, m = {r['n_features']} random features (polynomial sketch); "
        f"regression: NeuralNystroem, m = {r.get('n_landmarks', '?')} landmarks (exact NTK rows)",
        "",
        f"{'task':<34}{'dsketch':>10}{'exact NTK':>12}{'fit time':>10}",
        f"{'digits, accuracy (' + str(d['n_test']) + ' test)':<34}{d['accuracy']:>10.4f}"
        f"{d['exact_ntk_accuracy']:>12.4f}{d['seconds']:>9.1f}s",
        f"{'regression, RMSE (' + format(g['n_train'], ',') + ' rows)':<34}{g['rmse']:>10.4f}"
        f"{g['exact_ntk_rmse_subsample']:>12.4f}{g['seconds']:>9.1f}s",
        f"  (exact NTK on a {g['exact_subsample_rows']:,}-row subsample; test y std {g['y_std']:.4f}, "
        f"dsketch R² {g['r2']:.3f})",
        "",
        f"total time: {r['seconds']:.1f} s",
    ]
    if r.get("dashboard"):
        lines.append(f"dashboard:  {r['dashboard']}")
    lines += [f"models:     {d['model']}", f"            {g['model']}",
              f"data:       {r['workdir']}",
              f"next:       dsketch evaluate --model {g['model']} --data "
              f"{os.path.join(r['workdir'], 'regression-test.zarr')}"]
    return lines
