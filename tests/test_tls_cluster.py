"""Mutual TLS on a real multi-process cluster, driven through the ``dsketch`` command.

A ``dask scheduler`` and two ``dask worker`` processes listen on loopback with certificates
made at test time by ``deployments/make_certs.py`` (a private CA, a cluster certificate, a
client certificate, and a second CA whose certificate must be refused).  ``dsketch
ingest``/``fit``/``predict`` run as separate processes against ``tls://127.0.0.1:PORT``;
the model must equal the one ``dsketch fit`` makes on its embedded local cluster from the
same store and seed.  Then the refusals: no client certificate, a certificate from another
CA, plain ``tcp://`` — each checked both at the TLS handshake (the scheduler itself says
no) and through dask and the CLI (a clear error within a short connect timeout).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography")
yaml = pytest.importorskip("yaml")
if os.name != "posix":  # pragma: no cover
    pytest.skip("process groups and loopback TLS servers: POSIX only", allow_module_level=True)

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_certs = _load(ROOT / "deployments" / "make_certs.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This environment minus anything that would point dask elsewhere or change TLS."""
    env = {k: v for k, v in os.environ.items()
           if k != "DASK_SCHEDULER_ADDRESS" and not k.startswith("DASK_DISTRIBUTED__")}
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="10s")
    env.update(extra)
    return env


def tls_args(bundle: dict) -> list[str]:
    return ["--tls-ca-file", bundle["ca"], "--tls-cert", bundle["cert"], "--tls-key", bundle["key"]]


def dsketch(*args, env=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env or clean_env(), cwd=ROOT)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.args, proc.returncode, proc.stdout, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ca_key, ca = make_certs.make_ca()
    out = {}
    key, cert = make_certs.issue(ca_key, ca, "dsketch-cluster", hosts=["127.0.0.1", "localhost"], server=True)
    out["cluster"] = make_certs.write_bundle(d / "cluster", ca, key, cert)
    key, cert = make_certs.issue(ca_key, ca, "dsketch-client", server=False)
    out["client"] = make_certs.write_bundle(d / "client", ca, key, cert)
    other_key, other_ca = make_certs.make_ca("another CA")
    key, cert = make_certs.issue(other_key, other_ca, "dsketch-client", server=False)
    out["other"] = make_certs.write_bundle(d / "other", other_ca, key, cert)
    assert oct(os.stat(out["client"]["key"]).st_mode & 0o777) == "0o600"
    return out


