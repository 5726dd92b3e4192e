"""Train / evaluate / predict for every model type (generic over edgead.models.get_model_class).

    art = train("models/patchcore_mobilenet_v2.yaml", "data/brick", "runs/brick")
    m = evaluate(art, "data/brick", "runs/brick/eval")          # metrics dict, plots, thresholds
    results = predict(art, "images/", "runs/brick/pred")         # scores, masks, heatmaps

Recipes (YAML or dict)::

    model: patchcore            # patchcore | efficientad | puad | fader
    config: {...}               # passed to the model class (see its module docstring)
    train:                      # optional
      val_fraction: 0.1         # validation split drawn from train/good only
      seed: 0
      threshold_quantile: 0.995 # calibration quantile of validation scores

Keys other than model/config/train at the top level are merged into `config` (flat recipes work).

One scoring path: train (validation thresholds), evaluate and predict all score through
edgead.runtime.Detector -- the torch backend around the just-trained model in train(), the backend
named by `backend` ("torch" | "onnxruntime" | "tensorrt") for an artifact in evaluate()/predict().
Pre-processing, post-processing, the resize back to the image, masks and labels are the Detector's,
so the metrics `edgead eval` prints are those of what `Detector.load(..., backend)` deploys.

Thresholds in the artifact (edgead.json "thresholds"):
    image, pixel   the ACTIVE thresholds used by predict(): set by train() from the validation normal
                   images (quantile `threshold_quantile` of their image scores / pixel scores);
    candidates     every other threshold computed so far (validation max, F1-optimal and
                   FPR-0.5% thresholds from evaluate()); evaluate(set_threshold="f1"|"fpr") activates one.
"""
from __future__ import annotations

import csv
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["load_recipe", "train", "evaluate", "predict", "resolve_device", "load_detector", "model_detector",
           "heatmap_overlay", "TARGET_FPR"]

TARGET_FPR = 0.005
TARGET_RECALL = 0.95
_TRAIN_DEFAULTS = {"val_fraction": 0.1, "seed": 0, "threshold_quantile": 0.995}


def resolve_device(device: Optional[str] = "auto") -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but torch sees no CUDA GPU")
    return str(device)


def load_recipe(config: Union[str, os.PathLike, Dict[str, Any]], overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """-> {"model": type, "config": {...}, "train": {...}} from a YAML path or a dict."""
    if isinstance(config, (str, os.PathLike)):
        import yaml

        path = os.fspath(config)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"recipe '{path}' does not exist")
        with open(path) as f:
            raw = yaml.safe_load(f)
        if not isinstance(raw, dict):
            raise ValueError(f"recipe '{path}': expected a mapping at the top level")
    elif isinstance(config, dict):
        raw = dict(config)
    else:
        raise TypeError(f"config: expected a YAML path or a dict, got {type(config).__name__}")
    from edgead.models import model_types

    model = raw.get("model")
    if model not in model_types():
        raise ValueError(f"recipe: 'model' expected one of {model_types()}, got {model!r}")
    cfg = dict(raw.get("config") or {})
    for k, v in raw.items():
        if k not in ("model", "config", "train", "tiling"):
            cfg[k] = v
    overrides = dict(overrides or {})
    tiling = _recipe_tiling(raw, cfg, overrides)
    tr = dict(_TRAIN_DEFAULTS)
    tr.update(raw.get("train") or {})
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k in _TRAIN_DEFAULTS:
            tr[k] = v
        else:
            cfg[k] = v
    return {"model": model, "config": cfg, "train": tr, "tiling": tiling}


def _recipe_tiling(raw: Dict[str, Any], cfg: Dict[str, Any], overrides: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """Tiling hook of load_recipe: `tiling:` at the top level (or inside config), overridden by the
    `tile` / `stride` overrides (CLI --tile/--stride; tile 0 switches it off). -> tiling dict or None.
    With tiling the model's input size is the tile: image_size defaults to it."""
    from edgead.tiling import resolve_tiling

    t = resolve_tiling({"tiling": raw.get("tiling", cfg.pop("tiling", None))}, overrides.pop("tile", None),
                       overrides.pop("stride", None))
    if t is None:
        return None
    cfg.setdefault("image_size", list(t.tile))
    return t.to_dict()


def _dataset(data_root, category=None):
    from edgead.data.datasets import open_dataset

    return open_dataset(data_root, category=category)


def _check_train_params(tr: Dict[str, Any]) -> None:
    """Validate the recipe's train section before any work (a bad value must not surface after the fit)."""
    frac = tr.get("val_fraction")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not (0.0 <= float(frac) < 1.0):
        raise ValueError(f"val_fraction: expected a number in [0, 1), got {frac!r}")
    q = tr.get("threshold_quantile")
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0.0 < float(q) <= 1.0):
        raise ValueError(f"threshold_quantile: expected a number in (0, 1], got {q!r}")
    seed = tr.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: expected an int, got {seed!r}")


