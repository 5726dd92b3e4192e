"""PyTriton server around an edgead.runtime.Detector (`edgead serve`).

Two models are bound on one tritonserver:

``<name>``       (dynamic batching, max batch `max_batch_size`, queue delay `max_queue_delay_us`)
                 input  ``image``        FP32 (-1 batch, C, H, W), pre-processed as the artifact says
                 output ``score``        FP32 (1,) and ``anomaly_map`` FP32 (H, W) at the model's input size
                 = Detector.infer_preprocessed: the same backend and post-processing as in-process scoring.
``<name>_meta``  (no batching) input ``request`` BYTES (1,) -> output ``json`` BYTES (1,): the artifact's model
                 type, pre-processing, thresholds and the served model's name/shapes, for edgead.client.

Requests that are wrong (dtype, shape, an empty batch, a payload shorter than its shape) are refused by
tritonserver or by the infer function with an error response; the server keeps serving. Health:
``/v2/health/live``, ``/v2/health/ready``; Prometheus metrics on the metrics port (``/metrics``).

The Python backend stub that tritonserver starts embeds ``libpython``; :class:`Server` puts this
interpreter's library folder first on ``LD_LIBRARY_PATH`` so the stub runs the same Python (and packages) as
this process and not a system libpython. PyTriton's stub is built against NumPy 1.x: with NumPy >= 2 in this
environment every response would come back empty, so :func:`serve_available` refuses that with a clear message
(``pip install "edgead[serve]"`` resolves numpy<2).
"""
from __future__ import annotations

import json
import logging
import os
import sysconfig
import threading
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["Server", "ServeError", "serve", "serve_available"]

LOG = logging.getLogger("edgead.serve")


class ServeError(RuntimeError):
    """The server cannot be started here (missing extra, incompatible environment, port in use, ...)."""


def serve_available() -> Optional[str]:
    """None when `edgead serve` can run in this environment, else the reason it cannot."""
    try:
        import pytriton  # noqa: F401
        import tritonclient  # noqa: F401
    except ImportError as e:
        return f"the optional 'serve' extra is not installed ({e}); pip install \"edgead[serve]\""
    if int(np.__version__.split(".")[0]) >= 2:
        return (f"PyTriton's Python backend stub is built against NumPy 1.x and returns empty tensors with NumPy "
                f"{np.__version__}; use an environment with numpy<2 (pip install \"edgead[serve]\" resolves it)")
    return None


def _check_port(name: str, v) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < int(v) < 65536:
        raise ValueError(f"Server: argument '{name}' expected a port number in 1..65535, got {v!r}")
    return int(v)


def _prepend_env_path(var: str, path: str) -> None:
    cur = os.environ.get(var, "")
    parts = [p for p in cur.split(os.pathsep) if p]
    if path and path not in parts[:1]:
        os.environ[var] = os.pathsep.join([path] + parts)


