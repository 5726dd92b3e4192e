"""Torch-free deployment runtime: ``Detector.load(artifact_dir, backend=...)`` then ``detector(images)``.

Backends: "tensorrt" (TensorRT 10 engine), "onnxruntime" (CPU or CUDA execution provider), "torch"
(the training model; the only backend that imports torch). ``backend="auto"`` picks, in order:
tensorrt (importable and a GPU) > onnxruntime with CUDA > torch with CUDA > onnxruntime on the CPU.
See edgead.runtime.backends and docs/jetson.md.
"""
from __future__ import annotations

from edgead.runtime.backends import BACKENDS, available_backends, select_backend
from edgead.runtime.detector import BatchResult, Detector, ExportMissingError, Result, resolve_threshold
from edgead.runtime import postprocess  # the module (postprocess.postprocess, .register)

__all__ = [
    "BACKENDS",
    "BatchResult",
    "Detector",
    "ExportMissingError",
    "Result",
    "available_backends",
    "postprocess",
    "resolve_threshold",
    "select_backend",
]
