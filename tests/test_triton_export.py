"""`edgead export --format triton`: the model repository's files and configs, and its Python backend model.

The config.pbtxt files are parsed by a small protobuf-text parser written here (independent of the writer), and
by Triton's own ModelConfig schema (tritonclient's model_config_pb2) when the `serve` extra is installed. The
post-processing model.py runs in-process against a stand-in ``triton_python_backend_utils`` on the outputs of
ONNX Runtime for the repository's model.onnx, and must equal the in-process Detector within 1e-5.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import types

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgead.runtime import Detector  # noqa: E402

# tiny real artifacts (random-init networks, 64x64 images): tests/tiny_patchcore.py (importable without torch)
from tiny_patchcore import THRESHOLDS, make_tiny_artifact, textures  # noqa: E402,F401


# ----------------------------------------------------------------------------------------------
# protobuf text format -> dict (repeated fields are lists), independent of edgead.export.triton.to_pbtxt
# ----------------------------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z_][\w.]*)|(-?[\d.eE+-]+))')


def parse_pbtxt(text):
    toks, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m and m.end() > pos, f"pbtxt: cannot tokenize at {text[pos:pos + 30]!r}"
        pos = m.end()
        com, s, p, ident, num = m.groups()
        if com:
            continue
        toks.append(("s", json.loads(s)) if s else ("p", p) if p else ("id", ident) if ident else ("n", num))
    i = 0

    def value():
        nonlocal i
        kind, v = toks[i]
        i += 1
        if kind == "n":
            return float(v) if any(c in v for c in ".eE") else int(v)
        return v  # string or enum identifier

    def message(end):
        nonlocal i
        out = {}
        while i < len(toks) and toks[i] != ("p", end):
            kind, key = toks[i]
            assert kind == "id", f"pbtxt: expected a field name, got {toks[i]}"
            i += 1
            if toks[i] == ("p", ":"):
                i += 1
            if toks[i] == ("p", "{"):
                i += 1
                v = message("}")
                assert toks[i] == ("p", "}")
                i += 1
            elif toks[i] == ("p", "["):
                i += 1
                v = []
                while toks[i] != ("p", "]"):
                    v.append(value())
                    if toks[i] == ("p", ","):
                        i += 1
                i += 1
                out.setdefault(key, []).extend(v)
                continue
            else:
                v = value()
            out.setdefault(key, []).append(v)
        return out

    msg = message(None)
    assert i == len(toks), "pbtxt: trailing tokens"
    return msg


def one(msg, key):
    (v,) = msg[key]
    return v


def check_with_triton_schema(text):
    """Parse with Triton's ModelConfig protobuf when tritonclient is installed (the `serve` extra)."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except Exception:  # noqa: BLE001 - absent or incompatible protobuf: the structural parse above still ran
        return None
    return text_format.Parse(text, model_config_pb2.ModelConfig())


# ----------------------------------------------------------------------------------------------
class FakePbUtils(types.ModuleType):
    """The part of triton_python_backend_utils that edgead's model.py uses."""

    def __init__(self):
        super().__init__("triton_python_backend_utils")

        class Tensor:
            def __init__(self, name, array):
                assert isinstance(array, np.ndarray)
                self._name, self._a = name, array

            def name(self):
                return self._name

            def as_numpy(self):
                return self._a

        class InferenceResponse:
            def __init__(self, output_tensors, error=None):
                self.output_tensors, self.error = list(output_tensors), error

        class TritonError(Exception):
            def __init__(self, msg):
                super().__init__(msg)
                self.msg = msg

            def message(self):
                return self.msg

        class InferenceRequest:
            def __init__(self, tensors):
                self.tensors = {t.name(): t for t in tensors}

        self.Tensor, self.InferenceResponse, self.TritonError, self.InferenceRequest = \
            Tensor, InferenceResponse, TritonError, InferenceRequest

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return request.tensors.get(name)

    @staticmethod
    def get_output_tensor_by_name(response, name):
        return next((t for t in response.output_tensors if t.name() == name), None)


