"""Export trained artifacts for deployment: ONNX (edgead.export.onnx), int8 ONNX via ONNX Runtime static
quantization (edgead.export.quantize) and TensorRT engines (edgead.export.tensorrt).

``edgead export <artifact> [--format onnx|tensorrt] [--precision fp32|fp16|int8] [--dla-core N]
[--out PATH] [--calibration DIR]`` calls :func:`export_artifact`. ``--format onnx --precision int8
--calibration DIR`` writes ``model.int8.onnx`` (QDQ, per-channel weights) for the ONNX Runtime CPU backend.
"""
from __future__ import annotations

import os
from typing import Optional

__all__ = ["export_onnx", "quantize_onnx", "build_engine", "export_artifact", "export_triton", "FORMATS"]

FORMATS = ("onnx", "tensorrt", "triton")


def export_onnx(artifact_dir: str, out=None, opset: int = 17, **kwargs) -> str:
    """See edgead.export.onnx.export_onnx (imports torch and onnx)."""
    from edgead.export.onnx import export_onnx as _export

    return _export(artifact_dir, out=out, opset=opset, **kwargs)


def quantize_onnx(artifact_dir: str, calibration, out=None, **kwargs) -> str:
    """See edgead.export.quantize.quantize_onnx (onnx + onnxruntime; no torch)."""
    from edgead.export.quantize import quantize_onnx as _quantize

    return _quantize(artifact_dir, calibration, out=out, **kwargs)


def export_triton(artifact_dir: str, out: str, **kwargs) -> str:
    """See edgead.export.triton.export_triton (a Triton Inference Server model repository; onnxruntime only)."""
    from edgead.export.triton import export_triton as _export

    return _export(artifact_dir, out, **kwargs)


def build_engine(onnx_path: str, **kwargs) -> str:
    """See edgead.export.tensorrt.build_engine (needs TensorRT and a GPU)."""
    from edgead.export.tensorrt import build_engine as _build

    return _build(onnx_path, **kwargs)


def export_artifact(artifact: str, format: str = "onnx", precision: Optional[str] = None, dla_core: Optional[int] = None,
                    out: Optional[str] = None, calibration: Optional[str] = None, verbose: bool = True,
                    triton: Optional[dict] = None) -> str:
    """Export an artifact (what `edgead export` runs); returns the written path.

    format "onnx": precision None/"fp32" -> the fp32 graph; "int8" -> model.int8.onnx (ONNX Runtime static
    quantization, needs `calibration`, a folder of normal images; the fp32 graph is exported first when
    missing). format "tensorrt": precision "fp32" | "fp16" (default) | "int8" (needs `calibration`), optional
    Jetson `dla_core`; `out` is the engine cache folder (default <artifact>/engines). format "triton": a Triton
    model repository at `out` (edgead.export.triton.export_triton; `triton`: its keyword arguments).
    """
    from edgead.artifact import export_file, read_meta

    if format not in FORMATS:
        raise ValueError(f"edgead export: --format expected one of {FORMATS}, got {format!r}")
    say = print if verbose else (lambda *a, **k: None)
    if format == "triton":
        if precision is not None or dla_core is not None or calibration is not None:
            raise ValueError("edgead export --format triton: --precision/--dla-core/--calibration do not apply (the "
                             "repository serves model.onnx, plus an engine already in <artifact>/engines)")
        if not out:
            raise ValueError("edgead export --format triton needs --out REPO (the model repository folder to write)")
        if not os.path.isfile(export_file(read_meta(artifact), os.path.abspath(artifact), "onnx")):
            say(f"no ONNX export in {artifact}: exporting it first")
            export_onnx(artifact)
        path = export_triton(artifact, out, **(triton or {}))
        say(f"Triton model repository written to {path} (ensemble '{(triton or {}).get('name', 'edgead')}'; "
            "see docs/serving.md)")
        return path
    if format == "onnx":
        if precision not in (None, "fp32", "int8"):
            raise ValueError("edgead export: ONNX graphs are fp32 or int8 (ONNX Runtime static quantization); "
                             "--precision fp16 applies to --format tensorrt")
        if dla_core is not None:
            raise ValueError("edgead export: --dla-core applies to --format tensorrt")
        if precision == "int8":
            if calibration is None:
                raise ValueError("edgead export: --precision int8 needs --calibration DIR (images of normal parts)")
            if not os.path.isfile(export_file(read_meta(artifact), os.path.abspath(artifact), "onnx")):
                say(f"no ONNX export in {artifact}: exporting it first")
                export_onnx(artifact)
            path = quantize_onnx(artifact, calibration, out=out)
            ver = ((read_meta(artifact).get("exports") or {}).get("onnx_int8") or {}).get("verification") or {}
            say(f"int8 ONNX graph written to {path} (QDQ, per-channel; max |int8 - fp32| / max|fp32| on "
                f"{ver.get('images')} calibration images: {ver.get('max_rel_diff', float('nan')):.3g})")
            return path
        if calibration is not None:
            raise ValueError("edgead export: --calibration applies to --precision int8 (or --format tensorrt)")
        path = export_onnx(artifact, out=out)
        say(f"ONNX graph written to {path} (verified against torch with ONNX Runtime)")
        return path
    onnx_path = export_file(read_meta(artifact), os.path.abspath(artifact), "onnx")
    if not os.path.isfile(onnx_path):
        say(f"no ONNX export in {artifact}: exporting it first")
        onnx_path = export_onnx(artifact)
    precision = precision or "fp16"
    if precision == "int8" and calibration is None:
        raise ValueError("edgead export: --precision int8 needs --calibration DIR (images of normal parts)")
    kwargs = {"cache_dir": out} if out else {}
    path = build_engine(onnx_path, precision=precision, dla_core=dla_core, calibration_images=calibration,
                        artifact_dir=os.path.abspath(artifact), **kwargs)
    say(f"TensorRT engine written to {path}")
    return path
