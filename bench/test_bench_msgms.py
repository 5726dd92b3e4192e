"""MSGMS anomaly map: edgead kernels vs the plain-torch reference, side by side per group.

    python3 -m pytest bench/test_bench_msgms.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

CUDA cases (skipped without a GPU) time LOOP back-to-back calls plus one synchronize per round;
extra_info['per_call_ms'] = median / LOOP.

Before timing, both rows compute the map once and compare it with the other implementation
(edgead kernel vs ops_reference's plain torch): maps lie in [0, 2]; float32 arithmetic in a different
order differs by ~1e-6, so ATOL = 1e-4 (a wrong scale, filter or border is off by >= 1e-2).
"""
import numpy as np
import pytest

import edgead
from edgead import ops

torch = pytest.importorskip("torch")
from edgead import ops_reference as R  # noqa: E402

from _checks import check_close  # noqa: E402

ATOL = 1e-4
SIZE = 256
LOOP = 50
needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")


def inputs(batch, channels=1):
    rng = np.random.default_rng(0)
    x = rng.random((batch, channels, SIZE, SIZE), dtype=np.float32)
    y = np.clip(x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
    return x, y


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("impl", ["edgead", "torch"])
def test_msgms_cpu(benchmark, impl, batch):
    benchmark.group = f"msgms cpu {SIZE}x{SIZE} batch {batch}"
    x, y = inputs(batch)
    with torch.inference_mode():
        check_close(ops.msgms_map(x, y), R.msgms_map_reference(torch.from_numpy(x), torch.from_numpy(y)), ATOL, "msgms cpu")
    if impl == "edgead":
        out = np.empty((batch, SIZE, SIZE), np.float32)
        benchmark(ops.msgms_map, x, y, out=out)
    else:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        with torch.inference_mode():
            benchmark(R.msgms_map_reference, tx, ty)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("impl", ["edgead", "torch"])
def test_msgms_cuda(benchmark, impl, batch):
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    benchmark.group = f"msgms cuda {SIZE}x{SIZE} batch {batch} (x{LOOP} calls)"
    x, y = inputs(batch)
    gx, gy = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    out = torch.empty((batch, SIZE, SIZE), device="cuda")
    with torch.inference_mode():
        got, ref = ops.msgms_map(gx, gy), R.msgms_map_reference(gx, gy)
        torch.cuda.synchronize()
        check_close(got, ref, ATOL, "msgms cuda")
        check_close(got, R.msgms_map_reference(torch.from_numpy(x), torch.from_numpy(y)), ATOL, "msgms cuda vs cpu")
    if impl == "edgead":
        def run():
            for _ in range(LOOP):
                ops.msgms_map(gx, gy, out=out)
            torch.cuda.synchronize()
    else:
        def run():
            with torch.inference_mode():
                for _ in range(LOOP):
                    R.msgms_map_reference(gx, gy)
            torch.cuda.synchronize()

    run()
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    benchmark.extra_info["per_call_ms"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / LOOP * 1e3
