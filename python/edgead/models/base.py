"""The contract every model implements, so the pipeline, the CLI, export and the runtime treat them alike.

Data flow:  images (np, via edgead.data.transforms.Preprocessing) -> tensor x (B,C,H,W) float32
            -> model.predict(x) -> (scores (B,), maps (B,H,W) at input resolution)

Export / runtime split: `export_module()` returns the nn.Module that goes to ONNX/TensorRT (input
named "image", (B,C,H,W) float32, dynamic batch); its outputs are post-processed torch-free by
`edgead.runtime.postprocess.postprocess(model_type, outputs, artifact)` (NumPy / edgead._C),
and `predict()` must equal export_module() + that post-processing within float tolerance.
"""
from __future__ import annotations

import contextlib
from typing import Any, ClassVar, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn


@contextlib.contextmanager
def seeded_init(seed: int):
    """Build modules inside this block so their initial weights come from `seed`, not from whatever the
    global torch RNG holds (a fit is then reproducible); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


class AnomalyModel(nn.Module):
    model_type: ClassVar[str] = ""
    #: output names of export_module(), in order
    export_outputs: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.config: Dict[str, Any] = dict(config or {})

    # --- training -------------------------------------------------------------------------------
    def fit(self, train: Sequence, val: Optional[Sequence] = None, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
        """Learn from normal samples (edgead.data.Sample lists). Returns statistics for the artifact."""
        raise NotImplementedError

    # --- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x: preprocessed (B,C,H,W) float32 -> (image scores (B,), anomaly maps (B,H,W))."""
        raise NotImplementedError

    def preprocessing(self):
        """The edgead.data.transforms.Preprocessing this model was trained with."""
        raise NotImplementedError

    # --- artifact -------------------------------------------------------------------------------
    def artifact_config(self) -> Dict[str, Any]:
        return dict(self.config)

    def artifact_tensors(self) -> Dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items()}

    @classmethod
    def from_artifact(cls, artifact) -> "AnomalyModel":
        raise NotImplementedError

    # --- export ---------------------------------------------------------------------------------
    def export_module(self) -> nn.Module:
        raise NotImplementedError
