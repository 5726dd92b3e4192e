"""Python API over edgead._C: one function per op, dispatching on the input's device.

Inputs may be NumPy arrays, CPU torch tensors (viewed as NumPy, no copy when contiguous), or CUDA
arrays (torch CUDA tensors, CuPy) which run on the GPU on the caller's current stream. Outputs are
allocated here on the input's device and framework. Importing this module does not import torch.
Plain NumPy/PyTorch versions of every op live in edgead.ops_reference (used by the tests).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgead import _arrays


def _C():
    from edgead import _ext

    return _ext()


def _prepare(op: str, **arrays: Any):
    """Convert inputs for the kernel; returns (converted dict, on_cuda, stream)."""
    out = {}
    cuda_flags = []
    for name, x in arrays.items():
        if x is None:
            out[name] = None
            continue
        x = _arrays.as_kernel_input(x, name, op)
        out[name] = x
        cuda_flags.append(_arrays.is_cuda_array(x))
    on_cuda = any(cuda_flags)
    if on_cuda and not all(cuda_flags):
        names = ", ".join(f"'{n}' on {'cuda' if _arrays.is_cuda_array(v) else 'cpu'}" for n, v in out.items() if v is not None)
        raise ValueError(f"{op}: all arrays must be on the same device, got {names}")
    stream = 0
    if on_cuda:
        first = next(v for v in out.values() if v is not None)
        stream = _arrays.current_stream(first)
    return out, on_cuda, stream


# ----------------------------------------------------------------------------------------------
# pro: per-region-overlap curve and AUPRO (csrc/pro)
# ----------------------------------------------------------------------------------------------

from typing import NamedTuple as _NamedTuple


class ProCurve(_NamedTuple):
    """PRO curve (host NumPy float64 arrays, also for CUDA inputs) and the normalised AUPRO.

    fpr[0], pro[0], thresholds[0] = 0, 0, +inf; then one point per distinct score, high to low.
    """

    fpr: np.ndarray
    pro: np.ndarray
    thresholds: np.ndarray
    aupro: float


def _pro_inputs(anomaly_maps: Any, masks: Any, fpr_limit: float):
    op = "pro_curve"
    for name, x in (("anomaly_maps", anomaly_maps), ("masks", masks)):
        if isinstance(x, (list, tuple)) and len(x) == 0:
            raise ValueError(f"{op}: argument '{name}' expected a non-empty (N, H, W) array, got an empty {type(x).__name__}")
    if isinstance(masks, (list, tuple)):
        masks = np.asarray(masks)
    arrs, on_cuda, stream = _prepare(op, anomaly_maps=anomaly_maps, masks=masks)
    maps, masks = arrs["anomaly_maps"], arrs["masks"]
    if on_cuda:
        maps = maps.contiguous() if _arrays.is_torch_tensor(maps) else maps
        masks = masks.contiguous() if _arrays.is_torch_tensor(masks) else masks
    else:
        maps, masks = np.ascontiguousarray(maps), np.ascontiguousarray(masks)
    try:
        if isinstance(fpr_limit, (str, bytes, bool, np.bool_)):
            raise TypeError
        fpr_limit = float(fpr_limit)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: argument 'fpr_limit' expected a float in (0, 1], got {type(fpr_limit).__name__}") from None
    return maps, masks, fpr_limit, stream


def pro_curve(anomaly_maps: Any, masks: Any, fpr_limit: float = 0.3) -> ProCurve:
    """Exact MVTec AD PRO curve and AUPRO.

    anomaly_maps: (N, H, W) float32/float64 (NumPy, torch CPU/CUDA, CuPy); masks: (N, H, W) bool, or
    uint8 with values in {0, 1} (0/255 masks are rejected: pass masks > 0), same device. Regions are
    the 8-connected components of each image's mask; the FPR counts every defect-free pixel of every
    image. Tied scores form one point. aupro = area under PRO(FPR) on [0, fpr_limit] (PRO linearly
    interpolated at fpr_limit) / fpr_limit. The curve is returned as host NumPy arrays on every
    device (it has one point per distinct score). Raises ValueError when there is no defect or no
    defect-free pixel, for non-finite scores and non-binary masks.
    """
    maps, masks, fpr_limit, stream = _pro_inputs(anomaly_maps, masks, fpr_limit)
    shape = tuple(int(s) for s in maps.shape)
    # One point per distinct score at most, plus the start. np.empty pages are only committed when
    # written, so the resident memory is the curve's actual size.
    capacity = int(np.prod(shape)) + 1 if len(shape) == 3 else 1
    fpr = np.empty(capacity, np.float64)
    pro = np.empty(capacity, np.float64)
    thr = np.empty(capacity, np.float64)
    n, area, _, _ = _C().pro_curve(maps, masks, fpr_limit, fpr, pro, thr, stream)
    if n < capacity // 2:  # release the unused capacity
        fpr, pro, thr = fpr[:n].copy(), pro[:n].copy(), thr[:n].copy()
    else:
        fpr, pro, thr = fpr[:n], pro[:n], thr[:n]
    return ProCurve(fpr, pro, thr, float(area))


def aupro(anomaly_maps: Any, masks: Any, fpr_limit: float = 0.3) -> float:
    """Normalised AUPRO only (same definition and checks as pro_curve; no curve is stored)."""
    maps, masks, fpr_limit, stream = _pro_inputs(anomaly_maps, masks, fpr_limit)
    _, area, _, _ = _C().pro_curve(maps, masks, fpr_limit, None, None, None, stream)
    return float(area)


# ----------------------------------------------------------------------------------------------
# knn: nearest memory-bank row per query (csrc/knn)
# ----------------------------------------------------------------------------------------------


#: the kernels take scalar ints as C int (32 bit): anything outside is rejected here, before any allocation
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _int_arg(op: str, name: str, value: Any) -> int:
    """An int argument (bools and floats -> TypeError; outside the kernels' int32 range -> ValueError)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or isinstance(value, np.bool_):
        raise TypeError(f"{op}: argument '{name}' expected an int, got {type(value).__name__} {value!r}")
    v = int(value)
    if not _INT32_MIN <= v <= _INT32_MAX:
        raise ValueError(f"{op}: argument '{name}' expected an int in [{_INT32_MIN}, {_INT32_MAX}], got {v}")
    return v


#: smallest normal and largest finite float32: msgms runs its constant `c` in float32
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)


