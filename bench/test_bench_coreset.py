"""Greedy k-center coreset: edgead.ops.coreset vs anomalib's torch loop (torch on the same device).

    python3 -m pytest bench/test_bench_coreset.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

CPU: the 10% coreset of 200 images x 784 patches = 156,800 rows of D = 128 (random Gaussian features,
as after the Johnson-Lindenstrauss projection), i.e. 15,680 selection steps. Timing all steps of both
is too long for a shared machine, so each implementation runs STEPS steps (env
EDGEAD_BENCH_CORESET_STEPS, default 15680 for edgead; the torch loop runs TORCH_STEPS = 100) and
extra_info['extrapolated_full_s'] = median / steps * 15680 (each step costs the same: one pass over
all rows). Set EDGEAD_BENCH_CORESET_STEPS=15680 to time the full selection.
CUDA (skipped without a GPU): 1M x 128 fp16, 101 selections = 100 steps per call;
extra_info['per_step_ms'] = median / 100 (includes the one-off finiteness check and init).

Before timing, every row runs the same implementation on a subset (the first CHECK_ROWS rows,
CHECK_STEPS selections) and checks the selection against ops_reference.coreset_reference (float64
NumPy; a different pick is accepted only on a near-tie, see bench/_checks.check_selection); the CUDA rows
check on the GPU data's first CHECK_ROWS rows as well.
"""
import os

import numpy as np
import pytest

import edgead
from edgead import ops

torch = pytest.importorskip("torch")

from _checks import check_selection  # noqa: E402

needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")
N, D = 156_800, 128
FULL = N // 10
STEPS = int(os.environ.get("EDGEAD_BENCH_CORESET_STEPS", FULL))
TORCH_STEPS = 100
CHECK_ROWS, CHECK_STEPS = 20_000, 200


def anomalib_greedy(features, n: int, start: int = 0):
    """anomalib's KCenterGreedy loop (torch): norm of (features - features[idx]), running min, argmax."""
    min_d = None
    idx = start
    out = [idx]
    for _ in range(n - 1):
        d = torch.linalg.norm(features - features[idx : idx + 1], dim=1, keepdim=True)
        min_d = d if min_d is None else torch.minimum(min_d, d)
        idx = int(torch.argmax(min_d))
        out.append(idx)
    return out


@pytest.mark.parametrize("impl", ["edgead", "edgead_fp16_input", "torch_anomalib"])
def test_coreset_cpu(benchmark, impl):
    benchmark.group = f"coreset cpu {N}x{D} fp32, 10% = {FULL} steps (extrapolated from the steps run)"
    x = np.random.default_rng(0).standard_normal((N, D), dtype=np.float32)
    steps = STEPS if impl.startswith("edgead") else TORCH_STEPS
    if impl == "edgead":
        fn = lambda: ops.coreset(x, steps)  # noqa: E731
    elif impl == "edgead_fp16_input":  # same selection on features stored as float16 (half the memory traffic)
        xh = x.astype(np.float16)
        fn = lambda: ops.coreset(xh, steps)  # noqa: E731
    else:
        tx = torch.from_numpy(x)

        def fn():
            with torch.inference_mode():
                return anomalib_greedy(tx, steps)

    sub = x[:CHECK_ROWS]
    if impl == "edgead":
        got = ops.coreset(sub, CHECK_STEPS)
    elif impl == "edgead_fp16_input":
        sub = sub.astype(np.float16)  # the reference sees the same (fp16-rounded) values in float64
        got = ops.coreset(sub, CHECK_STEPS)
    else:
        with torch.inference_mode():
            got = anomalib_greedy(torch.from_numpy(sub), CHECK_STEPS)
    check_selection(sub, CHECK_STEPS, got)
    benchmark.extra_info["steps"] = steps
    benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info["extrapolated_full_s"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / steps * FULL


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("impl", ["edgead", "torch_anomalib"])
def test_coreset_cuda_step(benchmark, impl):
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    n_rows, dim, steps = 1_000_000, 128, 100
    benchmark.group = f"coreset cuda {n_rows}x{dim} fp16, per step = median / {steps}"
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn((n_rows, dim), device="cuda", generator=g).half()

    def run():
        if impl == "edgead":
            ops.coreset(x, steps + 1)
        else:
            anomalib_greedy(x, steps + 1)
        torch.cuda.synchronize()

    with torch.inference_mode():
        sub = x[:CHECK_ROWS]
        got = ops.coreset(sub, CHECK_STEPS) if impl == "edgead" else anomalib_greedy(sub, CHECK_STEPS)
        torch.cuda.synchronize()
        check_selection(sub.float().cpu().numpy(), CHECK_STEPS, got, rtol=1e-3)  # fp16 data, fp32 accumulation
        run()
        benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=0)
    benchmark.extra_info["per_step_ms"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / steps * 1e3
