"""Bad-input defects of edgead.ops found by the bad-input probe (issue 11, item 7).

Each test names the defect: huge / non-integer scalar arguments, msgms `c` outside float32,
knn squared-norm overflow, misaligned buffers. Valid neighbours of each case still work.
"""
import numpy as np
import pytest

from edgead import ops

BIG = [2**31, 2**40, 2**63, 2**70]


@pytest.fixture
def feats(rng):
    return rng.standard_normal((16, 4)).astype(np.float32)


@pytest.mark.parametrize("k", BIG + [np.int64(2**40)])
def test_knn_huge_k_is_valueerror_naming_k(feats, k):
    with pytest.raises(ValueError, match="'k'"):
        ops.knn(feats, feats, k=k)


@pytest.mark.parametrize("k", [True, 1.0, 2.5, "1"])
def test_knn_non_integer_k_is_typeerror(feats, k):
    with pytest.raises(TypeError, match="'k'"):
        ops.knn(feats, feats, k=k)


@pytest.mark.parametrize("n", BIG)
def test_coreset_huge_n_is_valueerror_naming_n(feats, n):
    with pytest.raises(ValueError, match="'n'"):
        ops.coreset(feats, n)


@pytest.mark.parametrize("start", BIG + [-(2**40)])
def test_coreset_huge_start_is_valueerror_naming_start(feats, start):
    with pytest.raises(ValueError, match="'start'"):
        ops.coreset(feats, 2, start=start)


def _imgs(rng, h=16, w=16):
    x = rng.random((1, 1, h, w), dtype=np.float32)
    y = rng.random((1, 1, h, w), dtype=np.float32)
    return x, y


@pytest.mark.parametrize("scales", BIG)
def test_msgms_huge_scales_is_valueerror(rng, scales):
    x, y = _imgs(rng)
    with pytest.raises(ValueError, match="'scales'"):
        ops.msgms_map(x, y, scales=scales)


@pytest.mark.parametrize("mean_filter", BIG)
def test_msgms_huge_mean_filter_is_valueerror(rng, mean_filter):
    x, y = _imgs(rng)
    with pytest.raises(ValueError, match="'mean_filter'"):
        ops.msgms_map(x, y, mean_filter=mean_filter)


@pytest.mark.parametrize("name,value", [("scales", 3.9), ("scales", True), ("scales", 2.0),
                                         ("mean_filter", 2.7), ("mean_filter", 3.0), ("mean_filter", False),
                                         ("scales", "3")])
def test_msgms_non_integer_scales_mean_filter_rejected(rng, name, value):
    x, y = _imgs(rng)
    with pytest.raises(TypeError, match=f"'{name}'"):
        ops.msgms_map(x, y, **{name: value})


@pytest.mark.parametrize("c", [1e-46, 1e-45, 1e-39, 0.0, -1.0, 3.5e38, 1e300, float("inf"), float("nan")])
def test_msgms_c_outside_float32_is_valueerror(rng, c):
    x, y = _imgs(rng)
    with pytest.raises(ValueError, match="'c'"):
        ops.msgms_map(x, y, c=c)


@pytest.mark.parametrize("c", [True, "0.1", None])
def test_msgms_c_wrong_type_is_typeerror(rng, c):
    x, y = _imgs(rng)
    with pytest.raises(TypeError, match="'c'"):
        ops.msgms_map(x, y, c=c)


@pytest.mark.parametrize("c", [1e-30, 0.0026, 1e30, np.float32(0.01)])
def test_msgms_c_in_float32_range_is_finite(rng, c):
    x, y = _imgs(rng)
    m = ops.msgms_map(x, y, c=c, scales=2, mean_filter=3)
    assert np.isfinite(m).all()


@pytest.mark.parametrize("scale", [1e19, 3e19, 1e30, 1e38])
@pytest.mark.parametrize("which", ["queries", "bank"])
def test_knn_norm_overflow_is_valueerror_not_minus_one(rng, scale, which):
    """Finite inputs whose float32 squared norms overflow gave index -1 / distance inf."""
    q = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((6, 8)).astype(np.float32)
    if which == "queries":
        q[1] = np.float32(scale)
    else:
        b[2] = np.float32(scale)
    assert np.isfinite(q).all() and np.isfinite(b).all()
    with pytest.raises(ValueError, match=f"'{which}'"):
        ops.knn(q, b, k=1)


