"""Runtime latency per backend with pytest-benchmark, on a tiny stand-in artifact (32x32 conv net).

    pytest bench/test_bench_runtime.py --benchmark-json bench/results/runtime.json

CPU backends here; CUDA variants (torch on CUDA, onnxruntime CUDA, TensorRT fp16) are marked cuda
and skip without a GPU / without their runtime (onnxruntime-gpu's CUDAExecutionProvider, tensorrt). For real models use `edgead bench <artifact>`.
"""
import os
import sys

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from test_runtime import TinyModel, make_tiny_artifact, standin_post  # noqa: E402

from edgead.runtime import Detector  # noqa: E402
from edgead.runtime import postprocess as pp  # noqa: E402

try:
    import edgead

    HAS_CUDA = edgead.cuda_available()
except Exception:  # pragma: no cover
    HAS_CUDA = False


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pp.register("fader", standin_post)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_tiny_artifact(str(tmp_path_factory.mktemp("bench") / "tiny"))
    torch.set_num_threads(n)
    pp.unregister("fader")


CASES = [
    ("onnxruntime", "cpu", None),
    ("torch", "cpu", None),
    pytest.param("onnxruntime", "cuda", None, marks=pytest.mark.cuda),
    pytest.param("torch", "cuda", "fp16", marks=pytest.mark.cuda),
    pytest.param("tensorrt", "cuda", "fp16", marks=pytest.mark.cuda),
]


def skip_unless_backend_installed(backend, device):
    """Skip (not fail) a CUDA row whose runtime is not installed: onnxruntime without onnxruntime-gpu's
    CUDAExecutionProvider (run 1 on an H200 had only the CPU package), tensorrt not importable (or a broken
    install) or no CuPy / cuda-python for its device buffers. torch rows need only HAS_CUDA."""
    from edgead.runtime import backends

    if backend == "onnxruntime" and device == "cuda":
        import onnxruntime as ort

        avail = ort.get_available_providers()
        if "CUDAExecutionProvider" not in avail:
            pytest.skip(f"onnxruntime without CUDA: device='cuda' needs onnxruntime-gpu (CUDAExecutionProvider); "
                        f"available: {avail}")
    if backend == "tensorrt":
        try:
            backends.import_tensorrt()
        except Exception as e:  # not importorskip: a broken install raises OSError / non-ModuleNotFound errors
            pytest.skip(f"tensorrt cannot be imported here: {e}")
        if backends._cupy() is None and backends._cudart() is None:
            pytest.skip("the TensorRT backend needs cupy or cuda-python for device memory; neither is installed")


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("backend,device,precision", CASES)
def test_detector_latency(benchmark, tiny, backend, device, precision, batch):
    if device == "cuda" and not HAS_CUDA:
        pytest.skip("no GPU")
    skip_unless_backend_installed(backend, device)
    path, model = tiny
    det = Detector.load(path, backend=backend, device=device, precision=precision,
                        model=TinyModel() if backend == "torch" else None)
    images = np.random.default_rng(0).integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
    stages = {"pre": [], "network": [], "post": []}
    det.add_timing_hook(lambda stage, s, n: stages[stage].append(s))
    det(images)  # warm-up (CUDA graphs / TensorRT context creation)
    # check first: the backend's scores/maps on the preprocessed batch vs the stand-in's PyTorch predict on
    # the CPU (fp32: rtol 1e-4, atol 1e-4 * max|ref|, as tests/test_runtime.py; fp16: 1e-2)
    from edgead.data.transforms import Preprocessing

    x = Preprocessing.from_dict(dict(det.artifact.preprocessing)).batch(list(images))
    with torch.no_grad():
        ref_s, ref_m = (t.numpy() for t in model.float().cpu().predict(torch.from_numpy(x)))
    s, m = (np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, np.float32) for t in det.infer_preprocessed(x))
    tol = 1e-2 if precision == "fp16" else 1e-4
    np.testing.assert_allclose(m, ref_m, rtol=tol, atol=tol * float(np.abs(ref_m).max()))
    np.testing.assert_allclose(s, ref_s, rtol=tol, atol=tol * float(np.abs(ref_s).max()))
    res = benchmark(det, images)
    assert res.scores.shape == (batch,)
    benchmark.extra_info.update({
        "backend": backend, "device": device, "precision": precision or "fp32", "batch": batch,
        **{f"{k}_median_s": float(np.median(v)) for k, v in stages.items() if v},
    })
