"""Frozen, truncated CNN feature extractors (torchvision architectures) for the anomaly models.

    fe = build_backbone("mobilenet_v2", layers=("layer2", "layer3"), weights="mobilenet_v2.safetensors")
    feats = fe(x)            # list of (B, C_i, H/s_i, W/s_i), one per requested layer, in request order
    fe.channels, fe.strides  # [32, 96], [8, 16]

Layer names
    resnet18, wide_resnet50_2: "layer1".."layer4" (strides 4, 8, 16, 32).
    mobilenet_v2: "layer1" = output of features[3] (24 ch, 1/4), "layer2" = features[6] (32, 1/8),
    "layer3" = features[13] (96, 1/16), "layer4" = features[16] (160, 1/32); raw torchvision
    names "features.<i>" (output of features[i]) are accepted too.
The network is truncated after the deepest requested layer, so the classifier and later stages are
never built or run. The module's state-dict keys are torchvision's own keys (e.g. "layer2.0.conv1.weight",
"features.6.conv.0.0.weight"), so a full torchvision state dict loads into it (unused keys of the cut-off
part are ignored) and its own state dict loads back into a fresh one.

Weights
    a path    a local file: safetensors (loaded with safetensors.torch.load_file) or a torch state dict
              (torch.load(weights_only=True), no pickle code execution);
    "imagenet"  torchvision's ImageNet weights (downloaded once into the torch hub cache; offline this
              fails fast with a RuntimeError telling you to pass a local weights file);
    None      ValueError, unless allow_random=True (random init, with a warning: only for tests).
The extractor is frozen: parameters do not require grad and it stays in eval mode (BatchNorm uses its
running statistics) even when a parent module calls .train().
"""
from __future__ import annotations

import os
import socket
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from edgead.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MOBILENET_KERAS_MEAN, MOBILENET_KERAS_STD

__all__ = [
    "SUPPORTED",
    "FeatureExtractor",
    "build_backbone",
    "default_normalization",
    "load_weights_file",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MOBILENET_KERAS_MEAN",
    "MOBILENET_KERAS_STD",
]

SUPPORTED = ("resnet18", "wide_resnet50_2", "mobilenet_v2")

_MOBILENET_LAYERS = {"layer1": 3, "layer2": 6, "layer3": 13, "layer4": 16}
_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")
_RESNET_STEM = ("conv1", "bn1", "relu", "maxpool")


def _tv_constructor(name: str):
    import torchvision

    return {
        "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
        "wide_resnet50_2": (torchvision.models.wide_resnet50_2, torchvision.models.Wide_ResNet50_2_Weights.IMAGENET1K_V1),
        "mobilenet_v2": (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
    }[name]


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in SUPPORTED:
        raise ValueError(f"backbone: expected one of {SUPPORTED}, got {name!r}")
    return name


def _resolve_layers(name: str, layers: Sequence[str]) -> List[Tuple[str, int]]:
    """-> [(requested name, depth index)], depth = index of the module after which to tap."""
    if isinstance(layers, str):
        layers = (layers,)
    layers = list(layers)
    if not layers:
        raise ValueError("layers: expected at least one layer name, got none")
    out = []
    for lay in layers:
        if name == "mobilenet_v2":
            if lay in _MOBILENET_LAYERS:
                out.append((lay, _MOBILENET_LAYERS[lay]))
                continue
            if isinstance(lay, str) and lay.startswith("features."):
                try:
                    i = int(lay.split(".", 1)[1])
                except ValueError:
                    i = -1
                if 0 <= i <= 18:
                    out.append((lay, i))
                    continue
            raise ValueError(
                f"layers: mobilenet_v2 accepts {tuple(_MOBILENET_LAYERS)} or 'features.<0..18>', got {lay!r}"
            )
        else:
            if lay not in _RESNET_LAYERS:
                raise ValueError(f"layers: {name} accepts {_RESNET_LAYERS}, got {lay!r}")
            out.append((lay, len(_RESNET_STEM) + _RESNET_LAYERS.index(lay)))
    if len({d for _, d in out}) != len(out):
        raise ValueError(f"layers: duplicate layers in {layers}")
    return out


class FeatureExtractor(nn.Module):
    """A frozen torchvision network cut after its deepest requested layer; forward -> list of maps."""

    def __init__(self, name: str, layers: Sequence[str] = ("layer2", "layer3")):
        super().__init__()
        self.name = _check_name(name)
        taps = _resolve_layers(name, layers)
        self.layers = [t[0] for t in taps]
        self._tap_depths = [t[1] for t in taps]
        last = max(self._tap_depths)
        ctor, _ = _tv_constructor(name)
        net = ctor(weights=None)
        if name == "mobilenet_v2":
            self.features = net.features[: last + 1]
            self._steps = [("features", i) for i in range(last + 1)]
        else:
            names = list(_RESNET_STEM) + list(_RESNET_LAYERS)
            for n in names[: last + 1]:
                setattr(self, n, getattr(net, n))
            self._steps = [(n, None) for n in names[: last + 1]]
        del net
        self.freeze()
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, 64, 64))
        self.channels: List[int] = [int(f.shape[1]) for f in probe]
        self.strides: List[int] = [int(round(64 / f.shape[-1])) for f in probe]

    def freeze(self) -> "FeatureExtractor":
        for p in self.parameters():
            p.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> "FeatureExtractor":  # stays frozen in eval mode
        return super().train(False)

    def _module(self, step):
        n, i = step
        m = getattr(self, n)
        return m if i is None else m[i]

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        out: Dict[int, torch.Tensor] = {}
        want = set(self._tap_depths)
        for depth, step in enumerate(self._steps):
            x = self._module(step)(x)
            if depth in want:
                out[depth] = x
        return [out[d] for d in self._tap_depths]

    def load_weights(self, state_dict: Dict[str, torch.Tensor], source: str = "state dict") -> "FeatureExtractor":
        """Load a torchvision-keyed state dict (full network or just the truncated part)."""
        sd = {}
        for k, v in state_dict.items():
            for prefix in ("module.", "backbone.", "model."):
                if k.startswith(prefix) and k[len(prefix):] not in state_dict:
                    k = k[len(prefix):]
            sd[k] = v
        own = self.state_dict()
        # keys of the network's cut-off part (classifier, later stages) are allowed and ignored
        ctor, _ = _tv_constructor(self.name)
        full_keys = set(ctor(weights=None).state_dict()) if set(sd) - set(own) else set(own)
        # BatchNorm's num_batches_tracked counter is irrelevant to a frozen network: optional
        missing = sorted(k for k in set(own) - set(sd) if not k.endswith("num_batches_tracked"))
        unexpected = sorted(set(sd) - full_keys)
        bad_shape = sorted(
            k for k in own
            if k in sd and tuple(sd[k].shape) != tuple(own[k].shape) and not k.endswith("num_batches_tracked")
        )
        if missing or unexpected or bad_shape:
            parts = []
            if missing:
                parts.append(f"{len(missing)} missing keys (e.g. {missing[:4]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:4]})")
            if bad_shape:
                parts.append(
                    f"{len(bad_shape)} shape mismatches (e.g. "
                    + ", ".join(f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in bad_shape[:3])
                    + ")"
                )
            raise ValueError(
                f"weights from {source} do not fit torchvision's {self.name}: " + "; ".join(parts)
                + ". Pass a state dict of torchvision.models." + self.name + "()."
            )
        with torch.no_grad():
            for k, t in own.items():
                if k in sd:
                    t.copy_(sd[k].to(dtype=t.dtype).reshape(t.shape))
        return self


