"""Bad input to the estimators and solvers, by class (issue 9): no silent NaN, no junk fit.

Classes: non-finite features/targets in every solve path (direct, CG, the regularization
path in feature and sample form; NumPy and dask, also on a real ``LocalCluster``),
non-finite dask ``y`` in the estimators, continuous labels for the classifier, CV grids
on too few rows (or empty folds, or training folds without classes), and non-finite
weights from finite sums.  Each case asserts the error type and what the message names.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest

from dsketch import engine
from dsketch.backend import InvalidInputError
from dsketch.engine.linalg import IllConditionedError, check_weights
from dsketch.engine.passes import check_folds
from dsketch.estimators import NTKSketch, RandomFourierFeatures, SketchRidge, SketchRidgeClassifier

pytestmark = pytest.mark.timeout(300)

RNG = np.random.default_rng(1)
N, D, M = 40, 5, 12
X = RNG.standard_normal((N, D))
Y = RNG.standard_normal(N)
PHI = RNG.standard_normal((N, M))
LABELS = np.arange(N) % 3


def with_bad(a, row, value=np.nan, col=0):
    b = np.array(a, dtype=np.float64, copy=True)
    if b.ndim == 1:
        b[row] = value
    else:
        b[row, col] = value
    return b


def sketch():
    return RandomFourierFeatures(n_components=M, gamma=0.3, random_state=0)


def check_message(exc, *words):
    msg = str(exc.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


# =================================================== solvers: non-finite inputs
SOLVES = {
    "direct": lambda P, T: engine.fit_ridge(P, T, alpha=1.0, solver="direct"),
    "cg": lambda P, T: engine.fit_ridge(P, T, alpha=1.0, solver="cg"),
    "cg-jacobi": lambda P, T: engine.fit_ridge(P, T, alpha=1.0, solver="cg",
                                                 preconditioner="jacobi"),
    "path-cv": lambda P, T: engine.fit_path(P, T, [0.1, 1.0, 10.0], n_folds=3),
    "path-gcv": lambda P, T: engine.fit_path(P, T, [0.1, 1.0, 10.0]),
    "path-sample": lambda P, T: engine.fit_path(P, T, [0.1, 1.0], n_folds=3, form="sample"),
    "gram": lambda P, T: engine.gram(P, T, n_folds=4),
}


def as_input(a, lazy):
    return da.from_array(a, chunks=7) if lazy else a


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("solve", list(SOLVES))
@pytest.mark.parametrize("where", ["Phi", "Y"])
def test_non_finite_features_or_targets_are_errors_in_every_solve(solve, lazy, value, where):
    if solve == "path-sample" and lazy:
        pytest.skip("the sample-space form is for in-memory Φ")
    P = with_bad(PHI, 23, value, col=5) if where == "Phi" else PHI
    T = with_bad(Y, 23, value) if where == "Y" else Y
    with pytest.raises(InvalidInputError) as exc:
        SOLVES[solve](as_input(P, lazy), as_input(T, lazy))
    check_message(exc, where, "NaN or Inf", "row 23")


def test_non_finite_phi_on_a_cluster_names_the_global_row(client):
    P = da.from_array(with_bad(PHI, 31, col=2), chunks=8)
    for solver in ("direct", "cg"):
        with pytest.raises(InvalidInputError) as exc:
            engine.fit_ridge(P, Y, alpha=1.0, solver=solver, client=client)
        check_message(exc, "Phi", "row 31")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_overflowing_features_are_reported_as_overflow(solver):
    with pytest.raises(InvalidInputError) as exc:
        engine.fit_ridge(PHI * 1e200, Y, alpha=1.0, solver=solver)
    check_message(exc, "overflow", "Phi")
    assert "contains NaN" not in str(exc.value)


def test_non_finite_gram_and_weights_are_errors():
    g = engine.gram(PHI, Y)
    g.G[0, 0] = np.nan
    with pytest.raises(InvalidInputError) as exc:
        engine.solve_gram(g, 1.0)
    check_message(exc, "Gram", "NaN or Inf")
    with pytest.raises(InvalidInputError) as exc:
        engine.ridge_path(g, [0.1, 1.0])
    check_message(exc, "not finite")
    with pytest.raises(IllConditionedError) as exc:
        check_weights(np.array([[1.0], [np.inf]]), "a solve")
    assert isinstance(exc.value, FloatingPointError) and isinstance(exc.value, InvalidInputError)
    check_message(exc, "a solve", "ill-conditioned", "alpha")


@pytest.mark.parametrize("kw,name", [
    (dict(maxiter=2.5), "maxiter"), (dict(seed=1.5), "seed"), (dict(seed="abc"), "seed"),
    (dict(rank=3.5), "rank"), (dict(slab_rows=0), "slab_rows"), (dict(tol=float("nan")), "tol"),
    (dict(alpha=float("nan")), "alpha"), (dict(alpha="big"), "alpha"),
    (dict(solver="qr"), "solver"), (dict(split_every=1), "split_every"),
])
def test_fit_ridge_arguments_are_checked(kw, name):
    args = dict(alpha=1.0, solver="cg") | kw
    with pytest.raises(InvalidInputError) as exc:
        engine.fit_ridge(PHI, Y, **args)
    check_message(exc, name)


# =================================================== arrays of different lengths
@pytest.mark.parametrize("phi_lazy,y_lazy", [(True, False), (False, False), (True, True),
                                              (False, True)], ids=["dask-numpy", "numpy-numpy",
                                                                   "dask-dask", "numpy-dask"])
@pytest.mark.parametrize("solve", ["direct", "cg", "path-cv", "gram"])
def test_phi_and_y_of_different_lengths_name_both(solve, phi_lazy, y_lazy):
    """Never dask's "Chunks do not add up to shape": both arrays and their lengths."""
    phi = da.from_array(PHI, chunks=20) if phi_lazy else PHI
    y = da.from_array(Y[:30], chunks=10) if y_lazy else Y[:30]
    with pytest.raises(InvalidInputError) as exc:
        SOLVES[solve](phi, y)
    check_message(exc, "Phi has 40 rows", "Y has 30")