def _writable_parent(path: str, arg: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{arg}: cannot create '{path}': '{parent}' is not a writable directory")


def _check_artifact_target(out_dir) -> str:
    """The artifact directory train() will write: checked before training (save_artifact re-checks it)."""
    from edgead.artifact import META_FILE

    path = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ValueError(f"out_dir: '{path}' exists and is not a directory; refusing to replace it")
        if os.listdir(path) and not os.path.isfile(os.path.join(path, META_FILE)):
            raise ValueError(f"out_dir: '{path}' is a non-empty directory that is not an edgead artifact; "
                             "refusing to replace it")
    _writable_parent(path, "out_dir")
    return path


def _prepare_out_dir(out_dir, arg: str = "out_dir") -> str:
    """Create the report folder before any work, so that a bad --out fails first and changes nothing."""
    path = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{arg}: '{path}' exists and is not a directory")
    _writable_parent(path, arg)
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{arg}: '{path}' is not writable")
    return path


def _runtime_device(device: Optional[str], backend: str) -> Optional[str]:
    """The pipeline's device spec ('auto', 'cpu', 'cuda', 'cuda:0') -> the Detector's (None, 'cpu', 'cuda')."""
    if backend == "torch":
        device = resolve_device(device)
    elif device in (None, "auto"):
        return None
    return "cuda" if str(device).startswith("cuda") else str(device)


def model_detector(model, device: str = "cpu", thresholds: Optional[Dict[str, Any]] = None,
                   statistics: Optional[Dict[str, Any]] = None, batch_size: Optional[int] = None, tiling=None):
    """A runtime.Detector around an in-memory torch model (torch backend), e.g. one just trained and not saved yet.
    tiling: the recipe's tiling dict (edgead.tiling), stored like edgead.json's "tiling"."""
    from edgead.artifact import Artifact
    from edgead.runtime import Detector
    from edgead.runtime.backends import TorchBackend

    tensors = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
               for k, v in model.artifact_tensors().items()}
    art = Artifact(path=None, model_type=model.model_type, config=dict(model.artifact_config()),
                   preprocessing=model.preprocessing().to_dict(), tensors=tensors,
                   thresholds=dict(thresholds or {}), statistics=dict(statistics or {}),
                   meta={"tiling": tiling} if tiling else {})
    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    return Detector(art, TorchBackend(device=dev, model=model), batch_size=batch_size)


def load_detector(artifact_dir, backend: str = "torch", device: Optional[str] = "auto", precision: Optional[str] = None,
                  batch_size: Optional[int] = None, tile=None, stride=None):
    """runtime.Detector.load for the pipeline: device 'auto' resolved, and for TensorRT the engine built on
    this GPU first when the artifact has none (the runtime itself never builds)."""
    from edgead.runtime import BACKENDS, Detector

    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    artifact_dir = os.fspath(artifact_dir)
    kwargs: Dict[str, Any] = {}
    if backend == "tensorrt":
        from edgead.export.tensorrt import find_or_build_engine

        precision = precision or "fp16"
        kwargs["engine"] = find_or_build_engine(artifact_dir, precision=precision)
    return Detector.load(artifact_dir, backend=backend, device=_runtime_device(device, backend), precision=precision,
                         batch_size=batch_size, tile=tile, stride=stride, **kwargs)


def _ravel(a) -> np.ndarray:
    return a.ravel() if isinstance(a, np.ndarray) else np.concatenate([np.asarray(m).ravel() for m in a])


def _tiled_training_items(recipe, train_s, val_s, seed: int):
    """Training-sampling hook: with a recipe `tiling`, the model fits on the tiles of the full-resolution
    training images (edgead.tiling.TiledSamples, which edgead.data.datasets.iter_batches understands)."""
    if recipe.get("tiling") is None:
        return train_s, val_s
    from edgead.tiling import Tiling, TiledSamples

    t = Tiling.from_config(recipe["tiling"])
    return TiledSamples(train_s, t, seed), (TiledSamples(val_s, t, seed) if val_s else val_s)


