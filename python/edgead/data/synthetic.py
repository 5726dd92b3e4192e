"""Synthetic defects with exact masks, and dataset generators (NumPy + OpenCV, no torch).

Defect painters take a uint8 texture crop (``HxW`` grey or ``HxWx3`` RGB) and a
``np.random.Generator`` and return ``(image, mask)``: a new image of the same shape/dtype and
the bool ``HxW`` mask of every pixel the painter touched. Pixels outside the mask are never
changed (this holds for every painter, including ``faint``); a few pixels inside may keep
their value (e.g. a smudge over an already flat area, or clipping at 0/255). Results are
deterministic for a given generator state.

==============  ==============================================================
scratch         thin random-walk line with momentum, brighter or darker
spot            small dark or bright ellipse (pinhole / particle)
contamination   irregular blob filled with another texture region
smudge          irregular blob where the texture is blurred away
faint           irregular blob shifted by only 10-22 grey levels (weak contrast)
==============  ==============================================================

Generators:

- :func:`make_mvtec_dataset` cuts train and test crops from disjoint halves of real photos
  and writes an MVTec AD layout with exact masks.
- :func:`make_large_train_split` writes a large (MIIC-sized by default: 23,888 images)
  procedural SEM-like train split, multi-process and resumable; :func:`main_make_data` is
  its command-line entry point.
"""
from __future__ import annotations

import argparse
import json
import os
import zlib
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .io import to_uint8, write_image

__all__ = [
    "DEFECT_TYPES",
    "DEFECTS",
    "scratch",
    "spot",
    "contamination",
    "smudge",
    "faint",
    "paint_defect",
    "random_blob_mask",
    "make_mvtec_dataset",
    "sem_texture",
    "make_large_train_split",
    "build_make_data_parser",
    "main_make_data",
]

DEFECT_TYPES = ("scratch", "spot", "contamination", "smudge", "faint")


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_img(img: np.ndarray, name: str = "img") -> np.ndarray:
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 image, got {a.dtype} (use io.to_uint8 first)")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"{name}: expected HxW or HxWx3, got shape {a.shape}")
    if min(a.shape[:2]) < 16:
        raise ValueError(f"{name}: image too small for a defect ({a.shape[:2]}, need >= 16x16)")
    return a


def _apply(img: np.ndarray, mask: np.ndarray, new_vals: np.ndarray) -> np.ndarray:
    """Copy of img with pixels under mask replaced by new_vals (same shape as img, float)."""
    out = img.copy()
    nv = np.clip(np.rint(new_vals), 0, 255).astype(np.uint8)
    out[mask] = nv[mask]
    return out


def random_blob_mask(shape: Sequence[int], rng: np.random.Generator, radius: Tuple[float, float] = (8, 24)) -> np.ndarray:
    """Irregular star-shaped blob (smoothly varying radius), filled with cv2.fillPoly; bool HxW."""
    h, w = int(shape[0]), int(shape[1])
    r0 = float(rng.uniform(*radius))
    r0 = min(r0, 0.4 * min(h, w))
    cy = rng.uniform(r0 * 1.3, h - r0 * 1.3) if h > 2.6 * r0 else h / 2
    cx = rng.uniform(r0 * 1.3, w - r0 * 1.3) if w > 2.6 * r0 else w / 2
    n = 24
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    # Smooth radius: a few low-order Fourier terms.
    rr = np.ones(n)
    for k in (2, 3, 4, 5):
        rr += rng.uniform(0, 0.35 / (k - 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.6, 1.0)
    ang = rng.uniform(0, np.pi)
    x = rr * r0 * np.cos(t)
    y = rr * r0 * aspect * np.sin(t)
    xs = cx + x * np.cos(ang) - y * np.sin(ang)
    ys = cy + x * np.sin(ang) + y * np.cos(ang)
    pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [pts], 1, lineType=cv2.LINE_8)
    if not m.any():  # pragma: no cover - degenerate
        m[int(cy), int(cx)] = 1
    return m.astype(bool)


def _scale(img: np.ndarray) -> float:
    return min(img.shape[:2]) / 224.0


