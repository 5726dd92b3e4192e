"""`edgead serve`: a real tritonserver (bundled in nvidia-pytriton) on loopback with a generated Python-backend model
repository around the Detector, and edgead.client.

Skipped (cleanly, with the reason) when the optional `serve` extra is absent or this environment cannot run
the Python backend stub (numpy >= 2: see edgead.serve.server). Everything binds 127.0.0.1 only, every
request loop is bounded, and the server is stopped at the end (its ports are closed afterwards).
Runtime here: ~30-40 s, mostly tritonserver start-up and the tiny PatchCore fit (2-core loaded machine).

CI runs this module in its own numpy<2 environment (`.ci/serve`, without torch) with
``EDGEAD_SERVE_ARTIFACT`` = a tiny artifact the main environment built (``python tests/tiny_patchcore.py OUT``)
and ``EDGEAD_REQUIRE_SERVE=1``, which turns every reason to skip into a failure.
"""
from __future__ import annotations

import concurrent.futures as cf
import http.client
import json
import os
import socket
import urllib.request

import numpy as np
import pytest

from edgead.serve import free_ports, serve_available

REQUIRE = os.environ.get("EDGEAD_REQUIRE_SERVE", "") == "1"  # CI's serve step: skipping is a failure
ARTIFACT = os.environ.get("EDGEAD_SERVE_ARTIFACT") or None  # prebuilt tiny artifact (no torch needed here)


