"""Torch-free post-processing dispatch: network outputs -> (image scores (B,), anomaly maps (B,h,w)).

Each model type has a module ``edgead.runtime.post_<model_type>`` with
``postprocess(outputs: dict[str, np.ndarray], artifact) -> (scores (B,), maps (B,h,w))``
(PUAD falls back to ``post_efficientad`` when there is no ``post_puad``). A module may set
``SUPPORTS_CUDA_ARRAYS = True`` to receive CUDA arrays (CuPy / torch CUDA) straight from the
backend and keep the work on the GPU with edgead._C kernels; otherwise outputs are copied to NumPy.

:func:`register` installs an override (used by tests and by third-party models).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import numpy as np

from edgead.runtime.backends import to_host

PostFn = Callable[[Dict[str, Any], Any], Tuple[Any, Any]]

_FALLBACK = {"puad": "efficientad"}
_OVERRIDES: Dict[str, Tuple[PostFn, bool]] = {}

__all__ = ["postprocess", "get_postprocessor", "register", "unregister"]


def register(model_type: str, fn: PostFn, supports_cuda_arrays: bool = False) -> Optional[Tuple[PostFn, bool]]:
    """Use `fn` for `model_type` instead of edgead.runtime.post_<model_type>; returns the previous override."""
    prev = _OVERRIDES.get(model_type)
    _OVERRIDES[model_type] = (fn, bool(supports_cuda_arrays))
    return prev


def unregister(model_type: str) -> None:
    _OVERRIDES.pop(model_type, None)


def get_postprocessor(model_type: str) -> Tuple[PostFn, bool]:
    """(postprocess function, whether it accepts CUDA arrays) for a model type."""
    if model_type in _OVERRIDES:
        return _OVERRIDES[model_type]
    tried = []
    for name in (model_type, _FALLBACK.get(model_type)):
        if name is None:
            continue
        modname = f"edgead.runtime.post_{name}"
        tried.append(modname)
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        fn = getattr(mod, "postprocess", None)
        if fn is None:
            raise ImportError(f"{modname} has no function postprocess(outputs, artifact)")
        return fn, bool(getattr(mod, "SUPPORTS_CUDA_ARRAYS", False))
    raise NotImplementedError(f"no post-processing for model type {model_type!r}: none of {tried} exists")


def postprocess(model_type: str, outputs: Mapping[str, Any], artifact, on_device: bool = False):
    """Dispatch to the model's post-processing. Returns NumPy (scores float32 (B,), maps float32 (B,h,w)).

    `on_device`: the outputs are CUDA arrays; they are passed as-is to modules that accept them,
    otherwise copied to the host first.
    """
    fn, cuda_ok = get_postprocessor(model_type)
    outs = dict(outputs)
    if not (on_device and cuda_ok):
        outs = {k: to_host(v) for k, v in outs.items()}
    scores, maps = fn(outs, artifact)
    scores = np.asarray(to_host(scores), dtype=np.float32).reshape(-1)
    maps = np.asarray(to_host(maps), dtype=np.float32)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3 or maps.shape[0] != scores.shape[0]:
        raise RuntimeError(
            f"post-processing for {model_type!r} returned scores {scores.shape} and maps {maps.shape}; "
            "expected (B,) and (B,H,W)"
        )
    return scores, maps
