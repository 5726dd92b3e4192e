"""Anomaly-detection metrics: exact, tie-aware, NumPy only (never imports torch).

Conventions: a higher score means more anomalous; label 1 = anomalous (defect), 0 = normal; a
sample is predicted anomalous when score >= threshold. Curves have one point per distinct score
(tied scores form one point), thresholds in decreasing order.

- roc_curve / auroc: equal to sklearn.metrics.roc_curve(drop_intermediate=False) / roc_auc_score.
- pr_curve / average_precision: equal to sklearn.metrics.precision_recall_curve /
  average_precision_score (AP = sum_k (R_k - R_{k-1}) P_k).
- f1_max, mcc, fpr_at_threshold, recall_at_threshold, threshold_at_fpr.
- threshold_at_recall / fpr_at_recall: the industrial operating point (recall >= target, lowest FPR).
- pro_curve / aupro: MVTec AD per-region overlap (edgead.ops.pro_curve, C++/CUDA kernel).
- evaluate: the usual image- and pixel-level table in one dict.

Every function validates its inputs and raises TypeError (wrong dtype/type) or ValueError (shape,
length, non-binary labels, non-finite scores, empty input, undefined metric) naming the argument,
what was expected and what came.
"""
from __future__ import annotations

import os
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edgead import _arrays

__all__ = [
    "roc_curve",
    "auroc",
    "pr_curve",
    "average_precision",
    "f1_max",
    "mcc",
    "fpr_at_threshold",
    "recall_at_threshold",
    "threshold_at_fpr",
    "threshold_at_recall",
    "fpr_at_recall",
    "pro_curve",
    "aupro",
    "pixel_auroc",
    "pixel_average_precision",
    "evaluate",
    "pack_mixed",
    "pixel_metrics_mixed",
    "plot_roc",
    "plot_pro",
]


# ----------------------------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str, fn: str) -> np.ndarray:
    if x is None:
        raise TypeError(f"{fn}: argument '{name}' expected an array, got None")
    if _arrays.is_torch_tensor(x):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):  # CuPy
        x = x.get()
    elif isinstance(x, (str, bytes, dict, set)):
        raise TypeError(f"{fn}: argument '{name}' expected an array of numbers, got {type(x).__name__}")
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like
        raise ValueError(f"{fn}: argument '{name}' could not be converted to an array: {e}") from None