def _unavailable(why):
    if REQUIRE:
        pytest.fail(f"EDGEAD_REQUIRE_SERVE=1 but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


_why = serve_available()
if _why is not None:
    _unavailable(f"edgead serve unavailable: {_why}")
pytestmark = [pytest.mark.serve]
for _mod in ("onnxruntime",) + (() if ARTIFACT else ("torch", "onnx")):
    try:
        __import__(_mod)
    except ImportError as _e:
        _unavailable(f"{_mod} is needed ({_e}); or set EDGEAD_SERVE_ARTIFACT to a prebuilt artifact")
if ARTIFACT and not os.path.isfile(os.path.join(ARTIFACT, "model.onnx")):
    pytest.fail(f"EDGEAD_SERVE_ARTIFACT={ARTIFACT!r}: expected an exported artifact directory with model.onnx",
                pytrace=False)

from tiny_patchcore import make_tiny_artifact, textures  # noqa: E402  (tests/ is on sys.path)

TOL = 1e-5


def _port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from edgead.runtime import Detector
    from edgead.serve import Server

    art = ARTIFACT or make_tiny_artifact(str(tmp_path_factory.mktemp("serve") / "patchcore"), "patchcore")
    det = Detector.load(art, backend="onnxruntime", device="cpu")
    http_port, grpc_port, metrics_port = free_ports(3)
    srv = Server(det, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, max_batch_size=8,
                 max_queue_delay_us=5000, instances=1)
    srv.start()
    pgid = os.getpgid(srv.pid)
    try:
        yield art, det, srv
    finally:
        srv.stop()
        det.close()
        for p in (http_port, grpc_port, metrics_port):  # clean shutdown: nothing listens any more
            assert not _port_open(p), f"port {p} still open after stop()"
        _assert_group_gone(pgid)


def _assert_group_gone(pgid):
    """tritonserver and its Python backend stubs (one process group) have all exited."""
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _same(got, ref):
    np.testing.assert_allclose(np.asarray(got.scores), np.asarray(ref.scores), rtol=0, atol=TOL)
    for g, r in zip(got.anomaly_maps, ref.anomaly_maps):
        np.testing.assert_allclose(g, r, rtol=0, atol=TOL)
    assert np.array_equal(np.asarray(got.labels), np.asarray(ref.labels))
    # masks: equal except where a map value sits within TOL of the pixel threshold
    for g, r, m in zip(got.masks, ref.masks, ref.anomaly_maps):
        near = np.abs(m - ref_threshold(ref)) <= TOL
        assert np.array_equal(g[~near], r[~near])


def ref_threshold(ref):
    return ref._pixel_threshold


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_concurrent_clients_equal_detector(served, protocol):
    from edgead.client import Client

    art, det, srv = served
    url = srv.urls[protocol]
    batches = [textures(1 + i % 3, 100 + i, size=48 + 8 * (i % 2)) for i in range(16)]  # sizes differ from 64
    refs = [det(b) for b in batches]
    for r in refs:
        r._pixel_threshold = det.pixel_threshold
    with Client(url) as client:
        assert client.ready()
        assert client.detector.image_threshold == det.image_threshold
        assert client.detector.pixel_threshold == det.pixel_threshold
        before = dict(srv.batch_sizes)
        with cf.ThreadPoolExecutor(8) as pool:
            futs = [pool.submit(client, b) for b in batches]
            results = [f.result(timeout=60) for f in futs]
    for got, ref in zip(results, refs):
        _same(got, ref)
    # single image in, Result out, like the Detector
    with Client(url) as client:
        r1, d1 = client(batches[0][0]), det(batches[0][0])
    assert abs(r1.score - d1.score) <= TOL and r1.anomaly_map.shape == d1.anomaly_map.shape
    assert r1.label == d1.label
    seen = {k: v - before.get(k, 0) for k, v in srv.batch_sizes.items() if v - before.get(k, 0) > 0}
    assert sum(k * v for k, v in seen.items()) >= sum(len(b) for b in batches)
    # dynamic batching: 8 threads, 5 ms queue delay -> requests were combined (the largest request has 3 images)
    assert max(seen) > 3, seen


def test_client_sends_files_and_refuses_truncated_image(served, tmp_path):
    import cv2

    from edgead.client import Client

    art, det, srv = served
    paths = []
    for i, im in enumerate(textures(3, 7)):
        p = str(tmp_path / f"im{i}.png")
        cv2.imwrite(p, im[:, :, ::-1])
        paths.append(p)
    with Client(srv.urls["http"], artifact=art) as client:  # metadata from the artifact instead of the server
        got, ref = client(paths), det(paths)
        ref._pixel_threshold = det.pixel_threshold
        _same(got, ref)
        assert got.paths == paths
        data = open(paths[0], "rb").read()
        bad = str(tmp_path / "truncated.png")
        with open(bad, "wb") as f:
            f.write(data[: len(data) // 3])
        with pytest.raises((ValueError, OSError)):
            client([bad])
        again = client(paths[:1])  # still serving
        assert abs(again[0].score - ref[0].score) <= TOL


def _raw_http_infer(port, model, header, body, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        head = json.dumps(header).encode()
        conn.request("POST", f"/v2/models/{model}/infer", body=head + body,
                     headers={"Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_malformed_requests_get_errors_and_server_keeps_serving(served):
    from edgead.client import Client, ServerError

    art, det, srv = served
    c, h, w = srv.input_shape
    good = det.preprocessing.batch(list(textures(2, 3)))
    ref_s, _ = det.infer_preprocessed(good)
    for url in (srv.urls["http"], srv.urls["grpc"]):
        with Client(url) as client:
            cases = {
                "dtype": good.astype(np.float64),
                "shape": np.zeros((1, c, h, w + 1), np.float32),
                "channels": np.zeros((1, 1, h, w), np.float32),
                "empty": np.zeros((0, c, h, w), np.float32),
                "nan": np.full((1, c, h, w), np.nan, np.float32),
            }
            for name, x in cases.items():
                if name in ("empty", "nan"):  # the client refuses them before sending: sent raw below
                    with pytest.raises(ValueError):
                        client.infer_preprocessed(x)
                    continue
                with pytest.raises(ServerError):
                    client.infer_preprocessed(x)
                s, _ = client.infer_preprocessed(good)  # still serving, still right
                np.testing.assert_allclose(s, ref_s, rtol=0, atol=TOL)
    # raw HTTP: an empty batch, a payload shorter than its shape, a body that is not a request
    n = c * h * w
    full = np.zeros((1, c, h, w), np.float32).tobytes()
    hdr = lambda shape, size: {"inputs": [{"name": "image", "shape": shape, "datatype": "FP32",  # noqa: E731
                                           "parameters": {"binary_data_size": size}}]}
    st, body = _raw_http_infer(srv.http_port, srv.name, hdr([0, c, h, w], 0), b"")
    assert st >= 400, body
    st, body = _raw_http_infer(srv.http_port, srv.name, hdr([1, c, h, w], 4 * n), full[: len(full) // 2])
    assert st >= 400, body
    st, body = _raw_http_infer(srv.http_port, srv.name, {"inputs": "nonsense"}, b"")
    assert st >= 400, body
    nan = np.full((1, c, h, w), np.nan, np.float32).tobytes()
    st, body = _raw_http_infer(srv.http_port, srv.name, hdr([1, c, h, w], 4 * n), nan)
    assert st >= 400 and b"NaN" in body, body
    with Client(srv.urls["http"]) as client:
        s, _ = client.infer_preprocessed(good)
    np.testing.assert_allclose(s, ref_s, rtol=0, atol=TOL)


def test_refused_request_does_not_fail_its_batch_mates(served):
    """Every malformed request gets its own error response, the good requests sent at the same time (8 threads,
    5 ms queue delay: dynamic batches mix both) all come back right. Wrong shapes/dtypes are refused by
    tritonserver before batching; NaN, inf and an empty batch only by the model, inside a dynamic batch, with
    per-request error responses (sent raw over HTTP: edgead.client refuses NaN/inf/empty before sending)."""
    from edgead.client import Client, ServerError

    art, det, srv = served
    c, h, w = srv.input_shape
    good = det.preprocessing.batch(list(textures(4, 11)))
    ref_s, ref_m = det.infer_preprocessed(good)
    bads = [np.zeros((1, c, h, w + 1), np.float32), np.zeros((1, c, h, w), np.float64)]
    nan = np.zeros((1, c, h, w), np.float32)
    nan[0, 0, 3, 5] = np.nan
    inf = np.zeros((2, c, h, w), np.float32)
    inf[1, -1, -1, -1] = np.inf
    raws = [([1, c, h, w], nan.tobytes(), b"NaN"), ([2, c, h, w], inf.tobytes(), b"NaN or inf"),
            ([0, c, h, w], b"", b"")]
    before = dict(srv.batch_sizes)
    with Client(srv.urls["http"]) as client:
        def send(i):
            if i % 4 == 3:
                k = (i // 4) % 5
                if k >= 2:  # raw: only the model can refuse these
                    shape, body, word = raws[k - 2]
                    hdr = {"inputs": [{"name": "image", "shape": shape, "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(body)}}]}
                    st, text = _raw_http_infer(srv.http_port, srv.name, hdr, body)
                    return "refused" if st >= 400 and word in text else f"not refused {st} {text[:200]!r}"
                try:
                    client.infer_preprocessed(bads[k])
                except ServerError:
                    return "refused"
                return "not refused"
            j = i % 4
            s, m = client.infer_preprocessed(good[j:j + 1])
            ok = abs(s[0] - ref_s[j]) <= TOL and np.abs(m[0] - ref_m[j]).max() <= TOL
            return "ok" if ok else "wrong"

        with cf.ThreadPoolExecutor(8) as pool:
            outs = list(pool.map(send, range(80), timeout=120))
    assert outs.count("refused") == 20 and outs.count("ok") == 60, outs
    seen = {k: v - before.get(k, 0) for k, v in srv.batch_sizes.items() if v - before.get(k, 0) > 0}
    assert max(seen) > 1, seen  # requests were batched together, so refusals were made inside batches


def test_startup_failure_is_clear_and_leaves_nothing(served):
    """A port already in use: start() raises ServeError naming the ports with tritonserver's log, within the
    startup bound, and no server is left running."""
    import time

    from edgead.serve import ServeError, Server

    art, det, srv = served
    srv2 = Server(det, http_port=srv.http_port, grpc_port=None, metrics_port=None, startup_timeout_s=60)
    t0 = time.monotonic()
    with pytest.raises(ServeError, match=f"http port {srv.http_port} on 127.0.0.1 is in use"):
        srv2.start()
    assert time.monotonic() - t0 < 60
    assert srv2.pid is None and srv2._tmp is None
    # the model cannot load (its artifact is gone): tritonserver exits, the error carries the end of its log
    srv3 = Server(det, http_port=None, grpc_port=None, metrics_port=None, startup_timeout_s=60)
    srv3.load_spec = dict(srv3.load_spec, artifact=os.path.join(os.path.dirname(art), "no-such-artifact"))
    with pytest.raises(ServeError, match="exited with status") as e:
        srv3.start()
    assert "no-such-artifact" in str(e.value)
    assert srv3.pid is None and srv3._tmp is None
    with urllib.request.urlopen(f"{srv.urls['http']}/v2/health/ready", timeout=10) as r:  # the first one serves on
        assert r.status == 200


def test_health_and_metrics(served):
    art, det, srv = served
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{srv.name}/ready"):
        with urllib.request.urlopen(f"{srv.urls['http']}{path}", timeout=10) as r:
            assert r.status == 200, path
    with urllib.request.urlopen(srv.urls["metrics"], timeout=10) as r:
        text = r.read().decode()
    assert "nv_inference_request_success" in text and f'model="{srv.name}"' in text
    meta = srv.meta()
    assert meta["preprocessing"] == det.artifact.preprocessing and meta["input_shape"] == list(srv.input_shape)
    with urllib.request.urlopen(f"{srv.urls['http']}/v2/models/{srv.name}/config", timeout=10) as r:
        cfg = json.loads(r.read())
    assert cfg["backend"] == "python" and cfg["max_batch_size"] == 8
    assert cfg["dynamic_batching"]["max_queue_delay_microseconds"] == 5000
    assert json.loads(cfg["parameters"]["edgead_meta"]["string_value"]) == meta


def test_server_argument_errors(served):
    from edgead.serve import Server

    art, det, srv = served
    for kw in ({"http_port": 0}, {"max_batch_size": 0}, {"name": "a b"}, {"instances": True},
               {"startup_timeout_s": 0}):
        with pytest.raises(ValueError):
            Server(det, **kw)


def test_request_checks_of_the_model():
    """What the Python-backend model refuses per request (besides tritonserver's own checks)."""
    from edgead.serve.triton_model import request_error

    shape = (3, 8, 8)
    assert request_error(np.zeros((2,) + shape, np.float32), shape) is None
    bad = {"missing": None, "FP32": np.zeros((1,) + shape, np.float64), "shape": np.zeros((1, 3, 8, 9), np.float32),
           "empty": np.zeros((0,) + shape, np.float32), "NaN": np.full((1,) + shape, np.nan, np.float32),
           "inf": np.full((1,) + shape, -np.inf, np.float32)}
    for word, x in bad.items():
        why = request_error(x, shape)
        assert why is not None and word in why, (word, why)
