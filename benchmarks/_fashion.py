"""Fashion-MNIST for the real-data benchmarks: loading and the shared protocol.

Data: Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``,
the original idx files; ``apt-get install dataset-fashion-mnist``).  Protocol (issue 13):
pixels/255 minus the training mean pixel, divided by one scalar so that the mean of
‖x‖²/d over the training rows is 1; seeded training subsets; the 10,000 test rows.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

ROOT = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def available() -> bool:
    """True when the idx files are installed."""
    return all((ROOT / f).exists() for pair in FILES.values() for f in pair)


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset)


def load(images: bool = False):
    """``(Xtr, ytr, Xte, yte)`` preprocessed as the protocol says (float64).

    ``images=True`` returns ``(n, 28, 28, 1)`` images instead of 784-wide rows.
    """
    if not available():
        raise FileNotFoundError(f"Fashion-MNIST not found under {ROOT} "
                                "(apt-get install dataset-fashion-mnist, or set FASHION_MNIST_DIR)")
    out = []
    for split in ("train", "test"):
        img, lab = FILES[split]
        X = _read_idx(ROOT / img, 16).reshape(-1, 784).astype(np.float64) / 255.0
        out += [X, _read_idx(ROOT / lab, 8).astype(np.int64)]
    Xtr, ytr, Xte, yte = out
    mean = Xtr.mean(axis=0)
    Xtr -= mean
    Xte -= mean
    scale = np.sqrt(np.mean(np.sum(Xtr * Xtr, axis=1)) / Xtr.shape[1])
    Xtr /= scale
    Xte /= scale
    if images:
        Xtr, Xte = Xtr.reshape(-1, 28, 28, 1), Xte.reshape(-1, 28, 28, 1)
    return Xtr, ytr, Xte, yte


def subset(n: int, seed: int = 0, n_total: int = 60000) -> np.ndarray:
    """Sorted indices of a seeded ``n``-row training subset."""
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:n])


def pool2(X: np.ndarray) -> np.ndarray:
    """2×2 average pooling of ``(n, H, W, C)`` images (28×28 → 14×14)."""
    n, h, w, c = X.shape
    return X.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
