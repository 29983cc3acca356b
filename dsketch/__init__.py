"""dsketch: distributed sketches of neural, polynomial and Gaussian kernels.

Exact kernels and seeded random-feature maps of infinitely wide networks (``dsketch.nets``),
randomized sketching primitives (``dsketch.sketch``), a Dask/Zarr engine (``dsketch.engine``)
and scikit-learn estimators (``dsketch.estimators``).
"""

__version__ = "0.1.0"
