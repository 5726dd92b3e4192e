"""Array plumbing shared by ops.py and the runtime: device detection and CUDA streams, without importing torch."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_torch_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cuda_array(x: Any) -> bool:
    if is_torch_tensor(x):
        return x.is_cuda
    return hasattr(x, "__cuda_array_interface__")


def current_stream(x: Any) -> int:
    """The CUDA stream the caller's framework is using for `x` (0 = legacy default stream)."""
    if is_torch_tensor(x):
        torch = sys.modules["torch"]
        return int(torch.cuda.current_stream(x.device).cuda_stream)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return int(cupy.cuda.get_current_stream().ptr)
    return 0


def as_kernel_input(x: Any, name: str, op: str):
    """NumPy arrays and CUDA arrays pass through; CPU torch tensors become NumPy views.

    Lists and scalars are converted with np.asarray; anything else raises TypeError naming `name`.
    """
    if is_torch_tensor(x):
        if x.requires_grad:
            x = x.detach()
        if x.is_cuda:
            return x
        if x.device.type != "cpu":
            raise TypeError(f"{op}: argument '{name}' is a torch tensor on {x.device}; expected cpu or cuda")
        return x.numpy()
    if isinstance(x, np.ndarray) or hasattr(x, "__cuda_array_interface__"):
        return x
    if isinstance(x, (list, tuple, float, int)):
        return np.asarray(x)
    raise TypeError(f"{op}: argument '{name}' expected a NumPy array, torch tensor or CUDA array, got {type(x).__name__}")


def empty_like_device(ref: Any, shape, dtype: str):
    """Allocate an output on the same device and framework as `ref` (caller-allocated outputs)."""
    if is_torch_tensor(ref):
        torch = sys.modules["torch"]
        return torch.empty(tuple(shape), dtype=getattr(torch, dtype), device=ref.device)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(ref, cupy.ndarray):
        with cupy.cuda.Device(ref.device.id):
            return cupy.empty(tuple(shape), dtype=dtype)
    if hasattr(ref, "__cuda_array_interface__"):
        raise TypeError(f"cannot allocate an output next to a {type(ref).__name__}; pass torch or CuPy arrays")
    return np.empty(tuple(shape), dtype=dtype)
