"""PatchCore benchmarks.

    python3 -m pytest bench/test_bench_patchcore.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

predict: PatchCore.predict latency, batch 1, 224x224, MobileNetV2 layer2+layer3 (128-d embeddings,
28x28 = 784 patches), memory bank of 15,680 rows (10% of 200 images x 784 patches; random rows and
random neighbour table: latency does not depend on the values). Weights: the offline MobileNetV2 file
when ../shared/weights has it, else random init (same latency). CPU with torch threads as set by the
environment; CUDA (marked cuda, skipped without a GPU): eager fp32, synchronised per call.

coreset: memory-bank selection of PatchCore.fit (PatchCore.select_bank: 10% greedy k-center of
200 x 784 = 156,800 patch embeddings, D = 128) end to end on CPU with edgead.ops.coreset, against a
plain torch greedy loop (anomalib's KCenterGreedy: norm, running min, argmax per step). The torch loop
runs TORCH_STEPS steps and extra_info['extrapolated_full_s'] scales its median to all 15,680 steps.

EDGEAD_BENCH_THREADS=n sets torch.set_num_threads(n) (default: torch's own choice). On a machine
shared with other jobs use 1: torch's OpenMP threads spin-wait and a 2-thread MobileNetV2 forward
measured 3.7-6.6 s instead of 0.15 s on an oversubscribed 2-core box.
"""
import os
import warnings

import numpy as np
import pytest

import edgead

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from edgead.models.patchcore import PatchCore  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(os.path.dirname(REPO), "shared", "weights", "mobilenet_v2_imagenet.safetensors")
N_IMAGES, N_PATCH, D = 200, 784, 128
FULL = N_IMAGES * N_PATCH // 10
TORCH_STEPS = int(os.environ.get("EDGEAD_BENCH_TORCH_STEPS", 100))
if os.environ.get("EDGEAD_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["EDGEAD_BENCH_THREADS"]))


def _model(device="cpu"):
    cfg = {"backbone": "mobilenet_v2", "image_size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}
    if os.path.isfile(WEIGHTS):
        cfg["weights"] = WEIGHTS
    else:
        cfg["allow_random"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = PatchCore(cfg)
    g = torch.Generator().manual_seed(0)
    m.memory_bank = torch.randn(FULL, D, generator=g)
    m.bank_neighbors = torch.randint(0, FULL, (FULL, 9), generator=g)
    return m.to(device).eval()


@pytest.mark.benchmark(group="patchcore predict b1 224 (cpu)")
def test_predict_cpu(benchmark):
    m = _model("cpu")
    x = torch.randn(1, 3, 224, 224)
    m.predict(x)
    s, maps = benchmark(m.predict, x)
    assert s.shape == (1,) and maps.shape == (1, 224, 224)


needs_cuda = pytest.mark.skipif(not (edgead.cuda_available() and torch.cuda.is_available()), reason="no usable CUDA GPU")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.benchmark(group="patchcore predict b1 224 (cuda)")
def test_predict_cuda(benchmark):
    m = _model("cuda")
    x = torch.randn(1, 3, 224, 224, device="cuda")
    for _ in range(3):
        m.predict(x)
    torch.cuda.synchronize()

    def run():
        out = m.predict(x)
        torch.cuda.synchronize()
        return out

    s, maps = benchmark(run)
    assert s.device.type == "cuda" and maps.shape == (1, 224, 224)


@pytest.fixture(scope="module")
def features():
    return torch.randn(N_IMAGES * N_PATCH, D, generator=torch.Generator().manual_seed(1))


@pytest.mark.benchmark(group="patchcore coreset 10% of 200x784 (cpu)")
def test_coreset_edgead_end_to_end(benchmark, features):
    m = _model("cpu")
    bank = benchmark.pedantic(m.select_bank, args=(features,), rounds=1, iterations=1)
    assert bank.shape == (FULL, D)
    benchmark.extra_info["steps"] = FULL


def torch_greedy(features, n, start=0):
    min_d = None
    idx = start
    out = [idx]
    for _ in range(n - 1):
        d = torch.linalg.norm(features - features[idx : idx + 1], dim=1)
        min_d = d if min_d is None else torch.minimum(min_d, d)
        idx = int(torch.argmax(min_d))
        out.append(idx)
    return out


@pytest.mark.benchmark(group="patchcore coreset 10% of 200x784 (cpu)")
def test_coreset_torch_loop_baseline(benchmark, features):
    out = benchmark.pedantic(torch_greedy, args=(features, TORCH_STEPS + 1), rounds=1, iterations=1)
    assert len(out) == TORCH_STEPS + 1
    benchmark.extra_info["steps"] = TORCH_STEPS
    benchmark.extra_info["extrapolated_full_s"] = benchmark.stats.stats.median / TORCH_STEPS * FULL
