"""ONNX export of a trained artifact's network (``model.export_module()``), verified with ONNX Runtime.

``export_onnx(artifact_dir)`` writes ``artifact_dir/model.onnx``:

* input ``"image"`` (B, C, H, W) float32 with the artifact's fixed image size and a dynamic batch
  dimension (``dynamic_axes`` on dim 0 of the input and of every output), outputs named as the
  model's ``export_outputs``;
* exported with the TorchScript exporter (``dynamo=False``) by default: for these plain conv
  nets it is fast (0.1-2 s), deterministic and gives the same graph on every torch 2.x. The
  torch.export based exporter (``dynamo=True``, the default of ``torch.onnx.export`` since torch
  2.9) is available as an option, but on torch 2.14 / onnx 1.23 it took 21 s for a two-conv test
  net and its opset-17 down-conversion hit an ONNX version-converter assertion
  (``axes_input_to_attribute``) before falling back, so it is not the default;
* checked with ``onnx.checker.check_model`` (full check, with shape inference);
* run with ONNX Runtime (CPU) on random inputs at two batch sizes different from the export batch
  and compared with torch: ``|ort - torch| <= atol + rtol * |torch|`` per element with
  ``rtol = 1e-4`` and ``atol = 1e-4 * max(1, max|torch|)`` (fp32 on both sides);
* for PatchCore, checked to hold no memory bank and no MatMul/Gemm producing a (B, N, M) distance
  matrix: the nearest-neighbour search runs in the post-processing (edgead.ops.knn).

The file, its sha256 and size, the opset and the input/output names are recorded in the
artifact's ``edgead.json`` (``files["model.onnx"]`` and ``exports["onnx"]``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edgead.artifact import ONNX_FILE, read_meta, record_export

RTOL = 1e-4
ATOL_REL = 1e-4

__all__ = ["export_onnx", "verify_onnx", "check_no_distance_matrix", "ONNX_FILE"]


class OnnxVerificationError(RuntimeError):
    """The exported graph does not reproduce the torch module within tolerance."""


def _memory_bank_shape(tensors_meta: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    """(M, D) of a PatchCore memory bank from the artifact's tensor table, if there is one."""
    for name, spec in tensors_meta.items():
        if "bank" in name.lower() and len(spec.get("shape", [])) == 2:
            return int(spec["shape"][0]), int(spec["shape"][1])
    return None


def check_no_distance_matrix(model_proto, bank_rows: int, bank_dim: Optional[int] = None) -> None:
    """Raise if the graph embeds a (bank_rows, D) initializer or any MatMul/Gemm output has a dim == bank_rows.

    The runtime computes PatchCore nearest-neighbour distances with edgead.ops.knn; a broadcast
    (B, N, M) distance matrix in the graph would cost O(N*M) memory on the device.
    """
    from onnx import shape_inference

    g = model_proto.graph
    for init in g.initializer:
        dims = list(init.dims)
        if len(dims) == 2 and dims[0] == bank_rows and (bank_dim is None or dims[1] == bank_dim):
            raise AssertionError(f"ONNX graph embeds a memory-bank-shaped initializer '{init.name}' {dims}")
    inferred = shape_inference.infer_shapes(model_proto)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    for node in inferred.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Einsum", "MatMulInteger", "QLinearMatMul"):
            for out in node.output:
                dims = shapes.get(out)
                if dims and bank_rows in dims[1:]:
                    raise AssertionError(
                        f"ONNX node {node.name or node.op_type} ({node.op_type}) produces '{out}' with shape {dims} "
                        f"containing the memory bank size {bank_rows}: a distance matrix must not be in the graph"
                    )


def _run_torch(module, x: np.ndarray, output_names: Sequence[str]) -> Dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        outs = module(torch.from_numpy(x))
    if isinstance(outs, dict):
        outs = [outs[n] for n in output_names]
    elif isinstance(outs, torch.Tensor):
        outs = [outs]
    return {n: o.detach().float().cpu().numpy() for n, o in zip(output_names, outs)}


