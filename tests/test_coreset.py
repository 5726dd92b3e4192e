"""edgead.ops.coreset against the float64 NumPy greedy k-center (edgead.ops_reference.coreset_reference).

The kernel accumulates |x_i - x_c|^2 in float32 (direct difference form); on these random inputs the
max-min gaps are far above float32 error, so selected indices must match exactly and distances to
rtol 1e-5. Exact ties (duplicate points, all-equal distances) go to the lowest index in both.
"""
import numpy as np
import pytest

from edgead import ops
from edgead.ops_reference import coreset_reference


def check(x, n, start=0):
    idx, dist = ops.coreset(x, n, start=start, return_distances=True)
    idx, dist = np.asarray(idx), np.asarray(dist)
    assert idx.dtype == np.int64 and idx.shape == (n,)
    assert dist.dtype == np.float32 and dist.shape == (n,)
    iref, dref = coreset_reference(x, n, start, return_distances=True)
    np.testing.assert_array_equal(idx, iref)
    assert np.isinf(dist[0])
    np.testing.assert_allclose(dist[1:], dref[1:], rtol=1e-5, atol=1e-6)
    assert (np.diff(dist[1:]) <= 0).all(), "selection distances must not increase"
    np.testing.assert_array_equal(ops.coreset(x, n, start=start), idx)
    return idx


@pytest.mark.parametrize("N,D,n,start", [
    (1, 1, 1, 0), (2, 3, 2, 1), (50, 1, 10, 0), (200, 3, 40, 7), (300, 17, 30, 299),
    (500, 128, 50, 0), (257, 129, 20, 3), (10000, 32, 40, 11),  # 10000 x 32: parallel, both threads' slices
])
def test_random_fp32(rng, N, D, n, start):
    x = rng.standard_normal((N, D)).astype(np.float32)
    check(x, n, start)


@pytest.mark.parametrize("N,D,n", [(400, 16, 30), (300, 17, 20), (3000, 128, 25)])
def test_random_fp16(rng, N, D, n):
    x = rng.standard_normal((N, D)).astype(np.float16)
    check(x, n)  # reference on the fp16 values upcast to float64


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_clustered(rng, dtype):
    # Clustered data: most points are skipped by the CPU kernel's triangle-inequality pruning, which
    # must not change the selection.
    centres = rng.standard_normal((40, 24)) * 10
    x = (centres[rng.integers(0, 40, 4000)] + rng.standard_normal((4000, 24)) * 0.3).astype(dtype)
    check(x, 300, 5)


def test_n_equals_N_is_permutation(rng):
    x = rng.standard_normal((60, 5)).astype(np.float32)
    idx = check(x, 60, 4)
    assert sorted(idx.tolist()) == list(range(60))


