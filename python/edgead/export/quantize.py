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

``target="tensorrt"`` writes ``model.int8.tensorrt.onnx`` instead: the explicitly quantized graph
that TensorRT's strongly typed INT8 build parses (TensorRT 11 removed implicit INT8 calibration;
edgead.export.tensorrt). Same calibration, but int8 **symmetric** activations (zero point 0:
TensorRT's QuantizeLinear/DequantizeLinear take int8 with a zero point of 0 only) and float biases
(no int32 bias DequantizeLinear; TensorRT fuses the bias into the quantized convolution). Both variants are
made by :func:`quantize_graph` (file in, file out, pre-processed array as calibration data).

The file, its sha256 and size, the source fp32 sha256 and the quantization settings are recorded in
the artifact's ``edgead.json`` (``files["model.int8.onnx"]`` and ``exports["onnx_int8"]``;
``exports["onnx_int8_tensorrt"]`` for the TensorRT graph).
``Detector.load(path, backend="onnxruntime", precision="int8")`` runs it. Needs onnx and
onnxruntime, not torch.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Optional, Sequence

import numpy as np

from edgead.artifact import (INT8_ONNX_FILE, export_file, read_meta, record_export, sha256_file,
                             verified_path)

DEFAULT_OP_TYPES = ("Conv", "Relu")
EXPORT_KEY = "onnx_int8"
#: the Q/DQ graph TensorRT's strongly typed INT8 build parses (edgead.export.tensorrt)
TRT_INT8_ONNX_FILE = "model.int8.tensorrt.onnx"
TRT_EXPORT_KEY = "onnx_int8_tensorrt"
#: quantization settings per consumer. ONNX Runtime (CPU): uint8 asymmetric activations. TensorRT
#: explicit quantization: int8 Q/DQ with zero point 0 only, so activations are int8 *symmetric*.
TARGETS = {
    "onnxruntime": {"activation_type": "uint8", "activation_symmetric": False, "quantize_bias": True,
                    "file": INT8_ONNX_FILE, "export_key": EXPORT_KEY},
    # bias stays float: TensorRT's DequantizeLinear takes int8 (not ORT's int32 bias) and fuses the bias itself
    "tensorrt": {"activation_type": "int8", "activation_symmetric": True, "quantize_bias": False,
                 "file": TRT_INT8_ONNX_FILE, "export_key": TRT_EXPORT_KEY},
}

__all__ = ["quantize_onnx", "quantize_graph", "ArrayCalibrationReader", "INT8_ONNX_FILE", "EXPORT_KEY",
           "TRT_INT8_ONNX_FILE", "TRT_EXPORT_KEY", "TARGETS"]


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


def _check_target(target: str, fn: str) -> Dict[str, Any]:
    if target not in TARGETS:
        raise ValueError(f"{fn}: argument 'target' expected one of {sorted(TARGETS)}, got {target!r}")
    return TARGETS[target]