def load_python_model(repo, post, monkeypatch):
    """Model `post` of repository `repo` (its model.py and config.pbtxt), initialised against FakePbUtils."""
    pb = FakePbUtils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    spec = importlib.util.spec_from_file_location("edgead_triton_model_under_test", os.path.join(repo, post, "1", "model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = parse_pbtxt(open(os.path.join(repo, post, "config.pbtxt")).read())
    # the JSON tritonserver hands to initialize(): scalars unwrapped, parameters as a map
    tio = lambda ts: [{"name": one(t, "name"), "data_type": one(t, "data_type"), "dims": t["dims"]} for t in ts]  # noqa: E731
    cfg = {"name": one(cfg, "name"), "backend": "python", "max_batch_size": one(cfg, "max_batch_size"),
           "input": tio(cfg["input"]), "output": tio(cfg["output"]),
           "parameters": {one(p, "key"): {"string_value": one(one(p, "value"), "string_value")}
                          for p in cfg.get("parameters", [])}}
    model = mod.TritonPythonModel()
    model.initialize({"model_config": json.dumps(cfg), "model_repository": os.path.join(repo, post),
                      "model_version": "1", "model_name": post})
    return model, pb


@pytest.fixture(scope="module", params=["patchcore", "fader"])
def tiny(request, tmp_path_factory):
    return make_tiny_artifact(str(tmp_path_factory.mktemp("trt") / request.param), request.param)


def test_repository_layout_and_configs(tiny, tmp_path):
    from edgead.export.triton import export_triton

    repo = export_triton(tiny, str(tmp_path / "repo"), max_batch_size=16, max_queue_delay_us=300, instances=2)
    for f in ("edgead/config.pbtxt", "edgead/1", "edgead_net/config.pbtxt", "edgead_net/1/model.onnx",
              "edgead_post/config.pbtxt", "edgead_post/1/model.py", "edgead_post/1/artifact/edgead.json",
              "edgead_post/1/artifact/weights.safetensors", "edgead.json"):
        assert os.path.exists(os.path.join(repo, f)), f
    assert not os.path.exists(os.path.join(repo, "edgead_net", "configs"))  # no engine in the artifact
    meta = json.load(open(os.path.join(tiny, "edgead.json")))
    assert json.load(open(os.path.join(repo, "edgead.json"))) == meta

    cfg = {m: open(os.path.join(repo, m, "config.pbtxt")).read() for m in ("edgead", "edgead_net", "edgead_post")}
    net, post, ens = (parse_pbtxt(cfg[m]) for m in ("edgead_net", "edgead_post", "edgead"))
    for m in cfg:
        check_with_triton_schema(cfg[m])
    c, h, w = 3, 64, 64
    # network: ONNX Runtime, its real input/output signature, batching, instances
    import onnxruntime as ort

    sess = ort.InferenceSession(os.path.join(repo, "edgead_net", "1", "model.onnx"), providers=["CPUExecutionProvider"])
    ort_out = sess.run(None, {"image": np.zeros((2, c, h, w), np.float32)})
    assert one(net, "platform") == "onnxruntime_onnx" and one(net, "max_batch_size") == 16
    assert one(net, "name") == "edgead_net"
    (inp,) = net["input"]
    assert (one(inp, "name"), one(inp, "data_type"), inp["dims"]) == ("image", "TYPE_FP32", [c, h, w])
    assert [one(o, "name") for o in net["output"]] == [o.name for o in sess.get_outputs()]
    for o, a in zip(net["output"], ort_out):
        assert o["dims"] == list(a.shape[1:]) and one(o, "data_type") == "TYPE_FP32"
    assert one(one(net, "dynamic_batching"), "max_queue_delay_microseconds") == 300
    assert max(one(net, "dynamic_batching")["preferred_batch_size"]) <= 16
    ig = one(net, "instance_group")
    assert one(ig, "count") == 2 and one(ig, "kind") == "KIND_GPU"
    # post-processing: python backend, inputs = the network's outputs
    assert one(post, "backend") == "python"
    assert [(one(i, "name"), i["dims"]) for i in post["input"]] == [(one(o, "name"), o["dims"]) for o in net["output"]]
    assert [(one(o, "name"), o["dims"]) for o in post["output"]] == [("score", [1]), ("anomaly_map", [h, w])]
    # ensemble: image -> net -> post -> score / anomaly_map, every internal tensor produced once and consumed
    assert one(ens, "platform") == "ensemble" and one(ens, "max_batch_size") == 16
    steps = one(ens, "ensemble_scheduling")["step"]
    assert [one(s, "model_name") for s in steps] == ["edgead_net", "edgead_post"]
    produced = {one(m, "value") for m in steps[0]["output_map"]}
    consumed = {one(m, "value") for m in steps[1]["input_map"]}
    assert produced == consumed and len(produced) == len(net["output"])
    assert {one(m, "key") for m in steps[0]["output_map"]} == {one(o, "name") for o in net["output"]}
    assert [(one(m, "key"), one(m, "value")) for m in steps[0]["input_map"]] == [("image", "image")]
    assert {one(m, "value") for m in steps[1]["output_map"]} == {one(o, "name") for o in ens["output"]}
    params = {one(p, "key"): one(one(p, "value"), "string_value") for p in ens["parameters"]}
    assert json.loads(params["edgead_preprocessing"]) == meta["preprocessing"]
    assert json.loads(params["edgead_thresholds"]) == meta["thresholds"]
    assert params["edgead_model_type"] == meta["model_type"]


def test_python_model_equals_detector(tiny, tmp_path, monkeypatch):
    import onnxruntime as ort

    from edgead.export.triton import export_triton

    repo = export_triton(tiny, str(tmp_path / "repo"), instance_kind="cpu")
    det = Detector.load(tiny, backend="onnxruntime", device="cpu")
    x = det.preprocessing.batch(list(textures(3, 5)))
    ref_s, ref_m = det.infer_preprocessed(x)

    sess = ort.InferenceSession(os.path.join(repo, "edgead_net", "1", "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    model, pb = load_python_model(repo, "edgead_post", monkeypatch)
    requests = []
    for sl in (slice(0, 2), slice(2, 3)):  # two requests in one dynamic batch
        outs = sess.run(None, {"image": x[sl]})
        requests.append(pb.InferenceRequest([pb.Tensor(n, a) for n, a in zip(names, outs)]))
    responses = model.execute(requests)
    assert len(responses) == 2 and all(r.error is None for r in responses)
    s = np.concatenate([pb.get_output_tensor_by_name(r, "score").as_numpy() for r in responses])
    m = np.concatenate([pb.get_output_tensor_by_name(r, "anomaly_map").as_numpy() for r in responses])
    assert s.shape == (3, 1) and s.dtype == np.float32 and m.shape == ref_m.shape and m.dtype == np.float32
    np.testing.assert_allclose(s[:, 0], ref_s, rtol=0, atol=1e-5)
    np.testing.assert_allclose(m, ref_m, rtol=0, atol=1e-5)

    # a malformed batch: every request gets an error response, no exception escapes the model
    outs = sess.run(None, {"image": x[:1]})
    outs[0] = outs[0][:, :1]  # first output cut short: shapes no longer fit the model
    bad = [pb.InferenceRequest([pb.Tensor(n, a) for n, a in zip(names, outs)])]
    (r,) = model.execute(bad)
    assert r.error is not None and "post-processing failed" in r.error.message()
    # and the model keeps serving
    (r,) = model.execute(requests[1:])
    assert r.error is None
    model.finalize()


def test_tensorrt_variant_and_refusals(tiny, tmp_path):
    from edgead.artifact import engines_dir
    from edgead.export.triton import export_triton

    with pytest.raises(FileExistsError, match="not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "keep.txt").write_text("user data")
        export_triton(tiny, str(tmp_path / "full"))
    assert (tmp_path / "full" / "keep.txt").read_text() == "user data"
    with pytest.raises(ValueError, match="instance_kind"):
        export_triton(tiny, str(tmp_path / "r0"), instance_kind="tpu")
    with pytest.raises(ValueError, match="max_batch_size"):
        export_triton(tiny, str(tmp_path / "r1"), max_batch_size=0)
    assert not os.path.exists(tmp_path / "r0") and not os.path.exists(tmp_path / "r1")

    eng = tmp_path / "fake.engine"
    eng.write_bytes(b"not a real engine")
    repo = export_triton(tiny, str(tmp_path / "repo"), engine=str(eng))
    trt = open(os.path.join(repo, "edgead_net", "configs", "tensorrt.pbtxt")).read()
    check_with_triton_schema(trt)
    t, o = parse_pbtxt(trt), parse_pbtxt(open(os.path.join(repo, "edgead_net", "config.pbtxt")).read())
    assert one(t, "platform") == "tensorrt_plan" and one(t, "default_model_filename") == "model.plan"
    assert one(t, "name") == "edgead_net" and t["input"] == o["input"] and t["output"] == o["output"]
    assert open(os.path.join(repo, "edgead_net", "1", "model.plan"), "rb").read() == b"not a real engine"
    # overwrite replaces an edgead repository (only with overwrite=True)
    with pytest.raises(FileExistsError):
        export_triton(tiny, repo)
    export_triton(tiny, repo, overwrite=True)
    assert not os.path.exists(os.path.join(repo, "edgead_net", "configs")) or os.path.isdir(engines_dir(tiny))


def test_cli_export_triton(tiny, tmp_path, capsys):
    from edgead.cli import main

    out = str(tmp_path / "repo")
    assert main(["export", tiny, "--format", "triton", "--out", out, "--max-batch-size", "8",
                 "--instance-kind", "cpu", "--model-name", "cam"]) == 0
    ens = parse_pbtxt(open(os.path.join(out, "cam", "config.pbtxt")).read())
    assert one(ens, "max_batch_size") == 8
    net = parse_pbtxt(open(os.path.join(out, "cam_net", "config.pbtxt")).read())
    assert one(one(net, "instance_group"), "kind") == "KIND_CPU"
    assert main(["export", tiny, "--format", "triton"]) == 2
    assert "--out" in capsys.readouterr().err


def test_pbtxt_writer_escapes_strings():
    from edgead.export.triton import to_pbtxt

    text = to_pbtxt({"name": 'a"b\\c', "parameters": [{"key": "k", "value": {"string_value": '{"x": "y\\n"}'}}]})
    msg = parse_pbtxt(text)
    assert one(msg, "name") == 'a"b\\c'
    assert one(one(one(msg, "parameters"), "value"), "string_value") == '{"x": "y\\n"}'
    check_with_triton_schema(text)


def test_client_reads_repository_metadata_and_matches_detector(tiny, tmp_path, monkeypatch):
    """edgead.client against an exported repository: pre-processing/thresholds from the ensemble's config
    parameters (as tritonserver returns the config over HTTP), scores/maps from the repository's own
    network + model.py (stand-in transport) -> the Detector's Results."""
    pytest.importorskip("tritonclient.http")
    import onnxruntime as ort

    from edgead import client as ec
    from edgead.export.triton import export_triton

    repo = export_triton(tiny, str(tmp_path / "repo"), max_batch_size=2)
    ens = parse_pbtxt(open(os.path.join(repo, "edgead", "config.pbtxt")).read())
    http_config = {"name": "edgead", "max_batch_size": one(ens, "max_batch_size"),
                   "parameters": {one(p, "key"): {"string_value": one(one(p, "value"), "string_value")}
                                  for p in ens["parameters"]}}
    sess = ort.InferenceSession(os.path.join(repo, "edgead_net", "1", "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    model, pb = load_python_model(repo, "edgead_post", monkeypatch)
    calls = []

    class FakeConn:
        def is_model_ready(self, name):
            return name == "edgead"

        def is_server_live(self):
            return True

        def get_model_config(self, name):
            assert name == "edgead"
            return http_config

        def close(self):
            pass

    def fake_infer(self, x):  # the ensemble: network then model.py
        calls.append(x.shape[0])
        outs = sess.run(None, {"image": x})
        (r,) = model.execute([pb.InferenceRequest([pb.Tensor(n, a) for n, a in zip(names, outs)])])
        assert r.error is None
        return (pb.get_output_tensor_by_name(r, "score").as_numpy().reshape(-1),
                pb.get_output_tensor_by_name(r, "anomaly_map").as_numpy())

    monkeypatch.setattr(ec.Client, "_conn", lambda self: FakeConn())
    monkeypatch.setattr(ec.Client, "infer_preprocessed", fake_infer)
    client = ec.Client("http://127.0.0.1:1")
    det = Detector.load(tiny, backend="onnxruntime", device="cpu")
    assert client.detector.image_threshold == det.image_threshold == THRESHOLDS["image"]
    assert client.detector.preprocessing.size == det.preprocessing.size
    imgs = list(textures(3, 9, size=48))
    got, ref = client(imgs), det(imgs)
    assert calls == [2, 1]  # chunked by the repository's max batch size
    np.testing.assert_allclose(got.scores, ref.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.anomaly_maps), np.asarray(ref.anomaly_maps), rtol=0, atol=1e-5)
    assert np.array_equal(got.labels, ref.labels)
    with pytest.raises(ValueError, match="url"):
        ec.Client("127.0.0.1:8000")
