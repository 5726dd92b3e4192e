"""The deployment entry point: ``Detector.load(artifact_dir, backend=...)`` and ``detector(images)``.

Pipeline per call: decode (paths) -> Preprocessing (NumPy/cv2) -> backend network -> post-processing
(edgead.runtime.postprocess, NumPy / edgead._C) -> anomaly maps resized back to each input image's
size (cv2, linear) -> masks (map >= pixel threshold) and labels (score >= image threshold).

Torch-free unless backend="torch". The ONNX Runtime backend needs the artifact's ONNX file, written
by ``edgead export <artifact>`` (edgead.export.export_onnx); the TensorRT backend needs an engine
(built on the target GPU by ``edgead export <artifact> --format tensorrt`` and found here in the
artifact's engine cache; the runtime never builds: ``edgead eval/predict/bench --backend tensorrt``
build a missing engine first). File names come from edgead.artifact (the runtime does not import
edgead.export).

Thresholds are data in the artifact's ``thresholds`` (written by edgead.pipeline train / eval)::

    {"image": float, "pixel": float, "source": str,
     "candidates": {"image_f1": .., "image_fpr0.005": .., "val_image_q0.995": .., "pixel_f1": .., ...}}

(the nested layout ``"candidates": {"image": {"f1": ..}, "pixel": {..}}`` is read too).
``threshold=None`` uses ``thresholds["image"]``; a string picks a candidate by its short name
(``"f1"``, ``"fpr"`` = the one candidate starting with ``fpr``, ``"fpr0.005"``, ``"val_q0.995"``,
``"val_max"``) or its full key; a number is used as is. Same for ``pixel_threshold``. When
no threshold is known, labels / masks are None.

Thread safety: a Detector may be called from several threads at once (pre/post are stateless; the
backends handle concurrency: see edgead.runtime.backends).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import cv2
import numpy as np

from edgead.artifact import Artifact, ArtifactError, engines_dir, export_file, load_artifact, read_meta, verified_path
from edgead.runtime import backends as _backends
from edgead.runtime.postprocess import postprocess
from edgead.tiling import Tiling, resolve_tiling, tiled_predict

__all__ = ["Detector", "Result", "BatchResult", "resolve_threshold", "cached_engine", "ExportMissingError"]

STAGES = ("pre", "network", "post")


class ExportMissingError(FileNotFoundError):
    """The artifact lacks the exported file a backend needs."""


@dataclass
class Result:
    """One image: score, anomaly map at the input image's size, mask and label (None without thresholds)."""

    score: float
    anomaly_map: np.ndarray
    mask: Optional[np.ndarray] = None
    label: Optional[bool] = None
    path: Optional[str] = None


class BatchResult:
    """Results for a batch. ``scores`` (N,), ``labels`` (N,) bool; ``anomaly_maps`` / ``masks`` are
    (N,H,W) arrays when every input image has the same size, else lists of (H_i, W_i) arrays.
    Iterating / indexing gives :class:`Result` objects."""

    def __init__(self, scores, anomaly_maps, masks, labels, paths=None):
        self.scores = scores
        self.anomaly_maps = anomaly_maps
        self.masks = masks
        self.labels = labels
        self.paths = paths

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __getitem__(self, i: int) -> Result:
        if not -len(self) <= i < len(self):
            raise IndexError(f"BatchResult index {i} out of range for {len(self)} results")
        return Result(
            score=float(self.scores[i]),
            anomaly_map=self.anomaly_maps[i],
            mask=None if self.masks is None else self.masks[i],
            label=None if self.labels is None else bool(self.labels[i]),
            path=None if self.paths is None else self.paths[i],
        )

    def __iter__(self) -> Iterator[Result]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"BatchResult(n={len(self)}, scores={np.array2string(self.scores, precision=4, threshold=8)})"


