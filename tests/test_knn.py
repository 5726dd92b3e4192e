"""edgead.ops.knn against the float64 brute-force reference (edgead.ops_reference.knn_reference).

Tolerances: returned distances are recomputed directly for the winners, so they must match the float64
distance of the returned index to rtol 1e-5 (fp32 and fp16 inputs alike: the reference runs on the
same values upcast). Neighbours are selected in float32 with the |q|^2 - 2 q.b + |b|^2 form, so where
the reference has near-ties (relative gap < 1e-5) either index is accepted: we require the distance of
every returned rank to match the reference's distance at that rank, and exact indices elsewhere.
"""
import os

import numpy as np
import pytest

from edgead import ops
from edgead.ops_reference import knn_reference

RTOL = 1e-5


def _exact(q, b, idx):
    q64, b64 = q.astype(np.float64), b.astype(np.float64)
    return np.sqrt(((q64[:, None, :] - b64[idx]) ** 2).sum(-1))


def check_knn(q, b, k, dist, idx):
    dist, idx = np.asarray(dist), np.asarray(idx)
    Q, M = q.shape[0], b.shape[0]
    assert dist.shape == (Q, k) and idx.shape == (Q, k)
    assert dist.dtype == np.float32 and idx.dtype == np.int64
    assert ((idx >= 0) & (idx < M)).all()
    for row in idx:
        assert len(set(row.tolist())) == k, "duplicate neighbour index"
    exact = _exact(q, b, idx)
    np.testing.assert_allclose(dist, exact, rtol=RTOL, atol=1e-6)
    assert (np.diff(dist, axis=1) >= 0).all(), "distances not ascending"
    dref, iref = knn_reference(q, b, min(k + 1, M))
    np.testing.assert_allclose(exact, dref[:, :k], rtol=RTOL, atol=1e-6)
    # Exact indices wherever the reference distance is separated from its neighbours at ranks j-1, j+1.
    tol = RTOL * np.maximum(dref, 1e-6) + 1e-6
    sep = np.ones((Q, k), bool)
    sep[:, 1:] &= (dref[:, 1:k] - dref[:, : k - 1]) > tol[:, 1:k]
    if dref.shape[1] > k:
        sep &= (dref[:, 1 : k + 1] - dref[:, :k]) > tol[:, :k]
    else:
        sep[:, : k - 1] &= (dref[:, 1:k] - dref[:, : k - 1]) > tol[:, : k - 1]
    np.testing.assert_array_equal(idx[sep], iref[:, :k][sep])


SHAPES = [  # Q, M, D, k
    (1, 1, 1, 1),
    (1, 5, 3, 5),
    (7, 50, 3, 5),
    (33, 300, 17, 1),
    (1, 40000, 128, 4),  # Q=1, big enough to go parallel: the bank is split across threads and merged
    (130, 700, 129, 8),
    (5, 40, 1537, 3),
    (200, 520, 64, 64),
    (1, 3000, 1400, 2000),  # each thread's bank range holds fewer than k rows
    (2, 1100, 2000, 1100),  # k = M with split bank ranges
]


@pytest.mark.parametrize("Q,M,D,k", SHAPES)
def test_random_fp32(rng, Q, M, D, k):
    q = rng.standard_normal((Q, D)).astype(np.float32)
    b = rng.standard_normal((M, D)).astype(np.float32)
    dist, idx = ops.knn(q, b, k)
    check_knn(q, b, k, dist, idx)


@pytest.mark.parametrize("Q,M,D,k", [(9, 70, 16, 3), (64, 300, 130, 1), (1, 513, 7, 10)])
def test_random_fp16(rng, Q, M, D, k):
    q = rng.standard_normal((Q, D)).astype(np.float16)
    b = rng.standard_normal((M, D)).astype(np.float16)
    dist, idx = ops.knn(q, b, k)
    check_knn(q, b, k, dist, idx)  # reference on the fp16 values upcast to float64


def test_precomputed_norms_and_torch(rng):
    torch = pytest.importorskip("torch")
    q = rng.standard_normal((20, 24)).astype(np.float32)
    b = rng.standard_normal((90, 24)).astype(np.float32)
    norms = ops.knn_bank_sq_norms(b)
    assert norms.dtype == np.float32 and norms.shape == (90,)
    np.testing.assert_allclose(norms, (b.astype(np.float64) ** 2).sum(1), rtol=1e-6)
    d1, i1 = ops.knn(q, b, 4)
    d2, i2 = ops.knn(q, b, 4, bank_sq_norms=norms)
    d3, i3 = ops.knn(torch.from_numpy(q), torch.from_numpy(b), k=4)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(i1, i3)
    np.testing.assert_array_equal(d1, d2)


