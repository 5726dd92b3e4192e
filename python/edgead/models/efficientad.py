"""EfficientAD (Batzner et al., WACV 2024): a patch description network (PDN) teacher distilled from a
pretrained backbone, a student PDN and an autoencoder; PUAD (edgead.models.puad) adds a Mahalanobis head.

Networks (exactly the paper's tables; no padding in the PDN, so a 256x256 input gives 384x56x56):

    PDN-S: conv4x4-128, ReLU, avgpool2x2/2, conv4x4-256, ReLU, avgpool2x2/2, conv3x3-256, ReLU, conv4x4-C
    PDN-M: conv4x4-256, ReLU, avgpool2x2/2, conv4x4-512, ReLU, avgpool2x2/2, conv1x1-512, ReLU,
           conv3x3-512, ReLU, conv4x4-C, ReLU, conv1x1-C
    teacher: PDN with C=384 (distilled: edgead.models.distill), frozen, outputs normalised by its channel
             mean/std over the training images; student: PDN with C=768 (384 teacher-mimic + 384 AE-mimic)
    autoencoder: 6 convs 4x4 (5 with stride 2, padding 1; the last one collapses the 8x8 map to a 1x1x64
             bottleneck), decoder: 6 x [bilinear resize to 3, 8, 15, 32, 63, 127, conv4x4 pad 2, ReLU,
             dropout 0.2], bilinear resize to the PDN output size (56), conv3x3-64, ReLU, conv3x3-384.
             For input sizes other than 256 the bottleneck kernel is the encoder's final map size and the
             intermediate decoder sizes scale with H/256 (exactly the paper's at 256).

Training (fit): Adam lr 1e-4, weight decay 1e-5 over student + autoencoder, lr x0.1 at 95 % of the iterations;
    L_hard = mean of the squared st distances >= their 0.999 quantile (per batch), + optional penalty
    mean(student(P)[:384]^2) on images P from `penalty_folder` (the paper uses ImageNet), L_ae = mean
    (T(x') - A(x'))^2 and L_stae = mean (A(x') - S(x')[384:])^2 on x' = x with one random colour jitter of
    brightness / contrast / saturation in [0.8, 1.2]. Total = L_hard + L_penalty + L_ae + L_stae.

Inference (one nn.Module, see export_module): map_st = mean_c (T_norm - S[:384])^2, map_ae = mean_c
    (A - S[384:])^2, each mapped linearly so its 0.9 quantile -> 0 and 0.995 quantile -> 0.1 (quantiles of
    the maps of the VALIDATION images), combined 0.5*st + 0.5*ae, zero-padded by 4 pixels on each side
    (the PDN has stride 4 and receptive field 33: the padded map covers the image exactly) and bilinearly
    resized to the input size; image score = max of the map.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.models.base import AnomalyModel, seeded_init

__all__ = [
    "PDN_SIZES",
    "DEFAULTS",
    "pdn_small",
    "pdn_medium",
    "build_pdn",
    "pdn_output_size",
    "AutoEncoder",
    "hard_feature_loss",
    "linear_quantile",
    "normalize_map",
    "EfficientADInference",
    "EfficientAD",
    "load_teacher",
]

PDN_SIZES = ("S", "M")
MIN_INPUT = 64  # the autoencoder's encoder needs >= 32 and the PDN >= 33; 64 keeps every map non-empty

DEFAULTS: Dict[str, Any] = {
    "size": "S",
    "image_size": [256, 256],
    "out_channels": 384,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "teacher_weights": None,
    "allow_random_teacher": False,
    "teacher_norm": "train",  # "train": channel mean/std of the teacher on the training images (paper); "teacher": distill's
    "iterations": 70000,
    "batch_size": 1,
    "lr": 1e-4,
    "weight_decay": 1e-5,
    "lr_decay_at": 0.95,
    "hard_quantile": 0.999,
    "penalty_folder": None,
    "penalty_max_images": 500,
    "ae_augment": True,
    "map_quantiles": [0.9, 0.995],
    "val_fraction": 0.1,
    "seed": 0,
}


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
def pdn_small(out_channels: int = 384) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 128, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(128, 256, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(256, 256, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, out_channels, kernel_size=4),
    )


def pdn_medium(out_channels: int = 384) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 256, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(256, 512, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(512, 512, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, 512, kernel_size=3),
        nn.ReLU(inplace=True),
        nn.Conv2d(512, out_channels, kernel_size=4),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=1),
    )


def _check_size_name(size: str) -> str:
    s = str(size).upper()
    if s not in PDN_SIZES:
        raise ValueError(f"size: expected one of {PDN_SIZES}, got {size!r}")
    return s


def build_pdn(size: str = "S", out_channels: int = 384) -> nn.Sequential:
    return pdn_small(out_channels) if _check_size_name(size) == "S" else pdn_medium(out_channels)


def pdn_output_size(h: int, w: int) -> Tuple[int, int]:
    """Spatial size of the PDN output (same for S and M): 256 -> 56; for H divisible by 4, H/4 - 8."""

    def one(n):
        return ((((n - 3) // 2) - 3) // 2) - 5

    return one(int(h)), one(int(w))


class AutoEncoder(nn.Module):
    """The EfficientAD autoencoder; output (B, out_channels, *out_size)."""

    def __init__(self, out_channels: int = 384, image_size: Sequence[int] = (256, 256), out_size: Optional[Sequence[int]] = None):
        super().__init__()
        h, w = int(image_size[0]), int(image_size[1])
        if out_size is None:
            out_size = pdn_output_size(h, w)
        eh, ew = h, w
        for _ in range(5):
            eh, ew = eh // 2, ew // 2
        if eh < 1 or ew < 1:
            raise ValueError(f"image_size: the autoencoder needs >= 32x32 inputs, got {(h, w)}")
        layers: List[nn.Module] = []
        cin = 3
        for cout in (32, 32, 64, 64, 64):
            layers += [nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(64, 64, kernel_size=(eh, ew)))  # 8x8 at 256 -> 1x1x64 bottleneck
        self.encoder = nn.Sequential(*layers)
        self.dec_sizes = [
            (max(1, int(round(s * h / 256.0))), max(1, int(round(s * w / 256.0)))) for s in (3, 8, 15, 32, 63, 127)
        ]
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.dec_convs = nn.ModuleList([nn.Conv2d(64, 64, kernel_size=4, stride=1, padding=2) for _ in range(6)])
        self.dropout = nn.Dropout(0.2)
        self.conv7 = nn.Conv2d(64, 64, kernel_size=3, stride=1, padding=1)
        self.conv8 = nn.Conv2d(64, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for size, conv in zip(self.dec_sizes, self.dec_convs):
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
            z = self.dropout(F.relu(conv(z)))
        z = F.interpolate(z, size=self.out_size, mode="bilinear", align_corners=False)
        z = F.relu(self.conv7(z))
        return self.conv8(z)


# ------------------------------------------------------------------------------------------------
# losses and normalisation helpers
# ------------------------------------------------------------------------------------------------
def linear_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """torch.quantile(x.flatten(), q) (linear interpolation) without its 16M-element limit (kthvalue)."""
    flat = x.reshape(-1)
    n = flat.numel()
    if n == 0:
        raise ValueError("linear_quantile: empty tensor")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q: expected a value in [0, 1], got {q}")
    pos = q * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    v_lo = torch.kthvalue(flat, lo + 1).values
    if frac == 0.0 or hi == lo:
        return v_lo
    v_hi = torch.kthvalue(flat, hi + 1).values
    return v_lo + (v_hi - v_lo) * frac


def hard_feature_loss(teacher_out: torch.Tensor, student_out: torch.Tensor, q: float = 0.999) -> torch.Tensor:
    """EfficientAD's hard feature loss: mean of the squared differences that are >= their q-quantile."""
    d = (teacher_out - student_out) ** 2
    d_hard = linear_quantile(d.detach(), q)
    return d[d >= d_hard].mean()


