"""Shared helpers for the benchmarks."""
import warnings

import pytest


def export_ort_session(module, example, path, output_names, providers=("CPUExecutionProvider",), intra_op_threads=None):
    """Export `module` (input "image", dynamic batch, opset 17, TorchScript exporter) to `path` and open it
    in ONNX Runtime with full graph optimisation (and `intra_op_threads` when given)."""
    import torch

    ort = pytest.importorskip("onnxruntime")
    names = list(output_names)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), path, input_names=["image"], output_names=names, opset_version=17,
                          dynamo=False, dynamic_axes={n: {0: "batch"} for n in ["image"] + names})
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads is not None:
        opts.intra_op_num_threads = intra_op_threads
    return ort.InferenceSession(path, opts, providers=list(providers))

