"""deployments/: every manifest parses and the platforms agree with each other and the package.

Docker Compose, Kubernetes (dask-kubernetes operator) and SLURM (sbatch, dask-jobqueue) must
use the same images, scheduler/dashboard ports (8786/8787), TLS flags and certificate
layout, the same scheduler HTTP routes (the ``/dsketch`` page), ``dsketch`` options that
exist, memory limits no smaller than the engine's memory model asks for
(``deployments/sizing.py``), and Dockerfile installs of extras that ``pyproject.toml``
defines.  ``docker compose config`` validates the compose file where a Docker daemon and
the compose plugin exist (skipped otherwise).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
DEP = ROOT / "deployments"
COMPOSE = DEP / "docker" / "docker-compose.yml"
K8S = DEP / "kubernetes"
SBATCH = DEP / "slurm" / "dsketch.sbatch"
LAUNCHER = DEP / "slurm" / "jobqueue_launcher.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
CPU_IMAGE = f"ghcr.io/dsketch/dsketch:{VERSION}"
GPU_IMAGE = f"ghcr.io/dsketch/dsketch-gpu:{VERSION}"
CLUSTER_TLS = ["--tls-ca-file", "/certs/ca.crt", "--tls-cert", "/certs/tls.crt", "--tls-key", "/certs/tls.key"]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sizing = _load(DEP / "sizing.py")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def k8s_docs() -> list[dict]:
    return [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def clusters() -> list[tuple[str, dict]]:
    """(cluster name, DaskCluster spec) of the DaskCluster and of the DaskJob's cluster."""
    out = []
    for d in k8s_docs():
        if d["kind"] == "DaskCluster":
            out.append((d["metadata"]["name"], d["spec"]))
        elif d["kind"] == "DaskJob":  # the operator names the job's cluster after the job
            out.append((d["metadata"]["name"], d["spec"]["cluster"]["spec"]))
    return out


def worker_groups() -> list[tuple[str, dict]]:
    """(cluster name, worker pod spec) of every worker group."""
    out = [(name, spec["worker"]["spec"]) for name, spec in clusters()]
    out += [(d["spec"]["cluster"], d["spec"]["worker"]["spec"]) for d in k8s_docs() if d["kind"] == "DaskWorkerGroup"]
    return out


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def routes_default() -> list[str]:
    """distributed's own default scheduler routes (from its distributed.yaml, not this process's config)."""
    import distributed

    defaults = yaml.safe_load((Path(distributed.__file__).parent / "distributed.yaml").read_text())
    return list(defaults["distributed"]["scheduler"]["http"]["routes"])


# ======================================================================== parsing
def test_every_manifest_parses():
    files = sorted(p for ext in ("*.yml", "*.yaml") for p in DEP.rglob(ext))
    assert {p.name for p in files} >= {"docker-compose.yml", "daskcluster.yaml", "daskjob.yaml", "networkpolicy.yaml"}
    for p in files:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), p
    kinds = sorted(d["kind"] for d in k8s_docs())
    assert kinds == ["DaskCluster", "DaskJob", "DaskWorkerGroup", "NetworkPolicy"]
    for d in k8s_docs():
        assert d["apiVersion"] in ("kubernetes.dask.org/v1", "networking.k8s.io/v1") and d["metadata"]["name"]
    nb = json.loads((ROOT / "examples" / "cluster_notebook.ipynb").read_text())
    assert nb["nbformat"] == 4


def test_sbatch_script_is_valid_bash():
    bash = shutil.which("bash")
    if bash is None:  # pragma: no cover
        pytest.skip("no bash on this machine")
    subprocess.run([bash, "-n", str(SBATCH)], check=True, timeout=30)
    text = SBATCH.read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH --nodes" in text and "set -euo pipefail" in text