def _scores(x: Any, name: str, fn: str, ndim: Optional[int] = 1) -> np.ndarray:
    """Finite real scores as float64; ndim=None flattens any shape."""
    a = _to_numpy(x, name, fn)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{fn}: argument '{name}' expected real-valued (float or integer) scores, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: argument '{name}' expected {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{fn}: argument '{name}' expected a non-empty array, got shape {a.shape}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        bad = a[~np.isfinite(a)][0]
        raise ValueError(f"{fn}: argument '{name}' expected finite scores, got {bad} "
                         f"({int((~np.isfinite(a)).sum())} non-finite values)")
    return a


def _labels(y: Any, name: str, fn: str, ndim: Optional[int] = 1) -> np.ndarray:
    """Binary labels (bool, or integers in {0, 1}) as bool."""
    a = _to_numpy(y, name, fn)
    if not (a.dtype == bool or np.issubdtype(a.dtype, np.integer)):
        raise TypeError(f"{fn}: argument '{name}' expected bool or integer labels in {{0, 1}}, got dtype {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{fn}: argument '{name}' expected {ndim} dimension(s), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{fn}: argument '{name}' expected a non-empty array, got shape {a.shape}")
    if a.dtype != bool:
        bad = (a != 0) & (a != 1)
        if bad.any():
            vals = np.unique(a[bad])[:5].tolist()
            raise ValueError(f"{fn}: argument '{name}' expected binary values in {{0, 1}}, got {vals}"
                             + (" (for 0/255 masks pass masks > 0)" if 255 in vals else ""))
        a = a.astype(bool)
    return a


def _pair(scores: Any, labels: Any, fn: str, sname: str = "scores", lname: str = "labels",
          ndim: Optional[int] = 1) -> Tuple[np.ndarray, np.ndarray]:
    s = _scores(scores, sname, fn, ndim)
    y = _labels(labels, lname, fn, ndim)
    if s.shape != y.shape:
        raise ValueError(f"{fn}: arguments '{sname}' and '{lname}' must have the same shape, got {s.shape} and {y.shape}")
    return s.ravel(), y.ravel()


def _need_both_classes(y: np.ndarray, fn: str, lname: str, what: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        cls = "1 (anomalous)" if n_pos else "0 (normal)"
        raise ValueError(f"{fn}: {what} is undefined when argument '{lname}' holds a single class: "
                         f"all {y.size} labels are {cls}")


def _clf_curve(s: np.ndarray, y: np.ndarray):
    """(fps, tps, thresholds) at every distinct score, thresholds decreasing (no start point)."""
    order = np.argsort(-s, kind="stable")
    s = s[order]
    y = y[order]
    last = np.r_[s[1:] != s[:-1], True]
    tps = np.cumsum(y, dtype=np.int64)[last]
    fps = (np.arange(1, s.size + 1, dtype=np.int64))[last] - tps
    return fps, tps, s[last]


def _threshold(t: Any, fn: str, name: str = "threshold") -> float:
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise TypeError(f"{fn}: argument '{name}' expected a real number, got {type(t).__name__}")
    t = float(t)
    if np.isnan(t):
        raise ValueError(f"{fn}: argument '{name}' expected a number, got nan")
    return t


# ----------------------------------------------------------------------------------------------
# ROC / PR
# ----------------------------------------------------------------------------------------------


def roc_curve(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): starts at (0, 0, +inf), then one point per distinct score."""
    fn = "roc_curve"
    s, y = _pair(scores, labels, fn)
    _need_both_classes(y, fn, "labels", "the ROC curve")
    fps, tps, thr = _clf_curve(s, y)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def _auroc(s: np.ndarray, y: np.ndarray) -> float:
    fps, tps, _ = _clf_curve(s, y)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve; ties count one half (equals sklearn roc_auc_score)."""
    fn = "auroc"
    s, y = _pair(scores, labels, fn)
    _need_both_classes(y, fn, "labels", "AUROC")
    return _auroc(s, y)


def pr_curve(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, thresholds decreasing.

    sklearn.metrics.precision_recall_curve gives the same points in reverse order (plus its
    (1, 0) end point, which is not a threshold).
    """
    fn = "pr_curve"
    s, y = _pair(scores, labels, fn)
    if not y.any():
        raise ValueError(f"{fn}: the PR curve is undefined without positives: argument 'labels' has no 1")
    fps, tps, thr = _clf_curve(s, y)
    return tps / (tps + fps), tps / tps[-1], thr


def _ap(s: np.ndarray, y: np.ndarray) -> float:
    fps, tps, _ = _clf_curve(s, y)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def average_precision(scores: Any, labels: Any) -> float:
    """AP = sum_k (R_k - R_{k-1}) P_k over distinct thresholds (equals sklearn average_precision_score)."""
    fn = "average_precision"
    s, y = _pair(scores, labels, fn)
    if not y.any():
        raise ValueError(f"{fn}: average precision is undefined without positives: argument 'labels' has no 1")
    return _ap(s, y)


def _f1_max(s: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    fps, tps, thr = _clf_curve(s, y)
    f1 = 2.0 * tps / (tps[-1] + tps + fps)
    k = int(np.argmax(f1))
    return float(f1[k]), float(thr[k])


def f1_max(scores: Any, labels: Any) -> Tuple[float, float]:
    """(best F1 over all thresholds, its threshold); among equal F1 the highest threshold wins."""
    fn = "f1_max"
    s, y = _pair(scores, labels, fn)
    if not y.any():
        raise ValueError(f"{fn}: F1 is undefined without positives: argument 'labels' has no 1")
    return _f1_max(s, y)


def _confusion(s: np.ndarray, y: np.ndarray, t: float):
    pred = s >= t
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn_ = int(np.count_nonzero(~pred & y))
    tn = int(y.size - tp - fp - fn_)
    return tp, fp, fn_, tn


def mcc(scores: Any, labels: Any, threshold: float) -> float:
    """Matthews correlation coefficient of (score >= threshold) vs labels; 0 when undefined (as sklearn)."""
    fn = "mcc"
    s, y = _pair(scores, labels, fn)
    tp, fp, fn_, tn = _confusion(s, y, _threshold(threshold, fn))
    den = float(tp + fp) * float(tp + fn_) * float(tn + fp) * float(tn + fn_)
    if den == 0.0:
        return 0.0
    return float((float(tp) * tn - float(fp) * fn_) / np.sqrt(den))


def fpr_at_threshold(scores: Any, labels: Any, threshold: float) -> float:
    """Fraction of normal samples with score >= threshold."""
    fn = "fpr_at_threshold"
    s, y = _pair(scores, labels, fn)
    if y.all():
        raise ValueError(f"{fn}: the FPR is undefined without normal samples: argument 'labels' has no 0")
    tp, fp, fn_, tn = _confusion(s, y, _threshold(threshold, fn))
    return fp / (fp + tn)


def recall_at_threshold(scores: Any, labels: Any, threshold: float) -> float:
    """Recall (TPR): fraction of anomalous samples with score >= threshold."""
    fn = "recall_at_threshold"
    s, y = _pair(scores, labels, fn)
    if not y.any():
        raise ValueError(f"{fn}: recall is undefined without positives: argument 'labels' has no 1")
    tp, fp, fn_, tn = _confusion(s, y, _threshold(threshold, fn))
    return tp / (tp + fn_)


tpr_at_threshold = recall_at_threshold


def threshold_at_fpr(scores: Any, labels: Any, target_fpr: float) -> float:
    """The threshold with the largest recall whose FPR is <= target_fpr; among thresholds with that
    recall, the highest one (lowest FPR). Predict anomalous when score >= the result.

    Returns +inf when even the highest score gives FPR > target_fpr (flag nothing).
    """
    fn = "threshold_at_fpr"
    s, y = _pair(scores, labels, fn)
    target = _threshold(target_fpr, fn, "target_fpr")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"{fn}: argument 'target_fpr' expected a value in [0, 1], got {target}")
    if y.all():
        raise ValueError(f"{fn}: the FPR is undefined without normal samples: argument 'labels' has no 0")
    fps, tps, thr = _clf_curve(s, y)
    n_neg = int(y.size - y.sum())
    ok = np.nonzero(fps / n_neg <= target)[0]
    if not ok.size:
        return float("inf")
    # the best recall within the budget, reached first (highest threshold, lowest FPR)
    k = int(np.searchsorted(tps, tps[ok[-1]], side="left"))
    return float(thr[k])


def threshold_at_recall(scores: Any, labels: Any, target_recall: float) -> float:
    """The highest threshold whose recall is >= target_recall (so the lowest FPR among those that keep
    the recall). Predict anomalous when score >= the result."""
    fn = "threshold_at_recall"
    s, y = _pair(scores, labels, fn)
    target = _threshold(target_recall, fn, "target_recall")
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"{fn}: argument 'target_recall' expected a value in [0, 1], got {target}")
    if not y.any():
        raise ValueError(f"{fn}: recall is undefined without positives: argument 'labels' has no 1")
    fps, tps, thr = _clf_curve(s, y)
    k = int(np.nonzero(tps / tps[-1] >= target)[0][0])  # tps ends at all positives, so some k exists
    return float(thr[k])


def fpr_at_recall(scores: Any, labels: Any, target_recall: float = 0.95) -> Tuple[float, float]:
    """(FPR, threshold) at threshold_at_recall: the false-positive rate a line pays to catch at least
    target_recall of the defects."""
    fn = "fpr_at_recall"
    s, y = _pair(scores, labels, fn)
    if y.all():
        raise ValueError(f"{fn}: the FPR is undefined without normal samples: argument 'labels' has no 0")
    t = threshold_at_recall(s, y, target_recall)
    tp, fp, fn_, tn = _confusion(s, y, t)
    return fp / (fp + tn), t


# ----------------------------------------------------------------------------------------------
# pixel level and PRO
# ----------------------------------------------------------------------------------------------


class ProCurve(NamedTuple):
    fpr: np.ndarray
    pro: np.ndarray
    thresholds: np.ndarray
    aupro: float


def _maps_masks(anomaly_maps: Any, masks: Any, fn: str, check_values: bool = True):
    """Host float32/float64 (N,H,W) maps and uint8 {0,1} masks; a single (H,W) pair is promoted.

    check_values=False leaves the finiteness and {0,1} checks of float32/float64 maps and uint8/bool
    masks to the pro kernel (which makes them anyway, naming the same arguments).
    """
    if isinstance(anomaly_maps, (list, tuple)) and len(anomaly_maps) == 0:
        raise ValueError(f"{fn}: argument 'anomaly_maps' expected a non-empty (N, H, W) array, got an empty {type(anomaly_maps).__name__}")
    if isinstance(masks, (list, tuple)) and len(masks) == 0:
        raise ValueError(f"{fn}: argument 'masks' expected a non-empty (N, H, W) array, got an empty {type(masks).__name__}")
    maps = _to_numpy(anomaly_maps, "anomaly_maps", fn)
    m = _to_numpy(masks, "masks", fn)
    if maps.dtype == bool or not (np.issubdtype(maps.dtype, np.floating) or np.issubdtype(maps.dtype, np.integer)):
        raise TypeError(f"{fn}: argument 'anomaly_maps' expected float scores, got dtype {maps.dtype}")
    if maps.dtype not in (np.float32, np.float64):
        maps = maps.astype(np.float64)
    if maps.ndim == 2:
        maps = maps[None]
    if m.ndim == 2:
        m = m[None]
    if maps.ndim != 3:
        raise ValueError(f"{fn}: argument 'anomaly_maps' expected shape (N, H, W), got {maps.shape}")
    if maps.shape != m.shape:
        raise ValueError(f"{fn}: arguments 'anomaly_maps' and 'masks' must have the same shape, got {maps.shape} and {m.shape}")
    if maps.size == 0:
        raise ValueError(f"{fn}: argument 'anomaly_maps' expected a non-empty array, got shape {maps.shape}")
    if check_values or m.dtype not in (np.uint8, np.bool_):
        m = _labels(m, "masks", fn, ndim=None)
    else:
        if m.size == 0:
            raise ValueError(f"{fn}: argument 'masks' expected a non-empty array, got shape {m.shape}")
    if check_values and not np.isfinite(maps).all():
        bad = maps[~np.isfinite(maps)][0]
        raise ValueError(f"{fn}: argument 'anomaly_maps' expected finite scores, got {bad}")
    return np.ascontiguousarray(maps), np.ascontiguousarray(m).view(np.uint8)


def pro_curve(anomaly_maps: Any, masks: Any, fpr_limit: float = 0.3) -> ProCurve:
    """Exact MVTec AD PRO curve + normalised AUPRO (see edgead.ops.pro_curve)."""
    from edgead import ops

    if _arrays.is_cuda_array(anomaly_maps) or _arrays.is_cuda_array(masks):  # GPU path, curve comes back on the host
        c = ops.pro_curve(anomaly_maps, masks, _limit(fpr_limit, "pro_curve"))
        return ProCurve(c.fpr, c.pro, c.thresholds, c.aupro)
    maps, m = _maps_masks(anomaly_maps, masks, "pro_curve", check_values=False)
    c = ops.pro_curve(maps, m, _limit(fpr_limit, "pro_curve"))
    return ProCurve(c.fpr, c.pro, c.thresholds, c.aupro)


def _limit(fpr_limit: Any, fn: str) -> float:
    t = _threshold(fpr_limit, fn, "fpr_limit")
    if not 0.0 < t <= 1.0:
        raise ValueError(f"{fn}: argument 'fpr_limit' expected a value in (0, 1], got {t}")
    return t


def aupro(anomaly_maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to fpr_limit (MVTec AD AUPRO, exact).

    Regions are the 8-connected defect components of each mask; the FPR counts the defect-free
    pixels of all images (good images included). Undefined (ValueError) without defect pixels.
    """
    from edgead import ops

    if _arrays.is_cuda_array(anomaly_maps) or _arrays.is_cuda_array(masks):  # GPU path (edgead.ops checks them)
        return ops.aupro(anomaly_maps, masks, _limit(fpr_limit, "aupro"))
    maps, m = _maps_masks(anomaly_maps, masks, "aupro", check_values=False)
    return ops.aupro(maps, m, _limit(fpr_limit, "aupro"))


def pixel_auroc(anomaly_maps: Any, masks: Any) -> float:
    """AUROC over all pixels of all images."""
    fn = "pixel_auroc"
    maps, m = _maps_masks(anomaly_maps, masks, fn)
    y = m.ravel().astype(bool)
    _need_both_classes(y, fn, "masks", "pixel AUROC")
    return _auroc(maps.ravel().astype(np.float64), y)


def pixel_average_precision(anomaly_maps: Any, masks: Any) -> float:
    """Average precision over all pixels of all images."""
    fn = "pixel_average_precision"
    maps, m = _maps_masks(anomaly_maps, masks, fn)
    y = m.ravel().astype(bool)
    if not y.any():
        raise ValueError(f"{fn}: average precision is undefined without defect pixels: argument 'masks' is all 0")
    return _ap(maps.ravel().astype(np.float64), y)


def evaluate(image_scores: Any, image_labels: Any, anomaly_maps: Any = None, masks: Any = None,
             fpr_limit: float = 0.3, target_recall: float = 0.95) -> Dict[str, float]:
    """Image metrics (image_auroc, image_ap, image_f1_max, image_f1_threshold, image_fpr_at_recall and
    image_recall_threshold at `target_recall`) and, with maps and
    masks, pixel metrics (pixel_auroc, pixel_ap, pixel_f1_max, aupro at fpr_limit)."""
    fn = "evaluate"
    s, y = _pair(image_scores, image_labels, fn, "image_scores", "image_labels")
    _need_both_classes(y, fn, "image_labels", "image AUROC")
    out: Dict[str, float] = {"image_auroc": _auroc(s, y), "image_ap": _ap(s, y)}
    out["image_f1_max"], out["image_f1_threshold"] = _f1_max(s, y)
    out["image_fpr_at_recall"], out["image_recall_threshold"] = fpr_at_recall(s, y, target_recall)
    out["target_recall"] = float(target_recall)
    if (anomaly_maps is None) != (masks is None):
        raise ValueError(f"{fn}: arguments 'anomaly_maps' and 'masks' go together, got only "
                         f"'{'anomaly_maps' if masks is None else 'masks'}'")
    if anomaly_maps is not None and _mixed_sizes(anomaly_maps, masks):
        if len(anomaly_maps) != s.size:
            raise ValueError(f"{fn}: argument 'anomaly_maps' expected {s.size} maps (one per image score), got {len(anomaly_maps)}")
        out.update(pixel_metrics_mixed(anomaly_maps, masks, fpr_limit))
    elif anomaly_maps is not None:
        maps, m = _maps_masks(anomaly_maps, masks, fn)
        if maps.shape[0] != s.size:
            raise ValueError(f"{fn}: argument 'anomaly_maps' expected {s.size} maps (one per image score), got {maps.shape[0]}")
        ps, py = maps.ravel().astype(np.float64), m.ravel().astype(bool)
        _need_both_classes(py, fn, "masks", "pixel AUROC")
        out["pixel_auroc"] = _auroc(ps, py)
        out["pixel_ap"] = _ap(ps, py)
        out["pixel_f1_max"] = _f1_max(ps, py)[0]
        from edgead import ops

        out["aupro"] = ops.aupro(maps, m, _limit(fpr_limit, fn))
    return out


def _mixed_sizes(anomaly_maps: Any, masks: Any) -> bool:
    """True for lists of (H_i, W_i) maps / masks whose sizes differ (native-resolution evaluation)."""
    if not isinstance(anomaly_maps, (list, tuple)) or not anomaly_maps:
        return False
    return len({np.shape(a) for a in anomaly_maps} | {np.shape(b) for b in (masks or [])}) > 1


def pack_mixed(anomaly_maps: Sequence[Any], masks: Sequence[Any]) -> Tuple[np.ndarray, np.ndarray, int, int]:
    """Pack images of different sizes into one (1, H, W) canvas for the PRO kernel, nothing resized.

    Images are stacked along the axis that wastes fewer pixels, with a one-pixel gap between them,
    so their 8-connected defect regions stay apart. Filler pixels (gaps and padding) are defect-free
    with a score below every real score, so they only enter the curve at its very last point.
    -> (maps float32 (1, H, W), masks uint8 (1, H, W), real defect-free pixel count, filler count).
    """
    fn = "pack_mixed"
    if len(anomaly_maps) != len(masks):
        raise ValueError(f"{fn}: {len(anomaly_maps)} anomaly maps but {len(masks)} masks")
    mp, mk = [], []
    for i, (a, b) in enumerate(zip(anomaly_maps, masks)):
        a2, b2 = _maps_masks(a, b, fn)
        if a2.shape[0] != 1:
            raise ValueError(f"{fn}: item {i}: expected one (H, W) map per image, got shape {np.shape(a)}")
        mp.append(a2[0].astype(np.float32))
        mk.append(b2[0])
    hs = np.array([a.shape[0] for a in mp])
    ws = np.array([a.shape[1] for a in mp])
    vertical = (hs + 1).sum() * ws.max() <= (ws + 1).sum() * hs.max()
    H, W = ((hs + 1).sum() - 1, ws.max()) if vertical else (hs.max(), (ws + 1).sum() - 1)
    low = np.float32(min(float(a.min()) for a in mp) - 1.0)
    cm = np.full((1, H, W), low, np.float32)
    ck = np.zeros((1, H, W), np.uint8)
    o = 0
    for a, b in zip(mp, mk):
        h, w = a.shape
        if vertical:
            cm[0, o : o + h, :w], ck[0, o : o + h, :w] = a, b
            o += h + 1
        else:
            cm[0, :h, o : o + w], ck[0, :h, o : o + w] = a, b
            o += w + 1
    real = int(sum(a.size for a in mp))
    neg = real - int(sum(int(b.sum()) for b in mk))
    return cm, ck, neg, int(H * W - real)


def pixel_metrics_mixed(anomaly_maps: Sequence[Any], masks: Sequence[Any], fpr_limit: float = 0.3) -> Dict[str, float]:
    """pixel_auroc, pixel_ap, pixel_f1_max and aupro over images of different sizes, each at its own
    (native) resolution: the pixel metrics pool every pixel of every image (as for equal sizes); AUPRO
    runs the exact PRO kernel on a packed canvas (:func:`pack_mixed`) with the FPR limit scaled by
    neg / (neg + filler), which gives exactly the AUPRO over the real pixels (filler pixels never
    exceed a threshold before FPR reaches neg / (neg + filler) >= the scaled limit)."""
    fn = "pixel_metrics_mixed"
    limit = _limit(fpr_limit, fn)
    ps, py = [], []
    for a, b in zip(anomaly_maps, masks):
        a2, b2 = _maps_masks(a, b, fn)
        ps.append(a2.ravel().astype(np.float64))
        py.append(b2.ravel().astype(bool))
    ps, py = np.concatenate(ps), np.concatenate(py)
    _need_both_classes(py, fn, "masks", "pixel AUROC")
    out = {"pixel_auroc": _auroc(ps, py), "pixel_ap": _ap(ps, py), "pixel_f1_max": _f1_max(ps, py)[0]}
    del ps, py
    from edgead import ops

    cm, ck, neg, filler = pack_mixed(anomaly_maps, masks)
    out["aupro"] = ops.aupro(cm, ck, limit * neg / (neg + filler))
    return out


# ----------------------------------------------------------------------------------------------
# plots (matplotlib imported lazily, Agg backend)
# ----------------------------------------------------------------------------------------------


def _figure():
    """A matplotlib Figure on an Agg canvas (pyplot and the user's backend are left alone)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def plot_roc(scores: Any, labels: Any, path: str, title: str = "ROC") -> str:
    """Write the ROC curve (with its AUROC) to a PNG at `path`; returns the path."""
    fpr, tpr, _ = roc_curve(scores, labels)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)
    fig, ax = _figure()
    ax.plot(fpr, tpr, lw=1.5, label=f"AUROC = {area:.4f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_pro(anomaly_maps: Any, masks: Any, path: str, fpr_limit: float = 0.3, title: str = "PRO") -> str:
    """Write the PRO curve up to fpr_limit (with its AUPRO) to a PNG at `path`; returns the path.
    Lists of maps / masks of different sizes are evaluated at their own sizes (see pack_mixed)."""
    if _mixed_sizes(anomaly_maps, masks):
        cm, ck, neg, filler = pack_mixed(anomaly_maps, masks)
        c = pro_curve(cm, ck, 1.0)
        fpr_all = np.minimum(c.fpr * ((neg + filler) / neg), 1.0)
        from edgead import ops

        area = ops.aupro(cm, ck, _limit(fpr_limit, "plot_pro") * neg / (neg + filler))
        c = ProCurve(fpr_all, c.pro, c.thresholds, area)
    else:
        c = pro_curve(anomaly_maps, masks, fpr_limit)
    k = int(np.searchsorted(c.fpr, fpr_limit, side="right"))
    fpr, pro = c.fpr[:k], c.pro[:k]
    if k < c.fpr.size and fpr[-1] < fpr_limit:
        f0, p0, f1, p1 = c.fpr[k - 1], c.pro[k - 1], c.fpr[k], c.pro[k]
        fpr = np.r_[fpr, fpr_limit]
        pro = np.r_[pro, p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)]
    fig, ax = _figure()
    ax.plot(fpr, pro, lw=1.5, label=f"AUPRO@{fpr_limit:g} = {c.aupro:.4f}")
    ax.set(xlabel="false positive rate", ylabel="per-region overlap", xlim=(0, fpr_limit), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path
