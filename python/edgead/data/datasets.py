"""Dataset discovery (MVTec AD, MVTec LOCO, VisA CSV, plain folders) and batched loading.

No torch: everything here is NumPy + OpenCV so the deployment runtime can use it.

MVTec AD layout (one category)::

    root/train/good/*.png
    root/test/good/*.png
    root/test/<defect>/<stem>.png
    root/ground_truth/<defect>/<stem>_mask.png

MVTec LOCO layout (auto-detected): ``ground_truth/<defect>/<stem>/000.png, 001.png, ...``;
the masks of one image are united. LOCO's own ``validation/good`` folder is exposed by
:meth:`MVTecDataset.validation_samples`.

Mask policy: a defect image (``test/<defect>``) without a mask raises ``ValueError`` naming the
image, because a silently empty mask would make pixel metrics wrong; pass
``allow_missing_masks=True`` to warn instead and use an empty mask. ``test/good`` images never
have masks.
"""
from __future__ import annotations

import csv
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .io import IMAGE_EXTENSIONS, ImageReadError, is_image_file, read_image, read_mask
from .transforms import Preprocessing

__all__ = [
    "Sample",
    "load_mask",
    "list_images",
    "MVTecDataset",
    "VisADataset",
    "ImageFolder",
    "open_dataset",
    "iter_batches",
    "split_samples",
]

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Sample:
    """One image with its label.

    label: 0 good, 1 defect (-1: unknown, for :class:`ImageFolder` prediction inputs).
    defect_type: ``"good"`` for normal images. mask_paths: empty for good images or when no
    mask exists; several paths (MVTec LOCO) are united. mask_threshold: passed to
    :func:`~edgead.data.io.read_mask` (None: half range; VisA uses 1, "non-zero").
    """

    path: str
    label: int
    defect_type: str
    mask_paths: Tuple[str, ...] = ()
    mask_threshold: Optional[float] = None


def load_mask(sample: Sample, shape: Sequence[int]) -> np.ndarray:
    """Union of ``sample.mask_paths`` as a bool ``(H, W)`` array; zeros when there are none.

    ``shape`` is the image shape (``(H, W)`` or ``(H, W, C)``). A mask whose size differs from
    the image raises ``ValueError`` naming the mask file (no silent resizing: a wrong-sized
    mask usually means a wrong pairing).
    """
    shp = tuple(int(s) for s in tuple(shape)[:2])
    if len(shp) != 2 or min(shp) <= 0:
        raise ValueError(f"load_mask: shape must be (H, W[, C]) with positive sizes, got {tuple(shape)}")
    out = np.zeros(shp, dtype=bool)
    for mp in sample.mask_paths:
        m = read_mask(mp, sample.mask_threshold)
        if m.shape != shp:
            raise ValueError(
                f"mask {mp} has shape {m.shape} but its image {sample.path} has shape {shp}"
            )
        out |= m
    return out


def list_images(folder: PathLike, recursive: bool = False) -> List[str]:
    """Sorted image files (by :data:`IMAGE_EXTENSIONS`) in ``folder``; dot-files are skipped."""
    folder = os.fspath(folder)
    out: List[str] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and is_image_file(f))
    else:
        with os.scandir(folder) as it:
            out = [e.path for e in it if not e.name.startswith(".") and e.is_file() and is_image_file(e.name)]
    return sorted(out)


def _split_validation(train: List[Sample], fraction: float, seed: int) -> Tuple[List[Sample], List[Sample]]:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0.0 <= float(fraction) < 1.0):
        raise ValueError(f"fraction: expected a number in [0, 1), got {fraction!r}")
    n = len(train)
    n_val = int(round(float(fraction) * n))
    if fraction > 0 and n_val == 0:
        n_val = 1
    if n_val >= n:
        raise ValueError(
            f"fraction={fraction} leaves no training images ({n} good training image(s) available)"
        )
    rng = np.random.default_rng(seed)
    val_idx = set(int(i) for i in rng.permutation(n)[:n_val])
    tr = [s for i, s in enumerate(train) if i not in val_idx]
    va = [s for i, s in enumerate(train) if i in val_idx]
    return tr, va


def split_samples(samples: List[Sample], fraction: float, seed: int) -> Tuple[List[Sample], List[Sample]]:
    """(train, validation) split of a list of good samples, as ``split_validation`` of the datasets does."""
    return _split_validation(samples, fraction, seed)


