"""Python API over edgead._C: one function per op, dispatching on the input's device.

Inputs may be NumPy arrays, CPU torch tensors (viewed as NumPy, no copy when contiguous), or CUDA
arrays (torch CUDA tensors, CuPy) which run on the GPU on the caller's current stream. Outputs are
allocated here on the input's device and framework. Importing this module does not import torch.
Plain NumPy/PyTorch versions of every op live in edgead.ops_reference (used by the tests).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgead import _arrays


def _C():
    from edgead import _ext

    return _ext()


def _prepare(op: str, **arrays: Any):
    """Convert inputs for the kernel; returns (converted dict, on_cuda, stream)."""
    out = {}
    cuda_flags = []
    for name, x in arrays.items():
        if x is None:
            out[name] = None
            continue
        x = _arrays.as_kernel_input(x, name, op)
        out[name] = x
        cuda_flags.append(_arrays.is_cuda_array(x))
    on_cuda = any(cuda_flags)
    if on_cuda and not all(cuda_flags):
        names = ", ".join(f"'{n}' on {'cuda' if _arrays.is_cuda_array(v) else 'cpu'}" for n, v in out.items() if v is not None)
        raise ValueError(f"{op}: all arrays must be on the same device, got {names}")
    stream = 0
    if on_cuda:
        first = next(v for v in out.values() if v is not None)
        stream = _arrays.current_stream(first)
    return out, on_cuda, stream


# ----------------------------------------------------------------------------------------------
# pro: per-region-overlap curve and AUPRO (csrc/pro)
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# knn: nearest memory-bank row per query (csrc/knn)
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# coreset: greedy k-center selection (csrc/coreset)
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# msgms: multi-scale gradient magnitude similarity anomaly map (csrc/msgms)
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# softmask: FADeR soft mask applied to skip features (csrc/softmask)
# ----------------------------------------------------------------------------------------------