def verify_onnx(path: str, module, input_shape: Tuple[int, int, int], output_names: Sequence[str],
                batch_sizes: Sequence[int] = (1, 3), seed: int = 0, rtol: float = RTOL,
                atol_rel: float = ATOL_REL) -> Dict[str, float]:
    """Compare ONNX Runtime (CPU) with the torch module on random N(0,1) inputs; returns error stats."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst_abs, worst_ratio = 0.0, 0.0
    for b in batch_sizes:
        x = rng.standard_normal((b,) + tuple(input_shape)).astype(np.float32)
        ref = _run_torch(module, x, output_names)
        got = dict(zip(output_names, sess.run(list(output_names), {"image": x})))
        for n in output_names:
            r, o = ref[n], got[n]
            if r.shape != o.shape:
                raise OnnxVerificationError(f"output '{n}' batch {b}: onnxruntime shape {o.shape} != torch {r.shape}")
            if not np.all(np.isfinite(o)):
                raise OnnxVerificationError(f"output '{n}' batch {b}: onnxruntime produced NaN/inf")
            atol = atol_rel * max(1.0, float(np.abs(r).max()) if r.size else 1.0)
            err = np.abs(o.astype(np.float64) - r)
            tol = atol + rtol * np.abs(r)
            ratio = float((err / tol).max()) if err.size else 0.0
            worst_abs = max(worst_abs, float(err.max()) if err.size else 0.0)
            worst_ratio = max(worst_ratio, ratio)
            if ratio > 1.0:
                raise OnnxVerificationError(
                    f"output '{n}' batch {b}: onnxruntime differs from torch by up to {float(err.max()):.3g} "
                    f"(tolerance atol={atol:.3g} + rtol={rtol:g}*|torch|)"
                )
    return {"max_abs_err": worst_abs, "max_err_over_tol": worst_ratio, "rtol": rtol, "atol_rel": atol_rel}


def export_onnx(artifact_dir: str, out: Optional[str] = None, opset: int = 17, model=None, dynamo: bool = False,
                verify: bool = True, export_batch: int = 2) -> str:
    """Export the artifact's network to ONNX, check and verify it, and record it in the artifact.

    out: destination file (default ``artifact_dir/model.onnx``). model: an already loaded model
    (default ``edgead.models.load_model(artifact_dir)``). Returns the path of the ONNX file.
    """
    import onnx
    import torch

    from edgead.data.transforms import Preprocessing

    artifact_dir = os.path.abspath(artifact_dir)
    meta = read_meta(artifact_dir)
    if not isinstance(opset, int) or not 13 <= opset <= 23:
        raise ValueError(f"export_onnx: argument 'opset' expected an int in [13, 23], got {opset!r}")
    if model is None:
        from edgead.models import load_model

        model = load_model(artifact_dir, device="cpu")
    model = model.cpu().eval()
    if model.model_type and model.model_type != meta["model_type"]:
        raise ValueError(f"export_onnx: model is a {model.model_type!r} but the artifact holds a {meta['model_type']!r}")
    output_names = tuple(model.export_outputs)
    if not output_names:
        raise ValueError(f"export_onnx: {type(model).__name__}.export_outputs is empty")
    module = model.export_module().cpu().eval()
    pre = Preprocessing.from_dict(dict(meta["preprocessing"]))
    input_shape = pre.input_shape
    path = os.path.abspath(out) if out else os.path.join(artifact_dir, ONNX_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"

    dummy = torch.zeros((export_batch,) + tuple(input_shape), dtype=torch.float32)
    dyn = {"image": {0: "batch"}}
    dyn.update({n: {0: "batch"} for n in output_names})
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=4096)
            prog = torch.onnx.export(module, (dummy,), None, input_names=["image"], output_names=list(output_names),
                                     opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},))
            prog.save(tmp)
        else:
            torch.onnx.export(module, (dummy,), tmp, input_names=["image"], output_names=list(output_names),
                              dynamic_axes=dyn, opset_version=opset, do_constant_folding=True, dynamo=False)
    try:
        onnx.checker.check_model(tmp, full_check=True)
        proto = onnx.load(tmp)
        got_in = [i.name for i in proto.graph.input]
        got_out = [o.name for o in proto.graph.output]
        if got_in != ["image"] or got_out != list(output_names):
            raise OnnxVerificationError(f"graph inputs {got_in} / outputs {got_out}; expected ['image'] / {list(output_names)}")
        if meta["model_type"] == "patchcore":
            bank = _memory_bank_shape(meta["tensors"])
            if bank is not None:
                check_no_distance_matrix(proto, bank[0], bank[1])
        verification = None
        if verify:
            verification = verify_onnx(tmp, module, input_shape, output_names,
                                       batch_sizes=sorted({1, export_batch + 1}))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

    record_export(artifact_dir, "onnx", path, {
        "opset": opset,
        "inputs": ["image"],
        "outputs": list(output_names),
        "input_shape": [None] + [int(d) for d in input_shape],
        "dynamic_batch": True,
        "exporter": "dynamo" if dynamo else "torchscript",
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "verification": verification,
    })
    return path