def test_exact_match_is_zero(rng):
    b = rng.standard_normal((100, 31)).astype(np.float32) * 10
    q = b[[5, 17, 99]].copy()
    dist, idx = ops.knn(q, b, 1)
    np.testing.assert_array_equal(idx[:, 0], [5, 17, 99])
    np.testing.assert_array_equal(dist[:, 0], 0.0)


def test_ties_lowest_index():
    # Query at the origin, bank rows at unit distance: all distances tie exactly.
    b = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 0], [2, 0]], np.float32)
    dist, idx = ops.knn(np.zeros((1, 2), np.float32), b, 5)
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(dist[0], 1.0)


@pytest.mark.parametrize("Q", [1, 3, 40])
def test_ties_across_bank_splits(Q):
    # 100000 identical bank rows: ties everywhere, also across the threads' bank ranges (Q=1 splits;
    # the problem is large enough for the parallel path).
    b = np.ones((100000, 48), np.float32)
    q = np.zeros((Q, 48), np.float32)
    dist, idx = ops.knn(q, b, 7)
    np.testing.assert_array_equal(idx, np.tile(np.arange(7), (Q, 1)))
    np.testing.assert_allclose(dist, np.sqrt(48.0), rtol=1e-6)


def test_duplicate_bank_rows(rng):
    b0 = rng.standard_normal((300, 20)).astype(np.float32)
    b = np.concatenate([b0, b0])  # row i and row i + 300 are identical
    q = rng.standard_normal((50, 20)).astype(np.float32)
    dist, idx = ops.knn(q, b, 2)
    assert (idx[:, 0] < 300).all()
    np.testing.assert_array_equal(idx[:, 1], idx[:, 0] + 300)
    np.testing.assert_array_equal(dist[:, 0], dist[:, 1])
    _, iref = knn_reference(q, b0, 1)
    np.testing.assert_array_equal(idx[:, 0], iref[:, 0])


def test_k_equals_m(rng):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((6, 5)).astype(np.float32)
    dist, idx = ops.knn(q, b, 6)
    check_knn(q, b, 6, dist, idx)
    assert sorted(idx[0].tolist()) == list(range(6))


def test_bank_smaller_than_k_raises(rng):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((3, 5)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'k'.*bank smaller than k.*k = 4"):
        ops.knn(q, b, 4)


@pytest.mark.parametrize("k", [0, -1])
def test_bad_k(rng, k):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="'k'"):
        ops.knn(q, q, k)


def test_bad_inputs(rng):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((8, 5)).astype(np.float32)
    with pytest.raises(TypeError, match="'k'"):
        ops.knn(q, b, 1.5)
    with pytest.raises(ValueError, match="same feature size D"):
        ops.knn(q, b[:, :4].copy(), 1)
    with pytest.raises(TypeError, match="same dtype"):
        ops.knn(q, b.astype(np.float16), 1)
    with pytest.raises(TypeError, match="'queries' expected dtype float32 or float16, got float64"):
        ops.knn(q.astype(np.float64), b, 1)
    with pytest.raises(TypeError, match="'bank' expected dtype"):
        ops.knn(q, b.astype(np.int32), 1)
    with pytest.raises(ValueError, match="'queries' expected 2 dimensions"):
        ops.knn(q[0], b, 1)
    with pytest.raises(ValueError, match="'bank' expected a non-empty"):
        ops.knn(q, b[:0], 1)
    with pytest.raises(ValueError, match="'bank' expected a C-contiguous"):
        ops.knn(q, np.asfortranarray(b), 1)
    with pytest.raises(ValueError, match="'queries' expected a C-contiguous"):
        ops.knn(rng.standard_normal((5, 4)).astype(np.float32).T, b, 1)
    with pytest.raises(TypeError, match="'queries'"):
        ops.knn("abc", b, 1)
    with pytest.raises(ValueError, match="'bank_sq_norms' expected size 8"):
        ops.knn(q, b, 1, bank_sq_norms=np.zeros(7, np.float32))
    with pytest.raises(TypeError, match="'bank_sq_norms' expected dtype float32"):
        ops.knn(q, b, 1, bank_sq_norms=np.zeros(8, np.float64))