def _stop(procs) -> None:
    """SIGTERM each process group in turn (workers before the scheduler), SIGKILL stragglers."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


@pytest.fixture(scope="module")
def cluster(certs, tmp_path_factory):
    """``tls://127.0.0.1:PORT``: a scheduler (with the compose file's HTTP routes) + 2 workers."""
    logs = tmp_path_factory.mktemp("logs")
    compose = yaml.safe_load((ROOT / "deployments" / "docker" / "docker-compose.yml").read_text())
    routes = compose["services"]["scheduler"]["environment"]["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"]
    port, http = free_port(), free_port()
    address = f"tls://127.0.0.1:{port}"
    env = clean_env(DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True",
                    DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES=routes)
    procs = []

    def start(name, *cmd):
        log = open(logs / f"{name}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", *cmd], stdout=log, stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True))
        log.close()

    try:
        start("scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
              "--protocol", "tls", "--dashboard-address", f"127.0.0.1:{http}", *tls_args(certs["cluster"]))
        for i in range(2):
            start(f"worker{i}", "distributed.cli.dask_worker", address, "--host", "127.0.0.1",
                  "--nthreads", "1", "--no-nanny", "--memory-limit", "2GiB", "--no-dashboard",
                  "--death-timeout", "60", *tls_args(certs["cluster"]))
        from distributed import Client

        deadline = time.monotonic() + 90
        while True:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError("a dask process exited: " + "\n".join(
                    f.read_text()[-2000:] for f in sorted(logs.iterdir())))
            try:
                with Client(address, security=security(certs["client"]), timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield {"address": address, "port": port, "http": http, "logs": logs}
    finally:
        _stop(procs[1:] + procs[:1])  # workers first: a worker whose scheduler left first retries


def security(bundle: dict | None, ca: str | None = None):
    from distributed import Security

    if bundle is None:
        return Security(tls_ca_file=ca, require_encryption=True)
    return Security(tls_ca_file=ca or bundle["ca"], tls_client_cert=bundle["cert"],
                    tls_client_key=bundle["key"], require_encryption=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A small regression CSV (target in the last column)."""
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(7)
    X = rng.normal(size=(2400, 8))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2] + 0.05 * rng.normal(size=len(X))
    np.savetxt(d / "train.csv", np.column_stack([X, y]), delimiter=",")
    return d


FIT = ("--kernel", "ntk", "--depth", "2", "--n-components", "128", "--alpha", "0.01,0.1,1", "--cv", "3",
       "--seed", "3", "--json")


def test_fit_and_predict_over_mutual_tls_equal_the_embedded_cluster(cluster, certs, store):
    from dsketch import load_model

    tls = ["--scheduler", cluster["address"], *tls_args(certs["client"])]
    r = ok(dsketch("ingest", store / "train.csv", store / "train.zarr", "--chunk-rows", 400, "--json", *tls))
    assert json.loads(r.stdout)["n_rows"] == 2400
    assert f"scheduler {cluster['address']} (from --scheduler" in r.stderr and "TLS" in r.stderr

    r = ok(dsketch("fit", "--data", store / "train.zarr", "--model", store / "model_tls", *FIT, *tls))
    fit_tls = json.loads(r.stdout)
    assert f"scheduler {cluster['address']} (from --scheduler" in r.stderr

    r = ok(dsketch("predict", "--model", store / "model_tls", "--data", store / "train.zarr",
                   "--out", store / "pred.zarr", *tls))
    assert "wrote predictions" in r.stdout

    # the same fit on the embedded local cluster (no scheduler anywhere in the environment)
    r = ok(dsketch("fit", "--data", store / "train.zarr", "--model", store / "model_local", *FIT))
    fit_local = json.loads(r.stdout)
    assert "embedded local cluster" in r.stderr
    assert fit_tls["alpha"] == fit_local["alpha"] and fit_tls["n_samples"] == fit_local["n_samples"] == 2400

    m_tls, m_local = load_model(store / "model_tls"), load_model(store / "model_local")
    np.testing.assert_allclose(m_tls.coef_, m_local.coef_, rtol=1e-6, atol=1e-10)
    assert m_tls.alpha_ == m_local.alpha_
    import zarr

    pred = zarr.open_group(str(store / "pred.zarr"), mode="r")["predictions"][:]
    X = np.loadtxt(store / "train.csv", delimiter=",")[:, :-1]
    np.testing.assert_allclose(np.ravel(pred), np.ravel(m_local.predict(X)), rtol=1e-4, atol=1e-5)

    # a client configured the way the compose JupyterLab and job services are: only Dask
    # config environment variables (DASK_SCHEDULER_ADDRESS, DASK_DISTRIBUTED__COMM__TLS__*)
    compose = yaml.safe_load((ROOT / "deployments" / "docker" / "docker-compose.yml").read_text())
    env = {k: str(v) for k, v in compose["services"]["jupyter"]["environment"].items() if k.startswith("DASK_")}
    files = {"/certs/ca.crt": certs["client"]["ca"], "/certs/tls.crt": certs["client"]["cert"],
             "/certs/tls.key": certs["client"]["key"], "tls://scheduler:8786": cluster["address"]}
    env = {k: files.get(v, v) for k, v in env.items()}
    assert set(env.values()) >= set(files.values())
    r = ok(dsketch("evaluate", "--model", store / "model_tls", "--data", store / "train.zarr", "--json",
                   env=clean_env(**env)))
    assert f"scheduler {cluster['address']} (from DASK_SCHEDULER_ADDRESS, mutual TLS)" in r.stderr
    assert json.loads(r.stdout)["r2"] > 0.5

    # the /dsketch page of the scheduler (routes from docker-compose.yml) shows the fits
    with urllib.request.urlopen(f"http://127.0.0.1:{cluster['http']}/dsketch/json", timeout=10) as resp:
        fits = json.loads(resp.read())
    assert any(f.get("estimator") == "SketchRidge" and f.get("status") == "done" for f in fits.values()), fits


def _handshake(port: int, ca: str, bundle: dict | None) -> bytes:
    """Open a TLS connection presenting ``bundle`` (or no certificate) and read one byte."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # dask's own contexts do not check host names either
    if bundle is not None:
        ctx.load_cert_chain(bundle["cert"], bundle["key"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw) as conn:
            conn.settimeout(10)
            return conn.recv(1)


def test_the_scheduler_refuses_clients_without_a_valid_certificate(cluster, certs):
    from distributed import Client

    port, ca = cluster["port"], certs["client"]["ca"]
    assert _handshake(port, ca, certs["client"])  # a valid client certificate gets dask's hello
    # TLS 1.3 completes the client's side of the handshake first: the refusal is the alert
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as exc:
        _handshake(port, ca, None)
    assert "CERTIFICATE_REQUIRED" in str(exc.value).upper() or isinstance(exc.value, ConnectionError)
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as exc:
        _handshake(port, ca, certs["other"])
    assert "UNKNOWN_CA" in str(exc.value).upper() or isinstance(exc.value, ConnectionError)

    # the same through dask: no certificate, another CA's certificate, plain tcp://
    for sec, address in [(security(None, ca=ca), cluster["address"]),
                         (security(certs["other"], ca=ca), cluster["address"]),
                         (None, f"tcp://127.0.0.1:{port}")]:
        start = time.monotonic()
        with pytest.raises(Exception):
            with Client(address, security=sec, timeout=5):
                pass
        assert time.monotonic() - start < 30
    with Client(cluster["address"], security=security(certs["client"]), timeout=10) as client:
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3  # still serving the valid one


@pytest.fixture(scope="module")
def small_store(store):
    from dsketch import engine

    return engine.ingest(str(store / "train.csv"), str(store / "small.zarr"), chunk_rows=400)


def test_the_cli_checks_its_tls_options_up_front(cluster, certs, store, small_store):
    args = ("fit", "--data", small_store, "--model", store / "never", "--n-components", 16)
    # a tls:// scheduler without certificates: refused before connecting, naming the flags
    r = dsketch(*args, "--scheduler", cluster["address"])
    assert r.returncode == 2 and "--tls-ca-file" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # TLS flags with a tcp:// address
    r = dsketch(*args, "--scheduler", f"tcp://127.0.0.1:{cluster['port']}", *tls_args(certs["client"]))
    assert r.returncode == 2 and "tls://" in r.stderr, r.stderr
    # half the flags; a missing file
    r = dsketch(*args, "--scheduler", cluster["address"], "--tls-ca-file", certs["client"]["ca"])
    assert r.returncode == 2 and "--tls-cert" in r.stderr, r.stderr
    r = dsketch(*args, "--scheduler", cluster["address"], "--tls-ca-file", store / "nope.crt",
                "--tls-cert", certs["client"]["cert"], "--tls-key", certs["client"]["key"])
    assert r.returncode == 2 and "nope.crt" in r.stderr, r.stderr
    # TLS flags with no scheduler at all: the embedded cluster is loopback-only, plain TCP
    r = dsketch(*args, *tls_args(certs["client"]))
    assert r.returncode == 2 and "--scheduler" in r.stderr, r.stderr
    assert not (store / "never").exists()


def test_the_cli_is_refused_by_the_scheduler(cluster, certs, store, small_store):
    base = ("fit", "--data", small_store, "--model", store / "never", "--n-components", 16)
    # trusts our CA but presents another CA's certificate; then plain TCP, no TLS at all
    other = ["--tls-ca-file", certs["client"]["ca"], "--tls-cert", certs["other"]["cert"],
             "--tls-key", certs["other"]["key"]]
    for address, flags in [(cluster["address"], other), (f"tcp://127.0.0.1:{cluster['port']}", [])]:
        start = time.monotonic()
        r = dsketch(*base, "--scheduler", address, *flags, timeout=120)
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 3, r.stderr
        assert time.monotonic() - start < 90
        assert not (store / "never").exists()