def test_estimator_x_and_y_of_different_lengths_name_both():
    with pytest.raises(ValueError) as exc:  # scikit-learn's own check on in-memory input
        SketchRidge(sketch=sketch()).fit(X, Y[:30])
    check_message(exc, "40", "30")
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=sketch()).fit(da.from_array(X, chunks=8), Y[:30])
    check_message(exc, "y has 30 rows", "X has 40")


# =================================================== float arguments
NOT_FLOATS = [["a"], [1.0, "b"], "big", None, {"a": 1}]


@pytest.mark.parametrize("bad", NOT_FLOATS, ids=repr)
@pytest.mark.parametrize("call,name", [
    (lambda v: SketchRidge(sketch=sketch(), alpha=v).fit(X, Y), "alpha"),
    (lambda v: SketchRidgeClassifier(sketch=sketch(), alpha=v).fit(X, LABELS), "alpha"),
    (lambda v: engine.fit_ridge(PHI, Y, alpha=v), "alpha"),
    (lambda v: engine.fit_path(PHI, Y, v), "alphas"),
], ids=["SketchRidge", "SketchRidgeClassifier", "fit_ridge", "fit_path"])
def test_float_arguments_name_the_argument(call, name, bad):
    """Never a bare "could not convert string to float": the argument is named."""
    with pytest.raises(ValueError) as exc:
        call(bad)
    check_message(exc, name)
    assert not str(exc.value).startswith("could not convert"), str(exc.value)


@pytest.mark.parametrize("n_folds", [2.5, 1, 0, True])
def test_fold_counts_are_integers_of_at_least_two(n_folds):
    with pytest.raises(InvalidInputError) as exc:
        engine.gram(PHI, Y, n_folds=n_folds)
    check_message(exc, "n_folds")


# =================================================== estimators: dask targets
@pytest.mark.parametrize("shape", ["1d", "2d"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_dask_y_names_y_and_the_global_row(shape, value):
    y = with_bad(Y, 17, value)
    y = y if shape == "1d" else np.stack([Y, y], axis=1)
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=sketch()).fit(da.from_array(X, chunks=8), da.from_array(y, chunks=8))
    check_message(exc, "y", "row 17")


def test_non_finite_numpy_y_with_dask_x_is_checked_too():
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=sketch()).fit(da.from_array(X, chunks=8), with_bad(Y, 9))
    check_message(exc, "y", "row 9")


def test_non_finite_dask_y_on_a_cluster(client):
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=sketch(), alpha=[0.1, 1.0], cv=3).fit(
            da.from_array(X, chunks=8), da.from_array(with_bad(Y, 33), chunks=8))
    check_message(exc, "y", "row 33")


def test_non_finite_dask_x_names_x_and_the_global_row():
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=sketch()).fit(da.from_array(with_bad(X, 26, col=3), chunks=8),
                                         da.from_array(Y, chunks=8))
    check_message(exc, "X", "row 26")


def test_classifier_nan_dask_labels_are_refused():
    with pytest.raises(InvalidInputError) as exc:
        SketchRidgeClassifier(sketch=sketch()).fit(
            da.from_array(X, chunks=8), da.from_array(with_bad(LABELS, 5), chunks=8))
    check_message(exc, "y", "row 5")


