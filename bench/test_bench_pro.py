"""AUPRO on 135 maps of 256x256 (the texture-ad brick test set): edgead vs the NumPy reference vs
anomalib (when importable), side by side in one benchmark group; all must agree to 1e-9.

    python3 -m pytest bench/test_bench_pro.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

Masks: ground_truth/<defect>/NNN_mask.png (224x224, 0/255) resized to 256x256 (nearest); good
images get empty masks (without ../shared: 135 generated masks, 75 with 1-3 ellipses). Maps:
Gaussian-blurred mask + Gaussian noise (fixed seed), float32. Every row checks its value against the
NumPy reference (1e-9) before it is timed; the CUDA rows check the GPU result against the NumPy
reference on the 135 maps and against the CPU kernel on the 10^8-pixel set first.
The CUDA case (skipped without a GPU) scores 10^8 pixels (1526 tiled copies of 256x256).
"""
import glob
import os

import numpy as np
import pytest

import edgead
from edgead import metrics, ops
from edgead import ops_reference as R

cv2 = pytest.importorskip("cv2")

SIZE = 256
FPR_LIMIT = 0.3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BRICK = os.path.join(os.path.dirname(REPO), "shared", "data", "texture-ad", "brick")
needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")


def brick_maps_and_masks(size: int = SIZE, seed: int = 0):
    """(maps float32 (N, size, size), masks uint8 {0,1} (N, size, size)) for the brick test set."""
    rng = np.random.default_rng(seed)
    if not os.path.isdir(BRICK):  # a fresh clone without ../shared: 135 generated masks of the same kind
        masks = np.zeros((135, size, size), np.uint8)
        for m in masks[60:]:  # 60 good images, 75 with 1-3 elliptic defects
            for _ in range(int(rng.integers(1, 4))):
                c = tuple(int(v) for v in rng.integers(16, size - 16, 2))
                axes = tuple(int(v) for v in rng.integers(3, 24, 2))
                cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        maps = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), 4.0) for m in masks])
        maps += 0.25 * rng.standard_normal(maps.shape).astype(np.float32)
        return np.ascontiguousarray(maps, dtype=np.float32), masks
    masks = []
    for defect in sorted(os.listdir(os.path.join(BRICK, "test"))):
        for img_path in sorted(glob.glob(os.path.join(BRICK, "test", defect, "*.png"))):
            if defect == "good":
                m = np.zeros((size, size), np.uint8)
            else:
                stem = os.path.splitext(os.path.basename(img_path))[0]
                gt = cv2.imread(os.path.join(BRICK, "ground_truth", defect, f"{stem}_mask.png"), cv2.IMREAD_GRAYSCALE)
                if gt is None:
                    raise FileNotFoundError(f"mask for {img_path}")
                m = (cv2.resize(gt, (size, size), interpolation=cv2.INTER_NEAREST) > 0).astype(np.uint8)
            masks.append(m)
    masks = np.stack(masks)
    maps = np.stack([cv2.GaussianBlur(m.astype(np.float32), (0, 0), 4.0) for m in masks])
    maps += 0.25 * rng.standard_normal(maps.shape).astype(np.float32)
    return np.ascontiguousarray(maps, dtype=np.float32), masks


@pytest.fixture(scope="module")
def brick():
    return brick_maps_and_masks()


@pytest.fixture(scope="module")
def expected(brick):
    maps, masks = brick
    return R.pro_curve(maps, masks, FPR_LIMIT)[3]


def _anomalib_aupro(maps, masks):
    torch = pytest.importorskip("torch")
    try:
        from anomalib.metrics import AUPRO
    except Exception as e:  # noqa: BLE001 - any import problem means "not available"
        pytest.skip(f"anomalib AUPRO not importable: {e}")
    metric = AUPRO(fpr_limit=FPR_LIMIT)
    tm, tg = torch.from_numpy(maps), torch.from_numpy(masks.astype(np.int64))

    def run():
        metric.reset()
        metric.update(tm, tg)
        return float(metric.compute())

    return run


@pytest.mark.parametrize("impl", ["edgead", "edgead_curve", "numpy_reference", "anomalib"])
def test_aupro_cpu(benchmark, brick, expected, impl):
    benchmark.group = f"aupro cpu {len(brick[0])}x{SIZE}x{SIZE}"
    maps, masks = brick
    if impl == "edgead":
        fn = lambda: metrics.aupro(maps, masks, FPR_LIMIT)  # noqa: E731
    elif impl == "edgead_curve":
        fn = lambda: ops.pro_curve(maps, masks, FPR_LIMIT).aupro  # noqa: E731
    elif impl == "numpy_reference":
        fn = lambda: R.pro_curve(maps, masks, FPR_LIMIT)[3]  # noqa: E731
    else:
        fn = _anomalib_aupro(maps, masks)
    first = fn()
    assert abs(first - expected) <= 1e-9, (impl, first, expected)  # checked before timing
    if impl.startswith("edgead"):
        value = benchmark(fn)
    else:
        value = benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["aupro"] = value
    assert abs(value - expected) <= 1e-9, (impl, value, expected)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("impl", ["edgead_cuda", "edgead_cuda_curve", "numpy_reference"])
def test_aupro_cuda_1e8(benchmark, brick, expected, impl):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    maps, masks = brick
    small = ops.aupro(torch.from_numpy(maps).cuda(), torch.from_numpy(masks).cuda(), FPR_LIMIT)
    assert abs(small - expected) <= 1e-9, (small, expected)  # GPU vs the NumPy AUPRO reference
    reps = -(-10**8 // maps[0].size // len(maps))  # ceil: >= 10^8 pixels
    rng = np.random.default_rng(1)
    big_maps = np.concatenate([maps + 0.01 * rng.standard_normal(maps.shape).astype(np.float32) for _ in range(reps)])
    big_masks = np.concatenate([masks] * reps)
    benchmark.group = f"aupro cuda {big_maps.size / 1e6:.0f}M pixels"
    dm, dg = torch.from_numpy(big_maps).cuda(), torch.from_numpy(big_masks).cuda()
    cpu = ops.aupro(big_maps, big_masks, FPR_LIMIT)
    if impl == "numpy_reference":  # the baseline row: NumPy/SciPy AUPRO on the host, one round
        value = benchmark.pedantic(lambda: R.pro_curve(big_maps, big_masks, FPR_LIMIT)[3], rounds=1, iterations=1)
        assert abs(value - cpu) <= 1e-9, (value, cpu)
        benchmark.extra_info["aupro"] = value
        return
    first = ops.aupro(dm, dg, FPR_LIMIT) if impl == "edgead_cuda" else ops.pro_curve(dm, dg, FPR_LIMIT).aupro
    assert abs(first - cpu) <= 1e-9, (first, cpu)  # checked before timing
    if impl == "edgead_cuda":
        value = benchmark.pedantic(lambda: ops.aupro(dm, dg, FPR_LIMIT), rounds=5, iterations=1, warmup_rounds=1)
    else:
        value = benchmark.pedantic(lambda: ops.pro_curve(dm, dg, FPR_LIMIT).aupro, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info["aupro"] = value
    assert abs(value - cpu) <= 1e-9, (value, cpu)
