"""Tiny real models and artifacts for the tests (test_runtime, test_triton_export, test_serve) and tools/serve_load.py.

Importable without torch (``textures`` is NumPy only; ``make_tiny_artifact`` imports torch when called), so the
real-server tests can run in the separate numpy<2 environment of `.ci/serve` on an artifact built beforehand by
the main environment:

    python tests/tiny_patchcore.py OUT_DIR [patchcore|fader|efficientad]     # prints the artifact path
"""
from __future__ import annotations

import sys

import numpy as np

THRESHOLDS = {"image": 0.5, "pixel": 0.4, "candidates": {"image": {"f1": 0.5}, "pixel": {"f1": 0.4}}}


def textures(n, seed, size=64):
    rng = np.random.default_rng(seed)
    tile = np.random.default_rng(123).integers(0, 256, (16, 16, 3)).astype(np.float32)
    out = []
    for _ in range(n):
        dy, dx = rng.integers(0, 16, size=2)
        img = np.tile(np.roll(tile, (dy, dx), (0, 1)), (size // 16, size // 16, 1))
        img = img + 8 * rng.standard_normal(img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def build_tiny_model(model_type="patchcore"):
    """A tiny real model on 64x64 images (random init; PatchCore is fitted: it needs a memory bank).
    Returns (model in eval mode, fit statistics). Needs torch (the `train` extra)."""
    import warnings

    import torch

    from edgead.models import get_model_class

    cls = get_model_class(model_type)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model_type == "patchcore":
            model = cls(dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"], image_size=[64, 64],
                             coreset_ratio=0.25, num_neighbors=3, embedding_dim=48, batch_size=8,
                             mean=[0.5] * 3, std=[0.25] * 3))
            pre = model.preprocessing()
            stats = model.fit(torch.from_numpy(pre.batch(list(textures(6, 1)))), progress=False) or {}
        elif model_type == "fader":
            model = cls({"image_size": [64, 64], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8, "mlp_hidden": 16,
                         "seed": 0})
            stats = {}
        else:  # efficientad, puad: small PDN, few channels
            model = cls({"image_size": [64, 64], "out_channels": 8, "size": "S"})
            stats = {}
    return model.eval(), stats


def make_tiny_artifact(path, model_type="patchcore"):
    """Save + ONNX-export a tiny real model (build_tiny_model); returns the artifact path.
    Needs torch and onnx (the `train` and `onnx` extras)."""
    from edgead.artifact import save_artifact
    from edgead.export.onnx import export_onnx

    model, stats = build_tiny_model(model_type)
    save_artifact(path, model.model_type, model.artifact_config(), model.preprocessing().to_dict(),
                  model.artifact_tensors(), thresholds=THRESHOLDS, statistics=stats)
    export_onnx(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tests/tiny_patchcore.py OUT_DIR [patchcore|fader|efficientad]")
    print(make_tiny_artifact(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else "patchcore"))
