"""Torch-free post-processing of the exported EfficientAD / PUAD graph (also used for model_type "puad").

The exported module already does everything (teacher/student/autoencoder, map normalisation,
combination, padding + resize, image score, and PUAD's Mahalanobis head), so this only validates and
reshapes its two outputs: "score" (B,) and "map" (B, H, W) (a (B, 1, H, W) map is accepted too).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Tuple, Union

import numpy as np

__all__ = ["OUTPUTS", "postprocess"]

OUTPUTS = ("score", "map")


def postprocess(outputs: Union[Mapping[str, Any], Sequence[Any]], artifact: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """outputs: {"score": (B,), "map": (B,H,W)} or the sequence (score, map) -> (scores float32 (B,), maps float32 (B,H,W)).

    `artifact` is accepted for the common post-processing signature and not needed.
    Arrays may be NumPy arrays or anything np.asarray understands (host memory).
    """
    if isinstance(outputs, Mapping):
        missing = [k for k in OUTPUTS if k not in outputs]
        if missing:
            raise ValueError(f"outputs: expected keys {OUTPUTS}, missing {missing} (got {sorted(outputs)})")
        score, amap = outputs["score"], outputs["map"]
    else:
        seq = list(outputs)
        if len(seq) != 2:
            raise ValueError(f"outputs: expected 2 arrays (score, map), got {len(seq)}")
        score, amap = seq
    scores = np.ascontiguousarray(np.asarray(score), dtype=np.float32).reshape(-1)
    maps = np.asarray(amap)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"outputs['map']: expected (B, H, W) or (B, 1, H, W), got shape {np.shape(amap)}")
    if maps.shape[0] != scores.shape[0]:
        raise ValueError(f"outputs: {scores.shape[0]} scores but {maps.shape[0]} maps")
    return scores, np.ascontiguousarray(maps, dtype=np.float32)
