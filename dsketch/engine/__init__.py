"""Dask and Zarr: dataset I/O, the embed graph, streaming reductions, solvers, clusters.

Public API: :func:`connect`,
:func:`dashboard_link`, :class:`Dataset`, :func:`open_dataset`, :func:`ingest`,
:func:`write_array`, :func:`validate_rows`, :func:`embed`, :class:`FitReport`,
:class:`Gram`, :func:`gram`, :func:`solve_gram`, :func:`fit_ridge`, :func:`predict`,
:func:`fold_ids`, :func:`fold_class_counts`, :func:`leverage_scores`, :func:`take_rows`,
:func:`fit_zca` / :func:`apply_zca` (ZCA whitening of image rows);
the exact-kernel solvers :func:`fit_kernel_ridge` (full kernel, PCG) and :func:`fit_falkon`
over :func:`make_kernel` operators, returning :class:`RidgeFit`; and the one ridge entry
the estimators call, :func:`fit_ridge_model` (features or a :class:`KernelSystem` in, the
solver chosen and said why).  No kernel maths lives here: feature maps come from ``dsketch.nets`` and
``dsketch.sketch`` and travel through the graph as small hashable specs.
"""

from .cg import choose_persist
from .cluster import connect, dashboard_link, machine_size, show_progress, worker_memory
from .dataset import Dataset, open_dataset, validate_rows
from .graph import embed, task_word, to_gpu
from .ingest import ingest, write_array
from .falkon import fit_falkon
from .kernel_cg import fit_kernel_ridge, select_alpha
from .kernel_ops import KernelFunction, kernel_predict, make_kernel
from .landmarks import leverage_scores, take_rows
from .passes import Gram, fold_class_counts, fold_ids, gram
from .ridge import KernelSystem, fit_ridge_model
from .whitening import apply_zca, fit_zca
from .solve import (AlphaGridWarning, FitReport, RidgeFit, RidgePath, choose_solver, fit_path,
                    fit_ridge, predict, predict_std, ridge_path, solve_gram)

__all__ = [
    "connect", "dashboard_link", "machine_size", "show_progress", "worker_memory",
    "embed", "task_word", "to_gpu",
    "Dataset", "ingest", "open_dataset", "validate_rows", "write_array",
    "FitReport", "Gram", "gram", "solve_gram", "fit_ridge", "predict", "fold_ids", "fold_class_counts",
    "choose_solver", "choose_persist", "ridge_path", "RidgePath", "predict_std",
    "fit_path", "AlphaGridWarning",
    "leverage_scores", "take_rows",
    "RidgeFit", "fit_kernel_ridge", "fit_falkon", "select_alpha", "KernelFunction",
    "make_kernel", "kernel_predict", "fit_ridge_model", "KernelSystem",
    "fit_zca", "apply_zca",
]
