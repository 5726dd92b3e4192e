"""edgead.ops.msgms_map against the plain-torch reference (docs/msgms.md).

Tolerance: fp32 inputs agree with the reference to atol 2e-5 (observed ~1e-7: only float rounding
order differs); fp16 inputs are compared with the reference fed the same fp16 values (atol 2e-5).
"""
import numpy as np
import pytest

from edgead import ops

torch = pytest.importorskip("torch")
from edgead import ops_reference as R  # noqa: E402

ATOL = 2e-5


def pair(rng, shape, noise=0.1, dtype=np.float32):
    x = rng.random(shape, dtype=np.float32)
    y = np.clip(x + noise * rng.standard_normal(shape).astype(np.float32), 0.0, 1.0)
    return x.astype(dtype), y.astype(dtype)


def ref(x, y, **kw):
    return R.msgms_map_reference(torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.float32)), **kw).numpy()


@pytest.mark.parametrize(
    "shape",
    [(1, 1, 64, 64), (2, 1, 48, 40), (2, 3, 37, 41), (1, 3, 255, 257), (1, 1, 8, 8), (3, 1, 9, 15), (1, 2, 8, 100)],
)
def test_matches_reference(rng, shape):
    x, y = pair(rng, shape)
    got = ops.msgms_map(x, y)
    assert got.shape == (shape[0], shape[2], shape[3]) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref(x, y), atol=ATOL, rtol=0)


@pytest.mark.parametrize("scales,mean_filter,c", [(1, 1, 0.0026), (2, 3, 0.01), (3, 63, 0.0026), (5, 21, 1e-4)])
def test_parameters(rng, scales, mean_filter, c):
    x, y = pair(rng, (2, 1, 33, 50))
    got = ops.msgms_map(x, y, c=c, scales=scales, mean_filter=mean_filter)
    np.testing.assert_allclose(got, ref(x, y, c=c, scales=scales, mean_filter=mean_filter), atol=ATOL, rtol=0)


def test_identical_inputs_give_zero(rng):
    x, _ = pair(rng, (2, 3, 40, 40))
    got = ops.msgms_map(x, x.copy())
    # GMS of identical gradients is exactly (2g^2 + c) / (2g^2 + c) = 1 up to rounding.
    assert np.abs(got).max() < 1e-6


def test_defect_is_detected(rng):
    x = np.full((1, 1, 64, 64), 0.5, np.float32)
    y = x.copy()
    y[0, 0, 20:30, 40:50] = 0.9
    got = ops.msgms_map(x, y)
    score = got.reshape(1, -1).max(1)[0]
    iy, ix = np.unravel_index(np.argmax(got[0]), got[0].shape)
    assert score > 0.05 and 15 <= iy <= 35 and 35 <= ix <= 55
    np.testing.assert_allclose(got, ref(x, y), atol=ATOL, rtol=0)


def test_fp16_inputs(rng):
    x, y = pair(rng, (2, 3, 32, 48), dtype=np.float16)
    got = ops.msgms_map(x, y)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref(x, y), atol=ATOL, rtol=0)


def test_torch_cpu_tensors_and_out(rng):
    x, y = pair(rng, (2, 1, 32, 32))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    got = ops.msgms_map(tx, ty)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (2, 32, 32)
    out = np.full((2, 32, 32), np.nan, np.float32)
    res = ops.msgms_map(x, y, out=out)
    assert res is out
    np.testing.assert_allclose(out, got.numpy(), atol=0, rtol=0)


def test_minimum_size(rng):
    x, y = pair(rng, (1, 1, 8, 9))
    ops.msgms_map(x, y)  # 8 = 2^(4-1) is the smallest allowed for 4 scales
    x, y = pair(rng, (1, 1, 7, 16))
    with pytest.raises(ValueError, match=r"'image'.*>= 8.*\(1, 1, 7, 16\)"):
        ops.msgms_map(x, y)
    ops.msgms_map(x, y, scales=3)


def test_bad_inputs(rng):
    x, y = pair(rng, (1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"'reconstruction' expected shape \(1, 1, 16, 16\).*got \(1, 1, 16, 17\)"):
        ops.msgms_map(x, np.zeros((1, 1, 16, 17), np.float32))
    with pytest.raises(ValueError, match=r"'image' expected 4 dimensions"):
        ops.msgms_map(x[0], y[0])
    with pytest.raises(TypeError, match=r"'image' expected dtype float32 or float16, got float64"):
        ops.msgms_map(x.astype(np.float64), y)
    with pytest.raises(TypeError, match=r"'reconstruction' expected dtype float32.*got float16"):
        ops.msgms_map(x, y.astype(np.float16))
    with pytest.raises(ValueError, match=r"'image' expected a C-contiguous"):
        ops.msgms_map(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), y)
    bad = x.copy()
    bad[0, 0, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"'image' expected finite values"):
        ops.msgms_map(bad, y)
    with pytest.raises(ValueError, match=r"'reconstruction' expected finite values"):
        ops.msgms_map(x, np.where(bad == bad, y, np.inf).astype(np.float32))
    with pytest.raises(ValueError, match=r"'out' expected size 16 along axis 2"):
        ops.msgms_map(x, y, out=np.empty((1, 16, 15), np.float32))
    with pytest.raises(TypeError, match=r"'out' expected dtype float32"):
        ops.msgms_map(x, y, out=np.empty((1, 16, 16), np.float64))
    with pytest.raises(ValueError, match=r"'mean_filter' expected an odd integer"):
        ops.msgms_map(x, y, mean_filter=4)
    with pytest.raises(ValueError, match=r"'scales' expected an integer in \[1, 8\], got 0"):
        ops.msgms_map(x, y, scales=0)
    with pytest.raises(ValueError, match=r"'c' expected a finite value > 0"):
        ops.msgms_map(x, y, c=0.0)
    with pytest.raises(TypeError, match=r"'image' expected a NumPy array"):
        ops.msgms_map("not an array", y)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 1, 256, 256), (2, 3, 37, 41), (1, 1, 8, 8), (2, 1, 255, 257)])
def test_cuda_matches_cpu(torch_cuda, rng, shape):
    x, y = pair(rng, shape)
    cpu = ops.msgms_map(x, y)
    gx, gy = torch_cuda.from_numpy(x).cuda(), torch_cuda.from_numpy(y).cuda()
    got = ops.msgms_map(gx, gy)
    assert got.is_cuda and got.dtype == torch_cuda.float32
    np.testing.assert_allclose(got.cpu().numpy(), cpu, atol=ATOL, rtol=0)
    np.testing.assert_allclose(got.cpu().numpy(), R.msgms_map_reference(gx, gy).cpu().numpy(), atol=ATOL, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("scales,mean_filter", [(1, 1), (3, 63), (5, 9)])
def test_cuda_parameters_and_fp16(torch_cuda, rng, scales, mean_filter):
    x, y = pair(rng, (2, 3, 64, 70), dtype=np.float16)
    cpu = ops.msgms_map(x, y, scales=scales, mean_filter=mean_filter)
    got = ops.msgms_map(torch_cuda.from_numpy(x).cuda(), torch_cuda.from_numpy(y).cuda(), scales=scales,
                        mean_filter=mean_filter)
    np.testing.assert_allclose(got.cpu().numpy(), cpu, atol=ATOL, rtol=0)


@pytest.mark.cuda
def test_cuda_device_mismatch(torch_cuda, rng):
    x, y = pair(rng, (1, 1, 16, 16))
    with pytest.raises(ValueError, match="same device"):
        ops.msgms_map(torch_cuda.from_numpy(x).cuda(), y)