class Server:
    """A tritonserver (PyTriton) serving one Detector on `host` (default loopback only).

    ``start()`` returns once the models are ready; ``stop()`` shuts tritonserver down (also on ``with`` exit).
    ``serve_forever()`` blocks until interrupted (Ctrl-C / SIGTERM) -- what `edgead serve` runs.
    """

    def __init__(self, detector, name: str = "edgead", host: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, max_batch_size: int = 32,
                 max_queue_delay_us: int = 500, dynamic_batching: bool = True, instances: int = 1,
                 log_verbose: int = 0):
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
            raise ValueError(f"Server: argument 'name' expected letters, digits, '_' or '-', got {name!r}")
        for arg, v, lo in (("max_batch_size", max_batch_size, 1), ("max_queue_delay_us", max_queue_delay_us, 0),
                           ("instances", instances, 1), ("log_verbose", log_verbose, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < lo:
                raise ValueError(f"Server: argument '{arg}' expected an int >= {lo}, got {v!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"Server: argument 'host' expected an address such as '127.0.0.1', got {host!r}")
        self.detector = detector
        self.name = name
        self.host = host
        self.http_port = _check_port("http_port", http_port)
        self.grpc_port = _check_port("grpc_port", grpc_port)
        self.metrics_port = _check_port("metrics_port", metrics_port)
        self.max_batch_size = int(max_batch_size)
        self.max_queue_delay_us = int(max_queue_delay_us)
        self.dynamic_batching = bool(dynamic_batching)
        self.instances = int(instances)
        self.log_verbose = int(log_verbose)
        pre = detector.preprocessing
        self.input_shape = (int(pre.channels),) + tuple(int(v) for v in pre.size)
        self._triton = None
        self._lock = threading.Lock()
        self.batch_sizes: Dict[int, int] = {}  # batch size the infer function saw -> count (dynamic batching check)

    # ------------------------------------------------------------------------------------------
    def meta(self) -> Dict[str, Any]:
        """What a client needs to pre-process, threshold and call like the Detector (served by <name>_meta)."""
        art = self.detector.artifact
        return {"model_type": art.model_type, "preprocessing": dict(art.preprocessing),
                "thresholds": dict(art.thresholds or {}), "config": dict(art.config or {}),
                "image_threshold": self.detector.image_threshold, "pixel_threshold": self.detector.pixel_threshold,
                "model": self.name, "input": "image", "input_shape": list(self.input_shape),
                "outputs": ["score", "anomaly_map"], "max_batch_size": self.max_batch_size}

    def _infer(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        """(B, C, H, W) float32 -> score (B, 1), anomaly_map (B, H, W): Detector.infer_preprocessed."""
        if image.dtype != np.float32:
            raise ValueError(f"input 'image': expected FP32, got {image.dtype}")
        if image.ndim != 4 or tuple(image.shape[1:]) != self.input_shape:
            raise ValueError(f"input 'image': expected shape (B, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(image.shape)}")
        if image.shape[0] == 0:
            raise ValueError("input 'image': empty batch")
        if not np.isfinite(image).all():
            raise ValueError("input 'image': contains NaN or inf")
        with self._lock:
            self.batch_sizes[int(image.shape[0])] = self.batch_sizes.get(int(image.shape[0]), 0) + 1
        scores, maps = self.detector.infer_preprocessed(image)
        return {"score": np.ascontiguousarray(scores.reshape(-1, 1), dtype=np.float32),
                "anomaly_map": np.ascontiguousarray(maps, dtype=np.float32)}

    def _infer_requests(self, requests):
        """PyTriton infer function over a list of requests (a dynamic batch): one Detector call for all of them,
        split back per request. tritonserver refuses wrong dtypes / shapes / truncated payloads before they are
        batched; what only this function can see (an empty batch, NaN/inf) raises, and PyTriton answers every
        request of that call with the error (it has no per-request errors), then keeps serving."""
        images = [r["image"] for r in requests]
        out = self._infer(images[0] if len(images) == 1 else np.concatenate(images))
        res, i = [], 0
        for im in images:
            n = im.shape[0]
            res.append({k: v[i:i + n] for k, v in out.items()})
            i += n
        return res

    def _meta_infer(self, requests):
        blob = json.dumps(self.meta(), sort_keys=True).encode()
        return [{"json": np.array([blob], dtype=object)} for _ in requests]

    # ------------------------------------------------------------------------------------------
    def start(self) -> "Server":
        why = serve_available()
        if why is not None:
            raise ServeError(f"edgead serve: {why}")
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig

        # the Python backend stub embeds libpython: make it load this interpreter's (and so its packages)
        libdir = sysconfig.get_config_var("LIBDIR")
        if libdir and sysconfig.get_config_var("Py_ENABLE_SHARED"):
            _prepend_env_path("LD_LIBRARY_PATH", libdir)
        cfg = TritonConfig(http_address=self.host, http_port=self.http_port, grpc_address=self.host,
                           grpc_port=self.grpc_port, metrics_address=self.host, metrics_port=self.metrics_port,
                           allow_metrics=True, log_verbose=self.log_verbose or None, exit_timeout_secs=10)
        batcher = (DynamicBatcher(max_queue_delay_microseconds=self.max_queue_delay_us)
                   if self.dynamic_batching else None)
        c, h, w = self.input_shape
        triton = Triton(config=cfg)
        try:
            triton.__enter__()
            triton.bind(
                model_name=self.name,
                infer_func=[self._infer_requests] * self.instances,
                inputs=[Tensor(name="image", dtype=np.float32, shape=(c, h, w))],
                outputs=[Tensor(name="score", dtype=np.float32, shape=(1,)),
                         Tensor(name="anomaly_map", dtype=np.float32, shape=(h, w))],
                config=ModelConfig(batching=True, max_batch_size=self.max_batch_size, batcher=batcher),
                strict=True,
            )
            triton.bind(
                model_name=f"{self.name}_meta",
                infer_func=self._meta_infer,
                inputs=[Tensor(name="request", dtype=bytes, shape=(1,))],
                outputs=[Tensor(name="json", dtype=bytes, shape=(1,))],
                config=ModelConfig(batching=False),
            )
            triton.run()
        except Exception as e:
            try:
                triton.stop()
            except Exception:  # pragma: no cover - best effort
                pass
            raise ServeError(f"edgead serve: tritonserver did not start: {type(e).__name__}: {e}") from e
        self._triton = triton
        return self

    def serve_forever(self) -> None:
        """Start (if needed) and block until interrupted; always stops tritonserver."""
        if self._triton is None:
            self.start()
        try:
            self._triton.serve()
        finally:
            self.stop()

    def stop(self) -> None:
        t, self._triton = self._triton, None
        if t is not None:
            t.stop()

    @property
    def urls(self) -> Dict[str, str]:
        return {"http": f"http://{self.host}:{self.http_port}", "grpc": f"grpc://{self.host}:{self.grpc_port}",
                "metrics": f"http://{self.host}:{self.metrics_port}/metrics"}

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(artifact: str, backend: str = "auto", device: Optional[str] = None, precision: Optional[str] = None,
          threshold=None, pixel_threshold=None, **server_kwargs) -> None:
    """Load the artifact's Detector and serve it until interrupted (what `edgead serve` runs)."""
    from edgead.runtime import Detector

    why = serve_available()
    if why is not None:
        raise ServeError(f"edgead serve: {why}")
    det = Detector.load(artifact, backend=backend, device=device, precision=precision, threshold=threshold,
                        pixel_threshold=pixel_threshold)
    srv = Server(det, **server_kwargs)
    if threading.current_thread() is threading.main_thread():
        import signal

        def _stop(signum, frame):  # SIGTERM (docker stop, systemd) and SIGINT: leave through Server.stop()
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    srv.start()
    print(f"edgead serve: {det!r} as model '{srv.name}' on {srv.urls['http']} (HTTP), {srv.urls['grpc']} (gRPC), "
          f"metrics {srv.urls['metrics']}; Ctrl-C stops", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        det.close()
    print("edgead serve: stopped", flush=True)
