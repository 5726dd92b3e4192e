"""Pre-processing from a decoded image to a normalised float32 ``(C, h, w)`` array (NumPy + cv2).

The same :class:`Preprocessing` object is stored in model artifacts (``to_dict``/``from_dict``)
and used by the torch-free runtime, so training and deployment see identical inputs.

Order of operations in ``Preprocessing.__call__``:

1. dtype -> float32 in [0, 1]: uint8 / 255, uint16 / 65535, bool -> 0/1, float passes
   through when it is finite and within [0, 1] (else ValueError).
2. channels: grey -> 3 channels by replication (``channels == 3``); RGB -> grey with OpenCV's
   luminance ``0.299 R + 0.587 G + 0.114 B`` (``channels == 1``). RGBA drops alpha.
3. resize to ``size`` (h, w) (uint8/uint16 images over ``LARGE_IMAGE_PIXELS`` pixels are resized
   in their own dtype before step 1, so a huge image never exists as float32). ``interpolation="auto"`` (default) uses ``cv2.INTER_AREA`` when
   the image shrinks in both directions and ``cv2.INTER_LINEAR`` otherwise (enlarging or
   mixed). ``"area"``, ``"linear"``, ``"cubic"`` and ``"nearest"`` force one method.
4. normalise per channel: ``(x - mean) / std``; output is C-contiguous float32 ``(C, h, w)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGENET_GREY_MEAN",
    "IMAGENET_GREY_STD",
    "MOBILENET_KERAS_MEAN",
    "MOBILENET_KERAS_STD",
    "INTERPOLATIONS",
    "Preprocessing",
    "to_float01",
    "resize_mask",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Defaults for ``channels=1`` (channel averages of the ImageNet statistics).
IMAGENET_GREY_MEAN = (0.449,)
IMAGENET_GREY_STD = (0.226,)
#: Keras-style MobileNet scaling to [-1, 1].
MOBILENET_KERAS_MEAN = (0.5, 0.5, 0.5)
MOBILENET_KERAS_STD = (0.5, 0.5, 0.5)

INTERPOLATIONS = ("auto", "area", "linear", "cubic", "nearest")
_CV2_INTER = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
_FIELDS = ("size", "channels", "mean", "std", "interpolation")
#: integer images with more pixels than this are resized before the float32 conversion (memory)
LARGE_IMAGE_PIXELS = 1 << 22
_REQUIRED = ("size", "channels", "mean", "std")


def to_float01(img: np.ndarray, name: str = "img") -> np.ndarray:
    """uint8/uint16/bool/float image -> float32 in [0, 1] (ValueError otherwise)."""
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1.0 / 255.0)
    if a.dtype == np.uint16:
        return a.astype(np.float32) * np.float32(1.0 / 65535.0)
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        f = a.astype(np.float32, copy=False)
        if f.size:
            if not np.all(np.isfinite(f)):
                raise ValueError(f"{name}: float image contains NaN or infinite values")
            lo, hi = float(f.min()), float(f.max())
            if lo < -1e-6 or hi > 1.0 + 1e-6:
                raise ValueError(
                    f"{name}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]"
                )
        return f
    raise ValueError(f"{name}: expected dtype uint8, uint16, bool or float in [0, 1], got {a.dtype}")


def _check_size(size: Any, name: str = "size") -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    try:
        vals = tuple(size)
    except TypeError:
        raise ValueError(f"{name}: expected (h, w) positive ints, got {size!r}") from None
    if len(vals) != 2 or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) > 0 for v in vals
    ):
        raise ValueError(f"{name}: expected (h, w) positive ints, got {size!r}")
    return int(vals[0]), int(vals[1])


def resize_mask(mask: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize a 2-D mask to ``size`` (h, w) with nearest-neighbour; returns bool ``(h, w)``."""
    h, w = _check_size(size)
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask: expected a 2-D (H, W) array, got shape {m.shape}")
    if m.size == 0:
        raise ValueError(f"mask: empty array of shape {m.shape}")
    m8 = (m != 0).astype(np.uint8)
    if m8.shape != (h, w):
        m8 = cv2.resize(m8, (w, h), interpolation=cv2.INTER_NEAREST)
    return m8.astype(bool)


