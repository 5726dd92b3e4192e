"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).

Embedding (the part that is exported, `PatchEmbedder`):
    1. frozen backbone (edgead.models.backbones) -> feature maps at `layers` (default layer2 + layer3);
    2. local neighbourhood aggregation: each map is 3x3 average pooled (stride 1, padding 1,
       zero padding counted, i.e. nn.AvgPool2d(3, 1, 1) as in the paper's code and anomalib);
    3. every deeper map is upsampled bilinearly (align_corners=False) to the first (shallowest)
       map's resolution and the maps are concatenated along channels (C = sum of channels);
    4. projection to `embedding_dim`: adaptive average pooling over the channel dimension (channel
       j of the output is the mean of input channels [floor(j*C/D), ceil((j+1)*C/D)) - exactly
       torch's adaptive_avg_pool1d), implemented as a fixed (C, D) matrix product so that it exports
       to ONNX/TensorRT as one MatMul. embedding_dim None (or >= C) keeps all C channels.
    -> embeddings (B, N, D), N = grid_h * grid_w patches in row-major order.

Layers: any backbone stages (edgead.models.backbones), e.g. MobileNetV2 layer1 = features[3] (24 ch, 1/4),
layer2 = features[6] (1/8), layer3 = features[13] (1/16). The patch grid is that of the FIRST listed layer:
[layer1, layer2, layer3] scores on a 1/4-scale grid; [layer2, layer1, layer3] keeps the 1/4-scale features
(averaged 2x2 by the bilinear resize) on a 1/8-scale grid, at a quarter of the kNN cost.

Bounded fit (both off by default): `coreset_candidates` N_c keeps a seeded uniform random sample of N_c
patch embeddings while embedding (reservoir sampling: memory N_c rows however many images), and the
greedy coreset runs on that sample only (an approximate selection, explicitly opted into);
`bank_max_size` caps the bank at that many rows (bank = min(coreset_ratio * rows seen by the greedy,
bank_max_size)). The greedy cost is rows x bank x coreset_dim, so these two bound the fit time.

Memory bank (fit): embeddings of all training images (float32, or float16 when they would take more
than `max_feature_bytes`), Johnson-Lindenstrauss projection to `coreset_dim` dims (seeded Gaussian
matrix / sqrt(coreset_dim)), greedy k-center coreset of `coreset_ratio` * N rows via edgead.ops.coreset
(on the GPU when the features are there), bank = the selected rows of the full-dimensional
embeddings (float32). The b = `num_neighbors` nearest bank items of every bank item are precomputed
(edgead.ops.knn on the bank, the item itself included) and stored as `bank_neighbors`.

Scoring (predict, and the torch-free edgead.runtime.post_patchcore):
    patch score  = L2 distance of each patch embedding to its nearest bank item (edgead.ops.knn, k=1);
    image score  = w * s*, with s* the maximum patch score, m_test* that patch, m* its nearest bank item,
                   N_b(m*) the b nearest bank items of m* and
                   w = 1 - exp(||m_test* - m*||) / sum_{m in N_b(m*)} exp(||m_test* - m||)
                   evaluated stably as 1 - exp(s* - M) / sum exp(d_m - M), M = max(s*, max d_m).
                   num_neighbors <= 1 disables the reweighting (s = s*).
    anomaly map  = patch scores on the (grid_h, grid_w) grid, bilinear upsampling to the input size
                   (align_corners=False, = cv2.resize INTER_LINEAR), then a separable Gaussian blur with
                   sigma `blur_sigma` (4) and kernel size 2*ceil(4*sigma)+1 (33 for sigma 4, as anomalib),
                   border mode "reflect 101" (cv2.BORDER_REFLECT_101 = torch "reflect", extended
                   periodically when the kernel is wider than the map); blur_sigma 0 disables it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgead.models.backbones import FeatureExtractor, build_backbone, default_normalization
from edgead.models.base import AnomalyModel

__all__ = ["PatchCore", "PatchEmbedder", "channel_pool_matrix", "gaussian_kernel_1d", "gaussian_blur", "reweight_scores"]

DEFAULTS: Dict[str, Any] = {
    "backbone": "mobilenet_v2",
    "weights": None,
    "allow_random": False,
    "layers": ["layer2", "layer3"],
    "image_size": [224, 224],
    "mean": None,
    "std": None,
    "interpolation": "auto",
    "embedding_dim": None,
    "coreset_ratio": 0.1,
    "coreset_dim": 128,
    "bank_max_size": None,
    "coreset_candidates": None,
    "num_neighbors": 9,
    "blur_sigma": 4.0,
    "seed": 0,
    "batch_size": 16,
    "max_feature_bytes": 2 << 30,
    "pixel_stat_samples": 200000,
}


# ------------------------------------------------------------------------------------------------
# building blocks
# ------------------------------------------------------------------------------------------------
def channel_pool_matrix(c: int, d: int) -> torch.Tensor:
    """(c, d) matrix P with x @ P == adaptive_avg_pool1d(x, d) over the last dim of x (d <= c)."""
    p = torch.zeros(c, d, dtype=torch.float32)
    for j in range(d):
        s = (j * c) // d
        e = -((-(j + 1) * c) // d)  # ceil
        p[s:e, j] = 1.0 / (e - s)
    return p


class PatchEmbedder(nn.Module):
    """backbone + 3x3 aggregation + upsample/concat + channel projection: image (B,3,H,W) -> (B, N, D)."""

    def __init__(self, backbone: FeatureExtractor, embedding_dim: Optional[int] = None):
        super().__init__()
        self.backbone = backbone
        c = int(sum(backbone.channels))
        d = c if embedding_dim is None else int(embedding_dim)
        if d < 1:
            raise ValueError(f"embedding_dim: expected a positive int or None, got {embedding_dim!r}")
        self.feature_dim = c
        self.embedding_dim = min(d, c)
        self.project = self.embedding_dim < c
        # not persistent: rebuilt from (c, d), never read from an artifact
        self.register_buffer("channel_pool", channel_pool_matrix(c, self.embedding_dim), persistent=False)
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def grid_size(self, image_size: Sequence[int]) -> Tuple[int, int]:
        s = self.backbone.strides[0]
        # conv arithmetic of the backbone (padding 1 stride-2 convs): ceil division
        return (-(-int(image_size[0]) // s), -(-int(image_size[1]) // s))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.aggregate(self.backbone(image))

    def aggregate(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Steps 2-4 on the backbone's maps (list as FeatureExtractor returns it) -> (B, N, D)."""
        feats = [self.pool(f) for f in feats]
        h, w = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False) for f in feats[1:]]
        emb = torch.cat(up, dim=1)  # (B, C, h, w)
        b, c = emb.shape[0], emb.shape[1]
        emb = emb.reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        if self.project:
            emb = emb @ self.channel_pool
        return emb


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(2*ceil(4*sigma)+1, sigma) as float64 (normalised to sum 1)."""
    r = int(math.ceil(4.0 * float(sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2.0 * float(sigma) ** 2))
    return k / k.sum()


def _reflect101_index(n: int, pad: int, device) -> torch.Tensor:
    i = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= n, period - i, i)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps, reflect-101 border: matches cv2.GaussianBlur(
    map, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101) with k = 2*ceil(4*sigma)+1."""
    if sigma is None or sigma <= 0:
        return maps
    k = torch.as_tensor(gaussian_kernel_1d(sigma), dtype=maps.dtype, device=maps.device)
    pad = (k.numel() - 1) // 2
    b, h, w = maps.shape
    x = maps.unsqueeze(1)
    x = x.index_select(3, _reflect101_index(w, pad, maps.device))
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    x = x.index_select(2, _reflect101_index(h, pad, maps.device))
    x = F.conv2d(x, k.view(1, 1, -1, 1))
    return x[:, 0]


def reweight_scores(s_star, d_neighbors):
    """w * s* with w = 1 - exp(s*) / sum_j exp(d_j) (stable form); NumPy or torch, shapes (B,), (B, b)."""
    if isinstance(s_star, torch.Tensor):
        m = torch.maximum(s_star, d_neighbors.max(dim=1).values)
        w = 1.0 - torch.exp(s_star - m) / torch.exp(d_neighbors - m[:, None]).sum(dim=1)
        return w * s_star
    s_star = np.asarray(s_star, dtype=np.float32)
    d = np.asarray(d_neighbors, dtype=np.float32)
    m = np.maximum(s_star, d.max(axis=1))
    w = np.float32(1.0) - np.exp(s_star - m) / np.exp(d - m[:, None]).sum(axis=1)
    return (w * s_star).astype(np.float32)


def _knn(queries, bank, k=1):
    from edgead import ops

    d, i = ops.knn(queries, bank, k=k)
    if bool((i < 0).any()):  # never index the bank with -1 (a CUDA overflow the host scan cannot see)
        raise ValueError("patchcore: knn found no finite nearest bank row for some embeddings (float32 overflow "
                         "of the squared norms); the features are out of range")
    if isinstance(queries, torch.Tensor):
        d = torch.as_tensor(d, device=queries.device)
        i = torch.as_tensor(i, device=queries.device)
    return d, i


#: the coreset progress bar appears only for selections running longer than this (seconds)
CORESET_PROGRESS_DELAY_S = 2.0


def _coreset(features, n: int, seed: int, progress: bool = False):
    """Greedy coreset (edgead.ops.CoresetSelector: exactly ops.coreset's selection for the seed's start),
    in steps sized to ~0.25 s each, with a tqdm bar (rate, ETA) shown once the selection has run for
    CORESET_PROGRESS_DELAY_S. Ctrl-C stops between steps (KeyboardInterrupt; nothing is written)."""
    import time as _time

    from tqdm.auto import tqdm

    from edgead import ops

    start = int(np.random.default_rng(seed).integers(features.shape[0]))
    sel = ops.CoresetSelector(features, n, start=start)
    chunk = 8
    with tqdm(total=n, initial=sel.selected, desc="coreset", unit="pt", disable=not progress,
              delay=CORESET_PROGRESS_DELAY_S, mininterval=0.25) as bar:
        while not sel.done:
            t0 = _time.perf_counter()
            got = int(sel.step(chunk).shape[0])
            if features.is_cuda:
                torch.cuda.synchronize(features.device)
            dt = _time.perf_counter() - t0
            bar.update(got)
            # aim at ~0.25 s per step: responsive bar and Ctrl-C, negligible per-step overhead
            chunk = int(min(max(chunk * min(4.0, 0.25 / max(dt, 1e-6)), 1), 1 << 16))
    return torch.as_tensor(sel.indices, device=features.device).long()


def _device(device: str) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------
class PatchCore(AnomalyModel):
    model_type = "patchcore"
    export_outputs = ("embeddings",)

    def __init__(self, config: Optional[Dict[str, Any]] = None, _backbone_state: Optional[Dict[str, torch.Tensor]] = None):
        cfg = dict(DEFAULTS)
        cfg.update({k: v for k, v in dict(config or {}).items() if k not in ("model",)})
        unknown = sorted(set(cfg) - set(DEFAULTS) - {"grid", "feature_dim", "bank_size"})
        if unknown:
            raise ValueError(f"PatchCore config: unknown keys {unknown}; expected some of {sorted(DEFAULTS)}")
        if isinstance(cfg["image_size"], int):
            cfg["image_size"] = [cfg["image_size"], cfg["image_size"]]
        cfg["image_size"] = [int(v) for v in cfg["image_size"]]
        cfg["layers"] = [cfg["layers"]] if isinstance(cfg["layers"], str) else list(cfg["layers"])
        if not 0.0 < float(cfg["coreset_ratio"]) <= 1.0:
            raise ValueError(f"coreset_ratio: expected a number in (0, 1], got {cfg['coreset_ratio']!r}")
        for key in ("bank_max_size", "coreset_candidates"):
            v = cfg[key]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1):
                raise ValueError(f"{key}: expected None or an int >= 1, got {v!r}")
        if int(cfg["num_neighbors"]) < 1:
            raise ValueError(f"num_neighbors: expected an int >= 1, got {cfg['num_neighbors']!r}")
        if cfg["mean"] is None or cfg["std"] is None:
            mean, std = default_normalization(cfg["backbone"], cfg["weights"] if _backbone_state is None else None)
            cfg["mean"] = list(cfg["mean"] if cfg["mean"] is not None else mean)
            cfg["std"] = list(cfg["std"] if cfg["std"] is not None else std)
        super().__init__(cfg)
        if _backbone_state is not None:
            backbone = FeatureExtractor(cfg["backbone"], cfg["layers"]).load_weights(_backbone_state, "the artifact")
        else:
            weights = cfg["weights"]
            if isinstance(weights, str) and weights != "imagenet":
                weights = os.path.expanduser(weights)
            backbone = build_backbone(cfg["backbone"], cfg["layers"], weights=weights, allow_random=bool(cfg["allow_random"]))
        self.embedder = PatchEmbedder(backbone, cfg["embedding_dim"])
        self.grid = self.embedder.grid_size(cfg["image_size"])
        self.config["grid"] = list(self.grid)
        self.config["feature_dim"] = self.embedder.feature_dim
        self.register_buffer("memory_bank", torch.zeros(0, self.embedder.embedding_dim))
        self.register_buffer("bank_neighbors", torch.zeros(0, 1, dtype=torch.long))
        self.statistics: Dict[str, Any] = {}

    # -- helpers -----------------------------------------------------------------------------------
    def preprocessing(self):
        from edgead.data.transforms import Preprocessing

        c = self.config
        return Preprocessing(size=tuple(c["image_size"]), channels=3, mean=tuple(c["mean"]), std=tuple(c["std"]),
                             interpolation=c.get("interpolation", "auto"))

    @property
    def is_fitted(self) -> bool:
        return self.memory_bank.shape[0] > 0

    def _batches(self, items, device, progress: bool, desc: str):
        """Yield preprocessed torch batches on `device` from Samples/paths or an (N,C,H,W) array."""
        bs = int(self.config["batch_size"])
        if isinstance(items, (np.ndarray, torch.Tensor)):
            x = torch.as_tensor(items)
            if x.ndim != 4:
                raise ValueError(f"{desc}: expected (N, C, H, W) preprocessed images, got shape {tuple(x.shape)}")
            from tqdm.auto import tqdm

            for i in tqdm(range(0, x.shape[0], bs), desc=desc, disable=not progress, unit="batch"):
                yield x[i : i + bs].to(device=device, dtype=torch.float32)
            return
        from edgead.data.datasets import iter_batches

        for batch, _ in iter_batches(items, self.preprocessing(), batch_size=bs, progress=progress, desc=desc):
            yield torch.from_numpy(batch).to(device)

    # -- training ----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, train, val=None, device: str = "cpu", progress: bool = True) -> Dict[str, Any]:
        dev = _device(device)
        self.to(dev).eval()
        n_train = len(train)
        if n_train == 0:
            raise ValueError("fit: the training set is empty")
        n_patch = self.grid[0] * self.grid[1]
        d = self.embedder.embedding_dim
        total = n_train * n_patch
        cap = self.config.get("coreset_candidates")
        if cap is not None and int(cap) < total:
            feats = self._sample_embeddings(train, dev, progress, int(cap), n_patch, total)
        else:
            store = torch.float32 if total * d * 4 <= int(self.config["max_feature_bytes"]) else torch.float16
            feats = torch.empty(total, d, dtype=store, device=dev)
            pos = 0
            for x in self._batches(train, dev, progress, "patchcore: embedding train images"):
                e = self._embed_checked(x, n_patch, d)
                feats[pos : pos + e.shape[0]] = e.to(store)
                pos += e.shape[0]
            if pos != total:
                raise RuntimeError(f"fit: got {pos // n_patch} images, expected {n_train}")

        bank = self.select_bank(feats, progress)
        del feats
        self.memory_bank = bank.contiguous()
        self.bank_neighbors = self._neighbor_table(self.memory_bank)
        self.config["bank_size"] = int(self.memory_bank.shape[0])

        stats: Dict[str, Any] = {
            "n_train": n_train,
            "bank_size": int(self.memory_bank.shape[0]),
            "n_patches": int(total),
            "n_candidates": int(min(total, int(cap))) if cap is not None else int(total),
            "embedding_dim": int(d),
            "grid": list(self.grid),
        }
        if val is not None and len(val) > 0:
            stats.update(self._val_statistics(val, dev, progress))
        self.statistics = stats
        return stats

    def _embed_checked(self, x: torch.Tensor, n_patch: int, d: int) -> torch.Tensor:
        e = self.embedder(x)
        if tuple(e.shape[1:]) != (n_patch, d):
            raise ValueError(f"fit: images give a {e.shape[1]}-patch grid, expected {n_patch}: check image_size")
        return e.reshape(-1, d)

    @torch.no_grad()
    def _sample_embeddings(self, train, dev, progress: bool, cap: int, n_patch: int, total: int) -> torch.Tensor:
        """A uniform random sample of `cap` of the `total` training patch embeddings (reservoir
        sampling with seeded random keys: the rows with the `cap` smallest keys), so memory stays at
        `cap` rows however large the training set is. The approximate selection of
        `coreset_candidates`: the greedy coreset then runs on this sample only."""
        d = self.embedder.embedding_dim
        g = torch.Generator().manual_seed(int(self.config["seed"]) + 1)
        keys = torch.empty(0)
        rows = torch.empty(0, d, device=dev)
        seen = 0
        for x in self._batches(train, dev, progress, "patchcore: embedding train images (sampling patches)"):
            e = self._embed_checked(x, n_patch, d)
            k = torch.rand(e.shape[0], generator=g)
            seen += e.shape[0]
            if keys.numel() >= cap:  # rows whose key is above the current cap-th key never enter
                keep = k < keys.max()
                e, k = e[keep.to(e.device)], k[keep]
                if k.numel() == 0:
                    continue
            keys = torch.cat([keys, k])
            rows = torch.cat([rows, e.float()])
            if keys.numel() > cap:
                sel = torch.topk(keys, cap, largest=False).indices
                keys, rows = keys[sel], rows[sel.to(rows.device)]
        if seen != total:
            raise RuntimeError(f"fit: got {seen // n_patch} images, expected {total // n_patch}")
        if progress:
            print(f"patchcore: sampled {rows.shape[0]} of {total} patches as coreset candidates", flush=True)
        return rows.contiguous()

    @torch.no_grad()
    def select_bank(self, feats: torch.Tensor, progress: bool = False) -> torch.Tensor:
        """(N, D) patch embeddings -> memory bank (M, D) float32: JL projection + greedy coreset."""
        total, d = feats.shape
        dev, store = feats.device, feats.dtype
        ratio = float(self.config["coreset_ratio"])
        n_keep = max(1, int(round(total * ratio)))
        if self.config.get("bank_max_size") is not None:
            n_keep = min(n_keep, int(self.config["bank_max_size"]))
        if n_keep >= total:
            bank = feats.float()
        else:
            g = torch.Generator().manual_seed(int(self.config["seed"]))
            k = int(self.config["coreset_dim"])
            if k and k < d:
                proj = (torch.randn(d, k, generator=g) / math.sqrt(k)).to(dev, store)
                reduced = torch.empty(total, k, dtype=store, device=dev)
                for i in range(0, total, 65536):
                    reduced[i : i + 65536] = feats[i : i + 65536] @ proj
            else:
                reduced = feats
            if progress:
                print(f"patchcore: greedy coreset {n_keep} of {total} patches ({n_keep / total:.2%}) on {dev.type}", flush=True)
            idx = _coreset(reduced.contiguous(), n_keep, int(self.config["seed"]), progress=progress)
            del reduced
            bank = feats[idx].float()
        return bank

    def _neighbor_table(self, bank: torch.Tensor) -> torch.Tensor:
        b = min(int(self.config["num_neighbors"]), bank.shape[0])
        if b <= 1:
            return torch.arange(bank.shape[0], device=bank.device).view(-1, 1)
        _, idx = _knn(bank, bank, k=b)
        return idx.long().contiguous()

    def _val_statistics(self, val, dev, progress) -> Dict[str, Any]:
        img, pix = [], []
        rng = np.random.default_rng(int(self.config["seed"]))
        per_img = max(1, int(self.config["pixel_stat_samples"]) // max(1, len(val)))
        for x in self._batches(val, dev, progress, "patchcore: scoring validation images"):
            s, m = self.predict(x)
            img.append(s.cpu().numpy())
            m = m.reshape(m.shape[0], -1).cpu().numpy()
            for row in m:
                pix.append(row if row.size <= per_img else row[rng.choice(row.size, per_img, replace=False)])
        img = np.concatenate(img).astype(np.float64)
        pix = np.concatenate(pix).astype(np.float64)

        def summary(v):
            return {
                "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "std": float(v.std()),
                "q50": float(np.quantile(v, 0.5)), "q90": float(np.quantile(v, 0.9)),
                "q99": float(np.quantile(v, 0.99)), "q995": float(np.quantile(v, 0.995)),
            }

        return {
            "n_val": int(img.size),
            "val_image": summary(img),
            "val_pixel": summary(pix),
            "threshold_candidates": {"image_val_max": float(img.max()), "pixel_val_max": float(pix.max())},
        }

    # -- inference ---------------------------------------------------------------------------------
    @torch.no_grad()
    def patch_scores(self, x: torch.Tensor):
        """-> (embeddings (B,N,D), patch distances (B,N), nearest bank index (B,N))."""
        if not self.is_fitted:
            raise RuntimeError("PatchCore: the model is not fitted (empty memory bank)")
        emb = self.embedder(x.float())
        b, n, d = emb.shape
        dist, idx = _knn(emb.reshape(-1, d).contiguous(), self.memory_bank, k=1)
        return emb, dist.reshape(b, n).float(), idx.reshape(b, n).long()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"predict: expected x of shape (B, C, H, W), got {tuple(x.shape)}")
        x = x.to(self.memory_bank.device)
        emb, dist, nn_idx = self.patch_scores(x)
        scores = self._image_scores(emb, dist, nn_idx)
        maps = self._anomaly_maps(dist, tuple(x.shape[-2:]))
        return scores, maps

    def _image_scores(self, emb, dist, nn_idx):
        b = emb.shape[0]
        s_star, arg = dist.max(dim=1)
        if int(self.config["num_neighbors"]) <= 1 or self.bank_neighbors.shape[1] <= 1:
            return s_star
        ar = torch.arange(b, device=emb.device)
        m_test = emb[ar, arg]  # (B, D)
        m_star = nn_idx[ar, arg]  # (B,)
        neigh = self.bank_neighbors[m_star]  # (B, b)
        d_nb = torch.sqrt(((m_test[:, None, :] - self.memory_bank[neigh]) ** 2).sum(-1))
        return reweight_scores(s_star, d_nb)

    def _anomaly_maps(self, dist, size):
        b = dist.shape[0]
        gh, gw = self.grid
        m = dist.reshape(b, 1, gh, gw)
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0]
        return gaussian_blur(m, float(self.config["blur_sigma"]))

    # -- artifact ----------------------------------------------------------------------------------
    def artifact_config(self) -> Dict[str, Any]:
        c = dict(self.config)
        c["grid"] = list(self.grid)
        c["bank_size"] = int(self.memory_bank.shape[0])
        if isinstance(c.get("weights"), str) and c["weights"] != "imagenet":
            c["weights"] = os.path.basename(c["weights"])  # provenance only; the artifact holds the weights
        return c

    def artifact_tensors(self) -> Dict[str, torch.Tensor]:
        t = {
            f"backbone.{k}": v.detach().cpu().contiguous()
            for k, v in self.embedder.backbone.state_dict().items()
            if not k.endswith("num_batches_tracked")  # unused by a frozen network
        }
        t["memory_bank"] = self.memory_bank.detach().float().cpu().contiguous()
        t["bank_neighbors"] = self.bank_neighbors.detach().long().cpu().contiguous()
        return t

    @classmethod
    def from_artifact(cls, artifact) -> "PatchCore":
        from edgead.artifact import ArtifactError

        where = getattr(artifact, "path", None) or "artifact"
        if artifact.model_type != cls.model_type:
            raise ArtifactError(f"{where}: model_type {artifact.model_type!r}, expected 'patchcore'")
        tensors = artifact.tensors
        for name in ("memory_bank", "bank_neighbors"):
            if name not in tensors:
                raise ArtifactError(f"{where}: PatchCore artifact lacks tensor '{name}'")
        cfg = dict(artifact.config)
        bb = {k[len("backbone."):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("backbone.")}
        try:
            model = cls(cfg, _backbone_state=bb)
        except ValueError as e:
            raise ArtifactError(f"{where}: cannot rebuild PatchCore: {e}") from None
        bank = np.asarray(tensors["memory_bank"])
        nb = np.asarray(tensors["bank_neighbors"])
        d = model.embedder.embedding_dim
        if bank.ndim != 2 or bank.shape[1] != d or bank.shape[0] < 1 or bank.dtype != np.float32:
            raise ArtifactError(f"{where}: memory_bank expected float32 (M, {d}) with M >= 1, got {bank.dtype} {bank.shape}")
        if nb.ndim != 2 or nb.shape[0] != bank.shape[0] or nb.dtype != np.int64:
            raise ArtifactError(f"{where}: bank_neighbors expected int64 ({bank.shape[0]}, b), got {nb.dtype} {nb.shape}")
        if nb.size and (nb.min() < 0 or nb.max() >= bank.shape[0]):
            raise ArtifactError(f"{where}: bank_neighbors holds indices outside the memory bank")
        if not np.isfinite(bank).all():
            raise ArtifactError(f"{where}: memory_bank contains NaN or inf")
        if list(cfg.get("grid", model.grid)) != list(model.grid):
            raise ArtifactError(f"{where}: grid {cfg.get('grid')} does not match the backbone's {list(model.grid)}")
        model.memory_bank = torch.from_numpy(bank.copy())
        model.bank_neighbors = torch.from_numpy(nb.copy())
        model.statistics = dict(getattr(artifact, "statistics", {}) or {})
        return model.eval()

    def save(self, path: str, thresholds: Optional[Dict[str, Any]] = None, statistics: Optional[Dict[str, Any]] = None) -> str:
        from edgead.artifact import save_artifact

        return save_artifact(path, self.model_type, self.artifact_config(), self.preprocessing().to_dict(),
                             self.artifact_tensors(), thresholds=thresholds,
                             statistics=self.statistics if statistics is None else statistics)

    # -- export ------------------------------------------------------------------------------------
    def export_module(self) -> nn.Module:
        """backbone + aggregation + projection: image (B,3,H,W) -> embeddings (B, N, D). Scoring (knn,
        reweighting, maps) runs after the network in edgead.runtime.post_patchcore."""
        return self.embedder.eval()
