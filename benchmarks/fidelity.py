"""Fidelity benchmark: sketch error vs feature count and throughput, beside scikit-learn peers.

For each kernel family, one run measures on the same data:
  - relative Frobenius error ‖FFᵀ − K‖_F / ‖K‖_F of dsketch's features against the exact
    kernel (and of scikit-learn's RBFSampler / Nystroem / PolynomialCountSketch where they
    approximate the same kernel), averaged over seeds;
  - rows/s of the transform (fitted map applied to a larger batch);
  - the time ratio exact kernel / sketch for the same n (features + Gram);
  - for the FC NTK sketch: GEMM-equivalent GFLOP/s (2·n·d·m / time of the map) against this
    machine's measured float32 GEMM rate.

and, for activations whose kernels change shape with the input norm, the error against the
input scale (:func:`scale_sweep`: depth-2/3 fully-connected NNGP and NTK of ReLU, erf, tanh,
GeLU, sigmoid-like and sin nets on off-sphere rows scaled ×0.1…×100, per sketch ``method``),
beside the JL floor: the error of a Gaussian projection of the exact (infinite-dimensional)
features to the same width, √(Σ_ij (K_ii K_jj + K_ij²)/m)/‖K‖_F, and the i.i.d. bound
(:func:`iid_bound`): no average of m i.i.d. unbiased random features can do better than
√((tr(K)²/‖K‖²_F − 1)/m) in RMS relative error.

Writes ``benchmarks/results/fidelity.json`` and ``fidelity.png``; ``--scales`` runs only the
scale sweep (``fidelity-scales.json`` / ``.png``).
Usage: ``python benchmarks/fidelity.py`` (full), ``--quick`` (CI-sized, ~1 minute) or
``--scales [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.kernel_approximation import Nystroem, PolynomialCountSketch, RBFSampler
from sklearn.metrics.pairwise import rbf_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, best_time, gemm_gflops, rel_fro, write_results  # noqa: E402

from dsketch import nets  # noqa: E402
from dsketch.sketch import kernels  # noqa: E402


def _data(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Digits rows (real data) rescaled to norms spread over two decades, padded/cut to d."""
    x = load_digits().data.astype(np.float64)
    rng = np.random.default_rng(seed)
    x = x[rng.permutation(len(x))[:n]]
    x = (x - x.mean(0)) / (x.std(0) + 1e-9)
    if d < x.shape[1]:
        x = x[:, :d]
    elif d > x.shape[1]:
        x = np.hstack([x, rng.standard_normal((len(x), d - x.shape[1]))])
    scale = 10 ** rng.uniform(-1, 1, size=(len(x), 1))
    return x * scale / np.sqrt(d)


#: Activations of the scale sweep (sigmoid-like: neural-tangents' erf-based ``Sigmoid_like``).
SWEEP_ACTIVATIONS = {"relu": nets.Relu(), "erf": nets.Erf(), "tanh": nets.Elementwise("tanh"),
                     "gelu": nets.Gelu(), "sigmoid_like": nets.Erf(0.5, 1 / 2.4020563531719796, 0.5),
                     "sin": nets.Sin()}
SWEEP_SCALES = (0.1, 1.0, 10.0, 100.0)