@dataclass
class Preprocessing:
    """Image -> normalised float32 ``(C, h, w)``. See the module docstring for the exact steps.

    ``mean``/``std`` default to the ImageNet statistics (``channels=3``) or their channel
    averages (``channels=1``); a scalar is broadcast to every channel; otherwise exactly
    ``channels`` values are required.
    """

    size: Tuple[int, int] = (224, 224)
    channels: int = 3
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    interpolation: str = "auto"

    def __post_init__(self) -> None:
        self.size = _check_size(self.size, "size")
        if isinstance(self.channels, bool) or not isinstance(self.channels, (int, np.integer)) or int(self.channels) not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {self.channels!r}")
        self.channels = int(self.channels)
        if self.mean is None:
            self.mean = IMAGENET_MEAN if self.channels == 3 else IMAGENET_GREY_MEAN
        if self.std is None:
            self.std = IMAGENET_STD if self.channels == 3 else IMAGENET_GREY_STD
        self.mean = self._check_stats(self.mean, "mean", positive=False)
        self.std = self._check_stats(self.std, "std", positive=True)
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {self.interpolation!r}")

    def _check_stats(self, vals: Any, name: str, positive: bool) -> Tuple[float, ...]:
        if isinstance(vals, (int, float, np.floating, np.integer)) and not isinstance(vals, bool):
            vals = (float(vals),) * self.channels
        try:
            t = tuple(float(v) for v in vals)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: expected {self.channels} numbers, got {vals!r}") from None
        if len(t) != self.channels:
            raise ValueError(f"{name}: expected {self.channels} values (one per channel), got {len(t)}: {t}")
        if not all(np.isfinite(v) for v in t):
            raise ValueError(f"{name}: values must be finite, got {t}")
        if positive and not all(v > 0 for v in t):
            raise ValueError(f"{name}: values must be > 0, got {t}")
        return t

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict: size [h, w], channels, mean, std (lists), interpolation."""
        return {
            "size": [int(self.size[0]), int(self.size[1])],
            "channels": int(self.channels),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Preprocessing":
        """Inverse of :meth:`to_dict`. Unknown or missing keys and bad values raise ValueError
        naming the field (``interpolation`` may be omitted: ``"auto"``)."""
        if not isinstance(d, dict):
            raise ValueError(f"Preprocessing.from_dict: expected a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_FIELDS))
        if unknown:
            raise ValueError(f"Preprocessing.from_dict: unknown field(s) {unknown}; expected {list(_FIELDS)}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise ValueError(f"Preprocessing.from_dict: missing field(s) {missing}")
        return cls(
            size=d["size"],
            channels=d["channels"],
            mean=d["mean"],
            std=d["std"],
            interpolation=d.get("interpolation", "auto"),
        )

    # -- application ---------------------------------------------------------------------
    def cv2_interpolation(self, in_hw: Sequence[int]) -> int:
        """The cv2 flag used to resize an image of size ``in_hw`` to ``self.size``."""
        if self.interpolation != "auto":
            return _CV2_INTER[self.interpolation]
        h, w = self.size
        return cv2.INTER_AREA if (h <= in_hw[0] and w <= in_hw[1]) else cv2.INTER_LINEAR

    def __call__(self, img: np.ndarray) -> np.ndarray:
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[:, :, :3]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
            raise ValueError(f"img: expected HxW (grey) or HxWx3 (RGB) array, got shape {a.shape}")
        if a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"img: empty image of shape {a.shape}")
        h, w = self.size
        if a.dtype in (np.uint8, np.uint16) and a.shape[0] * a.shape[1] > LARGE_IMAGE_PIXELS and h * w < a.shape[0] * a.shape[1]:
            # A large integer image is resized in its own dtype first: converting it to float32 first
            # needs 4 bytes per pixel and channel (4.8 GB for a 20000x20000 RGB PNG). The result differs
            # from the float path by the integer rounding of the resized pixels (<= 0.5 / 255).
            a = cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=self.cv2_interpolation(a.shape[:2]))
        f = to_float01(a)
        if self.channels == 3 and f.ndim == 2:
            f = np.repeat(f[:, :, None], 3, axis=2)
        elif self.channels == 1 and f.ndim == 3:
            f = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY)
        if f.shape[:2] != (h, w):
            f = cv2.resize(np.ascontiguousarray(f), (w, h), interpolation=self.cv2_interpolation(f.shape[:2]))
        if f.ndim == 2:
            f = f[:, :, None]
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_std = np.float32(1.0) / np.asarray(self.std, dtype=np.float32)
        out = (f - mean) * inv_std
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)

    def batch(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """Apply to each image and stack: float32 ``(N, C, h, w)`` (``N`` may be 0)."""
        arrs = [self(im) for im in images]
        if not arrs:
            return np.zeros((0, self.channels, self.size[0], self.size[1]), dtype=np.float32)
        return np.stack(arrs, axis=0)

    def resize_mask(self, mask: np.ndarray, size: Sequence[int] = None) -> np.ndarray:
        """Nearest-neighbour resize of a mask to ``size`` (default ``self.size``) -> bool."""
        return resize_mask(mask, self.size if size is None else size)

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """``(C, h, w)`` of one pre-processed image."""
        return (self.channels, self.size[0], self.size[1])
