"""Shared GPU test helpers: CuPy with a usable CUDA device, or None (tests then skip)."""


def cupy_or_none():
    """The ``cupy`` module when it imports and sees a CUDA device, else ``None``."""
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        return None