# ------------------------------------------------------------------------------------------------
# train
# ------------------------------------------------------------------------------------------------
def train(config, data_root, out_dir, category: Optional[str] = None, device: str = "auto", progress: bool = True,
          overrides: Optional[Dict[str, Any]] = None) -> str:
    """Fit the recipe's model on train/good of `data_root` (minus a validation split), calibrate
    thresholds on the validation images, save the artifact to `out_dir`; returns its path."""
    from edgead.artifact import save_artifact
    from edgead.data.datasets import ImageFolder, split_samples
    from edgead.models import get_model_class

    recipe = load_recipe(config, overrides)
    tr = recipe["train"]
    _check_train_params(tr)
    _check_artifact_target(out_dir)
    dev = resolve_device(device)
    ds = _dataset(data_root, category)
    frac = float(tr["val_fraction"])
    if isinstance(ds, ImageFolder):
        samples = ds.samples()
        train_s, val_s = split_samples(samples, frac, int(tr["seed"])) if frac > 0 else (samples, [])
    elif frac > 0:
        train_s, val_s = ds.split_validation(frac, int(tr["seed"]))
    else:
        train_s, val_s = ds.train_samples(), []
    if not train_s:
        raise ValueError(f"train: no training images found under {data_root}")
    cls = get_model_class(recipe["model"])
    model = cls(recipe["config"])
    fit_train, fit_val = _tiled_training_items(recipe, train_s, val_s, int(tr["seed"]))
    t0 = time.time()
    if progress:
        print(f"edgead train: {recipe['model']} on {len(train_s)} images ({len(val_s)} held out for validation), device {dev}", flush=True)
    stats = dict(model.fit(fit_train, fit_val or None, device=dev, progress=progress) or {})
    fit_s = time.time() - t0
    model = model.to(dev).eval()
    thresholds: Dict[str, Any] = {"candidates": {}}
    if val_s:
        q = float(tr["threshold_quantile"])
        # with a tiling the Detector stitches maps at each image's size (score_files goes native by itself)
        vs, vm = model_detector(model, dev, batch_size=16, tiling=recipe["tiling"]).score_files(val_s, progress, "validation")
        rng = np.random.default_rng(0)
        pix = np.concatenate([m.reshape(-1) for m in vm])
        if pix.size > 2_000_000:
            pix = rng.choice(pix, 2_000_000, replace=False)
        cand = {
            "val_image_max": float(vs.max()),
            f"val_image_q{q:g}": float(np.quantile(vs, q)),
            "val_pixel_max": float(pix.max()),
            f"val_pixel_q{q:g}": float(np.quantile(pix, q)),
        }
        thresholds = {"image": cand[f"val_image_q{q:g}"], "pixel": cand[f"val_pixel_q{q:g}"],
                      "source": f"validation quantile {q:g}", "candidates": cand}
        stats["val_image_scores"] = {"min": float(vs.min()), "max": float(vs.max()), "mean": float(vs.mean())}
    else:
        print("edgead train: warning: no validation images, so no thresholds were calibrated "
              "(run `edgead eval ... --set-threshold f1` to set them)", flush=True)
    stats["train"] = {
        "data_root": os.path.abspath(os.fspath(data_root)), "category": category, "n_train": len(train_s),
        "n_val": len(val_s), "device": dev, "fit_seconds": round(fit_s, 2), "val_fraction": frac,
        "seed": int(tr["seed"]),
    }
    path = save_artifact(out_dir, model.model_type, model.artifact_config(), model.preprocessing().to_dict(),
                         model.artifact_tensors(), thresholds=thresholds, statistics=stats)
    if recipe["tiling"] is not None:
        from edgead.artifact import update_meta

        update_meta(path, tiling=recipe["tiling"])
    if progress:
        _print_table("edgead train", [
            ("artifact", path), ("model", recipe["model"]), ("train images", len(train_s)),
            ("validation images", len(val_s)), ("fit time [s]", f"{fit_s:.1f}"),
            ("image threshold", _fmt(thresholds.get("image"))), ("pixel threshold", _fmt(thresholds.get("pixel"))),
        ])
    return path


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------
def _fpr_threshold(scores: np.ndarray, labels: np.ndarray, target_fpr: float = TARGET_FPR) -> float:
    """edgead.metrics.threshold_at_fpr: the threshold of largest recall whose FPR <= target (inf if none)."""
    from edgead import metrics

    return float(metrics.threshold_at_fpr(scores, labels, target_fpr))


