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


def reference(m, x):
    """Independent PatchCore scoring of the model's own embeddings, float64 NumPy + OpenCV: nearest bank
    row by the float64 distance (no edgead.ops.knn), the paper's reweighting w * s*, w = 1 - exp(s*) /
    sum_j exp(d_j) over the nearest bank row's bank_neighbors, bilinear upsampling (cv2 INTER_LINEAR =
    torch align_corners=False when enlarging), Gaussian blur ksize 2*ceil(4 sigma)+1, reflect-101."""
    import math

    import cv2

    with torch.no_grad():
        emb = m.embedder(x.float()).double().cpu().numpy()  # (B, N, D)
    bank = m.memory_bank.double().cpu().numpy()
    neigh = m.bank_neighbors.cpu().numpy()
    bn = (bank ** 2).sum(1)
    scores, maps = [], []
    sigma = float(m.config["blur_sigma"])
    k = 2 * int(math.ceil(4 * sigma)) + 1
    gh, gw = m.grid
    for e in emb:
        d2 = np.maximum((e ** 2).sum(1)[:, None] - 2 * e @ bank.T + bn[None], 0)
        nn = d2.argmin(1)
        dist = np.sqrt(((e - bank[nn]) ** 2).sum(1))
        a = int(dist.argmax())
        s_star = dist[a]
        d_nb = np.sqrt(((e[a][None] - bank[neigh[nn[a]]]) ** 2).sum(1))
        mx = max(s_star, d_nb.max())
        scores.append((1 - np.exp(s_star - mx) / np.exp(d_nb - mx).sum()) * s_star)
        up = cv2.resize(dist.reshape(gh, gw).astype(np.float32), (x.shape[-1], x.shape[-2]), interpolation=cv2.INTER_LINEAR)
        maps.append(cv2.GaussianBlur(up, (k, k), sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101))
    return np.array(scores), np.stack(maps)


def check_predict(out, ref):
    """Scores/maps of predict vs the reference: patch distances ~16 (random bank, D = 128); fp32 kNN and
    the recomputed winner distance agree to ~1e-5 relative; blur and resize in fp32: rtol 1e-4."""
    from _checks import check_close

    s, maps = out
    tol = 1e-4 * float(np.abs(ref[1]).max())
    check_close(maps, ref[1], tol, "patchcore maps")
    check_close(s, ref[0], 1e-4 * float(np.abs(ref[0]).max()), "patchcore scores")


@pytest.mark.benchmark(group="patchcore predict b1 224 (cpu)")
def test_predict_cpu(benchmark):
    m = _model("cpu")
    x = torch.randn(1, 3, 224, 224)
    check_predict(m.predict(x), reference(m, x))
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
        out = m.predict(x)
    torch.cuda.synchronize()
    check_predict(out, reference(m, x))

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
    # check first on a subset: select_bank = rows of the features picked by greedy k-center on their JL
    # projection; the pick must be the float64 reference's (bench/_checks.check_selection)
    from _checks import check_selection

    sub = features[:5000]
    bank = m.select_bank(sub)
    g = torch.Generator().manual_seed(int(m.config["seed"]))
    kdim = int(m.config["coreset_dim"])
    proj = sub @ (torch.randn(D, kdim, generator=g) / kdim ** 0.5) if kdim and kdim < D else sub
    rows = {tuple(r) for r in sub.numpy().round(6).tolist()}
    assert all(tuple(r) in rows for r in bank.numpy().round(6).tolist()), "bank rows are not feature rows"
    sel = [int((sub == r).all(1).nonzero()[0]) for r in bank[:50]]
    from edgead.ops_reference import coreset_reference

    check_selection(proj.numpy(), 50, sel, ref=coreset_reference(proj.numpy(), 50, start=sel[0]))
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
    from _checks import check_selection

    check_selection(features[:5000].numpy(), 100, torch_greedy(features[:5000], 100))
    out = benchmark.pedantic(torch_greedy, args=(features, TORCH_STEPS + 1), rounds=1, iterations=1)
    assert len(out) == TORCH_STEPS + 1
    benchmark.extra_info["steps"] = TORCH_STEPS
    benchmark.extra_info["extrapolated_full_s"] = (benchmark.stats.stats.median if benchmark.stats else float('nan')) / TORCH_STEPS * FULL
