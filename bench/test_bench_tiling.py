"""Tiling overhead: cutting, blending and stitching a 2048 x 2048 image (edgead.tiling.tiled_predict with a
network stand-in that returns each tile as its own map) vs the baseline that only cuts the same tiles
(iter_tiles + the same stand-in), side by side. The stitched map must equal the image before timing.

    python3 -m pytest bench/test_bench_tiling.py --benchmark-only --benchmark-group-by=group -q

Tile 256, stride 192: 121 tiles, chunks of 16. The difference of the two is what tiling adds to a
backend's time per image (the network itself is not part of it).
"""
import numpy as np
import pytest

from edgead.tiling import Tiling, iter_tiles, tiled_predict

SIZE, TILE, STRIDE, CHUNK = 2048, 256, 192, 16


def _infer(tiles):
    m = np.stack([np.asarray(t, np.float32) for t in tiles])
    return m.reshape(len(tiles), -1).max(axis=1), m


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((SIZE, SIZE)).astype(np.float32)


@pytest.mark.parametrize("impl", ["tiled_predict", "cut_only"])
def test_tiling_overhead(benchmark, image, impl):
    benchmark.group = f"tiling {SIZE}x{SIZE} tile {TILE} stride {STRIDE}"
    t = Tiling(TILE, STRIDE)
    if impl == "tiled_predict":
        score, amap = tiled_predict(image, t, _infer, CHUNK)
        np.testing.assert_allclose(amap, image, rtol=1e-5, atol=1e-6)  # answer first
        benchmark.pedantic(lambda: tiled_predict(image, t, _infer, CHUNK), rounds=3, iterations=1)
    else:
        grid = t.grid(image.shape)
        assert sum(len(c) for _, c in iter_tiles(image, grid, CHUNK)) == len(grid)

        def cut():
            for _, tiles in iter_tiles(image, grid, CHUNK):
                _infer(tiles)

        benchmark.pedantic(cut, rounds=3, iterations=1)