def _float32_positive_arg(op: str, name: str, value: Any) -> float:
    """A finite float > 0 that float32 represents as a normal number (the kernels compute in float32)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: argument '{name}' expected a float, got {type(value).__name__} {value!r}")
    v = float(value)
    if not (np.isfinite(v) and _F32_TINY <= v <= _F32_MAX):
        raise ValueError(f"{op}: argument '{name}' expected a finite value > 0 that float32 represents as a normal "
                         f"number ([{_F32_TINY:.4g}, {_F32_MAX:.4g}]), got {v!r}")
    return v


#: knn forms |q|^2 - 2 q.b + |b|^2 in float32: every row norm must stay below sqrt(FLT_MAX) / 2
_KNN_MAX_NORM = float(np.sqrt(np.float64(np.finfo(np.float32).max)) / 2.0)


def _check_knn_range(op: str, name: str, x: Any) -> None:
    """Finite rows whose squared norm overflows float32 gave index -1 / distance inf: reject them.

    Host arrays only (a CUDA array is not copied to the host for this scan)."""
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.size == 0 or x.dtype.kind != "f":
        return
    if x.dtype == np.float16:
        return  # |x| <= 65504: float32 squared norms cannot overflow
    amax = max(float(x.max()), -float(x.min()))  # no |x| temporary (the bank may be large)
    if not np.isfinite(amax):
        return  # NaN / inf: the kernel's own finite check names the argument
    if amax * np.sqrt(x.shape[1]) < _KNN_MAX_NORM:  # cheap bound: no row can reach the limit
        return
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    worst = int(np.argmax(norms))
    if norms[worst] >= _KNN_MAX_NORM:
        raise ValueError(
            f"{op}: argument '{name}' row {worst} has L2 norm {norms[worst]:.3g}; {op} computes squared distances "
            f"in float32 and needs every row norm < {_KNN_MAX_NORM:.3g} (rescale the features)")


def knn_bank_sq_norms(bank: Any):
    """||b||^2 of every bank row: float32 (M,) on the bank's device; pass it to knn(bank_sq_norms=...)
    when the same bank serves many calls (PatchCore inference). bank: (M, D) float32/float16."""
    arrs, _, stream = _prepare("knn", bank=bank)
    bank = arrs["bank"]
    out = _arrays.empty_like_device(bank, (int(bank.shape[0]) if getattr(bank, "ndim", 0) >= 1 else 0,), "float32")
    _C().knn_sq_norms(bank, out, stream)
    return out


# pip's CUDA wheels (nvidia-cublas, as torch-free installs of onnxruntime-gpu bring them) put libcublas
# off the loader path; the C++ loader finds a copy already in the process by soname, or the system's.
_CUBLAS_WHEEL_PATHS = ("nvidia/cu13/lib/libcublas.so.13", "nvidia/cublas/lib/libcublas.so.13",
                       "nvidia/cublas/lib/libcublas.so.12")
_cublas_hint_done = False


def _cublas_hint() -> None:
    """Once per process, before the first CUDA knn: when EDGEAD_CUBLAS is unset and no libcublas is loaded
    yet, point EDGEAD_CUBLAS at a pip wheel's copy if one is installed (else leave the soname search)."""
    global _cublas_hint_done
    if _cublas_hint_done:
        return
    _cublas_hint_done = True
    if os.environ.get("EDGEAD_CUBLAS"):
        return
    try:
        if "libcublas.so" in Path("/proc/self/maps").read_text():
            return
    except OSError:
        return
    for base in sys.path:
        for rel in _CUBLAS_WHEEL_PATHS:
            cand = Path(base or ".") / rel
            if cand.is_file():
                os.environ["EDGEAD_CUBLAS"] = str(cand)
                return


