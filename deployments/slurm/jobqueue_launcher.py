#!/usr/bin/env python3
"""Run ``dsketch fit`` on SLURM workers started by dask-jobqueue, over mutual TLS.

The launcher runs the dask scheduler in its own process (run it on a login node if your site
allows long-lived processes there, else inside a small job, e.g.
``sbatch --cpus-per-task=2 --mem=8G --wrap "python jobqueue_launcher.py ..."``), submits
one SLURM job per worker to the CPU or GPU partition, waits for them, runs ``dsketch fit``
against the scheduler with a *client* certificate, and cancels the jobs when it is done.

::

    pip install /path/to/dsketch dask-jobqueue     # "/path/to/dsketch[gpu]" on GPU nodes
    python deployments/make_certs.py ~/.config/dsketch/certs --hosts "$(hostname)"
    python deployments/slurm/jobqueue_launcher.py --partition cpu --jobs 4 -- \\
        --data /shared/datasets/train.zarr --model models/ntk --kernel ntk --depth 3 \\
        --n-components 4096 --alpha 1e-3,1e-2,1e-1 --cv 5
    python deployments/slurm/jobqueue_launcher.py --kind gpu --partition gpu --jobs 2 -- ...
    python deployments/slurm/jobqueue_launcher.py --dry-run ...   # print the job script only

Everything after ``--`` goes to ``dsketch fit`` (``--scheduler`` and ``--tls-*`` are
added).  The certificate directory (``cluster/`` and ``client/`` from make_certs.py) must
be on a file system the compute nodes mount: workers read their certificate from there.
Site defaults can also live in ``~/.config/dask/jobqueue.yaml`` (``jobqueue.slurm.*``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

#: the scheduler's HTTP routes: distributed's defaults plus dsketch's /dsketch page
SCHEDULER_HTTP_ROUTES = [
    "distributed.http.scheduler.prometheus", "distributed.http.scheduler.info",
    "distributed.http.scheduler.json", "distributed.http.health", "distributed.http.proxy",
    "distributed.http.statics", "dsketch.dashboard",
]
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787

#: One worker per job.  Memory from the engine's model (deployments/sizing.py):
#: cpu sized with: python deployments/sizing.py --d 128 --m 4096 --chunk-rows 16384 --folds 5 --threads 8
#: gpu sized with: python deployments/sizing.py --d 128 --m 4096 --chunk-rows 16384 --folds 5 --threads 1
#: (a GPU worker runs one task at a time on its GPU; the rest of the host memory is for
#: spilling device memory and staging chunks).
PROFILES = {
    "cpu": dict(cores=8, job_cpu=8, processes=1, memory="41GiB", job_mem="48G",
                worker_command="distributed.cli.dask_worker", job_extra_directives=[]),
    # `dask cuda worker` (python -m dask_cuda.cli), one thread driving one GPU
    "gpu": dict(cores=1, job_cpu=8, processes=1, memory="16GiB", job_mem="24G",
                worker_command="dask_cuda.cli", job_extra_directives=["--gres=gpu:1"]),
}


def tls_files(certs: Path, role: str) -> tuple[str, str, str]:
    d = Path(certs).expanduser() / role
    files = (d / "ca.crt", d / "tls.crt", d / "tls.key")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(f"missing TLS files {missing}: run deployments/make_certs.py {certs}")
    return tuple(str(f) for f in files)


def make_security(certs: Path):
    """Mutual TLS: scheduler and workers present the cluster certificate, we the client's."""
    from distributed import Security

    ca, cert, key = tls_files(certs, "cluster")
    _, ccert, ckey = tls_files(certs, "client")
    return Security(tls_ca_file=ca, tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key,
                    tls_client_cert=ccert, tls_client_key=ckey, require_encryption=True)


def make_cluster(args, security):
    """A ``dask_jobqueue.SLURMCluster`` for ``args.kind`` (no job is submitted yet)."""
    import dask.config
    from dask_jobqueue import SLURMCluster

    prof = PROFILES[args.kind]
    dask.config.set({"distributed.scheduler.http.routes": SCHEDULER_HTTP_ROUTES})
    env = ["export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True"]
    if args.venv:
        env.insert(0, f"source {args.venv}/bin/activate")
    return SLURMCluster(
        queue=args.partition, account=args.account, walltime=args.walltime,
        cores=prof["cores"], job_cpu=prof["job_cpu"], processes=prof["processes"],
        memory=prof["memory"], job_mem=prof["job_mem"], worker_command=prof["worker_command"],
        job_extra_directives=prof["job_extra_directives"] + list(args.sbatch or []),
        job_script_prologue=env, interface=args.interface, local_directory="$TMPDIR",
        log_directory=args.log_directory, security=security, protocol="tls://",
        # the dashboard on the launcher's loopback: ssh -L 8787:localhost:8787 <launcher host>
        scheduler_options={"port": args.scheduler_port, "dashboard_address": f"127.0.0.1:{args.dashboard_port}"},
        job_name=f"dsketch-{args.kind}",
    )


def fit_command(address: str, certs: Path, fit_args: list[str]) -> list[str]:
    ca, cert, key = tls_files(certs, "client")
    return ["dsketch", "fit", *fit_args, "--scheduler", address,
            "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    fit_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--partition", default=None, help="SLURM partition (queue)")
    p.add_argument("--account", default=None)
    p.add_argument("--walltime", default="01:00:00")
    p.add_argument("--jobs", type=int, default=2, help="worker jobs to submit")
    p.add_argument("--certs", type=Path, default=Path("~/.config/dsketch/certs"),
                   help="make_certs.py output (cluster/ and client/), on a shared file system")
    p.add_argument("--interface", default=None, help="network interface of the cluster network (ib0...)")
    p.add_argument("--venv", default=os.environ.get("VIRTUAL_ENV"),
                   help="virtual environment the jobs activate (default: this one)")
    p.add_argument("--scheduler-port", type=int, default=SCHEDULER_PORT, help="0: any free port")
    p.add_argument("--dashboard-port", type=int, default=DASHBOARD_PORT, help="0: any free port")
    p.add_argument("--log-directory", default="dsketch-logs")
    p.add_argument("--sbatch", action="append", help="extra #SBATCH directive, e.g. --sbatch=--constraint=skylake")
    p.add_argument("--dry-run", action="store_true", help="print the worker job script and exit")
    args = p.parse_args(argv)
    if not fit_args and not args.dry_run:
        p.error("give the `dsketch fit` options after --")

    security = make_security(args.certs)
    with make_cluster(args, security) as cluster:
        print(cluster.job_script() if args.dry_run else f"scheduler {cluster.scheduler_address}, "
              f"dashboard {cluster.dashboard_link} (/dsketch: dsketch fits)", flush=True)
        if args.dry_run:
            return 0
        cluster.scale(jobs=args.jobs)
        from distributed import Client

        with Client(cluster, security=security) as client:
            client.wait_for_workers(1, timeout=3600)
        return subprocess.call(fit_command(cluster.scheduler_address, args.certs, fit_args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