class _Dataset:
    root: str

    def train_samples(self) -> List[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def test_samples(self) -> List[Sample]:  # pragma: no cover - abstract
        raise NotImplementedError

    def split_validation(self, fraction: float = 0.1, seed: int = 0) -> Tuple[List[Sample], List[Sample]]:
        """Split the good training images into (train, validation); never touches test data.

        Deterministic for a given ``seed``; ``round(fraction * n)`` images (at least one when
        ``fraction > 0``) go to validation; both lists keep the sorted file order.
        """
        return _split_validation(self.train_samples(), fraction, seed)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.root))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"


class MVTecDataset(_Dataset):
    """One category in MVTec AD layout (MVTec LOCO auto-detected); see the module docstring."""

    def __init__(self, root: PathLike, allow_missing_masks: bool = False):
        self.root = os.fspath(root)
        self.allow_missing_masks = bool(allow_missing_masks)
        if not os.path.isdir(self.root):
            raise ValueError(f"dataset root does not exist or is not a folder: {self.root}")
        good = os.path.join(self.root, "train", "good")
        if not os.path.isdir(good):
            subs = sorted(d for d in os.listdir(self.root) if os.path.isdir(os.path.join(self.root, d, "train", "good")))
            hint = f"; it contains categories {subs}: pass one of them, e.g. {os.path.join(self.root, subs[0])}" if subs else ""
            raise ValueError(f"not an MVTec-layout dataset: {good} is missing{hint}")
        if not list_images(good):
            raise ValueError(f"no images (extensions {IMAGE_EXTENSIONS}) in {good}")
        gt = os.path.join(self.root, "ground_truth")
        self.is_loco = False
        if os.path.isdir(gt):
            for d in sorted(os.listdir(gt)):
                dp = os.path.join(gt, d)
                if os.path.isdir(dp) and any(os.path.isdir(os.path.join(dp, e)) for e in os.listdir(dp)):
                    self.is_loco = True
                    break

    def _good(self, split: str) -> List[Sample]:
        folder = os.path.join(self.root, split, "good")
        if not os.path.isdir(folder):
            return []
        return [Sample(p, 0, "good") for p in list_images(folder)]

    def train_samples(self) -> List[Sample]:
        """``train/good`` images, sorted by path (all label 0)."""
        return self._good("train")

    def validation_samples(self) -> List[Sample]:
        """``validation/good`` (MVTec LOCO ships one); empty list when absent."""
        return self._good("validation")

    def defect_types(self) -> List[str]:
        """Sorted defect folder names under ``test/`` (excluding ``good``)."""
        test = os.path.join(self.root, "test")
        if not os.path.isdir(test):
            return []
        return sorted(d for d in os.listdir(test) if d != "good" and not d.startswith(".") and os.path.isdir(os.path.join(test, d)))

    def _masks_for(self, defect: str, image_path: str) -> Tuple[str, ...]:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        gdir = os.path.join(self.root, "ground_truth", defect)
        folder = os.path.join(gdir, stem)
        if os.path.isdir(folder):  # MVTec LOCO: one folder of masks per image
            masks = list_images(folder)
            if masks:
                return tuple(masks)
        for base in (stem + "_mask", stem):
            for ext in IMAGE_EXTENSIONS:
                for e in (ext, ext.upper()):
                    p = os.path.join(gdir, base + e)
                    if os.path.isfile(p):
                        return (p,)
        return ()

    def test_samples(self) -> List[Sample]:
        """``test/good`` (label 0) then each ``test/<defect>`` (label 1, with masks), sorted."""
        test = os.path.join(self.root, "test")
        if not os.path.isdir(test):
            raise ValueError(f"dataset has no test split: {test} is missing")
        out = self._good("test")
        for defect in self.defect_types():
            for p in list_images(os.path.join(test, defect)):
                masks = self._masks_for(defect, p)
                if not masks:
                    msg = (
                        f"no ground-truth mask for defect image {p} (looked for "
                        f"{os.path.join(self.root, 'ground_truth', defect, '<stem>_mask.png')} and "
                        f"a LOCO mask folder)"
                    )
                    if not self.allow_missing_masks:
                        raise ValueError(msg + "; pass allow_missing_masks=True to use an empty mask")
                    warnings.warn(msg + "; using an empty mask", stacklevel=2)
                out.append(Sample(p, 1, defect, masks))
        return out


