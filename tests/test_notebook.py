"""examples/cluster_notebook.ipynb runs top to bottom (nbclient) against an embedded cluster.

The notebook is the "library import in a distributed notebook" use: connect, ingest, fit
with an alpha grid, progress, lazy predict, save, one exact-kernel fit
(``KernelRidgeClassifier``).  Here it runs with a small sketch in a temporary directory; the
model it saves must load (no pickle) and classify the digits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "cluster_notebook.ipynb"


def test_notebook_is_clean_and_valid():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code), \
        "commit the notebook without outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    text = "\n".join(c.source for c in code)
    for step in ("engine.connect(", "engine.ingest(", "alpha=ALPHAS", "TerminalProgress(",
                 ".predict(", "progress(", "save_model(", "load_model(", "KernelRidgeClassifier("):
        assert step in text, step


@pytest.mark.timeout(240)
def test_notebook_runs_on_an_embedded_cluster(tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setenv("DSKETCH_WORKDIR", str(work))
    monkeypatch.setenv("DSKETCH_N_FEATURES", "256")
    monkeypatch.delenv("DSKETCH_SCHEDULER", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)  # else it joins that cluster
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    outputs = "\n".join(
        o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
        for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "embedded cluster" in outputs or "Client" in outputs
    assert "alpha chosen by CV" in outputs and "test accuracy" in outputs
    krr = re.search(r"exact-kernel test accuracy: ([0-9.]+)", outputs)
    assert krr and float(krr.group(1)) > 0.9 and "residual per class" in outputs

    from dsketch import load_model

    model = load_model(work / "model")
    assert json.loads((work / "model" / "model.json").read_text())["estimator"]
    assert model.alpha_ in (1e-3, 1e-2, 1e-1, 1.0)
    X, y = (np.load(work / "test_X.npy"), np.load(work / "test_y.npy"))
    assert float(np.mean(model.predict(X) == y)) > 0.9
    assert (work / "predictions.zarr").is_dir()
