"""edgead.ops.pro_curve / aupro (csrc/pro) against two independent references:
- edgead.ops_reference.pro_curve (scipy.ndimage.label 3x3 + NumPy cumulative sums),
- a brute-force definition check below (own BFS flood-fill labeller, one threshold at a time).
"""
from collections import deque

import numpy as np
import pytest

import edgead
from edgead import ops
from edgead import ops_reference as R

TOL = 1e-9


# ----------------------------------------------------------------------------------------------
# brute force: the definition, evaluated threshold by threshold (tiny inputs only)
# ----------------------------------------------------------------------------------------------


def bfs_regions(mask2d):
    """8-connected components by breadth-first flood fill: list of (ys, xs) index arrays."""
    h, w = mask2d.shape
    seen = np.zeros_like(mask2d, dtype=bool)
    regions = []
    for y0 in range(h):
        for x0 in range(w):
            if not mask2d[y0, x0] or seen[y0, x0]:
                continue
            q = deque([(y0, x0)])
            seen[y0, x0] = True
            pix = []
            while q:
                y, x = q.popleft()
                pix.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if 0 <= yy < h and 0 <= xx < w and mask2d[yy, xx] and not seen[yy, xx]:
                            seen[yy, xx] = True
                            q.append((yy, xx))
            ys, xs = zip(*pix)
            regions.append((np.array(ys), np.array(xs)))
    return regions


def brute_force(maps, masks, fpr_limit):
    maps = np.asarray(maps, np.float64)
    masks = np.asarray(masks).astype(bool)
    regions = [(i, r) for i in range(len(maps)) for r in bfs_regions(masks[i])]
    normal = maps[~masks]
    fpr, pro, thr = [0.0], [0.0], [np.inf]
    for t in np.unique(maps)[::-1]:
        fpr.append(np.count_nonzero(normal >= t) / normal.size)
        pro.append(np.mean([np.count_nonzero(maps[i][ys, xs] >= t) / ys.size for i, (ys, xs) in regions]))
        thr.append(t)
    fpr, pro = np.array(fpr), np.array(pro)
    # area: integrate the piecewise-linear curve up to fpr_limit
    area = 0.0
    for k in range(1, fpr.size):
        f0, f1, p0, p1 = fpr[k - 1], fpr[k], pro[k - 1], pro[k]
        if f0 >= fpr_limit:
            break
        if f1 <= fpr_limit:
            area += (f1 - f0) * (p0 + p1) / 2
        else:
            pl = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0)
            area += (fpr_limit - f0) * (p0 + pl) / 2
    return fpr, pro, np.array(thr), area / fpr_limit, len(regions)


def check(maps, masks, fpr_limit=0.3, brute=None):
    c = ops.pro_curve(maps, masks, fpr_limit)
    assert c.fpr.dtype == c.pro.dtype == c.thresholds.dtype == np.float64
    f, p, t, a = R.pro_curve(maps, masks, fpr_limit)
    assert c.fpr.shape == f.shape
    np.testing.assert_allclose(c.fpr, f, rtol=0, atol=TOL)
    np.testing.assert_allclose(c.pro, p, rtol=0, atol=TOL)
    np.testing.assert_array_equal(c.thresholds, t)
    assert abs(c.aupro - a) <= TOL
    assert abs(ops.aupro(maps, masks, fpr_limit) - c.aupro) <= 1e-12
    if brute if brute is not None else np.asarray(maps).size <= 4000:
        bf, bp, bt, ba, _ = brute_force(maps, masks, fpr_limit)
        np.testing.assert_allclose(c.fpr, bf, rtol=0, atol=TOL)
        np.testing.assert_allclose(c.pro, bp, rtol=0, atol=TOL)
        np.testing.assert_array_equal(c.thresholds, bt)
        assert abs(c.aupro - ba) <= TOL
    return c


