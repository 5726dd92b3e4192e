"""edgead.runtime: Detector on every available backend, torch-free import, thresholds, threads, bench CLI.

Parity tolerances (fp32, CPU): backend maps/scores vs the PyTorch model's predict within
rtol 1e-4 and atol 1e-4 * max(1, max|reference|). fp16 (GPU tests marked cuda): rtol 1e-2,
atol 1e-2 * max|reference|.
"""
import concurrent.futures as cf
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

import edgead  # noqa: E402
from edgead.artifact import save_artifact  # noqa: E402
from edgead.models.base import AnomalyModel  # noqa: E402
from edgead.runtime import BatchResult, Detector, ExportMissingError, Result, postprocess, resolve_threshold  # noqa: E402
from edgead.runtime import backends as rb  # noqa: E402
from tiny_patchcore import build_tiny_model, textures  # noqa: E402  (tests/ is on sys.path)

PRE = {"size": [32, 32], "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "linear"}
THRESHOLDS = {"image": 0.5, "pixel": 0.4,
              "candidates": {"image": {"f1": 0.5, "fpr_0.005": 0.9}, "pixel": {"f1": 0.4, "fpr_0.005": 0.8}}}


# ----------------------------------------------------------------------------------------------
# a tiny stand-in model (real models are tested below when their code is present)
# ----------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        amap = torch.sigmoid(self.c2(h))
        return amap, h.mean(dim=(2, 3))


def standin_post(outputs, artifact):
    """NumPy post-processing of the stand-in (what post_<model>.py does for real models)."""
    maps = np.asarray(outputs["amap"])[:, 0]
    scores = maps.reshape(maps.shape[0], -1).max(axis=1) + 0.1 * np.asarray(outputs["aux"]).mean(axis=1)
    return scores, maps


class TinyModel(AnomalyModel):
    model_type = "fader"  # any registered type; its post-processing is overridden in these tests
    export_outputs = ("amap", "aux")

    def __init__(self, config=None, seed=0):
        super().__init__(config)
        torch.manual_seed(seed)
        self.net = _Net()

    def export_module(self):
        return self.net

    @torch.no_grad()
    def predict(self, x):
        amap, aux = self.net(x)
        maps = amap[:, 0]
        return maps.flatten(1).amax(1) + 0.1 * aux.mean(1), maps

    @classmethod
    def from_artifact(cls, artifact):
        m = cls(artifact.config)
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in artifact.tensors.items()})
        return m.eval()


def make_tiny_artifact(path, export=True):
    model = TinyModel().eval()
    save_artifact(path, "fader", {"standin": True}, PRE, model.artifact_tensors(), thresholds=THRESHOLDS)
    if export:
        from edgead.export.onnx import export_onnx

        export_onnx(path, model=model)
    return path, model