def test_n_is_one(rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    idx, dist = ops.coreset(x, 1, start=6, return_distances=True)
    assert idx.tolist() == [6] and np.isinf(dist[0])


def test_duplicates(rng):
    x0 = rng.standard_normal((20, 6)).astype(np.float32)
    x = np.concatenate([x0, x0, x0])  # 20 distinct points, each three times
    idx = check(x, 20, 0)
    assert (idx < 20).all(), "ties between duplicates must go to the lowest index"
    # More picks than distinct points: every distance is 0 and argmax repeats the lowest index.
    idx, dist = ops.coreset(x, 25, return_distances=True)
    np.testing.assert_array_equal(idx, coreset_reference(x, 25))
    np.testing.assert_array_equal(dist[20:], 0.0)


def test_all_equal_ties():
    x = np.ones((100, 3), np.float32)
    idx = check(x, 5, 42)
    assert idx.tolist() == [42, 0, 0, 0, 0]
    # Symmetric ties: points at +-1 on each axis around the start at the origin.
    y = np.array([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    assert check(y, 3, 0).tolist() == [0, 1, 2]  # after 0, 1: points 2, 3, 4 all at distance 1


def test_torch_cpu_input(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((100, 8)).astype(np.float32)
    np.testing.assert_array_equal(ops.coreset(torch.from_numpy(x), 10), coreset_reference(x, 10))


def test_bad_inputs(rng):
    x = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'n' expected n <= number of points N = 10, got n = 11"):
        ops.coreset(x, 11)
    for n in (0, -3):
        with pytest.raises(ValueError, match="'n' expected n >= 1"):
            ops.coreset(x, n)
    with pytest.raises(TypeError, match="'n' expected an int"):
        ops.coreset(x, 2.0)
    with pytest.raises(ValueError, match="'start'"):
        ops.coreset(x, 2, start=10)
    with pytest.raises(ValueError, match="'start'"):
        ops.coreset(x, 2, start=-1)
    with pytest.raises(TypeError, match="'features' expected dtype float32 or float16, got float64"):
        ops.coreset(x.astype(np.float64), 2)
    with pytest.raises(TypeError, match="'features' expected dtype"):
        ops.coreset(x.astype(np.int64), 2)
    with pytest.raises(ValueError, match="'features' expected 2 dimensions"):
        ops.coreset(x[0], 2)
    with pytest.raises(ValueError, match="'features' expected a non-empty"):
        ops.coreset(x[:0], 1)
    with pytest.raises(ValueError, match="'features' expected a C-contiguous"):
        ops.coreset(x[:, ::2], 2)
    for bad in (np.nan, np.inf):
        y = x.copy()
        y[7, 1] = bad
        with pytest.raises(ValueError, match="'features' expected finite"):
            ops.coreset(y, 2)
        with pytest.raises(ValueError, match="'features' expected finite"):
            ops.coreset(y.astype(np.float16), 2)


# ------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("N,D,n,start", [(1, 1, 1, 0), (200, 3, 40, 7), (3000, 128, 60, 5), (999, 17, 30, 0),
                                         (20000, 64, 20, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_matches_cpu(torch_cuda, rng, N, D, n, start, dtype):
    torch = torch_cuda
    x = rng.standard_normal((N, D)).astype(dtype)
    idx, dist = ops.coreset(torch.from_numpy(x).cuda(), n, start=start, return_distances=True)
    assert idx.is_cuda and idx.dtype == torch.int64
    icpu, dcpu = ops.coreset(x, n, start=start, return_distances=True)
    np.testing.assert_array_equal(idx.cpu().numpy(), icpu)
    np.testing.assert_allclose(dist.cpu().numpy(), dcpu, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_cuda_duplicates_and_errors(torch_cuda):
    torch = torch_cuda
    x = torch.ones((5000, 8), device="cuda")
    assert ops.coreset(x, 4, start=9).cpu().tolist() == [9, 0, 0, 0]
    y = x.clone()
    y[4321, 3] = float("nan")
    with pytest.raises(ValueError, match="'features' expected finite"):
        ops.coreset(y, 3)
    with pytest.raises(ValueError, match="'n'"):
        ops.coreset(x, 5001)


# ------------------------------------------------------------------------------ resumable selection
def run_in_steps(x, n, start, chunks):
    """CoresetSelector driven by the step sizes in `chunks` (cycled); returns (idx, dist, pieces)."""
    sel = ops.CoresetSelector(x, n, start=start)
    assert sel.selected == 1 and not sel.done or n == 1
    pieces, i = [], 0
    while not sel.done:
        before = sel.selected
        got = sel.step(chunks[i % len(chunks)])
        i += 1
        assert len(got) == sel.selected - before >= 1
        pieces.append(np.asarray(got).copy())
    assert len(sel.step(5)) == 0  # done: nothing more
    return np.asarray(sel.indices), np.asarray(sel.distances), pieces


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("N,D,n,start,chunks", [
    (1, 1, 1, 0, [1]), (60, 5, 60, 4, [1]), (200, 3, 40, 7, [3, 1, 10]), (500, 128, 50, 0, [7]),
    (10000, 32, 70, 11, [1, 31, 32, 33]),  # 10000 x 32: parallel slices; chunk edges across the 32-step prune retry
])
def test_selector_matches_coreset_and_reference(rng, dtype, N, D, n, start, chunks):
    x = rng.standard_normal((N, D)).astype(dtype)
    idx, dist, pieces = run_in_steps(x, n, start, chunks)
    iref, dref = ops.coreset(x, n, start=start, return_distances=True)
    np.testing.assert_array_equal(idx, iref)
    np.testing.assert_array_equal(dist, dref)  # same kernel, same arithmetic: bit-identical
    np.testing.assert_array_equal(np.concatenate([[start]] + pieces), idx)
    np.testing.assert_array_equal(idx, coreset_reference(x, n, start))


def test_selector_clustered_and_duplicates(rng):
    # Clustered data exercises the CPU pruning state (assign) carried across steps; duplicates the
    # lowest-index tie-break and repeats after the distinct points run out.
    centres = rng.standard_normal((40, 24)) * 10
    x = (centres[rng.integers(0, 40, 4000)] + rng.standard_normal((4000, 24)) * 0.3).astype(np.float32)
    idx, _, _ = run_in_steps(x, 300, 5, [13, 64, 1])
    np.testing.assert_array_equal(idx, coreset_reference(x, 300, 5))
    x0 = rng.standard_normal((20, 6)).astype(np.float32)
    y = np.concatenate([x0, x0, x0])
    idx, dist, _ = run_in_steps(y, 25, 0, [4])
    np.testing.assert_array_equal(idx, coreset_reference(y, 25))
    np.testing.assert_array_equal(dist[20:], 0.0)


def test_selector_state_and_bad_input(rng):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    sel = ops.CoresetSelector(x, 10, start=3)
    assert np.isinf(np.asarray(sel.min_d2)).all()  # nothing folded in yet: lazily updated by the next step
    sel.step(2)
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[np.asarray(sel.indices)[:2]][None], axis=2).min(1)
    np.testing.assert_allclose(np.sqrt(np.asarray(sel.min_d2)), d, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'n_steps' expected n_steps >= 1"):
        sel.step(0)
    with pytest.raises(TypeError, match="'n_steps' expected an int"):
        sel.step(1.5)
    with pytest.raises(ValueError, match="'n' expected n <= number of points N = 50, got n = 51"):
        ops.CoresetSelector(x, 51)
    with pytest.raises(ValueError, match="'n' expected n >= 1"):
        ops.CoresetSelector(x, 0)
    with pytest.raises(ValueError, match="'start'"):
        ops.CoresetSelector(x, 2, start=50)
    y = x.copy()
    y[7, 1] = np.nan
    with pytest.raises(ValueError, match="'features' expected finite"):
        ops.CoresetSelector(y, 2)
    # The native step verifies a host state before using it (never a crash on a corrupted state).
    C = __import__("edgead")._ext()
    idx = np.zeros(5, np.int64)
    mind = np.full(50, np.inf, np.float32)
    asg = np.full(50, -1, np.int32)
    C.coreset_init(x, 0, mind, asg, idx, None)
    idx[0] = 99
    with pytest.raises(ValueError, match="'out_idx' expected selected indices in"):
        C.coreset_step(x, 1, 2, mind, asg, idx, None)
    idx[0] = 0
    asg[3] = 7
    with pytest.raises(ValueError, match="'assign' expected values in"):
        C.coreset_step(x, 1, 2, mind, asg, idx, None)
    asg[3] = -1
    with pytest.raises(ValueError, match="'s0', 's1' expected"):
        C.coreset_step(x, 0, 2, mind, asg, idx, None)
    with pytest.raises(ValueError, match="'assign' expected an int32"):
        C.coreset_step(x, 1, 2, mind, None, idx, None)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_selector_matches_coreset(torch_cuda, rng, dtype):
    torch = torch_cuda
    x = rng.standard_normal((3000, 128)).astype(dtype)
    xc = torch.from_numpy(x).cuda()
    sel = ops.CoresetSelector(xc, 60, start=5)
    while not sel.done:
        got = sel.step(7)
        assert got.is_cuda
    iref, dref = ops.coreset(xc, 60, start=5, return_distances=True)
    np.testing.assert_array_equal(sel.indices.cpu().numpy(), iref.cpu().numpy())
    np.testing.assert_array_equal(sel.distances.cpu().numpy(), dref.cpu().numpy())
    np.testing.assert_array_equal(sel.indices.cpu().numpy(), ops.coreset(x, 60, start=5))
    y = xc.clone()
    y[123, 4] = float("inf")
    with pytest.raises(ValueError, match="'features' expected finite"):
        ops.CoresetSelector(y, 3)