def _plot_curves(out_dir, scores, labels, maps, masks, m) -> Dict[str, str]:
    """ROC and PRO PNGs (edgead.metrics writers when present, else matplotlib here)."""
    from edgead import metrics

    files = {}
    roc_path, pro_path = os.path.join(out_dir, "roc.png"), os.path.join(out_dir, "pro.png")
    try:
        metrics.plot_roc(scores, labels, roc_path)
        files["roc"] = roc_path
    except Exception:  # signature differs or no writer: plot here
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import roc_curve

        fpr, tpr, _ = roc_curve(labels, scores)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"image AUROC {m.get('image_auroc', float('nan')):.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("false positive rate"), ax.set_ylabel("true positive rate"), ax.legend(loc="lower right")
        fig.tight_layout(), fig.savefig(roc_path, dpi=100), plt.close(fig)
        files["roc"] = roc_path
    if maps is not None and masks is not None and any(bool(np.any(k)) for k in masks):
        try:
            metrics.plot_pro(maps, masks, pro_path)
            files["pro"] = pro_path
        except Exception:
            from edgead import ops

            try:
                curve = ops.pro_curve(maps, masks, 0.3)
                fpr, pro = np.asarray(curve[0]), np.asarray(curve[1])
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                fig, ax = plt.subplots(figsize=(4, 4))
                ax.plot(fpr, pro, label=f"AUPRO@0.3 {m.get('aupro', float('nan')):.3f}")
                ax.set_xlim(0, 0.3), ax.set_xlabel("false positive rate"), ax.set_ylabel("per-region overlap")
                ax.legend(loc="lower right"), fig.tight_layout(), fig.savefig(pro_path, dpi=100), plt.close(fig)
                files["pro"] = pro_path
            except Exception as e:  # pragma: no cover - reported, never fatal
                print(f"edgead eval: PRO plot skipped: {e}")
    return files