def _candidates(thresholds: Dict[str, Any], kind: str) -> Dict[str, float]:
    """Candidate thresholds of one kind, in either layout the artifact may hold:

    nested  ``{"candidates": {"image": {"f1": .., "fpr_0.005": ..}, "pixel": {..}}}``
    flat    ``{"candidates": {"image_f1": .., "image_fpr0.005": .., "val_image_q0.995": .., "pixel_f1": ..}}``
            (edgead.pipeline), exposed as "f1", "fpr0.005", "val_q0.995", ... and under the full key.
    """
    cands = (thresholds or {}).get("candidates") or {}
    out: Dict[str, float] = {}
    nested = cands.get(kind)
    if isinstance(nested, dict):
        out.update({str(k): v for k, v in nested.items()})
    for key, v in cands.items():
        if isinstance(v, dict) or not isinstance(key, str):
            continue
        if key.startswith(kind + "_"):
            out[key[len(kind) + 1:]] = v
            out[key] = v
        elif key.startswith("val_" + kind + "_"):
            out["val_" + key[len(kind) + 5:]] = v
            out[key] = v
    return out


def resolve_threshold(thresholds: Dict[str, Any], kind: str, spec: Union[None, str, float]) -> Optional[float]:
    """The image or pixel threshold (`kind`) from the artifact's thresholds dict and a user spec.

    None: the artifact's active ``thresholds[kind]`` (None when absent); a number: itself; a name:
    a candidate ("f1", "fpr" -> the one candidate starting with "fpr", "fpr0.005", "val_q0.995", ...).
    """
    if kind not in ("image", "pixel"):
        raise ValueError(f"resolve_threshold: kind expected 'image' or 'pixel', got {kind!r}")
    thresholds = thresholds or {}
    arg = "threshold" if kind == "image" else "pixel_threshold"
    if spec is None:
        v = thresholds.get(kind)
        return None if v is None else float(v)
    if isinstance(spec, bool):
        raise TypeError(f"{arg}: expected a candidate name or a number, got {spec!r}")
    if isinstance(spec, (int, float, np.floating, np.integer)):
        v = float(spec)
        if not np.isfinite(v):
            raise ValueError(f"{arg}: expected a finite number, got {spec!r}")
        return v
    if not isinstance(spec, str):
        raise TypeError(f"{arg}: expected None, a candidate name or a number, got {type(spec).__name__}")
    if spec in ("default", "active", kind):
        if thresholds.get(kind) is None:
            raise ValueError(f"{arg}={spec!r}: the artifact has no active {kind} threshold")
        return float(thresholds[kind])
    cands = _candidates(thresholds, kind)
    if spec in cands:
        return float(cands[spec])
    short = sorted(k for k in cands if not k.startswith(kind + "_") and not k.startswith("val_" + kind + "_"))
    sep = lambda c: c in "_@." or c.isdigit()  # noqa: E731  "fpr" matches "fpr0.005" / "fpr_0.005", not "fprx"
    matches = [k for k in short if k.startswith(spec) and len(k) > len(spec) and sep(k[len(spec)])]
    if len(matches) == 1:
        return float(cands[matches[0]])
    if len(matches) > 1:
        raise ValueError(f"{arg}={spec!r} is ambiguous: the artifact has {kind} candidates {matches}")
    raise ValueError(
        f"{arg}={spec!r}: the artifact has no {kind} threshold candidate of that name; "
        f"available: {short or 'none'} (or pass a number; `edgead eval` adds f1 / fpr candidates)"
    )


def _int8_source_check(art: Artifact) -> None:
    """Warn when model.int8.onnx was quantized from another fp32 export than the current one."""
    exports = art.meta.get("exports") or {}
    src_sha = (exports.get("onnx_int8") or {}).get("source_onnx_sha256")
    cur_sha = (exports.get("onnx") or {}).get("sha256")
    if src_sha and cur_sha and src_sha != cur_sha:
        import warnings

        warnings.warn(f"artifact '{art.path}': model.int8.onnx was quantized from an older fp32 export; "
                      "re-run `edgead export --format onnx --precision int8`", stacklevel=3)


