"""FADeR soft mask on U-Net skip features (256x256 input, 5-level U-Net: 4 skips), edgead vs torch.

    python3 -m pytest bench/test_bench_softmask.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

Predictions are (1, 16, 16) (patch size 16). CUDA cases (skipped without a GPU) time LOOP
back-to-back calls plus one synchronize per round; extra_info['per_call_us'] = median / LOOP.
"""
import numpy as np
import pytest

import edgead
from edgead import ops

torch = pytest.importorskip("torch")
from edgead import ops_reference as R  # noqa: E402

SKIPS = [(1, 32, 128, 128), (1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16)]
LOOP = 100
needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")


def inputs(shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.random((shape[0], 16, 16), dtype=np.float32), rng.standard_normal(shape).astype(dtype)


def sid(shape):
    return "x".join(map(str, shape))


@pytest.mark.parametrize("shape", SKIPS, ids=sid)
@pytest.mark.parametrize("impl", ["edgead", "torch"])
def test_softmask_cpu(benchmark, impl, shape):
    benchmark.group = f"softmask cpu {sid(shape)}"
    p, f = inputs(shape)
    if impl == "edgead":
        out = np.empty_like(f)
        benchmark(ops.softmask_apply, p, f, out=out)
    else:
        tp, tf = torch.from_numpy(p), torch.from_numpy(f)
        with torch.inference_mode():
            benchmark(R.softmask_apply_reference, tp, tf)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("shape", SKIPS, ids=sid)
@pytest.mark.parametrize("impl", ["edgead", "torch"])
def test_softmask_cuda(benchmark, impl, shape, dtype):
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    benchmark.group = f"softmask cuda {sid(shape)} {dtype} (x{LOOP} calls)"
    p, f = inputs(shape, np.dtype(dtype))
    tp, tf = torch.from_numpy(p).cuda(), torch.from_numpy(f).cuda()
    out = torch.empty_like(tf)

    if impl == "edgead":
        def run():
            for _ in range(LOOP):
                ops.softmask_apply(tp, tf, out=out)
            torch.cuda.synchronize()
    else:
        def run():
            with torch.inference_mode():
                for _ in range(LOOP):
                    R.softmask_apply_reference(tp, tf)
            torch.cuda.synchronize()

    run()
    benchmark.pedantic(run, rounds=20, warmup_rounds=2)
    benchmark.extra_info["per_call_us"] = benchmark.stats.stats.median / LOOP * 1e6
