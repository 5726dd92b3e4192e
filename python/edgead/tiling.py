"""Tiled training and inference on large images, stitched back at native resolution (NumPy only).

Small defects vanish when a large image is resized to a 224 px network input. With tiling, the
network sees `tile`-sized crops of the full-resolution image instead; the per-tile anomaly maps are
stitched into one map of the original image size and the image score is taken from that map.

    t = Tiling(tile=256, stride=192)                    # recipe: tiling: {tile: 256, stride: 192}
    grid = t.grid(image.shape[:2])                      # tile origins for this image
    score, amap = tiled_predict(image, t, infer, chunk=16)
    # infer(list of tile arrays) -> (scores (n,), maps (n, h, w)); amap is (H, W) like the image

Grid (per axis, image length L, tile T, stride S):
    origins 0, S, 2S, ... while o + T <= L, plus a last origin L - T when the image end is not yet
    covered, so every pixel is covered and every tile lies inside the image. Tiles therefore overlap
    by T - S pixels (more at the last tile).
Documented behaviour for awkward input:
    tile larger than the image (L < T): the image is padded to T at its bottom / right edge by
        reflection (reflect-101, repeated for very short images), one tile covers it, and the
        stitched map is cropped back to L. Training tiles are padded the same way.
    stride 0, stride > tile, non-positive or non-integer sizes: ValueError naming the argument.
    images of mixed sizes (one folder, one batch): every image gets its own grid; nothing is resized.
Stitching (overlap blending):
    blend "linear" (default): each tile map is weighted by a separable tent window that rises from
        1/(O+1) at the tile border to 1 at distance >= O from it (O = T - S, the overlap), so seams
        fade smoothly; "mean": uniform weights (plain average of the overlapping tiles). The stitched
        value is sum(w * m) / sum(w) per pixel. Where all covering tiles agree (e.g. each tile map
        is the crop of one global map), the result equals that map exactly, whatever the weights.
Image score from the stitched map: "max" (default; the maximum of the native-resolution map) or
    "tile_max" (the maximum of the models' own per-tile image scores, e.g. PatchCore's reweighted
    score).
Memory: tiles are cut, inferred and stitched `chunk` tiles at a time; the only full-size buffers are
    the float32 accumulators (2 x 4 bytes per pixel: 128 MiB for 4096 x 4096), independent of the
    number of tiles.

Training: :class:`TiledSamples` wraps a list of training images (Samples or paths) as the list of
their tiles (optionally at most `max_tiles_per_image` of them, chosen at random with a seed);
edgead.data.datasets.iter_batches yields its pre-processed tile batches, so every model's fit loop
trains on tiles without knowing it.

This module imports NumPy only (OpenCV lazily, when a model's map size differs from the tile size),
so the torch-free runtime uses it as is.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "Tiling",
    "TileGrid",
    "Stitcher",
    "TiledSamples",
    "tile_origins",
    "blend_window",
    "pad_to",
    "iter_tiles",
    "tiled_predict",
    "resolve_tiling",
    "BLENDS",
    "SCORES",
]

BLENDS = ("linear", "mean")
SCORES = ("max", "tile_max")


def _pair(v: Any, name: str) -> Tuple[int, int]:
    """int or (h, w) of ints -> (h, w); ValueError naming `name` otherwise."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v), int(v))
    try:
        t = tuple(v)
    except TypeError:
        raise ValueError(f"tiling: '{name}' expected an int or (h, w) ints, got {v!r}") from None
    if len(t) != 2 or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in t):
        raise ValueError(f"tiling: '{name}' expected an int or (h, w) ints, got {v!r}")
    return int(t[0]), int(t[1])


def tile_origins(length: int, tile: int, stride: int) -> List[int]:
    """Tile start offsets along one axis of `length` pixels (see the module docstring)."""
    length, tile, stride = int(length), int(tile), int(stride)
    if length < 1:
        raise ValueError(f"tile_origins: 'length' expected >= 1, got {length}")
    if tile < 1:
        raise ValueError(f"tile_origins: 'tile' expected >= 1, got {tile}")
    if not 1 <= stride <= tile:
        raise ValueError(f"tile_origins: 'stride' expected 1 <= stride <= tile ({tile}), got {stride}")
    if length <= tile:
        return [0]
    out = list(range(0, length - tile + 1, stride))
    if out[-1] + tile < length:
        out.append(length - tile)
    return out


