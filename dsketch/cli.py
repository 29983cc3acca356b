"""The ``dsketch`` command: demo, ingest, fit, predict, evaluate, info.

Owns argument parsing, cluster connection (``dsketch.engine.connect``: ``--scheduler``,
``--scheduler-file``, ``DASK_SCHEDULER_ADDRESS``, else an embedded local cluster sized to
the machine), human or ``--json`` output, progress and exit codes.  All modelling is done
by :mod:`dsketch.estimators` and :mod:`dsketch.model_io`; no maths here.

Exit codes
----------
0  success
1  failure while running (cluster, I/O or numerical error; no scheduler answering within
   ``--timeout``)
2  bad usage or bad input (unknown option; missing, malformed or damaged data or model
   files, also when a worker finds them; a continuous target for a classifier; a missing or
   malformed scheduler file; an output that exists without ``--overwrite`` or is the wrong
   kind of thing); one ``Error:`` line on stderr names what is wrong (``--debug`` adds the
   traceback).  Inputs and outputs are checked (:mod:`dsketch.cli_checks`) before any work.

Outputs (models, prediction stores) are written atomically and never replace existing
ones without ``--overwrite``, nor anything but their own kind; a failed run leaves earlier
output intact, and ``dsketch info --clean PATH`` removes what a killed one left behind.

Waiting is bounded: joining a scheduler waits ``--timeout`` seconds (default the Dask
config's ``distributed.comm.timeouts.connect``, 30 s) and says what it waits for.  Progress
goes to stderr, with ``--json`` too (the JSON object goes to stdout): one redrawn line on a
terminal, else a line per phase, per tenth of the rows and per minute.  Store introspection
(:mod:`dsketch.engine.dataset`) and metrics (:mod:`dsketch.engine.metrics`) are the
library's: this module parses and prints.

TLS: ``--tls-ca-file``/``--tls-cert``/``--tls-key`` (all three) connect to a ``tls://``
scheduler with mutual TLS (they set ``distributed.comm.tls.*`` and
``distributed.comm.require-encryption`` of the Dask config for the connection, which is
where the client side comes from without them).  Every command that uses a cluster says on
stderr which one and where its address came from.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sys
import time
import traceback
import warnings

import click
import dask
import dask.config
from . import __version__, dashboard, engine, nets
from . import estimators as E
from .cli_checks import InputError, RunFailure, check_output, check_target, load_model_dir, open_data
from .dashboard import TerminalProgress, track_fit
from .demo import format_report, run_demo
from .backend import InvalidInputError
from .engine.dataset import dataset_info, has_array, open_with_targets, store_arrays
from .engine.metrics import check_label_target, is_label_dtype
from .engine.metrics import evaluate as evaluate_metrics
from .engine.store import clean_stale, is_model_dir, target_kind
from .model_io import model_summary, read_model_info, save_model

__all__ = ["main", "InputError", "RunFailure"]

KERNELS = ("ntk", "nngp", "cntk", "rff", "poly", "arccos")


# ============================================================================== helpers
def common_options(func):
    """--scheduler/--scheduler-file/--json/--debug on every command."""

    @click.option("--scheduler", "scheduler", metavar="ADDRESS", default=None,
                  help="Address of a running dask scheduler (tcp://host:8786). Default: "
                       "$DASK_SCHEDULER_ADDRESS, else an embedded local cluster.")
    @click.option("--scheduler-file", type=click.Path(dir_okay=False), default=None,
                  help="Scheduler file written by `dask scheduler --scheduler-file`.")
    @click.option("--tls-ca-file", type=click.Path(dir_okay=False), default=None,
                  help="CA certificate (PEM) of a tls:// scheduler; with --tls-cert and --tls-key: "
                       "mutual TLS. Default: distributed.comm.tls.* of the Dask config.")
    @click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
                  help="This client's certificate (PEM), signed by that CA.")
    @click.option("--tls-key", type=click.Path(dir_okay=False), default=None,
                  help="This client's private key (PEM).")
    @click.option("--timeout", type=float, default=None, metavar="SECONDS",
                  help="Longest wait for the scheduler to answer; then exit 1 saying which one. "
                       "Default: distributed.comm.timeouts.connect of the Dask config (30 s).")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
    @click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
    @functools.wraps(func)
    def wrapper(scheduler, scheduler_file, tls_ca_file, tls_cert, tls_key, timeout, as_json, debug, **kwargs):
        obj = {"scheduler": scheduler, "scheduler_file": scheduler_file, "json": as_json,
               "debug": debug, "tls": _tls_files(tls_ca_file, tls_cert, tls_key), "timeout": timeout}
        if obj["tls"] and _scheduler_source(obj)[0] is None:
            raise InputError("--tls-ca-file/--tls-cert/--tls-key need a scheduler (--scheduler, "
                             "--scheduler-file or DASK_SCHEDULER_ADDRESS); the embedded local "
                             "cluster listens on loopback without TLS")
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return func(obj, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                IsADirectoryError, KeyError, TypeError) as exc:
            if debug:
                traceback.print_exc()
            raise InputError(_one_line(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
            if debug:
                traceback.print_exc()
            raise RunFailure(f"{type(exc).__name__}: {_one_line(exc)}") from None

    return wrapper


def _show_warning(message, category, *args, **kwargs) -> None:
    """A warning as one stderr line (no source line of dsketch's code)."""
    click.echo(f"Warning: {_one_line(message) if isinstance(message, Warning) else message}", err=True)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
        text = text if " " in text else f"missing key {text!r}"
    else:
        text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def _emit(obj, result: dict, human: list[str]) -> None:
    if obj["json"]:
        click.echo(json.dumps(result, indent=1, default=str))
    else:
        for line in human:
            click.echo(line)


def _tls_files(ca_file, cert, key) -> tuple[str, str, str] | None:
    """The three ``--tls-*`` files, all given and present, or None when none is given."""
    given = {"--tls-ca-file": ca_file, "--tls-cert": cert, "--tls-key": key}
    if not any(given.values()):
        return None
    missing = [flag for flag, path in given.items() if not path]
    if missing:
        raise InputError(f"mutual TLS needs --tls-ca-file, --tls-cert and --tls-key; missing {', '.join(missing)}")
    for flag, path in given.items():
        if not os.path.isfile(path):
            raise InputError(f"{flag}: {path!r} does not exist")
    return ca_file, cert, key


def _scheduler_source(obj) -> tuple[str | None, str | None]:
    """Where the scheduler comes from, in ``engine.connect``'s order, and its address if known."""
    if obj["scheduler"]:
        return "--scheduler", obj["scheduler"]
    if obj["scheduler_file"]:
        try:  # may not exist yet: distributed waits for it
            with open(obj["scheduler_file"], encoding="utf-8") as f:
                return "--scheduler-file", json.load(f).get("address")
        except (OSError, ValueError, AttributeError):
            return "--scheduler-file", None
    if os.environ.get("DASK_SCHEDULER_ADDRESS"):
        return "DASK_SCHEDULER_ADDRESS", os.environ["DASK_SCHEDULER_ADDRESS"]
    return None, None


def _tls_config(obj, source: str | None, address: str | None) -> dict:
    """Dask config for the connection; refuses TLS settings that cannot work, before connecting."""

    tls = obj.get("tls")
    address = address or ""
    if tls and address and not address.startswith("tls://"):
        raise InputError(f"--tls-* flags given but the scheduler address {address!r} (from {source}) "
                         "is not tls://")
    if address.startswith("tls://") and not tls and not (
            dask.config.get("distributed.comm.tls.ca-file", None)
            and dask.config.get("distributed.comm.tls.client.cert", None)):
        raise InputError(f"scheduler {address} (from {source}) speaks TLS: pass --tls-ca-file, --tls-cert "
                         "and --tls-key (or set distributed.comm.tls.ca-file/client.cert/client.key "
                         "in the Dask config)")
    if not tls:
        return {}
    return {"distributed.comm.require-encryption": True, "distributed.comm.tls.ca-file": tls[0],
            "distributed.comm.tls.client.cert": tls[1], "distributed.comm.tls.client.key": tls[2]}


@contextlib.contextmanager
def _cluster(obj):
    """Connect (or start an embedded cluster), say which and why, print the dashboard links on stderr."""


    source, address = _scheduler_source(obj)
    config = _tls_config(obj, source, address)
    dashboard.enable()
    connect = functools.partial(engine.connect, obj["scheduler"], scheduler_file=obj["scheduler_file"],
                                quiet=True, timeout=obj["timeout"], log=lambda msg: click.echo(msg, err=True))
    with dask.config.set(config), connect() as client:
        if source:
            secure = ", mutual TLS" if str(client.scheduler.address).startswith("tls://") else ""
            click.echo(f"dsketch: scheduler {client.scheduler.address} (from {source}{secure})", err=True)
        else:
            click.echo("dsketch: embedded local cluster (no --scheduler, --scheduler-file or "
                       f"DASK_SCHEDULER_ADDRESS) at {client.scheduler.address}", err=True)
        link = engine.dashboard_link(client)
        if link:
            click.echo(f"dashboard: {link}  (dsketch fits: {dashboard.page_url(client)})", err=True)
        obj["dashboard"] = link
        yield client


def _float_list(values: tuple[str, ...], name: str) -> list[float]:
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                x = float(part)
            except ValueError:
                raise InputError(f"{name}: {part!r} is not a number") from None
            if not math.isfinite(x) or x <= 0:
                raise InputError(f"{name} must be finite and > 0, got {part}")
            out.append(x)
    return out


def _activation(name: str):
    """The activation named by ``--activation`` (the registry of ``dsketch.nets``)."""

    try:
        return nets.make_activation(name)
    except ValueError:
        raise InputError(f"--activation: unknown activation {name!r} (known: "
                         f"{', '.join(nets.activation_names())})") from None


def build_sketch(kernel: str, *, n_features: int, seed: int, depth: int | None, activation: str,
                 W_std: float | None, b_std: float, degree: int | None, gamma: float, coef0: float,
                 order: int, image_shape: tuple | None, hidden_components: int | None = None,
                 hidden_degree: int | None = None, zca_regularization: float | None = None):
    """The transformer for ``dsketch fit``'s kernel options."""

    if kernel != "cntk" and (hidden_components is not None or hidden_degree is not None
                             or zca_regularization is not None):
        raise InputError("--hidden-components/--hidden-degree/--zca are options of --kernel cntk")
    if kernel in ("ntk", "nngp"):
        w = math.sqrt(2.0) if W_std is None else W_std
        net = nets.fully_connected(2 if depth is None else depth, _activation(activation), W_std=w, b_std=b_std)
        cls = E.NTKSketch if kernel == "ntk" else E.NNGPSketch
        return cls(net=net, n_components=n_features, random_state=seed,
                   **({} if degree is None else {"degree": degree}))
    if kernel == "cntk":
        net = nets.myrtle(5 if depth is None else depth, W_std=math.sqrt(2.0) if W_std is None else W_std,
                          b_std=b_std, activation=_activation(activation))
        given = {k: v for k, v in (("degree", degree), ("hidden_components", hidden_components),
                                   ("hidden_degree", hidden_degree),
                                   ("zca_regularization", zca_regularization)) if v is not None}
        return E.CNTKSketch(net=net, image_shape=image_shape, n_components=n_features, random_state=seed,
                            **given)
    if kernel == "rff":
        return E.RandomFourierFeatures(gamma=gamma, n_components=n_features, random_state=seed)
    if kernel == "poly":
        return E.PolynomialSketch(degree=2 if degree is None else degree, gamma=gamma, coef0=coef0,
                                  n_components=n_features, random_state=seed)
    if kernel == "arccos":
        return E.ArcCosineFeatures(order=order, n_components=n_features, random_state=seed)
    raise InputError(f"--kernel: unknown kernel {kernel!r}")  # pragma: no cover - click.Choice


def build_exact_model(method, kernel, classify, *, depth, activation, W_std, b_std, **kw):
    """The estimator of ``dsketch fit --method nystroem|falkon|kernel`` (FC ntk/nngp only)."""
    if kernel not in ("ntk", "nngp"):
        raise InputError(f"--method {method} needs --kernel ntk or nngp, got --kernel {kernel}")
    net = nets.fully_connected(2 if depth is None else depth, _activation(activation),
                               W_std=math.sqrt(2.0) if W_std is None else W_std, b_std=b_std)
    return E.make_model(method, net=net, kernel=kernel, classify=classify, **kw)


# ============================================================================= commands
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dsketch")
def main():
    """dsketch: random-feature sketches of neural and classical kernels, ridge on Dask + Zarr.

    Start with `dsketch demo`. Exit codes: 0 ok, 1 failure, 2 bad usage or input.
    """


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Where to write data and models (default: a fresh temporary directory).")
@click.option("--n-rows", type=click.IntRange(1000), default=200_000, show_default=True,
              help="Rows of the generated regression set.")
@click.option("--n-components", "--n-features", "n_features", type=click.IntRange(16), default=1024,
              show_default=True, help="Sketch width m of the digits classifier (NTKSketch); "
              "--n-features is its old name.")
@click.option("--n-landmarks", type=click.IntRange(16), default=512, show_default=True,
              help="Landmark rows of the regressor's Nyström features (NeuralNystroem).")
@common_options
def demo(obj, workdir, n_rows, n_features, n_landmarks):
    """Fit an NTK-sketch classifier (digits) and an NTK-Nyström regressor (generated) end to end."""

    with _cluster(obj) as client:
        with _progress(client, obj):
            result = run_demo(workdir, n_rows=n_rows, n_features=n_features,
                              n_landmarks=n_landmarks, client=client,
                              log=None if obj["json"] else lambda s: click.echo(s, err=True))
    result["dashboard"] = obj.get("dashboard")
    _emit(obj, result, format_report(result))


@contextlib.contextmanager
def _progress(client, obj):
    """Progress lines on stderr, with ``--json`` too (the JSON goes to stdout): a batch log
    of a long job shows both."""
    with TerminalProgress(client):
        yield


@contextlib.contextmanager
def _tracked(client, est, rows, phase: str):
    """Publish a predict/evaluate pass like a fit (dashboard page, terminal line)."""

    with track_fit(client, estimator=f"{type(est).__name__}.{phase}", n_rows=int(rows.shape[0]),
                   n_features=int(est.sketch_.n_components), Phi=rows) as progress:
        progress.phase("predict")
        yield progress


@main.command()
@click.argument("source")
@click.argument("dest")
@click.option("--y", "y_path", default=None, help="Targets (.npy/.csv) when SOURCE holds only X.")
@click.option("--chunk-rows", type=click.IntRange(1), default=None, help="Rows per chunk.")
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
@click.option("--n-columns", "--n-features", "width", type=click.IntRange(1), default=None,
              help="Row width of an svmlight SOURCE (default: its largest feature index + 1); "
                   "give a test file the training width. --n-features is its old name.")
@click.option("--index-base", type=click.Choice(["auto", "0", "1"]), default="auto", show_default=True,
              help="First feature index of an svmlight SOURCE (auto: 1 unless index 0 occurs); "
                   "give it for train and test files alike.")
@common_options
def ingest(obj, source, dest, y_path, chunk_rows, overwrite, width, index_base):
    """Convert SOURCE (.npy, .csv with the target in the last column, svmlight) to a Zarr store DEST."""

    if not os.path.exists(source):
        raise InputError(f"source {source!r} does not exist")
    check_output(dest, overwrite, "destination")
    start = time.perf_counter()
    ctx = _cluster(obj) if (obj["scheduler"] or obj["scheduler_file"]) else contextlib.nullcontext()
    with ctx:
        url = engine.ingest(source, dest, y=y_path, chunk_rows=chunk_rows, overwrite=overwrite,
                            n_features=width,
                            zero_based={"auto": "auto", "0": True, "1": False}[index_base])
        ds = open_with_targets(url)
    info = dataset_info(ds)
    info.update(store=url, seconds=round(time.perf_counter() - start, 3))
    _emit(obj, info, [f"wrote {url}: {info['n_rows']:,} rows × {info['row_shape']} "
                      f"({info['dtype']}), y: {info['y_shape'] or 'none'}  [{info['seconds']:.1f} s]"])


@main.command()
@click.option("--data", required=True, help="Training store (arrays X and y).")
@click.option("--model", "model_path", required=True, type=click.Path(), help="Model directory to write.")
@click.option("--kernel", type=click.Choice(KERNELS), default="ntk", show_default=True)
@click.option("--task", type=click.Choice(["auto", "regress", "classify"]), default="auto",
              show_default=True, help="auto: classify when y holds integer or string labels.")
@click.option("--depth", type=click.IntRange(0), default=None,
              help="Hidden layers (ntk/nngp, default 2) or Myrtle depth 5/7/10 (cntk, default 5).")
@click.option("--activation", default="relu", show_default=True,
              help="relu, erf, gelu, tanh, sigmoid, ... (ntk/nngp/cntk).")
@click.option("--W-std", "W_std", type=float, default=None, help="Weight std (default √2).")
@click.option("--b-std", "b_std", type=float, default=0.0, show_default=True, help="Bias std.")
@click.option("--n-components", "--n-features", "n_features", type=click.IntRange(1), default=1024,
              show_default=True, help="Sketch width m (--n-features is its old name).")
@click.option("--degree", type=click.IntRange(1), default=None,
              help="Polynomial degree (poly, default 2) or expansion degree (ntk/nngp/cntk, default 8).")
@click.option("--hidden-components", type=click.IntRange(2), default=None,
              help="cntk: feature width on the feature maps larger than the smallest one "
                   "(default 2048, at most --n-components): wide features cost little more.")
@click.option("--hidden-degree", type=click.IntRange(1), default=None,
              help="cntk: expansion degree on those larger maps (default 2).")
@click.option("--zca", "zca_regularization", type=click.FloatRange(0, min_open=True), default=None,
              help="cntk: whiten the images by ZCA with this regularization (0.3-1 measured best "
                   "on Fashion-MNIST), learned from the training rows in one pass.")
@click.option("--gamma", type=float, default=1.0, show_default=True, help="rff/poly gamma.")
@click.option("--coef0", type=float, default=0.0, show_default=True, help="poly coef0.")
@click.option("--order", type=click.IntRange(0, 2), default=1, show_default=True, help="arccos order.")
@click.option("--image-shape", default=None, help="H,W,C for cntk on flat rows.")
@click.option("--alpha", multiple=True, default=("1.0",), show_default=True,
              help="Ridge penalty; repeat or comma-separate for a grid chosen by --cv.")
@click.option("--cv", type=click.IntRange(2), default=5, show_default=True, help="Folds for an alpha grid.")
@click.option("--solver", type=click.Choice(["auto", "direct", "cg"]), default="auto", show_default=True)
@click.option("--method", type=click.Choice(["sketch", "nystroem", "falkon", "kernel"]),
              default="sketch", show_default=True,
              help="sketch: ridge on the sketch; nystroem: on NeuralNystroem features; falkon: "
                   "Falkon CG with m = --n-components centres; kernel: the exact kernel on all rows "
                   "by preconditioned CG (ntk/nngp only for the last three).")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the model directory if it exists.")
@common_options
def fit(obj, data, model_path, kernel, task, depth, activation, W_std, b_std, n_features, degree,
        hidden_components, hidden_degree, zca_regularization, gamma, coef0, order, image_shape,
        alpha, cv, solver, method, seed, overwrite):
    """Fit sketched kernel ridge regression / classification on a store and save the model."""

    alphas = _float_list(alpha, "--alpha")
    if not alphas:
        raise InputError("--alpha: give at least one value")
    shape = None
    if image_shape:
        try:
            shape = tuple(int(s) for s in image_shape.split(","))
        except ValueError:
            raise InputError(f"--image-shape must be H,W,C integers, got {image_shape!r}") from None
    if kernel == "cntk" and depth is not None and depth not in (5, 7, 10):
        raise InputError("--depth for cntk must be 5, 7 or 10")
    check_output(model_path, overwrite, "model")
    check_target(model_path, "model", "--model")
    sketch = None if method != "sketch" else build_sketch(
        kernel, n_features=n_features, seed=seed, depth=depth, activation=activation,
        W_std=W_std, b_std=b_std, degree=degree, gamma=gamma, coef0=coef0, order=order,
        image_shape=shape, hidden_components=hidden_components, hidden_degree=hidden_degree,
        zca_regularization=zca_regularization)
    exact = dict(depth=depth, activation=activation, W_std=W_std, b_std=b_std, cv=cv, solver=solver,
                 alpha=alphas[0] if len(alphas) == 1 else alphas, n_components=n_features,
                 random_state=seed)
    if method != "sketch":  # refuse a non-FC kernel before opening the data
        build_exact_model(method, kernel, False, **exact)
    ds = open_data(data, y=True)
    if kernel == "cntk" and ds.X.ndim == 2 and shape is None:
        raise InputError(f"--kernel cntk needs images: {data!r} holds flat rows of width {ds.X.shape[1]}; "
                         "pass --image-shape H,W,C")
    classify = task == "classify" or (task == "auto" and is_label_dtype(ds.y.dtype))
    if method == "sketch":
        cls = E.SketchRidgeClassifier if classify else E.SketchRidge
        est = cls(sketch=sketch, alpha=alphas[0] if len(alphas) == 1 else alphas, solver=solver, cv=cv)
    else:
        est = build_exact_model(method, kernel, classify, **exact)
        cls = type(est)
    start = time.perf_counter()
    with _cluster(obj) as client:
        if task == "classify" and not is_label_dtype(ds.y.dtype):
            check_label_target(ds.y, f"of {data!r}", hint="use --task regress for a continuous target")
        with _progress(client, obj):
            est.fit(ds.X, ds.y)
    seconds = time.perf_counter() - start
    path = save_model(est, model_path, overwrite=overwrite)
    rep = est.fit_report_
    result = {"model": path, "estimator": cls.__name__, "kernel": kernel, "method": method,
              "n_samples": rep.get("n_samples"),
              "n_features": n_features, "alpha": est.alpha_, "solver": rep.get("solver"),
              "iterations": rep.get("iterations"), "residual": (rep.get("residuals") or [None])[-1],
              "cv": est.cv_results_, "seconds": round(seconds, 3), "dashboard": obj.get("dashboard")}
    if classify:
        result["classes"] = [c.item() if hasattr(c, "item") else c for c in est.classes_]
    human = [f"fitted {cls.__name__} ({kernel}, m={n_features}) on {rep.get('n_samples'):,} rows "
             f"in {seconds:.1f} s; solver {rep.get('solver')}, alpha {est.alpha_:.3g}"]
    if est.cv_results_:
        cvr = est.cv_results_
        if cvr.get("mean_test_score") is not None:
            what, curve = f"CV {cvr.get('scoring', 'score')} per alpha", cvr["mean_test_score"]
        else:
            what, curve = "CV MSE per alpha", cvr.get("mean_test_mse") or cvr.get("gcv_mse")
        human.append(f"{what}: " + ", ".join(
            f"{a:.3g}: {v:.4g}" for a, v in zip(cvr["alphas"], curve)))
    if rep.get("solver") in ("cg", "kernel-pcg", "falkon") and result["residual"] is not None:
        human.append(f"CG: {rep.get('iterations')} iterations, final residual {result['residual']:.2e}")
    human.append(f"model saved to {path}")
    _emit(obj, result, human)


@main.command()
@click.option("--model", "model_path", required=True, help="Model directory from `dsketch fit`.")
@click.option("--data", required=True, help="Store with the input array X.")
@click.option("--out", required=True, help="Store to write the array 'predictions' into.")
@click.option("--name", default="predictions", show_default=True, help="Name of the output array.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output array.")
@common_options
def predict(obj, model_path, data, out, name, overwrite):
    """Predict on a store and write the predictions to a Zarr store."""

    est = load_model_dir(model_path)
    check_target(out, "store", "--out")
    if not overwrite and has_array(out, name):
        raise InputError(f"output {out!r} already holds an array {name!r}; pass --overwrite to replace it")
    ds = open_data(data, y=False)
    start = time.perf_counter()
    with _cluster(obj) as client:
        pred = est.predict(ds.X)
        with _progress(client, obj), _tracked(client, est, pred, "predict"):
            url = engine.write_array(pred, out, name=name, overwrite=overwrite)
    seconds = time.perf_counter() - start
    result = {"out": url, "name": name, "n_rows": int(pred.shape[0]), "shape": list(pred.shape),
              "dtype": str(pred.dtype), "seconds": round(seconds, 3), "dashboard": obj.get("dashboard")}
    _emit(obj, result, [f"wrote {name} {tuple(pred.shape)} ({pred.dtype}) to {url} in {seconds:.1f} s"])


@main.command()
@click.option("--model", "model_path", required=True, help="Model directory from `dsketch fit`.")
@click.option("--data", required=True, help="Store with X and y.")
@common_options
def evaluate(obj, model_path, data):
    """Accuracy (classifiers) or RMSE and R² (regressors) of a model on a store."""
    est = load_model_dir(model_path)
    ds = open_data(data, y=True)
    start = time.perf_counter()
    with _cluster(obj) as client:
        with _progress(client, obj), _tracked(client, est, ds.X, "evaluate"):
            metrics = evaluate_metrics(est, ds.X, ds.y, where=repr(data))
    metrics.update(seconds=round(time.perf_counter() - start, 3), model=model_path, data=data,
                   dashboard=obj.get("dashboard"))
    if "accuracy" in metrics:
        human = [f"accuracy {metrics['accuracy']:.4f} on {metrics['n_rows']:,} rows"]
    else:
        human = [f"RMSE {metrics['rmse']:.4g}, R² {metrics['r2']:.4f} on {metrics['n_rows']:,} rows"]
    _emit(obj, metrics, human)


@main.command()
@click.argument("path")
@click.option("--clean", is_flag=True,
              help="First remove the temporary .NAME.tmp-* / .NAME.old-* directories a killed or "
                   "failed write left next to (or inside) PATH, and list them.")
@common_options
def info(obj, path, clean):
    """Summarize a model directory or a dataset store (no cluster needed)."""

    removed = clean_stale(path) if clean else []
    lines = [f"removed {r}" for r in removed] or (["nothing to clean"] if clean else [])
    if not (os.path.exists(path) or "://" in path):
        if clean:
            _emit(obj, {"kind": None, "path": path, "removed": removed}, lines)
            return
        raise InputError(f"{path!r} does not exist")
    for line in lines if not obj["json"] else ():
        click.echo(line, err=True)
    extra = {"removed": removed} if clean else {}
    if is_model_dir(path):
        result = {"kind": "model", "path": path, **model_summary(read_model_info(path)), **extra}
        summ = result["summary"]
        human = [f"{path}: {result['estimator']} on {result['sketch']} features "
                 f"(dsketch {result['dsketch_version']}, format {result['format_version']})"]
        for k in ("n_samples", "n_features", "alpha", "solver", "iterations", "seconds"):
            if summ.get(k) is not None:
                human.append(f"  {k}: {summ[k]}")
        if summ.get("classes") is not None:
            human.append(f"  classes: {summ['classes']}")
        _emit(obj, result, human)
        return
    kind = target_kind(path) if "://" not in path else "zarr"
    if kind in ("file", "empty", "directory"):
        what = {"file": "a plain file", "empty": "an empty directory"}.get(kind, "a directory without zarr.json")
        raise InvalidInputError(f"{path!r} is {what}, neither a dsketch model nor a data store "
                                "(`dsketch ingest` makes stores)")
    try:
        ds = open_with_targets(path)
    except KeyError:
        arrays = store_arrays(path)
        if arrays is None:
            raise
        _emit(obj, {"kind": "store", "url": path, "arrays": arrays, **extra},
              [f"{path}: no input array X; arrays: " + ", ".join(
                  f"{a['name']} {tuple(a['shape'])} {a['dtype']}" for a in arrays)])
        return
    result = {**dataset_info(ds), **extra}
    _emit(obj, result, [f"{path}: {result['n_rows']:,} rows × {result['row_shape']} ({result['dtype']}, "
                        f"{result['row_chunks']} row chunks{', sparse' if result['sparse'] else ''}); "
                        f"y: {result['y_shape'] or 'none'} {result['y_dtype'] or ''}".rstrip()])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
