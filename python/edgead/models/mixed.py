"""Mixed supervision (ISP-AD, Krassnig et al.): a pretrained CNN fine-tuned as a defect classifier with a
light segmentation head, trained on normal images + synthetic defects + the few real defects a line has.

    recipe models/mixed.yaml (MobileNetV2, the shared weights) or models/mixed_resnet18.yaml
    edgead train mixed DATA OUT                              # cold start: synthetic defects only
    edgead train mixed DATA OUT --defects DEFECTS_DIR         # + real defects (masks or image labels)
    edgead train mixed DATA OUT2 --defects DIR --init OUT     # continue from an earlier artifact

Training stream (paper, section 5.1): every normal training image is augmented (flips, rotation, scale,
shear, brightness/contrast: Table 8); in 50 % of them (``synthetic_fraction``) a synthetic defect is painted
(random walk with momentum, :func:`random_walk_defect`, plus the painters of edgead.data.synthetic), which
makes a balanced stream; each sample of the stream is then replaced by an augmented real defect with
probability ``real_probability`` (paper: 1/32). Losses: BCE of the image logit for every sample; BCE of the
1/8-resolution segmentation logits for samples with a mask (normal images: all-zero mask; synthetic
defects: the painter's mask; real defects with a mask file). Real defects with an image-level label only
(the paper's weak labels) get the classification loss only.

Optimiser (paper, section 5.1): SGD, momentum 0.9, weight decay 1e-2, cosine annealing with warm restarts
(T_0, T_mult = 2), early stop when the validation loss has not improved for ``patience`` epochs, keep the
state with the lowest validation loss. Every deviation from the paper is listed in docs/mixed.md.

Network (exported as one ONNX graph, like EfficientAD): image (B,3,H,W) -> 3x3 Gaussian smoothing (paper's
preprocessing, inside the graph) -> backbone (truncated after its deepest requested layer, fine-tuned) ->
1x1 projections of each tapped layer to ``head_channels``, upsampled to the shallowest tap and summed ->
two 3x3 convs -> 1x1 conv: segmentation logits (B,1,H/8,W/8) -> bilinear to (H,W), sigmoid: "map";
classifier: linear layer over [avg-pooled deepest features, avg- and max-pooled head features, max and
mean of the segmentation logits] -> sigmoid: "score". Post-processing: edgead.runtime.post_mixed.

Real-defect calibration (``calibration: auto``, edgead's addition, docs/mixed.md): with the normality prior
and >= ``calibration_min_defects`` real defects, the classifier's linear layer is refitted after training on
the real defects vs the held-out normal images (:func:`balanced_logistic`); the graph is unchanged.

Real defects (``defects`` / ``--defects DIR``), see :func:`load_real_defects`: an MVTec-layout folder
(``DIR/test/<type>/*`` or ``DIR/<type>/*`` images, masks in ``DIR/ground_truth/<type>/<stem>_mask.png``) or a
flat folder of images. An image without a mask file is a weak (image-level) label. Every file read is
validated: readable image, mask size == image size, mask binary (values {0, max}; anti-aliased masks need
``mask_threshold``), mask not empty; errors name the file.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.models.base import AnomalyModel, seeded_init

__all__ = [
    "MixedSupervision",
    "MixedNet",
    "RealDefect",
    "DEFAULTS",
    "PAINTERS",
    "random_walk_defect",
    "load_real_defects",
    "validate_mask",
    "augment",
    "balanced_logistic",
]

SHARED_MOBILENET = "mobilenet_v2_imagenet.safetensors"

DEFAULTS: Dict[str, Any] = {
    # network
    "backbone": "mobilenet_v2",
    "weights": "auto",            # auto: $EDGEAD_MOBILENET_WEIGHTS or ../shared/weights (MobileNetV2); a path; "imagenet"
    "layers": ["layer2", "layer3"],
    "head_channels": 64,
    "blur_sigma": 1.0,            # paper: Gaussian smoothing, kernel 3, sigma 1 (0 disables)
    # normality prior (edgead's addition, not in the paper; docs/mixed.md): "none" = the paper's model;
    # "knn" = distance of each location's frozen-backbone PatchCore feature to a bank of normal patches
    "normal_prior": "none",
    "prior_bank_size": 4096,      # bank rows (greedy coreset of the candidates)
    "prior_candidates": 50000,    # seeded uniform sample of normal training patches the coreset runs on
    "prior_quantile": 0.99,       # scale = this quantile of the held-out normal images' patch distances
    # real-defect calibration of the image score (edgead's addition, docs/mixed.md): "auto" = with the prior
    # and >= calibration_min_defects real defects, refit the classifier's linear layer after training on the
    # real defects vs the held-out normal images (class-balanced L2 logistic regression); "none": keep the
    # classifier trained on the stream
    "calibration": "auto",
    "calibration_min_defects": 5,
    "calibration_c": 0.1,         # inverse L2 strength on standardised inputs (scikit-learn's C)
    "image_size": [224, 224],
    "mean": "auto",               # auto: what the weights expect (edgead.models.backbones.default_normalization)
    "std": "auto",
    # training stream
    "synthetic_fraction": 0.5,    # paper: synthetic defects in 50 % of the normal images
    "painters": {"walk": 0.5, "scratch": 0.1, "spot": 0.1, "contamination": 0.1, "smudge": 0.1, "faint": 0.1},
    "real_probability": 1.0 / 32, # paper: 1/32
    "defects": None,              # folder of real defects (see load_real_defects)
    "max_defects": None,          # use only the first N real defects (sorted paths); None: all
    "mask_threshold": None,       # None: masks must be binary; a number: binarise (value >= threshold)
    "augment_probability": 0.9,   # paper: 80-95 % of the patches
    "rotation": 45.0, "scale": [0.9, 1.1], "shear": 10.0, "flip": True,
    "brightness": [0.75, 1.25], "contrast": [0.75, 1.25],
    # optimisation
    "batch_size": 16,
    "epochs": 30,
    "steps_per_epoch": None,      # None: ceil(#normal training images / batch_size)
    "lr": 0.01,
    "lr_min": 1.0e-4,
    "backbone_lr_scale": 0.1,     # 0: backbone frozen (no backward through it: cheaper steps)
    "momentum": 0.9,
    "weight_decay": 1.0e-2,
    "t0_epochs": 10,              # cosine warm restarts: first period in epochs (paper: T_0 = 7813 steps)
    "t_mult": 2,
    "patience": 20,               # paper: 20 epochs without validation-loss improvement
    "seg_weight": 1.0,
    "seg_pos_weight": 5.0,
    "init": None,                 # artifact to continue from (--init)
    "seed": 0,
}

CALIBRATIONS = ("auto", "none")
_ARCH_KEYS = ("backbone", "layers", "head_channels", "blur_sigma", "normal_prior")
NORMAL_PRIORS = ("none", "knn")
PRIOR_GAIN = 4.0        # initial weight of the normalised prior distance in both heads' logits
PRIOR_IMAGE_AT = 1.5    # initial image logit 0 at max prior distance 1.5 x the scale


# ------------------------------------------------------------------------------------------------
# synthetic defects: random walk with momentum (Haselmann & Gruber; ISP-AD section 3.2)
# ------------------------------------------------------------------------------------------------
def random_walk_defect(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """A defect texture drawn by a random walk with momentum: a brush of slowly varying radius follows
    a path whose velocity keeps a fraction (momentum 0.6-0.95) of its previous value; the stroke is
    softened and shifts the grey level by 12-90 levels (weak to strong contrast, darker or brighter),
    modulated by the texture. Returns (image uint8, bool mask); pixels outside the mask are unchanged."""
    a = np.asarray(img)
    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3) or min(a.shape[:2]) < 16:
        raise ValueError(f"img: expected a uint8 HxW or HxWx3 image of at least 16x16, got {a.dtype} {a.shape}")
    h, w = a.shape[:2]
    s = min(h, w) / 224.0
    n = int(rng.integers(15, 150))
    mom = float(rng.uniform(0.6, 0.95))
    speed = float(rng.uniform(0.8, 2.5)) * max(s, 0.5)
    r = float(rng.uniform(1.0, 5.0)) * max(s, 0.5)
    y, x = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
    ang = rng.uniform(0, 2 * np.pi)
    v = np.array([np.cos(ang), np.sin(ang)]) * speed
    acc = np.zeros((h, w), np.float32)
    for _ in range(n):
        noise = rng.normal(0, 1, 2) * speed
        v = mom * v + (1 - mom) * noise
        norm = float(np.hypot(*v))
        if norm > 0:
            v = v / norm * speed
        x, y = x + v[0], y + v[1]
        if not (0 <= x < w and 0 <= y < h):
            break
        r = float(np.clip(r + rng.normal(0, 0.3), 0.7, 7.0 * max(s, 0.5)))
        cv2.circle(acc, (int(round(x)), int(round(y))), max(1, int(round(r))), 1.0, thickness=-1)
    if not acc.any():
        cv2.circle(acc, (w // 2, h // 2), 2, 1.0, thickness=-1)
    soft = cv2.GaussianBlur(acc, (0, 0), sigmaX=max(0.8, 1.2 * s))
    mask = soft > 0.25
    alpha = np.where(mask, np.clip(soft / max(float(soft.max()), 1e-6), 0.0, 1.0), 0.0).astype(np.float32)
    delta = float(rng.uniform(12, 90)) * (1 if rng.random() < 0.5 else -1)
    f = a.astype(np.float32)
    tex = 0.75 + 0.5 * rng.random((h, w)).astype(np.float32)
    tex = cv2.GaussianBlur(tex, (0, 0), 1.0)
    if f.ndim == 3:
        alpha, tex = alpha[:, :, None], tex[:, :, None]
    new = f + delta * alpha * tex
    out = a.copy()
    out[mask] = np.clip(np.rint(new), 0, 255).astype(np.uint8)[mask]
    return out, mask


def _painter(name: str):
    if name == "walk":
        return random_walk_defect
    from edgead.data import synthetic

    if name not in synthetic.DEFECTS:
        raise ValueError(f"painters: unknown painter {name!r}; expected 'walk' or one of {synthetic.DEFECT_TYPES}")
    return lambda img, rng: synthetic.paint_defect(name, img, rng)


PAINTERS = ("walk",) + ("scratch", "spot", "contamination", "smudge", "faint")


def _check_painters(p: Any) -> Tuple[List[str], np.ndarray]:
    if isinstance(p, (list, tuple)):
        p = {k: 1.0 for k in p}
    if not isinstance(p, dict) or not p:
        raise ValueError(f"painters: expected a non-empty mapping name -> weight, got {p!r}")
    names = list(p)
    for n in names:
        _painter(n)
    w = np.array([float(p[n]) for n in names], np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"painters: weights must be finite, >= 0 and not all 0, got {p!r}")
    return names, w / w.sum()


# ------------------------------------------------------------------------------------------------
# augmentation (paper Table 8), applied to an image and its mask alike
# ------------------------------------------------------------------------------------------------
def augment(img: np.ndarray, mask: Optional[np.ndarray], rng: np.random.Generator, cfg: Dict[str, Any]):
    """Random flips + affine (rotation, scale, shear; reflect border) with probability
    cfg['augment_probability'], then brightness/contrast. img uint8 HxWx3, mask bool HxW or None."""
    if rng.random() >= float(cfg["augment_probability"]):
        return img, mask
    h, w = img.shape[:2]
    if cfg.get("flip", True):
        if rng.random() < 0.5:
            img = img[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        if rng.random() < 0.5:
            img = img[::-1]
            mask = None if mask is None else mask[::-1]
    rot = float(rng.uniform(-1, 1) * float(cfg["rotation"]))
    sc = float(rng.uniform(*cfg["scale"]))
    sh = math.radians(float(rng.uniform(-1, 1) * float(cfg["shear"])))
    if rot or sc != 1.0 or sh:
        M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), rot, sc)
        S = np.array([[1.0, math.tan(sh), -math.tan(sh) * h / 2.0], [0, 1, 0], [0, 0, 1]])
        M = (np.vstack([M, [0, 0, 1]]) @ S)[:2]
        img = cv2.warpAffine(np.ascontiguousarray(img), M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if mask is not None:
            mask = cv2.warpAffine(np.ascontiguousarray(mask).astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST,
                                  borderMode=cv2.BORDER_REFLECT_101) > 0
    b = rng.uniform(*cfg["brightness"]) if cfg.get("brightness") else 1.0
    c = rng.uniform(*cfg["contrast"]) if cfg.get("contrast") else 1.0
    if b != 1.0 or c != 1.0:
        f = img.astype(np.float32) * b
        m = float(f.mean())
        img = np.clip((f - m) * c + m, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img), (None if mask is None else np.ascontiguousarray(mask))


# ------------------------------------------------------------------------------------------------
# real defects: discovery + validation
# ------------------------------------------------------------------------------------------------
@dataclass
class RealDefect:
    path: str
    defect_type: str
    mask_path: Optional[str]  # None: weak (image-level) label


def validate_mask(mask_path: str, image_shape: Sequence[int], threshold: Optional[float] = None) -> np.ndarray:
    """Read and check a real-defect mask -> bool (H, W). ValueError naming the file when its size differs
    from the image, it is not binary (with threshold=None), it has several differing channels, or it
    marks no pixel."""
    from edgead.data.io import read_image

    m = read_image(mask_path)
    if m.ndim == 3:
        if not all(np.array_equal(m[:, :, 0], m[:, :, i]) for i in range(1, m.shape[2])):
            raise ValueError(f"mask {mask_path}: expected a single-channel mask, got {m.shape[2]} differing channels")
        m = m[:, :, 0]
    shp = tuple(int(s) for s in tuple(image_shape)[:2])
    if m.shape != shp:
        raise ValueError(f"mask {mask_path}: size {m.shape[1]}x{m.shape[0]} (WxH) differs from its image's {shp[1]}x{shp[0]}")
    if threshold is None:
        vals = np.unique(m)
        nz = vals[vals != 0]
        if nz.size > 1 or (vals.size > 2):
            raise ValueError(
                f"mask {mask_path}: not binary ({vals.size} distinct values, e.g. {vals[:6].tolist()}); "
                f"expected 0 and one foreground value. For anti-aliased masks set mask_threshold (e.g. 128)"
            )
        out = m != 0
    else:
        out = m >= float(threshold)
    if not out.any():
        raise ValueError(f"mask {mask_path}: marks no defect pixel; delete it to use its image as a weak "
                         f"(image-level) label")
    return out


def load_real_defects(folder: str, max_defects: Optional[int] = None) -> List[RealDefect]:
    """Find real defect images in `folder` (layouts in the module docstring), sorted by (type, path)."""
    from edgead.data.datasets import list_images
    from edgead.data.io import IMAGE_EXTENSIONS

    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"defects: folder '{folder}' does not exist")
    base = os.path.join(folder, "test") if os.path.isdir(os.path.join(folder, "test")) else folder
    gt = os.path.join(folder, "ground_truth")
    out: List[RealDefect] = []
    for p in list_images(base):  # flat folder: weak labels
        out.append(RealDefect(p, "defect", None))
    for d in sorted(os.listdir(base)):
        dp = os.path.join(base, d)
        if d in ("good", "ground_truth") or d.startswith(".") or not os.path.isdir(dp):
            continue
        for p in list_images(dp):
            stem = os.path.splitext(os.path.basename(p))[0]
            mp = None
            for name in (stem + "_mask", stem):
                for ext in IMAGE_EXTENSIONS:
                    c = os.path.join(gt, d, name + ext)
                    if os.path.isfile(c):
                        mp = c
                        break
                if mp:
                    break
            out.append(RealDefect(p, d, mp))
    if not out:
        raise ValueError(f"defects: no defect images found in '{folder}' (expected <type>/*.png, test/<type>/*.png "
                         f"or images directly in the folder)")
    if max_defects is not None:
        out = out[: int(max_defects)]
    return out


# ------------------------------------------------------------------------------------------------
# network
# ------------------------------------------------------------------------------------------------
def _gauss_kernel(sigma: float) -> torch.Tensor:
    x = torch.arange(3, dtype=torch.float32) - 1
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, 3, 3).contiguous()


class MixedNet(nn.Module):
    """image -> (score (B,), map (B,H,W)); `logits(image)` -> (seg logits (B,1,h,w), image logit (B,)).

    normal_prior "knn" adds a PatchCore-style normality prior: a frozen copy of the ImageNet backbone
    (`prior_embedder`, edgead.models.patchcore.PatchEmbedder: 3x3 average, deeper maps upsampled to the
    first tap's grid, concatenated) embeds every location of the (blurred) image; its L2 distance to the
    nearest row of `prior_bank` (normal training patches, fitted before training) divided by `prior_scale`
    is one extra input channel of the segmentation head (both convolution stacks' inputs) and its max and
    mean are classifier inputs; with the prior the classifier sees only [seg max, seg mean, prior max, prior
    mean], and both heads are initialised to follow the prior (PRIOR_GAIN, PRIOR_IMAGE_AT). The distance is plain torch (min over the bank of |b|^2 - 2 q.b, + |q|^2,
    clamp >= 0, sqrt), so the whole net stays one exportable graph."""

    def __init__(self, backbone: str, layers: Sequence[str], head_channels: int = 64, blur_sigma: float = 1.0,
                 normal_prior: str = "none"):
        super().__init__()
        from edgead.models.backbones import FeatureExtractor

        self.backbone = FeatureExtractor(backbone, layers)
        for p in self.backbone.parameters():
            p.requires_grad_(True)  # fine-tuned; BatchNorm keeps its running statistics (eval mode)
        self.backbone_frozen = False
        self.use_blur = float(blur_sigma) > 0
        self.register_buffer("blur", _gauss_kernel(float(blur_sigma) if self.use_blur else 1.0))
        self.normal_prior = normal_prior
        extra = 0
        if normal_prior == "knn":
            from edgead.models.patchcore import PatchEmbedder

            self.prior_embedder = PatchEmbedder(FeatureExtractor(backbone, layers))  # frozen (requires_grad False)
            self.register_buffer("prior_bank", torch.zeros(0, self.prior_embedder.feature_dim))
            self.register_buffer("prior_scale", torch.ones(1))
            # the trainable backbone's maps serve the prior when both hold identical frozen weights
            self.share_prior_backbone = False
            extra = 1
        hc = int(head_channels)
        self.proj = nn.ModuleList([nn.Conv2d(c, hc, 1) for c in self.backbone.channels])
        self.seg = nn.Sequential(
            nn.Conv2d(hc + extra, hc, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hc, hc, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.seg_out = nn.Conv2d(hc + extra, 1, 1)
        c_deep = self.backbone.channels[int(np.argmax(self.backbone.strides))]
        self._deep = int(np.argmax(self.backbone.strides))
        if extra:
            # with the prior the classifier sees only [seg max, seg mean, prior max, prior mean] (pooled
            # high-dimensional features overfit the synthetic defects: see docs/mixed.md), and both heads
            # start as the prior: map = sigmoid(PRIOR_GAIN * (d - 1)), logit = PRIOR_GAIN * (max d - PRIOR_IMAGE_AT)
            self.cls = nn.Linear(4, 1)
            with torch.no_grad():
                self.cls.weight.zero_()
                self.cls.weight[0, 2] = PRIOR_GAIN
                self.cls.bias.fill_(-PRIOR_GAIN * PRIOR_IMAGE_AT)
                self.seg_out.weight[0, hc] = PRIOR_GAIN
                self.seg_out.bias.fill_(-PRIOR_GAIN)
        else:
            self.cls = nn.Linear(c_deep + 2 * hc + 2, 1)

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Frozen: no gradient for the backbone, and its forward runs without autograd (cheaper steps)."""
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone_frozen = bool(frozen)

    def backbones_equal(self) -> bool:
        """True when the trainable backbone holds exactly the prior's frozen weights (then it is shared)."""
        if self.normal_prior != "knn":
            return False
        a, b = self.backbone.state_dict(), self.prior_embedder.backbone.state_dict()
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def set_prior(self, bank: torch.Tensor, scale: float) -> None:
        if self.normal_prior != "knn":
            raise ValueError("set_prior: this net has normal_prior 'none'")
        c = self.prior_embedder.feature_dim
        if bank.ndim != 2 or bank.shape[1] != c or bank.shape[0] < 1:
            raise ValueError(f"prior_bank: expected (M >= 1, {c}), got {tuple(bank.shape)}")
        self.prior_bank = bank.detach().float().contiguous().to(self.blur.device)
        self.prior_scale = torch.tensor([float(scale)], dtype=torch.float32, device=self.blur.device)

    def prior_embed(self, x: torch.Tensor, feats: Optional[List[torch.Tensor]] = None) -> torch.Tensor:
        """(blurred, normalised) image -> prior embeddings (B, N, C) on the first tap's grid."""
        if feats is None:
            feats = self.prior_embedder.backbone(x)
        return self.prior_embedder.aggregate(feats)

    def prior_distance(self, q: torch.Tensor) -> torch.Tensor:
        """(B, N, C) embeddings -> (B, N) L2 distance to the nearest bank row (not normalised)."""
        bank = self.prior_bank
        if bank.shape[0] == 0:
            raise ValueError("mixed: the normality prior has no memory bank (fit the model first)")
        b, n, c = q.shape
        qf = q.reshape(-1, c)
        b2 = (bank * bank).sum(dim=-1)
        # min_j (|b_j|^2 - 2 q.b_j) + |q|^2: one fused GEMM (addmm) and one reduction over the bank
        d2 = torch.addmm(b2, qf, bank.t(), alpha=-2.0).amin(dim=-1) + (qf * qf).sum(dim=-1)
        return d2.clamp_min(0.0).sqrt().reshape(b, n)

    def smooth(self, image: torch.Tensor) -> torch.Tensor:
        """The paper's preprocessing inside the graph: 3x3 Gaussian smoothing (identity when blur_sigma is 0)."""
        return F.conv2d(image, self.blur, padding=1, groups=3) if self.use_blur else image

    def logits(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        seg, parts = self.heads(image)
        return seg, self.cls(parts)[:, 0]

    def heads(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """image -> (segmentation logits (B,1,h,w), the classifier's input (B, D))."""
        x = self.smooth(image)
        if self.backbone_frozen:
            with torch.no_grad():
                feats = self.backbone(x)
        else:
            feats = self.backbone(x)
        size = feats[0].shape[-2:]
        prior = None
        if self.normal_prior == "knn":
            with torch.no_grad():
                q = self.prior_embed(x, feats if self.share_prior_backbone else None)
                d = self.prior_distance(q) / self.prior_scale
                prior = d.reshape(d.shape[0], 1, size[0], size[1])
        h = 0
        for f, p in zip(feats, self.proj):
            y = p(f)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            h = h + y
        h = F.relu(h)
        if prior is not None:
            h = self.seg(torch.cat([h, prior], dim=1))
            seg = self.seg_out(torch.cat([h, prior], dim=1))
        else:
            h = self.seg(h)
            seg = self.seg_out(h)
        seg_pool = [seg.flatten(1).amax(dim=1, keepdim=True), seg.mean(dim=(2, 3))]
        if prior is not None:
            parts = seg_pool + [prior.flatten(1).amax(dim=1, keepdim=True), prior.mean(dim=(2, 3))]
        else:
            deep = feats[self._deep]
            parts = [deep.mean(dim=(2, 3)), h.mean(dim=(2, 3)), h.amax(dim=(2, 3))] + seg_pool
        return seg, torch.cat(parts, dim=1)

    def forward(self, image: torch.Tensor):
        H, W = image.shape[-2], image.shape[-1]
        seg, cls = self.logits(image)
        amap = torch.sigmoid(F.interpolate(seg, size=(int(H), int(W)), mode="bilinear", align_corners=False))[:, 0]
        return torch.sigmoid(cls), amap


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
def _find_weights(backbone: str, weights: Any) -> Any:
    if weights != "auto":
        return weights
    if backbone != "mobilenet_v2":
        return "imagenet"
    env = os.environ.get("EDGEAD_MOBILENET_WEIGHTS")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    for start in (repo, os.getcwd()):
        base = start
        for _ in range(3):  # ../shared next to the checkout, or next to a parent (git worktrees)
            base = os.path.dirname(base)
            cand = os.path.join(base, "shared", "weights", SHARED_MOBILENET)
            if os.path.isfile(cand):
                return cand
    raise ValueError("weights: 'auto' found no MobileNetV2 weights ($EDGEAD_MOBILENET_WEIGHTS or "
                     f"../shared/weights/{SHARED_MOBILENET}); pass weights=PATH (CLI --weights) or 'imagenet'")


def balanced_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int = 100, tol: float = 1e-10):
    """Class-balanced L2-regularised logistic regression (scikit-learn's objective with
    class_weight="balanced", intercept not penalised): minimise 0.5 |w|^2 + c * sum_i s_i log(1 + exp(-t_i
    (x_i.w + b))), t_i = +-1, s_i = n / (2 n_class(i)). Newton's method with step halving (a handful of
    inputs). Returns (w (D,), b)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"balanced_logistic: expected x (N, D) and y (N,), got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("balanced_logistic: x has non-finite values")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos + n_neg != len(y) or n_pos == 0 or n_neg == 0:
        raise ValueError(f"balanced_logistic: y must hold both labels 0 and 1 only, got {n_neg} zeros and {n_pos} ones of {len(y)}")
    n, d = x.shape
    xa = np.concatenate([x, np.ones((n, 1))], axis=1)
    t = np.where(y == 1, 1.0, -1.0)
    s = np.where(y == 1, n / (2.0 * n_pos), n / (2.0 * n_neg)) * float(c)
    reg = np.ones(d + 1)
    reg[-1] = 0.0  # the intercept is not penalised

    def objective(theta):
        z = t * (xa @ theta)
        return 0.5 * float((reg * theta * theta).sum()) + float((s * np.logaddexp(0.0, -z)).sum())

    theta = np.zeros(d + 1)
    f = objective(theta)
    for _ in range(max_iter):
        z = xa @ theta
        p = np.exp(-np.logaddexp(0.0, -z))  # sigmoid without overflow for large |z|
        g = reg * theta + xa.T @ (s * (p - (t > 0)))
        h = np.diag(reg) + (xa * (s * p * (1.0 - p))[:, None]).T @ xa + 1e-12 * np.eye(d + 1)
        step = np.linalg.solve(h, g)
        a = 1.0
        while a > 1e-8:
            cand = theta - a * step
            fc = objective(cand)
            if fc <= f:
                break
            a *= 0.5
        else:
            break
        theta, f_old, f = cand, f, fc
        if f_old - f <= tol * max(1.0, abs(f)):
            break
    return theta[:-1], float(theta[-1])


def _check_prob(cfg, key):
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
        raise ValueError(f"config '{key}': expected a probability in [0, 1], got {v!r}")


def _check_finite_min(cfg, key, strict, hint=""):
    """cfg[key] a finite number > 0 (strict) or >= 0; `hint` is added to the message after the bound."""
    v = cfg[key]
    if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v))
            or (float(v) <= 0 if strict else float(v) < 0)):
        raise ValueError(f"config '{key}': expected a finite number {'>' if strict else '>='} 0{hint}, got {v!r}")


def _check_pos_int(cfg, key, allow_none=False):
    v = cfg[key]
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"config '{key}': expected a positive integer, got {v!r}")


class MixedSupervision(AnomalyModel):
    """Defect classifier + segmentation head trained on normal, synthetic and real defective images."""

    model_type = "mixed"
    export_outputs = ("score", "map")

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        unknown = sorted(set(config or {}) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"mixed: unknown config key(s) {unknown}; expected some of {sorted(DEFAULTS)}")
        cfg = dict(DEFAULTS)
        cfg.update(config or {})
        for k in ("synthetic_fraction", "real_probability", "augment_probability"):
            _check_prob(cfg, k)
        for k in ("batch_size", "epochs", "head_channels", "t0_epochs", "t_mult", "patience"):
            _check_pos_int(cfg, k)
        _check_pos_int(cfg, "steps_per_epoch", allow_none=True)
        _check_pos_int(cfg, "max_defects", allow_none=True)
        _check_painters(cfg["painters"])
        if cfg["normal_prior"] is None:
            cfg["normal_prior"] = "none"
        if cfg["normal_prior"] not in NORMAL_PRIORS:
            raise ValueError(f"config 'normal_prior': expected one of {NORMAL_PRIORS}, got {cfg['normal_prior']!r}")
        for k in ("prior_bank_size", "prior_candidates", "calibration_min_defects"):
            _check_pos_int(cfg, k)
        if cfg["calibration"] not in CALIBRATIONS:
            raise ValueError(f"config 'calibration': expected one of {CALIBRATIONS}, got {cfg['calibration']!r}")
        _check_finite_min(cfg, "calibration_c", strict=True)
        q = cfg["prior_quantile"]
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0:
            raise ValueError(f"config 'prior_quantile': expected a number in (0, 1], got {q!r}")
        _check_finite_min(cfg, "backbone_lr_scale", strict=False, hint=" (0: frozen)")
        from edgead.models.backbones import default_normalization

        if cfg["backbone"] not in ("mobilenet_v2", "resnet18"):
            raise ValueError(f"config 'backbone': expected 'mobilenet_v2' or 'resnet18', got {cfg['backbone']!r}")
        size = cfg["image_size"]
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            size = [int(size), int(size)]
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 32 for v in size)):
            raise ValueError(f"config 'image_size': expected [H, W] integers >= 32, got {cfg['image_size']!r}")
        cfg["image_size"] = [int(v) for v in size]
        if cfg["mean"] == "auto" or cfg["std"] == "auto":
            w = cfg["weights"]
            if w == "auto":
                try:
                    w = _find_weights(cfg["backbone"], w)
                except ValueError:
                    w = None
            mean, std = default_normalization(cfg["backbone"], w)
            cfg["mean"] = list(mean) if cfg["mean"] == "auto" else cfg["mean"]
            cfg["std"] = list(std) if cfg["std"] == "auto" else cfg["std"]
        super().__init__(cfg)
        with seeded_init(cfg["seed"]):  # the heads' initial weights from `seed`: a fit is reproducible
            self.net = MixedNet(cfg["backbone"], cfg["layers"], cfg["head_channels"], cfg["blur_sigma"],
                                cfg["normal_prior"])

    # --- helpers ----------------------------------------------------------------------------------
    def preprocessing(self):
        from edgead.data.transforms import Preprocessing

        return Preprocessing(size=tuple(self.config["image_size"]), channels=3, mean=self.config["mean"], std=self.config["std"])

    def export_module(self) -> nn.Module:
        return self.net

    def _uint8(self, path: str) -> np.ndarray:
        """An image as uint8 RGB at the model's size (the same resize as Preprocessing)."""
        from edgead.data.io import read_image, to_uint8

        img = to_uint8(read_image(path))
        return self._resize(img)

    def _resize(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = img[:, :, :3]
        pp = self.preprocessing()
        h, w = pp.size
        if img.shape[:2] != (h, w):
            img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=pp.cv2_interpolation(img.shape[:2]))
        return np.ascontiguousarray(img)

    def _normalise(self, imgs: List[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(imgs)).float().div_(255.0).permute(0, 3, 1, 2)
        mean = torch.tensor(self.config["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.config["std"], dtype=torch.float32).view(1, -1, 1, 1)
        return ((x - mean) / std).contiguous()

    def _load_defects(self, progress: bool) -> List[Tuple[np.ndarray, Optional[np.ndarray], str]]:
        """Real defects resized to the model size: (uint8 image, bool mask or None (weak), type)."""
        from edgead.data.io import read_image, to_uint8

        folder = self.config.get("defects")
        if not folder:
            return []
        out = []
        for d in load_real_defects(folder, self.config.get("max_defects")):
            img = to_uint8(read_image(d.path))
            mask = None
            if d.mask_path is not None:
                m = validate_mask(d.mask_path, img.shape, self.config.get("mask_threshold"))
                h, w = self.config["image_size"]
                mask = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) >= 0.5
                if not mask.any():  # a tiny defect: keep its strongest pixel
                    r = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
                    mask = r >= r.max()
            out.append((self._resize(img), mask, d.defect_type))
        if progress:
            n_weak = sum(1 for _, m, _ in out if m is None)
            print(f"edgead mixed: {len(out)} real defects from {folder} ({len(out) - n_weak} with masks, "
                  f"{n_weak} image-level only)", flush=True)
        return out

    def _init_from(self, path: str) -> None:
        from edgead.artifact import load_artifact

        art = load_artifact(os.fspath(path))
        if art.model_type != self.model_type:
            raise ValueError(f"init: artifact '{path}' holds a {art.model_type!r} model, expected {self.model_type!r}")
        for k in _ARCH_KEYS:
            old = art.config.get(k, DEFAULTS[k]) if k == "normal_prior" else art.config.get(k)
            if old != self.config.get(k):
                raise ValueError(f"init: artifact '{path}' has {k}={old!r}, this recipe {self.config.get(k)!r}")
        for k in ("mean", "std"):
            if [float(v) for v in art.config.get(k)] != [float(v) for v in self.config[k]]:
                raise ValueError(f"init: artifact '{path}' has {k}={art.config.get(k)}, this recipe {self.config[k]}")
        self._load_tensors(art.tensors)

    def _load_tensors(self, tensors) -> None:
        """Load an artifact's tensors (the prior bank takes the artifact's row count)."""
        sd = {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}
        if self.net.normal_prior == "knn" and "net.prior_bank" in sd:
            self.net.prior_bank = torch.zeros_like(sd["net.prior_bank"])
        self.load_state_dict(sd, strict=True)
        self.net.share_prior_backbone = self.net.backbones_equal() if self.net.normal_prior == "knn" else False

    # --- the normality prior ------------------------------------------------------------------------
    def _batches(self, imgs: List[np.ndarray], device):
        """Yield `imgs` (uint8 at the model size) normalised on `device`, 16 images at a time."""
        for i in range(0, len(imgs), 16):
            yield self._normalise(imgs[i : i + 16]).to(device)

    @torch.no_grad()
    def _prior_batches(self, imgs: List[np.ndarray], device):
        """Yield the prior embeddings (b, N, C) of `imgs`, 16 images at a time (never all at once)."""
        for x in self._batches(imgs, device):
            yield self.net.prior_embed(self.net.smooth(x))

    def _prior_embeddings(self, imgs: List[np.ndarray], device) -> torch.Tensor:
        return torch.cat(list(self._prior_batches(imgs, device)))  # (B, N, C)

    @torch.no_grad()
    def _fit_prior(self, normals: List[np.ndarray], held_out: List[np.ndarray], device, progress: bool) -> Dict[str, Any]:
        """Memory bank of the normal training images (no augmentation): a seeded uniform sample of
        `prior_candidates` patch embeddings, greedy coreset (edgead.ops.coreset, on a seeded 128-d random
        projection when C > 128) of `prior_bank_size` rows. Scale: the `prior_quantile` quantile of the
        patch distances of the held-out normal images (training images when there are none).
        Memory: only the sampled candidates and one batch of embeddings are held (images are resized to
        `image_size`, so every image has the same number N of patches and the sample is drawn up front)."""
        from edgead import ops

        cfg = self.config
        self.net.eval()
        n_patch = self.net.prior_embedder.grid_size(cfg["image_size"])
        n_patch = int(n_patch[0] * n_patch[1])
        total = len(normals) * n_patch
        g = torch.Generator().manual_seed(int(cfg["seed"]) + 7)
        n_cand = min(total, int(cfg["prior_candidates"]))
        sel = torch.randperm(total, generator=g)[:n_cand]  # global row index of candidate j
        order = torch.argsort(sel)
        sorted_sel = sel[order]
        cand, done, lo = None, 0, 0
        for emb in self._prior_batches(normals, device):
            rows = emb.reshape(-1, emb.shape[-1])
            if rows.shape[0] != emb.shape[0] * n_patch:
                raise RuntimeError(f"mixed prior: expected {n_patch} patches per image, got {emb.shape[1]}")
            if cand is None:
                cand = torch.empty(n_cand, rows.shape[1], dtype=rows.dtype, device=rows.device)
            hi = lo + rows.shape[0]
            k = int(torch.searchsorted(sorted_sel, hi))  # candidates with global index < hi
            js = order[done:k]
            cand[js.to(cand.device)] = rows[(sel[js] - lo).to(rows.device)]
            done, lo = k, hi
        cand = cand.contiguous()
        n_bank = min(n_cand, int(cfg["prior_bank_size"]))
        if n_bank < n_cand:
            red = cand
            if cand.shape[1] > 128:
                red = cand @ (torch.randn(cand.shape[1], 128, generator=g) / math.sqrt(128)).to(cand.device)
            start = int(torch.randint(n_cand, (1,), generator=g))
            idx = torch.as_tensor(ops.coreset(red.contiguous(), n_bank, start=start), device=cand.device).long()
            bank = cand[idx]
        else:
            bank = cand
        self.net.set_prior(bank, 1.0)
        src = held_out if held_out else normals
        d = torch.cat([self.net.prior_distance(e).flatten() for e in self._prior_batches(src, device)])
        scale = float(torch.quantile(d.float().cpu(), float(cfg["prior_quantile"])))
        scale = max(scale, 1e-6)
        self.net.set_prior(bank, scale)
        info = {"bank_rows": int(bank.shape[0]), "candidates": n_cand, "patches": total, "scale": scale,
                "scale_from": "validation" if held_out else "training"}
        if progress:
            print(f"edgead mixed: normality prior bank {info['bank_rows']} rows (coreset of {n_cand} of {total} "
                  f"patches), scale {scale:.4g} ({cfg['prior_quantile']} quantile, {info['scale_from']} images)",
                  flush=True)
        return info

    # --- real-defect calibration of the image score -------------------------------------------------
    @torch.no_grad()
    def _classifier_inputs(self, imgs: List[np.ndarray], device) -> np.ndarray:
        self.net.eval()
        return np.concatenate([self.net.heads(x)[1].cpu().double().numpy() for x in self._batches(imgs, device)])

    @torch.no_grad()
    def _calibrate(self, defects, held_out: List[np.ndarray], normals: List[np.ndarray], device,
                   progress: bool) -> Dict[str, Any]:
        """Refit the classifier's linear layer on the real defects (every one once, resized, not augmented;
        weak labels included) vs the held-out normal images (training images when there are none): inputs
        standardised with the normal images' mean and std, class-balanced L2 logistic regression
        (`calibration_c`), the standardisation folded into the layer (the exported graph is unchanged)."""
        cfg = self.config
        info: Dict[str, Any] = {"applied": False, "mode": cfg["calibration"], "n_real_defects": len(defects)}
        if cfg["calibration"] == "none":
            info["reason"] = "calibration: none"
            return info
        if self.net.normal_prior != "knn":
            info["reason"] = "needs normal_prior: knn (without it the classifier input is the high-dimensional pooled features)"
            return info
        need = int(cfg["calibration_min_defects"])
        if len(defects) < need:
            info["reason"] = f"{len(defects)} real defects < calibration_min_defects {need}"
            return info
        neg = held_out
        if not neg:
            warnings.warn("mixed calibration: no validation images; calibrating against the training images, "
                          "whose prior distances are biased low (their patches built the bank)")
            neg = normals
        xn = self._classifier_inputs(neg, device)
        xd = self._classifier_inputs([d[0] for d in defects], device)
        mu = xn.mean(axis=0)
        sd = xn.std(axis=0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        x = (np.concatenate([xn, xd]) - mu) / sd
        y = np.r_[np.zeros(len(xn), int), np.ones(len(xd), int)]
        w, b = balanced_logistic(x, y, float(cfg["calibration_c"]))
        old_w = self.net.cls.weight.detach().cpu().double().numpy()[0].tolist()
        old_b = float(self.net.cls.bias.detach().cpu())
        wf, bf = w / sd, b - float((w * mu / sd).sum())
        self.net.cls.weight.copy_(torch.as_tensor(wf, dtype=self.net.cls.weight.dtype)[None])
        self.net.cls.bias.fill_(bf)
        info.update(applied=True, n_normal=len(xn), normals_from="validation" if held_out else "training",
                    standardised_weights=[round(float(v), 6) for v in w], weight=[float(v) for v in wf], bias=bf,
                    trained_weight=old_w, trained_bias=old_b)
        if progress:
            print(f"edgead mixed: image score calibrated on {len(xd)} real defects vs {len(xn)} {info['normals_from']} "
                  f"normal images (standardised weights {np.round(w, 3).tolist()})", flush=True)
        return info

    # --- the training stream ------------------------------------------------------------------------
    def _sample(self, normals, defects, rng, names, probs):
        """One training sample: (uint8 image, mask bool or None, label, has_mask, kind)."""
        cfg = self.config
        if defects and rng.random() < float(cfg["real_probability"]):
            img, mask, _ = defects[int(rng.integers(len(defects)))]
            img, mask = augment(img, mask, rng, cfg)
            return img, mask, 1, mask is not None, "real"
        img = normals[int(rng.integers(len(normals)))]
        img, _ = augment(img, None, rng, cfg)
        if rng.random() < float(cfg["synthetic_fraction"]):
            name = names[int(rng.choice(len(names), p=probs))]
            out, mask = _painter(name)(img, rng)
            return out, mask, 1, True, name
        return img, np.zeros(img.shape[:2], bool), 0, True, "normal"

    def _batch(self, samples, device):
        imgs = [s[0] for s in samples]
        x = self._normalise(imgs).to(device)
        h, w = self.config["image_size"]
        masks = np.stack([s[1] if s[1] is not None else np.zeros((h, w), bool) for s in samples]).astype(np.float32)
        y = torch.tensor([float(s[2]) for s in samples], device=device)
        has = torch.tensor([bool(s[3]) for s in samples], device=device)
        return x, torch.from_numpy(masks).to(device), y, has

    def _loss(self, x, masks, y, has):
        seg, cls = self.net.logits(x)
        l_cls = F.binary_cross_entropy_with_logits(cls, y)
        l_seg = torch.zeros((), device=x.device)
        if bool(has.any()):
            tgt = F.adaptive_avg_pool2d(masks[:, None], seg.shape[-2:])  # soft target: defect fraction per cell
            pw = torch.tensor(float(self.config["seg_pos_weight"]), device=x.device)
            l = F.binary_cross_entropy_with_logits(seg, tgt, pos_weight=pw, reduction="none").mean(dim=(1, 2, 3))
            l_seg = l[has].mean()
        return l_cls + float(self.config["seg_weight"]) * l_seg, l_cls, l_seg

    # --- fit ----------------------------------------------------------------------------------------
    def fit(self, train, val=None, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        torch.manual_seed(int(cfg["seed"]))
        rng = np.random.default_rng(int(cfg["seed"]))
        names, probs = _check_painters(cfg["painters"])
        if cfg.get("init"):
            self._init_from(cfg["init"])
        else:
            from edgead.models.backbones import build_backbone

            w = _find_weights(cfg["backbone"], cfg["weights"])
            if w is None:
                raise ValueError("weights: expected a weights file, 'imagenet' or 'auto', got None")
            fe = build_backbone(cfg["backbone"], cfg["layers"], weights=w)
            self.net.backbone.load_state_dict(fe.state_dict())
            if self.net.normal_prior == "knn":
                self.net.prior_embedder.backbone.load_state_dict(fe.state_dict())
        frozen = float(cfg["backbone_lr_scale"]) == 0.0
        self.net.freeze_backbone(frozen)
        if self.net.normal_prior == "knn":
            # sharing the maps is exact only while the trainable backbone cannot move
            self.net.share_prior_backbone = frozen and self.net.backbones_equal()
        paths = [s.path if hasattr(s, "path") else os.fspath(s) for s in train]
        if not paths:
            raise ValueError("fit: no training images")
        normals = [self._uint8(p) for p in tqdm(paths, desc="loading", disable=not progress)]
        defects = self._load_defects(progress)
        val_paths = [s.path if hasattr(s, "path") else os.fspath(s) for s in (val or [])]
        # validation: each held-out normal image clean and with a fixed synthetic defect (balanced)
        vset = []
        vrng = np.random.default_rng(int(cfg["seed"]) + 1)
        for p in val_paths:
            img = self._uint8(p)
            vset.append((img, np.zeros(img.shape[:2], bool), 0, True, "normal"))
            name = names[int(vrng.choice(len(names), p=probs))]
            out, mask = _painter(name)(img, vrng)
            vset.append((out, mask, 1, True, name))
        if not vset:
            warnings.warn("mixed: no validation images, so no early stopping; the last state is kept")
        held_out = [v[0] for v in vset if v[4] == "normal" and v[2] == 0]  # the clean validation images
        self.net.to(device)
        prior_info = None
        if self.net.normal_prior == "knn" and not cfg.get("init"):  # --init keeps the artifact's bank and scale
            prior_info = self._fit_prior(normals, held_out, device, progress)
        bb = [p for p in self.net.backbone.parameters()]
        bb_ids = {id(p) for p in bb}
        heads = [p for p in self.net.parameters() if id(p) not in bb_ids and p.requires_grad]
        lr = float(cfg["lr"])
        groups = [{"params": heads, "lr": lr}]
        if not frozen:
            groups.append({"params": bb, "lr": lr * float(cfg["backbone_lr_scale"])})
        opt = torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]), weight_decay=float(cfg["weight_decay"]))
        bs = int(cfg["batch_size"])
        spe = int(cfg["steps_per_epoch"] or max(1, math.ceil(len(normals) / bs)))
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=int(cfg["t0_epochs"]) * spe, T_mult=int(cfg["t_mult"]), eta_min=float(cfg["lr_min"]))
        best, best_state, bad, history = float("inf"), None, 0, []
        counts: Dict[str, int] = {}
        epochs = int(cfg["epochs"])
        bar = tqdm(total=epochs * spe, desc="mixed training", unit="step", disable=not progress)
        stopped = None
        for ep in range(epochs):
            self.net.train()
            tot = 0.0
            for _ in range(spe):
                samples = [self._sample(normals, defects, rng, names, probs) for _ in range(bs)]
                for s in samples:
                    counts[s[4]] = counts.get(s[4], 0) + 1
                x, m, y, has = self._batch(samples, device)
                loss, _, _ = self._loss(x, m, y, has)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot += float(loss.detach())
                bar.update(1)
            rec = {"epoch": ep + 1, "train_loss": tot / spe, "lr": opt.param_groups[0]["lr"]}
            if vset:
                rec["val_loss"] = self._val_loss(vset, device)
                if rec["val_loss"] < best:
                    best, bad = rec["val_loss"], 0
                    best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
                    rec["best"] = True
                else:
                    bad += 1
            history.append(rec)
            bar.set_postfix({k: round(v, 4) for k, v in rec.items() if k in ("train_loss", "val_loss")})
            if vset and bad >= int(cfg["patience"]):
                stopped = ep + 1
                break
        bar.close()
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        if self.net.normal_prior == "knn":
            self.net.share_prior_backbone = self.net.backbones_equal()
        calib = self._calibrate(defects, held_out, normals, device, progress)
        return {"mixed": {
            "calibration": calib,
            "normal_prior": cfg["normal_prior"], "prior": prior_info, "backbone_frozen": frozen,
            "epochs_run": len(history), "early_stopped_at": stopped, "best_val_loss": None if best_state is None else best,
            "steps_per_epoch": spe, "n_normal": len(normals), "n_val_images": len(val_paths),
            "n_real_defects": len(defects), "n_real_with_mask": sum(1 for d in defects if d[1] is not None),
            "real_defect_types": sorted({d[2] for d in defects}), "stream_counts": counts, "history": history,
            "init": cfg.get("init"),
        }}

    @torch.no_grad()
    def _val_loss(self, vset, device) -> float:
        self.net.eval()
        tot, n = 0.0, 0
        for i in range(0, len(vset), 32):
            chunk = vset[i : i + 32]
            x, m, y, has = self._batch(chunk, device)
            loss, _, _ = self._loss(x, m, y, has)
            tot += float(loss) * len(chunk)
            n += len(chunk)
        return tot / max(n, 1)

    # --- inference ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected (B, 3, H, W), got {tuple(x.shape)}")
        was = self.net.training
        self.net.eval()
        try:
            return self.net(x)
        finally:
            self.net.train(was)

    # --- artifact -------------------------------------------------------------------------------------
    def artifact_tensors(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_artifact(cls, artifact) -> "MixedSupervision":
        if artifact.model_type != cls.model_type:
            raise ValueError(f"artifact: expected model_type {cls.model_type!r}, got {artifact.model_type!r}")
        model = cls(artifact.config)
        model._load_tensors(artifact.tensors)
        return model.eval()