class VisADataset(_Dataset):
    """VisA via its split CSV (columns ``object,split,label,image,mask``).

    ``split`` is ``train``/``test``; ``label`` is ``normal``/``anomaly``; ``image`` and ``mask``
    are relative to ``root`` (``mask`` empty for normal images). ``split_csv`` may be absolute
    or relative to ``root``. ``category`` selects one ``object`` (None: every row). VisA's raw
    masks store small non-zero label values, so masks are read with threshold 1 (non-zero).
    Anomalous rows in the train split are left out of :meth:`train_samples` with a warning.
    Anomalous images have defect_type ``"anomaly"``.
    """

    COLUMNS = ("object", "split", "label", "image", "mask")

    def __init__(self, root: PathLike, split_csv: PathLike, category: Optional[str] = None):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"dataset root does not exist or is not a folder: {self.root}")
        csv_path = os.fspath(split_csv)
        if not os.path.isabs(csv_path) and not os.path.isfile(csv_path):
            csv_path = os.path.join(self.root, csv_path)
        if not os.path.isfile(csv_path):
            raise ValueError(f"split_csv not found: {os.fspath(split_csv)}")
        self.split_csv = csv_path
        with open(csv_path, newline="") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in self.COLUMNS if c not in cols]
            if missing:
                raise ValueError(f"split_csv {csv_path}: missing column(s) {missing}; found {cols}")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
        for i, r in enumerate(rows):
            if r["split"] not in ("train", "test"):
                raise ValueError(f"split_csv {csv_path} row {i + 2}: split must be train/test, got {r['split']!r}")
            if r["label"] not in ("normal", "anomaly"):
                raise ValueError(f"split_csv {csv_path} row {i + 2}: label must be normal/anomaly, got {r['label']!r}")
        objects = sorted({r["object"] for r in rows})
        if category is not None:
            if category not in objects:
                raise ValueError(f"category {category!r} not in {csv_path}; available: {objects}")
            rows = [r for r in rows if r["object"] == category]
        if not rows:
            raise ValueError(f"split_csv {csv_path} has no rows")
        self.category = category
        self._rows = rows

    @property
    def name(self) -> str:
        return self.category or os.path.basename(os.path.normpath(self.root))

    def _sample(self, r: dict) -> Sample:
        img = os.path.join(self.root, r["image"])
        if r["label"] == "normal":
            return Sample(img, 0, "good")
        masks: Tuple[str, ...] = ()
        if r["mask"]:
            mp = os.path.join(self.root, r["mask"])
            if not os.path.isfile(mp):
                raise ValueError(f"mask file listed in {self.split_csv} not found: {mp} (image {img})")
            masks = (mp,)
        else:
            raise ValueError(f"anomalous image {img} has no mask in {self.split_csv}")
        return Sample(img, 1, "anomaly", masks, mask_threshold=1)

    def train_samples(self) -> List[Sample]:
        rows = [r for r in self._rows if r["split"] == "train"]
        good = [r for r in rows if r["label"] == "normal"]
        if len(good) < len(rows):
            warnings.warn(f"{len(rows) - len(good)} anomalous image(s) in the train split of {self.split_csv} left out", stacklevel=2)
        if not good:
            raise ValueError(f"no normal train images in {self.split_csv}" + (f" for {self.category!r}" if self.category else ""))
        return sorted((self._sample(r) for r in good), key=lambda s: s.path)

    def test_samples(self) -> List[Sample]:
        rows = [r for r in self._rows if r["split"] == "test"]
        out = [self._sample(r) for r in rows]
        return sorted(out, key=lambda s: (s.label, s.path))