def off_sphere_rows(n: int = 200, d: int = 32, seed: int = 0, lo: float = 1.6, hi: float = 21.0):
    """Gaussian directions with row norms log-spread over [lo, hi] (absolute, not per √d)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    norms = np.geomspace(lo, hi, n)[rng.permutation(n)]
    return x / np.linalg.norm(x, axis=1, keepdims=True) * norms[:, None]


def jl_floor(k: np.ndarray, m: int) -> float:
    """Relative error of a width-m Gaussian projection of exact features of the kernel ``k``."""
    d = np.diag(k)
    return float(np.sqrt(((np.outer(d, d) + k ** 2) / m).sum()) / np.linalg.norm(k))


def iid_bound(k: np.ndarray, m: int) -> float:
    """Lower bound on the RMS relative error of ANY average of m i.i.d. unbiased random features.

    For K̂ = (1/m) Σ_t φ_t φ_tᵀ with E[φ φᵀ] = K: E‖K̂ − K‖²_F = (E‖φ‖⁴ − ‖K‖²_F)/m and
    E‖φ‖⁴ ≥ (E‖φ‖²)² = tr(K)² (Jensen), so the RMS relative error is at least
    √((tr(K)² − ‖K‖²_F)/m)/‖K‖_F = √((n_eff − 1)/m) with n_eff = tr(K)²/‖K‖²_F.  Features drawn
    in i.i.d. blocks of k structured columns lower it only to √((n_eff − k)/m).
    """
    n_eff = float(np.trace(k) ** 2 / (k ** 2).sum())
    return float(np.sqrt(max(n_eff - 1.0, 0.0) / m))


def sketch_errors(net, x, m: int, seeds, method: str = "auto", exact=None):
    """Mean over ``seeds`` of the NNGP and NTK relative Frobenius errors of ``net.sketch``."""
    exact = net.kernel(x) if exact is None else exact
    errs = []
    for s in seeds:
        f = net.sketch(x.shape[1:], m, seed=s, method=method)(x)
        errs.append([rel_fro((lambda a: a @ a.T)(getattr(f, w).astype(np.float64)), getattr(exact, w))
                     for w in ("nngp", "ntk")])
    return np.mean(errs, axis=0)


def scale_sweep(quick: bool) -> list:
    """Error against input scale: activation × depth × scale × m × method rows."""
    ms = [1024] if quick else [1024, 4096]
    seeds = (0,) if quick else (0, 1)
    # the explicit methods at the largest width and depth 2 only, one seed (the estimators' comparison)
    methods = {m: ("auto",) for m in ms}
    if not quick:
        methods[ms[-1]] = ("auto", "hermite", "random", "mix")
    x0 = off_sphere_rows()
    rows = []
    for aname, act in SWEEP_ACTIVATIONS.items():
        for depth in (2,) if quick else (2, 3):
            net = nets.fully_connected(depth, act, W_std=1.0, b_std=0.1)
            for scale in SWEEP_SCALES:
                x = x0 * scale
                exact = net.kernel(x)
                for m in ms:
                    floor = [jl_floor(getattr(exact, w), m) for w in ("nngp", "ntk")]
                    bound = [iid_bound(getattr(exact, w), m) for w in ("nngp", "ntk")]
                    for method in methods[m]:
                        if method != "auto" and (act.homogeneity is not None or depth != 2):
                            continue
                        t0 = time.perf_counter()
                        e = sketch_errors(net, x, m, seeds if method == "auto" else seeds[:1], method, exact)
                        rows.append({"activation": aname, "depth": depth, "scale": scale, "m": m,
                                     "method": method, "nngp": float(e[0]), "ntk": float(e[1]),
                                     "jl_floor_nngp": floor[0], "jl_floor_ntk": floor[1],
                                     "iid_bound_nngp": bound[0], "iid_bound_ntk": bound[1],
                                     "seeds": len(seeds) if method == "auto" else 1, "seconds": time.perf_counter() - t0})
                        print(_sweep_line(rows[-1]), flush=True)
    return rows


def _sweep_line(r: dict) -> str:
    return (f"{r['activation']:<13}d{r['depth']} x{r['scale']:<6g}m={r['m']:<5} {r['method']:<8}"
            f"NNGP {r['nngp']:.3f} NTK {r['ntk']:.3f}   (JL floor {r['jl_floor_nngp']:.3f} / "
            f"{r['jl_floor_ntk']:.3f}; i.i.d. bound {r['iid_bound_nngp']:.3f} / {r['iid_bound_ntk']:.3f})")


def plot_sweep(rows: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    auto = [r for r in rows if r["method"] == "auto"]
    m = max(r["m"] for r in auto)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    names = sorted({r["activation"] for r in auto})
    for ax, kind in zip(axes, ("nngp", "ntk")):
        for (aname, depth) in sorted({(r["activation"], r["depth"]) for r in auto}):
            sel = [r for r in auto if r["activation"] == aname and r["depth"] == depth and r["m"] == m]
            ax.loglog([r["scale"] for r in sel], [r[kind] for r in sel], "o-" if depth == 2 else "s--",
                      color=f"C{names.index(aname)}", label=f"{aname} depth {depth}")
        ax.axhline(0.1, color="k", ls=":", lw=1)
        ax.set(xlabel="input scale", ylabel="relative Frobenius error", title=f"{kind.upper()} sketch, m = {m}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _net_family(name, net, x, x_big, ms, seeds, kinds=("ntk", "nngp")):
    """Error of .ntk and .nngp features (one sketch call serves both) and rows/s of the map."""
    t0 = time.perf_counter()
    exact = net.kernel(x)
    t_exact = time.perf_counter() - t0
    out = {w: {"family": name, "kernel": w, "n": len(x), "d": int(np.prod(x.shape[1:])),
               "exact_seconds": t_exact, "dsketch": []} for w in kinds}
    for m in ms:
        errs = {w: [] for w in kinds}
        for s in range(seeds):
            feats = net.sketch(x.shape[1:], m, seed=s)(x)
            for w in kinds:
                f = getattr(feats, w).astype(np.float64)
                errs[w].append(rel_fro(f @ f.T, getattr(exact, w)))
        fmap = net.sketch(x.shape[1:], m, seed=0)
        t_big = best_time(lambda: fmap(x_big), repeat=2)
        t_small = best_time(lambda: (lambda f: f.ntk @ f.ntk.T)(fmap(x)), repeat=2)
        for w in kinds:
            out[w]["dsketch"].append({"m": m, "error": float(np.mean(errs[w])), "error_std": float(np.std(errs[w])),
                                      "rows_per_s": len(x_big) / t_big, "seconds_big": t_big,
                                      "exact_over_sketch": t_exact / t_small})
    return list(out.values())


def _map_family(name, make, exact_fn, x, x_big, ms, seeds, peers):
    k = exact_fn(x)
    out = {"family": name, "n": len(x), "d": x.shape[1], "dsketch": [], "peers": {}}
    for m in ms:
        errs = [rel_fro((lambda f: f @ f.T)(make(m, s)(x).astype(np.float64)), k) for s in range(seeds)]
        fmap = make(m, 0)
        t = best_time(lambda: fmap(x_big), repeat=2)
        out["dsketch"].append({"m": m, "error": float(np.mean(errs)), "error_std": float(np.std(errs)),
                               "rows_per_s": len(x_big) / t})
    for pname, pmake in peers.items():
        rows = []
        for m in ms:
            errs = []
            for s in range(seeds):
                # fit on other rows: Nystroem with landmarks = the evaluated rows is exact by design
                est = pmake(m, s).fit(x_big)
                f = est.transform(x)
                errs.append(rel_fro(f @ f.T, k))
            est = pmake(m, 0).fit(x_big)
            t = best_time(lambda: est.transform(x_big), repeat=2)
            rows.append({"m": m, "error": float(np.mean(errs)), "rows_per_s": len(x_big) / t})
        out["peers"][pname] = rows
    return out


def run(quick: bool) -> dict:
    results = _run_families(quick)
    results["scale_sweep"] = scale_sweep(quick)
    return results


def _run_families(quick: bool) -> dict:
    ms = [256, 1024] if quick else [512, 1024, 2048, 4096]
    seeds = 2 if quick else 3
    n, d = (200, 32) if quick else (500, 64)
    n_big = 2000 if quick else 20000
    x = _data(n, d)
    x_big = np.vstack([_data(min(n_big, 1797), d, seed=1)] * int(np.ceil(n_big / 1797)))[:n_big]
    x_nets = x_big[: (2000 if quick else 4000)]  # network sketches are costlier per row
    ms_nets = ms
    results = {"quick": quick, "families": []}

    acts = {"relu": nets.Relu(), "erf": nets.Erf(), "gelu": nets.Gelu(), "tanh": nets.Elementwise("tanh")}
    for aname, act in acts.items():
        net = nets.fully_connected(depth=2, activation=act, W_std=1.5, b_std=0.1)
        results["families"] += _net_family(f"fc2-{aname}", net, x, x_nets, ms_nets, seeds)

    # CNTK on small images: Myrtle-5 on 8x8 crops of digits (real images)
    imgs = load_digits().images.astype(np.float64)[:, :, :, None] / 16.0
    imgs = imgs - imgs.mean()
    n_img = 16 if quick else 100
    cnet = nets.myrtle(5)
    results["families"] += _net_family("myrtle5-8x8", cnet, imgs[:n_img], imgs[:64 if quick else 200],
                                       ms[:2] if quick else ms[:3], 1 if quick else 2)

    # Polynomial kernels (gamma<x,y> + c)^p vs scikit-learn's PolynomialCountSketch
    xp_ = x / np.linalg.norm(x, axis=1, keepdims=True)
    for p in (2, 4):
        gamma, coef0 = 1.0, 1.0
        results["families"].append(_map_family(
            f"poly-p{p}",
            lambda m, s, p=p: kernels.PolynomialSketch(input_dim=d, n_features=m, degree=p, gamma=gamma,
                                                       coef0=coef0, seed=s),
            lambda a, p=p: (gamma * a @ a.T + coef0) ** p, xp_, np.vstack([xp_] * (n_big // n)), ms, seeds,
            {"sklearn.PolynomialCountSketch": lambda m, s, p=p: PolynomialCountSketch(
                degree=p, gamma=gamma, coef0=coef0, n_components=m, random_state=s)}))

    # Gaussian kernel exp(-gamma |x-y|^2) vs RBFSampler and Nystroem.  Fresh Gaussian rows, so
    # that Nystroem's landmarks (drawn from the fitting set) are not the evaluated rows.
    g = np.random.default_rng(3)
    x, x_big = g.standard_normal((n, d)), g.standard_normal((n_big, d))
    gamma = 0.5 / np.median(np.sum((x[:, None] - x[None]) ** 2, -1))
    results["families"].append(_map_family(
        "gaussian-rff",
        lambda m, s: kernels.RandomFourierFeatures(input_dim=d, n_features=m, gamma=gamma, seed=s),
        lambda a: rbf_kernel(a, gamma=gamma), x, x_big, ms, seeds,
        {"sklearn.RBFSampler": lambda m, s: RBFSampler(gamma=gamma, n_components=m, random_state=s),
         # Nystroem's fit is an m×m SVD: capped at 2048 landmarks to keep the run to minutes
         "sklearn.Nystroem": lambda m, s: Nystroem(gamma=gamma, n_components=min(m, 2048, len(x_big)),
                                                   random_state=s)}))

    # FC NTK throughput against the measured GEMM rate.  Work is counted as the flops of the
    # dense random-feature equivalent: one (rows × w_in)·(w_in × m) GEMM per nonlinearity.
    gemm = gemm_gflops()
    m = 1024 if quick else 4096
    net = nets.fully_connected(2, nets.Relu(), W_std=1.5, b_std=0.1)
    fmap = net.sketch((d,), m, seed=0)
    widths, w = [], d
    for layer, step in zip(net.layers, fmap.plan):
        if isinstance(layer, nets.Activation):
            widths.append(w)
        w = step.out.nngp
    flops = sum(2.0 * len(x_nets) * wi * m for wi in widths)
    t = best_time(lambda: fmap(x_nets), repeat=2)
    results["gemm"] = {"machine_gemm_gflops": gemm, "m": m, "rows": len(x_nets), "activation_input_widths": widths,
                       "fc_ntk_equiv_gflops": flops / t / 1e9,
                       "note": "GEMM-equivalent: flops of a dense random-feature NTK map of the same widths "
                               "(2·rows·w_in·m per nonlinearity) / time of the sketch"}
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = results["families"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for fam in fams:
        label = f"{fam['family']}" + (f" {fam['kernel']}" if "kernel" in fam else "")
        ms = [r["m"] for r in fam["dsketch"]]
        axes[0].loglog(ms, [r["error"] for r in fam["dsketch"]], "o-", label=f"dsketch {label}")
        for pname, rows in fam.get("peers", {}).items():
            axes[0].loglog([r["m"] for r in rows], [r["error"] for r in rows], "x--",
                           label=f"{pname} ({fam['family']})")
        axes[1].loglog(ms, [r["rows_per_s"] for r in fam["dsketch"]], "o-", label=f"dsketch {label}")
        for pname, rows in fam.get("peers", {}).items():
            axes[1].loglog([r["m"] for r in rows], [r["rows_per_s"] for r in rows], "x--", label=pname)
    axes[0].set(xlabel="features m", ylabel="relative Frobenius error", title="Kernel fidelity")
    axes[1].set(xlabel="features m", ylabel="rows / s", title="Transform throughput")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(results: dict) -> str:
    lines = [f"{'family':<20}{'m':>6}{'error':>8}{'rows/s':>10}   peers (error, rows/s)"]
    for fam in results["families"]:
        peers = fam.get("peers", {})
        for i, r in enumerate(fam["dsketch"]):
            name = fam["family"] + (f"/{fam['kernel']}" if "kernel" in fam else "")
            pe = "; ".join(f"{p.split('.')[-1]} {rows[i]['error']:.4f}, {rows[i]['rows_per_s']:.0f}"
                           for p, rows in peers.items())
            lines.append(f"{name:<20}{r['m']:>6}{r['error']:>8.4f}{r['rows_per_s']:>10.0f}   {pe}")
    g = results["gemm"]
    lines.append(f"GEMM rate {g['machine_gemm_gflops']:.1f} GFLOP/s; FC NTK sketch m={g['m']}: "
                 f"{g['fc_ntk_equiv_gflops']:.1f} GEMM-equivalent GFLOP/s "
                 f"({100 * g['fc_ntk_equiv_gflops'] / g['machine_gemm_gflops']:.0f}%)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (small n, two widths)")
    ap.add_argument("--scales", action="store_true", help="only the error-against-input-scale sweep")
    args = ap.parse_args(argv)
    if args.scales:
        name = "fidelity-scales" + ("-quick" if args.quick else "")
        rows = scale_sweep(args.quick)
        path = write_results(name, {"quick": args.quick, "scale_sweep": rows})
        plot_sweep(rows, RESULTS / f"{name}.png")
        print(f"wrote {path} and {RESULTS / (name + '.png')}")
        return 0
    res = run(args.quick)
    name = "fidelity-quick" if args.quick else "fidelity"
    path = write_results(name, res)
    plot(res, RESULTS / f"{name}.png")
    plot_sweep(res["scale_sweep"], RESULTS / f"{name}-scales.png")
    print(table(res))
    print(f"wrote {path} and {RESULTS / (name + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
