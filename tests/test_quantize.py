"""INT8 CPU path: ONNX Runtime static quantization (QDQ, per-channel) of a tiny EfficientAD artifact.

Tiny: EfficientAD-S at 64x64 with a random stand-in teacher, 3 training iterations on stripe textures.

Tolerance (int8 vs the fp32 ONNX graph on held-out images drawn like the calibration images), derived, not
fitted (see int8_bound):
- every QDQ tensor (MinMax uint8 activations, per-channel symmetric int8 weights) is rounded to its grid:
  at most half a step, i.e. 1/510 of an activation's calibrated range and 1/254 of a weight channel's
  max|w| (relative to the range, 1/(2*127));
- to first order these add up along the network: the teacher/student/autoencoder outputs carry a
  relative error (of their range) of at most delta = n_act / 510 + n_w / 254, with n_act and n_w counted
  in the int8 graph (QuantizeLinear nodes on activations, int8 weight initializers);
- the map is a squared difference of two such outputs, (t - s)^2; with rho = max|t - s| / max(|t|, |s|)
  (measured on the fp32 model: how close the two networks are), its relative error is at most
  2 delta / rho + (delta / rho)^2, and the normalised, combined, resized map and its max (the score) keep
  that relative bound (normalisation by a scale, convex combination, bilinear resize, max). The
  normalisation must be a pure scaling for that: an affine (d - qa) / (qb - qa) with qb - qa << qa
  multiplies the error of d by qa / (qb - qa), which on this 3-iteration model is ~1e4 (its 0.9 and
  0.995 validation quantiles are 2e-5 apart), so the fixture sets qa = 0. Measured before that
  change: map 0.57, score 1.0 of max|fp32| -- the amplification, not the quantizer.
A broken quantization (wrong scales, uncalibrated ranges, a dropped zero point) is off by O(1).
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


def int8_bound(path, images):
    """The relative error bound of the module docstring for this artifact's int8 graph on `images`."""
    from edgead.data.transforms import Preprocessing
    from edgead.data.io import read_image

    q = onnx.load(os.path.join(path, "model.int8.onnx"))
    inits = {i.name: i for i in q.graph.initializer}
    n_w = sum(1 for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1)
    n_act = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits)
    delta = n_act / 510 + n_w / 254
    model = EfficientAD.from_artifact(load_artifact(path))
    x = torch.from_numpy(Preprocessing.from_dict(model.preprocessing().to_dict()).batch([read_image(p) for p in images]))
    c = int(model.out_channels)
    with torch.no_grad():
        t = (model.teacher(x) - model.teacher_mean) / model.teacher_std
        s = model.student(x)
        a = model.autoencoder(x)
    rho = min(float((t - s[:, :c]).abs().max() / torch.maximum(t.abs().max(), s[:, :c].abs().max())),
              float((a - s[:, c:]).abs().max() / torch.maximum(a.abs().max(), s[:, c:].abs().max())))
    return 2 * delta / rho + (delta / rho) ** 2, dict(n_act=n_act, n_w=n_w, delta=delta, rho=rho)


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
    # Pin the lower normalisation quantiles to 0 (see the module docstring): a 3-iteration model's
    # 0.9/0.995 quantiles are ~2e-5 apart, and (d - qa) / (qb - qa) then amplifies ANY error of d by
    # ~1e4, int8 or not; with qa = 0 the normalisation is a pure scaling and the derived bound holds.
    with torch.no_grad():
        for q in (model.q_st, model.q_ae):
            q.copy_(torch.stack([torch.zeros(()), q[1]]))
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
    tol, _ = int8_bound(path, sorted(os.path.join(calib, f) for f in os.listdir(calib)))
    assert ex["verification"]["max_rel_diff"] <= tol
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
    tol, parts = int8_bound(path, heldout)
    assert 0 < tol < 1, parts  # a bound that says something: the test can fail
    err_map = np.abs(m8 - m32).max() / np.abs(m32).max()
    err_score = np.abs(r8.scores - r32.scores).max() / np.abs(r32.scores).max()
    assert err_map <= tol, (err_map, tol, parts)
    assert err_score <= tol, (err_score, tol, parts)
    assert err_map > 0  # really quantized


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
