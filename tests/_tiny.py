"""A tiny real artifact for the fuzz, soak and concurrency tests: FADeR with widths 4..16 at 32x32
(random weights: these tests check plumbing, memory and threads, not detection quality), saved with
finite thresholds and exported to ONNX. ~5 s to build and ~8 ms per ORT Detector call on a loaded
2-core machine (a 64x64 EfficientAD-S with 8 channels took ~100 ms per call)."""
import os
import warnings

import numpy as np

THRESHOLDS = {"image": 0.5, "pixel": 0.4}
SIZE = 32


def build_tiny_artifact(path):
    import torch

    from edgead.artifact import save_artifact
    from edgead.export.onnx import export_onnx
    from edgead.models import get_model_class

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_model_class("fader")({"image_size": [SIZE, SIZE], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8,
                                          "mlp_hidden": 16, "seed": 0}).eval()
        save_artifact(path, model.model_type, model.artifact_config(), model.preprocessing().to_dict(),
                      model.artifact_tensors(), thresholds=THRESHOLDS, statistics={})
        export_onnx(path)
    return path


def tiny_images(n, seed=0, size=SIZE):
    g = np.random.default_rng(seed)
    return [g.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def rss_bytes():
    """Current resident set size of this process (Linux /proc; no psutil needed)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
