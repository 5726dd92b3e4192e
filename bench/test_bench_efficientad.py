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


def reference(m, x):
    """Independent EfficientAD maps (float64 NumPy + OpenCV after the three networks; see
    tests/test_efficientad.reference_efficientad): teacher normalisation, the two squared-difference maps,
    quantile normalisation, 0.5/0.5 combination, 4-pixel zero padding, bilinear resize, score = max (the
    EfficientAD score; PUAD adds its head, so PUAD rows compare maps only)."""
    import cv2

    xt = torch.as_tensor(np.asarray(x, np.float32))
    with torch.no_grad():
        t = m.teacher(xt).double().numpy()
        s = m.student(xt).double().numpy()
        a = m.autoencoder(xt).double().numpy()
    c = int(m.out_channels)
    t = (t - m.teacher_mean.double().numpy()) / m.teacher_std.double().numpy()
    st = ((t - s[:, :c]) ** 2).mean(axis=1)
    ae = ((a - s[:, c:]) ** 2).mean(axis=1)
    qst, qae = m.q_st.double().numpy(), m.q_ae.double().numpy()
    comb = 0.05 * (st - qst[0]) / (qst[1] - qst[0]) + 0.05 * (ae - qae[0]) / (qae[1] - qae[0])
    maps = np.stack([cv2.resize(np.pad(k, 4), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR) for k in comb])
    return maps.reshape(len(maps), -1).max(axis=1), maps


def check(variant, s, mp, ref, rel):
    """maps (and EfficientAD scores) within rel * max|reference map| of the reference."""
    from _checks import check_close

    tol = rel * float(np.abs(ref[1]).max())
    check_close(np.asarray(mp, np.float32).reshape(ref[1].shape), ref[1], tol, f"{variant} maps")
    if not variant.startswith("puad"):
        check_close(np.asarray(s, np.float32).reshape(-1), ref[0], tol, f"{variant} scores")


# fp32 rows: float32 networks vs the float64 post-network, rel 1e-4 of the map range; fp16 rows: rel 2e-2
# (fp16 activations through ~10 convolutions per network); int8 (latency only): rel 1.0, i.e. the map is
# finite and of the right magnitude (a broken graph is off by orders of magnitude or NaN).
REL_FP32, REL_FP16, REL_INT8 = 1e-4, 2e-2, 1.0


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

    check(variant, *run(), reference(m, x), REL_FP32)
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

    check(variant, *run(), reference(m, x), REL_FP32)
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

    check(variant, *run(), reference(m, x), REL_INT8)
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
    ref = reference(m, image())
    fn = _eager(m) if mode == "eager_fp32" else _Graphed(m, 1)
    check(variant, *(t.clone().numpy() for t in fn(x)), ref, REL_FP32 if mode == "eager_fp32" else REL_FP16)
    benchmark.pedantic(fn, args=(x,), rounds=200, warmup_rounds=20)
    benchmark.extra_info["target_ms"] = 0.8 if variant == "efficientad_s" else 0.84


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("mode", ["eager_fp32", "cuda_graph_fp16"])
def test_cuda_b64_throughput(benchmark, mode):
    benchmark.group = "cuda batch 64 throughput (EfficientAD-S)"
    m = model("efficientad_s")
    x = torch.from_numpy(image(64)).pin_memory()
    ref = reference(m, image(64)[:4])
    fn = _eager(m) if mode == "eager_fp32" else _Graphed(m, 64)
    s, mp = (t.clone().numpy() for t in fn(x))
    check("efficientad_s", s[:4], mp[:4], ref, REL_FP32 if mode == "eager_fp32" else REL_FP16)
    benchmark.pedantic(fn, args=(x,), rounds=30, warmup_rounds=5)
    benchmark.extra_info["img_per_s"] = 64 / (benchmark.stats.stats.median if benchmark.stats else float('nan'))
    benchmark.extra_info["target_img_per_s"] = 5000