def cublas_status() -> str:
    """Which cuBLAS the CUDA knn GEMM path uses (a soname or path; the first CUDA knn call, or this call,
    loads it), or why it uses the fused kernel instead ("cuBLAS not found (...)", "disabled by
    EDGEAD_CUBLAS=0", "not built with CUDA"). A process that imported torch or has the CUDA toolkit's
    libraries on the loader path finds it by soname, else a pip wheel's copy (nvidia-cublas) is used;
    EDGEAD_CUBLAS=/path/to/libcublas.so.13 names one, EDGEAD_CUBLAS=0 turns the GEMM path off."""
    _cublas_hint()
    return str(_C().cublas_status())


def knn(queries: Any, bank: Any, k: int = 1, bank_sq_norms: Any = None):
    """k nearest memory-bank rows of every query, by Euclidean (L2) distance.

    queries (Q, D) and bank (M, D): both float32 or both float16 (accumulation in float32), C-contiguous,
    finite, same device (NumPy / torch CPU / torch CUDA / CuPy). 1 <= k <= M, else ValueError naming
    'k' (a bank smaller than k is an error, not a silent truncation); on CUDA k <= 64.
    bank_sq_norms: optional float32 (M,) = knn_bank_sq_norms(bank), precomputed once for a fixed bank
    (not verified: wrong norms give wrong neighbours).

    Returns (distances float32 (Q, k), indices int64 (Q, k)) on the input's device, sorted ascending by
    (distance, index). Distances are L2, not squared. Neighbours are selected with the tiled form
    max(|q|^2 - 2 q.b + |b|^2, 0) (ties -> lowest bank index; the Q x M matrix is never formed); the
    reported distances of the k winners are then recomputed directly as sqrt(sum((q - b)^2)).
    NaN/inf in queries or bank raise ValueError on every device; on CUDA the check is fused into the
    kernel and read back with one stream synchronisation (skipped while the stream is being captured
    into a CUDA graph).

    CUDA paths: for large problems (Q*M*D >= 2^24) the distance products run through cuBLAS (loaded at
    run time: see cublas_status(); fp32 accumulation, no TF32) in L2-sized chunks, folded into the
    top-k by edgead's kernel; smaller problems, or a process without cuBLAS, use the fused tile
    kernel. EDGEAD_KNN_CUDA_PATH=auto|fused|gemm overrides the choice (both give the same neighbours
    up to near-ties). On the GEMM path the selection distances of equal bank rows in different chunks
    come from different cuBLAS products and can differ in the last bit, so exactly duplicated rows may
    resolve to a higher index there; the returned winners are still ordered by their recomputed
    (distance, index). Device arrays whose squared row norms overflow float32 raise the non-finite
    ValueError on the GEMM path.
    """
    op = "knn"
    k = _int_arg(op, "k", k)
    arrs, on_cuda, stream = _prepare(op, queries=queries, bank=bank, bank_sq_norms=bank_sq_norms)
    q = arrs["queries"]
    _check_knn_range(op, "queries", q)
    norms = arrs["bank_sq_norms"]
    if norms is None:
        _check_knn_range(op, "bank", arrs["bank"])  # one pass, like the kernel's own norm computation
    elif isinstance(norms, np.ndarray) and norms.size and norms.dtype.kind == "f":
        top = float(np.max(norms))  # precomputed float32 |b|^2: overflowed rows are inf (or NaN)
        if not top < _KNN_MAX_NORM * _KNN_MAX_NORM:
            raise ValueError(f"{op}: argument 'bank' has a row whose squared L2 norm is {top:.3g} (bank_sq_norms); "
                             f"knn needs every row norm < {_KNN_MAX_NORM:.3g} (rescale the features)")
    m = arrs["bank"].shape[0] if getattr(arrs["bank"], "ndim", 0) == 2 else None
    if m is not None and k > m >= 1:  # before allocating (Q, k) outputs; same message as the kernel
        raise ValueError(f"{op}: argument 'k' expected k <= bank rows M = {m} (bank smaller than k), "
                         f"got k = {k}")
    nq = int(q.shape[0]) if getattr(q, "ndim", 0) == 2 else 0
    dist = _arrays.empty_like_device(q, (nq, max(k, 0)), "float32")
    idx = _arrays.empty_like_device(q, (nq, max(k, 0)), "int64")
    if on_cuda:
        _cublas_hint()
    _C().knn(q, arrs["bank"], arrs["bank_sq_norms"], k, dist, idx, stream)
    return dist, idx