def evaluate(artifact_dir, data_root, out_dir, device: str = "auto", category: Optional[str] = None,
             set_threshold: Optional[str] = None, progress: bool = True, backend: str = "torch",
             precision: Optional[str] = None, batch_size: int = 16, tile=None, stride=None) -> Dict[str, Any]:
    """Score the test split through runtime.Detector on `backend`, compute metrics, write metrics.json,
    scores.csv, roc.png, pro.png into `out_dir`; store F1-optimal and FPR-0.5% thresholds as candidates
    in the artifact (activated only with set_threshold="f1" or "fpr").

    Order: arguments and `out_dir` are checked first, the artifact's edgead.json is written last, so a
    failed evaluation changes no threshold."""
    from edgead.artifact import read_meta, update_meta
    from edgead.data.datasets import load_mask

    if set_threshold not in (None, "f1", "fpr", "recall"):
        raise ValueError(f"set_threshold: expected None, 'f1', 'fpr' or 'recall', got {set_threshold!r}")
    out_dir = _prepare_out_dir(out_dir, "out_dir")
    det = load_detector(artifact_dir, backend=backend, device=device, precision=precision, batch_size=batch_size,
                        tile=tile, stride=stride)
    ds = _dataset(data_root, category)
    if not hasattr(ds, "test_samples"):
        raise ValueError(f"evaluate: {data_root} has no test split (expected an MVTec-layout category)")
    test = ds.test_samples()
    if not test:
        raise ValueError(f"evaluate: no test images under {data_root}")
    t0 = time.time()
    scores, maps = det.score_files(test, progress, "evaluating", native=True)
    secs = time.time() - t0
    labels = np.array([int(s.label) for s in test])
    # native resolution: every mask at its image's size, next to a map of that size (nothing resized)
    masks = [load_mask(s, m.shape) for s, m in zip(test, maps)]
    if isinstance(maps, np.ndarray):
        masks = np.stack(masks)
    has_masks = any(bool(m.any()) for m in masks)
    from edgead import metrics

    m = dict(metrics.evaluate(scores, labels, maps if has_masks else None, masks if has_masks else None))
    m = {k: (float(v) if isinstance(v, (np.floating, float, int, np.integer)) else v) for k, v in m.items()}
    normal = scores[labels == 0]
    cand = {}
    if "image_f1_threshold" in m:
        cand["image_f1"] = float(m["image_f1_threshold"])
    if has_masks:
        cand["pixel_f1"] = float(metrics.f1_max(_ravel(maps), _ravel(masks))[1])
    if "image_recall_threshold" in m:  # the industrial operating point: recall >= TARGET_RECALL
        cand[f"image_recall{TARGET_RECALL:g}"] = float(m["image_recall_threshold"])
    if normal.size:
        cand[f"image_fpr{TARGET_FPR:g}"] = _fpr_threshold(scores, labels, TARGET_FPR)
        if has_masks:
            cand[f"pixel_fpr{TARGET_FPR:g}"] = _fpr_threshold(_ravel(maps), _ravel(masks), TARGET_FPR)
    cand = {k: v for k, v in cand.items() if np.isfinite(v)}
    meta = read_meta(os.fspath(artifact_dir))
    th = dict(meta.get("thresholds") or {})
    th.setdefault("candidates", {})
    th["candidates"] = {**th["candidates"], **cand}
    if set_threshold == "f1" and "image_f1" in cand:
        th["image"] = cand["image_f1"]
        th["pixel"] = cand.get("pixel_f1", th.get("pixel"))
        th["source"] = "test F1-optimal (edgead eval --set-threshold f1)"
    elif set_threshold == "fpr" and f"image_fpr{TARGET_FPR:g}" in cand:
        th["image"] = cand[f"image_fpr{TARGET_FPR:g}"]
        th["pixel"] = cand.get(f"pixel_fpr{TARGET_FPR:g}", th.get("pixel"))
        th["source"] = f"test normal images at FPR {TARGET_FPR:g} (edgead eval --set-threshold fpr)"
    elif set_threshold == "recall" and f"image_recall{TARGET_RECALL:g}" in cand:
        th["image"] = cand[f"image_recall{TARGET_RECALL:g}"]
        th["source"] = (f"test defects at recall >= {TARGET_RECALL:g}, FPR {m['image_fpr_at_recall']:.4g} "
                        "(edgead eval --set-threshold recall)")

    files = _plot_curves(out_dir, scores, labels, maps if has_masks else None, masks if has_masks else None, m)
    with open(os.path.join(out_dir, "scores.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "label", "defect_type", "score"])
        for s, sc in zip(test, scores):
            wr.writerow([s.path, int(s.label), s.defect_type, f"{float(sc):.6g}"])
    report = {
        "artifact": os.path.abspath(os.fspath(artifact_dir)), "data_root": os.path.abspath(os.fspath(data_root)),
        "model_type": det.model_type, "n_test": int(len(test)), "n_anomalous": int(labels.sum()),
        "backend": det.backend.name, "device": det.backend.device, "precision": det.backend.precision,
        "seconds": round(secs, 2), "ms_per_image": round(1000 * secs / len(test), 2),
        "metrics": _json_safe(m), "threshold_candidates": cand, "active_thresholds": {k: th.get(k) for k in ("image", "pixel")},
        "files": files,
    }
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    update_meta(os.fspath(artifact_dir), thresholds=th)  # last: a failure above leaves the artifact as it was
    if progress:
        rows = [(k, _fmt(m.get(k))) for k in ("image_auroc", "image_ap", "image_f1_max", "image_fpr_at_recall", "pixel_auroc", "pixel_ap",
                                              "pixel_f1_max", "aupro") if k in m]
        rows += [("test images", f"{len(test)} ({int(labels.sum())} anomalous)"), ("ms / image", f"{report['ms_per_image']}"),
                 ("metrics", os.path.join(out_dir, "metrics.json"))]
        _print_table("edgead eval", rows)
    return report


def _image_shape(path):
    from edgead.data.io import read_image

    return read_image(path).shape


def _json_safe(d):
    out = {}
    for k, v in d.items():
        if isinstance(v, (float, np.floating)):
            out[k] = float(v) if np.isfinite(v) else None
        elif isinstance(v, (int, np.integer, str, bool)) or v is None:
            out[k] = v.item() if isinstance(v, np.generic) else v
    return out


# ------------------------------------------------------------------------------------------------
# predict
# ------------------------------------------------------------------------------------------------
def _input_paths(inputs) -> List[str]:
    from edgead.data.datasets import ImageFolder

    if isinstance(inputs, (str, os.PathLike)):
        return list(ImageFolder(inputs).paths)
    paths = []
    for p in inputs:
        paths.extend(ImageFolder(p).paths)
    return paths


def heatmap_overlay(image: np.ndarray, amap: np.ndarray, lo: float, hi: float, alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 overlay of an anomaly map (image size) over an image, JET colours scaled to [lo, hi]."""
    import cv2

    from edgead.data.io import to_uint8

    img = to_uint8(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    # uint8 throughout (a float64 full-size overlay was 24 bytes per pixel); same values as
    # (alpha * heat + (1 - alpha) * img).astype(uint8) up to one unit of rounding
    scale = 255.0 / max(float(hi) - float(lo), 1e-12)
    t = np.clip(np.asarray(amap, dtype=np.float32), lo, hi)  # one float32 temporary, then in place
    t -= np.float32(lo)
    t *= np.float32(scale)
    norm = t.astype(np.uint8)  # truncation, as before
    del t
    heat = cv2.cvtColor(cv2.applyColorMap(norm, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(heat, float(alpha), np.ascontiguousarray(img), 1.0 - float(alpha), 0.0, dtype=cv2.CV_8U)


def predict(artifact_dir, inputs, out_dir, device: str = "auto", progress: bool = True, batch_size: int = 8,
            backend: str = "torch", precision: Optional[str] = None, tile=None, stride=None) -> List[Dict[str, Any]]:
    """Score images through runtime.Detector on `backend`; write <stem>_heatmap.png, <stem>_mask.png,
    scores.csv and results.json to `out_dir`. Maps, masks (map >= pixel threshold) and labels
    (score >= image threshold) are the Detector's, at each image's own size. tile / stride override
    the artifact's tiling (edgead.tiling; tile=0: off)."""
    from tqdm.auto import tqdm

    from edgead.data.io import read_image, write_image

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    paths = _input_paths(inputs)
    if not paths:
        raise ValueError(f"predict: no images found in {inputs}")
    out_dir = _prepare_out_dir(out_dir, "out_dir")
    det = load_detector(artifact_dir, backend=backend, device=device, precision=precision, batch_size=batch_size,
                        tile=tile, stride=stride)
    t_img, t_pix = det.image_threshold, det.pixel_threshold
    vp = (det.artifact.statistics or {}).get("val_pixel") or {}
    lo = float(vp.get("q50", 0.0)) if vp else None
    results = []
    used = set()
    with tqdm(total=len(paths), desc="predicting", unit="img", disable=not progress) as bar:
        for i in range(0, len(paths), int(batch_size)):
            chunk = paths[i : i + int(batch_size)]
            imgs = [read_image(p) for p in chunk]
            for p, img, r in zip(chunk, imgs, det(imgs)):
                full = r.anomaly_map
                stem = os.path.splitext(os.path.basename(p))[0]
                base, k = stem, 1
                while stem in used:
                    stem, k = f"{base}_{k}", k + 1
                used.add(stem)
                a_lo = lo if lo is not None else float(full.min())
                a_hi = 1.5 * float(t_pix) if t_pix is not None else float(full.max())
                heat = os.path.join(out_dir, f"{stem}_heatmap.png")
                write_image(heat, heatmap_overlay(img, full, a_lo, max(a_hi, a_lo + 1e-6)))
                row = {"path": os.path.abspath(p), "score": r.score, "heatmap": heat}
                if r.mask is not None:
                    row["mask"] = os.path.join(out_dir, f"{stem}_mask.png")
                    write_image(row["mask"], (r.mask * 255).astype(np.uint8))
                    row["defect_pixels"] = int(r.mask.sum())
                row["anomalous"] = r.label
                results.append(row)
            bar.update(len(chunk))
    with open(os.path.join(out_dir, "scores.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["path", "score", "anomalous"])
        for r in results:
            wr.writerow([r["path"], f"{r['score']:.6g}", r["anomalous"]])
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"artifact": os.path.abspath(os.fspath(artifact_dir)), "backend": det.backend.name,
                   "image_threshold": t_img, "pixel_threshold": t_pix, "results": results}, f, indent=2)
    if progress:
        n_bad = sum(1 for r in results if r["anomalous"])
        _print_table("edgead predict", [("images", len(results)), ("anomalous", n_bad if t_img is not None else "n/a (no threshold)"),
                                        ("image threshold", _fmt(t_img)), ("output", out_dir)])
    return results


# ------------------------------------------------------------------------------------------------
# report helpers
# ------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}"
    return str(v)


def _print_table(title: str, rows: Sequence[Tuple[Any, Any]]) -> None:
    rows = [(str(a), str(b)) for a, b in rows]
    w = max([len(a) for a, _ in rows] + [len(title)])
    print(f"\n{title}\n" + "-" * (w + 2 + max([len(b) for _, b in rows] + [1])))
    for a, b in rows:
        print(f"{a:<{w}}  {b}")
    print(flush=True)
