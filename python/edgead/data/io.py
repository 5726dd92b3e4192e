"""Image and mask IO on OpenCV (no torch, no PIL).

Conventions used everywhere in edgead:

- Images are ``HxW`` (grey) or ``HxWx3`` **RGB** NumPy arrays with the dtype they were
  stored with (``uint8`` or ``uint16``; floating-point TIFF/EXR come back as ``float32``).
- RGBA / grey+alpha files are returned without their alpha channel (alpha is dropped, it
  is *not* composited onto a background).
- Masks are ``HxW`` ``bool`` arrays.

Files that are missing, empty, not an image, or truncated raise :class:`ImageReadError`
(a ``ValueError``) whose message names the file. So do files that are not regular files (FIFOs,
devices such as ``/dev/zero``, directories), files larger than :data:`MAX_IMAGE_BYTES`, images whose
header claims more than :data:`MAX_IMAGE_PIXELS` pixels (checked on the PNG/JPEG/TIFF/BMP/WebP/PNM
header before anything is decoded, so a 700-byte file cannot make the decoder allocate gigabytes),
and floating-point images with NaN/inf or values outside [0, 1]. Both limits are configurable per call
(``max_pixels=``, ``max_bytes=``), process-wide (:func:`set_image_limits`) or through the environment
(``EDGEAD_MAX_IMAGE_PIXELS``, ``EDGEAD_MAX_IMAGE_BYTES``). Truncation is detected explicitly for PNG
(the ``IEND`` chunk must be present) and JPEG (an ``EOI`` marker ``FFD9`` must follow the
last start-of-scan), because OpenCV may silently return partially decoded pixels.
"""
from __future__ import annotations

import os
import stat
import struct
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
    "image_header_size",
    "set_image_limits",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_BYTES",
]

PathLike = Union[str, "os.PathLike[str]"]

#: File extensions (lower case, with the dot) treated as images by folder scans.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm")

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_JPEG_SIG = b"\xff\xd8"


class ImageReadError(ValueError):
    """An image or mask file could not be read (missing, empty, not an image, truncated, too large)."""


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return default
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} expected a positive int, got {v!r}") from None
    if n < 1:
        raise ValueError(f"environment variable {name} expected a positive int, got {v!r}")
    return n


#: largest image (width * height) read_image decodes; 2^29 = e.g. 23170 x 23170 (1.6 GB as RGB uint8)
MAX_IMAGE_PIXELS = _env_int("EDGEAD_MAX_IMAGE_PIXELS", 1 << 29)
#: largest image file read_image reads (bytes)
MAX_IMAGE_BYTES = _env_int("EDGEAD_MAX_IMAGE_BYTES", 1 << 30)


def set_image_limits(max_pixels: Optional[int] = None, max_bytes: Optional[int] = None) -> None:
    """Set the process-wide limits of :func:`read_image` (None keeps a limit as it is)."""
    global MAX_IMAGE_PIXELS, MAX_IMAGE_BYTES
    if max_pixels is not None:
        MAX_IMAGE_PIXELS = _positive_int(max_pixels, "max_pixels")
    if max_bytes is not None:
        MAX_IMAGE_BYTES = _positive_int(max_bytes, "max_bytes")


def _positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
        raise ValueError(f"argument '{name}' expected a positive int, got {v!r}")
    return int(v)


