"""PatchCore post-processing after the exported network, torch-free (NumPy + edgead.ops + cv2).

    scores, maps = postprocess({"embeddings": emb}, artifact)    # emb: (B, N, D) float32

Mirrors edgead.models.patchcore.PatchCore.predict exactly (see that module's docstring):
nearest-bank distances with edgead.ops.knn (k=1), the paper's reweighting of the maximum patch score
with the precomputed `bank_neighbors` table, bilinear upsampling of the (grid_h, grid_w) patch scores
to the input size with cv2.resize INTER_LINEAR (= torch bilinear, align_corners=False, when
enlarging), Gaussian blur with cv2.GaussianBlur(ksize 2*ceil(4*sigma)+1, sigma,
BORDER_REFLECT_101) (= the torch version's reflect-101 padding).

Inputs are host (NumPy) arrays; device arrays exposing __array__ are copied to the host.
The artifact's bank is cached on the artifact object (float32, C-contiguous) on first use.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Tuple

import cv2
import numpy as np

__all__ = ["postprocess", "reweight_scores", "anomaly_maps"]


def _bank(artifact) -> Tuple[np.ndarray, np.ndarray]:
    cache = getattr(artifact, "_patchcore_cache", None)
    if cache is None:
        t = artifact.tensors
        if "memory_bank" not in t or "bank_neighbors" not in t:
            raise ValueError("postprocess(patchcore): artifact lacks 'memory_bank' or 'bank_neighbors'")
        cache = (np.ascontiguousarray(t["memory_bank"], dtype=np.float32), np.ascontiguousarray(t["bank_neighbors"], dtype=np.int64))
        try:
            artifact._patchcore_cache = cache
        except AttributeError:  # pragma: no cover - frozen objects
            pass
    return cache


def reweight_scores(s_star: np.ndarray, d_neighbors: np.ndarray) -> np.ndarray:
    """w * s*, w = 1 - exp(s*) / sum_j exp(d_j), evaluated with the max subtracted. (B,), (B, b) -> (B,)."""
    s_star = np.asarray(s_star, dtype=np.float32)
    d = np.asarray(d_neighbors, dtype=np.float32)
    m = np.maximum(s_star, d.max(axis=1))
    w = np.float32(1.0) - np.exp(s_star - m) / np.exp(d - m[:, None]).sum(axis=1)
    return (w * s_star).astype(np.float32)


def anomaly_maps(patch_scores: np.ndarray, size: Tuple[int, int], sigma: float) -> np.ndarray:
    """(B, gh, gw) -> (B, H, W): INTER_LINEAR upsampling then Gaussian blur (reflect-101 border)."""
    h, w = int(size[0]), int(size[1])
    out = np.empty((patch_scores.shape[0], h, w), dtype=np.float32)
    k = 2 * int(math.ceil(4.0 * float(sigma))) + 1 if sigma and sigma > 0 else 0
    for i, p in enumerate(patch_scores):
        m = cv2.resize(np.ascontiguousarray(p, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        if k:
            m = cv2.GaussianBlur(m, (k, k), float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT_101)
        out[i] = m
    return out


def postprocess(outputs: Mapping[str, Any], artifact) -> Tuple[np.ndarray, np.ndarray]:
    """outputs: {"embeddings": (B, N, D)} of the exported PatchCore network -> (scores (B,), maps (B,H,W))."""
    from edgead import ops

    if "embeddings" not in outputs:
        raise ValueError(f"postprocess(patchcore): outputs must contain 'embeddings', got {sorted(outputs)}")
    emb = np.ascontiguousarray(np.asarray(outputs["embeddings"]), dtype=np.float32)
    cfg = artifact.config
    gh, gw = (int(v) for v in cfg["grid"])
    bank, neigh = _bank(artifact)
    if emb.ndim != 3 or emb.shape[1] != gh * gw or emb.shape[2] != bank.shape[1]:
        raise ValueError(
            f"postprocess(patchcore): 'embeddings' expected (B, {gh * gw}, {bank.shape[1]}), got {emb.shape}"
        )
    b, n, d = emb.shape
    dist, idx = ops.knn(emb.reshape(b * n, d), bank, k=1)
    dist = np.asarray(dist, dtype=np.float32).reshape(b, n)
    idx = np.asarray(idx, dtype=np.int64).reshape(b, n)
    if (idx < 0).any() or not np.isfinite(dist).all():  # never index the bank with -1
        raise ValueError("postprocess(patchcore): knn found no finite nearest bank row for some embeddings "
                         "(float32 overflow of the squared norms); the network's embeddings are out of range")
    arg = dist.argmax(axis=1)
    rows = np.arange(b)
    s_star = dist[rows, arg]
    if int(cfg.get("num_neighbors", 9)) <= 1 or neigh.shape[1] <= 1:
        scores = s_star.astype(np.float32)
    else:
        m_test = emb[rows, arg]  # (B, D)
        nb = neigh[idx[rows, arg]]  # (B, b)
        diff = m_test[:, None, :] - bank[nb]
        d_nb = np.sqrt((diff * diff).sum(axis=-1, dtype=np.float32))
        scores = reweight_scores(s_star, d_nb)
    size = artifact.preprocessing["size"]
    maps = anomaly_maps(dist.reshape(b, gh, gw), (int(size[0]), int(size[1])), float(cfg.get("blur_sigma", 4.0)))
    return scores, maps