@pytest.fixture(autouse=True)
def _standin_post():
    from edgead.runtime import postprocess as pp

    prev = pp._OVERRIDES.get("fader")
    pp.register("fader", standin_post)
    yield
    pp.unregister("fader")
    if prev is not None:
        pp.register("fader", prev[0], prev[1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_artifact(str(tmp_path_factory.mktemp("rt") / "tiny"))


def images(n=4, h=48, w=40, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _close(a, b, rtol=1e-4, atol_rel=1e-4):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol_rel * max(1.0, float(np.abs(b).max()) if b.size else 1.0))


def _reference(model, pre_dict, imgs):
    from edgead.data.transforms import Preprocessing

    x = Preprocessing.from_dict(dict(pre_dict)).batch(list(imgs))
    with torch.no_grad():
        s, m = model.predict(torch.from_numpy(x))
    return s.numpy(), m.numpy()


# ----------------------------------------------------------------------------------------------
# torch-free
# ----------------------------------------------------------------------------------------------
def test_runtime_import_and_onnxruntime_detector_do_not_import_torch(tiny):
    path, _ = tiny
    code = textwrap.dedent(f"""
        import sys, numpy as np
        import edgead.runtime, edgead.runtime.bench, edgead.export
        from edgead.runtime import Detector, postprocess
        def post(outputs, artifact):
            maps = outputs["amap"][:, 0]
            return maps.reshape(len(maps), -1).max(1) + 0.1 * outputs["aux"].mean(1), maps
        postprocess.register("fader", post)
        det = Detector.load({path!r}, backend="onnxruntime")
        r = det(np.zeros((40, 50, 3), np.uint8))
        assert r.anomaly_map.shape == (40, 50), r.anomaly_map.shape
        bad = [m for m in ("torch", "torchvision", "tensorrt") if m in sys.modules]
        assert not bad, bad
        print("OK")
    """)
    # The installed edgead (a source checkout's python/ has no built _C in CI).
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_onnxruntime_without_export_tells_to_run_edgead_export(tmp_path):
    path, _ = make_tiny_artifact(str(tmp_path / "noexport"), export=False)
    with pytest.raises(ExportMissingError, match="edgead export"):
        Detector.load(path, backend="onnxruntime")


# ----------------------------------------------------------------------------------------------
# parity: every backend against the torch model's predict
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_backend_parity_with_predict(tiny, backend):
    path, model = tiny
    det = Detector.load(path, backend=backend, device="cpu", model=model if backend == "torch" else None)
    imgs = images(5)
    ref_s, ref_m = _reference(model, PRE, imgs)
    res = det(imgs)
    assert isinstance(res, BatchResult) and len(res) == 5
    _close(res.scores, ref_s)
    # maps come back at the input image size (cv2 linear resize of the model-size map)
    expected = np.stack([cv2.resize(m, (40, 48), interpolation=cv2.INTER_LINEAR) for m in ref_m])
    assert res.anomaly_maps.shape == (5, 48, 40)
    _close(res.anomaly_maps, expected)
    s, m = det.infer_preprocessed(
        __import__("edgead.data.transforms", fromlist=["x"]).Preprocessing.from_dict(PRE).batch(list(imgs)))
    _close(s, ref_s)
    _close(m, ref_m)


def test_auto_backend_here():
    backend, device = rb.select_backend()
    if rb.cuda_device_count() == 0:
        assert (backend, device) == ("onnxruntime", "cpu")
    assert rb.select_backend("cpu") == ("onnxruntime", "cpu")
    with pytest.raises(ValueError, match="device"):
        rb.select_backend("tpu")


@pytest.mark.skipif(rb.cuda_device_count() > 0, reason="checks the no-GPU error")
def test_cuda_request_without_gpu_is_a_clear_error(tiny):
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        Detector.load(tiny[0], backend="auto", device="cuda")


# ----------------------------------------------------------------------------------------------
# inputs and outputs
# ----------------------------------------------------------------------------------------------
def test_input_forms(tiny, tmp_path):
    path, model = tiny
    det = Detector.load(path, backend="onnxruntime")
    imgs = images(3)
    batch = det(imgs)
    one = det(imgs[1])
    assert isinstance(one, Result) and one.anomaly_map.shape == (48, 40)
    _close(one.score, batch.scores[1])
    _close(one.anomaly_map, batch.anomaly_maps[1])
    grey = det(imgs[0][:, :, 0])
    assert grey.anomaly_map.shape == (48, 40)
    # paths (written BGR by cv2, read back RGB by edgead.data.io)
    paths = []
    for i, im in enumerate(imgs):
        p = str(tmp_path / f"{i}.png")
        cv2.imwrite(p, cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        paths.append(p)
    from_paths = det(paths)
    _close(from_paths.scores, batch.scores)
    assert from_paths.paths == paths and from_paths[2].path == paths[2]
    single_path = det(paths[0])
    assert isinstance(single_path, Result)
    # mixed sizes: maps become a list at each image's size
    mixed = det([imgs[0], images(1, 64, 80)[0]])
    assert isinstance(mixed.anomaly_maps, list)
    assert mixed.anomaly_maps[1].shape == (64, 80) and mixed.masks[1].shape == (64, 80)
    assert [r.score for r in mixed] == list(mixed.scores)
    empty = det([])
    assert len(empty) == 0
    with pytest.raises(TypeError, match="images"):
        det(123)
    with pytest.raises(ValueError, match="shape"):
        det(np.zeros((2, 3, 4, 5, 6), np.uint8))


def test_large_batches_are_chunked(tiny):
    path, model = tiny
    det = Detector.load(path, backend="onnxruntime", batch_size=3)
    calls = []
    det.add_timing_hook(lambda stage, s, n: calls.append((stage, n)))
    imgs = images(7, 32, 32)
    res = det(imgs)
    assert [n for st, n in calls if st == "network"] == [3, 3, 1]
    ref_s, ref_m = _reference(model, PRE, imgs)
    _close(res.scores, ref_s)
    _close(res.anomaly_maps, ref_m)


def test_timing_hooks_report_each_stage(tiny):
    det = Detector.load(tiny[0], backend="onnxruntime")
    seen = []
    hook = lambda stage, s, n: seen.append((stage, s, n))  # noqa: E731
    det.add_timing_hook(hook)
    det(images(2))
    assert {st for st, _, _ in seen} == {"pre", "network", "post"}
    assert all(s >= 0 and n == 2 for _, s, n in seen)
    det.remove_timing_hook(hook)
    seen.clear()
    det(images(1))
    assert seen == []


# ----------------------------------------------------------------------------------------------
# thresholds
# ----------------------------------------------------------------------------------------------
def test_resolve_threshold():
    assert resolve_threshold(THRESHOLDS, "image", None) == 0.5
    assert resolve_threshold(THRESHOLDS, "image", "f1") == 0.5
    assert resolve_threshold(THRESHOLDS, "image", "fpr") == 0.9
    assert resolve_threshold(THRESHOLDS, "image", "fpr_0.005") == 0.9
    assert resolve_threshold(THRESHOLDS, "pixel", "fpr") == 0.8
    assert resolve_threshold(THRESHOLDS, "image", 0.25) == 0.25
    assert resolve_threshold({}, "image", None) is None
    with pytest.raises(ValueError, match="available: \\['f1', 'fpr_0.005'\\]"):
        resolve_threshold(THRESHOLDS, "image", "youden")
    with pytest.raises(ValueError, match="ambiguous"):
        resolve_threshold({"candidates": {"image": {"fpr_0.01": 1, "fpr_0.05": 2}}}, "image", "fpr")
    flat = {"image": 1.0, "pixel": 2.0, "candidates": {"val_image_max": 3.0, "val_image_q0.995": 1.0, "image_f1": 4.0,
                                                       "image_fpr0.005": 5.0, "pixel_f1": 6.0, "pixel_fpr0.005": 7.0,
                                                       "val_pixel_q0.995": 2.0}}  # edgead.pipeline's layout
    assert resolve_threshold(flat, "image", "f1") == 4.0
    assert resolve_threshold(flat, "image", "fpr") == 5.0
    assert resolve_threshold(flat, "image", "fpr0.005") == 5.0
    assert resolve_threshold(flat, "image", "image_fpr0.005") == 5.0
    assert resolve_threshold(flat, "image", "val_max") == 3.0
    assert resolve_threshold(flat, "image", "val_q0.995") == 1.0
    assert resolve_threshold(flat, "pixel", "fpr") == 7.0
    assert resolve_threshold(flat, "pixel", None) == 2.0
    with pytest.raises(ValueError, match="no pixel threshold candidate"):
        resolve_threshold({"image": 1.0, "candidates": {"image_f1": 4.0}}, "pixel", "f1")
    with pytest.raises(ValueError, match="no active image threshold"):
        resolve_threshold({}, "image", "default")
    with pytest.raises(ValueError, match="finite"):
        resolve_threshold(THRESHOLDS, "image", float("nan"))
    with pytest.raises(TypeError):
        resolve_threshold(THRESHOLDS, "image", True)


def test_labels_and_masks_follow_thresholds(tiny):
    path, _ = tiny
    imgs = images(6)
    det = Detector.load(path, backend="onnxruntime")
    res = det(imgs)
    assert det.image_threshold == 0.5 and det.pixel_threshold == 0.4
    np.testing.assert_array_equal(res.labels, res.scores >= 0.5)
    np.testing.assert_array_equal(res.masks, res.anomaly_maps >= 0.4)
    assert res.masks.dtype == bool
    mid = float(np.median(res.scores))
    det2 = Detector.load(path, backend="onnxruntime", threshold=mid, pixel_threshold="fpr")
    res2 = det2(imgs)
    np.testing.assert_array_equal(res2.labels, res2.scores >= mid)
    np.testing.assert_array_equal(res2.masks, res2.anomaly_maps >= 0.8)
    with pytest.raises(ValueError, match="candidate"):
        Detector.load(path, backend="onnxruntime", threshold="nope")


def test_missing_thresholds_give_none(tmp_path):
    model = TinyModel()
    path = str(tmp_path / "nothr")
    save_artifact(path, "fader", {}, PRE, model.artifact_tensors())
    from edgead.export.onnx import export_onnx

    export_onnx(path, model=model)
    r = Detector.load(path, backend="onnxruntime")(images(1)[0])
    assert r.label is None and r.mask is None


# ----------------------------------------------------------------------------------------------
# threads
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_concurrent_calls_match_sequential(tiny, backend):
    path, model = tiny
    det = Detector.load(path, backend=backend, device="cpu", model=model if backend == "torch" else None)
    batches = [images(1 + i % 3, 40, 36, seed=i) for i in range(12)]
    seq = [det(b) for b in batches]
    with cf.ThreadPoolExecutor(4) as ex:
        par = list(ex.map(det, batches))
    for a, b in zip(seq, par):
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.anomaly_maps, b.anomaly_maps)


# ----------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------
def test_load_argument_errors(tiny):
    path, _ = tiny
    with pytest.raises(ValueError, match="backend"):
        Detector.load(path, backend="tflite")
    with pytest.raises(ValueError, match="device"):
        Detector.load(path, backend="onnxruntime", device="tpu")
    with pytest.raises(ValueError, match="precision"):
        Detector.load(path, backend="onnxruntime", precision="fp16")
    with pytest.raises(ValueError, match="precision"):
        Detector.load(path, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="fp16"):
        Detector.load(path, backend="torch", device="cpu", precision="fp16", model=TinyModel())
    with pytest.raises(Exception, match="not an edgead artifact|does not exist"):
        Detector.load(path + "-missing", backend="onnxruntime")


def test_postprocess_dispatch_errors():
    from edgead.runtime import postprocess as pp

    with pytest.raises(NotImplementedError, match="no post-processing"):
        pp.get_postprocessor("nosuchmodel")
    pp.register("bogus", lambda o, a: (np.zeros(2), np.zeros((3, 4, 4))))
    try:
        with pytest.raises(RuntimeError, match="expected \\(B,\\)"):
            pp.postprocess("bogus", {}, None)
    finally:
        pp.unregister("bogus")


# ----------------------------------------------------------------------------------------------
# bench CLI
# ----------------------------------------------------------------------------------------------
def test_bench_artifacts_writes_json_and_markdown(tiny, tmp_path, monkeypatch, capsys):
    import edgead.models
    from edgead.runtime.bench import bench_artifacts

    path, model = tiny
    monkeypatch.setattr(edgead.models, "load_model", lambda d, device="cpu": model)
    assert bench_artifacts(path, backends="all", batch_sizes=[1, 4], iterations=3, out=str(tmp_path / "b")) == 0
    doc = json.load(open(tmp_path / "b" / "bench_runtime.json"))
    names = {b["params"]["backend"] for b in doc["benchmarks"]}
    assert {"onnxruntime", "torch"} <= names
    stages = {b["params"]["stage"] for b in doc["benchmarks"]}
    assert stages == {"pre", "network", "post", "total"}
    b0 = doc["benchmarks"][0]
    assert {"min", "max", "mean", "median", "stddev", "rounds", "ops"} <= set(b0["stats"])
    assert b0["stats"]["rounds"] == 3 and "p99" in b0["extra_info"]
    assert "machine_info" in doc and "datetime" in doc
    md = open(tmp_path / "b" / "bench_runtime.md").read()
    assert "onnxruntime" in md and "| fader |" in md and "versions:" in md and "date:" in md
    # a backend that cannot run is reported, not fatal
    assert bench_artifacts(path, backends=["onnxruntime", "tensorrt"], batch_sizes=[1], iterations=2,
                           out=str(tmp_path / "c.json")) == 0
    assert os.path.isfile(tmp_path / "c.md") and "Not measured" in open(tmp_path / "c.md").read()


# ----------------------------------------------------------------------------------------------
# GPU variants (skipped here)
# ----------------------------------------------------------------------------------------------
@pytest.mark.cuda
def test_torch_cuda_fp16_and_graphs(tiny):  # pragma: no cover - GPU only
    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    path, model = tiny
    imgs = images(4)
    ref = Detector.load(path, backend="torch", device="cpu", model=TinyModel())(imgs)
    for precision, rtol, atol in (("fp32", 1e-4, 1e-4), ("fp16", 1e-2, 1e-2)):
        det = Detector.load(path, backend="torch", device="cuda", precision=precision, model=TinyModel())
        for _ in range(2):  # second call replays the captured CUDA graph
            got = det(imgs)
            _close(got.scores, ref.scores, rtol, atol)
            _close(got.anomaly_maps, ref.anomaly_maps, rtol, atol)


@pytest.mark.cuda
def test_onnxruntime_cuda(tiny):  # pragma: no cover - GPU only
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDA")
    imgs = images(4)
    ref = Detector.load(tiny[0], backend="onnxruntime", device="cpu")(imgs)
    got = Detector.load(tiny[0], backend="onnxruntime", device="cuda")(imgs)
    _close(got.anomaly_maps, ref.anomaly_maps, 1e-3, 1e-3)


# ----------------------------------------------------------------------------------------------
# real models: every backend here against the PyTorch model's predict (skips models not landed)
# ----------------------------------------------------------------------------------------------
REAL_TYPES = ["patchcore", "efficientad", "puad", "fader"]


@pytest.fixture(scope="module", params=REAL_TYPES)
def real(request, tmp_path_factory):
    from edgead.runtime import postprocess as pp

    model, stats = build_tiny_model(request.param)
    pp.get_postprocessor(request.param)  # every real model type has its post-processing registered
    path = str(tmp_path_factory.mktemp("real") / request.param)
    save_artifact(path, model.model_type, model.artifact_config(), model.preprocessing().to_dict(),
                  model.artifact_tensors(), thresholds=THRESHOLDS, statistics=stats)
    from edgead.export.onnx import export_onnx

    export_onnx(path)  # through edgead.models.load_model: the artifact round trip is part of the test
    if request.param == "patchcore":  # no memory bank / (B, N, M) distance matrix in the graph
        import onnx

        from edgead.export.onnx import check_no_distance_matrix

        bank = model.artifact_tensors()["memory_bank"]
        proto = onnx.load(os.path.join(path, "model.onnx"))
        check_no_distance_matrix(proto, int(bank.shape[0]), int(bank.shape[1]))
    return path, model


def _ort_reference(path, model_type, x):
    """Independent of the Detector and of the PyTorch model: the exported graph run directly in an ONNX
    Runtime session, then the post-processing re-done here (EfficientAD/PUAD: the graph's (score, map) as
    they are; FADeR: the plain-torch MSGMS of ops_reference (not the C++ kernel), score = max of the map)."""
    import onnxruntime as ort

    from edgead.ops_reference import msgms_map_reference

    sess = ort.InferenceSession(os.path.join(path, "model.onnx"), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    if model_type == "fader":
        maps = msgms_map_reference(outs["original"], outs["reconstruction"], c=0.0026, scales=4, mean_filter=21).numpy()
        return maps.reshape(len(maps), -1).max(axis=1), maps
    maps = outs["map"][:, 0] if outs["map"].ndim == 4 else outs["map"]
    return outs["score"], maps


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_real_model_backend_parity(real, backend):
    path, model = real
    from edgead.runtime import postprocess as pp

    pp.unregister("fader")  # the real FADeR post-processing, not the stand-in's
    imgs = textures(2, 7)
    pre = model.preprocessing()
    x = pre.batch(list(imgs))
    if backend == "torch" and model.model_type != "patchcore":
        # the torch backend runs export_module + the same post-processing as predict: compare it with an
        # independent ONNX Runtime run of the exported graph instead of the model against itself
        ref_s, ref_m = _ort_reference(path, model.model_type, x)
    else:
        with torch.no_grad():
            ref_s, ref_m = (t.numpy() for t in model.predict(torch.from_numpy(x)))
    det = Detector.load(path, backend=backend, device="cpu")
    s, m = det.infer_preprocessed(x)
    assert m.shape == ref_m.shape, (m.shape, ref_m.shape)
    _close(s, ref_s)
    _close(m, ref_m)
    res = det(imgs)
    _close(res.scores, ref_s)
    assert res.anomaly_maps.shape == (2, 64, 64)
