"""The model repository `edgead serve` generates, without a server: config.pbtxt parsed by the independent parser
of test_triton_export, and the Python-backend model (edgead.serve.triton_model) run in-process against the stand-in
``triton_python_backend_utils``: a dynamic batch mixing good and malformed requests gives each malformed request its
own error response and every good one the in-process Detector's result (1e-5). Runs in the main environment (no
tritonserver, NumPy 2); tests/test_serve.py runs the same model inside the real server (.ci/serve).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from test_triton_export import load_python_model, one, parse_pbtxt  # noqa: E402  (tests/ is on sys.path)
from tiny_patchcore import make_tiny_artifact, textures  # noqa: E402

from edgead.runtime import Detector  # noqa: E402

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_artifact(str(tmp_path_factory.mktemp("serve_model") / "patchcore"), "patchcore")


def _load_model(repo, name, monkeypatch):
    model, pb = load_python_model(repo, name, monkeypatch)
    return model, pb, parse_pbtxt(open(os.path.join(repo, name, "config.pbtxt")).read())


def test_repository_config(tiny, tmp_path):
    from edgead.serve import Server

    det = Detector.load(tiny, backend="onnxruntime", device="cpu")
    srv = Server(det, name="cam1", max_batch_size=4, max_queue_delay_us=700, instances=2)
    srv._token = "t0"
    repo = srv.write_repository(str(tmp_path / "repo"))
    cfg = parse_pbtxt(open(os.path.join(repo, "cam1", "config.pbtxt")).read())
    c, h, w = srv.input_shape
    assert one(cfg, "backend") == "python" and one(cfg, "max_batch_size") == 4
    assert [one(t, "name") for t in cfg["input"]] == ["image"] and cfg["input"][0]["dims"] == [c, h, w]
    assert [one(t, "name") for t in cfg["output"]] == ["score", "anomaly_map"]
    assert cfg["output"][1]["dims"] == [h, w]
    assert one(one(cfg, "dynamic_batching"), "max_queue_delay_microseconds") == 700
    assert one(one(cfg, "instance_group"), "count") == 2
    params = {one(p, "key"): one(one(p, "value"), "string_value") for p in cfg["parameters"]}
    assert json.loads(params["edgead_load"]) == {"artifact": os.path.abspath(tiny), "backend": "onnxruntime",
                                                 "device": "cpu", "precision": "fp32", "batch_size": det.batch_size}
    meta = json.loads(params["edgead_meta"])
    assert meta == srv.meta() and meta["preprocessing"] == det.artifact.preprocessing
    assert meta["image_threshold"] == det.image_threshold and params["edgead_server"] == "t0"
    srv2 = Server(det, dynamic_batching=False)
    assert "dynamic_batching" not in srv2.model_config()
    det.close()


def test_model_answers_each_request_of_a_mixed_batch(tiny, tmp_path, monkeypatch):
    from edgead.serve import Server

    det = Detector.load(tiny, backend="onnxruntime", device="cpu")
    srv = Server(det)
    repo = srv.write_repository(str(tmp_path / "repo"))
    model, pb, _ = _load_model(repo, "edgead", monkeypatch)
    c, h, w = srv.input_shape
    good = det.preprocessing.batch(list(textures(3, 5)))
    ref_s, ref_m = det.infer_preprocessed(good)
    nan = good[:1].copy()
    nan[0, 1, 2, 3] = np.nan
    reqs = {"g0": good[:1], "nan": nan, "g12": good[1:3], "empty": good[:0], "f64": good[:1].astype(np.float64),
            "shape": np.zeros((1, c, h, w + 1), np.float32), "g2": good[2:3]}
    mk = lambda x: pb.InferenceRequest([pb.Tensor("image", x)])  # noqa: E731
    outs = dict(zip(reqs, model.execute([mk(x) for x in reqs.values()])))
    for k, word in (("nan", "NaN"), ("empty", "empty"), ("f64", "FP32"), ("shape", "shape")):
        assert outs[k].error is not None and word in outs[k].error.message() and not outs[k].output_tensors, k
    for k, sl in (("g0", slice(0, 1)), ("g12", slice(1, 3)), ("g2", slice(2, 3))):
        r = outs[k]
        assert r.error is None, k
        s = pb.get_output_tensor_by_name(r, "score").as_numpy()
        m = pb.get_output_tensor_by_name(r, "anomaly_map").as_numpy()
        assert s.shape == (sl.stop - sl.start, 1) and s.dtype == np.float32 and m.shape == (sl.stop - sl.start, h, w)
        np.testing.assert_allclose(s[:, 0], ref_s[sl], rtol=0, atol=TOL)
        np.testing.assert_allclose(m, ref_m[sl], rtol=0, atol=TOL)

    # the Detector fails on one request of a batch (here: a stand-in failure): only that request gets the error
    real = model.det.infer_preprocessed

    def flaky(x):
        if (x == -7.0).any():
            raise RuntimeError("stand-in backend failure")
        return real(x)

    monkeypatch.setattr(model.det, "infer_preprocessed", flaky)
    poison = np.full((1, c, h, w), -7.0, np.float32)
    a, b, d = model.execute([mk(good[:1]), mk(poison), mk(good[1:3])])
    assert b.error is not None and "stand-in backend failure" in b.error.message()
    assert a.error is None and d.error is None
    np.testing.assert_allclose(pb.get_output_tensor_by_name(d, "score").as_numpy()[:, 0], ref_s[1:3], rtol=0, atol=TOL)
    model.finalize()
    det.close()


def test_tritonserver_paths_or_clear_error():
    from edgead.serve import ServeError, tritonserver_paths

    try:
        import pytriton  # noqa: F401
    except ImportError:
        with pytest.raises(ServeError, match="nvidia-pytriton"):
            tritonserver_paths()
        return
    p = tritonserver_paths()
    assert os.path.isfile(p["bin"]) and os.path.isfile(p["stub"]) and os.path.isdir(p["libs"])
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in p["stub"]
