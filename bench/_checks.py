"""Answer checks for the benchmarks: every benchmark calls one of these on its result before timing."""
import numpy as np


# ------------------------------------------------------------------------------------------------
# Answer checks: every benchmark calls one of these on the result of the function it times (or on
# the same implementation run on a subset) before timing it. A wrong answer fails the benchmark.
# ------------------------------------------------------------------------------------------------
def to_numpy(a):
    """Host NumPy copy of a NumPy array / torch tensor (any device)."""
    if hasattr(a, "detach"):
        return a.detach().float().cpu().numpy() if a.dtype.is_floating_point else a.detach().cpu().numpy()
    return np.asarray(a)


def check_knn(queries, bank, dist, idx, rtol=1e-4, max_query=64, min_same=0.99):
    """Same neighbours as the float64 brute force (ops_reference.knn_reference) on the first `max_query`
    queries. An index may differ only on a near-tie: its float64 distance within `rtol` (relative) of the
    reference's. Returned distances must match the float64 ones within `rtol`. rtol 1e-4 for fp32
    inputs (float32 accumulation over D <= 1536 terms: relative error ~ sqrt(D) * 6e-8 << 1e-4);
    pass 2e-3 for fp16 inputs (values exact in float64; fp16 matmul paths round products).
    At least `min_same` of the indices must equal the reference's: 0.99 for edgead's rows. A baseline that
    is approximate by construction (torch fp16 matmul + topk: q.b comes back rounded to fp16, unit
    roundoff 2^-11, i.e. ~0.02 absolute on |q.b| ~ sqrt(D) ~ 39 for D = 1536 normals, ~1e-5 relative on
    d ~ 52; reduced-precision reduction can make it ~1e-4) swaps neighbours whose float64 distances
    differ by less than that; it gets a lower floor (0.95, run 1 on an H200: 0.984) while every neighbour
    it picks must still be within `rtol` (2e-3 for fp16, >10x that error) of the true nearest distance."""
    q = to_numpy(queries)[:max_query].astype(np.float64)
    b = to_numpy(bank).astype(np.float64)
    d = to_numpy(dist)[:max_query].reshape(len(q), -1)
    i = to_numpy(idx)[:max_query].reshape(len(q), -1).astype(np.int64)
    k = i.shape[1]
    # float64 brute force without the (Q, M, D) broadcast of ops_reference.knn_reference (banks here are up
    # to 187000 x 1536): |q|^2 - 2 q.b + |b|^2 in float64, rows of q one at a time, stable sort for ties
    bn = (b * b).sum(1)
    ref_i = np.empty((len(q), k), np.int64)
    for r, qr in enumerate(q):
        d2 = np.maximum(qr @ qr - 2 * (b @ qr) + bn, 0)
        part = np.argpartition(d2, k - 1)[:k] if k < len(d2) else np.arange(len(d2))
        ref_i[r] = part[np.lexsort((part, d2[part]))]
    ref_d = np.sqrt(((q[:, None, :] - b[ref_i]) ** 2).sum(-1))
    got_d64 = np.sqrt(((q[:, None, :] - b[i]) ** 2).sum(-1))  # float64 distance of each returned neighbour
    np.testing.assert_allclose(got_d64, ref_d, rtol=rtol, err_msg="neighbour distances differ from the float64 reference")
    np.testing.assert_allclose(d, ref_d, rtol=rtol, err_msg="reported distances differ from the float64 reference")
    same = (i == ref_i).mean()
    assert same >= min_same, f"only {same:.3f} of the neighbours equal the float64 reference's (need {min_same})"


def check_selection(features, n, got, ref=None, rtol=1e-4):
    """Greedy k-center: the same selection as ops_reference.coreset_reference (float64 NumPy) for n steps.
    A differing pick is accepted only on a near-tie (its distance to the selected set within rtol of the
    reference's maximum at that step); after the first such tie the sequences may diverge, so the check
    stops there."""
    from edgead.ops_reference import coreset_reference

    x = to_numpy(features).astype(np.float64)
    got = to_numpy(got).astype(np.int64)[:n]
    ref = coreset_reference(x, n) if ref is None else np.asarray(ref, np.int64)[:n]
    mind = np.full(len(x), np.inf)
    for s in range(n):
        if s > 0:
            np.minimum(mind, ((x - x[got[s - 1]]) ** 2).sum(1), out=mind)
        if got[s] != ref[s]:
            assert s > 0 and np.sqrt(mind[got[s]]) >= np.sqrt(mind[ref[s]]) * (1 - rtol), (
                f"step {s}: picked {got[s]} (distance {np.sqrt(mind[got[s]])}), reference {ref[s]} "
                f"(distance {np.sqrt(mind[ref[s]])})")
            return s
    return n


def check_close(got, ref, atol, what):
    got, ref = to_numpy(got), to_numpy(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    err = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max()) if got.size else 0.0
    assert err <= atol, f"{what}: max |got - reference| = {err:.3g} > {atol:.3g}"
    return err
