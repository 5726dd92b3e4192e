"""edgead: industrial visual anomaly detection with CUDA kernels and a torch-free runtime.

Importing edgead (and edgead.ops, edgead.metrics, edgead.runtime) never imports torch;
torch is needed only for training (edgead.models) and the torch backend.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_info", "cuda_available", "cuda_status"]


def _ext():
    try:
        from edgead import _C
    except ImportError as e:  # pragma: no cover - only when the package was not built
        raise ImportError(
            "edgead._C (the native extension) is missing: install edgead with "
            "`pip install .` (scikit-build-core builds it)"
        ) from e
    return _C


def build_info() -> dict:
    """What the native extension was compiled with: version, CUDA version/architectures, OpenMP, ops."""
    return dict(_ext().build_info())


def cuda_available() -> bool:
    """True when edgead's CUDA kernels were built and a GPU can be used now."""
    C = _ext()
    return bool(C.build_info()["cuda"]) and C.cuda_device_count() > 0


def cuda_status() -> str:
    """Empty string when a GPU can be used, otherwise the reason why not."""
    return _ext().cuda_status()
