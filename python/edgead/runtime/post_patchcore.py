"""PatchCore post-processing after the exported network, torch-free (NumPy + edgead.ops + cv2).

    scores, maps = postprocess({"embeddings": emb}, artifact)    # emb: (B, N, D) float32

Mirrors edgead.models.patchcore.PatchCore.predict exactly (see that module's docstring):
nearest-bank distances with edgead.ops.knn (k=1), the paper's reweighting of the maximum patch score
with the precomputed `bank_neighbors` table, bilinear upsampling of the (grid_h, grid_w) patch scores
to the input size with cv2.resize INTER_LINEAR (= torch bilinear, align_corners=False, when
enlarging), Gaussian blur with cv2.GaussianBlur(ksize 2*ceil(4*sigma)+1, sigma,
BORDER_REFLECT_101) (= the torch version's reflect-101 padding).

Inputs may be NumPy arrays or device arrays (torch CUDA tensors, CuPy: ``SUPPORTS_CUDA_ARRAYS``):
the kNN over the memory bank -- the only heavy step -- then runs on that device (edgead.ops.knn
dispatches to the CUDA kernel on the caller's stream, against a copy of the bank and its squared
norms cached per device -- host included -- on the artifact object); only its (B, N) distances / indices and the B
arg-max embeddings are copied to the host for the reweighting, upsampling and blur (cv2).
The artifact's host bank is cached on the artifact object (float32, C-contiguous) on first use.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Tuple

import cv2
import numpy as np

__all__ = ["postprocess", "reweight_scores", "anomaly_maps", "SUPPORTS_CUDA_ARRAYS"]

#: postprocess() takes the backend's CUDA arrays as they are: the kNN runs on their device
SUPPORTS_CUDA_ARRAYS = True


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


def _bank_like(artifact, emb) -> Tuple[Any, Any]:
    """(bank, ||bank||^2) in the framework and on the device of `emb` (NumPy, torch CPU/CUDA, CuPy), cached on
    the artifact per device: the bank is copied to a GPU once and its squared norms are computed once."""
    from edgead import ops

    bank, _ = _bank(artifact)
    torch = sys.modules.get("torch")
    if isinstance(emb, np.ndarray):
        key, make = ("numpy",), (lambda: bank)
    elif torch is not None and isinstance(emb, torch.Tensor):
        key, make = ("torch", str(emb.device)), (lambda: torch.from_numpy(bank).to(emb.device))
    else:  # a CuPy array (TensorRT backend outputs)
        cupy = sys.modules["cupy"]
        key, make = ("cupy", int(emb.device.id)), (lambda: cupy.asarray(bank))
    cache = getattr(artifact, "_patchcore_bank_cache", None)
    if cache is None:
        cache = {}
        try:
            artifact._patchcore_bank_cache = cache
        except AttributeError:  # pragma: no cover - frozen objects
            pass
    if key not in cache:
        x = make()
        cache[key] = (x, ops.knn_bank_sq_norms(x))
    return cache[key]


def _host(a) -> np.ndarray:
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    return a.detach().cpu().numpy()


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
    emb = outputs["embeddings"]
    # torch tensors (CUDA, or CPU) and CUDA arrays stay in their framework up to the kNN
    on_device = not isinstance(emb, np.ndarray) and (hasattr(emb, "__cuda_array_interface__") or
                                                     type(emb).__module__.split(".")[0] == "torch")
    if not on_device:
        emb = np.ascontiguousarray(np.asarray(emb), dtype=np.float32)
    cfg = artifact.config
    gh, gw = (int(v) for v in cfg["grid"])
    bank, neigh = _bank(artifact)
    if len(emb.shape) != 3 or emb.shape[1] != gh * gw or emb.shape[2] != bank.shape[1]:
        raise ValueError(
            f"postprocess(patchcore): 'embeddings' expected (B, {gh * gw}, {bank.shape[1]}), got {tuple(emb.shape)}"
        )
    b, n, d = (int(v) for v in emb.shape)
    if on_device and str(getattr(emb, "dtype", "")).replace("torch.", "") != "float32":
        emb = emb.float() if hasattr(emb, "float") else emb.astype("float32")
    if on_device and hasattr(emb, "contiguous"):
        emb = emb.contiguous()
    # kNN where the embeddings are (GPU for CUDA arrays); only (B, N) results come back to the host
    bank_x, norms = _bank_like(artifact, emb)
    dist, idx = ops.knn(emb.reshape(b * n, d), bank_x, k=1, bank_sq_norms=norms)
    dist = _host(dist).astype(np.float32, copy=False).reshape(b, n)
    idx = _host(idx).astype(np.int64, copy=False).reshape(b, n)
    if (idx < 0).any() or not np.isfinite(dist).all():  # never index the bank with -1
        raise ValueError("postprocess(patchcore): knn found no finite nearest bank row for some embeddings "
                         "(float32 overflow of the squared norms); the network's embeddings are out of range")
    arg = dist.argmax(axis=1)
    rows = np.arange(b)
    s_star = dist[rows, arg]
    if int(cfg.get("num_neighbors", 9)) <= 1 or neigh.shape[1] <= 1:
        scores = s_star.astype(np.float32)
    else:
        m_test = emb[rows, arg] if not on_device else np.stack([_host(emb[int(r), int(a)]) for r, a in zip(rows, arg)])
        nb = neigh[idx[rows, arg]]  # (B, b)
        diff = m_test[:, None, :] - bank[nb]
        d_nb = np.sqrt((diff * diff).sum(axis=-1, dtype=np.float32))
        scores = reweight_scores(s_star, d_nb)
    size = artifact.preprocessing["size"]
    maps = anomaly_maps(dist.reshape(b, gh, gw), (int(size[0]), int(size[1])), float(cfg.get("blur_sigma", 4.0)))
    return scores, maps
