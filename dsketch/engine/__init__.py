"""Dask and Zarr: dataset I/O, the embed graph, streaming reductions, solvers, clusters.

Public API (agreed with the user layer, see ``ENGINE_API``): :func:`connect`,
:func:`dashboard_link`, :class:`Dataset`, :func:`open_dataset`, :func:`ingest`,
:func:`write_array`, :func:`validate_rows`, :func:`embed`, :class:`FitReport`,
:class:`Gram`, :func:`gram`, :func:`solve_gram`, :func:`fit_ridge`, :func:`predict`,
:func:`fold_ids`.  No kernel maths lives here: feature maps come from ``dsketch.nets`` and
``dsketch.sketch`` and travel through the graph as small hashable specs.
"""

from .cluster import PeakRSS, connect, dashboard_link, machine_size, show_progress, worker_memory
from .graph import embed, task_word, to_gpu
from .io import Dataset, ingest, open_dataset, validate_rows, write_array
from .solve import (FitReport, Gram, choose_persist, choose_solver, fit_ridge, fold_ids, gram,
                    predict, solve_gram)

__all__ = [
    "connect", "dashboard_link", "PeakRSS", "machine_size", "show_progress", "worker_memory",
    "embed", "task_word", "to_gpu",
    "Dataset", "ingest", "open_dataset", "validate_rows", "write_array",
    "FitReport", "Gram", "gram", "solve_gram", "fit_ridge", "predict", "fold_ids",
    "choose_solver", "choose_persist",
]
