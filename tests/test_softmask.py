"""edgead.ops.softmask_apply against the plain-torch reference (FADeR soft mask).

fp32 results match the reference exactly up to one rounding of the division (atol 1e-6 relative to
|features| <= ~5); fp16 features: both round the same float32 product once, so they agree to 1 ulp.
"""
import numpy as np
import pytest

from edgead import ops

torch = pytest.importorskip("torch")
from edgead import ops_reference as R  # noqa: E402

UNET_SKIPS = [(1, 32, 128, 128), (1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16)]


def ref(p, f):
    return R.softmask_apply_reference(torch.from_numpy(p), torch.from_numpy(f)).numpy()


@pytest.mark.parametrize(
    "pshape,fshape",
    [((2, 16, 16), (2, 8, 64, 64)), ((1, 16, 16), (1, 4, 128, 128)), ((2, 16, 16), (2, 3, 50, 37)),
     ((3, 7, 5), (3, 2, 13, 29)), ((1, 16, 16), (1, 5, 8, 8)), ((1, 1, 1), (1, 2, 3, 4)), ((2, 32, 32), (2, 16, 16, 16))],
)
def test_matches_reference(rng, pshape, fshape):
    p = rng.random(pshape, dtype=np.float32)
    f = rng.standard_normal(fshape).astype(np.float32)
    got = ops.softmask_apply(p, f)
    assert got.shape == f.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref(p, f), atol=1e-6, rtol=0)


def test_mask_values(rng):
    p = np.array([[[0.0, 2.0], [1.0, 4.0]]], np.float32)
    f = np.ones((1, 2, 4, 4), np.float32)
    got = ops.softmask_apply(p, f)
    expected = np.repeat(np.repeat(np.array([[1.0, 0.5], [0.75, 0.0]], np.float32), 2, 0), 2, 1)
    np.testing.assert_array_equal(got[0, 0], expected)
    np.testing.assert_array_equal(got[0, 1], expected)


def test_constant_predictions_give_ones(rng):
    p = np.full((2, 4, 4), 3.5, np.float32)
    p[1] = rng.random((4, 4), dtype=np.float32)
    f = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    got = ops.softmask_apply(p, f)
    np.testing.assert_array_equal(got[0], f[0])
    np.testing.assert_allclose(got, ref(p, f), atol=1e-6, rtol=0)


def test_fp16(rng):
    p = rng.random((2, 16, 16), dtype=np.float32).astype(np.float16)
    f = rng.standard_normal((2, 8, 40, 40)).astype(np.float16)
    got = ops.softmask_apply(p, f)
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref(p, f).astype(np.float32), atol=0, rtol=1e-3)
    got32 = ops.softmask_apply(p.astype(np.float32), f.astype(np.float32))
    np.testing.assert_allclose(got.astype(np.float32), got32, atol=2e-3, rtol=1e-3)


def test_in_place_and_torch(rng):
    p = rng.random((1, 8, 8), dtype=np.float32)
    f = rng.standard_normal((1, 4, 32, 32)).astype(np.float32)
    expected = ref(p, f)
    tf = torch.from_numpy(f.copy())
    res = ops.softmask_apply(torch.from_numpy(p), tf)
    assert isinstance(res, torch.Tensor)
    np.testing.assert_allclose(res.numpy(), expected, atol=1e-6, rtol=0)
    ops.softmask_apply(p, f, out=f)
    np.testing.assert_allclose(f, expected, atol=1e-6, rtol=0)


def test_bad_inputs(rng):
    p = rng.random((2, 4, 4), dtype=np.float32)
    f = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'features' expected size 2 along axis 0, got shape \(1, 3, 8, 8\)"):
        ops.softmask_apply(p, f[:1])
    with pytest.raises(ValueError, match=r"'pred' expected 3 dimensions, got 2"):
        ops.softmask_apply(p[0], f)
    with pytest.raises(ValueError, match=r"'features' expected 4 dimensions, got 3"):
        ops.softmask_apply(p, f[0])
    with pytest.raises(TypeError, match=r"'features' expected dtype float32 or float16, got float64"):
        ops.softmask_apply(p, f.astype(np.float64))
    with pytest.raises(TypeError, match=r"'pred' expected dtype float32 or float16, got int64"):
        ops.softmask_apply(p.astype(np.int64), f)
    with pytest.raises(ValueError, match=r"'features' expected a C-contiguous"):
        ops.softmask_apply(p, f[:, :, :, ::2])
    with pytest.raises(ValueError, match=r"'pred' expected a C-contiguous"):
        ops.softmask_apply(p[:, ::2], f)
    bad = p.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"'pred' expected finite values.*image 1"):
        ops.softmask_apply(bad, f)
    with pytest.raises(TypeError, match=r"'out' expected dtype float32"):
        ops.softmask_apply(p, f, out=np.empty(f.shape, np.float16))
    with pytest.raises(ValueError, match=r"'out' expected shape \(2, 3, 8, 8\)"):
        ops.softmask_apply(p, f, out=np.empty((2, 3, 8, 7), np.float32))
    with pytest.raises(ValueError, match=r"'pred' expected a non-empty"):
        ops.softmask_apply(np.empty((2, 0, 4), np.float32), f)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", UNET_SKIPS + [(2, 3, 50, 37), (3, 5, 13, 30)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cuda_matches_cpu(torch_cuda, rng, shape, dtype):
    p = rng.random((shape[0], 16, 16), dtype=np.float32)
    f = rng.standard_normal(shape).astype(dtype)
    cpu = ops.softmask_apply(p, f)
    got = ops.softmask_apply(torch_cuda.from_numpy(p).cuda(), torch_cuda.from_numpy(f).cuda())
    assert got.is_cuda and got.dtype == torch_cuda.from_numpy(f).dtype
    np.testing.assert_allclose(got.cpu().numpy().astype(np.float32), cpu.astype(np.float32), atol=1e-6, rtol=1e-3 if dtype == np.float16 else 1e-6)


@pytest.mark.cuda
def test_cuda_constant_and_in_place(torch_cuda, rng):
    p = torch_cuda.full((1, 16, 16), 2.0, device="cuda")
    f = torch_cuda.randn(1, 8, 32, 32, device="cuda")
    f0 = f.clone()
    ops.softmask_apply(p, f, out=f)
    torch_cuda.cuda.synchronize()
    assert torch_cuda.equal(f, f0)


@pytest.mark.cuda
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_nonfinite_raises_like_cpu(torch_cuda, rng, bad, dtype):
    # Before the fix CUDA predictions were not scanned and NaN propagated silently into the features.
    torch = torch_cuda
    p = torch.from_numpy(rng.random((3, 16, 16), dtype=np.float32)).to(getattr(torch, dtype)).cuda()
    p[1, 5, 7] = bad
    f = torch.randn(3, 4, 32, 32, device="cuda")
    f0 = f.clone()
    with pytest.raises(ValueError, match=r"softmask_apply: argument 'pred' expected finite values, got NaN or Inf in image 1"):
        ops.softmask_apply(p, f, out=f)
    assert torch.equal(f[1], f0[1]), "the bad image's features must not be written (as on the CPU)"
    p[1, 5, 7] = 0.5
    ops.softmask_apply(p, f)  # fine afterwards
