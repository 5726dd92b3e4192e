"""Plain NumPy / PyTorch reference implementations of every edgead op, for tests.

Written for clarity, not speed; each mirrors the definition the kernel implements.
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# pro
# ----------------------------------------------------------------------------------------------

# ----------------------------------------------------------------------------------------------
# knn
# ----------------------------------------------------------------------------------------------


def knn_reference(queries, bank, k: int = 1):
    """Brute-force float64 k-NN: (distances float64 (Q, k) = L2, indices int64 (Q, k)), sorted by
    (distance, index) so ties go to the lowest bank index. Inputs are upcast to float64 as given
    (float16 values exactly)."""
    q = np.asarray(queries, dtype=np.float64)
    b = np.asarray(bank, dtype=np.float64)
    if not 1 <= k <= b.shape[0]:
        raise ValueError(f"knn_reference: argument 'k' expected 1 <= k <= {b.shape[0]}, got {k}")
    d2 = ((q[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (Q, M), fine for test sizes
    idx = np.argsort(d2, axis=1, kind="stable")[:, :k]  # stable: equal distances keep index order
    return np.sqrt(np.take_along_axis(d2, idx, 1)), idx.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# coreset
# ----------------------------------------------------------------------------------------------


def coreset_reference(features, n: int, start: int = 0, return_distances: bool = False):
    """Plain NumPy float64 greedy k-center: idx[0] = start, then repeatedly the point with the largest
    distance to the selected set (np.argmax: ties -> lowest index). dist[s] = that distance, dist[0] = inf."""
    x = np.asarray(features, dtype=np.float64)
    N = x.shape[0]
    if not 1 <= n <= N:
        raise ValueError(f"coreset_reference: argument 'n' expected 1 <= n <= {N}, got {n}")
    mind = np.full(N, np.inf)
    idx = np.empty(n, np.int64)
    dist = np.empty(n, np.float64)
    idx[0], dist[0] = start, np.inf
    for s in range(1, n):
        d2 = ((x - x[idx[s - 1]]) ** 2).sum(1)
        np.minimum(mind, d2, out=mind)
        idx[s] = int(np.argmax(mind))
        dist[s] = np.sqrt(mind[idx[s]])
    return (idx, dist) if return_distances else idx


# ----------------------------------------------------------------------------------------------
# msgms
# ----------------------------------------------------------------------------------------------


def msgms_map_reference(image, reconstruction, c: float = 0.0026, scales: int = 4, mean_filter: int = 21):
    """MSGMS anomaly map in plain torch (definition pinned in docs/msgms.md); (B, H, W) float32.

    Accepts torch tensors or NumPy arrays (B, C, H, W); computes in float32 on their device.
    """
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(image).float()
    y = torch.as_tensor(reconstruction).float()
    B, C, H, W = x.shape
    kx = torch.tensor([[1.0, 0.0, -1.0]] * 3, device=x.device) / 3.0
    weight = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3): gx, gy

    def grad_mag(t):  # (B*C, 1, h, w) -> (B*C, 1, h, w)
        g = F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), weight)
        return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2)

    xs = x.reshape(B * C, 1, H, W)
    ys = y.reshape(B * C, 1, H, W)
    total = torch.zeros(B, 1, H, W, device=x.device)
    for s in range(scales):
        if s > 0:
            xs = F.avg_pool2d(xs, 2, 2)
            ys = F.avg_pool2d(ys, 2, 2)
        g1, g2 = grad_mag(xs), grad_mag(ys)
        gms = (2 * g1 * g2 + c) / (g1 ** 2 + g2 ** 2 + c)
        gms = gms.reshape(B, C, *gms.shape[-2:]).mean(dim=1, keepdim=True)
        if gms.shape[-2:] != (H, W):
            gms = F.interpolate(gms, size=(H, W), mode="bilinear", align_corners=False)
        total = total + gms
    amap = 1.0 - total / scales
    if mean_filter > 1:
        r = mean_filter // 2
        amap = F.avg_pool2d(F.pad(amap, (r, r, r, r), mode="replicate"), mean_filter, stride=1)
    return amap[:, 0]


# ----------------------------------------------------------------------------------------------
# softmask
# ----------------------------------------------------------------------------------------------


def softmask_apply_reference(pred, features):
    """FADeR soft mask in plain torch: features * nearest(1 - minmax(pred)) per image, features' dtype."""
    import torch
    import torch.nn.functional as F

    p = torch.as_tensor(pred).float()
    f = torch.as_tensor(features)
    mn = p.amin(dim=(1, 2), keepdim=True)
    mx = p.amax(dim=(1, 2), keepdim=True)
    flat = ~(mx > mn)
    # Gradient-safe (torch.where would back-propagate NaN through a 0/0 branch when max == min).
    mask = torch.where(flat, torch.ones_like(p), 1.0 - (p - mn) / torch.where(flat, torch.ones_like(mx), mx - mn))
    mask = F.interpolate(mask[:, None], size=tuple(f.shape[-2:]), mode="nearest")
    return (f.float() * mask).to(f.dtype)

