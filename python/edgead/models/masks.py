"""Mask sources and visual obfuscation (mosaic hints) for reconstruction-by-inpainting (EAR / FADeR).

Everything here works on torch tensors laid out (B, C, H, W) with images in [0, 1]. Masks are
float tensors (B, 1, H, W) with 1 = "suspected defect: excise and give a mosaic hint", 0 = keep.

Masks are aligned to the token grid of the mosaic scale ``m`` (one token = one m x m mosaic
cell), so a mosaic cell is either wholly hinted or wholly kept; FADeR's tokens use the same grid
(paper, section 3.2: "we set the patch size for tokenization equal to the mosaic scale").

Mask sources (``config["mask_source"]``), all deterministic at inference:

``reconstruction`` (default; stands in for EAR's DINO-ViT attention, which is not available offline)
    A first pass reconstructs the fully mosaicked image; the per-token squared error between the
    input and that reconstruction is ranked, the top ``mask_ratio`` of tokens are masked and the
    mask is dilated by ``mask_dilate`` tokens. Plain torch ops, so it lives inside the exported
    ONNX graph.
``anomaly_map``
    Another model's anomaly map: a callable ``fn(x) -> (B, H', W')`` or the path of an edgead
    artifact (its model's ``predict`` maps are used). Top ``mask_ratio`` of tokens, dilated.
``attention``
    A user-supplied attention model: callable ``fn(x) -> (B, h, w)`` (e.g. DINO-ViT CLS
    attention). Top ``mask_ratio`` of tokens, dilated -- exactly EAR's recipe when fn is DINO.
``full``
    Every token masked (mosaic everywhere). One U-Net pass; the cheapest deterministic choice.
``none``
    Nothing masked (plain reconstruction; identity-shortcut prone, for ablations).

Only ``reconstruction``, ``full`` and ``none`` are computed inside the exported graph; the
callable sources need the mask as a second network input (see FADeR.export_module).

Training on normal images uses ``train_mask``: ``random`` (default) draws random token blocks
covering a fraction in ``train_mask_ratio`` (RIAD/EAR-style inpainting; normal images have no
defects for a detector to find) or ``source`` (the inference mask source, as EAR does with its
attention masks on normal training images).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

MASK_SOURCES = ("reconstruction", "anomaly_map", "attention", "full", "none")
#: sources whose mask is computed inside the exported network
IN_GRAPH_SOURCES = ("reconstruction", "full", "none")


def mosaic(x: torch.Tensor, m: int) -> torch.Tensor:
    """Pixelation hint: mean over each m x m cell, replicated over the cell. H, W divisible by m."""
    if m <= 1:
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % m or w % m:
        raise ValueError(f"mosaic: image size {h}x{w} is not divisible by the mosaic scale {m}")
    return F.interpolate(F.avg_pool2d(x, m), size=(h, w), mode="nearest")


def obfuscate(x: torch.Tensor, mask: torch.Tensor, m: int) -> torch.Tensor:
    """I' = I * (1 - M) + mosaic(I, m) * M, mask (B,1,H,W) in [0,1]; the result has x's dtype.

    The mask sources build float32 masks (top-k thresholds in float32); without the cast an fp16 network
    (torch backend precision='fp16' on CUDA) got a float32 I' and its first fp16 convolution raised
    "Input type (float) and bias type (c10::Half) should be the same". The cast is skipped when the dtypes
    already agree, so the fp32 export graph is unchanged."""
    if mask.dtype != x.dtype:
        mask = mask.to(x.dtype)
    return x * (1.0 - mask) + mosaic(x, m) * mask


def expand_token_mask(token_mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(B,1,h,w) token mask -> (B,1,H,W) pixel mask by nearest upsampling."""
    return F.interpolate(token_mask, size=(int(size[0]), int(size[1])), mode="nearest")


def token_error(x: torch.Tensor, y: torch.Tensor, m: int) -> torch.Tensor:
    """Patch-wise L2 (mean squared error over each m x m token and all channels) -> (B, H/m, W/m).

    This is FADeR's ground truth l_i = L2(tau_i^I, tau_i^Ihat) (eq. 1), as a mean so its scale does
    not depend on m or C.
    """
    return F.avg_pool2d((x - y) ** 2, m).mean(dim=1)