def cached_engine(artifact_dir: str, precision: str, onnx_sha256: Optional[str], gpu: Dict[str, Any],
                  trt_version: str) -> Optional[str]:
    """The newest engine in <artifact>/engines built (by edgead.export.tensorrt.build_engine) from this ONNX
    graph for this precision, GPU and TensorRT version, with a dynamic batch profile; None if there is none.
    Each engine has a ``.json`` sidecar ``{"key": {...}}``; the runtime only reads them (it never builds)."""
    import glob
    import json

    found = []
    for key_path in glob.glob(os.path.join(engines_dir(artifact_dir), "*.json")):
        try:
            with open(key_path) as f:
                key = json.load(f).get("key") or {}
        except (OSError, ValueError, AttributeError):
            continue
        engine = key_path[:-5] + ".engine"
        if (isinstance(key, dict) and key.get("precision") == precision and key.get("dla_core") is None
                and key.get("gpu") == gpu.get("name") and key.get("compute_capability") == gpu.get("compute_capability")
                and key.get("tensorrt") == trt_version and (onnx_sha256 is None or key.get("onnx_sha256") == onnx_sha256)
                and os.path.isfile(engine)):
            found.append((os.path.getmtime(engine), engine))
    return max(found)[1] if found else None


def _check_batch_size(batch_size) -> Optional[int]:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or int(batch_size) < 1:
        raise ValueError(f"Detector: argument 'batch_size' expected None or an int >= 1, got {batch_size!r}")
    return int(batch_size)


def _verified_engine(artifact_dir: str, engine: str) -> str:
    """An engine inside the artifact directory must match its recorded sha256 (edgead.json files);
    an engine file the caller names outside the artifact is the caller's own file."""
    root = os.path.realpath(artifact_dir)
    real = os.path.realpath(engine)
    if os.path.commonpath([root, real]) != root:
        return engine
    return verified_path(artifact_dir, os.path.relpath(real, root), meta=read_meta(artifact_dir))


def _timer():
    return time.perf_counter()


