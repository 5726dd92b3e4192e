"""FADeR: Feature Attenuation of Defective Representation (Park et al.), on an EAR-style
reconstruction-by-inpainting U-Net. See docs/fader.md for the method and every choice made where
the paper is silent.

Pipeline (inference, one deterministic mask, no randomness)::

    x (B,C,H,W) in [0,1]
      -> mask M = mask_source(x)                       edgead.models.masks (token grid of size m)
      -> I' = x * (1-M) + mosaic(x, m) * M              visual obfuscation with mosaic hints
      -> [fader] l_hat = MLP(tokens_m(I'))              two-layer MLP, patch-wise error per token
                 M_S = 1 - minmax(l_hat) per image      soft mask
      -> recon = UNet(I', skips_d * nearest(M_S))       d = 1..D-1
      -> map = MSGMS(x, recon), score = max(map)        edgead.runtime.post_fader (torch-free)

Training: stage 1 trains the whole U-Net by inpainting (loss L2 + MSGMS + SSIM, RIAD/EAR style);
stage 2 (``fader: true``) freezes the encoder, trains the MLP with a margin ranking loss on the
patch-wise L2 error between x and the current reconstruction (active learning / "learning loss"
target), and fine-tunes the decoder at 0.1x the MLP learning rate on the soft-masked skips.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.models.base import AnomalyModel, seeded_init
from edgead.models import masks as M

DEFAULTS: Dict[str, Any] = {
    "model": "fader",
    "fader": True,  # False: plain EAR-style inpainting U-Net (the paper's baseline)
    "image_size": [256, 256],
    "channels": 3,
    "widths": [32, 64, 128, 256, 512],  # encoder block widths, D = len(widths) = 5
    "negative_slope": 0.2,  # LeakyReLU
    "mosaic_scale": 8,  # m: mosaic cell = FADeR token size
    "mlp_hidden": 128,
    "mlp_input": "input",  # "input" (obfuscated input I', Fig. 4/5) | "reconstruction" (eq. 2)
    "mask_source": "reconstruction",
    "mask_ratio": 0.05,  # top fraction of tokens masked at inference
    "mask_dilate": 1,  # token dilation of the inference mask
    "mask_artifact": None,  # anomaly_map source: path of another edgead artifact
    "train_mask": "random",  # "random" block masks | "source" (the inference mask source)
    "train_mask_ratio": [0.1, 0.5],
    "train_mask_block": 2,  # random mask block size in tokens
    "loss_weights": {"l2": 1.0, "msgms": 1.0, "ssim": 1.0},
    "rank_margin": 1.0,  # xi of eq. 3
    "rank_weight": 1.0,
    "batch_size": 8,
    "lr": 1e-3,  # stage 1 (U-Net) learning rate
    "fader_lr": 1e-3,  # eta: MLP learning rate; decoder fine-tuning at decoder_lr_factor * eta
    "decoder_lr_factor": 0.1,
    "pretrain_epochs": 100,
    "pretrain_iters": None,  # overrides epochs when set
    "fader_epochs": 100,
    "fader_iters": None,
    "pretrained_artifact": None,  # plug FADeR onto a trained unet_ear artifact: skip stage 1
    "msgms_c": 0.0026,
    "msgms_scales": 4,
    "msgms_mean_filter": 21,
    "seed": 0,
}


# ------------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------------
def conv_bn_act(cin: int, cout: int, stride: int = 1, slope: float = 0.2) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(slope, inplace=True),
    )


class EncoderBlock(nn.Sequential):
    """3 x (conv3x3 -> BN -> LeakyReLU); the third conv has stride 2."""

    def __init__(self, cin: int, cout: int, slope: float = 0.2):
        super().__init__(conv_bn_act(cin, cout, 1, slope), conv_bn_act(cout, cout, 1, slope), conv_bn_act(cout, cout, 2, slope))


class DecoderBlock(nn.Module):
    """nearest upsample x2, then 3 x (conv3x3 -> BN -> LeakyReLU)."""

    def __init__(self, cin: int, cout: int, slope: float = 0.2):
        super().__init__()
        self.convs = nn.Sequential(conv_bn_act(cin, cout, 1, slope), conv_bn_act(cout, cout, 1, slope), conv_bn_act(cout, cout, 1, slope))

    def forward(self, x):
        return self.convs(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def softmask_torch(pred: torch.Tensor, features: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """features * nearest_resize(1 - minmax(pred)) with plain torch ops (ONNX-exportable).

    pred (B,h,w) patch-wise error predictions; features (B,C,Hs,Ws). minmax per image."""
    p = pred.unsqueeze(1)
    lo = torch.amin(p, dim=(2, 3), keepdim=True)
    hi = torch.amax(p, dim=(2, 3), keepdim=True)
    soft = 1.0 - (p - lo) / torch.clamp(hi - lo, min=eps)
    soft = F.interpolate(soft, size=(int(features.shape[-2]), int(features.shape[-1])), mode="nearest")
    return features * soft


@torch.library.custom_op("edgead::softmask_apply", mutates_args=())
def softmask_op(pred: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """torch op over the edgead._C soft-mask kernel (CPU, and CUDA on torch's current stream): hands the
    tensors' memory (NumPy view / __cuda_array_interface__) to edgead.ops.softmask_apply; no libtorch link."""
    from edgead import ops

    return ops.softmask_apply(pred.contiguous(), features.contiguous())


@softmask_op.register_fake
def _softmask_op_fake(pred: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(features, memory_format=torch.contiguous_format)


def softmask_inference(pred: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The soft mask of the inference forward: the edgead._C kernel (softmask_op) when running, the plain
    torch ops (softmask_torch, same definition) when the graph is being exported / traced or a gradient is
    needed, since ONNX and autograd see through those and not through the custom op."""
    exporting = torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.jit.is_scripting()
    needs_grad = torch.is_grad_enabled() and (pred.requires_grad or features.requires_grad)
    if exporting or needs_grad or pred.dtype != features.dtype or features.dtype not in (torch.float32, torch.float16):
        return softmask_torch(pred, features)
    return softmask_op(pred, features)


def _softmask_reference() -> Callable:
    """ops_reference.softmask_apply_reference (differentiable torch) when it exists, else ours."""
    try:
        from edgead import ops_reference

        return getattr(ops_reference, "softmask_apply_reference")
    except (ImportError, AttributeError):
        return softmask_torch


class UNet(nn.Module):
    """D encoder blocks, D mirrored decoder blocks, skips at depths 1..D-1, sigmoid output.

    Encoder block d (1-based) outputs widths[d-1] channels at H/2^d. Decoder block d takes
    concat(decoder d+1, encoder d) (only encoder D for d = D), upsamples x2 and outputs
    widths[d-2] channels (widths[0] for d = 1); a 1x1 conv + sigmoid gives the image."""

    def __init__(self, channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256, 512), slope: float = 0.2):
        super().__init__()
        w = [int(v) for v in widths]
        if len(w) < 2:
            raise ValueError(f"widths: expected at least 2 encoder widths, got {w}")
        self.depth = len(w)
        self.encoder = nn.ModuleList()
        cin = channels
        for c in w:
            self.encoder.append(EncoderBlock(cin, c, slope))
            cin = c
        self.decoder = nn.ModuleList()  # decoder[d-1] is decoder block d
        for d in range(1, self.depth + 1):
            cin = w[d - 1] if d == self.depth else 2 * w[d - 1]
            cout = w[d - 2] if d >= 2 else w[0]
            self.decoder.append(DecoderBlock(cin, cout, slope))
        self.head = nn.Conv2d(w[0], channels, 1)

    @property
    def n_skips(self) -> int:
        return self.depth - 1

    def encode(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for blk in self.encoder:
            x = blk(x)
            feats.append(x)
        return feats

    def decode(self, feats: List[torch.Tensor], pred: Optional[torch.Tensor] = None,
               softmask: Callable = softmask_torch) -> torch.Tensor:
        y = self.decoder[self.depth - 1](feats[self.depth - 1])
        for d in range(self.depth - 1, 0, -1):
            skip = feats[d - 1]
            if pred is not None:
                skip = softmask(pred, skip)
            y = self.decoder[d - 1](torch.cat([y, skip], dim=1))
        return torch.sigmoid(self.head(y))

    def forward(self, x: torch.Tensor, pred: Optional[torch.Tensor] = None,
                softmask: Callable = softmask_torch) -> torch.Tensor:
        return self.decode(self.encode(x), pred, softmask)

    def decoder_parameters(self):
        return list(self.decoder.parameters()) + list(self.head.parameters())


class TokenMLP(nn.Module):
    """FADeR's two-layer MLP on non-overlapping m x m tokens: (B,C,H,W) -> (B,H/m,W/m).

    Linear(C*m*m -> hidden) -> LeakyReLU -> Linear(hidden -> 1), applied per token; implemented as a
    kernel-m stride-m conv followed by a 1x1 conv (the same maps, exportable and fast)."""

    def __init__(self, channels: int, m: int, hidden: int = 128, slope: float = 0.2):
        super().__init__()
        self.m = int(m)
        self.fc1 = nn.Conv2d(channels, hidden, self.m, stride=self.m)
        self.act = nn.LeakyReLU(slope)
        self.fc2 = nn.Conv2d(hidden, 1, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))[:, 0]

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Same map on explicit token vectors (N, C*m*m) in (C, m, m) order -> (N,)."""
        w1 = self.fc1.weight.reshape(self.fc1.out_channels, -1)
        h = self.act(tokens @ w1.t() + self.fc1.bias)
        return (h @ self.fc2.weight.reshape(1, -1).t())[:, 0] + self.fc2.bias


# ------------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------------
_PREWITT_X = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]]) / 3.0


