"""FADeR soft mask on U-Net skip features (256x256 input, 5-level U-Net: 4 skips), edgead vs torch.

    python3 -m pytest bench/test_bench_softmask.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

Predictions are (1, 16, 16) (patch size 16). CUDA cases (skipped without a GPU) time LOOP
back-to-back calls plus one synchronize per round; extra_info['per_call_us'] = median / LOOP.

Before timing, both rows compare the edgead kernel with ops_reference's torch soft mask on the same
inputs: the mask is in [0, 1] and the product is one float32 multiply, so fp32 results agree to
1 ulp (atol 1e-6 * max|features|); fp16 features are rounded once: atol 1e-3 * max|features| (fp16 eps/2).
"""
import numpy as np
import pytest

import edgead
from edgead import ops

torch = pytest.importorskip("torch")
from edgead import ops_reference as R  # noqa: E402

from _checks import check_close  # noqa: E402
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
    with torch.inference_mode():
        check_close(ops.softmask_apply(p, f), R.softmask_apply_reference(torch.from_numpy(p), torch.from_numpy(f)),
                    1e-6 * float(np.abs(f).max()), "softmask cpu")
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
    with torch.inference_mode():
        got, ref = ops.softmask_apply(tp, tf), R.softmask_apply_reference(tp, tf)
        torch.cuda.synchronize()
        tol = (1e-3 if dtype == "float16" else 1e-6) * float(np.abs(f.astype(np.float32)).max())
        check_close(got, ref, tol, f"softmask cuda {dtype}")
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
    benchmark.extra_info["per_call_us"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / LOOP * 1e6