class ImageFolder:
    """Images to predict on: a folder (sorted; ``recursive`` descends), one file, or a list of both.

    ``paths`` is the sorted list of image files (folders are scanned with
    :data:`IMAGE_EXTENSIONS`; explicitly named files are kept whatever their extension).
    Iterating yields paths; :meth:`samples` wraps them as label -1 / ``"unknown"`` samples.
    """

    def __init__(self, path: Union[PathLike, Sequence[PathLike]], recursive: bool = False):
        items = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        paths: List[str] = []
        for it in items:
            p = os.fspath(it)
            if os.path.isdir(p):
                found = list_images(p, recursive=recursive)
                if not found:
                    raise ValueError(f"no images (extensions {IMAGE_EXTENSIONS}) in folder {p}")
                paths.extend(found)
            elif os.path.isfile(p):
                paths.append(p)
            elif os.path.exists(p):
                raise ValueError(f"image path is not a regular file or a folder (FIFO, socket or device): {p}")
            else:
                raise ValueError(f"image path does not exist: {p}")
        if not paths:
            raise ValueError("ImageFolder: no images given")
        self.paths = paths if len(items) > 1 else sorted(paths)

    def samples(self) -> List[Sample]:
        return [Sample(p, -1, "unknown") for p in self.paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    def __getitem__(self, i):
        return self.paths[i]

    def __repr__(self) -> str:
        return f"ImageFolder({len(self.paths)} images)"


def open_dataset(root: PathLike, split_csv: Optional[PathLike] = None, category: Optional[str] = None):
    """Auto-detect: MVTec AD/LOCO category (``train/good``), VisA (``split_csv`` given, or a
    single ``*.csv`` in ``root/split_csv/``), else an :class:`ImageFolder` (folder or file).

    A folder that holds several MVTec categories raises ValueError listing them.
    """
    p = os.fspath(root)
    if not os.path.exists(p):
        raise ValueError(f"dataset path does not exist: {p}")
    if os.path.isfile(p):
        return ImageFolder(p)
    if split_csv is not None:
        return VisADataset(p, split_csv, category)
    if os.path.isdir(os.path.join(p, "train", "good")):
        return MVTecDataset(p)
    if category is not None and os.path.isdir(os.path.join(p, category, "train", "good")):
        return MVTecDataset(os.path.join(p, category))
    csv_dir = os.path.join(p, "split_csv")
    if os.path.isdir(csv_dir):
        csvs = sorted(f for f in os.listdir(csv_dir) if f.endswith(".csv"))
        if len(csvs) == 1:
            return VisADataset(p, os.path.join(csv_dir, csvs[0]), category)
        raise ValueError(f"{csv_dir} holds {len(csvs)} CSV files {csvs}: pass split_csv=")
    cats = sorted(d for d in os.listdir(p) if os.path.isdir(os.path.join(p, d, "train", "good")))
    if cats:
        raise ValueError(f"{p} holds several MVTec categories {cats}: pass one, e.g. {os.path.join(p, cats[0])}")
    return ImageFolder(p)


def _load_one(item, preprocessing: Preprocessing) -> np.ndarray:
    path = item.path if isinstance(item, Sample) else os.fspath(item)
    return preprocessing(read_image(path))


def iter_batches(
    samples_or_paths: Iterable[Union[Sample, PathLike]],
    preprocessing: Preprocessing,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "images",
    workers: int = 2,
) -> Iterator[Tuple[np.ndarray, list]]:
    """Yield ``(batch float32 (N, C, h, w), items)`` where ``items`` are the inputs of that batch
    (Samples or paths, as given). Images are read and pre-processed by a small thread pool
    (OpenCV releases the GIL); the next batch is loaded while the current one is consumed.
    A tqdm bar counts images when ``progress``. Unreadable files raise ImageReadError.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if not isinstance(preprocessing, Preprocessing):
        raise TypeError(f"preprocessing: expected Preprocessing, got {type(preprocessing).__name__}")
    if hasattr(samples_or_paths, "iter_batches"):  # edgead.tiling.TiledSamples: batches of training tiles
        yield from samples_or_paths.iter_batches(preprocessing, int(batch_size), progress, desc)
        return
    if isinstance(samples_or_paths, (str, os.PathLike, Sample)):
        items = [samples_or_paths]
    elif isinstance(samples_or_paths, ImageFolder):
        items = list(samples_or_paths.paths)
    else:
        items = list(samples_or_paths)
    for it in items:
        if not isinstance(it, (Sample, str, os.PathLike)):
            raise TypeError(f"samples_or_paths: expected Samples or paths, got {type(it).__name__}")
    from tqdm.auto import tqdm

    batches = [items[i : i + int(batch_size)] for i in range(0, len(items), int(batch_size))]
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=not progress)
    nw = max(1, int(workers))
    try:
        with ThreadPoolExecutor(max_workers=nw) as ex:
            def submit(b):
                return [ex.submit(_load_one, it, preprocessing) for it in b]

            pending = submit(batches[0]) if batches else None
            for bi, b in enumerate(batches):
                futs = pending
                pending = submit(batches[bi + 1]) if bi + 1 < len(batches) else None
                try:
                    arrs = [f.result() for f in futs]
                except BaseException:
                    for f in (pending or []):
                        f.cancel()
                    raise
                bar.update(len(b))
                yield np.stack(arrs, axis=0), list(b)
    finally:
        bar.close()