def test_docker_compose_config_validates(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine: compose file checked by parsing only")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("the docker client has no `compose` plugin here: compose file checked by parsing only "
                    f"({(probe.stderr or probe.stdout).strip()[:120]})")
    env = dict(os.environ, DSKETCH_CERTS=str(tmp_path / "certs"), DSKETCH_DATA=str(tmp_path / "data"))
    for profile in ([], ["--profile", "gpu", "--profile", "job", "--profile", "setup"]):
        r = subprocess.run([docker, "compose", "-f", str(COMPOSE), *profile, "config", "--quiet"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 0, r.stderr


# ========================================================================= images
def test_images_are_the_same_everywhere_and_tagged_with_the_package_version():
    services = compose()["services"]
    compose_images = {s["image"] for s in services.values()}
    k8s_images = {c["image"] for _, spec in worker_groups() for c in spec["containers"]}
    k8s_images |= {c["image"] for _, spec in clusters() for c in spec["scheduler"]["spec"]["containers"]}
    k8s_images |= {c["image"] for d in k8s_docs() if d["kind"] == "DaskJob"
                   for c in d["spec"]["job"]["spec"]["containers"]}
    assert compose_images == k8s_images == {CPU_IMAGE, GPU_IMAGE}
    assert services["gpu-worker"]["image"] == GPU_IMAGE
    assert services["gpu-worker"]["build"]["dockerfile"] == "deployments/docker/Dockerfile.gpu"
    assert services["scheduler"]["build"]["dockerfile"] == "deployments/docker/Dockerfile"
    for name, df in (("Dockerfile", CPU_IMAGE), ("Dockerfile.gpu", GPU_IMAGE)):
        text = (DEP / "docker" / name).read_text()
        assert f"-f deployments/docker/{name} -t {df} ." in text, name  # the documented build line
    for _, spec in worker_groups():
        for c in spec["containers"]:
            gpu = c["image"] == GPU_IMAGE
            limits = c.get("resources", {}).get("limits", {})
            assert ("nvidia.com/gpu" in limits) == gpu
            assert (c["args"][:3] == ["dask", "cuda", "worker"]) == gpu


def _pip_lines(dockerfile: Path) -> list[list[str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        for part in re.split(r"&&", line):
            words = shlex.split(part.replace("RUN ", "", 1)) if "pip install" in part else []
            if words[:2] == ["pip", "install"]:
                out.append(words[2:])
    return out


def test_dockerfiles_install_existing_extras_with_the_gpu_pins():
    from packaging.requirements import Requirement
    from packaging.version import Version

    extras = set(PYPROJECT["project"]["optional-dependencies"])
    constraints = {}
    for line in (DEP / "docker" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            constraints[req.name] = req.specifier
    # dask-cuda 26.10 pins: dask/distributed 2026.7.1 and bokeh<3.10
    assert str(constraints["dask"]) == "==2026.7.1" and str(constraints["distributed"]) == "==2026.7.1"
    assert not constraints["bokeh"].contains("3.10.0") and constraints["bokeh"].contains("3.9.2")
    # ... and the package itself accepts them
    for dep in PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"]["gpu"]:
        req = Requirement(dep)
        if req.name in ("dask", "distributed"):
            assert req.specifier.contains(Version("2026.7.1")), dep
        if req.name == "bokeh":
            assert not req.specifier.contains("3.10.0"), dep
    seen = {}
    for name in ("Dockerfile", "Dockerfile.gpu"):
        path = DEP / "docker" / name
        text = path.read_text()
        lines = _pip_lines(path)
        assert lines, name
        for words in lines:
            assert words[:2] == ["-c", "/tmp/constraints.txt"], (name, words)
            project = [w for w in words if w.startswith("/src")]
            assert len(project) == 1, (name, words)
            m = re.fullmatch(r"/src(?:\[([\w,-]+)\])?", project[0])
            assert m, project
            used = set(filter(None, (m.group(1) or "").split(",")))
            assert used <= extras, (name, used - extras)
            seen[name] = used
        assert "COPY deployments/docker/constraints.txt /tmp/constraints.txt" in text
        # certificates are mounted at run time, never copied into an image
        for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, flags=re.M):
            for s in src.split():
                assert not re.search(r"(^|/)certs?(/|$)|\.(pem|key|crt)$", s), (name, s)
        ignore = (DEP / "docker" / f"{name}.dockerignore").read_text().splitlines()
        assert "*" in ignore  # an allow-list: nothing enters the build context unless named
        assert {"**/*.key", "**/*.pem", "**/*.crt"} <= set(ignore)
        for src in re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", text, flags=re.M):
            for s in src.split():
                assert f"!{s.rstrip('/')}" in ignore or f"!{s.rstrip('/')}/" in ignore, (name, s)
    assert seen["Dockerfile.gpu"] == {"gpu"} and seen["Dockerfile"] == set()


# ========================================================================= commands
def _compose_command(service: dict) -> list[str]:
    cmd = service["command"]
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def _sbatch_commands() -> str:
    return SBATCH.read_text().replace("\\\n", " ")


def test_schedulers_listen_tls_on_8786_with_the_dashboard_on_8787():
    svc = compose()["services"]
    cmds = [_compose_command(svc["scheduler"])]
    cmds += [spec["scheduler"]["spec"]["containers"][0]["args"] for _, spec in clusters()]
    m = re.search(r"^\s*srun [^\n]*?(dask scheduler [^\n&]*)", _sbatch_commands(), flags=re.M)
    assert m, "no dask scheduler in the sbatch script"
    sbatch = shlex.split(m.group(1).replace('"$DSKETCH_CERTS/cluster/', '"/certs/'))
    cmds.append(sbatch)
    for cmd in cmds:
        assert cmd[:2] == ["dask", "scheduler"], cmd
        assert cmd[cmd.index("--protocol") + 1] == "tls" and cmd[cmd.index("--port") + 1] == "8786", cmd
        assert cmd[cmd.index("--dashboard-address") + 1].endswith(":8787"), cmd
        for flag, value in zip(CLUSTER_TLS[::2], CLUSTER_TLS[1::2]):
            assert cmd[cmd.index(flag) + 1].strip('"') == value, (cmd, flag)
    launcher = _load(LAUNCHER)
    assert (launcher.SCHEDULER_PORT, launcher.DASHBOARD_PORT) == (8786, 8787)
    # published on the host's loopback only; the Kubernetes service stays inside the cluster
    assert svc["scheduler"]["ports"] == ["127.0.0.1:8786:8786", "127.0.0.1:8787:8787"]
    assert all(p.startswith("127.0.0.1:") for s in svc.values() for p in s.get("ports", []))
    for name, spec in clusters():
        service = spec["scheduler"]["service"]
        assert service["type"] == "ClusterIP"
        assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
        ports = {p["name"]: p["port"] for p in service["ports"]}
        assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
        container = {p["name"]: p["containerPort"] for p in spec["scheduler"]["spec"]["containers"][0]["ports"]}
        assert container == ports
        for probe in ("readinessProbe", "livenessProbe"):
            assert spec["scheduler"]["spec"]["containers"][0][probe]["httpGet"]["path"] == "/health"


def test_kubernetes_quantities_are_strings():
    """The operator's CRDs type resources as strings: an unquoted `nvidia.com/gpu: 1` is rejected."""
    pods = [spec for _, spec in worker_groups()] + [spec["scheduler"]["spec"] for _, spec in clusters()]
    pods += [d["spec"]["job"]["spec"] for d in k8s_docs() if d["kind"] == "DaskJob"]
    for pod in pods:
        for c in pod["containers"]:
            for kind in ("requests", "limits"):
                for name, value in c.get("resources", {}).get(kind, {}).items():
                    assert isinstance(value, str), (c["name"], kind, name, value)


def test_workers_join_their_scheduler_over_tls():
    svc = compose()["services"]
    for name in ("worker", "gpu-worker"):
        cmd = _compose_command(svc[name])
        assert "tls://scheduler:8786" in cmd and cmd[cmd.index("tls://scheduler:8786") + 1:][-6:] == CLUSTER_TLS
    assert _compose_command(svc["gpu-worker"])[:3] == ["dask", "cuda", "worker"]
    assert svc["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    for cluster, spec in worker_groups():
        for c in spec["containers"]:
            args = c["args"]
            assert f"tls://{cluster}-scheduler:8786" in args, (cluster, args)
            assert args[-6:] == CLUSTER_TLS and "$(DASK_WORKER_NAME)" in args
    text = _sbatch_commands()
    assert 'WORKER=(dask cuda worker --scheduler-file "$SCHEDULER_FILE")' in text
    assert 'WORKER=(dask worker --scheduler-file "$SCHEDULER_FILE"' in text
    assert re.search(r'"\$\{WORKER\[@\]\}".*--tls-ca-file "\$DSKETCH_CERTS/cluster/ca.crt" '
                     r'--tls-cert "\$DSKETCH_CERTS/cluster/tls.crt" --tls-key "\$DSKETCH_CERTS/cluster/tls.key"', text)


def test_certificates_come_from_volumes_per_role():
    svc = compose()["services"]
    role = {"scheduler": "cluster", "worker": "cluster", "gpu-worker": "cluster", "jupyter": "client", "job": "client"}
    for name, r in role.items():
        assert f"${{DSKETCH_CERTS:-./certs}}/{r}:/certs:ro" in svc[name]["volumes"], name
    assert svc["make-certs"]["volumes"] == ["${DSKETCH_CERTS:-./certs}:/out"]
    assert svc["make-certs"]["network_mode"] == "none"
    for _, spec in clusters():
        for pod in (spec["scheduler"]["spec"], spec["worker"]["spec"]):
            secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
            assert secrets == {"tls": "dsketch-tls-cluster"}
    for _, spec in worker_groups():
        assert spec["volumes"][0]["secret"]["secretName"] == "dsketch-tls-cluster"
        assert spec["securityContext"]["runAsNonRoot"] is True
    job = next(d for d in k8s_docs() if d["kind"] == "DaskJob")["spec"]["job"]["spec"]
    assert {v["name"]: v.get("secret", {}).get("secretName") for v in job["volumes"]}["tls"] == "dsketch-tls-client"
    # the runner names its tls:// scheduler, so the operator does not inject a tcp:// one
    assert env_of(job["containers"][0])["DASK_SCHEDULER_ADDRESS"] == "tls://dsketch-fit-scheduler:8786"
    readme = (DEP / "README.md").read_text()
    for secret in ("dsketch-tls-cluster", "dsketch-tls-client"):
        assert f"kubectl create secret generic {secret}" in readme


def test_environment_is_consistent():
    expected_routes = routes_default() + ["dsketch.dashboard"]
    values = []
    svc = compose()["services"]
    values.append(svc["scheduler"]["environment"]["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"])
    for _, spec in clusters():
        values.append(env_of(spec["scheduler"]["spec"]["containers"][0])["DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"])
    m = re.search(r"^export DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES='(.+)'$", SBATCH.read_text(), flags=re.M)
    values.append(m.group(1))
    assert len(set(values)) == 1, values
    assert json.loads(values[0]) == _load(LAUNCHER).SCHEDULER_HTTP_ROUTES == expected_routes
    import dask.config

    assert dask.config.interpret_value(values[0]) == expected_routes  # how dask reads the variable
    from dsketch import dashboard

    assert dashboard.ROUTE_MODULE == "dsketch.dashboard" and dashboard.routes

    # every dask process refuses unencrypted connections
    for name, s in svc.items():
        if name != "make-certs":
            assert s["environment"]["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True", name
    for _, spec in clusters():
        scheduler = spec["scheduler"]["spec"]["containers"][0]
        assert env_of(scheduler)["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    for _, spec in worker_groups():
        assert env_of(spec["containers"][0])["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    assert "export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True" in SBATCH.read_text()
    # clients configured through Dask's config see the scheduler and their certificate
    for name in ("jupyter", "job"):
        env = svc[name]["environment"]
        assert env["DASK_SCHEDULER_ADDRESS"] == "tls://scheduler:8786"
        files = [env[f"DASK_DISTRIBUTED__COMM__TLS__{k}"] for k in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY")]
        assert files == ["/certs/ca.crt", "/certs/tls.crt", "/certs/tls.key"]
        for key in env:
            if key.startswith("DASK_"):  # a typo here would be silently ignored by dask
                path = key[len("DASK_"):].lower().replace("__", ".").replace("_", "-")
                assert key == "DASK_SCHEDULER_ADDRESS" or dask.config.get(path, "missing") != "missing", key


def _dsketch_invocations() -> list[tuple[str, list[str]]]:
    """Every `dsketch <command> ...` line of the three platforms, variables expanded."""
    svc = compose()["services"]
    lines = []
    job_env = svc["job"]["environment"]
    fit_args = re.fullmatch(r"\$\{DSKETCH_FIT_ARGS:-(.*)\}", job_env["DSKETCH_FIT_ARGS"]).group(1)
    tls = "--tls-ca-file /certs/ca.crt --tls-cert /certs/tls.crt --tls-key /certs/tls.key"
    for line in svc["job"]["command"][0].splitlines():
        line = (line.replace("$$DSKETCH_FIT_ARGS", fit_args).replace("$$TLS", tls)
                .replace("$$DSKETCH_SOURCE", "/data/x.csv"))
        lines.append(("compose", line))
    job = next(d for d in k8s_docs() if d["kind"] == "DaskJob")
    c = job["spec"]["job"]["spec"]["containers"][0]
    for line in c["args"][0].splitlines():
        line = line.replace("$DSKETCH_FIT_ARGS", env_of(c)["DSKETCH_FIT_ARGS"]).replace("$TLS", tls)
        lines.append(("kubernetes", line))
    sb = _sbatch_commands()
    fit = re.search(r"^DSKETCH_FIT_ARGS=\$\{DSKETCH_FIT_ARGS:-(.*)\}$", sb, flags=re.M).group(1)
    for line in sb.splitlines():
        lines.append(("slurm", line.replace("$DSKETCH_FIT_ARGS", fit).replace('"$DSKETCH_CERTS/client/', '"/certs/')))
    out = []
    for where, line in lines:
        m = re.search(r"(?:^|\|\| |&& )(dsketch (?:ingest|fit|predict|evaluate|info) .*)$", line.strip())
        if m:
            out.append((where, [w for w in shlex.split(m.group(1))]))
    return out


def test_jobs_run_dsketch_with_options_that_exist_and_client_certificates():
    from dsketch import cli

    calls = _dsketch_invocations()
    assert {w for w, words in calls if words[1] == "fit"} == {"compose", "kubernetes", "slurm"}
    assert any(w == "compose" and words[1] == "ingest" for w, words in calls)
    for where, words in calls:
        command = cli.main.commands[words[1]]
        known = {o for p in command.params for o in p.opts + p.secondary_opts}
        used = {w for w in words[2:] if w.startswith("--")}
        assert used <= known, (where, used - known)
        if words[1] == "info":
            continue
        assert ("--scheduler" in words) != ("--scheduler-file" in words), (where, words)
        if "--scheduler" in words:
            assert words[words.index("--scheduler") + 1].startswith("tls://"), (where, words)
            assert words[words.index("--scheduler") + 1].endswith(":8786"), (where, words)
        for flag, value in zip(CLUSTER_TLS[::2], CLUSTER_TLS[1::2]):
            assert words[words.index(flag) + 1] == value, (where, flag)


# =========================================================================== sizing
def _sized_with(text: str) -> list[list[str]]:
    return [shlex.split(m) for m in re.findall(r"sized with:? `?python deployments/sizing.py ([^`\n]+)`?", text)]


def _gib(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)\s*(GiB|Gi|G)", value)
    assert m, value
    return float(m.group(1))


def test_memory_limits_follow_the_engines_memory_model():
    def need(args) -> float:
        out = json.loads(subprocess.run([sys.executable, str(DEP / "sizing.py"), *args, "--json"],
                                        capture_output=True, text=True, check=True, timeout=60).stdout)
        return out["worker"]["memory_limit_bytes"] / 2**30

    # compose: the CPU worker
    svc = compose()["services"]
    (args,) = _sized_with(COMPOSE.read_text())
    cmd = _compose_command(svc["worker"])
    limit = _gib(cmd[cmd.index("--memory-limit") + 1])
    assert limit >= need(args) and cmd[cmd.index("--nthreads") + 1] == args[args.index("--threads") + 1]
    assert _gib(svc["worker"]["deploy"]["resources"]["limits"]["memory"]) >= limit
    # kubernetes: CPU groups (threads from the args) and the GPU group (one thread)
    for f in ("daskcluster.yaml", "daskjob.yaml"):
        sized = _sized_with((K8S / f).read_text())
        assert sized, f
    cpu_args, gpu_args = _sized_with((K8S / "daskcluster.yaml").read_text())
    for _, spec in worker_groups():
        c = spec["containers"][0]
        args = gpu_args if c["image"] == GPU_IMAGE else cpu_args
        limit = _gib(c["args"][c["args"].index("--memory-limit") + 1])
        assert limit >= need(args), c["args"]
        res = c["resources"]
        assert res["requests"]["memory"] == res["limits"]["memory"] and _gib(res["limits"]["memory"]) == limit
        if c["image"] == CPU_IMAGE:
            threads = c["args"][c["args"].index("--nthreads") + 1]
            assert threads == args[args.index("--threads") + 1] == res["limits"]["cpu"]
    # the DaskJob's runner holds the m x m solve
    job = next(d for d in k8s_docs() if d["kind"] == "DaskJob")
    (jargs,) = _sized_with((K8S / "daskjob.yaml").read_text())
    kw = dict(m=int(jargs[jargs.index("--m") + 1]), folds=int(jargs[jargs.index("--folds") + 1]))
    runner = job["spec"]["job"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert _gib(runner) * 2**30 >= sizing.client_memory(**kw) / sizing.PAUSE_MARGIN
    # slurm: sbatch and the launcher
    sb = SBATCH.read_text()
    (args,) = _sized_with(sb)
    worker_mem = re.search(r"^WORKER_MEMORY=\$\{WORKER_MEMORY:-(\S+)\}$", sb, flags=re.M).group(1)
    assert _gib(worker_mem) >= need(args)
    cpus = int(re.search(r"^#SBATCH --cpus-per-task=(\d+)$", sb, flags=re.M).group(1))
    assert cpus == int(args[args.index("--threads") + 1])
    assert _gib(re.search(r"^#SBATCH --mem=(\S+)$", sb, flags=re.M).group(1)) >= _gib(worker_mem) + 2  # + scheduler
    launcher = _load(LAUNCHER)
    cpu, gpu = _sized_with(LAUNCHER.read_text())
    for kind, args in (("cpu", cpu), ("gpu", gpu)):
        prof = launcher.PROFILES[kind]
        assert _gib(prof["memory"]) >= need(args) and _gib(prof["job_mem"]) >= _gib(prof["memory"])
        assert prof["cores"] // prof["processes"] == int(args[args.index("--threads") + 1])


def test_fit_options_match_what_the_workers_were_sized_for():
    """--n-components and --cv of each platform's job are the m and folds of its sizing line."""
    calls = [(w, words) for w, words in _dsketch_invocations() if words[1] == "fit"]
    sized = {"compose": _sized_with(COMPOSE.read_text())[0],
             "kubernetes": _sized_with((K8S / "daskjob.yaml").read_text())[0],
             "slurm": _sized_with(SBATCH.read_text())[0]}
    for where, words in calls:
        args = sized[where]
        assert words[words.index("--n-components") + 1] == args[args.index("--m") + 1], where
        assert words[words.index("--cv") + 1] == args[args.index("--folds") + 1], where


def test_sizing_model_numbers():
    w = sizing.worker_memory(d=128, m=4096, chunk_rows=16384, folds=5, threads=2)
    partials = 8 * 5 * (4096 ** 2 + 4096)
    assert w["reduction_bytes"] == 6 * partials                       # split_every + 2 partials
    assert w["task_bytes"] == 16384 * 128 * 8 + 2 * 16384 * 4096 * 4 + 8 * 8192 * 4096 + partials
    assert w["worker_peak_bytes"] == 2 * max(w["task_bytes"], w["reduction_bytes"]) + sizing.BASELINE
    assert w["memory_limit_bytes"] * sizing.PAUSE_MARGIN >= w["worker_peak_bytes"]
    from dsketch.engine import passes

    assert (sizing.SLAB_ROWS, sizing.SPLIT_EVERY) == (passes.SLAB_ROWS, passes.SPLIT_EVERY)


# =================================================================== tools in deployments/
def test_make_certs_writes_a_ca_and_per_role_bundles(tmp_path):
    pytest.importorskip("cryptography")
    from cryptography import x509

    make_certs = _load(DEP / "make_certs.py")
    out = tmp_path / "certs"
    assert make_certs.main([str(out), "--hosts", "scheduler,10.0.0.1"]) == 0
    assert make_certs.main([str(out), "--client", "alice"]) == 0  # reuses the CA
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    for role in ("cluster", "client", "alice"):
        assert sorted(p.name for p in (out / role).iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert (out / role / "ca.crt").read_bytes() == (out / "ca.crt").read_bytes()
        assert oct((out / role / "tls.key").stat().st_mode & 0o777) == "0o600"
        cert = x509.load_pem_x509_certificate((out / role / "tls.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
    assert oct((out / "ca.key").stat().st_mode & 0o777) == "0o600"
    san = x509.load_pem_x509_certificate((out / "cluster" / "tls.crt").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "scheduler" in san.get_values_for_type(x509.DNSName)


@pytest.mark.timeout(120)
def test_jobqueue_launcher_writes_tls_worker_jobs(tmp_path, capsys):
    pytest.importorskip("dask_jobqueue")
    pytest.importorskip("cryptography")
    make_certs = _load(DEP / "make_certs.py")
    make_certs.main([str(tmp_path / "certs"), "--hosts", "127.0.0.1"])
    capsys.readouterr()
    launcher = _load(LAUNCHER)
    common = ["--dry-run", "--certs", str(tmp_path / "certs"), "--scheduler-port", "0", "--dashboard-port", "0",
              "--interface", "lo", "--venv", "/opt/venv", "--log-directory", str(tmp_path / "logs")]
    assert launcher.main(["--partition", "cpu", *common]) == 0
    cpu = capsys.readouterr().out
    assert launcher.main(["--kind", "gpu", "--partition", "gpu", *common]) == 0
    gpu = capsys.readouterr().out
    for script in (cpu, gpu):
        assert "source /opt/venv/bin/activate" in script
        assert "export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True" in script
        assert re.search(r" tls://127\.0\.0\.1:\d+ ", script)
        for flag, name in zip(CLUSTER_TLS[::2], ("ca.crt", "tls.crt", "tls.key")):
            assert f"{flag} {tmp_path / 'certs' / 'cluster' / name}" in script
    assert "-m distributed.cli.dask_worker" in cpu and "#SBATCH -p cpu" in cpu and "--nthreads 8" in cpu
    assert "-m dask_cuda.cli" in gpu and "#SBATCH --gres=gpu:1" in gpu and "--nthreads 1" in gpu
    cmd = launcher.fit_command("tls://h:8786", tmp_path / "certs", ["--data", "d.zarr", "--model", "m"])
    assert cmd[:2] == ["dsketch", "fit"] and cmd[cmd.index("--tls-cert") + 1].endswith("client/tls.crt")


def test_readme_walks_each_platform():
    text = (DEP / "README.md").read_text()
    for needle in ("Docker Compose", "Kubernetes", "SLURM", "DaskJob", "DaskCluster", "dask-jobqueue",
                   "scheduler-file", "/dsketch", "Security model", "make_certs.py", "sizing.py",
                   "docker compose --profile job run --rm job", "sbatch deployments/slurm/dsketch.sbatch",
                   "kubectl apply -f deployments/kubernetes/daskjob.yaml", "pickle"):
        assert needle in text, needle
    for rel in re.findall(r"\]\((?!https?:)([^)#]+)\)", text):  # relative links resolve
        assert (DEP / rel).exists(), rel
