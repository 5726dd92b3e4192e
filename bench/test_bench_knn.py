"""PatchCore nearest-neighbour search: edgead.ops.knn vs faiss-cpu IndexFlatL2 (when importable) vs
torch.cdist + min/topk, side by side per group (fp32, same inputs, all return the same neighbours).

    python3 -m pytest bench/test_bench_knn.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

CPU: Q = 784 query patches (one 224x224 image, 28x28 feature map) against a 16384 x 1536 bank, plus
a smaller 784 x 4096 x 384 case with k = 9. edgead gets the bank's squared norms precomputed (as in
inference: the bank is fixed); faiss gets an index built once. Rounds are few (3): the big case is
~40 GFLOP per call. Threads: edgead uses OpenMP's default, faiss its own OpenMP, torch its intra-op pool.
CUDA (skipped without a GPU): batch 1 (784 queries) against 16384 x 1536 and 187000 x 1536 banks,
LOOP back-to-back calls + one synchronize per round; extra_info['per_call_ms'] = median / LOOP. edgead
rows: the default CUDA path (cuBLAS product + edgead's top-k fold, extra_info['cublas'] says which
library) and, as *_fused, the fused tile kernel (EDGEAD_KNN_CUDA_PATH=fused).

Every row first checks its answer on the first 64 queries against the float64 brute force
(bench/_checks.check_knn: same neighbours except near-ties, distances within rtol 1e-4 for fp32 inputs,
2e-3 for fp16 inputs; >= 99% identical indices, >= 95% for the approximate torch fp16 matmul baseline).
"""
import numpy as np
import pytest

import edgead
from edgead import ops

torch = pytest.importorskip("torch")

from _checks import check_knn  # noqa: E402

needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")
CPU_CASES = [(784, 16384, 1536, 1), (784, 4096, 384, 9)]
ROUNDS = 3
LOOP = 20


def data(Q, M, D, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.standard_normal((Q, D), dtype=np.float32).astype(dtype), rng.standard_normal((M, D), dtype=np.float32).astype(dtype)


@pytest.mark.parametrize("Q,M,D,k", CPU_CASES, ids=[f"Q{c[0]}-M{c[1]}-D{c[2]}-k{c[3]}" for c in CPU_CASES])
@pytest.mark.parametrize("impl", ["edgead", "faiss", "torch_cdist"])
def test_knn_cpu(benchmark, impl, Q, M, D, k):
    benchmark.group = f"knn cpu Q={Q} M={M} D={D} k={k}"
    q, b = data(Q, M, D)
    if impl == "edgead":
        norms = ops.knn_bank_sq_norms(b)
        fn = lambda: ops.knn(q, b, k, bank_sq_norms=norms)  # noqa: E731
    elif impl == "faiss":
        faiss = pytest.importorskip("faiss")
        index = faiss.IndexFlatL2(D)
        index.add(b)
        fn = lambda: index.search(q, k)  # noqa: E731
    else:
        tq, tb = torch.from_numpy(q), torch.from_numpy(b)

        def fn():
            with torch.inference_mode():
                return torch.cdist(tq, tb).topk(k, dim=1, largest=False)

    if impl == "faiss":  # faiss returns squared distances
        d2, i = fn()
        check_knn(q, b, np.sqrt(np.maximum(d2, 0)), i)
    elif impl == "torch_cdist":
        r = fn()
        check_knn(q, b, r.values, r.indices)
    else:
        check_knn(q, b, *fn())
    benchmark.extra_info["threads"] = edgead.build_info()["cpu_threads"]
    benchmark.pedantic(fn, rounds=ROUNDS, iterations=1, warmup_rounds=1)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("M", [16384, 187000])
@pytest.mark.parametrize("impl", ["edgead_fp32", "edgead_fp16", "edgead_fp32_fused", "edgead_fp16_fused",
                                  "torch_cdist_fp32", "torch_fp16_matmul"])
def test_knn_cuda_batch1(benchmark, monkeypatch, impl, M):
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    # edgead_*: the default path (cuBLAS product + edgead fold when cuBLAS loads); *_fused: the fused tile kernel.
    monkeypatch.setenv("EDGEAD_KNN_CUDA_PATH", "fused" if impl.endswith("_fused") else "auto")
    benchmark.extra_info["cublas"] = ops.cublas_status()
    Q, D = 784, 1536
    benchmark.group = f"knn cuda batch 1 Q={Q} M={M} D={D} k=1"
    dtype = torch.float16 if "fp16" in impl else torch.float32
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn((Q, D), device="cuda", generator=g).to(dtype)
    b = torch.randn((M, D), device="cuda", generator=g).to(dtype)
    if impl.startswith("edgead"):
        norms = ops.knn_bank_sq_norms(b)
        fn = lambda: ops.knn(q, b, 1, bank_sq_norms=norms)  # noqa: E731
    elif impl == "torch_cdist_fp32":
        fn = lambda: torch.cdist(q, b).topk(1, dim=1, largest=False)  # noqa: E731
    else:  # fp16 tensor-core matmul + topk on the squared distances (bank norms precomputed, as edgead's)
        bn = (b.float() ** 2).sum(1)

        def fn():
            d2 = (q.float() ** 2).sum(1, keepdim=True) + bn - 2 * (q @ b.T).float()
            return d2.clamp_min_(0).topk(1, dim=1, largest=False)

    def run():
        for _ in range(LOOP):
            fn()
        torch.cuda.synchronize()

    with torch.inference_mode():
        r = fn()
        torch.cuda.synchronize()
        d, i = (r[0], r[1]) if impl.startswith("edgead") else (r.values, r.indices)
        if impl == "torch_fp16_matmul":
            d = d.sqrt()  # that row returns squared distances
        # the fp16 matmul baseline is approximate by construction: near-tie swaps allowed on up to 5% of
        # the queries (distances still within rtol of the float64 nearest); edgead's rows: 99% exact
        check_knn(q, b, d, i, rtol=2e-3 if dtype == torch.float16 else 1e-4,
                  min_same=0.95 if impl == "torch_fp16_matmul" else 0.99)
        run()
        benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    benchmark.extra_info["per_call_ms"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / LOOP * 1e3