class Detector:
    def __init__(self, artifact: Artifact, backend: _backends.Backend, threshold=None, pixel_threshold=None,
                 batch_size: Optional[int] = None, tile=None, stride=None):
        from edgead.data.transforms import Preprocessing

        self.artifact = artifact
        self.model_type = artifact.model_type
        self.backend = backend
        self.preprocessing = Preprocessing.from_dict(dict(artifact.preprocessing))
        self.image_threshold = resolve_threshold(artifact.thresholds, "image", threshold)
        self.pixel_threshold = resolve_threshold(artifact.thresholds, "pixel", pixel_threshold)
        batch_size = _check_batch_size(batch_size)
        mb = backend.max_batch
        self.batch_size = batch_size if batch_size is not None else (min(mb, 32) if mb else 32)
        if mb and self.batch_size > mb:
            raise ValueError(f"batch_size {self.batch_size} exceeds the backend's max batch {mb}")
        self._hooks: List[Callable[[str, float, int], None]] = []
        self._hooks_lock = threading.Lock()
        self.tiling: Optional[Tiling] = None
        self.set_tiling(tile, stride)

    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        artifact_dir: str,
        backend: str = "auto",
        device: Optional[str] = None,
        threshold: Union[None, str, float] = None,
        pixel_threshold: Union[None, str, float] = None,
        precision: Optional[str] = None,
        batch_size: Optional[int] = None,
        engine: Optional[str] = None,
        model=None,
        tile=None,
        stride=None,
        **backend_kwargs,
    ) -> "Detector":
        """Load an artifact on a backend ('auto', 'tensorrt', 'onnxruntime', 'torch').

        device: 'cuda', 'cpu' or None (best available). precision: 'fp32' (default; torch/ORT),
        'fp16' (default for TensorRT; torch on CUDA), 'int8' (TensorRT, needs a calibrated engine; onnxruntime:
        the statically quantized model.int8.onnx from `edgead export --format onnx --precision int8`).
        engine: a TensorRT engine file (default: the newest matching engine in artifact_dir/engines/, see
        :func:`cached_engine`; ExportMissingError when none). model: an already built torch model (torch backend).
        batch_size: images per backend call (default min(32, the backend's max batch)); an int >= 1.
        """
        if device not in (None, "cpu", "cuda"):
            raise ValueError(f"Detector.load: argument 'device' expected 'cuda', 'cpu' or None, got {device!r}")
        if backend == "auto":
            backend, device = _backends.select_backend(device)
        elif backend not in _backends.BACKENDS:
            raise ValueError(f"Detector.load: argument 'backend' expected 'auto' or one of {_backends.BACKENDS}, got {backend!r}")
        batch_size = _check_batch_size(batch_size)
        if precision is not None and precision not in _backends.PRECISIONS:
            raise ValueError(f"Detector.load: argument 'precision' expected one of {_backends.PRECISIONS}, got {precision!r}")
        art = load_artifact(artifact_dir)
        path = art.path
        if backend == "onnxruntime":
            if precision not in (None, "fp32", "int8"):
                raise ValueError(f"onnxruntime backend runs the fp32 or the int8 ONNX graph; precision={precision!r} "
                                 "is not supported")
            onnx_path = export_file(art, path, "onnx")
            if precision == "int8":
                _int8_source_check(art)
                onnx_path = export_file(art, path, "onnx_int8")
                if not os.path.isfile(onnx_path):
                    raise ExportMissingError(
                        f"artifact '{path}' has no int8 ONNX export ({onnx_path} is missing): run `edgead export {path} "
                        "--format onnx --precision int8 --calibration DIR` before loading it with precision='int8'"
                    )
            elif not os.path.isfile(onnx_path):
                raise ExportMissingError(
                    f"artifact '{path}' has no ONNX export ({onnx_path} is missing): run `edgead export {path}` "
                    "(needs torch) before loading it with the onnxruntime backend"
                )
            onnx_path = verified_path(path, os.path.relpath(onnx_path, path), meta=art.meta)  # sha256 as recorded
            be = _backends.OnnxRuntimeBackend(onnx_path, device=device or "cpu", precision=precision or "fp32",
                                              **backend_kwargs)
        elif backend == "torch":
            be = _backends.TorchBackend(path, device=device or "cpu", precision=precision or "fp32", model=model,
                                        **backend_kwargs)
        else:  # tensorrt
            if device == "cpu":
                raise ValueError("the tensorrt backend runs on the GPU; device='cpu' is not possible")
            precision = precision or "fp16"
            if engine is None:
                trt = _backends.import_tensorrt()
                sha = ((art.meta.get("exports") or {}).get("onnx") or {}).get("sha256")
                engine = cached_engine(path, precision, sha, _backends.cuda_device_info(0), trt.__version__)
                if engine is None:
                    raise ExportMissingError(
                        f"artifact '{path}' has no {precision} TensorRT engine for this GPU and TensorRT "
                        f"{trt.__version__}: run `edgead export {path} --format tensorrt --precision {precision}` "
                        "on this machine (or pass engine=)"
                    )
            engine = _verified_engine(path, engine)
            be = _backends.TensorRTBackend(engine, precision=precision, **backend_kwargs)
        return cls(art, be, threshold=threshold, pixel_threshold=pixel_threshold, batch_size=batch_size, tile=tile,
                   stride=stride)

    # ------------------------------------------------------------------------------------------
    def add_timing_hook(self, fn: Callable[[str, float, int], None]) -> None:
        """fn(stage, seconds, batch) is called after each stage ('pre', 'network', 'post') of every chunk."""
        with self._hooks_lock:
            self._hooks.append(fn)

    def remove_timing_hook(self, fn) -> None:
        with self._hooks_lock:
            self._hooks.remove(fn)

    def _emit(self, stage: str, seconds: float, n: int) -> None:
        for fn in list(self._hooks):
            fn(stage, seconds, n)

    def set_tiling(self, tile=None, stride=None) -> None:
        """Tiled inference (edgead.tiling): the artifact's stored tiling (edgead.json "tiling", written by
        `edgead train` for a recipe with `tiling:`), overridden by an explicit tile / stride; tile=0: off."""
        meta = self.artifact.meta if isinstance(getattr(self.artifact, "meta", None), dict) else {}
        self.tiling = resolve_tiling({"tiling": meta.get("tiling")}, tile, stride)

    def set_thresholds(self, threshold=None, pixel_threshold=None) -> None:
        if threshold is not None:
            self.image_threshold = resolve_threshold(self.artifact.thresholds, "image", threshold)
        if pixel_threshold is not None:
            self.pixel_threshold = resolve_threshold(self.artifact.thresholds, "pixel", pixel_threshold)

    # ------------------------------------------------------------------------------------------
    def _score_chunk(self, chunk: np.ndarray):
        """One backend call + post-processing on at most batch_size pre-processed images -> (scores, maps)."""
        t0 = _timer()
        outs = self.backend.run(chunk)
        t1 = _timer()
        self._emit("network", t1 - t0, chunk.shape[0])
        s, m = postprocess(self.model_type, outs, self.artifact, on_device=self.backend.outputs_on_device)
        self._emit("post", _timer() - t1, chunk.shape[0])
        return s, m

    def _scored_chunks(self, batches):
        """Run backend + post-processing on each pre-processed (B,C,h,w) batch -> concatenated (scores, maps)."""
        scores, maps = [], []
        for x in batches:
            x = np.ascontiguousarray(x, dtype=np.float32)
            for i in range(0, x.shape[0], self.batch_size):
                s, m = self._score_chunk(x[i : i + self.batch_size])
                scores.append(s)
                maps.append(m)
        if not scores:
            h, w = self.preprocessing.size
            return np.zeros((0,), np.float32), np.zeros((0, h, w), np.float32)
        return np.concatenate(scores), np.concatenate(maps)

    def infer_preprocessed(self, x: np.ndarray):
        """(B,C,h,w) float32 pre-processed batch -> (scores (B,), maps (B,h,w)) at the model's size."""
        return self._scored_chunks([x])

    def score_files(self, items, progress: bool = False, desc: str = "scoring", native: bool = False):
        """Image files (paths or edgead.data Samples) -> (scores (N,), maps (N,h,w) at the model's input size).

        The same pre-processing, backend and post-processing as ``__call__`` (files are read and
        pre-processed by edgead.data.datasets.iter_batches' small thread pool, with a tqdm bar when
        `progress`). This is what `edgead train` (validation thresholds) and `edgead eval` score with.

        native=True (and always with tiling): maps at each image's own size, exactly as ``__call__``
        returns them (tiled and stitched, or resized back bilinearly); a list when sizes differ.
        """
        if native or self.tiling is not None:
            return self._score_files_native(items, progress, desc)
        from edgead.data.datasets import iter_batches

        batches = iter_batches(items, self.preprocessing, batch_size=self.batch_size, progress=progress, desc=desc)
        return self._scored_chunks(x for x, _ in batches)

    def _score_files_native(self, items, progress: bool, desc: str):
        """score_files at native resolution: images are read batch_size at a time and scored by __call__."""
        from tqdm.auto import tqdm

        from edgead.data.io import read_image

        items = list(items)
        scores, maps = [], []
        with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
            for i in range(0, len(items), self.batch_size):
                chunk = [read_image(os.fspath(getattr(it, "path", it))) for it in items[i : i + self.batch_size]]
                res = self(chunk)
                scores.append(res.scores)
                maps.extend(list(res.anomaly_maps))
                bar.update(len(chunk))
        if not scores:
            h, w = self.preprocessing.size
            return np.zeros((0,), np.float32), np.zeros((0, h, w), np.float32)
        same = len({m.shape for m in maps}) <= 1
        return np.concatenate(scores), (np.stack(maps) if same else maps)

    @staticmethod
    def _as_images(images) -> (List[np.ndarray], Optional[List[str]], bool):
        """-> (list of HxW[xC] arrays, paths or None, single)."""
        if isinstance(images, (str, os.PathLike)):
            images, single = [images], True
        elif isinstance(images, np.ndarray):
            if images.ndim == 2 or (images.ndim == 3 and images.shape[2] in (1, 3, 4)):
                return [images], None, True
            if images.ndim == 4 or images.ndim == 3:
                return list(images), None, False
            raise ValueError(
                f"images: expected HxW / HxWxC (one image) or NxHxWxC (batch) array, got shape {images.shape}"
            )
        elif isinstance(images, (list, tuple)):
            single = False
        else:
            raise TypeError(
                f"images: expected a path, an image array, a batch array or a list of them, got {type(images).__name__}"
            )
        arrs, paths = [], []
        for im in images:
            if isinstance(im, (str, os.PathLike)):
                from edgead.data.io import read_image

                arrs.append(read_image(os.fspath(im)))
                paths.append(os.fspath(im))
            elif isinstance(im, np.ndarray):
                arrs.append(im)
                paths.append(None)
            else:
                raise TypeError(f"images: list items expected paths or arrays, got {type(im).__name__}")
        return arrs, (paths if any(p is not None for p in paths) else None), single

    def __call__(self, images) -> Union[Result, BatchResult]:
        """One image (path or HxW / HxWxC array) -> Result; a batch (NxHxWxC array or list) -> BatchResult."""
        arrs, paths, single = self._as_images(images)
        n = len(arrs)
        if self.tiling is not None:
            scores, full = self._score_tiled(arrs)
            return self._results(scores, full, [a.shape[:2] for a in arrs], paths, single, _timer())
        t0 = _timer()
        x = self.preprocessing.batch(arrs)
        self._emit("pre", _timer() - t0, n)
        scores, maps = self.infer_preprocessed(x)
        t1 = _timer()
        sizes = [a.shape[:2] for a in arrs]
        del arrs  # the decoded images are not needed any more (large inputs: free them before upsampling)
        same = len({tuple(s) for s in sizes}) <= 1
        # same-size batch: upsample straight into one array (np.stack of full-size maps doubled the memory)
        full = np.empty((n,) + tuple(int(v) for v in sizes[0]), np.float32) if (same and n) else []
        for i, (m, (h, w)) in enumerate(zip(maps, sizes)):
            if m.shape != (h, w):
                m = cv2.resize(m, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
            if same:
                full[i] = m
            else:
                full.append(np.ascontiguousarray(m, dtype=np.float32))
        return self._results(scores, full, sizes, paths, single, t1)

    def _score_tiled(self, arrs: Sequence[np.ndarray]):
        """Tiled inference hook: every image is cut into tiles (edgead.tiling), the tiles of a chunk of
        batch_size are one backend batch, the maps are stitched at the image's own size. Images of
        different sizes tile independently."""
        def infer(tiles):
            t0 = _timer()
            x = self.preprocessing.batch(tiles)
            self._emit("pre", _timer() - t0, len(tiles))
            return self.infer_preprocessed(x)

        scores, full = [], []
        for a in arrs:
            s, m = tiled_predict(a, self.tiling, infer, chunk=self.batch_size)
            scores.append(s)
            full.append(m)
        return np.asarray(scores, np.float32), full

    def _results(self, scores, full, sizes, paths, single, t1):
        """full: maps at the images' sizes, an (N,H,W) array or a list -> Result / BatchResult."""
        n = len(full)
        same = len({tuple(s) for s in sizes}) <= 1
        if isinstance(full, np.ndarray):
            amaps = full
        else:
            amaps = np.stack(full) if (same and full) else (full if full else np.zeros((0,) + self.preprocessing.size, np.float32))
        if self.pixel_threshold is None:
            masks = None
        elif isinstance(amaps, np.ndarray):
            masks = amaps >= self.pixel_threshold
        else:
            masks = [m >= self.pixel_threshold for m in amaps]
        labels = None if self.image_threshold is None else scores >= self.image_threshold
        self._emit("post", _timer() - t1, n)
        res = BatchResult(scores, amaps, masks, labels, paths)
        return res[0] if single else res

    def describe(self) -> Dict[str, Any]:
        d = self.backend.describe()
        d.update(model_type=self.model_type, artifact=self.artifact.path, image_threshold=self.image_threshold,
                 pixel_threshold=self.pixel_threshold, input_size=list(self.preprocessing.size),
                 tiling=None if self.tiling is None else self.tiling.to_dict())
        return d

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"Detector({self.model_type}, backend={self.backend.name}, device={self.backend.device})"
