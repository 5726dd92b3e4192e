"""edgead.export: ONNX export verified with ONNX Runtime, metadata, PatchCore distance-matrix guard, TensorRT (skips).

Stand-in model: a tiny conv AnomalyModel (tests/test_runtime.py shares it) so these tests do not
depend on the real models; real-model parity lives in tests/test_runtime.py.
ONNX vs torch tolerance (fp32, CPU): |ort - torch| <= 1e-4 * max(1, max|torch|) + 1e-4 * |torch|.
"""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgead.artifact import load_artifact, read_meta, _sha256  # noqa: E402
from edgead.export import export_artifact  # noqa: E402
from edgead.export import onnx as eonnx  # noqa: E402
from edgead.export import tensorrt as etrt  # noqa: E402

from test_runtime import TinyModel, make_tiny_artifact  # noqa: E402


@pytest.fixture
def art(tmp_path):
    return make_tiny_artifact(str(tmp_path / "tiny"), export=False)


def test_export_onnx_writes_verified_graph_and_meta(art):
    path, model = art
    out = eonnx.export_onnx(path, model=model)
    assert out == os.path.join(path, "model.onnx") and os.path.isfile(out)
    meta = read_meta(path)
    ex = meta["exports"]["onnx"]
    assert ex["file"] == "model.onnx" and ex["opset"] == 17
    assert ex["inputs"] == ["image"] and ex["outputs"] == list(TinyModel.export_outputs)
    assert ex["sha256"] == _sha256(out) == meta["files"]["model.onnx"]["sha256"]
    assert ex["verification"]["max_err_over_tol"] <= 1.0
    load_artifact(path)  # still a valid artifact (weights checksum untouched)
    proto = onnx.load(out)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")  # dynamic batch
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 32, 32]
    # dynamic batch really works, and matches torch at a batch size never seen at export
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})
    with torch.no_grad():
        ref = model.export_module()(torch.from_numpy(x))
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r.numpy(), rtol=1e-4, atol=1e-4 * max(1.0, float(r.abs().max())))


def test_export_onnx_other_out_and_opset(art, tmp_path):
    path, model = art
    out = eonnx.export_onnx(path, out=str(tmp_path / "elsewhere" / "m.onnx"), opset=18, model=model)
    assert os.path.isfile(out)
    # edgead.json never points outside the artifact directory: an export written elsewhere is standalone
    assert "onnx" not in (read_meta(path).get("exports") or {})
    assert all(not os.path.isabs(f) for f in read_meta(path)["files"])
    with pytest.raises(ValueError, match="opset"):
        eonnx.export_onnx(path, opset=7, model=model)


def test_export_rejects_wrong_model_type(art):
    path, model = art

    class Other(TinyModel):
        model_type = "patchcore"

    with pytest.raises(ValueError, match="patchcore"):
        eonnx.export_onnx(path, model=Other())


def test_verify_onnx_catches_a_wrong_graph(art):
    path, model = art
    out = eonnx.export_onnx(path, model=model)
    other = TinyModel()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    with pytest.raises(eonnx.OnnxVerificationError, match="differs from torch"):
        eonnx.verify_onnx(out, other.export_module(), (3, 32, 32), TinyModel.export_outputs)


def test_no_distance_matrix_guard(tmp_path):
    from onnx import TensorProto, helper

    # a (B, N, D) x (D, M) MatMul producing (B, N, M): what PatchCore must never export
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, ["B", 10, 8])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [8, 50])
    d = helper.make_tensor_value_info("d", TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("MatMul", ["q", "k"], ["d"])], "g", [q, k], [d])
    bad = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(AssertionError, match="memory bank size 50"):
        eonnx.check_no_distance_matrix(bad, 50)
    eonnx.check_no_distance_matrix(bad, 49)  # no dim of 49 anywhere: passes
    # a bank baked in as an initializer
    init = helper.make_tensor("bank", TensorProto.FLOAT, [50, 8], np.zeros(400, np.float32).tolist())
    g2 = helper.make_graph([helper.make_node("Identity", ["q"], ["d"])], "g2", [q], [d], initializer=[init])
    with pytest.raises(AssertionError, match="memory-bank-shaped initializer"):
        eonnx.check_no_distance_matrix(helper.make_model(g2), 50, 8)