def top_ratio_token_mask(score: torch.Tensor, m: int, ratio: float, dilate: int = 0,
                         image_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Per-image top-``ratio`` tokens of a score map -> token mask (B,1,h,w) float.

    ``score`` is (B, h, w) on the token grid, or (B, H', W') at any other resolution (max-pooled /
    resized to the token grid of ``image_size``). Dilation: a (2*dilate+1)^2 max filter on the grid.
    """
    if score.dim() == 4:
        score = score[:, 0]
    s = score.unsqueeze(1).float()
    if image_size is not None:
        gh, gw = int(image_size[0]) // m, int(image_size[1]) // m
        if tuple(s.shape[-2:]) != (gh, gw):
            if s.shape[-2] % gh == 0 and s.shape[-1] % gw == 0:
                s = F.max_pool2d(s, (s.shape[-2] // gh, s.shape[-1] // gw))
            else:
                s = F.interpolate(s, size=(gh, gw), mode="bilinear", align_corners=False)
    if ratio <= 0:
        return torch.zeros_like(s)
    n = int(s.shape[-2]) * int(s.shape[-1])  # static: only the batch is dynamic in export
    k = max(1, min(n, int(round(float(ratio) * n))))
    flat = s.flatten(1)
    thr = torch.topk(flat, k, dim=1).values[:, k - 1 : k]  # k-th largest per image
    tm = (s >= thr.reshape(-1, 1, 1, 1)).to(s.dtype)
    if dilate > 0:
        tm = F.max_pool2d(tm, 2 * dilate + 1, stride=1, padding=dilate)
    return tm


def random_block_mask(batch: int, size: Sequence[int], m: int, ratio_range: Sequence[float] = (0.1, 0.5),
                      block: int = 2, generator: Optional[torch.Generator] = None,
                      device: Any = "cpu") -> torch.Tensor:
    """Training mask for normal images: random blocks of ``block`` x ``block`` tokens, covering a
    fraction drawn uniformly from ``ratio_range`` per image. Returns (B,1,H,W) float on the token grid."""
    h, w = int(size[0]) // m, int(size[1]) // m
    bh, bw = max(1, -(-h // block)), max(1, -(-w // block))
    lo, hi = float(ratio_range[0]), float(ratio_range[1])
    p = lo + (hi - lo) * torch.rand(batch, 1, 1, 1, generator=generator)
    coarse = (torch.rand(batch, 1, bh, bw, generator=generator) < p).float()
    tm = F.interpolate(coarse, size=(bh * block, bw * block), mode="nearest")[..., :h, :w]
    return expand_token_mask(tm, size).to(device)


# ------------------------------------------------------------------------------------------------
# Mask sources
# ------------------------------------------------------------------------------------------------
class MaskSource:
    """Callable ``source(model, x) -> mask (B,1,H,W)``; ``in_graph`` says whether it is plain torch
    over the model (exportable) or needs an external input at deployment."""

    in_graph = True

    def __init__(self, m: int, ratio: float = 0.1, dilate: int = 1):
        self.m, self.ratio, self.dilate = int(m), float(ratio), int(dilate)

    def __call__(self, model, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ReconstructionMask(MaskSource):
    """Top-k token error of a plain reconstruction of the fully mosaicked image, dilated."""

    def __call__(self, model, x):
        recon0 = model.unet(mosaic(x, self.m))
        err = token_error(x, recon0, self.m)
        tm = top_ratio_token_mask(err, self.m, self.ratio, self.dilate)
        return expand_token_mask(tm, x.shape[-2:])


class FullMask(MaskSource):
    def __call__(self, model, x):
        return torch.ones_like(x[:, :1])


class NoMask(MaskSource):
    def __call__(self, model, x):
        return torch.zeros_like(x[:, :1])


class CallableMapMask(MaskSource):
    """Mask from a score map computed by an external callable (anomaly map or attention)."""

    in_graph = False

    def __init__(self, fn: Callable, m: int, ratio: float = 0.1, dilate: int = 1):
        super().__init__(m, ratio, dilate)
        if not callable(fn):
            raise TypeError(f"mask source: expected a callable fn(x) -> (B,h,w) map, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, model, x):
        with torch.no_grad():
            s = self.fn(x)
        if isinstance(s, tuple):  # AnomalyModel.predict -> (scores, maps)
            s = s[1]
        s = torch.as_tensor(s, dtype=torch.float32, device=x.device)
        if s.dim() == 2:
            s = s.unsqueeze(0)
        if s.dim() not in (3, 4) or s.shape[0] != x.shape[0]:
            raise ValueError(f"mask source: map function returned shape {tuple(s.shape)}, expected (B={x.shape[0]}, h, w)")
        tm = top_ratio_token_mask(s, self.m, self.ratio, self.dilate, image_size=x.shape[-2:])
        return expand_token_mask(tm, x.shape[-2:])


def artifact_map_fn(artifact_dir: str, device: str = "cpu") -> Callable:
    """anomaly_map source from another edgead artifact: fn(x) -> that model's anomaly maps.

    x is FADeR's preprocessed input in [0,1]; it is re-normalised to the other model's
    preprocessing (mean/std) and resized to its input size when they differ."""
    from edgead.models import load_model

    other = load_model(artifact_dir, device=device)
    pre = other.preprocessing()
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)

    def fn(x: torch.Tensor):
        y = x
        if y.shape[1] != pre.channels:
            y = y.mean(1, keepdim=True) if pre.channels == 1 else y.expand(-1, 3, -1, -1)
        if tuple(y.shape[-2:]) != tuple(pre.size):
            y = F.interpolate(y, size=tuple(pre.size), mode="bilinear", align_corners=False)
        y = (y - mean.to(y.device)) / std.to(y.device)
        return other.predict(y)[1]

    return fn


def build_mask_source(name: str, m: int, ratio: float = 0.1, dilate: int = 1, fn: Any = None) -> MaskSource:
    """Mask source by name. ``fn``: the callable (or artifact path for ``anomaly_map``)."""
    if name not in MASK_SOURCES:
        raise ValueError(f"mask_source: expected one of {MASK_SOURCES}, got {name!r}")
    if name == "reconstruction":
        return ReconstructionMask(m, ratio, dilate)
    if name == "full":
        return FullMask(m, ratio, dilate)
    if name == "none":
        return NoMask(m, ratio, dilate)
    if fn is None:
        raise ValueError(
            f"mask_source {name!r} needs a callable (config 'mask_fn' / FADeR.set_mask_fn)"
            + (" or an artifact path ('mask_artifact')" if name == "anomaly_map" else "")
        )
    if isinstance(fn, str):
        if name != "anomaly_map":
            raise ValueError("mask_source 'attention' expects a callable, not a path")
        fn = artifact_map_fn(fn)
    return CallableMapMask(fn, m, ratio, dilate)