def load_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a torch checkpoint (weights_only, no pickle code)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights: file '{path}' does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    is_zip_or_pickle = head[:2] == b"PK" or head[:1] == b"\x80"
    if not is_zip_or_pickle:
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own error types
            raise ValueError(f"weights: '{path}' cannot be read as safetensors: {e}") from None
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"weights: '{path}' cannot be read as a torch state dict (weights_only=True): {e}") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"weights: '{path}' does not hold a state dict (name -> tensor)")
    return sd


def _imagenet_state_dict(name: str) -> Dict[str, torch.Tensor]:
    _, w = _tv_constructor(name)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        return w.get_state_dict(progress=True, check_hash=False)
    except Exception as e:  # URLError, socket errors, HTTP errors, truncated downloads
        raise RuntimeError(
            f"could not download torchvision's ImageNet weights for {name} ({w.url}): {type(e).__name__}: {e}. "
            f"This machine is probably offline: pass a local weights file instead "
            f"(weights='path/to/{name}.safetensors' or a torch state dict; CLI: --weights PATH)."
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def build_backbone(
    name: str,
    layers: Sequence[str] = ("layer2", "layer3"),
    weights: Optional[Union[str, os.PathLike, Dict[str, torch.Tensor]]] = None,
    allow_random: bool = False,
) -> FeatureExtractor:
    """A frozen FeatureExtractor; see the module docstring for `layers` and `weights`."""
    fe = FeatureExtractor(name, layers)
    if weights is None:
        if not allow_random:
            raise ValueError(
                f"backbone {name}: no weights given. Pass weights='path/to/file.safetensors' (or a torch state dict "
                f"file) or weights='imagenet' (torchvision download, needs internet); allow_random=True gives a "
                f"random network, which is only useful for tests."
            )
        warnings.warn(f"backbone {name} uses RANDOM weights (allow_random=True): features are not pretrained")
        return fe
    if isinstance(weights, dict):
        return fe.load_weights(weights, "the given state dict")
    weights = os.fspath(weights)
    if weights == "imagenet":
        return fe.load_weights(_imagenet_state_dict(name), f"torchvision {name} ImageNet weights")
    return fe.load_weights(load_weights_file(weights), f"'{weights}'")


def _is_keras_mobilenet(weights) -> bool:
    """The Keras-converted MobileNetV2 (BatchNorm folded: every running mean 0, running var 1-eps)."""
    if weights is None or weights == "imagenet":
        return False
    if isinstance(weights, dict):
        sd = weights
    else:
        path = os.fspath(weights)
        if "keras" in os.path.basename(path).lower():
            return True
        try:
            sd = load_weights_file(path)
        except (OSError, ValueError):
            return False
    rm, rv = sd.get("features.0.1.running_mean"), sd.get("features.0.1.running_var")
    if rm is None or rv is None:
        return False
    return bool(torch.all(rm == 0) and torch.allclose(rv.float(), torch.full_like(rv.float(), 1 - 1e-5), atol=1e-4))


def default_normalization(name: str, weights=None) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """(mean, std) the weights expect: ImageNet statistics, except the Keras MobileNetV2 conversion
    (x*2-1: mean 0.5, std 0.5; detected by its folded BatchNorm or 'keras' in the file name)."""
    _check_name(name)
    if name == "mobilenet_v2" and _is_keras_mobilenet(weights):
        return tuple(MOBILENET_KERAS_MEAN), tuple(MOBILENET_KERAS_STD)
    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
