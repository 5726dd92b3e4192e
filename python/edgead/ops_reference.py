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

# ----------------------------------------------------------------------------------------------
# softmask
# ----------------------------------------------------------------------------------------------