def test_knn_norm_overflow_with_precomputed_norms(rng):
    q = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((6, 8)).astype(np.float32)
    b[3] = np.float32(3e19)
    with pytest.raises(ValueError, match="'bank'"):
        ops.knn(q, b, k=1, bank_sq_norms=ops.knn_bank_sq_norms(b))


def test_knn_large_but_safe_norms_still_exact(rng):
    q = (rng.standard_normal((5, 8)) * 1e17).astype(np.float32)
    b = (rng.standard_normal((7, 8)) * 1e17).astype(np.float32)
    d, i = ops.knn(q, b, k=1)
    assert (i >= 0).all() and np.isfinite(d).all()
    ref = np.sqrt(((q.astype(np.float64)[:, None] - b.astype(np.float64)[None]) ** 2).sum(-1))
    np.testing.assert_array_equal(i[:, 0], ref.argmin(1))


def _misaligned(a):
    """A C-contiguous copy of `a` whose data pointer is 1 byte past an aligned address."""
    a = np.ascontiguousarray(a)
    raw = np.zeros(a.nbytes + 16, np.uint8)
    base = raw.ctypes.data % 16
    off = (16 - base) % 16 + 1
    out = np.frombuffer(raw.data, dtype=np.uint8, count=a.nbytes, offset=off).view(a.dtype).reshape(a.shape)
    out[...] = a
    assert out.ctypes.data % a.dtype.itemsize != 0 and out.flags.c_contiguous
    return out


def test_misaligned_knn_inputs_rejected(rng):
    q = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((6, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="'queries'.*align"):
        ops.knn(_misaligned(q), b)
    with pytest.raises(ValueError, match="'bank'.*align"):
        ops.knn(q, _misaligned(b))
    with pytest.raises(ValueError, match="'bank'.*align"):
        ops.knn_bank_sq_norms(_misaligned(b))


def test_misaligned_coreset_msgms_softmask_pro_rejected(rng):
    f = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="'features'.*align"):
        ops.coreset(_misaligned(f), 3)
    x, y = _imgs(rng)
    with pytest.raises(ValueError, match="'image'.*align"):
        ops.msgms_map(_misaligned(x), y, scales=2, mean_filter=3)
    with pytest.raises(ValueError, match="'out'.*align"):
        ops.msgms_map(x, y, scales=2, mean_filter=3, out=_misaligned(np.zeros((1, 16, 16), np.float32)))
    p = rng.random((1, 2, 2), dtype=np.float32)
    feat = rng.random((1, 3, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="'pred'.*align"):
        ops.softmask_apply(_misaligned(p), feat)
    maps = rng.random((1, 8, 8))
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="'anomaly_maps'.*align"):
        ops.pro_curve(_misaligned(maps), masks)


def test_aligned_copy_of_misaligned_buffer_gives_reference(rng):
    q = rng.standard_normal((4, 8)).astype(np.float32)
    b = rng.standard_normal((6, 8)).astype(np.float32)
    d, i = ops.knn(_misaligned(q).copy(), b)
    d2, i2 = ops.knn(q, b)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_array_equal(d, d2)


def test_coreset_distance_overflow_is_valueerror(rng):
    """Found by tools/fuzz_long.py: finite features near 1e19 overflow the float32 squared distances and
    the greedy picked a point that was not the farthest (2.6e19 while the farthest was 5.1e19)."""
    x = rng.standard_normal((64, 8)).astype(np.float32)
    x[5] *= np.float32(5e19)
    with pytest.raises(ValueError, match="coreset: argument 'features' row 5"):
        ops.coreset(x, 8)
    with pytest.raises(ValueError, match="coreset: argument 'features' row 5"):
        ops.CoresetSelector(x, 8)
    x[5] /= np.float32(5e19) / np.float32(1e6)  # large but safe: the selection equals the reference
    from edgead import ops_reference
    np.testing.assert_array_equal(ops.coreset(x, 8), ops_reference.coreset_reference(x, 8))


@pytest.mark.parametrize("bad", ["0.3", b"0.3", True, np.bool_(True), None, [0.3]])
def test_pro_fpr_limit_must_be_a_number(rng, bad):
    """Found by tools/fuzz_long.py: fpr_limit='0.3' (a string) was accepted through float()."""
    maps = rng.random((1, 8, 8))
    masks = np.zeros((1, 8, 8), bool)
    masks[0, 2:4, 2:4] = True
    for fn in (ops.pro_curve, ops.aupro):
        with pytest.raises(TypeError, match="'fpr_limit'"):
            fn(maps, masks, fpr_limit=bad)
