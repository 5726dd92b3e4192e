"""Plain NumPy / PyTorch reference implementations of every edgead op, for tests.

Written for clarity, not speed; each mirrors the definition the kernel implements.
"""
from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# pro
# ----------------------------------------------------------------------------------------------


def pro_curve(anomaly_maps, masks, fpr_limit: float = 0.3):
    """Plain NumPy/SciPy PRO curve and AUPRO: returns (fpr, pro, thresholds, aupro).

    Regions: scipy.ndimage.label with a 3x3 structure (8-connectivity) per image. Scores are sorted
    once (descending); every pixel of region r contributes 1/(|r| R) to PRO, every defect-free
    pixel 1/N_normal to FPR; cumulative sums are read at the last pixel of each tie group. The
    curve starts at (0, 0, +inf); the area is the trapezoid rule up to fpr_limit with PRO linearly
    interpolated there, divided by fpr_limit.
    """
    from scipy import ndimage

    maps = np.asarray(anomaly_maps, dtype=np.float64)
    gt = np.asarray(masks).astype(bool)
    if maps.shape != gt.shape or maps.ndim != 3 or maps.size == 0:
        raise ValueError(f"pro_curve reference: bad shapes {maps.shape} and {gt.shape}")
    if not np.isfinite(maps).all():
        raise ValueError("pro_curve reference: 'anomaly_maps' has non-finite values")
    labels = np.zeros(maps.shape, dtype=np.int64)
    n_regions = 0
    for i in range(maps.shape[0]):
        lab, k = ndimage.label(gt[i], structure=np.ones((3, 3), dtype=int))
        labels[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += k
    n_normal = int((~gt).sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("pro_curve reference: AUPRO undefined (no regions or no normal pixels)")
    sizes = np.bincount(labels.ravel(), minlength=n_regions + 1).astype(np.float64)
    flat_scores = maps.ravel()
    flat_labels = labels.ravel()
    order = np.argsort(-flat_scores, kind="stable")
    s = flat_scores[order]
    lab = flat_labels[order]
    fp_inc = (lab == 0).astype(np.float64)
    w = np.zeros(n_regions + 1)
    w[1:] = 1.0 / sizes[1:]
    pro_cum = np.cumsum(w[lab]) / n_regions
    fp_cum = np.cumsum(fp_inc)
    last = np.ones(s.size, dtype=bool)
    last[:-1] = s[:-1] != s[1:]
    fpr = np.concatenate([[0.0], fp_cum[last] / n_normal])
    pro = np.concatenate([[0.0], pro_cum[last]])
    thr = np.concatenate([[np.inf], s[last]])
    return fpr, pro, thr, pro_area(fpr, pro, fpr_limit)


def pro_area(fpr, pro, fpr_limit: float) -> float:
    """Normalised area under a PRO curve up to fpr_limit (PRO interpolated at fpr_limit)."""
    fpr = np.asarray(fpr, dtype=np.float64)
    pro = np.asarray(pro, dtype=np.float64)
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # points with fpr <= limit: [0, k)
    x, y = fpr[:k], pro[:k]
    if k < fpr.size and x[-1] < fpr_limit:
        f0, p0, f1, p1 = fpr[k - 1], pro[k - 1], fpr[k], pro[k]
        x = np.append(x, fpr_limit)
        y = np.append(y, p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0))
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / fpr_limit)


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

