"""FADeR post-processing, torch-free (NumPy + edgead._C): network outputs -> (scores, anomaly maps).

The exported FADeR network (``FADeR.export_module()``) outputs

* ``reconstruction``  (B, C, H, W) float32 in [0, 1]: the inpainted reconstruction,
* ``original``        (B, C, H, W) float32 in [0, 1]: the network input passed through,

and this module scores them as the paper does: anomaly map = MSGMS map between original and
reconstruction (``edgead.ops.msgms_map``: 4 scales, Prewitt/3 gradients, c=0.0026, 1-MSGMS,
21x21 mean filter; definition pinned in docs/msgms.md), image score = max of the map.

Arrays may be NumPy or device arrays (torch CUDA / CuPy): ops.msgms_map dispatches on the device.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

OUTPUTS = ("reconstruction", "original")
#: ops.msgms_map runs on the arrays' device, so CUDA outputs stay on the GPU
SUPPORTS_CUDA_ARRAYS = True
DEFAULTS = {"msgms_c": 0.0026, "msgms_scales": 4, "msgms_mean_filter": 21}


def _params(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    p = dict(DEFAULTS)
    for k in DEFAULTS:
        if config is not None and k in config and config[k] is not None:
            p[k] = config[k]
    return p


def msgms_map(image, reconstruction, c: float = 0.0026, scales: int = 4, mean_filter: int = 21):
    """edgead.ops.msgms_map (CPU or CUDA kernel, definition pinned in docs/msgms.md)."""
    from edgead import ops

    return ops.msgms_map(image, reconstruction, c=c, scales=scales, mean_filter=mean_filter)


def _get(outputs: Union[Mapping[str, Any], Sequence[Any]], name: str, index: int):
    if isinstance(outputs, Mapping):
        if name not in outputs:
            raise ValueError(f"post_fader.postprocess: outputs lack '{name}'; got {sorted(outputs)}")
        return outputs[name]
    if len(outputs) < len(OUTPUTS):
        raise ValueError(f"post_fader.postprocess: expected outputs {OUTPUTS}, got {len(outputs)} arrays")
    return outputs[index]


def _amax(maps):
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    if hasattr(flat, "amax") and not isinstance(flat, np.ndarray):  # torch tensor (CUDA array path)
        return flat.amax(1)
    return flat.max(axis=1)


def postprocess(outputs: Union[Mapping[str, Any], Sequence[Any]], artifact: Any = None) -> Tuple[Any, Any]:
    """(reconstruction, original) -> (scores (B,), maps (B,H,W)) float32.

    ``outputs``: dict by output name or a sequence in ``OUTPUTS`` order. ``artifact``: an
    edgead.artifact.Artifact, or its config dict, or None (paper defaults)."""
    config = getattr(artifact, "config", artifact)
    p = _params(config if isinstance(config, Mapping) else None)
    rec = _get(outputs, "reconstruction", 0)
    orig = _get(outputs, "original", 1)
    if isinstance(rec, np.ndarray) or isinstance(orig, np.ndarray):
        rec = np.ascontiguousarray(rec, dtype=np.float32)
        orig = np.ascontiguousarray(orig, dtype=np.float32)
    if tuple(rec.shape) != tuple(orig.shape) or len(rec.shape) != 4:
        raise ValueError(
            f"post_fader.postprocess: 'reconstruction' and 'original' must be (B,C,H,W) of equal shape, "
            f"got {tuple(rec.shape)} and {tuple(orig.shape)}"
        )
    maps = msgms_map(orig, rec, c=float(p["msgms_c"]), scales=int(p["msgms_scales"]),
                     mean_filter=int(p["msgms_mean_filter"]))
    return _amax(maps), maps
