"""INT8 CPU path: ONNX Runtime static quantization (QDQ, per-channel) of a tiny EfficientAD artifact.

Tiny: EfficientAD-S at 64x64 with a random stand-in teacher, 3 training iterations on stripe textures.
Tolerance (int8 vs the fp32 ONNX graph, on held-out images drawn like the calibration images):
anomaly map ``max|int8 - fp32| <= 0.25 * max|fp32 map|`` and score ``|int8 - fp32| <= 0.25 * max|fp32 score|``
(measured here: 0.16 of max|map| on the calibration images for this 3-iteration random-teacher
model; 0.013 for a briefly fit EfficientAD-S at 256x256 on brick; a broken quantization -- wrong
scales, uncalibrated ranges -- is off by O(1)).
"""
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")
cv2 = pytest.importorskip("cv2")

from edgead.artifact import _sha256, load_artifact, read_meta, save_artifact  # noqa: E402
from edgead.export import export_artifact  # noqa: E402
from edgead.export.onnx import export_onnx  # noqa: E402
from edgead.export.quantize import quantize_onnx  # noqa: E402
from edgead.models.efficientad import EfficientAD  # noqa: E402
from edgead.runtime import Detector  # noqa: E402
from edgead.runtime.detector import ExportMissingError  # noqa: E402

warnings.filterwarnings("ignore", message=".*RANDOM.*")
TOL = 0.25


def _textures(folder, n, seed):
    os.makedirs(folder, exist_ok=True)
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    paths = []
    for i in range(n):
        img = 0.5 + 0.3 * np.sin(xx / 3.0 + g.uniform(0, 2 * np.pi)) + 0.05 * g.standard_normal((64, 64))
        img = np.clip(np.repeat(img[..., None], 3, axis=2) * 255, 0, 255).astype(np.uint8)
        p = os.path.join(folder, f"{i:03d}.png")
        cv2.imwrite(p, img)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    root = tmp_path_factory.mktemp("q8")
    train = _textures(str(root / "train"), 8, seed=1)
    torch.manual_seed(0)
    model = EfficientAD({"image_size": [64, 64], "iterations": 3, "batch_size": 2, "allow_random_teacher": True,
                         "seed": 0})
    stats = model.fit(train[:6], train[6:], progress=False)
    path = save_artifact(str(root / "art"), model.model_type, model.artifact_config(),
                         model.preprocessing().to_dict(), model.artifact_tensors(), statistics=stats)
    export_onnx(path, model=model)
    return path, str(root / "train"), _textures(str(root / "heldout"), 4, seed=7)


def test_int8_cli_writes_qdq_graph_and_meta(art, capsys):
    path, calib, _ = art
    args = dict(artifact=path, format="onnx", precision="int8", dla_core=None, out=None, calibration=calib)
    assert export_artifact(**args).endswith(".onnx")
    assert "model.int8.onnx" in capsys.readouterr().out
    q = os.path.join(path, "model.int8.onnx")
    ops = {n.op_type for n in onnx.load(q).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = read_meta(path)
    ex = meta["exports"]["onnx_int8"]
    assert ex["file"] == "model.int8.onnx" and ex["sha256"] == _sha256(q) == meta["files"]["model.int8.onnx"]["sha256"]
    assert ex["source_onnx_sha256"] == meta["exports"]["onnx"]["sha256"]
    assert ex["format"] == "QDQ" and ex["per_channel"] and ex["calibration"]["images"] == 8
    assert ex["verification"]["max_rel_diff"] <= TOL
    load_artifact(path)  # still a valid artifact
    # per-channel: conv weight scales are vectors
    proto = onnx.load(q)
    inits = {i.name: i for i in proto.graph.initializer}
    w_scales = [inits[n.input[1]] for n in proto.graph.node if n.op_type == "DequantizeLinear"
                and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert w_scales and all(len(s.dims) == 1 and s.dims[0] > 1 for s in w_scales)


def test_int8_detector_close_to_fp32(art):
    path, calib, heldout = art
    if not os.path.isfile(os.path.join(path, "model.int8.onnx")):
        quantize_onnx(path, calib)
    d32 = Detector.load(path, backend="onnxruntime", precision="fp32")
    d8 = Detector.load(path, backend="onnxruntime", precision="int8")
    assert d8.describe()["precision"] == "int8" and d8.backend.onnx_path.endswith("model.int8.onnx")
    r32, r8 = d32(heldout), d8(heldout)
    m32, m8 = np.asarray(r32.anomaly_maps), np.asarray(r8.anomaly_maps)
    assert np.all(np.isfinite(m8)) and m8.shape == m32.shape
    assert np.abs(m8 - m32).max() <= TOL * np.abs(m32).max()
    assert np.abs(r8.scores - r32.scores).max() <= TOL * np.abs(r32.scores).max()


def test_int8_errors(art, tmp_path):
    path, calib, _ = art
    base = dict(artifact=path, format="onnx", dla_core=None, out=None)
    with pytest.raises(ValueError, match="calibration"):
        export_artifact(**dict(precision="int8", calibration=None, **base))
    with pytest.raises(ValueError, match="fp16"):
        export_artifact(**dict(precision="fp16", calibration=calib, **base))
    with pytest.raises(ValueError, match="calibration"):
        export_artifact(**dict(precision="fp32", calibration=calib, **base))
    with pytest.raises(ValueError, match="shape"):
        quantize_onnx(path, np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="calibrate_method"):
        quantize_onnx(path, calib, calibrate_method="kl")
    # an artifact without the int8 file says how to make it
    bare = str(tmp_path / "bare")
    import shutil

    shutil.copytree(path, bare)
    if os.path.exists(os.path.join(bare, "model.int8.onnx")):
        os.remove(os.path.join(bare, "model.int8.onnx"))
    with pytest.raises(ExportMissingError, match="precision int8"):
        Detector.load(bare, backend="onnxruntime", precision="int8")