def blend_window(tile: Sequence[int], stride: Sequence[int], blend: str = "linear") -> np.ndarray:
    """(th, tw) float32 weights of one tile map in the stitched map (see the module docstring)."""
    if blend not in BLENDS:
        raise ValueError(f"tiling: 'blend' expected one of {BLENDS}, got {blend!r}")
    axes = []
    for t, s in zip(tile, stride):
        o = int(t) - int(s)
        if blend == "mean" or o <= 0:
            axes.append(np.ones(int(t), np.float32))
            continue
        i = np.arange(int(t))
        d = np.minimum(i, int(t) - 1 - i)  # distance to the nearer tile border
        axes.append(np.minimum(1.0, (d + 1.0) / (o + 1.0)).astype(np.float32))
    return np.ascontiguousarray(axes[0][:, None] * axes[1][None, :], dtype=np.float32)


def pad_to(img: np.ndarray, hw: Sequence[int]) -> np.ndarray:
    """Pad an (H, W[, C]) image at its bottom / right to at least `hw` by reflect-101."""
    h, w = img.shape[:2]
    ph, pw = max(0, int(hw[0]) - h), max(0, int(hw[1]) - w)
    if ph == 0 and pw == 0:
        return img
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (img.ndim - 2)
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, pad, mode=mode)


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one image: origins (y, x) in row-major order, all of size `tile`."""

    image_hw: Tuple[int, int]
    padded_hw: Tuple[int, int]
    tile: Tuple[int, int]
    ys: Tuple[int, ...]
    xs: Tuple[int, ...]

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    @property
    def origins(self) -> List[Tuple[int, int]]:
        return [(y, x) for y in self.ys for x in self.xs]


@dataclass(frozen=True)
class Tiling:
    """Tile size / stride (h, w) and how tiles are blended and scored. See the module docstring."""

    tile: Tuple[int, int]
    stride: Tuple[int, int]
    blend: str = "linear"
    score: str = "max"
    max_tiles_per_image: Optional[int] = None  # training only: random subset of each image's tiles

    def __init__(self, tile, stride=None, blend: str = "linear", score: str = "max",
                 max_tiles_per_image: Optional[int] = None):
        t = _pair(tile, "tile")
        s = t if stride is None else _pair(stride, "stride")
        if min(t) < 1:
            raise ValueError(f"tiling: 'tile' expected positive sizes, got {tile!r}")
        for a in range(2):
            if s[a] < 1:
                raise ValueError(f"tiling: 'stride' expected >= 1 (a stride of 0 never advances), got {stride!r}")
            if s[a] > t[a]:
                raise ValueError(
                    f"tiling: 'stride' {stride!r} is larger than 'tile' {tile!r}: pixels between tiles would never "
                    "be scored; use stride <= tile (stride == tile: no overlap)")
        if blend not in BLENDS:
            raise ValueError(f"tiling: 'blend' expected one of {BLENDS}, got {blend!r}")
        if score not in SCORES:
            raise ValueError(f"tiling: 'score' expected one of {SCORES}, got {score!r}")
        if max_tiles_per_image is not None and (isinstance(max_tiles_per_image, bool) or int(max_tiles_per_image) < 1):
            raise ValueError(f"tiling: 'max_tiles_per_image' expected None or an int >= 1, got {max_tiles_per_image!r}")
        object.__setattr__(self, "tile", t)
        object.__setattr__(self, "stride", s)
        object.__setattr__(self, "blend", blend)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "max_tiles_per_image", None if max_tiles_per_image is None else int(max_tiles_per_image))

    # -- (de)serialisation ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: Union[None, "Tiling", Dict[str, Any]]) -> Optional["Tiling"]:
        """None / {} / {"tile": null} -> None (no tiling); a dict {tile, stride, blend, score,
        max_tiles_per_image} -> Tiling. Unknown keys raise ValueError."""
        if cfg is None or isinstance(cfg, Tiling):
            return cfg
        if not isinstance(cfg, dict):
            raise ValueError(f"tiling: expected a mapping {{tile: .., stride: ..}} or None, got {cfg!r}")
        known = {"tile", "stride", "blend", "score", "max_tiles_per_image"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ValueError(f"tiling: unknown keys {unknown}; expected some of {sorted(known)}")
        if cfg.get("tile") in (None, 0):
            return None
        return cls(cfg["tile"], cfg.get("stride"), cfg.get("blend", "linear"), cfg.get("score", "max"),
                   cfg.get("max_tiles_per_image"))

    def to_dict(self) -> Dict[str, Any]:
        d = {"tile": list(self.tile), "stride": list(self.stride), "blend": self.blend, "score": self.score}
        if self.max_tiles_per_image is not None:
            d["max_tiles_per_image"] = self.max_tiles_per_image
        return d

    # -- geometry -------------------------------------------------------------------------------
    def grid(self, image_hw: Sequence[int]) -> TileGrid:
        h, w = int(image_hw[0]), int(image_hw[1])
        if h < 1 or w < 1:
            raise ValueError(f"tiling: image size expected positive, got {tuple(image_hw)}")
        ys = tile_origins(h, self.tile[0], self.stride[0])
        xs = tile_origins(w, self.tile[1], self.stride[1])
        return TileGrid((h, w), (max(h, self.tile[0]), max(w, self.tile[1])), self.tile, tuple(ys), tuple(xs))

    def window(self) -> np.ndarray:
        return blend_window(self.tile, self.stride, self.blend)


def resolve_tiling(meta_or_cfg: Any, tile=None, stride=None) -> Optional[Tiling]:
    """The Tiling to use: an explicit `tile` (and `stride`, default: the tile, i.e. no overlap,
    unless the stored tiling has one) overrides what the artifact / recipe stores (a dict with a
    "tiling" entry, or the tiling dict itself). tile=0 switches tiling off."""
    stored = meta_or_cfg.get("tiling") if isinstance(meta_or_cfg, dict) and "tile" not in meta_or_cfg else meta_or_cfg
    base = Tiling.from_config(stored) if stored is not None else None
    if tile is None and stride is None:
        return base
    if tile is not None and _pair(tile, "tile") == (0, 0):
        return None
    if tile is None:
        if base is None:
            raise ValueError("tiling: 'stride' given without 'tile' and the model stores no tiling")
        tile = base.tile
    kw = {} if base is None else {"blend": base.blend, "score": base.score}
    return Tiling(tile, stride, **kw)


# ------------------------------------------------------------------------------------------------
# inference: cut, run, stitch
# ------------------------------------------------------------------------------------------------
def iter_tiles(img: np.ndarray, grid: TileGrid, chunk: int) -> Iterator[Tuple[int, List[np.ndarray]]]:
    """Yield (index of the first tile, list of <= chunk tile arrays (th, tw[, C])) in row-major order."""
    if chunk < 1:
        raise ValueError(f"iter_tiles: 'chunk' expected >= 1, got {chunk}")
    a = pad_to(np.asarray(img), grid.padded_hw)
    th, tw = grid.tile
    org = grid.origins
    for i in range(0, len(org), chunk):
        yield i, [a[y : y + th, x : x + tw] for y, x in org[i : i + chunk]]


class Stitcher:
    """Accumulates weighted tile maps of one image; result() -> (H, W) float32 at the image size."""

    def __init__(self, grid: TileGrid, window: np.ndarray):
        if tuple(window.shape) != tuple(grid.tile):
            raise ValueError(f"Stitcher: window shape {window.shape} does not match the tile {grid.tile}")
        self.grid = grid
        self.window = np.asarray(window, np.float32)
        self._acc = np.zeros(grid.padded_hw, np.float32)
        self._wsum = np.zeros(grid.padded_hw, np.float32)
        self._seen = 0

    def add(self, first: int, maps: np.ndarray) -> None:
        """Add the maps (n, th, tw) of tiles first .. first+n-1 (row-major grid order)."""
        maps = np.asarray(maps, np.float32)
        th, tw = self.grid.tile
        if maps.ndim != 3 or maps.shape[1:] != (th, tw):
            raise ValueError(f"Stitcher.add: 'maps' expected (n, {th}, {tw}), got {maps.shape}")
        org = self.grid.origins
        if first < 0 or first + maps.shape[0] > len(org):
            raise ValueError(f"Stitcher.add: tiles {first}..{first + maps.shape[0] - 1} outside the grid of {len(org)}")
        w = self.window
        for (y, x), m in zip(org[first : first + maps.shape[0]], maps):
            self._acc[y : y + th, x : x + tw] += w * m
            self._wsum[y : y + th, x : x + tw] += w
        self._seen += maps.shape[0]

    def result(self) -> np.ndarray:
        if self._seen != len(self.grid):
            raise RuntimeError(f"Stitcher.result: {self._seen} of {len(self.grid)} tiles were added")
        h, w = self.grid.image_hw
        out = self._acc[:h, :w]
        np.divide(out, self._wsum[:h, :w], out=out)
        return out


def _fit_maps(maps: np.ndarray, tile: Tuple[int, int]) -> np.ndarray:
    """Model maps (n, h, w) -> (n, th, tw): resized with bilinear interpolation when the model's
    input size differs from the tile (the tile was resized on the way in)."""
    maps = np.asarray(maps, np.float32)
    if maps.shape[1:] == tuple(tile):
        return maps
    import cv2

    return np.stack([cv2.resize(m, (tile[1], tile[0]), interpolation=cv2.INTER_LINEAR) for m in maps])


InferFn = Callable[[List[np.ndarray]], Tuple[np.ndarray, np.ndarray]]


def tiled_predict(img: np.ndarray, tiling: Tiling, infer: InferFn, chunk: int = 16) -> Tuple[float, np.ndarray]:
    """Score one image tile by tile: infer(list of tiles) -> (scores (n,), maps (n, h, w)); tiles of a
    chunk are one batch for the backend. -> (image score, (H, W) float32 stitched anomaly map)."""
    img = np.asarray(img)
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"tiled_predict: 'img' expected an (H, W) or (H, W, C) image, got shape {img.shape}")
    grid = tiling.grid(img.shape[:2])
    st = Stitcher(grid, tiling.window())
    tile_best = -np.inf
    for first, tiles in iter_tiles(img, grid, int(chunk)):
        s, m = infer(tiles)
        s = np.asarray(s, np.float32).reshape(-1)
        if s.shape[0] != len(tiles):
            raise RuntimeError(f"tiled_predict: infer returned {s.shape[0]} scores for {len(tiles)} tiles")
        st.add(first, _fit_maps(m, grid.tile))
        tile_best = max(tile_best, float(s.max()))
    amap = st.result()
    score = float(amap.max()) if tiling.score == "max" else tile_best
    return score, amap


# ------------------------------------------------------------------------------------------------
# training: a list of images seen as the list of their tiles
# ------------------------------------------------------------------------------------------------
class TiledSamples:
    """Training images (Samples or paths) as the sequence of their tiles.

    len() is the number of tiles (image sizes are read once, at construction). iter_batches(
    preprocessing, batch_size) yields (float32 (n, C, h, w), [(item, (y, x)), ...]) like
    edgead.data.datasets.iter_batches, which delegates to it; images are decoded once per batch
    of tiles, so memory holds one image plus one batch. With `tiling.max_tiles_per_image`, each
    image contributes that many of its tiles, chosen at random (seeded).
    """

    def __init__(self, items: Sequence[Any], tiling: Tiling, seed: int = 0):
        from edgead.data.io import read_image

        self.tiling = tiling
        self.items = list(items)
        self.index: List[Tuple[int, int, int]] = []  # (item, y, x)
        rng = np.random.default_rng(int(seed))
        self.sizes: List[Tuple[int, int]] = []
        for i, it in enumerate(self.items):
            path = getattr(it, "path", it)
            hw = tuple(read_image(os.fspath(path)).shape[:2])
            self.sizes.append(hw)
            org = tiling.grid(hw).origins
            k = tiling.max_tiles_per_image
            if k is not None and k < len(org):
                org = [org[j] for j in sorted(rng.choice(len(org), k, replace=False))]
            self.index.extend((i, y, x) for y, x in org)

    def __len__(self) -> int:
        return len(self.index)

    def iter_batches(self, preprocessing, batch_size: int = 32, progress: bool = True, desc: str = "tiles"):
        from tqdm.auto import tqdm

        from edgead.data.io import read_image

        th, tw = self.tiling.tile
        cur_i, cur = -1, None
        batch, meta = [], []
        with tqdm(total=len(self.index), desc=desc, unit="tile", disable=not progress) as bar:
            for i, y, x in self.index:
                if i != cur_i:
                    it = self.items[i]
                    cur = pad_to(read_image(os.fspath(getattr(it, "path", it))), self.tiling.grid(self.sizes[i]).padded_hw)
                    cur_i = i
                batch.append(preprocessing(cur[y : y + th, x : x + tw]))
                meta.append((self.items[i], (y, x)))
                if len(batch) == batch_size:
                    bar.update(len(batch))
                    yield np.stack(batch), meta
                    batch, meta = [], []
            if batch:
                bar.update(len(batch))
                yield np.stack(batch), meta
