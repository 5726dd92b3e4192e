"""Teacher distillation for EfficientAD / PUAD: train a PDN (S or M) to regress a pretrained backbone's features.

The paper distils WideResNet-101 (layer2 + layer3, PatchCore's patch features, 384 channels) on ImageNet.
Here any edgead.models.backbones backbone works. The regression target for an image is built as follows
(edgead's choice where the paper leaves details to PatchCore's feature extractor):

1. the image in [0, 1] is resized to `backbone_scale` x the PDN input size (default 2: 512 for a 256 PDN
   input, so the backbone's stride-8 layer2 map (64x64) is finer than the PDN output (56x56)) and
   normalised with the backbone's own statistics (`default_normalization`; the Keras MobileNetV2 file
   uses mean = std = 0.5);
2. each requested layer's map gets PatchCore's local aggregation (3x3 average pooling, stride 1, pad 1)
   and is bilinearly resized to the PDN output resolution (56x56 at 256); the maps are concatenated;
3. the channels are reduced to 384 with PatchCore's projection, an adaptive average pooling over the
   channel axis, when the concatenation has >= 384 channels (WideResNet-50: 512 + 1024), or lifted to
   384 with a fixed seeded random orthonormal projection when it has fewer (MobileNetV2 layer2 + layer3:
   32 + 96 = 128; the projection matrix is saved in the sidecar's provenance only as its seed);
4. the 384 target channels are standardised by their mean / std over the first batches of the folder
   (as the official pre-training does), and the PDN is trained with MSE against them.

The PDN sees the same image resized to `image_size` and normalised with ImageNet mean/std (the
EfficientAD models' default preprocessing). Training: Adam (lr 1e-4, weight decay 1e-5), random greyscale
with p=0.1 (paper). At the end the teacher's per-channel output mean and std over (up to
`stats_images`) folder images are computed and saved with it:

    out_path (.safetensors): "teacher.<param>" (the PDN state dict), "channel_mean" (384,), "channel_std" (384,)
    out_path with .json:     size, out_channels, backbone, weights, layers, image_size, backbone_scale,
                             projection, pdn_mean/pdn_std, iterations, batch_size, final_loss, n_images

CLI (edgead.cli declares the arguments and calls distill_teacher; the parser never imports torch):

    edgead distill-teacher --backbone mobilenet_v2 --weights ../shared/weights/mobilenet_v2_imagenet.safetensors \
        --images /path/to/imagenet_or_any_images --out teacher_s.safetensors --size S --iterations 60000 \
        --batch-size 8 [--image-size 256] [--layers layer2 layer3] [--device cuda] [--quiet]
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.models.efficientad import build_pdn, pdn_output_size, _check_size_name

__all__ = ["FeatureTarget", "distill_teacher"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureTarget(nn.Module):
    """Backbone features -> (B, out_channels, *out_size) regression targets (steps 1-3 of the module doc)."""

    def __init__(self, backbone: nn.Module, out_size: Tuple[int, int], in_channels: int, out_channels: int = 384, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        if self.in_channels >= self.out_channels:
            self.projection = "adaptive_avg_pool"
            self.register_buffer("proj", torch.zeros(0))
        else:
            self.projection = f"random_orthonormal(seed={seed})"
            g = torch.Generator().manual_seed(int(seed))
            q, _ = torch.linalg.qr(torch.randn(self.out_channels, self.in_channels, generator=g, dtype=torch.float64))
            self.register_buffer("proj", q.float())  # (out, in), orthonormal columns

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        maps = [F.interpolate(F.avg_pool2d(f, 3, 1, 1), size=self.out_size, mode="bilinear", align_corners=False) for f in feats]
        f = torch.cat(maps, dim=1)
        b, c, h, w = f.shape
        if self.projection == "adaptive_avg_pool":
            f = f.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)
            f = F.adaptive_avg_pool1d(f, self.out_channels).reshape(b, h, w, self.out_channels).permute(0, 3, 1, 2)
        else:
            f = torch.einsum("oc,bchw->bohw", self.proj, f)
        return f.contiguous()


def _list_images(image_folder) -> List[str]:
    from edgead.data.datasets import ImageFolder

    return list(ImageFolder(image_folder, recursive=True).paths)


def _read01(path: str, size: Tuple[int, int]) -> np.ndarray:
    """Image -> float32 (3, h, w) in [0, 1] at `size` (h, w)."""
    from edgead.data.io import read_image
    from edgead.data.transforms import Preprocessing

    pre = Preprocessing(size=size, channels=3, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return pre(read_image(path))


def distill_teacher(
    backbone: Union[str, nn.Module] = "wide_resnet50_2",
    weights: Optional[str] = None,
    image_folder: Union[str, Sequence[str]] = None,
    out_path: str = "teacher.safetensors",
    size: str = "S",
    iterations: int = 60000,
    batch_size: int = 8,
    device: str = "cpu",
    progress: bool = True,
    image_size: Sequence[int] = (256, 256),
    layers: Sequence[str] = ("layer2", "layer3"),
    backbone_scale: float = 2.0,
    backbone_mean: Optional[Sequence[float]] = None,
    backbone_std: Optional[Sequence[float]] = None,
    out_channels: int = 384,
    lr: float = 1e-4,
    weight_decay: float = 1e-5,
    seed: int = 0,
    cache_images: int = 512,
    stats_images: int = 1000,
    allow_random: bool = False,
) -> Dict[str, Any]:
    """Distil a PDN-`size` teacher from `backbone` on the images in `image_folder`; save to `out_path`.

    `backbone`: a name from edgead.models.backbones.SUPPORTED (built with `weights`, `layers`) or an
    nn.Module whose forward returns a list of feature maps (then `backbone_mean/std` default to ImageNet).
    Returns the sidecar dict (also written next to `out_path` as JSON).
    """
    from tqdm.auto import tqdm
    from safetensors.torch import save_file

    size = _check_size_name(size)
    if image_folder is None:
        raise ValueError("image_folder: a folder (or list) of images to distil on is required")
    if int(iterations) < 1 or int(batch_size) < 1:
        raise ValueError(f"iterations and batch_size must be >= 1, got {iterations}, {batch_size}")
    h, w = (int(image_size), int(image_size)) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    oh, ow = pdn_output_size(h, w)
    if oh < 1 or ow < 1:
        raise ValueError(f"image_size: too small for the PDN: {(h, w)}")
    bh, bw = int(round(h * backbone_scale)), int(round(w * backbone_scale))

    if isinstance(backbone, str):
        from edgead.models.backbones import build_backbone, default_normalization

        name = backbone
        net = build_backbone(backbone, layers=tuple(layers), weights=weights, allow_random=allow_random)
        dmean, dstd = default_normalization(backbone, weights)
    else:
        name = type(backbone).__name__
        net = backbone
        dmean, dstd = IMAGENET_MEAN, IMAGENET_STD
    bmean = torch.tensor(backbone_mean if backbone_mean is not None else dmean, dtype=torch.float32).reshape(1, 3, 1, 1).to(device)
    bstd = torch.tensor(backbone_std if backbone_std is not None else dstd, dtype=torch.float32).reshape(1, 3, 1, 1).to(device)
    pmean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1).to(device)
    pstd = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1).to(device)
    net = net.to(device).eval()
    with torch.no_grad():
        probe = net(torch.zeros(1, 3, bh, bw, device=device))
    in_ch = sum(int(f.shape[1]) for f in probe)
    target = FeatureTarget(net, (oh, ow), in_ch, out_channels, seed).to(device).eval()

    paths = _list_images(image_folder)
    gen = torch.Generator().manual_seed(int(seed))
    cache: Dict[int, np.ndarray] = {}
    use_cache = len(paths) <= int(cache_images)

    def load_batch(idx) -> torch.Tensor:
        arrs = []
        for i in idx:
            i = int(i)
            a = cache.get(i)
            if a is None:
                a = _read01(paths[i], (bh, bw))
                if use_cache:
                    cache[i] = a
            arrs.append(a)
        return torch.from_numpy(np.stack(arrs)).to(device)

    def inputs(x01: torch.Tensor, augment: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        if augment:
            grey = (0.299 * x01[:, 0] + 0.587 * x01[:, 1] + 0.114 * x01[:, 2]).unsqueeze(1).expand_as(x01)
            pick = (torch.rand(x01.shape[0], generator=gen) < 0.1).to(device).reshape(-1, 1, 1, 1)
            x01 = torch.where(pick, grey, x01)
        xb = (x01 - bmean) / bstd
        xp = F.interpolate(x01, size=(h, w), mode="bilinear", align_corners=False, antialias=True) if (bh, bw) != (h, w) else x01
        return xb, (xp - pmean) / pstd

    # target channel statistics
    n_stat = min(len(paths), max(int(batch_size) * 8, 64))
    perm = torch.randperm(len(paths), generator=gen)[:n_stat]
    s1 = s2 = None
    cnt = 0
    for i in tqdm(range(0, n_stat, int(batch_size)), desc="feature statistics", disable=not progress, leave=False):
        xb, _ = inputs(load_batch(perm[i : i + int(batch_size)]), False)
        f = target(xb).double()
        a, b = f.sum(dim=(0, 2, 3)), (f * f).sum(dim=(0, 2, 3))
        s1 = a if s1 is None else s1 + a
        s2 = b if s2 is None else s2 + b
        cnt += f.shape[0] * f.shape[2] * f.shape[3]
    f_mean = (s1 / cnt).float().reshape(1, -1, 1, 1)
    f_std = (s2 / cnt - (s1 / cnt) ** 2).clamp_min(1e-12).sqrt().float().reshape(1, -1, 1, 1)

    pdn = build_pdn(size, out_channels).to(device).train()
    opt = torch.optim.Adam(pdn.parameters(), lr=lr, weight_decay=weight_decay)
    t0 = time.time()
    bar = tqdm(range(int(iterations)), desc=f"distil PDN-{size} from {name}", disable=not progress)
    last = float("nan")
    for it in bar:
        idx = torch.randint(0, len(paths), (int(batch_size),), generator=gen)
        xb, xp = inputs(load_batch(idx), True)
        with torch.no_grad():
            y = (target(xb) - f_mean) / f_std
        loss = F.mse_loss(pdn(xp), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last = loss.item()
        if it % 10 == 0 or it == int(iterations) - 1:
            bar.set_postfix(loss=f"{last:.4f}")
    bar.close()
    pdn.eval()

    # teacher output channel statistics over the folder
    n_stat = min(len(paths), int(stats_images))
    s1 = s2 = None
    cnt = 0
    with torch.no_grad():
        for i in tqdm(range(0, n_stat, int(batch_size)), desc="teacher mean/std", disable=not progress, leave=False):
            _, xp = inputs(load_batch(range(i, min(i + int(batch_size), n_stat))), False)
            t = pdn(xp).double()
            a, b = t.sum(dim=(0, 2, 3)), (t * t).sum(dim=(0, 2, 3))
            s1 = a if s1 is None else s1 + a
            s2 = b if s2 is None else s2 + b
            cnt += t.shape[0] * t.shape[2] * t.shape[3]
    mean = (s1 / cnt).float()
    std = (s2 / cnt - (s1 / cnt) ** 2).clamp_min(1e-12).sqrt().float()

    tensors = {f"teacher.{k}": v.detach().cpu().contiguous() for k, v in pdn.state_dict().items()}
    tensors["channel_mean"] = mean.cpu().contiguous()
    tensors["channel_std"] = std.cpu().contiguous()
    out_path = os.fspath(out_path)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    save_file(tensors, tmp)
    os.replace(tmp, out_path)
    meta = {
        "kind": "edgead-efficientad-teacher",
        "size": size,
        "out_channels": int(out_channels),
        "backbone": name,
        "weights": None if weights is None else os.fspath(weights),
        "layers": list(layers),
        "image_size": [h, w],
        "output_size": [oh, ow],
        "backbone_scale": float(backbone_scale),
        "backbone_mean": [float(v) for v in bmean.flatten()],
        "backbone_std": [float(v) for v in bstd.flatten()],
        "feature_channels": int(in_ch),
        "projection": target.projection,
        "pdn_mean": list(IMAGENET_MEAN),
        "pdn_std": list(IMAGENET_STD),
        "iterations": int(iterations),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "final_loss": last,
        "n_images": len(paths),
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.splitext(out_path)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=2)
    return meta