def _jpeg_size(d: bytes):
    i = 2
    n = len(d)
    while i + 4 <= n:
        if d[i] != 0xFF:
            return None
        while i < n and d[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        m = d[i]
        i += 1
        if m in (0xD8, 0x01) or 0xD0 <= m <= 0xD7:  # standalone markers
            continue
        if m == 0xD9 or m == 0xDA:  # end of image / start of scan before any frame header
            return None
        if i + 2 > n:
            return None
        seg = struct.unpack(">H", d[i:i + 2])[0]
        if m in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 7 > n:
                return None
            h, w = struct.unpack(">HH", d[i + 3:i + 7])
            return w, h
        i += seg
    return None


def _tiff_size(d: bytes):
    end = "<" if d[:2] == b"II" else ">"
    try:
        if struct.unpack(end + "H", d[2:4])[0] == 43:  # BigTIFF
            off = struct.unpack(end + "Q", d[8:16])[0]
            cnt = struct.unpack(end + "Q", d[off:off + 8])[0]
            base, size, fmt = off + 8, 20, "HHQQ"
        else:
            off = struct.unpack(end + "I", d[4:8])[0]
            cnt = struct.unpack(end + "H", d[off:off + 2])[0]
            base, size, fmt = off + 2, 12, "HHII"
        w = h = None
        for k in range(min(int(cnt), 4096)):
            e = d[base + k * size: base + (k + 1) * size]
            if len(e) < size:
                break
            tag, typ, _, val = struct.unpack(end + fmt, e)
            if typ == 3:  # SHORT: value in the first two bytes of the value field
                val = struct.unpack(end + "H", e[size - (8 if size == 20 else 4):][:2])[0]
            if tag == 256:
                w = val
            elif tag == 257:
                h = val
        return (w, h) if w is not None and h is not None else None
    except struct.error:
        return None


def _pnm_size(d: bytes):
    toks = []
    i = 2
    while len(toks) < 2 and i < min(len(d), 4096):
        c = d[i:i + 1]
        if c == b"#":
            j = d.find(b"\n", i)
            i = len(d) if j < 0 else j + 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(d) and d[j:j + 1].isdigit():
                j += 1
            if j == i:
                return None
            toks.append(int(d[i:j]))
            i = j
    return (toks[0], toks[1]) if len(toks) == 2 else None


def image_header_size(data: bytes):
    """(width, height) from a PNG/JPEG/TIFF/BMP/WebP/PNM header without decoding, or None if unknown."""
    try:
        if data.startswith(_PNG_SIG) and len(data) >= 24 and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if data.startswith(_JPEG_SIG):
            return _jpeg_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _tiff_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            hdr = struct.unpack("<I", data[14:18])[0]
            if hdr == 12:
                w, h = struct.unpack("<HH", data[18:22])
            else:
                w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
            chunk = data[12:16]
            if chunk == b"VP8X":
                w = 1 + int.from_bytes(data[24:27], "little")
                h = 1 + int.from_bytes(data[27:30], "little")
                return w, h
            if chunk == b"VP8L":
                b = int.from_bytes(data[21:25], "little")
                return 1 + (b & 0x3FFF), 1 + ((b >> 14) & 0x3FFF)
            if chunk == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return w & 0x3FFF, h & 0x3FFF
        if len(data) >= 3 and data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
            return _pnm_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


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


def _read_bytes(path: PathLike, max_bytes: Optional[int] = None) -> "tuple[str, bytes]":
    """Bytes of a regular file (FIFOs, devices and directories are refused without blocking)."""
    p = os.fspath(path)
    limit = MAX_IMAGE_BYTES if max_bytes is None else _positive_int(max_bytes, "max_bytes")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {p}") from None
    except OSError as e:
        raise ImageReadError(f"cannot read image file {p}: {e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise ImageReadError(f"expected an image file, got a directory: {p}")
    if not stat.S_ISREG(st.st_mode):
        raise ImageReadError(f"expected a regular image file, got a FIFO, socket or device: {p}")
    try:
        # O_NONBLOCK: a path swapped for a FIFO after the stat cannot block the open
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise ImageReadError(f"cannot read image file {p}: {e}") from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(f"expected a regular image file, got a FIFO, socket or device: {p}")
        if st.st_size > limit:
            raise ImageReadError(f"image file is {st.st_size} bytes, more than the limit of {limit} bytes "
                                 f"(max_bytes / EDGEAD_MAX_IMAGE_BYTES): {p}")
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise ImageReadError(f"cannot read image file {p}: {e}") from e
    if len(data) > limit:
        raise ImageReadError(f"image file is more than the limit of {limit} bytes: {p}")
    if len(data) == 0:
        raise ImageReadError(f"empty image file: {p}")
    return p, data


def read_image(path: PathLike, max_pixels: Optional[int] = None, max_bytes: Optional[int] = None,
               float_range: bool = True) -> np.ndarray:
    """Read an image file as ``HxW`` (grey) or ``HxWx3`` RGB, dtype as stored (uint8/uint16).

    - BGR files are converted to RGB; RGBA drops alpha; grey+alpha keeps the grey channel.
    - Single-channel images are returned 2-D (never ``HxWx1``).
    - Floating-point images (TIFF/EXR) are returned as ``float32``; with ``float_range`` (default)
      they must be finite and within [0, 1], the range every edgead pre-processing expects.
    - Missing, empty, non-image or truncated files, non-regular files, files over ``max_bytes`` and
      images whose header claims more than ``max_pixels`` pixels raise :class:`ImageReadError` naming
      the file (limits default to :data:`MAX_IMAGE_PIXELS` / :data:`MAX_IMAGE_BYTES`).
    """
    p, data = _read_bytes(path, max_bytes)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else _positive_int(max_pixels, "max_pixels")
    wh = image_header_size(data)
    if wh is not None and wh[0] * wh[1] > limit:
        raise ImageReadError(f"image header claims {wh[0]}x{wh[1]} = {wh[0] * wh[1]} pixels, more than the limit "
                             f"of {limit} (max_pixels / EDGEAD_MAX_IMAGE_PIXELS); not decoded: {p}")
    _check_complete(p, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # pragma: no cover - cv2 normally returns None
        raise ImageReadError(f"cannot decode image file {p}: {e}") from e
    except MemoryError:
        raise ImageReadError(f"out of memory decoding image file (lower max_pixels or free memory): {p}") from None
    del buf, data
    if img is None or img.size == 0:
        claim = f"header claims {wh[0]}x{wh[1]}; " if wh is not None else ""
        raise ImageReadError(f"not a readable image ({claim}unknown format or corrupt data): {p}")
    if img.shape[0] * img.shape[1] > limit:  # formats whose header was not parsed
        raise ImageReadError(f"image is {img.shape[1]}x{img.shape[0]} pixels, more than the limit of {limit}: {p}")
    if img.ndim == 3:
        c = img.shape[2]
        if c == 1:
            img = img[:, :, 0]
        elif c == 2:  # grey + alpha
            img = img[:, :, 0]
        elif c == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: no second full-size copy
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
        if float_range and img.size:
            if not np.isfinite(img).all():
                raise ImageReadError(f"floating-point image contains NaN or infinite values: {p}")
            lo, hi = float(img.min()), float(img.max())
            if lo < -1e-6 or hi > 1.0 + 1e-6:
                raise ImageReadError(f"floating-point image must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: {p}")
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
    img = read_image(path, float_range=False)
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
