"""Image and mask IO on OpenCV (no torch, no PIL).

Conventions used everywhere in edgead:

- Images are ``HxW`` (grey) or ``HxWx3`` **RGB** NumPy arrays with the dtype they were
  stored with (``uint8`` or ``uint16``; floating-point TIFF/EXR come back as ``float32``).
- RGBA / grey+alpha files are returned without their alpha channel (alpha is dropped, it
  is *not* composited onto a background).
- Masks are ``HxW`` ``bool`` arrays.

Files that are missing, empty, not an image, or truncated raise :class:`ImageReadError`
(a ``ValueError``) whose message names the file. Truncation is detected explicitly for PNG
(the ``IEND`` chunk must be present) and JPEG (an ``EOI`` marker ``FFD9`` must follow the
last start-of-scan), because OpenCV may silently return partially decoded pixels.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "read_image",
    "read_mask",
    "write_image",
    "to_uint8",
    "is_image_file",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions (lower case, with the dot) treated as images by folder scans.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_JPEG_SIG = b"\xff\xd8"


class ImageReadError(ValueError):
    """An image or mask file could not be read (missing, empty, not an image, truncated)."""


def is_image_file(path: PathLike) -> bool:
    """True when ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def _check_complete(path: str, data: bytes) -> None:
    """Raise ImageReadError when a PNG/JPEG byte string is visibly truncated."""
    if data.startswith(_PNG_SIG):
        # IEND is the last chunk; anything after it is tolerated (some writers pad).
        if data.rfind(b"IEND\xaeB`\x82") < 0:  # IEND chunk type + its fixed CRC
            raise ImageReadError(f"truncated PNG file (no IEND chunk): {path}")
    elif data.startswith(_JPEG_SIG):
        sos = data.rfind(b"\xff\xda")
        eoi = data.rfind(b"\xff\xd9")
        if sos < 0 or eoi < sos:
            raise ImageReadError(f"truncated JPEG file (no end-of-image marker FFD9 after the scan data): {path}")


def _read_bytes(path: PathLike) -> "tuple[str, bytes]":
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ImageReadError(f"image file not found: {p}")
    if os.path.isdir(p):
        raise ImageReadError(f"expected an image file, got a directory: {p}")
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageReadError(f"cannot read image file {p}: {e}") from e
    if len(data) == 0:
        raise ImageReadError(f"empty image file: {p}")
    return p, data


def read_image(path: PathLike) -> np.ndarray:
    """Read an image file as ``HxW`` (grey) or ``HxWx3`` RGB, dtype as stored (uint8/uint16).

    - BGR files are converted to RGB; RGBA drops alpha; grey+alpha keeps the grey channel.
    - Single-channel images are returned 2-D (never ``HxWx1``).
    - Floating-point images (TIFF/EXR) are returned as ``float32`` unchanged.
    - Missing, empty, non-image or truncated files raise :class:`ImageReadError` naming the file.
    """
    p, data = _read_bytes(path)
    _check_complete(p, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # pragma: no cover - cv2 normally returns None
        raise ImageReadError(f"cannot decode image file {p}: {e}") from e
    if img is None or img.size == 0:
        raise ImageReadError(f"not a readable image (unknown format or corrupt data): {p}")
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1:
            img = img[:, :, 0]
        elif c == 2:  # grey + alpha
            img = img[:, :, 0]
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif c == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
        else:
            raise ImageReadError(f"unsupported number of channels {c} in image file: {p}")
    elif img.ndim != 2:
        raise ImageReadError(f"unsupported image layout {img.shape} in image file: {p}")
    if img.dtype in (np.uint8, np.uint16):
        pass
    elif img.dtype in (np.float32, np.float64, np.float16):
        img = img.astype(np.float32, copy=False)
    elif img.dtype == np.int8:
        raise ImageReadError(f"unsupported signed 8-bit image: {p}")
    elif img.dtype == np.int16:
        raise ImageReadError(f"unsupported signed 16-bit image: {p}")
    else:
        raise ImageReadError(f"unsupported image dtype {img.dtype}: {p}")
    return np.ascontiguousarray(img)


def read_mask(path: PathLike, threshold: Optional[float] = None) -> np.ndarray:
    """Read a ground-truth mask as an ``HxW`` bool array.

    Default rule (``threshold=None``): a pixel is defective when its value is ``>= 128`` for
    8-bit masks, ``>= 32768`` for 16-bit masks and ``>= 0.5`` for float masks (half range),
    so anti-aliased masks (e.g. magnetic-tile) binarise at their 50 % edge.
    Pass ``threshold=1`` for label-index masks whose defect pixels are small non-zero values
    (VisA's raw masks). Colour masks count a pixel when any channel passes the threshold.
    """
    img = read_image(path)
    if threshold is None:
        if img.dtype == np.uint8:
            threshold = 128
        elif img.dtype == np.uint16:
            threshold = 32768
        else:
            threshold = 0.5
    m = img >= threshold
    if m.ndim == 3:
        m = m.any(axis=2)
    return np.ascontiguousarray(m)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Convert an image to uint8 for display/saving.

    uint8: unchanged; uint16: ``round(x / 257)``; bool: 0/255; float: clipped to [0, 1] and
    scaled by 255 (NaN -> 0). Other integer types are clipped to [0, 255].
    """
    a = np.asarray(img)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        return np.clip(a, 0, 255).astype(np.uint8)
    raise TypeError(f"to_uint8: img must be a numeric array, got dtype {a.dtype}")


def write_image(path: PathLike, img: np.ndarray) -> None:
    """Write ``img`` (HxW grey or HxWx3 RGB; HxWx4 RGBA) to ``path``, creating parent folders.

    uint8 and uint16 are written as they are (16-bit only for formats that support it:
    PNG/TIFF); bool becomes 0/255 uint8; float becomes uint8 via :func:`to_uint8`. The format
    follows the file extension. The file is written atomically (temporary file + rename).
    """
    p = os.fspath(path)
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"write_image: img must be HxW, HxWx3 or HxWx4, got shape {a.shape} for {p}")
    if a.size == 0:
        raise ValueError(f"write_image: img is empty (shape {a.shape}) for {p}")
    if a.dtype not in (np.uint8, np.uint16):
        a = to_uint8(a)
    if a.ndim == 3:
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2BGR if a.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ext = os.path.splitext(p)[1].lower()
    if not ext:
        raise ValueError(f"write_image: path needs an image extension such as .png: {p}")
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(a))
    if not ok:
        raise ValueError(f"write_image: OpenCV cannot encode {a.dtype} {a.shape} as {ext}: {p}")
    parent = os.path.dirname(p)
    if parent:
        os.makedirs(parent, exist_ok=True)
    # Hidden temporary name (folder scans skip dot-files), then an atomic rename.
    tmp = os.path.join(parent, f".{os.path.basename(p)}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, p)
