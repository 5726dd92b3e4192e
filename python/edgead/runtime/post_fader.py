"""FADeR post-processing, torch-free (NumPy + edgead._C): network outputs -> (scores, anomaly maps).

The exported FADeR network (``FADeR.export_module()``) outputs

* ``reconstruction``  (B, C, H, W) float32 in [0, 1]: the inpainted reconstruction,
* ``original``        (B, C, H, W) float32 in [0, 1]: the network input passed through,

and this module scores them as the paper does: anomaly map = MSGMS map between original and
reconstruction (``edgead.ops.msgms_map``: 4 scales, Prewitt/3 gradients, c=0.0026, 1-MSGMS,
21x21 mean filter), image score = max of the map.

Arrays may be NumPy or device arrays (torch CUDA / CuPy): ops.msgms_map dispatches on the device.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

OUTPUTS = ("reconstruction", "original")
DEFAULTS = {"msgms_c": 0.0026, "msgms_scales": 4, "msgms_mean_filter": 21}


def _params(config: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    p = dict(DEFAULTS)
    for k in DEFAULTS:
        if config is not None and k in config and config[k] is not None:
            p[k] = config[k]
    return p


def msgms_map(image, reconstruction, c: float = 0.0026, scales: int = 4, mean_filter: int = 21):
    """edgead.ops.msgms_map when the native op is available, else the NumPy fallback below."""
    try:
        from edgead import ops

        fn = getattr(ops, "msgms_map")
    except (ImportError, AttributeError):
        fn = None
    if fn is not None:
        return fn(image, reconstruction, c=c, scales=scales, mean_filter=mean_filter)
    return msgms_map_numpy(np.asarray(image), np.asarray(reconstruction), c=c, scales=scales, mean_filter=mean_filter)


def msgms_map_numpy(image: np.ndarray, reconstruction: np.ndarray, c: float = 0.0026, scales: int = 4,
                    mean_filter: int = 21) -> np.ndarray:
    """Plain NumPy/OpenCV MSGMS anomaly map (fallback only; the kernel is authoritative).

    Per channel: at scales s = 0..scales-1 (2x2 average pooling), gradient magnitudes with Prewitt/3
    kernels (zero padding), GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c), bilinear upsampling to full
    size (half-pixel centres), mean over scales; map = 1 - MSGMS averaged over channels, then a
    mean_filter x mean_filter box filter (zero padding, count includes the padding)."""
    import cv2

    a = np.asarray(image, dtype=np.float32)
    b = np.asarray(reconstruction, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"msgms_map: expected two (B,C,H,W) arrays of equal shape, got {a.shape} and {b.shape}")
    B, C, H, W = a.shape
    kx = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32) / 3.0
    ky = kx.T.copy()

    def grad(img):
        gx = cv2.filter2D(img, -1, kx[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)
        gy = cv2.filter2D(img, -1, ky[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)
        return np.sqrt(gx * gx + gy * gy + 1e-12)

    out = np.zeros((B, H, W), np.float32)
    for i in range(B):
        acc = np.zeros((H, W), np.float32)
        for ch in range(C):
            x, y = a[i, ch], b[i, ch]
            ms = np.zeros((H, W), np.float32)
            for s in range(scales):
                if s > 0:
                    hh, ww = x.shape[0] // 2, x.shape[1] // 2
                    x = x[: 2 * hh, : 2 * ww].reshape(hh, 2, ww, 2).mean((1, 3))
                    y = y[: 2 * hh, : 2 * ww].reshape(hh, 2, ww, 2).mean((1, 3))
                g1, g2 = grad(x), grad(y)
                gms = (2 * g1 * g2 + c) / (g1 * g1 + g2 * g2 + c)
                if gms.shape != (H, W):
                    gms = cv2.resize(gms, (W, H), interpolation=cv2.INTER_LINEAR)
                ms += gms
            acc += 1.0 - ms / scales
        m = acc / C
        if mean_filter and mean_filter > 1:
            m = cv2.boxFilter(m, -1, (mean_filter, mean_filter), normalize=True, borderType=cv2.BORDER_CONSTANT)
        out[i] = m
    return out


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