# ----------------------------------------------------------------------------------------------
# coreset: greedy k-center selection (csrc/coreset)
# ----------------------------------------------------------------------------------------------


def _coreset_inputs(features: Any, n: Any, start: Any):
    """coreset / CoresetSelector argument checks -> (n, start, features, on_cuda, stream)."""
    n = _int_arg("coreset", "n", n)
    start = _int_arg("coreset", "start", start)
    arrs, on_cuda, stream = _prepare("coreset", features=features)
    x = arrs["features"]
    _check_knn_range("coreset", "features", x)  # squared distances must not overflow float32
    return n, start, x, on_cuda, stream


class CoresetSelector:
    """Resumable greedy k-center (farthest point) coreset selection: the same selection as
    :func:`coreset`, computed in batches so a caller can show progress and stop between batches.

    ``sel = CoresetSelector(features, n, start=0)`` checks ``features`` (same rules as :func:`coreset`;
    NaN/inf -> ValueError) and selects ``start`` (``sel.selected == 1``). Each ``sel.step(k)`` selects the
    next ``min(k, n - sel.selected)`` points and returns their indices (int64, on the input's device, a
    view into ``sel.indices``); ``sel.done`` is True once ``n`` points are selected. Any split into
    steps gives exactly the selection of ``coreset(features, n, start)``; ``sel.distances`` holds the
    selection distances as ``coreset(..., return_distances=True)`` does (valid for the first
    ``sel.selected`` entries). Interrupting between steps (Ctrl-C) leaves the selector usable: call
    ``step`` again to continue.

    The state is the per-point minimum squared distance to the selected set (``sel.min_d2``, float32
    (N,), on the device) plus, on the CPU, the nearest centre's position (int32 (N,), used to skip
    points exactly); both are owned by the selector. ``features`` must not be modified while
    selecting (it is scanned for NaN/inf once, here). CUDA arrays run on the caller's current stream
    at each call; ``step`` does not synchronise.

    Example (progress)::

        sel = CoresetSelector(x, n, start)
        with tqdm(total=n, initial=1) as bar:
            while not sel.done:
                bar.update(len(sel.step(256)))
        idx = sel.indices
    """

    def __init__(self, features: Any, n: int, start: int = 0):
        op = "coreset"
        n, start, x, on_cuda, _ = _coreset_inputs(features, n, start)
        shape = tuple(int(s) for s in getattr(x, "shape", ()))
        if len(shape) == 2 and n > shape[0] >= 1:
            raise ValueError(f"{op}: argument 'n' expected n <= number of points N = {shape[0]}, got n = {n}")
        if n < 1:
            raise ValueError(f"{op}: argument 'n' expected n >= 1, got {n}")
        npts = shape[0] if len(shape) == 2 else 0
        self._x = x
        self._on_cuda = on_cuda
        self.n = n
        self.indices = _arrays.empty_like_device(x, (n,), "int64")
        self.distances = _arrays.empty_like_device(x, (n,), "float32")
        self.min_d2 = _arrays.empty_like_device(x, (npts,), "float32")
        self._assign = None if on_cuda else np.empty(npts, np.int32)
        _C().coreset_init(x, start, self.min_d2, self._assign, self.indices, self.distances, self._stream())
        self.selected = 1

    def _stream(self) -> int:
        return _arrays.current_stream(self._x) if self._on_cuda else 0

    @property
    def done(self) -> bool:
        """True once all ``n`` points are selected."""
        return self.selected >= self.n

    def step(self, n_steps: int):
        """Select the next ``min(n_steps, n - selected)`` points (n_steps >= 1); returns their indices
        (int64, a view into ``self.indices`` on the input's device; empty once done)."""
        n_steps = _int_arg("coreset", "n_steps", n_steps)
        if n_steps < 1:
            raise ValueError(f"coreset: argument 'n_steps' expected n_steps >= 1, got {n_steps}")
        s0 = self.selected
        s1 = min(self.n, s0 + n_steps)
        if s1 > s0:
            _C().coreset_step(self._x, s0, s1, self.min_d2, self._assign, self.indices, self.distances, self._stream())
            self.selected = s1
        return self.indices[s0:s1]


