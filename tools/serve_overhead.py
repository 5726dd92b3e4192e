#!/usr/bin/env python
"""Where `edgead serve`'s per-request overhead comes from: 1 client, batch 1, sequential, p50 over --requests.

    python tools/serve_overhead.py ARTIFACT [--requests 1000]      # numpy<2 environment with the `serve` extra

Rows (same process, same pre-processed 1-image batch, every served answer checked against the Detector, 1e-5):
  in-process     Detector.infer_preprocessed
  edgead serve   edgead.serve.Server (bundled tritonserver + generated Python-backend model) + edgead.client, HTTP
  pytriton noop  a PyTriton model returning zeros of the same shapes (PyTriton's bind/proxy transport cost, the
                 path `edgead serve` used before 2026-11-26 06:15 UTC)
  plain noop     PyTriton's bundled tritonserver + Python backend, a model.py returning zeros (no PyTriton proxy)
  plain detector the same tritonserver + Python backend, model.py running this Detector in the backend stub
The "plain" rows are this probe's own minimal Python-backend repository: `edgead serve` should cost the same.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

from edgead.serve import free_ports

TOL = 1e-5
MODEL_PY = '''
import json
import numpy as np
import triton_python_backend_utils as pb


class TritonPythonModel:
    def initialize(self, args):
        art = json.loads(args["model_config"])["parameters"]["artifact"]["string_value"]
        self.det = None
        if art:
            from edgead.runtime import Detector
            self.det = Detector.load(art, backend="onnxruntime", device="cpu")

    def execute(self, requests):
        xs = [pb.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        if self.det is None:
            return [pb.InferenceResponse([pb.Tensor("score", np.zeros((x.shape[0], 1), np.float32)),
                                          pb.Tensor("anomaly_map", np.zeros((x.shape[0],) + x.shape[2:], np.float32))])
                    for x in xs]
        s, m = self.det.infer_preprocessed(np.concatenate(xs) if len(xs) > 1 else xs[0])
        out, i = [], 0
        for x in xs:
            n = x.shape[0]
            out.append(pb.InferenceResponse([pb.Tensor("score", np.array(s[i:i + n].reshape(-1, 1), np.float32)),
                                             pb.Tensor("anomaly_map", np.array(m[i:i + n], np.float32))]))
            i += n
        return out
'''


def _p50(fn, n):
    for _ in range(min(30, n)):
        fn()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return float(np.percentile(np.asarray(t) * 1e3, 50))


def _http_call(url_hostport, model, x, check=None):
    import tritonclient.http as th

    c = th.InferenceServerClient(url_hostport)

    def call():
        i = th.InferInput("image", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=True)
        r = c.infer(model, [i], outputs=[th.InferRequestedOutput("score", binary_data=True),
                                         th.InferRequestedOutput("anomaly_map", binary_data=True)])
        return r.as_numpy("score").reshape(-1), r.as_numpy("anomaly_map")

    if check is not None:
        s, m = call()
        assert abs(s[0] - check[0][0]) <= TOL and np.abs(m[0] - check[1][0]).max() <= TOL, "served result differs"
    return call, c


def _plain_server(tmp, artifact, c, h, w):
    """PyTriton's bundled tritonserver with a Python-backend repository: models noop and detector."""
    import pytriton

    root = os.path.join(os.path.dirname(pytriton.__file__), "tritonserver")
    be = os.path.join(tmp, "backends")
    shutil.copytree(os.path.join(root, "backends"), be)
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy(os.path.join(root, "python_backend_stubs", ver, "triton_python_backend_stub"), os.path.join(be, "python"))
    repo = os.path.join(tmp, "repo")
    for name, art in (("noop", ""), ("detector", os.path.abspath(artifact))):
        os.makedirs(os.path.join(repo, name, "1"))
        with open(os.path.join(repo, name, "1", "model.py"), "w") as f:
            f.write(MODEL_PY)
        with open(os.path.join(repo, name, "config.pbtxt"), "w") as f:
            f.write(f'name: "{name}"\nbackend: "python"\nmax_batch_size: 16\n'
                    f'dynamic_batching {{ max_queue_delay_microseconds: 0 }}\n'
                    f'input [ {{ name: "image" data_type: TYPE_FP32 dims: [{c}, {h}, {w}] }} ]\n'
                    f'output [ {{ name: "score" data_type: TYPE_FP32 dims: [1] }}, '
                    f'{{ name: "anomaly_map" data_type: TYPE_FP32 dims: [{h}, {w}] }} ]\n'
                    f'instance_group [ {{ kind: KIND_CPU count: 1 }} ]\n'
                    f'parameters {{ key: "artifact" value {{ string_value: "{art}" }} }}\n')
    env = dict(os.environ)
    libs = [sysconfig.get_config_var("LIBDIR") or "",
            os.path.join(os.path.dirname(os.path.dirname(pytriton.__file__)), "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs + [env.get("LD_LIBRARY_PATH", "")] if p])
    env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")  # stub: this venv's packages
    import edgead

    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(edgead.__file__)), env.get("PYTHONPATH", "")])
    hp, gp, mp = free_ports(3)
    log = open(os.path.join(tmp, "tritonserver.log"), "w")
    proc = subprocess.Popen([os.path.join(root, "bin", "tritonserver"), f"--model-repository={repo}",
                             f"--backend-directory={be}", "--http-address=127.0.0.1", f"--http-port={hp}",
                             "--grpc-address=127.0.0.1", f"--grpc-port={gp}", f"--metrics-port={mp}",
                             "--allow-gpu-metrics=false"], env=env, stdout=log, stderr=subprocess.STDOUT)
    import tritonclient.http as th

    c0 = th.InferenceServerClient(f"127.0.0.1:{hp}")
    for _ in range(240):
        try:
            if c0.is_model_ready("detector") and c0.is_model_ready("noop"):
                return proc, f"127.0.0.1:{hp}"
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    proc.terminate()
    raise RuntimeError(f"plain tritonserver did not start; see {log.name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--out", default=None, help="JSON with the rows")
    a = ap.parse_args(argv)

    from edgead.client import Client
    from edgead.runtime import Detector
    from edgead.serve import Server, serve_available

    why = serve_available()
    if why:
        print(f"serve_overhead: {why}", file=sys.stderr)
        return 2
    det = Detector.load(a.artifact, backend="onnxruntime", device="cpu")
    c, (h, w) = det.preprocessing.channels, det.preprocessing.size
    x = det.preprocessing.batch(list(np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)))
    ref = det.infer_preprocessed(x)
    rows = {"in-process": _p50(lambda: det.infer_preprocessed(x), a.requests)}

    hp, gp, mp = free_ports(3)
    with Server(det, http_port=hp, grpc_port=gp, metrics_port=mp, max_batch_size=16, max_queue_delay_us=0) as srv:
        with Client(srv.urls["http"]) as cl:
            s, m = cl.infer_preprocessed(x)
            assert abs(s[0] - ref[0][0]) <= TOL and np.abs(m[0] - ref[1][0]).max() <= TOL
            rows["edgead serve"] = _p50(lambda: cl.infer_preprocessed(x), a.requests)

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    # PyTriton's stub embeds libpython: this interpreter's first (else a system libpython of another patch level)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, os.environ.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)

    def zeros(requests):
        return [{"score": np.zeros((r["image"].shape[0], 1), np.float32),
                 "anomaly_map": np.zeros((r["image"].shape[0], h, w), np.float32)} for r in requests]

    hp, gp, mp = free_ports(3)
    cfg = TritonConfig(http_address="127.0.0.1", http_port=hp, grpc_address="127.0.0.1", grpc_port=gp,
                       metrics_address="127.0.0.1", metrics_port=mp)
    with Triton(config=cfg) as t:
        t.bind(model_name="noop", infer_func=zeros, inputs=[Tensor(name="image", dtype=np.float32, shape=(c, h, w))],
               outputs=[Tensor(name="score", dtype=np.float32, shape=(1,)),
                        Tensor(name="anomaly_map", dtype=np.float32, shape=(h, w))],
               config=ModelConfig(batching=True, max_batch_size=16,
                                  batcher=DynamicBatcher(max_queue_delay_microseconds=0)))
        t.run()
        call, cl = _http_call(f"127.0.0.1:{hp}", "noop", x)
        rows["pytriton noop"] = _p50(call, a.requests)
        cl.close()

    with tempfile.TemporaryDirectory(prefix="edgead-plain-") as tmp:
        proc, addr = _plain_server(tmp, a.artifact, c, h, w)
        try:
            call, cl = _http_call(addr, "noop", x)
            rows["plain tritonserver noop"] = _p50(call, a.requests)
            cl.close()
            call, cl = _http_call(addr, "detector", x, check=ref)
            rows["plain tritonserver detector"] = _p50(call, a.requests)
            cl.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    rows["in-process (again)"] = _p50(lambda: det.infer_preprocessed(x), a.requests)
    base = min(rows["in-process"], rows["in-process (again)"])
    print(f"p50 ms over {a.requests} sequential batch-1 requests (HTTP), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.2f}")
    for k, v in rows.items():
        extra = f"  (overhead {v - base:+.3f} ms over in-process)" if k in ("edgead serve",
                                                                            "plain tritonserver detector") else ""
        print(f"  {k:30s} {v:8.3f}{extra}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"requests": a.requests, "p50_ms": rows}, f, indent=2)
    det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