def test_export_artifact_onnx(art, monkeypatch, capsys):
    path, model = art
    import edgead.models

    monkeypatch.setattr(edgead.models, "load_model", lambda d, device="cpu": model)
    args = dict(artifact=path, format="onnx", precision=None, dla_core=None, out=None, calibration=None)
    assert export_artifact(**args).endswith(".onnx")
    assert "model.onnx" in capsys.readouterr().out
    bad = dict(artifact=path, format="onnx", precision="fp16", dla_core=None, out=None, calibration=None)
    with pytest.raises(ValueError, match="fp32"):
        export_artifact(**bad)
    bad = dict(artifact=path, format="tensorrt", precision="int8", dla_core=None, out=None, calibration=None)
    with pytest.raises(ValueError, match="calibration"):
        export_artifact(**bad)
    with pytest.raises(ValueError, match="format"):
        export_artifact(**dict(artifact=path, format="tflite", precision=None, dla_core=None, out=None, calibration=None))


def test_engine_cache_key_covers_every_dependency():
    gpu = {"name": "NVIDIA Orin (nvgpu)", "compute_capability": "8.7"}
    base = etrt.engine_key("ab" * 32, "fp16", gpu, "10.3.0", None, 1, 8, 32)
    names = {etrt._engine_name(base)}
    variants = [
        etrt.engine_key("cd" * 32, "fp16", gpu, "10.3.0", None, 1, 8, 32),
        etrt.engine_key("ab" * 32, "int8", gpu, "10.3.0", None, 1, 8, 32),
        etrt.engine_key("ab" * 32, "fp16", {"name": "NVIDIA H100", "compute_capability": "9.0"}, "10.3.0", None, 1, 8, 32),
        etrt.engine_key("ab" * 32, "fp16", gpu, "10.7.0", None, 1, 8, 32),
        etrt.engine_key("ab" * 32, "fp16", gpu, "10.3.0", 0, 1, 1, 1),
        etrt.engine_key("ab" * 32, "fp16", gpu, "10.3.0", None, 1, 8, 16),
    ]
    for v in variants:
        names.add(etrt._engine_name(v))
    assert len(names) == 1 + len(variants)
    assert etrt._engine_name(base).startswith("fp16_nvidia-orin-nvgpu_sm87_trt10.3.0_b32_")


def test_calibration_batch_from_files_and_arrays(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    pre = {"size": [32, 32], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    x = etrt.load_calibration_batch(str(tmp_path), pre)
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.float32
    assert etrt.load_calibration_batch(x, None).shape == x.shape
    with pytest.raises(ValueError, match="float32"):
        etrt.load_calibration_batch(x.astype(np.float64), None)
    with pytest.raises(ValueError, match="no images"):
        etrt.load_calibration_batch(str(_empty(tmp_path)), pre)


def _empty(tmp_path):
    p = tmp_path / "empty"
    p.mkdir(exist_ok=True)
    return p


def test_build_engine_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="precision"):
        etrt.build_engine(str(tmp_path / "m.onnx"), precision="fp8")
    with pytest.raises(FileNotFoundError, match="edgead export"):
        etrt.build_engine(str(tmp_path / "m.onnx"))


def test_tensorrt_version_floor():
    from edgead.runtime import backends as rb

    assert rb._trt_version_ok("10.3.0") and rb._trt_version_ok("8.6.2.3") and rb._trt_version_ok("10.0.0b6")
    assert not rb._trt_version_ok("8.5.2") and not rb._trt_version_ok("") and not rb._trt_version_ok("x")


@pytest.mark.cuda
def test_tensorrt_fp16_engine_matches_onnxruntime(art):  # pragma: no cover - needs TensorRT + GPU
    if not etrt.tensorrt_available():  # not importorskip: a broken install raises OSError / non-ModuleNotFound errors
        pytest.skip("tensorrt (>= 8.6) cannot be imported here")
    from edgead.runtime import Detector

    path, model = art
    eonnx.export_onnx(path, model=model)
    engine = etrt.build_engine(os.path.join(path, "model.onnx"), precision="fp16", max_batch=8)
    assert os.path.dirname(engine) == os.path.join(path, "engines")
    assert etrt.build_engine(os.path.join(path, "model.onnx"), precision="fp16", max_batch=8) == engine  # cached
    imgs = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    ref = Detector.load(path, backend="onnxruntime")(imgs)
    got = Detector.load(path, backend="tensorrt", engine=engine, precision="fp16")(imgs)
    scale = float(np.abs(ref.anomaly_maps).max())
    # fp16 tolerance: 1e-2 relative to the map's range
    np.testing.assert_allclose(got.anomaly_maps, ref.anomaly_maps, rtol=1e-2, atol=1e-2 * scale)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-2, atol=1e-2 * scale)