def coreset(features: Any, n: int, start: int = 0, return_distances: bool = False):
    """Greedy k-center (farthest point) coreset selection, as in PatchCore.

    features: (N, D) float32/float16, C-contiguous, finite (NumPy / torch CPU / CUDA / CuPy); already
    randomly projected by the caller if wanted. 1 <= n <= N (ValueError naming 'n'); 0 <= start < N.
    idx[0] = start; step s picks the point farthest (L2) from the s points already chosen, ties ->
    lowest index. If the data has fewer than n distinct points the remaining picks repeat (lowest
    index at distance 0), exactly like the reference and anomalib.

    Returns idx int64 (n,) in selection order on the input's device; with return_distances=True,
    (idx, dist float32 (n,)) where dist[s] is the L2 distance of idx[s] to the previously selected set
    at the time it was picked (non-increasing for s >= 1) and dist[0] = +inf.
    For progress reporting or interruption, use :class:`CoresetSelector` (same selection, in steps).
    """
    n, start, x, _, stream = _coreset_inputs(features, n, start)
    size = max(n, 0)
    idx = _arrays.empty_like_device(x, (size,), "int64")
    dist = _arrays.empty_like_device(x, (size,), "float32") if return_distances else None
    _C().coreset(x, n, start, idx, dist, stream)
    return (idx, dist) if return_distances else idx


# ----------------------------------------------------------------------------------------------
# msgms: multi-scale gradient magnitude similarity anomaly map (csrc/msgms)
# ----------------------------------------------------------------------------------------------


