"""INT8 CPU path: ONNX Runtime static quantization of the artifact's fp32 ONNX graph.

``quantize_onnx(artifact_dir, calibration)`` writes ``artifact_dir/model.int8.onnx``:

* input: the artifact's fp32 export (``exports["onnx"]["file"]``, default ``model.onnx``; run
  :func:`edgead.export.onnx.export_onnx` first), pre-processed with
  ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference + ORT graph
  optimisation; symbolic shape inference skipped);
* ``onnxruntime.quantization.quantize_static`` in **QDQ** format: uint8 asymmetric activations, int8
  symmetric **per-channel** weights, MinMax calibration by default. Only ``Conv`` (+ the ``Relu``
  after it, which ORT then folds into the conv's output quantization) is quantized by default; the
  map normalisation / combination / resize tail of the graph stays fp32;
* calibration data: pre-processed images of normal parts, fed by :class:`ArrayCalibrationReader`
  (an ``onnxruntime.quantization.CalibrationDataReader``). ``calibration`` is a folder (searched
  recursively), a list of image files -- both pre-processed with the artifact's own preprocessing
  (:class:`edgead.data.transforms.Preprocessing`) -- or an already pre-processed (N,C,H,W) float32
  array. Use the artifact's training images (e.g. ``<dataset>/train/good``);
* checked with ``onnx.checker`` and for QuantizeLinear / DequantizeLinear nodes, then run on (up to
  ``verify_images``) calibration images next to the fp32 graph; the largest absolute and relative
  (``max|int8 - fp32| / max|fp32|``) difference of every output is recorded -- it is reported, not
  enforced (pass ``max_rel_diff`` to raise above a bound).

MinMax on normal images: anomalous inputs can produce activations above the calibrated range, which
saturate in int8. The anomaly map of a strong defect is then clipped, not lost, but check the
int8 artifact's thresholds / metrics on a labelled test set before deploying it.

The file, its sha256 and size, the source fp32 sha256 and the quantization settings are recorded in
the artifact's ``edgead.json`` (``files["model.int8.onnx"]`` and ``exports["onnx_int8"]``).
``Detector.load(path, backend="onnxruntime", precision="int8")`` runs it. Needs onnx and
onnxruntime, not torch.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgead.artifact import INT8_ONNX_FILE, export_file, read_meta, record_export, sha256_file

DEFAULT_OP_TYPES = ("Conv", "Relu")
EXPORT_KEY = "onnx_int8"

__all__ = ["quantize_onnx", "ArrayCalibrationReader", "INT8_ONNX_FILE", "EXPORT_KEY"]


def _reader_base():
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class ArrayCalibrationReader:
    """CalibrationDataReader over a pre-processed (N,C,H,W) float32 array, ``batch_size`` images per get_next().

    Built with :meth:`create` so that the ORT base class is imported only when quantizing."""

    @staticmethod
    def create(data: np.ndarray, batch_size: int = 8, input_name: str = "image"):
        base = _reader_base()

        class _Reader(base):
            def __init__(self):
                self.data = np.ascontiguousarray(data, dtype=np.float32)
                self.batch_size = max(1, int(batch_size))
                self.pos = 0

            def get_next(self):
                if self.pos >= self.data.shape[0]:
                    return None
                chunk = self.data[self.pos : self.pos + self.batch_size]
                self.pos += chunk.shape[0]
                return {input_name: chunk}

            def rewind(self):
                self.pos = 0

        return _Reader()


def _calibration_data(calibration, meta: Dict[str, Any], limit: int) -> (np.ndarray, str):
    from edgead.export.tensorrt import load_calibration_batch

    if calibration is None:
        raise ValueError("quantize_onnx: argument 'calibration' is required (a folder of normal training images, "
                         "a list of image files or a pre-processed (N,C,H,W) float32 array)")
    data = load_calibration_batch(calibration, meta["preprocessing"], limit=limit)
    if data.shape[0] == 0:
        raise ValueError("quantize_onnx: the calibration set is empty")
    want = tuple(int(d) for d in ((meta.get("exports") or {}).get("onnx") or {}).get("input_shape", [None])[1:])
    if want and tuple(data.shape[1:]) != want:
        raise ValueError(f"quantize_onnx: calibration data has shape {tuple(data.shape[1:])}, the graph expects {want}")
    if isinstance(calibration, np.ndarray):
        src = "array"
    elif isinstance(calibration, (str, os.PathLike)):
        src = os.path.abspath(os.fspath(calibration))
    else:
        src = f"{len(list(calibration))} files"
    return data, src


def _compare(fp32_path: str, int8_path: str, x: np.ndarray, threads: Optional[int] = None) -> Dict[str, Any]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
    s32 = ort.InferenceSession(fp32_path, so, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(int8_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s32.get_outputs()]
    ref = s32.run(names, {"image": x})
    got = s8.run(names, {"image": x})
    out: Dict[str, Any] = {"images": int(x.shape[0]), "outputs": {}}
    for n, r, g in zip(names, ref, got):
        if not np.all(np.isfinite(g)):
            raise RuntimeError(f"quantize_onnx: the int8 graph produced NaN/inf in output '{n}'")
        err = float(np.abs(g.astype(np.float64) - r).max()) if r.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        out["outputs"][n] = {"max_abs_diff": err, "max_abs_fp32": scale, "max_rel_diff": err / scale if scale > 0 else 0.0}
    out["max_rel_diff"] = max((v["max_rel_diff"] for v in out["outputs"].values()), default=0.0)
    return out


def _head_convs(proto) -> list:
    """Names of Conv nodes whose output is not consumed by a Relu only (the networks' last layers)."""
    consumers: Dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    heads = []
    for n in proto.graph.node:
        if n.op_type == "Conv":
            if not n.name:
                raise ValueError("quantize_onnx: keep_fp32='heads' needs named Conv nodes")
            if consumers.get(n.output[0], []) != ["Relu"]:
                heads.append(n.name)
    return heads


def quantize_onnx(
    artifact_dir: str,
    calibration,
    out: Optional[str] = None,
    per_channel: bool = True,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    calibrate_method: str = "minmax",
    limit: int = 64,
    batch_size: int = 8,
    verify_images: int = 8,
    max_rel_diff: Optional[float] = None,
    preprocess: bool = True,
    keep_fp32: Optional[str] = None,
) -> str:
    """Statically quantize the artifact's fp32 ONNX graph to int8 (QDQ) and record it; returns the path.

    calibration: folder / image files / pre-processed array (see the module docstring); at most
    ``limit`` images are used. calibrate_method: 'minmax', 'entropy' or 'percentile'. out: destination
    (default ``artifact_dir/model.int8.onnx``). max_rel_diff: raise if an output's
    ``max|int8 - fp32| / max|fp32|`` on the first ``verify_images`` calibration images exceeds it.
    keep_fp32: None (quantize every ``op_types`` node) or 'heads': keep the Conv nodes not followed by a
    Relu (the last layer of each network, whose outputs are subtracted from each other) in fp32.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ValueError(f"quantize_onnx: argument 'calibrate_method' expected one of {sorted(methods)}, got {calibrate_method!r}")
    artifact_dir = os.path.abspath(artifact_dir)
    meta = read_meta(artifact_dir)
    src = export_file(meta, artifact_dir, "onnx")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"quantize_onnx: no fp32 ONNX export ({src}); run `edgead export {artifact_dir}` first")
    data, calib_src = _calibration_data(calibration, meta, int(limit))
    path = os.path.abspath(out) if out else os.path.join(artifact_dir, INT8_ONNX_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with tempfile.TemporaryDirectory(prefix="edgead-q8-") as work:
        model_in = src
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            model_in = os.path.join(work, "pre.onnx")
            quant_pre_process(src, model_in, skip_symbolic_shape=True)
        exclude = _head_convs(onnx.load(model_in)) if keep_fp32 == "heads" else []
        if keep_fp32 not in (None, "heads"):
            raise ValueError(f"quantize_onnx: argument 'keep_fp32' expected None or 'heads', got {keep_fp32!r}")
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # quantize_static logs a pre-processing advice at WARNING
        try:
            quantize_static(
                model_in, tmp, ArrayCalibrationReader.create(data, batch_size),
                quant_format=QuantFormat.QDQ, per_channel=bool(per_channel),
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types), calibrate_method=methods[calibrate_method],
                nodes_to_exclude=exclude,
            )
        finally:
            root.setLevel(level)
    try:
        onnx.checker.check_model(tmp)
        proto = onnx.load(tmp)
        ops = {n.op_type for n in proto.graph.node}
        if not {"QuantizeLinear", "DequantizeLinear"} <= ops:
            raise RuntimeError(f"quantize_onnx: the quantized graph has no QuantizeLinear/DequantizeLinear nodes "
                               f"(op_types={list(op_types)} matched nothing?)")
        verification = _compare(src, tmp, data[: max(1, int(verify_images))])
        if max_rel_diff is not None and verification["max_rel_diff"] > max_rel_diff:
            raise RuntimeError(f"quantize_onnx: int8 differs from fp32 by {verification['max_rel_diff']:.3g} of max|fp32| "
                               f"(> max_rel_diff={max_rel_diff}): {verification['outputs']}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

    record_export(artifact_dir, EXPORT_KEY, path, {
        "source_onnx_sha256": sha256_file(src),
        "format": "QDQ",
        "activation_type": "uint8",
        "weight_type": "int8",
        "per_channel": bool(per_channel),
        "op_types": list(op_types),
        "keep_fp32": keep_fp32,
        "calibrate_method": calibrate_method,
        "calibration": {"images": int(data.shape[0]), "source": calib_src},
        "inputs": ["image"],
        "outputs": list(verification["outputs"]),
        "onnxruntime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "verification": verification,
    })
    return path
