"""PUAD (Sugawara & Imamura): EfficientAD + a Mahalanobis head for "unpicturable" (logical) anomalies.

    f      = global average pool of the student's FIRST 384 output channels (the teacher-mimic half;
             the paper's best variant, Table 1: EfficientAD-S + student's former half output)
    mu, S  = mean and Ledoit-Wolf shrunk covariance of f over the training images (not the validation split)
    M(f)   = sqrt((f - mu)^T S^-1 (f - mu))
    score  = (s_EAD - m_EAD) / sd_EAD + (M - m_M) / sd_M

where s_EAD is EfficientAD's image score (max of the normalised map) and (m, sd) are the mean and the
population standard deviation (ddof=0) of each score over the validation images. The head runs inside
the same forward as EfficientAD (no extra network, no NumPy round trip), so it is part of the exported
ONNX graph. The anomaly map is EfficientAD's, unchanged.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from edgead.models.efficientad import EfficientAD

__all__ = ["ledoit_wolf", "mahalanobis", "MahalanobisHead", "PUAD"]


def ledoit_wolf(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, float]:
    """Ledoit-Wolf shrinkage covariance of x (N, D), as sklearn.covariance.LedoitWolf (assume_centered=False).

    Returns (location (D,), shrunk covariance (D, D), shrinkage). Computed in float64.
    """
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x: expected (N, D) with N >= 1, got {tuple(x.shape)}")
    x = x.double()
    n, d = x.shape
    loc = x.mean(0)
    xc = x - loc
    emp = xc.T @ xc / n
    mu = torch.trace(emp) / d
    if n == 1:
        shrink = 0.0
    else:
        x2 = xc * xc
        emp_trace = x2.sum(0) / n
        delta_ = (emp**2).sum()  # = sum((X^T X)^2) / n^2
        beta_ = (x2.T @ x2).sum()
        beta = (beta_ / n - delta_) / (d * n)
        delta = (delta_ - 2.0 * mu * emp_trace.sum() + d * mu * mu) / d
        beta = torch.minimum(beta, delta)
        shrink = 0.0 if float(beta) == 0.0 else float(beta / delta)
    cov = (1.0 - shrink) * emp
    cov = cov + shrink * mu * torch.eye(d, dtype=cov.dtype, device=cov.device)
    return loc, cov, shrink


def mahalanobis(x: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """sqrt((x - mean)^T P (x - mean)) for each row of x (B, D)."""
    d = x - mean
    return torch.sqrt(torch.clamp(((d @ precision) * d).sum(dim=1), min=0.0))


class MahalanobisHead(nn.Module):
    """(EfficientAD score (B,), student first half (B,C,h,w)) -> PUAD score (B,)."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, z: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("precision", precision)
        self.register_buffer("z", z)  # [mean_ead, std_ead, mean_maha, std_maha]

    def features(self, s_first: torch.Tensor) -> torch.Tensor:
        return s_first.mean(dim=(2, 3))

    def distance(self, s_first: torch.Tensor) -> torch.Tensor:
        return mahalanobis(self.features(s_first), self.mean, self.precision)

    def forward(self, ead_score: torch.Tensor, s_first: torch.Tensor) -> torch.Tensor:
        m = self.distance(s_first)
        return (ead_score - self.z[0]) / self.z[1] + (m - self.z[2]) / self.z[3]


class PUAD(EfficientAD):
    model_type = "puad"

    def __init__(self, config: Optional[Dict[str, Any]] = None):
        super().__init__(config)
        c = self.out_channels
        self.register_buffer("puad_mean", torch.zeros(c))
        self.register_buffer("puad_precision", torch.eye(c))
        self.register_buffer("puad_z", torch.tensor([0.0, 1.0, 0.0, 1.0]))

    def _head_module(self) -> Optional[nn.Module]:
        return MahalanobisHead(self.puad_mean, self.puad_precision, self.puad_z)

    @torch.no_grad()
    def _features(self, x: torch.Tensor, device, bs: int) -> torch.Tensor:
        c = self.out_channels
        return torch.cat([self.student(x[i : i + bs].to(device))[:, :c].mean(dim=(2, 3)) for i in range(0, len(x), bs)])

    @torch.no_grad()
    def _fit_head(self, x_train: torch.Tensor, x_val: torch.Tensor, device, progress: bool) -> Dict[str, Any]:
        self.eval()
        f = self._features(x_train, device, 8)
        loc, cov, shrink = ledoit_wolf(f)
        prec = torch.linalg.inv(cov)
        prec = 0.5 * (prec + prec.T)
        self.puad_mean.copy_(loc.float())
        self.puad_precision.copy_(prec.float())
        # z-normalisation of both scores on the validation images
        self.puad_z.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0], device=self.puad_z.device))
        inf = EfficientAD.inference_module(self)
        head = inf.head
        inf.head = None  # plain EfficientAD score
        ead, maha = [], []
        for i in range(0, len(x_val), 8):
            xb = x_val[i : i + 8].to(device)
            s, _ = inf(xb)
            ead.append(s)
            maha.append(head.distance(self.student(xb)[:, : self.out_channels]))
        ead_t, maha_t = torch.cat(ead).double(), torch.cat(maha).double()

        def z(v):
            sd = float(v.std(unbiased=False)) if len(v) > 1 else 0.0
            return float(v.mean()), (sd if sd > 1e-12 else 1.0)

        me, se = z(ead_t)
        mm, sm = z(maha_t)
        self.puad_z.copy_(torch.tensor([me, se, mm, sm], device=self.puad_z.device))
        return {"puad_shrinkage": shrink, "puad_z": [me, se, mm, sm], "puad_n_features": int(len(f))}