# ============================================ classifier: continuous labels
@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("y", [Y, Y * 100, LABELS + 0.5], ids=["normal", "scaled", "halves"])
def test_classifier_refuses_continuous_labels(y, lazy):
    Xi, yi = (da.from_array(X, chunks=8), da.from_array(y, chunks=8)) if lazy else (X, y)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        SketchRidgeClassifier(sketch=sketch()).fit(Xi, yi)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_classifier_accepts_integral_float_labels(lazy):
    y = LABELS.astype(np.float64)
    Xi, yi = (da.from_array(X, chunks=8), da.from_array(y, chunks=8)) if lazy else (X, y)
    clf = SketchRidgeClassifier(sketch=sketch()).fit(Xi, yi)
    np.testing.assert_array_equal(clf.classes_, [0.0, 1.0, 2.0])


def test_classifier_warns_when_labels_look_like_a_regression_target():
    y = np.arange(N) // 1  # 40 distinct integer labels in 40 rows
    with pytest.warns(UserWarning, match="greater than 50%"):
        SketchRidgeClassifier(sketch=sketch()).fit(da.from_array(X, chunks=8),
                                                   da.from_array(y, chunks=8))


# ============================================================ CV on few rows
@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("est", [SketchRidge, SketchRidgeClassifier])
def test_cv_needs_at_least_cv_rows(est, lazy):
    Xs, ys = X[:3], np.array([0, 1, 0])
    if lazy:
        Xs, ys = da.from_array(Xs, chunks=(2, -1)), da.from_array(ys, chunks=2)
    with pytest.raises(InvalidInputError) as exc:
        est(sketch=sketch(), alpha=[0.1, 1.0, 10.0], cv=5).fit(Xs, ys)
    check_message(exc, "cv=5", "n_samples=3")


def test_engine_path_needs_at_least_n_folds_rows():
    for form in ("feature", "sample"):
        with pytest.raises(InvalidInputError) as exc:
            engine.fit_path(PHI[:3], Y[:3], [0.1, 1.0], n_folds=5, form=form)
        check_message(exc, "n_folds=5", "n_samples=3")


def _empty_fold_case(n_folds=5):
    """(n, seed) with n ≥ n_folds rows whose hashed folds leave one empty."""
    for n in range(n_folds, 4 * n_folds):
        for seed in range(50):
            if np.bincount(engine.fold_ids(n, n_folds, seed), minlength=n_folds).min() == 0:
                return n, seed
    raise AssertionError("no empty-fold case found")  # pragma: no cover


def test_a_fold_left_empty_by_the_hash_is_refused():
    n, seed = _empty_fold_case()
    with pytest.raises(InvalidInputError) as exc:
        engine.fit_path(PHI[:n], Y[:n], [0.1, 1.0], n_folds=5, fold_seed=seed, form="feature")
    check_message(exc, "n_folds=5", "has no rows")
    with pytest.raises(InvalidInputError) as exc:
        engine.fit_path(PHI[:n], Y[:n], [0.1, 1.0], n_folds=5, fold_seed=seed, form="sample")
    check_message(exc, "has no rows")
    rff = RandomFourierFeatures(n_components=M, gamma=0.3, random_state=seed)
    with pytest.raises(InvalidInputError) as exc:
        SketchRidge(sketch=rff, alpha=[0.1, 1.0], cv=5).fit(X[:n], Y[:n])
    check_message(exc, "cv=5", "has no rows")


def test_check_folds_rule():
    check_folds(10, 5, [2, 2, 2, 2, 2])
    with pytest.raises(InvalidInputError, match="fold 3 of 5 has no rows"):
        check_folds(10, 5, [3, 3, 2, 0, 2])


def test_classifier_training_fold_with_one_class_is_refused():
    y = np.zeros(8, dtype=int)
    y[0] = 1  # the only row of class 1: its fold's training rows hold class 0 alone
    with pytest.raises(InvalidInputError) as exc:
        SketchRidgeClassifier(sketch=sketch(), alpha=[0.1, 1.0], cv=3).fit(X[:8], y)
    check_message(exc, "cv=3", "only class 0", "two classes")


def test_classifier_training_fold_lacking_a_class_warns():
    y = LABELS.copy()
    y[0] = 7  # a class with one row: absent from the training rows of its own fold
    msg = r"cv=3: the training rows of fold \d lack class\(es\) \[7\]"
    with pytest.warns(UserWarning, match=msg):
        SketchRidgeClassifier(sketch=sketch(), alpha=[0.1, 1.0], cv=3).fit(X, y)


def test_valid_cv_grid_still_fits_without_warnings_about_folds():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.filterwarnings("ignore", category=engine.AlphaGridWarning)
        clf = SketchRidgeClassifier(sketch=sketch(), alpha=[0.1, 1.0], cv=3).fit(X, LABELS)
    assert clf.alpha_ in (0.1, 1.0) and np.all(np.isfinite(clf.coef_))