def msgms_map(image: Any, reconstruction: Any, c: float = 0.0026, scales: int = 4, mean_filter: int = 21,
              *, out: Any = None):
    """MSGMS anomaly map of ``image`` vs ``reconstruction``; returns ``(B, H, W)`` float32 maps.

    image, reconstruction: ``(B, C, H, W)`` float32 (or both float16), same shape, C-contiguous,
    intensities in [0, 1] (any C: grey or colour). Pinned definition (docs/msgms.md):

    - scale 0 is the input; scale s is the 2x2 average pooling (stride 2, odd sizes floored) of
      scale s-1, so H and W must be >= 2^(scales-1) (8 for the default 4 scales);
    - per channel and scale: Prewitt gradients divided by 3 (kx = [[1,0,-1]]*3 / 3, ky = kx^T) with
      replicate padding, g = sqrt(gx^2 + gy^2), GMS = (2 g1 g2 + c) / (g1^2 + g2^2 + c);
    - GMS averaged over the channels, each scale upsampled to (H, W) bilinearly
      (align_corners=False, as torch F.interpolate), averaged over the scales: MSGMS;
    - map = 1 - MSGMS, then a ``mean_filter`` x ``mean_filter`` box mean with replicate padding
      (odd, 1..63; 1 = no filter). Image score = ``maps.reshape(B, -1).max(1)``.

    ``out``: optional preallocated ``(B, H, W)`` float32 on the input's device. CPU inputs must be
    finite (ValueError otherwise); CUDA inputs are not scanned (no host sync), NaN propagates.
    CUDA arrays run on the caller's current stream.
    """
    op = "msgms_map"
    c = _float32_positive_arg(op, "c", c)
    scales = _int_arg(op, "scales", scales)
    mean_filter = _int_arg(op, "mean_filter", mean_filter)
    arrays, on_cuda, stream = _prepare(op, image=image, reconstruction=reconstruction, out=out)
    x = arrays["image"]
    shape = tuple(getattr(x, "shape", ()))
    if out is None:
        if len(shape) != 4:
            raise ValueError(f"{op}: argument 'image' expected 4 dimensions (B, C, H, W), got shape {shape}")
        out = _arrays.empty_like_device(image, (shape[0], shape[2], shape[3]), "float32")
    target = arrays["out"] if arrays["out"] is not None else _arrays.as_kernel_input(out, "out", op)
    _C().msgms_map(x, arrays["reconstruction"], target, c=c, scales=scales, mean_filter=mean_filter, stream=stream)
    return out


# ----------------------------------------------------------------------------------------------
# softmask: FADeR soft mask applied to skip features (csrc/softmask)
# ----------------------------------------------------------------------------------------------


def softmask_apply(pred: Any, features: Any, out: Any = None):
    """FADeR soft mask applied to a skip feature map; returns ``out`` (same dtype/shape as features).

    pred: ``(B, h, w)`` float32/float16 patch-error predictions (one per token); features:
    ``(B, C, Hs, Ws)`` float32/float16, C-contiguous. Per image, mask = 1 - (p - min) / (max - min)
    over its h*w predictions (all ones when max == min), scaled to (Hs, Ws) by nearest
    interpolation with torch's index rule (``src = min(floor(dst * float(in / out)), in - 1)``), and
    multiplied into every channel: ``out[b, c] = features[b, c] * mask[b]`` (float32 arithmetic,
    one rounding to float16 for float16 features). ``out`` may be ``features`` (in place).
    Predictions must be finite (ValueError naming the image; that image's ``out`` is not written); on
    CUDA the check is part of the kernel and read back with one stream synchronisation (skipped while
    the stream is being captured into a CUDA graph).
    """
    op = "softmask_apply"
    arrays, on_cuda, stream = _prepare(op, pred=pred, features=features, out=out)
    f = arrays["features"]
    if out is None:
        dtype = str(getattr(f, "dtype", "")).replace("torch.", "")
        if dtype not in ("float32", "float16"):
            raise TypeError(f"{op}: argument 'features' expected dtype float32 or float16, got {dtype or type(features).__name__}")
        out = _arrays.empty_like_device(features, tuple(f.shape), dtype)
    target = arrays["out"] if arrays["out"] is not None else _arrays.as_kernel_input(out, "out", op)
    _C().softmask_apply(arrays["pred"], f, target, stream=stream)
    return out

