#!/usr/bin/env python
"""Bounded load test of `edgead serve` on loopback against the in-process Detector, in one run.

    python tools/serve_load.py ARTIFACT [--clients 1,8] [--requests 2000] [--malformed 0.01]
                               [--protocol http|grpc] [--max-queue-delay-us 500] [--out serve_load.json]
    python tools/serve_load.py --tiny ...        # a tiny PatchCore artifact built here (needs torch)

For dynamic batching on and off (one tritonserver each, 127.0.0.1 only) and each client count N, N threads send
`--requests` batch-1 requests in total (pre-processed images from a pool; a `--malformed` fraction is malformed and
must be refused: in turn a wrong shape and a wrong dtype, refused by tritonserver before batching, and a NaN image sent
with tritonclient directly, past edgead.client's own check, which only the model refuses, inside a dynamic batch). Every good response is checked against the in-process Detector's result for the same
image (score and map within 1e-5): the report counts errors (good requests that failed), wrong results and
malformed requests that were not refused. Baseline in the same run: Detector.infer_preprocessed in-process with
the same batch-1 inputs, 1 and N threads. Reports throughput (requests/s) and p50/p99 latency (ms).
Needs the `serve` extra in an environment with numpy<2 (see docs/serving.md).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

TOL = 1e-5


def _stats(lat, wall, n):
    lat = np.asarray(lat) * 1e3
    return {"requests": int(n), "wall_s": round(wall, 3), "throughput_rps": round(n / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None}


def _run_threads(n_threads, n_requests, fn):
    """fn(i) for i in range(n_requests) over n_threads workers; -> (latencies of successful calls, wall, outcomes)."""
    lat, outcomes, lock = [], [], threading.Lock()
    counter = iter(range(n_requests))
    clock = threading.Lock()

    def worker():
        while True:
            with clock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            out = fn(i)
            dt = time.perf_counter() - t0
            with lock:
                outcomes.append(out)
                if out == "ok":
                    lat.append(dt)

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(n_threads) as pool:
        futs = [pool.submit(worker) for _ in range(n_threads)]
        for f in futs:
            f.result(timeout=600)
    return lat, time.perf_counter() - t0, outcomes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("artifact", nargs="?", help="artifact directory with model.onnx (or --tiny)")
    ap.add_argument("--tiny", action="store_true", help="build a tiny PatchCore artifact in a temp folder")
    ap.add_argument("--clients", default="1,8", help="comma-separated concurrent client counts")
    ap.add_argument("--requests", type=int, default=2000, help="requests per (batching, clients) run")
    ap.add_argument("--malformed", type=float, default=0.01, help="fraction of wrong-shape requests")
    ap.add_argument("--protocol", choices=["http", "grpc"], default="http")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-queue-delay-us", type=int, default=500)
    ap.add_argument("--pool", type=int, default=32, help="distinct images sent (references computed in-process)")
    ap.add_argument("--out", default="serve_load.json", help="JSON report (a .md table is written beside it)")
    a = ap.parse_args(argv)
    if not a.artifact and not a.tiny:
        ap.error("give ARTIFACT or --tiny")
    clients = [int(c) for c in a.clients.split(",")]
    if a.requests < 1 or not 0 <= a.malformed < 1 or min(clients) < 1:
        ap.error("--requests >= 1, 0 <= --malformed < 1, --clients >= 1")

    from edgead.client import Client, ServerError
    from edgead.runtime import Detector
    from edgead.serve import Server, free_ports, serve_available

    why = serve_available()
    if why:
        print(f"serve_load: {why}", file=sys.stderr)
        return 2
    art = a.artifact
    if a.tiny:
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from tiny_patchcore import make_tiny_artifact

        art = make_tiny_artifact(os.path.join(tempfile.mkdtemp(prefix="edgead-load-"), "patchcore"), "patchcore")
    det = Detector.load(art, backend="onnxruntime", device="cpu")
    rng = np.random.default_rng(0)
    c, (h, w) = det.preprocessing.channels, det.preprocessing.size
    imgs = rng.integers(0, 256, (a.pool, h, w, 3), dtype=np.uint8)
    x = det.preprocessing.batch(list(imgs))
    ref_s, ref_m = det.infer_preprocessed(x)
    bads = [("shape", np.zeros((1, c, h, w + 1), np.float32)), ("nan", np.full((1, c, h, w), np.nan, np.float32)),
            ("dtype", x[:1].astype(np.float64))]
    n_bad_every = int(round(1 / a.malformed)) if a.malformed > 0 else 0

    report = {"artifact": art, "protocol": a.protocol, "requests": a.requests, "malformed": a.malformed,
              "machine": f"{os.cpu_count()} CPUs; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
              "runs": []}

    def inproc(i):
        j = i % a.pool
        s, m = det.infer_preprocessed(x[j:j + 1])
        return "ok" if abs(s[0] - ref_s[j]) <= TOL and np.abs(m[0] - ref_m[j]).max() <= TOL else "wrong"

    for n in clients:
        det.infer_preprocessed(x[:1])
        lat, wall, outs = _run_threads(n, a.requests, inproc)
        r = {"mode": "in-process Detector", "batching": "-", "clients": n, **_stats(lat, wall, len(lat)),
             "errors": 0, "wrong": outs.count("wrong"), "unrefused_malformed": 0}
        report["runs"].append(r)
        print(json.dumps(r), flush=True)

    for dyn in (True, False):
        hp, gp, mp = free_ports(3)
        srv = Server(det, http_port=hp, grpc_port=gp, metrics_port=mp, max_batch_size=a.max_batch_size,
                     max_queue_delay_us=a.max_queue_delay_us, dynamic_batching=dyn)
        srv.start()
        try:
            client = Client(srv.urls[a.protocol], timeout_s=60)
            client.infer_preprocessed(x[:1])  # warm-up

            def send_raw(arr):  # tritonclient without edgead.client's checks (which refuse NaN before sending)
                from tritonclient.utils import InferenceServerException

                tc, conn = client._mod(), client._conn()
                inp = tc.InferInput("image", list(arr.shape), "FP32")
                if a.protocol == "http":
                    inp.set_data_from_numpy(arr, binary_data=True)
                else:
                    inp.set_data_from_numpy(arr)
                try:
                    conn.infer(srv.name, [inp])
                except InferenceServerException:
                    return "refused"
                return "unrefused"

            def remote(i):
                if n_bad_every and i % n_bad_every == n_bad_every - 1:
                    kind, bad = bads[(i // n_bad_every) % len(bads)]
                    if kind == "nan":
                        return send_raw(bad)
                    try:
                        client.infer_preprocessed(bad)
                    except ServerError:
                        return "refused"
                    return "unrefused"
                j = i % a.pool
                try:
                    s, m = client.infer_preprocessed(x[j:j + 1])
                except Exception:  # noqa: BLE001 - counted, the run goes on
                    return "error"
                return "ok" if abs(s[0] - ref_s[j]) <= TOL and np.abs(m[0] - ref_m[j]).max() <= TOL else "wrong"

            for n in clients:
                before = dict(srv.batch_sizes)
                lat, wall, outs = _run_threads(n, a.requests, remote)
                seen = {k: v - before.get(k, 0) for k, v in srv.batch_sizes.items() if v - before.get(k, 0) > 0}
                r = {"mode": f"edgead serve ({a.protocol})", "batching": "dynamic" if dyn else "off", "clients": n,
                     **_stats(lat, wall, len(outs)), "errors": outs.count("error"), "wrong": outs.count("wrong"),
                     "refused_malformed": outs.count("refused"), "unrefused_malformed": outs.count("unrefused"),
                     "mean_server_batch": round(sum(k * v for k, v in seen.items()) / max(1, sum(seen.values())), 2)}
                report["runs"].append(r)
                print(json.dumps(r), flush=True)
            client.close()
        finally:
            srv.stop()
    det.close()

    base1 = next(r for r in report["runs"] if r["mode"].startswith("in-process") and r["clients"] == 1)
    for r in report["runs"]:
        if r["mode"].startswith("edgead serve") and r["clients"] == 1 and r["p50_ms"] is not None:
            r["overhead_p50_ms_vs_inprocess"] = round(r["p50_ms"] - base1["p50_ms"], 3)
    lines = ["| mode | batching | clients | requests | req/s | p50 ms | p99 ms | errors | wrong | malformed refused | mean server batch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(f"| {r['mode']} | {r['batching']} | {r['clients']} | {r['requests']} | {r['throughput_rps']} | "
                     f"{r['p50_ms']} | {r['p99_ms']} | {r['errors']} | {r['wrong']} | "
                     f"{r.get('refused_malformed', '-')} | {r.get('mean_server_batch', '-')} |")
    md = "\n".join(lines)
    print(md)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.splitext(a.out)[0] + ".md", "w") as f:
        f.write(f"{report['machine']}; artifact {art}\n\n{md}\n")
    bad_runs = [r for r in report["runs"] if r["errors"] or r["wrong"] or r["unrefused_malformed"]]
    return 1 if bad_runs else 0


if __name__ == "__main__":
    sys.exit(main())
