"""ZCA whitening (``dsketch.engine.fit_zca`` / ``apply_zca``) and ``CNTKSketch(zca_regularization=)``.

References are independent of the code under test: the inverse square root by SciPy's
``sqrtm``/``inv``, NumPy's ``np.cov``, and the net's own features and exact kernel of
images whitened by hand.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.linalg
from sklearn.base import clone

from dsketch import SketchRidgeClassifier, load_model, save_model
from dsketch.backend import InvalidInputError
from dsketch.engine import apply_zca, fit_zca
from dsketch.estimators import CNTKSketch
from dsketch.nets import myrtle


def _images(n=240, seed=0):
    """Images with correlated pixels and unequal variances (a smooth random field)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, 8, 8, 1))
    smooth = (raw + np.roll(raw, 1, axis=1) + np.roll(raw, 1, axis=2)) * np.linspace(0.2, 2.0, 64).reshape(1, 8, 8, 1)
    return (smooth + 0.3).astype(np.float32)


def test_zca_is_the_regularized_inverse_square_root_of_the_covariance():
    X = _images().astype(np.float64)
    flat = X.reshape(len(X), -1)
    C = np.cov(flat, rowvar=False, bias=True)
    for eps in (1e-6, 0.1, 1.0):
        mean, W = fit_zca(X, eps)
        np.testing.assert_allclose(mean, flat.mean(axis=0), rtol=1e-12, atol=1e-12)
        reg = C + eps * np.trace(C) / len(C) * np.eye(len(C))
        want = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(reg)))
        np.testing.assert_allclose(W, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
        np.testing.assert_array_equal(W, W.T)
        Z = apply_zca(X, mean, W).reshape(len(X), -1)
        assert Z.dtype == X.dtype and abs(Z.mean(axis=0)).max() < 1e-9
        # whitened covariance: C (C + εs̄I)⁻¹, the identity as ε → 0
        np.testing.assert_allclose(np.cov(Z, rowvar=False, bias=True), C @ np.linalg.inv(reg), atol=1e-6)
    assert np.abs(np.cov(Z, rowvar=False, bias=True) - np.eye(64)).max() > 0.1  # ε = 1 is not full


def test_zca_fit_on_dask_equals_numpy_and_whitened_rows_are_chunk_and_batch_invariant():
    X = _images()
    mean, W = fit_zca(X, 1.0)
    for chunks in (240, 97, 13):
        Xd = da.from_array(X, chunks=(chunks, 8, 8, 1))
        m2, W2 = fit_zca(Xd, 1.0)
        np.testing.assert_allclose(m2, mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(W2, W, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(apply_zca(Xd, mean, W).compute(), apply_zca(X, mean, W))
    whole = apply_zca(X, mean, W)
    assert whole.dtype == np.float32 and whole.shape == X.shape
    for rows in (slice(0, 1), slice(5, 12), slice(200, 240)):  # a row's bits do not depend on its batch
        np.testing.assert_array_equal(apply_zca(X[rows], mean, W), whole[rows])


def test_zca_bad_input_is_refused_naming_what_is_wrong():
    X = _images(20)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidInputError, match="regularization must be a positive number"):
            fit_zca(X, bad)
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        fit_zca(X[:1], 1.0)
    with pytest.raises(InvalidInputError, match="do not vary"):
        fit_zca(np.ones((10, 4, 4, 1)), 1.0)
    mean, W = fit_zca(X, 1.0)
    with pytest.raises(InvalidInputError, match="width 64 applied to rows of width 16"):
        apply_zca(np.zeros((3, 4, 4, 1)), mean, W)


def test_cntk_sketch_with_zca_is_the_nets_sketch_and_kernel_of_whitened_images(tmp_path):
    X = _images(60)
    y = (X[:, :4].mean(axis=(1, 2, 3)) > X[:, 4:].mean(axis=(1, 2, 3))).astype(int)
    sk = CNTKSketch(n_components=128, random_state=2, zca_regularization=1.0).fit(X)
    mean, W = fit_zca(X, 1.0)
    np.testing.assert_array_equal(sk.zca_mean_, mean)
    np.testing.assert_array_equal(sk.zca_matrix_, W)
    Z = apply_zca(X, mean, W)
    net = myrtle(5)
    want = net.sketch(X.shape[1:], 128, seed=2, hidden_features=128, hidden_degree=2)(Z).ntk
    np.testing.assert_array_equal(sk.transform(X), np.asarray(want))
    np.testing.assert_allclose(sk.exact_kernel(X[:6]), net.kernel(Z[:6], get="ntk"), rtol=1e-12)
    # the sketch approximates the whitened images' CNTK, better as m grows
    K = sk.exact_kernel(X[:30])
    errs = []
    for m in (64, 1024):
        F = CNTKSketch(n_components=m, random_state=0, zca_regularization=1.0).fit(X).transform(X[:30])
        errs.append(np.linalg.norm(F.astype(np.float64) @ F.T - K) / np.linalg.norm(K))
    assert errs[1] < 0.6 * errs[0], errs
    # flat rows with image_shape; dask input gives the same features
    flat = CNTKSketch(n_components=128, random_state=2, zca_regularization=1.0, image_shape=(8, 8, 1))
    np.testing.assert_array_equal(flat.fit(X.reshape(60, -1)).transform(X.reshape(60, -1)), sk.transform(X))
    np.testing.assert_array_equal(sk.transform(da.from_array(X, chunks=(17, 8, 8, 1))).compute(), sk.transform(X))
    # a saved classifier keeps the whitening; a refit without it drops it
    clf = SketchRidgeClassifier(sketch=clone(sk), alpha=1e-2, cv=None).fit(X, y)
    save_model(clf, tmp_path / "m")
    back = load_model(tmp_path / "m")
    np.testing.assert_array_equal(back.sketch_.zca_matrix_, W)
    np.testing.assert_array_equal(back.decision_function(X), clf.decision_function(X))
    sk.set_params(zca_regularization=None).fit(X)
    assert not hasattr(sk, "zca_matrix_")
    np.testing.assert_array_equal(sk.transform(X), np.asarray(net.sketch(X.shape[1:], 128, seed=2,
                                  hidden_features=128, hidden_degree=2)(X).ntk))


def test_cntk_sketch_zca_state_and_parameter_are_checked():
    X = _images(30)
    with pytest.raises(ValueError, match="zca_regularization"):
        CNTKSketch(zca_regularization=0.0).fit(X)
    sk = CNTKSketch(n_components=32, random_state=0, zca_regularization=0.5).fit(X)
    sk.check_fitted_state()
    sk.zca_matrix_ = sk.zca_matrix_[:10, :10]
    with pytest.raises(ValueError, match=r"zca_matrix_ must be a finite float array of shape \(64, 64\)"):
        sk.check_fitted_state()
    plain = CNTKSketch(n_components=32, random_state=0).fit(X)
    plain.zca_mean_ = np.zeros(64)
    with pytest.raises(ValueError, match="zca_regularization is None"):
        plain.check_fitted_state()
