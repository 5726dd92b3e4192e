"""Training-side models (PyTorch). Importing edgead.models imports torch; the runtime never does.

Registry: `get_model_class(model_type)` -> the AnomalyModel subclass for an artifact's model_type.
"""
from __future__ import annotations

import importlib

_MODULES = {
    "patchcore": ("edgead.models.patchcore", "PatchCore"),
    "efficientad": ("edgead.models.efficientad", "EfficientAD"),
    "puad": ("edgead.models.puad", "PUAD"),
    "fader": ("edgead.models.fader", "FADeR"),
    "mixed": ("edgead.models.mixed", "MixedSupervision"),
}


def model_types():
    return tuple(_MODULES)


def get_model_class(model_type: str):
    if model_type not in _MODULES:
        raise ValueError(f"unknown model type {model_type!r}; expected one of {tuple(_MODULES)}")
    module, name = _MODULES[model_type]
    return getattr(importlib.import_module(module), name)


def load_model(artifact_dir: str, device: str = "cpu"):
    """Rebuild a trained torch model from an artifact directory."""
    from edgead.artifact import load_artifact

    art = load_artifact(artifact_dir)
    return get_model_class(art.model_type).from_artifact(art).to(device).eval()