# --------------------------------------------------------------------------------------
# defect painters
# --------------------------------------------------------------------------------------
def scratch(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Thin random-walk line with momentum (1-3 px), brighter or darker than the texture."""
    a = _check_img(img)
    h, w = a.shape[:2]
    s = _scale(a)
    length = rng.uniform(40, 120) * s
    step = 1.5
    n = max(8, int(length / step))
    y, x = rng.uniform(0.2 * h, 0.8 * h), rng.uniform(0.2 * w, 0.8 * w)
    theta = rng.uniform(0, 2 * np.pi)
    dtheta = 0.0
    pts = [(x, y)]
    for _ in range(n):
        dtheta = 0.85 * dtheta + rng.normal(0, 0.05)  # momentum on the turning rate
        theta += dtheta
        x += step * np.cos(theta)
        y += step * np.sin(theta)
        if not (1 <= x < w - 1 and 1 <= y < h - 1):
            break
        pts.append((x, y))
    thick = int(rng.integers(1, 3 + 1)) if s >= 1 else int(rng.integers(1, 2 + 1))
    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [np.round(np.array(pts)).astype(np.int32)], False, 1, thickness=thick, lineType=cv2.LINE_8)
    mask = m.astype(bool)
    bright = rng.random() < 0.5
    target = rng.uniform(215, 255) if bright else rng.uniform(0, 40)
    alpha = rng.uniform(0.65, 0.95)
    new = a.astype(np.float32) * (1 - alpha) + target * alpha
    return _apply(a, mask, new), mask


def spot(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Small filled ellipse (pinhole / particle), dark or bright, with a slight radial shading."""
    a = _check_img(img)
    h, w = a.shape[:2]
    s = _scale(a)
    ax1 = max(2, int(round(rng.uniform(2.5, 8) * s)))
    ax2 = max(2, int(round(ax1 * rng.uniform(0.5, 1.0))))
    cy = int(rng.integers(ax1 + 2, h - ax1 - 2))
    cx = int(rng.integers(ax1 + 2, w - ax1 - 2))
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (cx, cy), (ax1, ax2), float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1, lineType=cv2.LINE_8)
    mask = m.astype(bool)
    yy, xx = np.mgrid[0:h, 0:w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / ax1
    bright = rng.random() < 0.4
    base = rng.uniform(220, 250) if bright else rng.uniform(5, 35)
    shade = (base - 20 * d) if bright else (base + 20 * d)
    if a.ndim == 3:
        shade = shade[:, :, None] * np.ones(3, np.float32)
    new = 0.15 * a.astype(np.float32) + 0.85 * shade
    return _apply(a, mask, new), mask


def contamination(
    img: np.ndarray, rng: np.random.Generator, other: Optional[np.ndarray] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Irregular blob filled with another texture region.

    ``other``: a texture (same channel count as ``img``, at least as large) to take the fill
    from; default: ``img`` itself rotated by 90 degrees, rescaled 1.5-2x and contrast-shifted.
    """
    a = _check_img(img)
    h, w = a.shape[:2]
    s = _scale(a)
    mask = random_blob_mask((h, w), rng, (10 * s, 26 * s))
    if other is None:
        src = np.rot90(a, int(rng.integers(1, 4)))
        f = rng.uniform(1.5, 2.0)
        src = cv2.resize(np.ascontiguousarray(src), None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
        oy = int(rng.integers(0, src.shape[0] - h + 1))
        ox = int(rng.integers(0, src.shape[1] - w + 1))
        fill = src[oy : oy + h, ox : ox + w].astype(np.float32)
        fill = np.clip((fill - fill.mean()) * rng.uniform(0.6, 1.4) + fill.mean() + rng.choice([-1, 1]) * rng.uniform(25, 50), 0, 255)
    else:
        o = _check_img(other, "other")
        if o.ndim != a.ndim:
            o = cv2.cvtColor(o, cv2.COLOR_RGB2GRAY) if o.ndim == 3 else np.repeat(o[:, :, None], 3, axis=2)
        if o.shape[0] < h or o.shape[1] < w:
            o = cv2.resize(o, (max(w, o.shape[1]), max(h, o.shape[0])), interpolation=cv2.INTER_LINEAR)
        oy = int(rng.integers(0, o.shape[0] - h + 1))
        ox = int(rng.integers(0, o.shape[1] - w + 1))
        fill = o[oy : oy + h, ox : ox + w].astype(np.float32)
        # keep the foreign texture visibly different even when its mean matches
        if abs(float(fill[mask].mean()) - float(a[mask].mean())) < 20:
            fill = np.clip(fill + rng.choice([-1, 1]) * rng.uniform(20, 40), 0, 255)
    return _apply(a, mask, fill), mask


def smudge(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Irregular blob where the texture is blurred away (Gaussian sigma 3-7 px at 224)."""
    a = _check_img(img)
    h, w = a.shape[:2]
    s = _scale(a)
    mask = random_blob_mask((h, w), rng, (12 * s, 30 * s))
    sigma = rng.uniform(3, 7) * s
    blurred = cv2.GaussianBlur(a.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    return _apply(a, mask, blurred), mask


def faint(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Irregular blob shifted by only 10-22 grey levels (up or down; clipped at 0/255)."""
    a = _check_img(img)
    h, w = a.shape[:2]
    s = _scale(a)
    mask = random_blob_mask((h, w), rng, (12 * s, 30 * s))
    mean = float(a[mask].mean())
    # Shift away from the nearer end of the range so that clipping rarely eats the defect.
    sign = -1.0 if mean > 127 else 1.0
    if rng.random() < 0.3:
        sign = -sign
    delta = sign * rng.uniform(10, 22)
    return _apply(a, mask, a.astype(np.float32) + delta), mask


DEFECTS: Dict[str, Callable[..., Tuple[np.ndarray, np.ndarray]]] = {
    "scratch": scratch,
    "spot": spot,
    "contamination": contamination,
    "smudge": smudge,
    "faint": faint,
}


def paint_defect(
    kind: str, img: np.ndarray, rng: np.random.Generator, other: Optional[np.ndarray] = None, min_changed: int = 4
) -> Tuple[np.ndarray, np.ndarray]:
    """Paint defect ``kind`` (one of :data:`DEFECT_TYPES`); retries (up to 20 times) until at
    least ``min_changed`` pixels really changed, so a mask never marks an invisible defect.
    The returned mask is the painted region (see the module docstring)."""
    if kind not in DEFECTS:
        raise ValueError(f"kind: expected one of {DEFECT_TYPES}, got {kind!r}")
    fn = DEFECTS[kind]
    out = mask = None
    for _ in range(20):
        out, mask = fn(img, rng, other) if kind == "contamination" else fn(img, rng)
        diff = out != img
        if diff.ndim == 3:
            diff = diff.any(axis=2)
        if mask.any() and int(diff.sum()) >= min_changed:
            return out, mask
    return out, mask  # pragma: no cover - practically unreachable


# --------------------------------------------------------------------------------------
# MVTec-layout dataset from photos
# --------------------------------------------------------------------------------------
def _cat_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


def _regions(photo: np.ndarray, train_fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """Split a photo along its longer side into disjoint train/test regions."""
    h, w = photo.shape[:2]
    if h >= w:
        cut = int(round(h * train_fraction))
        return photo[:cut], photo[cut:]
    cut = int(round(w * train_fraction))
    return photo[:, :cut], photo[:, cut:]


def _random_crop(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = region.shape[:2]
    side = min(size, h, w)
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    c = region[y : y + side, x : x + side]
    c = np.rot90(c, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        c = c[:, ::-1]
    c = np.ascontiguousarray(c)
    if side != size:
        c = cv2.resize(c, (size, size), interpolation=cv2.INTER_LINEAR)
    return c


def make_mvtec_dataset(
    out_dir,
    sources: Mapping[str, np.ndarray],
    n_train: int = 200,
    n_test_good: int = 60,
    n_per_defect: int = 15,
    size: int = 224,
    seed: int = 0,
    progress: bool = True,
    defects: Sequence[str] = DEFECT_TYPES,
    train_fraction: float = 0.5,
) -> Path:
    """Write ``out_dir/<category>/{train/good, test/<good|defect>, ground_truth/<defect>}``.

    For each ``category -> photo`` (HxW or HxWx3; uint16/float converted to uint8): train crops
    come from the first ``train_fraction`` of the photo along its longer side, test crops from
    the rest (disjoint pixels); crops of ``size`` (smaller regions: the largest square that
    fits, resized) get a random 90-degree rotation and horizontal flip. Defects are painted
    with :func:`paint_defect`; contamination takes its fill from another category's test
    region when there is one. Files: ``NNN.png`` and ``ground_truth/<defect>/NNN_mask.png``
    (0/255). Deterministic for ``seed``. Returns ``Path(out_dir)``.
    """
    for nm, v in (("n_train", n_train), ("n_test_good", n_test_good), ("n_per_defect", n_per_defect)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{nm}: expected an int >= 0, got {v!r}")
    if n_train < 1:
        raise ValueError(f"n_train: need at least 1 training image, got {n_train}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size: expected an int >= 16, got {size!r}")
    if not (0.1 <= float(train_fraction) <= 0.9):
        raise ValueError(f"train_fraction: expected a value in [0.1, 0.9], got {train_fraction}")
    bad = [d for d in defects if d not in DEFECTS]
    if bad:
        raise ValueError(f"defects: unknown defect type(s) {bad}; expected a subset of {DEFECT_TYPES}")
    if not sources:
        raise ValueError("sources: expected at least one category -> photo")
    photos: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    for cat, ph in sources.items():
        if not isinstance(cat, str) or not cat or os.sep in cat or cat.startswith("."):
            raise ValueError(f"sources: bad category name {cat!r}")
        a = to_uint8(np.asarray(ph))
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
            raise ValueError(f"sources[{cat!r}]: expected HxW or HxWx3 photo, got shape {a.shape}")
        tr, te = _regions(a, float(train_fraction))
        if min(tr.shape[:2]) < 16 or min(te.shape[:2]) < 16:
            raise ValueError(f"sources[{cat!r}]: photo {a.shape[:2]} too small to split into train/test regions")
        photos[cat] = (tr, te)

    from tqdm.auto import tqdm

    out = Path(out_dir)
    per_cat = n_train + n_test_good + n_per_defect * len(defects)
    bar = tqdm(total=per_cat * len(photos), desc="synthetic dataset", unit="img", disable=not progress)
    cats = list(photos)
    try:
        for ci, cat in enumerate(cats):
            rng = _cat_rng(seed, cat)
            tr, te = photos[cat]
            root = out / cat
            for i in range(n_train):
                write_image(root / "train" / "good" / f"{i:03d}.png", _random_crop(tr, size, rng))
                bar.update(1)
            for i in range(n_test_good):
                write_image(root / "test" / "good" / f"{i:03d}.png", _random_crop(te, size, rng))
                bar.update(1)
            other_cats = [c for c in cats if c != cat]
            for d in defects:
                for i in range(n_per_defect):
                    crop = _random_crop(te, size, rng)
                    other = None
                    if d == "contamination" and other_cats:
                        oc = other_cats[int(rng.integers(0, len(other_cats)))]
                        other = _random_crop(photos[oc][1], size, rng)
                    img, mask = paint_defect(d, crop, rng, other)
                    write_image(root / "test" / d / f"{i:03d}.png", img)
                    write_image(root / "ground_truth" / d / f"{i:03d}_mask.png", mask)
                    bar.update(1)
    finally:
        bar.close()
    return out


# --------------------------------------------------------------------------------------
# Large procedural SEM-like split
# --------------------------------------------------------------------------------------
def _design(seed: int) -> dict:
    """The 'product': line/space pattern parameters shared by every image of a dataset."""
    r = np.random.default_rng([int(seed), 7919])
    return {
        "pitch": float(r.uniform(14, 26)),  # in pixels at size 256
        "duty": float(r.uniform(0.35, 0.6)),
        "vertical": bool(r.random() < 0.5),
        "cross_pitch": float(r.uniform(60, 110)),
        "cross_duty": float(r.uniform(0.1, 0.2)),
        "line_level": float(r.uniform(0.55, 0.7)),
        "space_level": float(r.uniform(0.25, 0.38)),
        "edge_gain": float(r.uniform(0.15, 0.3)),
    }


def sem_texture(size: int, rng: np.random.Generator, design: Optional[dict] = None, grey: bool = True) -> np.ndarray:
    """One SEM-like uint8 image: periodic lines with bright edges (SEM edge effect), a cut
    pattern, band-limited noise, brightness drift and shot noise. ``design`` fixes the
    pattern (see ``_design``); per-image variation: phase, small pitch/rotation jitter, noise."""
    d = design or _design(0)
    s = size / 256.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    rot = np.deg2rad(rng.normal(0, 0.4))
    u = xx * np.cos(rot) + yy * np.sin(rot)
    v = -xx * np.sin(rot) + yy * np.cos(rot)
    if not d["vertical"]:
        u, v = v, u
    pitch = d["pitch"] * s * rng.uniform(0.98, 1.02)
    ph = ((u + rng.uniform(0, pitch)) / pitch) % 1.0
    line = (ph < d["duty"]).astype(np.float32)
    # distance to the nearest line edge in units of the pitch -> bright SEM edges
    e = np.minimum(np.abs(ph), np.minimum(np.abs(ph - d["duty"]), np.abs(1.0 - ph)))
    edge = np.exp(-((e * pitch) / (1.2 * s + 0.3)) ** 2)
    cp = d["cross_pitch"] * s
    cut = (((v + rng.uniform(0, cp)) / cp) % 1.0) < d["cross_duty"]
    line = np.where(cut, 0.0, line)
    img = d["space_level"] + (d["line_level"] - d["space_level"]) * line + d["edge_gain"] * edge * (1 - cut * 0.7)
    img = cv2.GaussianBlur(img, (0, 0), 0.8 * s + 0.2)
    # band-limited noise: low-res white noise upsampled
    lo = max(4, size // 16)
    bn = cv2.resize(rng.standard_normal((lo, lo)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    img = img + 0.03 * bn
    # brightness drift (charging) and shot noise
    gy, gx = rng.normal(0, 0.03, 2)
    img = img * (1 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5)) + rng.normal(0, 0.02)
    img = img + rng.standard_normal((size, size)).astype(np.float32) * 0.045
    out = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    if not grey:
        out = np.repeat(out[:, :, None], 3, axis=2)
    return out


def _large_job(args) -> int:
    out_dir, split, idx, size, grey, seed, design, defect = args
    written = 0
    for i in idx:
        if defect is None:
            p = os.path.join(out_dir, split, "good", f"{i:06d}.png")
        else:
            p = os.path.join(out_dir, "test", defect, f"{i:06d}.png")
        if os.path.exists(p) and (defect is None or os.path.exists(os.path.join(out_dir, "ground_truth", defect, f"{i:06d}_mask.png"))):
            continue
        if defect is not None:
            tag = 2 + zlib.crc32(defect.encode()) % 100000
        else:
            tag = 0 if split == "train" else 1
        rng = np.random.default_rng([int(seed), tag, int(i)])
        img = sem_texture(size, rng, design, grey)
        if defect is not None:
            img, mask = paint_defect(defect, img, rng)
            write_image(os.path.join(out_dir, "ground_truth", defect, f"{i:06d}_mask.png"), mask)
        write_image(p, img)
        written += 1
    return written


def make_large_train_split(
    out_dir,
    n_images: int = 23888,
    size: int = 256,
    grey: bool = True,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    n_test_good: int = 0,
    n_per_defect: int = 0,
    defects: Sequence[str] = DEFECT_TYPES,
    chunk: int = 64,
) -> Path:
    """Write a large procedural SEM-like dataset in MVTec layout under ``out_dir``.

    ``train/good/NNNNNN.png`` x ``n_images`` (default 23,888, the size of the MIIC train
    split), plus optionally ``test/good`` x ``n_test_good`` and ``test/<defect>`` with masks x
    ``n_per_defect``. Every image is a function of ``(seed, index)`` only, so the output does
    not depend on ``workers`` and the run is resumable: existing files are skipped (files are
    written atomically, so an interrupted run leaves no half-written image). ``workers`` > 1
    uses a process pool. A ``dataset.json`` records the parameters; re-running into the same
    folder with different parameters raises ValueError. Returns ``Path(out_dir)``.
    """
    for nm, v in (("n_images", n_images), ("n_test_good", n_test_good), ("n_per_defect", n_per_defect), ("workers", workers), ("chunk", chunk)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{nm}: expected an int >= 0, got {v!r}")
    if n_images < 1:
        raise ValueError(f"n_images: expected >= 1, got {n_images}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ValueError(f"size: expected an int >= 32, got {size!r}")
    bad = [d for d in defects if d not in DEFECTS]
    if bad:
        raise ValueError(f"defects: unknown defect type(s) {bad}; expected a subset of {DEFECT_TYPES}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"generator": "edgead.sem_texture", "version": 1, "size": int(size), "grey": bool(grey), "seed": int(seed)}
    meta_path = out / "dataset.json"
    if meta_path.exists():
        try:
            old = json.loads(meta_path.read_text())
        except ValueError:
            old = None
        if not isinstance(old, dict) or {k: old.get(k) for k in params} != params:
            raise ValueError(f"{out} already holds a dataset made with different parameters ({meta_path}): use another out_dir")
    meta = dict(params, n_images=int(n_images), n_test_good=int(n_test_good), n_per_defect=int(n_per_defect), defects=list(defects))
    tmp = out / ".dataset.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, meta_path)

    design = _design(seed)
    jobs = []
    ch = max(1, int(chunk))
    for i0 in range(0, n_images, ch):
        jobs.append((str(out), "train", list(range(i0, min(n_images, i0 + ch))), int(size), bool(grey), int(seed), design, None))
    for i0 in range(0, n_test_good, ch):
        jobs.append((str(out), "test", list(range(i0, min(n_test_good, i0 + ch))), int(size), bool(grey), int(seed), design, None))
    for d in defects:
        for i0 in range(0, n_per_defect, ch):
            jobs.append((str(out), "test", list(range(i0, min(n_per_defect, i0 + ch))), int(size), bool(grey), int(seed), design, d))
    total = n_images + n_test_good + n_per_defect * len(defects)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="SEM-like dataset", unit="img", disable=not progress)
    try:
        if workers <= 1 or len(jobs) == 1:
            for j in jobs:
                _large_job(j)
                bar.update(len(j[2]))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn") if os.name == "nt" else mp.get_context()
            with ctx.Pool(int(workers)) as pool:
                for j, _ in zip(jobs, pool.imap(_large_job, jobs)):
                    bar.update(len(j[2]))
    finally:
        bar.close()
    return out


def build_make_data_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    """Arguments of ``edgead make-data`` (adds them to ``parser`` when given)."""
    p = parser or argparse.ArgumentParser(prog="edgead make-data", description="Generate a large synthetic SEM-like dataset (MVTec layout).")
    p.add_argument("out_dir", help="output folder (created; re-running resumes)")
    p.add_argument("--n-images", type=int, default=23888, help="train/good images (default: 23888, MIIC-sized)")
    p.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    p.add_argument("--rgb", action="store_true", help="write 3-channel images (default grey)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    p.add_argument("--n-test-good", type=int, default=0, help="test/good images (default 0)")
    p.add_argument("--n-per-defect", type=int, default=0, help="test images per defect type, with masks (default 0)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main_make_data(args=None) -> int:
    """Entry point for ``edgead make-data``: ``args`` is an argv list, an argparse Namespace
    from :func:`build_make_data_parser`, or None (``sys.argv``)."""
    if not isinstance(args, argparse.Namespace):
        args = build_make_data_parser().parse_args(args)
    try:
        out = make_large_train_split(
            args.out_dir,
            n_images=args.n_images,
            size=args.size,
            grey=not args.rgb,
            seed=args.seed,
            workers=args.workers,
            progress=not args.no_progress,
            n_test_good=args.n_test_good,
            n_per_defect=args.n_per_defect,
        )
    except ValueError as e:
        print(f"edgead make-data: error: {e}")
        return 2
    print(f"dataset written to {out}")
    return 0