def _gms(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    ch = a.shape[1]
    kx = _PREWITT_X.to(a).view(1, 1, 3, 3).repeat(ch, 1, 1, 1)
    ky = kx.transpose(-1, -2)

    def mag(t):
        gx = F.conv2d(t, kx, padding=1, groups=ch)
        gy = F.conv2d(t, ky, padding=1, groups=ch)
        return torch.sqrt(gx * gx + gy * gy + 1e-12)

    g1, g2 = mag(a), mag(b)
    return (2 * g1 * g2 + c) / (g1 * g1 + g2 * g2 + c)


def msgms_loss(x: torch.Tensor, y: torch.Tensor, scales: int = 4, c: float = 0.0026) -> torch.Tensor:
    """RIAD's multi-scale GMS loss: mean over scales of mean(1 - GMS) (differentiable)."""
    total = 0.0
    for s in range(scales):
        if s > 0:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        total = total + (1.0 - _gms(x, y, c)).mean()
    return total / scales


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """1 - mean SSIM with a Gaussian window (valid region, per channel), data range 1."""
    ch = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    g = torch.exp(-((torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).view(1, 1, window, window).repeat(ch, 1, 1, 1)
    mu_x = F.conv2d(x, k, groups=ch)
    mu_y = F.conv2d(y, k, groups=ch)
    sxx = F.conv2d(x * x, k, groups=ch) - mu_x**2
    syy = F.conv2d(y * y, k, groups=ch) - mu_y**2
    sxy = F.conv2d(x * y, k, groups=ch) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return 1.0 - ssim.mean()


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, weights: Dict[str, float]) -> torch.Tensor:
    loss = recon.new_zeros(())
    if weights.get("l2", 0):
        loss = loss + weights["l2"] * F.mse_loss(recon, x)
    if weights.get("msgms", 0):
        loss = loss + weights["msgms"] * msgms_loss(recon, x)
    if weights.get("ssim", 0):
        loss = loss + weights["ssim"] * ssim_loss(recon, x)
    return loss


def ranking_pairs(n: int, batch: int, generator: Optional[torch.Generator] = None, device: Any = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint token pairs within each image: indices (batch, n//2) for i and j."""
    perm = torch.argsort(torch.rand(batch, n, generator=generator), dim=1).to(device)
    half = n // 2
    return perm[:, :half], perm[:, half : 2 * half]


def margin_ranking_loss(pred: torch.Tensor, gt: torch.Tensor, margin: float = 1.0,
                        pairs: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
                        generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Eq. 3: mean over pairs (i, j) of max(0, -1(l_i, l_j) * (lhat_i - lhat_j) + margin),
    1(l_i, l_j) = +1 if l_i > l_j else -1. pred, gt: (B, h, w) or (B, n); pairs index within an image."""
    b = pred.shape[0]
    p = pred.reshape(b, -1)
    g = gt.reshape(b, -1).detach()
    if pairs is None:
        pairs = ranking_pairs(p.shape[1], b, generator, p.device)
    i, j = pairs
    pi, pj = torch.gather(p, 1, i), torch.gather(p, 1, j)
    gi, gj = torch.gather(g, 1, i), torch.gather(g, 1, j)
    sign = torch.where(gi > gj, torch.ones_like(gi), -torch.ones_like(gi))
    return torch.clamp(-sign * (pi - pj) + margin, min=0).mean()


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------
class _Export(nn.Module):
    """image (B,C,H,W) [, mask (B,1,H,W)] -> (reconstruction, original)."""

    def __init__(self, model: "FADeR", with_mask: bool):
        super().__init__()
        self.model = model
        self.with_mask = with_mask

    def forward(self, image: torch.Tensor, mask: Optional[torch.Tensor] = None):
        recon = self.model.reconstruct(image, mask if self.with_mask else None)
        return recon, image * 1.0


class FADeR(AnomalyModel):
    model_type = "fader"
    export_outputs = ("reconstruction", "original")

    def __init__(self, config: Optional[Dict[str, Any]] = None, mask_fn: Any = None):
        cfg = copy.deepcopy(DEFAULTS)
        for k, v in dict(config or {}).items():
            if k == "mask_fn":
                mask_fn = v
                continue
            cfg[k] = v
        cfg["model"] = "fader"
        super().__init__(cfg)
        self._validate()
        c = self.config
        with seeded_init(c["seed"]):
            self.unet = UNet(int(c["channels"]), c["widths"], float(c["negative_slope"]))
            self.mlp = TokenMLP(int(c["channels"]), int(c["mosaic_scale"]), int(c["mlp_hidden"]), float(c["negative_slope"])) if c["fader"] else None
        self._mask_fn = mask_fn if mask_fn is not None else c.get("mask_artifact")
        self._mask_source: Optional[M.MaskSource] = None
        self.training_softmask: Callable = _softmask_reference()

    # --- config ---------------------------------------------------------------------------------
    def _validate(self) -> None:
        c = self.config
        if isinstance(c["image_size"], int):
            c["image_size"] = [c["image_size"], c["image_size"]]
        c["image_size"] = [int(v) for v in c["image_size"]]
        c["widths"] = [int(v) for v in c["widths"]]
        if int(c["channels"]) not in (1, 3):
            raise ValueError(f"fader config 'channels': expected 1 or 3, got {c['channels']!r}")
        m = int(c["mosaic_scale"])
        if m < 1:
            raise ValueError(f"fader config 'mosaic_scale': expected >= 1, got {m}")
        step = 2 ** len(c["widths"])
        for s in c["image_size"]:
            if s % step or s % m:
                raise ValueError(
                    f"fader config 'image_size': {c['image_size']} must be divisible by 2^D = {step} "
                    f"(D = {len(c['widths'])} blocks) and by mosaic_scale = {m}"
                )
        if c["mlp_input"] not in ("input", "reconstruction"):
            raise ValueError(f"fader config 'mlp_input': expected 'input' or 'reconstruction', got {c['mlp_input']!r}")
        if c["mask_source"] not in M.MASK_SOURCES:
            raise ValueError(f"fader config 'mask_source': expected one of {M.MASK_SOURCES}, got {c['mask_source']!r}")
        if c["train_mask"] not in ("random", "source"):
            raise ValueError(f"fader config 'train_mask': expected 'random' or 'source', got {c['train_mask']!r}")
        if not isinstance(c["fader"], bool):
            raise ValueError(f"fader config 'fader': expected true or false, got {c['fader']!r}")

    def preprocessing(self):
        from edgead.data.transforms import Preprocessing

        c = self.config
        # The network works on images in [0, 1] (sigmoid output, MSGMS constant c for [0, 1]).
        return Preprocessing(size=tuple(c["image_size"]), channels=int(c["channels"]), mean=0.0, std=1.0)

    # --- masks ----------------------------------------------------------------------------------
    def set_mask_fn(self, fn: Any) -> None:
        """The callable (or artifact path) for the 'anomaly_map' / 'attention' mask sources."""
        self._mask_fn = fn
        self._mask_source = None

    @property
    def mask_source(self) -> M.MaskSource:
        if self._mask_source is None:
            c = self.config
            self._mask_source = M.build_mask_source(c["mask_source"], int(c["mosaic_scale"]), float(c["mask_ratio"]),
                                                    int(c["mask_dilate"]), self._mask_fn)
        return self._mask_source

    def compute_mask(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask_source(self, x)

    # --- forward --------------------------------------------------------------------------------
    def obfuscate(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return M.obfuscate(x, mask, int(self.config["mosaic_scale"]))

    def predict_token_error(self, xo: torch.Tensor) -> torch.Tensor:
        """FADeR's patch-wise error prediction l_hat (B, H/m, W/m) for the obfuscated input I'."""
        src = xo if self.config["mlp_input"] == "input" else self.unet(xo)
        return self.mlp(src)

    def reconstruct(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Inference path: mask -> obfuscate -> [soft mask] -> U-Net. The soft mask runs the edgead._C kernel
        (softmask_inference); the exported graph gets the same definition in plain torch ops."""
        if mask is None:
            mask = self.compute_mask(x)
        elif mask.dim() == 3:
            mask = mask.unsqueeze(1)
        xo = self.obfuscate(x, mask)
        pred = self.predict_token_error(xo) if self.mlp is not None else None
        return self.unet(xo, pred, softmask_inference)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.reconstruct(x, mask)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        from edgead.runtime import post_fader

        self.eval()
        x = torch.as_tensor(x, dtype=torch.float32)
        dev = next(self.parameters()).device
        x = x.to(dev)
        recon = self.reconstruct(x)
        if x.is_cuda:
            scores, maps = post_fader.postprocess({"reconstruction": recon.contiguous(), "original": x.contiguous()}, self.config)
            return torch.as_tensor(scores, device=dev), torch.as_tensor(maps, device=dev)
        scores, maps = post_fader.postprocess(
            {"reconstruction": recon.cpu().numpy(), "original": x.cpu().numpy()}, self.config
        )
        return torch.from_numpy(np.asarray(scores, dtype=np.float32)), torch.from_numpy(np.asarray(maps, dtype=np.float32))

    # --- training -------------------------------------------------------------------------------
    def build_fader_optimizer(self, lr: Optional[float] = None) -> torch.optim.Optimizer:
        """Adam with two groups: 'mlp' at eta, 'decoder' (decoder blocks + head) at decoder_lr_factor * eta."""
        if self.mlp is None:
            raise ValueError("build_fader_optimizer: this model was built with fader: false")
        eta = float(self.config["fader_lr"] if lr is None else lr)
        return torch.optim.Adam([
            {"params": list(self.mlp.parameters()), "lr": eta, "name": "mlp"},
            {"params": self.unet.decoder_parameters(), "lr": eta * float(self.config["decoder_lr_factor"]), "name": "decoder"},
        ])

    def _train_mask(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        c = self.config
        if c["train_mask"] == "source":
            with torch.no_grad():
                was = self.training
                self.eval()
                mask = self.compute_mask(x)
                self.train(was)
                if was and getattr(self, "_encoder_frozen", False):
                    self.unet.encoder.eval()
            return mask
        return M.random_block_mask(x.shape[0], x.shape[-2:], int(c["mosaic_scale"]), c["train_mask_ratio"],
                                   int(c["train_mask_block"]), gen, x.device)

    def fader_step(self, x: torch.Tensor, mask: torch.Tensor, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """One stage-2 training step's losses (no optimizer step). Encoder frozen by the caller."""
        c = self.config
        xo = self.obfuscate(x, mask)
        if c["mlp_input"] == "input":
            pred = self.mlp(xo)
        else:
            with torch.no_grad():
                src = self.unet(xo)
            pred = self.mlp(src)
        # the soft mask is a fixed (detached) input to the decoder: the MLP learns from the ranking
        # loss only, as the loss-prediction module of "learning loss" [42]
        recon = self.unet(xo, pred.detach(), self.training_softmask)
        gt = M.token_error(x, recon.detach(), int(c["mosaic_scale"]))
        rank = margin_ranking_loss(pred, gt, float(c["rank_margin"]), generator=generator)
        rec = reconstruction_loss(recon, x, c["loss_weights"])
        return {"loss": rec + float(c["rank_weight"]) * rank, "recon": rec, "rank": rank}

    def _load_array(self, samples: Any, progress: bool, desc: str) -> Optional[np.ndarray]:
        if samples is None:
            return None
        if isinstance(samples, torch.Tensor):
            return samples.detach().cpu().float().numpy()
        if isinstance(samples, np.ndarray):
            return np.ascontiguousarray(samples, dtype=np.float32)
        samples = list(samples)
        if not samples:
            return None
        pre = self.preprocessing()
        try:
            from edgead.data.datasets import iter_batches
        except ImportError:
            iter_batches = None
        if iter_batches is not None:
            return np.concatenate([b for b, _ in iter_batches(samples, pre, batch_size=32, progress=progress, desc=desc)], 0)
        from edgead.data.io import read_image

        return pre.batch([read_image(getattr(s, "path", s)) for s in samples])

    def _iters(self, epochs_key: str, iters_key: str, n: int) -> int:
        c = self.config
        if c.get(iters_key) is not None:
            return int(c[iters_key])
        return int(c[epochs_key]) * max(1, math.ceil(n / int(c["batch_size"])))

    def _batches(self, data: np.ndarray, iters: int, gen: torch.Generator):
        bs = min(int(self.config["batch_size"]), len(data))
        order: List[int] = []
        for _ in range(iters):
            if len(order) < bs:
                order += torch.randperm(len(data), generator=gen).tolist()
            idx, order = order[:bs], order[bs:]
            yield torch.from_numpy(data[idx])

    def fit(self, train: Any, val: Any = None, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        c = self.config
        t0 = time.time()
        data = self._load_array(train, progress, "load train")
        if data is None or len(data) == 0:
            raise ValueError("fit: 'train' has no images")
        if tuple(data.shape[1:]) != (int(c["channels"]), *c["image_size"]):
            raise ValueError(f"fit: train images have shape {data.shape[1:]}, expected {(c['channels'], *c['image_size'])}")
        if data.min() < -1e-4 or data.max() > 1 + 1e-4:
            raise ValueError("fit: images must be in [0, 1] (FADeR.preprocessing() uses mean 0, std 1)")
        self.to(device)
        gen = torch.Generator().manual_seed(int(c["seed"]))
        stats: Dict[str, Any] = {"n_train": int(len(data))}

        # stage 1: EAR-style inpainting U-Net
        if c.get("pretrained_artifact"):
            self._load_pretrained(c["pretrained_artifact"])
            stats["pretrain_iters"] = 0
            stats["pretrained_artifact"] = str(c["pretrained_artifact"])
        else:
            iters = self._iters("pretrain_epochs", "pretrain_iters", len(data))
            opt = torch.optim.Adam(self.unet.parameters(), lr=float(c["lr"]))
            self.train()
            if self.mlp is not None:
                self.mlp.eval()
            bar = tqdm(self._batches(data, iters, gen), total=iters, desc="fader: U-Net inpainting", disable=not progress)
            last = float("nan")
            for x in bar:
                x = x.to(device)
                mask = self._train_mask(x, gen)
                recon = self.unet(self.obfuscate(x, mask))
                loss = reconstruction_loss(recon, x, c["loss_weights"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = float(loss.detach())
                bar.set_postfix(loss=f"{last:.4f}")
            stats["pretrain_iters"] = iters
            stats["pretrain_final_loss"] = last

        # stage 2: FADeR (MLP + decoder fine-tuning at 0.1x), encoder frozen
        if self.mlp is not None:
            iters = self._iters("fader_epochs", "fader_iters", len(data))
            for p in self.unet.encoder.parameters():
                p.requires_grad_(False)
            opt = self.build_fader_optimizer()
            self.train()
            self.unet.encoder.eval()  # frozen BN statistics too
            self._encoder_frozen = True
            bar = tqdm(self._batches(data, iters, gen), total=iters, desc="fader: MLP + decoder", disable=not progress)
            last = {"loss": float("nan"), "recon": float("nan"), "rank": float("nan")}
            for x in bar:
                x = x.to(device)
                mask = self._train_mask(x, gen)
                losses = self.fader_step(x, mask, gen)
                opt.zero_grad(set_to_none=True)
                losses["loss"].backward()
                opt.step()
                last = {k: float(v.detach()) for k, v in losses.items()}
                bar.set_postfix(loss=f"{last['loss']:.4f}", rank=f"{last['rank']:.3f}")
            for p in self.unet.encoder.parameters():
                p.requires_grad_(True)
            self._encoder_frozen = False
            stats["fader_iters"] = iters
            stats["fader_final_loss"] = last["loss"]
            stats["fader_final_rank_loss"] = last["rank"]
        self.eval()

        vdata = self._load_array(val, progress, "load val")
        if vdata is not None and len(vdata):
            scores = []
            with torch.no_grad():
                for i in range(0, len(vdata), int(c["batch_size"])):
                    scores.append(self.predict(torch.from_numpy(vdata[i : i + int(c["batch_size"])]).to(device))[0].cpu())
            s = torch.cat(scores).numpy().astype(np.float64)
            stats.update(val_score_mean=float(s.mean()), val_score_std=float(s.std()), val_score_max=float(s.max()), n_val=int(len(s)))
        stats["train_seconds"] = round(time.time() - t0, 2)
        return stats

    def _load_pretrained(self, path: str) -> None:
        from edgead.artifact import load_artifact

        art = load_artifact(path)
        unet = {k[len("unet."):]: torch.from_numpy(np.array(v)) for k, v in art.tensors.items() if k.startswith("unet.")}
        if not unet:
            raise ValueError(f"pretrained_artifact '{path}' holds no U-Net tensors")
        for key in ("channels", "widths", "mosaic_scale"):
            if key in art.config and art.config[key] != self.config[key]:
                raise ValueError(f"pretrained_artifact '{path}': {key} is {art.config[key]!r}, this model has {self.config[key]!r}")
        self.unet.load_state_dict(unet)

    # --- artifact -------------------------------------------------------------------------------
    def artifact_config(self) -> Dict[str, Any]:
        """JSON config. Mask callables are never stored (no pickle): pass them again to from_artifact."""
        cfg = dict(self.config)
        if not (cfg.get("mask_artifact") is None or isinstance(cfg["mask_artifact"], str)):
            cfg["mask_artifact"] = None
        return cfg

    @classmethod
    def from_artifact(cls, artifact, mask_fn: Any = None) -> "FADeR":
        model = cls(dict(artifact.config), mask_fn=mask_fn)
        state = {k: torch.from_numpy(np.array(v)) for k, v in artifact.tensors.items()}
        model.load_state_dict(state)
        return model.eval()

    # --- export ---------------------------------------------------------------------------------
    def export_inputs(self) -> Tuple[str, ...]:
        return ("image",) if self.config["mask_source"] in M.IN_GRAPH_SOURCES else ("image", "mask")

    def export_module(self) -> nn.Module:
        """image (B,C,H,W) in [0,1] [, mask (B,1,H,W) for callable mask sources]
        -> (reconstruction, original); score with edgead.runtime.post_fader.postprocess."""
        return _Export(self, len(self.export_inputs()) == 2).eval()