def blob_masks(rng, n, h, w, frac=0.1):
    """Realistic-ish defect blobs: thresholded smoothed noise."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.standard_normal((n, h, w)), sigma=(0, 2, 2))
    thr = np.quantile(noise, 1 - frac)
    return (noise > thr).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# hand-computed example
# ----------------------------------------------------------------------------------------------


def test_hand_computed_example():
    masks = np.array([[[1, 1, 0], [0, 0, 0]]], np.uint8)  # one region of 2 pixels, 4 normal pixels
    maps = np.array([[[0.9, 0.5, 0.7], [0.1, 0.5, 0.3]]], np.float64)
    c = ops.pro_curve(maps, masks, 0.3)
    np.testing.assert_allclose(c.fpr, [0, 0, 0.25, 0.5, 0.75, 1.0], atol=1e-15)
    np.testing.assert_allclose(c.pro, [0, 0.5, 0.5, 1.0, 1.0, 1.0], atol=1e-15)
    np.testing.assert_array_equal(c.thresholds, [np.inf, 0.9, 0.7, 0.5, 0.3, 0.1])
    # 0.25 * 0.5 + (0.3 - 0.25) * (0.5 + 0.6) / 2, PRO(0.3) = 0.6; divided by 0.3
    assert c.aupro == pytest.approx((0.125 + 0.0275) / 0.3, abs=1e-15)
    assert ops.pro_curve(maps, masks, 1.0).aupro == pytest.approx(0.8125, abs=1e-15)
    assert ops.aupro(maps, masks, 0.25) == pytest.approx(0.125 / 0.25, abs=1e-15)


# ----------------------------------------------------------------------------------------------
# against the references
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 16, 16), (4, 13, 29), (2, 40, 7)])
def test_random_maps(rng, dtype, shape):
    masks = (rng.random(shape) < 0.2).astype(np.uint8)
    maps = rng.standard_normal(shape).astype(dtype)
    check(maps, masks)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blobs_larger(rng, dtype):
    masks = blob_masks(rng, 6, 64, 96)
    maps = (masks + 0.8 * rng.standard_normal(masks.shape)).astype(dtype)
    check(maps, masks, 0.3)
    check(maps, masks, 1.0)
    check(maps, masks, 0.01)


@pytest.mark.parametrize("levels", [2, 5, 17])
def test_heavy_ties(rng, levels):
    masks = blob_masks(rng, 4, 24, 31, frac=0.2)
    maps = np.floor(rng.random(masks.shape) * levels + masks * 1.5) / levels
    c = check(maps.astype(np.float32), masks)
    assert c.fpr.size == np.unique(maps).size + 1
    check(maps.astype(np.float64), masks.astype(bool))


def test_all_equal_scores(rng):
    masks = blob_masks(rng, 2, 10, 10)
    maps = np.full(masks.shape, 0.25, np.float32)
    c = check(maps, masks)
    np.testing.assert_array_equal(c.fpr, [0, 1])
    np.testing.assert_array_equal(c.pro, [0, 1])
    assert c.aupro == pytest.approx(0.15, abs=1e-15)  # PRO = FPR on the single segment: mean 0.3 / 2


def test_negative_zero_ties_with_zero():
    masks = np.array([[[1, 0, 0, 0]]], np.uint8)
    maps = np.array([[[0.0, -0.0, 1.0, -1.0]]], np.float32)
    c = check(maps, masks)
    assert c.thresholds.tolist() == [np.inf, 1.0, 0.0, -1.0]


def test_good_images_and_empty_masks(rng):
    masks = blob_masks(rng, 8, 20, 20)
    masks[[0, 3, 4, 7]] = 0  # defect-free images still count in the FPR
    maps = (masks + rng.standard_normal(masks.shape)).astype(np.float32)
    c = check(maps, masks)
    # the normal pixels of the good images change the result
    c2 = ops.pro_curve(maps[[1, 2, 5, 6]], masks[[1, 2, 5, 6]])
    assert abs(c.aupro - c2.aupro) > 1e-6


def test_single_pixel_regions(rng):
    masks = np.zeros((3, 12, 12), np.uint8)
    masks[0, 0, 0] = masks[0, 11, 11] = masks[1, 5, 7] = masks[2, 0, 11] = 1
    maps = rng.random(masks.shape)
    check(maps, masks)


def spiral(h, w):
    """A one-pixel-wide rectangular spiral path with one-pixel gaps between its turns (one region)."""
    m = np.zeros((h, w), np.uint8)
    y = x = 0
    dy, dx = 0, 1
    m[0, 0] = 1
    failed_turns = 0
    while failed_turns < 2:
        ny, nx = y + dy, x + dx
        ay, ax = ny + dy, nx + dx
        can = 0 <= ny < h and 0 <= nx < w and not m[ny, nx] and not (0 <= ay < h and 0 <= ax < w and m[ay, ax])
        if can:
            y, x = ny, nx
            m[y, x] = 1
            failed_turns = 0
        else:
            dy, dx = dx, -dy  # turn right
            failed_turns += 1
    return m


def test_snake_regions(rng):
    # zigzag: a single region a naive left-to-right / top-to-bottom propagation splits
    zig = np.zeros((15, 21), np.uint8)
    for r in range(0, 15, 2):
        zig[r, :] = 1
        zig[r + 1 if r + 1 < 15 else r, 0 if (r // 2) % 2 else 20] = 1
    sp = spiral(21, 21)
    masks = np.zeros((2, 21, 21), np.uint8)
    masks[0, :15, :] = zig
    masks[1] = sp
    from scipy import ndimage

    assert ndimage.label(masks[0], np.ones((3, 3)))[1] == 1
    assert len(bfs_regions(masks[0][None][0])) == 1
    assert len(bfs_regions(masks[1])) == 1 and masks[1].sum() > 150
    maps = rng.random(masks.shape)
    c = check(maps, masks, 0.3, brute=True)
    c1 = check(maps, masks, 1.0, brute=True)
    assert c.aupro != c1.aupro


def test_diagonal_connectivity():
    # 8-connectivity: both diagonals are single regions (4-connectivity would give 3 + 3 regions)
    masks = np.zeros((1, 7, 9), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 2, 2] = 1  # main diagonal (NW links)
    masks[0, 0, 8] = masks[0, 1, 7] = masks[0, 2, 6] = 1  # anti-diagonal (NE links)
    masks[0, 6, 4] = 1  # a separate single pixel
    maps = np.zeros(masks.shape, np.float64)
    maps[0, 0, 0] = 3.0
    maps[0, 0, 8] = 2.0
    c = check(maps, masks, 1.0, brute=True)
    # 3 regions: after t = 3: (1/3 + 0 + 0) / 3; with 7 single-pixel 4-regions it would be 1/7
    assert c.pro[1] == pytest.approx(1 / 9, abs=1e-15)
    assert c.pro[2] == pytest.approx(2 / 9, abs=1e-15)
    _, _, _, _, n_regions = brute_force(maps, masks, 1.0)
    assert n_regions == 3


def test_regions_do_not_span_images():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 3, :] = 1  # bottom row of image 0
    masks[1, 0, :] = 1  # top row of image 1: adjacent in memory, separate regions
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 3, :] = 1.0
    c = check(maps, masks, 1.0)
    assert c.pro[1] == pytest.approx(0.5, abs=1e-15)


def test_fpr_limit_edges(rng):
    masks = blob_masks(rng, 3, 20, 20)
    maps = (masks + rng.standard_normal(masks.shape)).astype(np.float32)
    for limit in (1.0, 0.3, 0.05, 1e-3, 1e-6):
        check(maps, masks, limit)
    # a perfect detector: AUPRO 1 for every limit
    perfect = masks.astype(np.float64) + 0.01 * rng.random(masks.shape)
    assert ops.aupro(perfect, masks, 0.3) == pytest.approx(1.0, abs=1e-12)
    # worst detector: defect pixels scored lowest
    worst = -masks.astype(np.float64) + 0.01 * rng.random(masks.shape)
    assert ops.aupro(worst, masks, 0.3) == 0.0


def test_deterministic_and_input_kinds(rng):
    masks = blob_masks(rng, 4, 30, 30)
    maps = (masks + rng.standard_normal(masks.shape)).astype(np.float32)
    a = ops.pro_curve(maps, masks)
    b = ops.pro_curve(maps, masks)
    np.testing.assert_array_equal(a.pro, b.pro)
    assert a.aupro == b.aupro
    # non-contiguous views and bool masks give the same result
    big = np.zeros((4, 30, 60), np.float32)
    big[:, :, ::2] = maps
    c = ops.pro_curve(big[:, :, ::2], masks.astype(bool))
    assert c.aupro == a.aupro
    torch = pytest.importorskip("torch")
    d = ops.pro_curve(torch.from_numpy(maps), torch.from_numpy(masks))
    assert d.aupro == a.aupro


# ----------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def good(rng):
    masks = blob_masks(rng, 2, 8, 8)
    return rng.random(masks.shape).astype(np.float32), masks


def test_rejects_non_binary_masks(good):
    maps, masks = good
    bad = masks * 255
    with pytest.raises(ValueError, match=r"'masks'.*255"):
        ops.pro_curve(maps, bad)
    bad = masks.copy()
    bad[1, 2, 3] = 2
    with pytest.raises(ValueError, match=r"'masks'.*got 2 at index \(1, 2, 3\)"):
        ops.aupro(maps, bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite(good, bad):
    maps, masks = good
    maps = maps.copy()
    maps[1, 4, 5] = bad
    with pytest.raises(ValueError, match=r"'anomaly_maps'.*\(1, 4, 5\)"):
        ops.pro_curve(maps, masks)
    with pytest.raises(ValueError, match="anomaly_maps"):
        ops.aupro(maps.astype(np.float64), masks)


def test_rejects_bad_dtypes_and_shapes(good):
    maps, masks = good
    with pytest.raises(TypeError, match="masks"):
        ops.pro_curve(maps, masks.astype(np.int64))
    with pytest.raises(TypeError, match="masks"):
        ops.pro_curve(maps, masks.astype(np.float32))
    with pytest.raises(TypeError, match="anomaly_maps"):
        ops.pro_curve(maps.astype(np.float16), masks)
    with pytest.raises(TypeError, match="anomaly_maps"):
        ops.pro_curve("maps", masks)
    with pytest.raises(ValueError, match=r"'anomaly_maps' and 'masks'.*same shape"):
        ops.pro_curve(maps, masks[:, :, :7])
    with pytest.raises(ValueError, match="anomaly_maps"):
        ops.pro_curve(maps[0], masks[0])  # (H, W): ops wants (N, H, W)


def test_rejects_empty(good):
    maps, masks = good
    with pytest.raises(ValueError, match="anomaly_maps"):
        ops.pro_curve([], [])
    with pytest.raises(ValueError, match="anomaly_maps"):
        ops.pro_curve(maps[:0], masks[:0])


def test_rejects_undefined(good):
    maps, masks = good
    with pytest.raises(ValueError, match="no defect pixels"):
        ops.pro_curve(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="no defect-free pixels"):
        ops.aupro(maps, np.ones_like(masks))


@pytest.mark.parametrize("limit", [0.0, -0.1, 1.5, float("nan")])
def test_rejects_bad_fpr_limit(good, limit):
    maps, masks = good
    with pytest.raises(ValueError, match="fpr_limit"):
        ops.pro_curve(maps, masks, limit)


# ----------------------------------------------------------------------------------------------
# CUDA: same results as the CPU
# ----------------------------------------------------------------------------------------------


def _cuda_cases(rng):
    masks = blob_masks(rng, 5, 37, 53)
    masks[2] = 0
    cont = (masks + rng.standard_normal(masks.shape)).astype(np.float32)
    ties = (np.floor(rng.random(masks.shape) * 7 + masks * 2) / 7).astype(np.float32)
    diag = np.zeros((1, 7, 9), np.uint8)
    diag[0, [0, 1, 2], [0, 1, 2]] = 1
    diag[0, [0, 1, 2], [8, 7, 6]] = 1
    diag[0, 6, 4] = 1
    return [(cont, masks), (cont.astype(np.float64), masks.astype(bool)), (ties, masks),
            (rng.random(diag.shape).astype(np.float32), diag),
            ((rng.random((2, 21, 21)) + spiral(21, 21)).astype(np.float32), np.stack([spiral(21, 21)] * 2))]


@pytest.mark.cuda
def test_cuda_matches_cpu(rng, torch_cuda):
    torch = torch_cuda
    for maps, masks in _cuda_cases(rng):
        for limit in (0.3, 1.0, 0.01):
            cpu = ops.pro_curve(maps, masks, limit)
            gpu = ops.pro_curve(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda(), limit)
            assert isinstance(gpu.fpr, np.ndarray)
            np.testing.assert_allclose(gpu.fpr, cpu.fpr, rtol=0, atol=TOL)
            np.testing.assert_allclose(gpu.pro, cpu.pro, rtol=0, atol=TOL)
            np.testing.assert_array_equal(gpu.thresholds, cpu.thresholds)
            assert abs(gpu.aupro - cpu.aupro) <= TOL
            assert abs(ops.aupro(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda(), limit) - cpu.aupro) <= TOL


@pytest.mark.cuda
def test_cuda_rejects_bad_inputs(rng, torch_cuda):
    torch = torch_cuda
    maps, masks = _cuda_cases(rng)[0]
    m, g = torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda()
    bad = m.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"'anomaly_maps'.*\(1, 2, 3\)"):
        ops.pro_curve(bad, g)
    with pytest.raises(ValueError, match=r"'masks'.*255"):
        ops.pro_curve(m, g * 255)
    with pytest.raises(ValueError, match="no defect pixels"):
        ops.pro_curve(m, torch.zeros_like(g))
    with pytest.raises(ValueError, match="no defect-free pixels"):
        ops.pro_curve(m, torch.ones_like(g))
    with pytest.raises(ValueError, match="same device"):
        ops.pro_curve(m, masks)


def test_build_lists_pro():
    assert "pro" in edgead.build_info()["ops"]
