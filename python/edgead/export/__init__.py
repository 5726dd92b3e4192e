"""Export trained artifacts for deployment: ONNX (edgead.export.onnx), int8 ONNX via ONNX Runtime static
quantization (edgead.export.quantize) and TensorRT engines (edgead.export.tensorrt).

``edgead export <artifact> [--format onnx|tensorrt] [--precision fp32|fp16|int8] [--dla-core N]
[--out PATH] [--calibration DIR]`` calls :func:`cli_export`. ``--format onnx --precision int8
--calibration DIR`` writes ``model.int8.onnx`` (QDQ, per-channel weights) for the ONNX Runtime CPU backend.
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["export_onnx", "quantize_onnx", "build_engine", "cli_export"]


def export_onnx(artifact_dir: str, out=None, opset: int = 17, **kwargs) -> str:
    """See edgead.export.onnx.export_onnx (imports torch and onnx)."""
    from edgead.export.onnx import export_onnx as _export

    return _export(artifact_dir, out=out, opset=opset, **kwargs)


def quantize_onnx(artifact_dir: str, calibration, out=None, **kwargs) -> str:
    """See edgead.export.quantize.quantize_onnx (onnx + onnxruntime; no torch)."""
    from edgead.export.quantize import quantize_onnx as _quantize

    return _quantize(artifact_dir, calibration, out=out, **kwargs)


def build_engine(onnx_path: str, **kwargs) -> str:
    """See edgead.export.tensorrt.build_engine (needs TensorRT and a GPU)."""
    from edgead.export.tensorrt import build_engine as _build

    return _build(onnx_path, **kwargs)


def _get(args: Any, name: str, default=None):
    v = getattr(args, name, default)
    return default if v is None else v


def cli_export(args: Any) -> int:
    """`edgead export`: args.artifact, args.format ('onnx' | 'tensorrt'), args.precision, args.dla_core,
    args.out, args.calibration (image directory for int8). Prints the written path; returns 0."""
    artifact = args.artifact
    fmt = _get(args, "format", "onnx")
    precision = _get(args, "precision", None)
    dla_core = getattr(args, "dla_core", None)
    out = getattr(args, "out", None)
    calibration = getattr(args, "calibration", None)
    if fmt not in ("onnx", "tensorrt"):
        raise ValueError(f"edgead export: --format expected 'onnx' or 'tensorrt', got {fmt!r}")
    if fmt == "onnx":
        if precision not in (None, "fp32", "int8"):
            raise ValueError("edgead export: ONNX graphs are fp32 or int8 (ONNX Runtime static quantization); "
                             "--precision fp16 applies to --format tensorrt")
        if dla_core is not None:
            raise ValueError("edgead export: --dla-core applies to --format tensorrt")
        if precision == "int8":
            if calibration is None:
                raise ValueError("edgead export: --precision int8 needs --calibration DIR (images of normal parts)")
            from edgead.artifact import read_meta
            from edgead.runtime.detector import onnx_file

            src = onnx_file(read_meta(artifact), os.path.abspath(artifact))
            if not os.path.isfile(src):
                print(f"no ONNX export in {artifact}: exporting it first")
                export_onnx(artifact)
            path = quantize_onnx(artifact, calibration, out=out)
            ver = ((read_meta(artifact).get("exports") or {}).get("onnx_int8") or {}).get("verification") or {}
            print(f"int8 ONNX graph written to {path} (QDQ, per-channel; max |int8 - fp32| / max|fp32| on "
                  f"{ver.get('images')} calibration images: {ver.get('max_rel_diff', float('nan')):.3g})")
            return 0
        if calibration is not None:
            raise ValueError("edgead export: --calibration applies to --precision int8 (or --format tensorrt)")
        path = export_onnx(artifact, out=out)
        print(f"ONNX graph written to {path} (verified against torch with ONNX Runtime)")
        return 0
    from edgead.artifact import read_meta
    from edgead.runtime.detector import onnx_file

    meta = read_meta(artifact)
    onnx_path = onnx_file(meta, os.path.abspath(artifact))
    if not os.path.isfile(onnx_path):
        print(f"no ONNX export in {artifact}: exporting it first")
        onnx_path = export_onnx(artifact)
    precision = precision or "fp16"
    if precision == "int8" and calibration is None:
        raise ValueError("edgead export: --precision int8 needs --calibration DIR (images of normal parts)")
    kwargs = {}
    if out:
        kwargs["cache_dir"] = out
    path = build_engine(onnx_path, precision=precision, dla_core=dla_core, calibration_images=calibration,
                        artifact_dir=os.path.abspath(artifact), **kwargs)
    print(f"TensorRT engine written to {path}")
    return 0