def test_nonfinite_raises(rng):
    q = rng.standard_normal((4, 5)).astype(np.float32)
    b = rng.standard_normal((300, 5)).astype(np.float32)
    qn = q.copy()
    qn[2, 3] = np.nan
    with pytest.raises(ValueError, match="'queries' expected finite"):
        ops.knn(qn, b, 1)
    bn = b.copy()
    bn[299, 0] = np.inf
    with pytest.raises(ValueError, match="'bank' expected finite"):
        ops.knn(q, bn, 1)


# ------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@pytest.mark.parametrize("Q,M,D,k", [s for s in SHAPES if s[3] <= 64]  # CUDA: k <= 64
                         + [(784, 5000, 1536, 1), (3, 2000, 100, 64)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_matches_cpu(torch_cuda, rng, Q, M, D, k, dtype):
    torch = torch_cuda
    q = rng.standard_normal((Q, D)).astype(dtype)
    b = rng.standard_normal((M, D)).astype(dtype)
    dist, idx = ops.knn(torch.from_numpy(q).cuda(), torch.from_numpy(b).cuda(), k)
    assert dist.is_cuda and idx.is_cuda and dist.dtype == torch.float32 and idx.dtype == torch.int64
    check_knn(q, b, k, dist.cpu().numpy(), idx.cpu().numpy())
    norms = ops.knn_bank_sq_norms(torch.from_numpy(b).cuda())
    d2, i2 = ops.knn(torch.from_numpy(q).cuda(), torch.from_numpy(b).cuda(), k, bank_sq_norms=norms)
    check_knn(q, b, k, d2.cpu().numpy(), i2.cpu().numpy())


@pytest.mark.cuda
def test_cuda_ties_and_errors(torch_cuda):
    torch = torch_cuda
    b = torch.ones((3000, 3), device="cuda")
    q = torch.zeros((2, 3), device="cuda")
    dist, idx = ops.knn(q, b, 7)
    assert idx.cpu().tolist() == [list(range(7))] * 2
    with pytest.raises(ValueError, match="'k' expected k <= 64 on CUDA"):
        ops.knn(q, b, 65)
    with pytest.raises(ValueError, match="same device"):
        ops.knn(q, b.cpu(), 1)
    with pytest.raises(ValueError, match="'k'"):
        ops.knn(q, b[:2], 3)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_cuda_nonfinite_raises_like_cpu(torch_cuda, rng, dtype, bad):
    # Before the fix a NaN bank row gave fmaxf(NaN, 0) = 0 and became every query's nearest neighbour.
    torch = torch_cuda
    q = torch.from_numpy(rng.standard_normal((70, 40)).astype(dtype)).cuda()  # 2 query tiles
    b = torch.from_numpy(rng.standard_normal((5000, 40)).astype(dtype)).cuda()  # several bank splits
    for k in (1, 64):
        qb = q.clone()
        qb[69, 39] = bad
        with pytest.raises(ValueError, match=r"knn: argument 'queries' expected finite values, got NaN or inf"):
            ops.knn(qb, b, k)
        bb = b.clone()
        bb[4999, 0] = bad
        with pytest.raises(ValueError, match=r"knn: argument 'bank' expected finite values, got NaN or inf"):
            ops.knn(q, bb, k)
        norms = ops.knn_bank_sq_norms(b)  # precomputed (finite) norms: the bank itself is still checked
        with pytest.raises(ValueError, match="'bank' expected finite"):
            ops.knn(q, bb, k, bank_sq_norms=norms)
    dist, idx = ops.knn(q, b, 3)  # and the op still works afterwards (no stale flag)
    check_knn(q.cpu().numpy(), b.cpu().numpy(), 3, dist.cpu().numpy(), idx.cpu().numpy())


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["auto", "fused", "gemm"])
@pytest.mark.parametrize("k", [1, 5, 33, 64])
def test_cuda_ties_all_k(torch_cuda, monkeypatch, path, k):
    # Equal distances everywhere: the fold and the split merge must keep the lowest indices, in order
    # (on the GEMM path across chunks too: the products of these small integers are exact in any order).
    torch = torch_cuda
    monkeypatch.setenv("EDGEAD_KNN_CUDA_PATH", path)
    monkeypatch.setenv("EDGEAD_KNN_GEMM_BYTES", "65536")
    b = torch.ones((9000, 4), device="cuda")
    q = torch.zeros((130, 4), device="cuda")
    dist, idx = ops.knn(q, b, k)
    assert (idx.cpu() == torch.arange(k)).all()
    assert torch.allclose(dist.cpu(), torch.full((130, k), 2.0))


