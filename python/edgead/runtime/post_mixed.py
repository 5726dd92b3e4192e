"""Torch-free post-processing of the exported mixed-supervision graph (edgead.models.mixed).

The exported network already outputs the image score (sigmoid of the classifier logit) and the anomaly
map (sigmoid of the segmentation logits, bilinearly resized to the input size), so this only validates
and reshapes them, exactly as for EfficientAD: "score" (B,) and "map" (B, H, W).
"""
from __future__ import annotations

from edgead.runtime.post_efficientad import OUTPUTS, postprocess

__all__ = ["OUTPUTS", "postprocess"]
