"""EfficientAD-S / PUAD-S end to end at 256x256 (random weights: latency only): teacher + student +
autoencoder + map normalisation/combination + pad/resize + max score (+ PUAD's Mahalanobis head).

    python3 -m pytest bench/test_bench_efficientad.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds -q

CPU, batch 1: eager torch (model.predict) vs ONNX Runtime CPU of the exported graph
(session.run + post_efficientad.postprocess) vs ONNX Runtime CPU of the int8 graph (static QDQ
quantization, per-channel weights, edgead.export.quantize settings, calibrated on 4 random N(0,1)
images: latency only), side by side for EfficientAD-S, PUAD-S and EfficientAD-M.
CUDA (marked cuda, skipped without a GPU): batch 1 including the host->device copy of the image and the
device->host copy of score + map (target EfficientAD-S <= 0.8 ms, PUAD-S <= +5 %), eager fp32 vs a
CUDA graph of the fp16 channels-last network; batch 64 throughput (target >= 5000 img/s) reported in
extra_info['img_per_s'].
"""

import numpy as np
import pytest
from conftest import export_ort_session

import edgead

torch = pytest.importorskip("torch")
from edgead.models.efficientad import EfficientAD  # noqa: E402
from edgead.models.puad import PUAD  # noqa: E402
from edgead.runtime import post_efficientad  # noqa: E402

SIZE = 256
needs_cuda = pytest.mark.skipif(not edgead.cuda_available(), reason="no usable CUDA GPU")
VARIANTS = {"efficientad_s": (EfficientAD, "S"), "puad_s": (PUAD, "S"), "efficientad_m": (EfficientAD, "M")}


def model(variant):
    cls, size = VARIANTS[variant]
    torch.manual_seed(0)
    m = cls({"size": size, "image_size": [SIZE, SIZE], "allow_random_teacher": True})
    m.q_st.copy_(torch.tensor([0.5, 1.0]))
    m.q_ae.copy_(torch.tensor([0.5, 1.0]))
    return m.eval()


def image(batch=1):
    return np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)


def onnx_session(m, tmp_path, providers=("CPUExecutionProvider",)):
    return export_ort_session(m.export_module(), torch.from_numpy(image(1)), str(tmp_path / "ead.onnx"),
                              m.export_outputs, providers)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cpu_eager_b1(benchmark, variant):
    benchmark.group = f"{variant} cpu batch 1"
    m = model(variant)
    x = torch.from_numpy(image())

    def run():
        s, mp = m.predict(x)
        return s.numpy(), mp.numpy()

    s, mp = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert s.shape == (1,) and mp.shape == (1, SIZE, SIZE)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cpu_onnxruntime_b1(benchmark, variant, tmp_path):
    benchmark.group = f"{variant} cpu batch 1"
    m = model(variant)
    sess = onnx_session(m, tmp_path)
    x = image()
    ref = m.predict(torch.from_numpy(x))

    def run():
        return post_efficientad.postprocess(sess.run(None, {"image": x}))

    s, mp = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    np.testing.assert_allclose(s, ref[0].numpy(), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_cpu_onnxruntime_int8_b1(benchmark, variant, tmp_path):
    benchmark.group = f"{variant} cpu batch 1"
    pytest.importorskip("onnxruntime.quantization")
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from edgead.export.quantize import DEFAULT_OP_TYPES, ArrayCalibrationReader

    m = model(variant)
    onnx_session(m, tmp_path)  # writes tmp_path/ead.onnx
    src, dst = str(tmp_path / "ead.onnx"), str(tmp_path / "ead.int8.onnx")
    calib = np.random.default_rng(1).standard_normal((4, 3, SIZE, SIZE)).astype(np.float32)
    logging.getLogger().setLevel(logging.ERROR)
    quantize_static(src, dst, ArrayCalibrationReader.create(calib, 2), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(DEFAULT_OP_TYPES))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(dst, opts, providers=["CPUExecutionProvider"])
    x = image()

    def run():
        return post_efficientad.postprocess(sess.run(None, {"image": x}))

    s, mp = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert s.shape == (1,) and np.all(np.isfinite(mp))
    benchmark.extra_info["precision"] = "int8 (ORT QDQ, latency only)"


# ------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)
# ------------------------------------------------------------------------------------------------
class _Graphed:
    """fp16 channels-last export module replayed from a CUDA graph; copies in/out included in the call."""

    def __init__(self, m, batch):
        self.mod = m.export_module().cuda().half().to(memory_format=torch.channels_last)
        self.inp = torch.zeros(batch, 3, SIZE, SIZE, device="cuda", dtype=torch.half).to(memory_format=torch.channels_last)
        self.host_s = torch.empty(batch, pin_memory=True)
        self.host_m = torch.empty(batch, SIZE, SIZE, pin_memory=True)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.no_grad():
            for _ in range(3):
                self.mod(self.inp)
        torch.cuda.current_stream().wait_stream(s)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = self.mod(self.inp)

    def __call__(self, x_pinned):
        self.inp.copy_(x_pinned, non_blocking=True)
        self.graph.replay()
        self.host_s.copy_(self.out[0], non_blocking=True)
        self.host_m.copy_(self.out[1], non_blocking=True)
        torch.cuda.synchronize()
        return self.host_s, self.host_m


def _eager(m):
    mod = m.export_module().cuda()

    def run(x_pinned):
        with torch.no_grad():
            s, mp = mod(x_pinned.cuda(non_blocking=True))
            out = s.cpu(), mp.cpu()
        return out

    return run


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["eager_fp32", "cuda_graph_fp16"])
@pytest.mark.parametrize("variant", ["efficientad_s", "puad_s"])
def test_cuda_b1(benchmark, variant, mode):
    benchmark.group = "cuda batch 1 (incl. host<->device copies)"
    m = model(variant)
    x = torch.from_numpy(image()).pin_memory()
    fn = _eager(m) if mode == "eager_fp32" else _Graphed(m, 1)
    benchmark.pedantic(fn, args=(x,), rounds=200, warmup_rounds=20)
    benchmark.extra_info["target_ms"] = 0.8 if variant == "efficientad_s" else 0.84


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["eager_fp32", "cuda_graph_fp16"])
def test_cuda_b64_throughput(benchmark, mode):
    benchmark.group = "cuda batch 64 throughput (EfficientAD-S)"
    m = model("efficientad_s")
    x = torch.from_numpy(image(64)).pin_memory()
    fn = _eager(m) if mode == "eager_fp32" else _Graphed(m, 64)
    benchmark.pedantic(fn, args=(x,), rounds=30, warmup_rounds=5)
    benchmark.extra_info["img_per_s"] = 64 / benchmark.stats.stats.median
    benchmark.extra_info["target_img_per_s"] = 5000