def quantize_graph(
    src: str,
    dst: str,
    data: np.ndarray,
    target: str = "onnxruntime",
    per_channel: bool = True,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    calibrate_method: str = "minmax",
    batch_size: int = 8,
    verify_images: int = 8,
    max_rel_diff: Optional[float] = None,
    preprocess: bool = True,
    keep_fp32: Optional[str] = None,
) -> Dict[str, Any]:
    """Statically quantize the fp32 ONNX file `src` to a QDQ graph at `dst` (written atomically) with the
    pre-processed calibration array `data`; returns the settings and the verification against fp32.

    target: 'onnxruntime' (uint8 asymmetric activations) or 'tensorrt' (int8 symmetric activations,
    zero point 0, as TensorRT's explicit quantization requires); weights are int8 symmetric
    (per-channel by default) for both."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    tgt = _check_target(target, "quantize_graph")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise ValueError(f"quantize_onnx: argument 'calibrate_method' expected one of {sorted(methods)}, got {calibrate_method!r}")
    if keep_fp32 not in (None, "heads"):
        raise ValueError(f"quantize_onnx: argument 'keep_fp32' expected None or 'heads', got {keep_fp32!r}")
    if not isinstance(data, np.ndarray) or data.ndim != 4 or data.dtype != np.float32 or data.shape[0] == 0:
        raise ValueError(f"quantize_graph: argument 'data' expected a non-empty (N,C,H,W) float32 array, got "
                         f"{getattr(data, 'shape', type(data))} {getattr(data, 'dtype', '')}")
    path = os.path.abspath(dst)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    act = QuantType.QInt8 if tgt["activation_type"] == "int8" else QuantType.QUInt8
    extra = {"ActivationSymmetric": bool(tgt["activation_symmetric"]), "WeightSymmetric": True,
             "QuantizeBias": bool(tgt["quantize_bias"])}
    with tempfile.TemporaryDirectory(prefix="edgead-q8-") as work:
        model_in = src
        if preprocess:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            model_in = os.path.join(work, "pre.onnx")
            quant_pre_process(src, model_in, skip_symbolic_shape=True)
        exclude = _head_convs(onnx.load(model_in)) if keep_fp32 == "heads" else []
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(max(level, logging.ERROR))  # quantize_static logs a pre-processing advice at WARNING
        try:
            quantize_static(
                model_in, tmp, ArrayCalibrationReader.create(data, batch_size),
                quant_format=QuantFormat.QDQ, per_channel=bool(per_channel),
                activation_type=act, weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types), calibrate_method=methods[calibrate_method],
                nodes_to_exclude=exclude, extra_options=extra,
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
    return {
        "source_onnx_sha256": sha256_file(src),
        "format": "QDQ",
        "target": target,
        "activation_type": tgt["activation_type"],
        "activation_symmetric": bool(tgt["activation_symmetric"]),
        "quantize_bias": bool(tgt["quantize_bias"]),
        "weight_type": "int8",
        "per_channel": bool(per_channel),
        "op_types": list(op_types),
        "keep_fp32": keep_fp32,
        "calibrate_method": calibrate_method,
        "inputs": ["image"],
        "outputs": list(verification["outputs"]),
        "onnxruntime_version": ort.__version__,
        "onnx_version": onnx.__version__,
        "verification": verification,
    }


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
    target: str = "onnxruntime",
) -> str:
    """Statically quantize the artifact's fp32 ONNX graph to int8 (QDQ) and record it; returns the path.

    calibration: folder / image files / pre-processed array (see the module docstring); at most
    ``limit`` images are used. calibrate_method: 'minmax', 'entropy' or 'percentile'. out: destination
    (default ``artifact_dir/model.int8.onnx``, ``model.int8.tensorrt.onnx`` for target='tensorrt').
    max_rel_diff: raise if an output's ``max|int8 - fp32| / max|fp32|`` on the first ``verify_images``
    calibration images exceeds it. keep_fp32: None (quantize every ``op_types`` node) or 'heads': keep
    the Conv nodes not followed by a Relu (the last layer of each network, whose outputs are subtracted
    from each other) in fp32. target: 'onnxruntime' (the ORT CPU backend's graph) or 'tensorrt' (the
    Q/DQ graph of TensorRT's strongly typed INT8 build: int8 symmetric activations).
    """
    tgt = _check_target(target, "quantize_onnx")
    artifact_dir = os.path.abspath(artifact_dir)
    meta = read_meta(artifact_dir)
    src = export_file(meta, artifact_dir, "onnx")
    if not os.path.isfile(src):
        raise FileNotFoundError(f"quantize_onnx: no fp32 ONNX export ({src}); run `edgead export {artifact_dir}` first")
    src = verified_path(artifact_dir, os.path.relpath(src, artifact_dir), meta=meta)  # sha256 as recorded
    data, calib_src = _calibration_data(calibration, meta, int(limit))
    path = os.path.abspath(out) if out else os.path.join(artifact_dir, tgt["file"])
    info = quantize_graph(src, path, data, target=target, per_channel=per_channel, op_types=op_types,
                          calibrate_method=calibrate_method, batch_size=batch_size, verify_images=verify_images,
                          max_rel_diff=max_rel_diff, preprocess=preprocess, keep_fp32=keep_fp32)
    info["calibration"] = {"images": int(data.shape[0]), "source": calib_src}
    record_export(artifact_dir, tgt["export_key"], path, info)
    return path