def normalize_map(m: torch.Tensor, q_a: torch.Tensor, q_b: torch.Tensor) -> torch.Tensor:
    """Linear map with q_a -> 0 and q_b -> 0.1."""
    return 0.1 * (m - q_a) / (q_b - q_a)


def _color_jitter(x01: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The paper's AE augmentation: one of brightness / contrast / saturation, factor U(0.8, 1.2), per image."""
    out = []
    for img in x01:
        kind = int(torch.randint(0, 3, (1,), generator=generator))
        f = float(0.8 + 0.4 * torch.rand(1, generator=generator))
        if kind == 0:  # brightness
            img = img * f
        else:
            grey = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
            if kind == 1:  # contrast: blend with the mean grey level
                img = (img - grey.mean()) * f + grey.mean()
            else:  # saturation: blend with the grey image
                img = (img - grey) * f + grey
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------
# data loading
# ------------------------------------------------------------------------------------------------
def _load_images(data, preprocessing, progress: bool, desc: str) -> torch.Tensor:
    """Samples / paths / ImageFolder / array / tensor -> float32 tensor (N, C, H, W) on the CPU."""
    if isinstance(data, torch.Tensor):
        x = data.detach().float().cpu()
    elif isinstance(data, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    else:
        from edgead.data.datasets import iter_batches

        items = list(data)
        if not items:
            return torch.zeros((0,) + tuple(preprocessing.input_shape))
        chunks = [torch.from_numpy(b) for b, _ in iter_batches(items, preprocessing, 16, progress, desc)]
        x = torch.cat(chunks)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(preprocessing.input_shape):
        raise ValueError(f"{desc}: expected images of shape (N, {', '.join(map(str, preprocessing.input_shape))}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{desc}: images contain NaN or inf")
    return x


def load_teacher(path: str) -> Tuple[Dict[str, torch.Tensor], torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """Read a distilled teacher (edgead.models.distill): (PDN state dict, channel mean, channel std, sidecar)."""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise ValueError(f"teacher_weights: file not found: {path}")
    tensors = load_file(path)
    meta: Dict[str, Any] = {}
    side = os.path.splitext(path)[0] + ".json"
    if os.path.isfile(side):
        with open(side) as f:
            meta = json.load(f)
    sd = {k[len("teacher."):]: v for k, v in tensors.items() if k.startswith("teacher.")}
    if not sd or "channel_mean" not in tensors or "channel_std" not in tensors:
        raise ValueError(f"teacher_weights: '{path}' is not an edgead distilled teacher (teacher.* / channel_mean / channel_std)")
    return sd, tensors["channel_mean"].float(), tensors["channel_std"].float(), meta


# ------------------------------------------------------------------------------------------------
# inference module (what predict() runs and what goes to ONNX)
# ------------------------------------------------------------------------------------------------
class EfficientADInference(nn.Module):
    """image (B,3,H,W) -> score (B,), map (B,H,W). Shares the parent's networks and buffers."""

    def __init__(self, model: "EfficientAD"):
        super().__init__()
        self.teacher = model.teacher
        self.student = model.student
        self.autoencoder = model.autoencoder
        self.out_channels = int(model.out_channels)
        for name in ("teacher_mean", "teacher_std", "q_st", "q_ae"):
            self.register_buffer(name, getattr(model, name))
        self.head = model._head_module()

    def maps(self, image: torch.Tensor):
        c = self.out_channels
        t = (self.teacher(image) - self.teacher_mean) / self.teacher_std
        s = self.student(image)
        a = self.autoencoder(image)
        map_st = torch.mean((t - s[:, :c]) ** 2, dim=1, keepdim=True)
        map_ae = torch.mean((a - s[:, c:]) ** 2, dim=1, keepdim=True)
        return map_st, map_ae, s

    def forward(self, image: torch.Tensor):
        h, w = image.shape[-2], image.shape[-1]
        map_st, map_ae, s = self.maps(image)
        m = 0.5 * normalize_map(map_st, self.q_st[0], self.q_st[1]) + 0.5 * normalize_map(map_ae, self.q_ae[0], self.q_ae[1])
        m = F.pad(m, (4, 4, 4, 4))
        m = F.interpolate(m, size=(int(h), int(w)), mode="bilinear", align_corners=False)[:, 0]
        score = torch.amax(m.flatten(1), dim=1)
        if self.head is not None:
            score = self.head(score, s[:, : self.out_channels])
        return score, m


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
class EfficientAD(AnomalyModel):
    model_type = "efficientad"
    export_outputs = ("score", "map")

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        cfg = dict(DEFAULTS)
        cfg.update(dict(config or {}))
        cfg["model"] = self.model_type
        cfg["size"] = _check_size_name(cfg["size"])
        isz = cfg["image_size"]
        if isinstance(isz, int):
            isz = [isz, isz]
        isz = [int(v) for v in isz]
        if len(isz) != 2 or min(isz) < MIN_INPUT:
            raise ValueError(f"image_size: expected [h, w] with both >= {MIN_INPUT}, got {cfg['image_size']!r}")
        cfg["image_size"] = isz
        q = [float(v) for v in cfg["map_quantiles"]]
        if len(q) != 2 or not 0.0 <= q[0] < q[1] <= 1.0:
            raise ValueError(f"map_quantiles: expected [q_a, q_b] with 0 <= q_a < q_b <= 1, got {cfg['map_quantiles']!r}")
        cfg["map_quantiles"] = q
        if cfg["teacher_norm"] not in ("train", "teacher"):
            raise ValueError(f"teacher_norm: expected 'train' or 'teacher', got {cfg['teacher_norm']!r}")
        super().__init__(cfg)
        c = int(cfg["out_channels"])
        self.out_channels = c
        with seeded_init(cfg["seed"]):  # initial weights from `seed`: a fit is reproducible
            self.teacher = build_pdn(cfg["size"], c)
            self.student = build_pdn(cfg["size"], 2 * c)
            self.autoencoder = AutoEncoder(c, isz)
        self.register_buffer("teacher_mean", torch.zeros(1, c, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, c, 1, 1))
        self.register_buffer("q_st", torch.tensor([0.0, 0.1]))  # identity normalisation until fit
        self.register_buffer("q_ae", torch.tensor([0.0, 0.1]))
        self._teacher_loaded = False
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    # --- pieces PUAD overrides --------------------------------------------------------------------
    def _head_module(self) -> Optional[nn.Module]:
        return None

    def _fit_head(self, x_train: torch.Tensor, x_val: torch.Tensor, device, progress: bool) -> Dict[str, Any]:
        return {}

    # --- helpers --------------------------------------------------------------------------------------
    def preprocessing(self):
        from edgead.data.transforms import Preprocessing

        return Preprocessing(size=tuple(self.config["image_size"]), channels=3, mean=tuple(self.config["mean"]), std=tuple(self.config["std"]))

    def inference_module(self) -> EfficientADInference:
        return EfficientADInference(self)

    def export_module(self) -> nn.Module:
        return self.inference_module().eval()

    def load_teacher_weights(self, path: str) -> Dict[str, Any]:
        sd, mean, std, meta = load_teacher(path)
        if meta.get("size") and str(meta["size"]).upper() != self.config["size"]:
            raise ValueError(f"teacher_weights: '{path}' is a PDN-{meta['size']} teacher but this model is size {self.config['size']}")
        try:
            self.teacher.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"teacher_weights: '{path}' does not fit PDN-{self.config['size']}: {e}") from None
        self.teacher_mean.copy_(mean.reshape(1, -1, 1, 1))
        self.teacher_std.copy_(std.reshape(1, -1, 1, 1))
        for key, cfg_key in (("pdn_mean", "mean"), ("pdn_std", "std")):
            if key in meta and [round(float(v), 6) for v in meta[key]] != [round(float(v), 6) for v in self.config[cfg_key]]:
                warnings.warn(f"teacher was distilled with input {key} {meta[key]} but the model uses {cfg_key} {self.config[cfg_key]}")
        self._teacher_loaded = True
        return meta

    @torch.no_grad()
    def _teacher_channel_stats(self, x: torch.Tensor, device, bs: int, progress: bool):
        from tqdm.auto import tqdm

        s1 = s2 = None
        n = 0
        for i in tqdm(range(0, len(x), bs), desc="teacher mean/std", disable=not progress, leave=False):
            t = self.teacher(x[i : i + bs].to(device)).double()
            a = t.sum(dim=(0, 2, 3))
            b = (t * t).sum(dim=(0, 2, 3))
            s1 = a if s1 is None else s1 + a
            s2 = b if s2 is None else s2 + b
            n += t.shape[0] * t.shape[2] * t.shape[3]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(1e-12)
        return mean.float().reshape(1, -1, 1, 1), var.sqrt().float().reshape(1, -1, 1, 1)

    @torch.no_grad()
    def _raw_maps(self, x: torch.Tensor, device, bs: int, progress: bool, desc: str):
        from tqdm.auto import tqdm

        inf = self.inference_module()
        sts, aes = [], []
        for i in tqdm(range(0, len(x), bs), desc=desc, disable=not progress, leave=False):
            st, ae, _ = inf.maps(x[i : i + bs].to(device))
            sts.append(st)
            aes.append(ae)
        return torch.cat(sts), torch.cat(aes)

    # --- training -------------------------------------------------------------------------------------
    def fit(self, train, val=None, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        t0 = time.time()
        pre = self.preprocessing()
        x_train = _load_images(train, pre, progress, "train images")
        x_val = _load_images(val, pre, progress, "validation images") if val is not None and len(val) else None
        if len(x_train) == 0:
            raise ValueError("train: no training images")
        gen = torch.Generator().manual_seed(int(cfg["seed"]))
        if x_val is None:
            if len(x_train) < 2:
                raise ValueError("need >= 2 training images when no validation split is given")
            perm = torch.randperm(len(x_train), generator=gen)
            n_val = max(1, int(round(float(cfg["val_fraction"]) * len(x_train))))
            x_val, x_train = x_train[perm[:n_val]], x_train[perm[n_val:]]
        x_pen = None
        if cfg.get("penalty_folder"):
            from edgead.data.datasets import ImageFolder

            paths = ImageFolder(cfg["penalty_folder"], recursive=True).paths
            if len(paths) > int(cfg["penalty_max_images"]):
                idx = torch.randperm(len(paths), generator=gen)[: int(cfg["penalty_max_images"])]
                paths = [paths[int(i)] for i in idx]
            x_pen = _load_images(paths, pre, progress, "penalty images")

        self.to(device)
        if cfg.get("teacher_weights"):
            if not self._teacher_loaded:
                self.load_teacher_weights(cfg["teacher_weights"])
        elif not self._teacher_loaded:
            if not cfg.get("allow_random_teacher"):
                raise ValueError(
                    "teacher_weights: EfficientAD needs a distilled teacher (edgead distill-teacher / "
                    "edgead.models.distill.distill_teacher); allow_random_teacher=True is only for tests"
                )
            warnings.warn("EfficientAD uses a RANDOM teacher (allow_random_teacher=True): only useful for tests")
        self.teacher.eval()
        bs_eval = 8
        if cfg["teacher_norm"] == "train" or not self._teacher_loaded:
            m, s = self._teacher_channel_stats(x_train, device, bs_eval, progress)
            self.teacher_mean.copy_(m)
            self.teacher_std.copy_(s)

        iters = int(cfg["iterations"])
        bs = int(cfg["batch_size"])
        if iters < 1 or bs < 1:
            raise ValueError(f"iterations and batch_size must be >= 1, got {iters}, {bs}")
        params = list(self.student.parameters()) + list(self.autoencoder.parameters())
        opt = torch.optim.Adam(params, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(float(cfg["lr_decay_at"]) * iters)), gamma=0.1)
        mean = torch.tensor(cfg["mean"], device=device).reshape(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=device).reshape(1, 3, 1, 1)
        c = self.out_channels
        q_hard = float(cfg["hard_quantile"])
        self.student.train()
        self.autoencoder.train()
        history: List[Dict[str, float]] = []
        bar = tqdm(range(iters), desc=f"EfficientAD-{cfg['size']}", disable=not progress)
        for it in bar:
            idx = torch.randint(0, len(x_train), (bs,), generator=gen)
            x = x_train[idx].to(device)
            with torch.no_grad():
                t_st = (self.teacher(x) - self.teacher_mean) / self.teacher_std
                if cfg["ae_augment"]:
                    x_ae = (_color_jitter((x * std + mean).cpu(), gen).to(device) - mean) / std
                else:
                    x_ae = x
                t_ae = (self.teacher(x_ae) - self.teacher_mean) / self.teacher_std
            s_st = self.student(x)[:, :c]
            loss_hard = hard_feature_loss(t_st, s_st, q_hard)
            loss_pen = torch.zeros((), device=device)
            if x_pen is not None:
                pidx = torch.randint(0, len(x_pen), (bs,), generator=gen)
                loss_pen = torch.mean(self.student(x_pen[pidx].to(device))[:, :c] ** 2)
            a = self.autoencoder(x_ae)
            s_ae = self.student(x_ae)[:, c:]
            loss_ae = torch.mean((t_ae - a) ** 2)
            loss_stae = torch.mean((a - s_ae) ** 2)
            loss = loss_hard + loss_pen + loss_ae + loss_stae
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if it % 10 == 0 or it == iters - 1:
                rec = {"it": it, "loss": loss.item(), "hard": loss_hard.item(), "penalty": loss_pen.item(),
                       "ae": loss_ae.item(), "stae": loss_stae.item()}
                history.append(rec)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", hard=f"{rec['hard']:.3f}", ae=f"{rec['ae']:.3f}", stae=f"{rec['stae']:.3f}")
        bar.close()
        self.eval()

        # map normalisation on the validation images (never test)
        qa, qb = cfg["map_quantiles"]
        st, ae = self._raw_maps(x_val, device, bs_eval, progress, "map normalisation (validation)")
        self.q_st.copy_(torch.stack([linear_quantile(st, qa), linear_quantile(st, qb)]))
        self.q_ae.copy_(torch.stack([linear_quantile(ae, qa), linear_quantile(ae, qb)]))
        for name in ("q_st", "q_ae"):
            v = getattr(self, name)
            if not float(v[1] - v[0]) > 0:  # degenerate (constant maps): keep a valid linear map
                v[1] = v[0] + 1e-6
        stats: Dict[str, Any] = {
            "iterations": iters,
            "batch_size": bs,
            "n_train": int(len(x_train)),
            "n_val": int(len(x_val)),
            "n_penalty": 0 if x_pen is None else int(len(x_pen)),
            "final_loss": history[-1] if history else None,
            "q_st": [float(v) for v in self.q_st],
            "q_ae": [float(v) for v in self.q_ae],
        }
        stats.update(self._fit_head(x_train, x_val, device, progress))
        # validation image scores (for thresholds downstream)
        scores = self._scores(x_val, device, bs_eval)
        stats["val_score_mean"] = float(scores.mean())
        stats["val_score_std"] = float(scores.std(unbiased=False))
        stats["val_score_max"] = float(scores.max())
        stats["fit_seconds"] = round(time.time() - t0, 2)
        return stats

    @torch.no_grad()
    def _scores(self, x: torch.Tensor, device, bs: int) -> torch.Tensor:
        inf = self.inference_module().eval()
        return torch.cat([inf(x[i : i + bs].to(device))[0] for i in range(0, len(x), bs)])

    # --- inference ------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x: expected (B, 3, H, W), got {tuple(x.shape)}")
        was_training = self.training
        self.eval()
        try:
            return self.inference_module()(x)
        finally:
            self.train(was_training)

    # --- artifact ---------------------------------------------------------------------------------------
    def artifact_config(self) -> Dict[str, Any]:
        return dict(self.config)

    def artifact_tensors(self) -> Dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_artifact(cls, artifact) -> "EfficientAD":
        if artifact.model_type != cls.model_type:
            raise ValueError(f"artifact: expected model_type {cls.model_type!r}, got {artifact.model_type!r}")
        model = cls(artifact.config)
        sd = {k: torch.from_numpy(np.array(v)) for k, v in artifact.tensors.items()}
        model.load_state_dict(sd, strict=True)
        model._teacher_loaded = True
        return model.eval()