def test_cublas_status_is_a_string():
    # CPU builds say so; CUDA builds name the library they loaded or why none (never raises, never downloads).
    s = ops.cublas_status()
    assert isinstance(s, str) and s


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["fused", "gemm"])
@pytest.mark.parametrize("Q,M,D,k", [s for s in SHAPES if s[3] <= 64]
                         + [(300, 20000, 256, 1), (70, 3000, 384, 64), (9000, 700, 64, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_paths_match_cpu(torch_cuda, rng, monkeypatch, path, Q, M, D, k, dtype):
    """Both CUDA step-2 paths (EDGEAD_KNN_CUDA_PATH): the fused tile kernel and cuBLAS + fold, the latter
    also in tiny chunks (several query and bank chunks, lists carried across chunks)."""
    torch = torch_cuda
    if path == "gemm" and ops.cublas_status().startswith(("cuBLAS not found", "disabled")):
        pytest.fail(f"cuBLAS should load in a process that imported torch with CUDA: {ops.cublas_status()}")
    monkeypatch.setenv("EDGEAD_KNN_CUDA_PATH", path)
    q = rng.standard_normal((Q, D)).astype(dtype)
    b = rng.standard_normal((M, D)).astype(dtype)
    tq, tb = torch.from_numpy(q).cuda(), torch.from_numpy(b).cuda()
    dist, idx = ops.knn(tq, tb, k)
    check_knn(q, b, k, dist.cpu().numpy(), idx.cpu().numpy())
    if path == "gemm":
        monkeypatch.setenv("EDGEAD_KNN_GEMM_BYTES", "65536")
        d2, i2 = ops.knn(tq, tb, k, bank_sq_norms=ops.knn_bank_sq_norms(tb))
        check_knn(q, b, k, d2.cpu().numpy(), i2.cpu().numpy())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_gemm_path_nonfinite_raises(torch_cuda, rng, monkeypatch, dtype):
    torch = torch_cuda
    monkeypatch.setenv("EDGEAD_KNN_CUDA_PATH", "gemm")
    q = torch.from_numpy(rng.standard_normal((70, 40)).astype(dtype)).cuda()
    b = torch.from_numpy(rng.standard_normal((5000, 40)).astype(dtype)).cuda()
    norms = ops.knn_bank_sq_norms(b)
    qb = q.clone()
    qb[69, 39] = float("nan")
    with pytest.raises(ValueError, match="'queries' expected finite"):
        ops.knn(qb, b, 2)
    bb = b.clone()
    bb[4999, 0] = float("inf")
    for n in (None, norms):  # precomputed norms of the clean bank: G still shows the bad row
        with pytest.raises(ValueError, match="'bank' expected finite"):
            ops.knn(q, bb, 2, bank_sq_norms=n)
    monkeypatch.setenv("EDGEAD_KNN_CUDA_PATH", "cublas")
    with pytest.raises(ValueError, match="EDGEAD_KNN_CUDA_PATH"):
        ops.knn(q, b, 1)


def test_cublas_hint_points_at_a_pip_wheel(tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / "cu13" / "lib" / "libcublas.so.13"
    lib.parent.mkdir(parents=True)
    lib.write_bytes(b"")
    monkeypatch.setenv("EDGEAD_CUBLAS", "")  # recorded, so the value the hint sets is undone after the test
    monkeypatch.delenv("EDGEAD_CUBLAS")
    monkeypatch.setattr(ops, "_cublas_hint_done", False)
    monkeypatch.setattr(ops.sys, "path", [str(tmp_path / "elsewhere"), str(tmp_path)])
    loaded = "libcublas.so" in open("/proc/self/maps").read()
    ops._cublas_hint()
    assert os.environ.get("EDGEAD_CUBLAS") == (None if loaded else str(lib))
    monkeypatch.setattr(ops, "_cublas_hint_done", False)
    monkeypatch.setenv("EDGEAD_CUBLAS", "0")  # an explicit choice is never overridden
    ops._cublas_hint()
    assert os.environ["EDGEAD_CUBLAS"] == "0"