# =================================================================== seeds
@pytest.mark.parametrize("rs", [1.5, "abc", -1, True])
def test_estimator_random_state_is_checked(rs):
    with pytest.raises(ValueError, match="random_state"):
        NTKSketch(n_components=8, random_state=rs).fit(X)


def test_random_state_none_draws_a_seed():
    a = NTKSketch(n_components=8, random_state=None).fit(X)
    assert isinstance(a.seed_, int) and a.seed_ >= 0


# ===================================================== exact-kernel ridge (issue 19)
from dsketch.engine.kernel_cg import fit_kernel_ridge  # noqa: E402
from dsketch.engine.kernel_ops import KernelFunction, MemoryKernel  # noqa: E402
from dsketch.estimators import KernelRidge, KernelRidgeClassifier  # noqa: E402


def _krr(cls, **kw):
    return cls(alpha=kw.pop("alpha", 1.0), random_state=0, rank=8, **kw)


def _target(cls):
    return LABELS if cls is KernelRidgeClassifier else Y


@pytest.mark.parametrize("cls", [KernelRidge, KernelRidgeClassifier])
@pytest.mark.parametrize("alpha", [[0.1, np.nan], [1.0, -1.0], [0.0, 1.0], ["a"], [[1.0, 2.0]]],
                         ids=["nan", "negative", "zero", "string", "2d"])
def test_kernel_ridge_alpha_grids_name_alpha(cls, alpha):
    with pytest.raises(ValueError) as exc:
        _krr(cls, alpha=alpha).fit(X, _target(cls))
    check_message(exc, "alpha")


@pytest.mark.parametrize("cls", [KernelRidge, KernelRidgeClassifier])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_kernel_ridge_non_finite_dask_x_names_x_and_the_row(cls, value):
    Xd = da.from_array(with_bad(X, 17, value), chunks=8)
    with pytest.raises(InvalidInputError) as exc:
        _krr(cls).fit(Xd, _target(cls))
    check_message(exc, "X", "17")


@pytest.mark.parametrize("cls", [KernelRidge, KernelRidgeClassifier])
def test_kernel_ridge_non_finite_numpy_input_is_refused(cls):
    with pytest.raises(ValueError, match="NaN"):
        _krr(cls).fit(with_bad(X, 3), _target(cls))
    if cls is KernelRidge:
        with pytest.raises(ValueError, match="NaN"):
            _krr(cls).fit(X, with_bad(Y, 5))


@pytest.mark.parametrize("cls", [KernelRidge, KernelRidgeClassifier])
def test_kernel_ridge_x_and_y_of_different_lengths_name_both(cls):
    with pytest.raises(InvalidInputError) as exc:
        _krr(cls).fit(da.from_array(X, chunks=8), _target(cls)[:30])
    check_message(exc, "y has 30 rows", "X has 40")


@pytest.mark.parametrize("cls", [KernelRidge, KernelRidgeClassifier])
def test_falkon_needs_at_most_n_centres(cls):
    with pytest.raises(InvalidInputError) as exc:
        _krr(cls, solver="falkon", n_components=50).fit(X, _target(cls))
    check_message(exc, "n_components=50", "X has 40")


def test_kernel_ridge_classifier_refuses_continuous_labels():
    with pytest.raises(ValueError, match="Unknown label type"):
        _krr(KernelRidgeClassifier).fit(X, Y)


@pytest.mark.parametrize("kw,name", [
    (dict(preconditioner="bogus"), "preconditioner"),
    (dict(preconditioner="sketch"), "features"),
    (dict(preconditioner="sketch", features=np.zeros((3, 2))), "features has 3 rows"),
    (dict(rank=0), "rank"),
    (dict(selection_rows=1, alphas=[0.1, 1.0]), "selection_rows"),
])
def test_fit_kernel_ridge_arguments_are_checked(kw, name):
    from dsketch.nets import Relu, fully_connected  # noqa: PLC0415 - this section only

    op = MemoryKernel(X, KernelFunction(fully_connected(1, Relu()), "ntk", (D,)), chunk=16)
    alphas = kw.pop("alphas", 1.0)
    with pytest.raises(InvalidInputError) as exc:
        fit_kernel_ridge(op, Y, alphas, **kw)
    check_message(exc, name)


def test_fit_kernel_ridge_targets_of_other_length_are_refused():
    from dsketch.nets import Relu, fully_connected  # noqa: PLC0415 - this section only

    op = MemoryKernel(X, KernelFunction(fully_connected(1, Relu()), "ntk", (D,)), chunk=16)
    with pytest.raises(InvalidInputError) as exc:
        fit_kernel_ridge(op, Y[:30], 1.0)
    check_message(exc, "y has 30 rows", "X has 40")
