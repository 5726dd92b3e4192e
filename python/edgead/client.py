"""Client for a Triton server running edgead: `edgead serve` (tritonserver + a Python-backend model) or the model repository from
`edgead export --format triton` on tritonserver. Needs the optional extra ``pip install "edgead[serve]"``.

    from edgead.client import Client
    with Client("http://127.0.0.1:8000") as c:        # or "grpc://127.0.0.1:8001"
        r = c("part.png")                             # Result, as Detector("part.png") gives
        rs = c(["a.png", "b.png"])                    # BatchResult
        rs = c(np.stack(images))                      # arrays: HxW[xC] or NxHxWxC uint8 / float

The client pre-processes exactly like the Detector (the artifact's Preprocessing), sends the (B, C, H, W) FP32
batch in chunks of at most the served max batch size, and turns the returned scores / model-size maps into
Results with the Detector's own code (:class:`edgead.runtime.Detector.__call__`: resize to each image's size,
thresholds), so a served result equals the in-process one. Pre-processing and thresholds come from the
server (the ``edgead_meta`` config parameter of `edgead serve`'s model, or the ensemble's config parameters of an
exported repository), or from `artifact` (an artifact directory or its edgead.json) when given.

Thread safety: one Client may be used from several threads (each thread gets its own connection).
"""
from __future__ import annotations

import json
import os
import threading
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from edgead.runtime.detector import Detector

__all__ = ["Client", "ServerError"]


class ServerError(RuntimeError):
    """The server refused or failed a request (the server's message is included)."""


class _RemoteBackend:
    """What Detector.__init__ reads of a backend; the network and post-processing run on the server."""

    name = "triton"
    outputs_on_device = False

    def __init__(self, url: str, max_batch: int):
        self.url = url
        self.max_batch = max_batch
        self.device = url

    def run(self, x):  # pragma: no cover - the client overrides infer_preprocessed
        raise RuntimeError("the remote backend runs on the server")

    def describe(self) -> Dict[str, Any]:
        return {"backend": "triton", "url": self.url, "max_batch": self.max_batch}

    def close(self) -> None:
        pass


class _RemoteDetector(Detector):
    """A Detector whose network + post-processing call is a Triton request; __call__ is the Detector's."""

    def __init__(self, artifact, backend, client: "Client", threshold, pixel_threshold):
        super().__init__(artifact, backend, threshold=threshold, pixel_threshold=pixel_threshold)
        self._client = client

    def _score_chunk(self, chunk):
        return self._client.infer_preprocessed(chunk)  # the Detector's chunking, one request per chunk


def _parse_url(url: str) -> Tuple[str, str]:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"Client: argument 'url' expected 'http://HOST:PORT' or 'grpc://HOST:PORT', got {url!r}")
    scheme, rest = url.split("://", 1)
    if scheme not in ("http", "grpc") or not rest:
        raise ValueError(f"Client: argument 'url' expected 'http://HOST:PORT' or 'grpc://HOST:PORT', got {url!r}")
    return scheme, rest.rstrip("/")


class Client:
    def __init__(self, url: str = "http://127.0.0.1:8000", model: str = "edgead", artifact: Optional[str] = None,
                 threshold: Union[None, str, float] = None, pixel_threshold: Union[None, str, float] = None,
                 timeout_s: float = 60.0):
        try:
            import tritonclient  # noqa: F401
        except ImportError as e:
            raise ImportError(f"edgead.client needs the optional 'serve' extra ({e}); pip install \"edgead[serve]\"") from None
        self.protocol, self._address = _parse_url(url)
        self.url, self.model = url, model
        if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
            raise ValueError(f"Client: argument 'timeout_s' expected a number > 0, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        meta = self._meta_from(artifact) if artifact is not None else self.server_meta()
        self.meta = meta
        from edgead.artifact import Artifact

        art = Artifact(path=None, model_type=meta["model_type"], config=dict(meta.get("config") or {}),
                       preprocessing=dict(meta["preprocessing"]), tensors={}, thresholds=dict(meta.get("thresholds") or {}))
        # the server's active thresholds (edgead serve --threshold) unless the caller chose others
        if threshold is None and meta.get("image_threshold") is not None:
            threshold = float(meta["image_threshold"])
        if pixel_threshold is None and meta.get("pixel_threshold") is not None:
            pixel_threshold = float(meta["pixel_threshold"])
        self.max_batch_size = int(meta.get("max_batch_size") or 32)
        self.detector = _RemoteDetector(art, _RemoteBackend(url, self.max_batch_size), self, threshold, pixel_threshold)
        self.input_shape = (int(self.detector.preprocessing.channels),) + tuple(int(v) for v in self.detector.preprocessing.size)

    # ------------------------------------------------------------------------------------------
    def _conn(self):
        c = getattr(self._local, "conn", None)
        if c is None:
            if self.protocol == "http":
                import tritonclient.http as tc

                c = tc.InferenceServerClient(self._address, connection_timeout=self.timeout_s,
                                             network_timeout=self.timeout_s)
            else:
                import tritonclient.grpc as tc

                c = tc.InferenceServerClient(self._address)
            self._local.conn = c
            with _ALL_LOCK:
                self._all = getattr(self, "_all", []) + [c]
        return c

    def _mod(self):
        if self.protocol == "http":
            import tritonclient.http as tc
        else:
            import tritonclient.grpc as tc
        return tc

    def _call(self, fn, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            raise ServerError(f"{self.url} model '{self.model}': {e.message() if hasattr(e, 'message') else e}") from None

    @staticmethod
    def _meta_from(artifact: str) -> Dict[str, Any]:
        from edgead.artifact import META_FILE, read_meta

        path = os.fspath(artifact)
        if os.path.isfile(path) and os.path.basename(path) == META_FILE:
            path = os.path.dirname(os.path.abspath(path))
        return read_meta(path)

    def server_meta(self) -> Dict[str, Any]:
        """Model type, pre-processing, thresholds from the server: the model's ``edgead_meta`` config parameter
        (`edgead serve`), else the ensemble's ``edgead_*`` parameters (an `edgead export --format triton`
        repository)."""
        conn = self._conn()
        from tritonclient.utils import InferenceServerException

        try:
            cfg = conn.get_model_config(self.model) if self.protocol == "http" else \
                conn.get_model_config(self.model, as_json=True)["config"]
        except InferenceServerException as e:
            raise ServerError(f"{self.url}: cannot read model '{self.model}' metadata: {e}") from None
        params = {k: v.get("string_value") for k, v in (cfg.get("parameters") or {}).items()}
        if params.get("edgead_meta"):
            return json.loads(params["edgead_meta"])
        if "edgead_preprocessing" not in params:
            raise ServerError(f"{self.url} model '{self.model}' carries no edgead metadata; pass artifact=")
        return {"model_type": params.get("edgead_model_type"), "preprocessing": json.loads(params["edgead_preprocessing"]),
                "thresholds": json.loads(params.get("edgead_thresholds") or "{}"),
                "max_batch_size": int(cfg.get("max_batch_size") or 32)}

    # ------------------------------------------------------------------------------------------
    def infer_preprocessed(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """One request: (B, C, H, W) FP32 pre-processed batch -> (scores (B,), maps (B, H, W)) from the server."""
        x = np.asarray(x)
        if x.ndim != 4 or x.shape[0] < 1:
            raise ValueError(f"infer_preprocessed: argument 'x' expected a (B>=1, C, H, W) batch, got shape {x.shape}")
        tc, conn = self._mod(), self._conn()
        dtype = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.float64): "FP64",
                 np.dtype(np.uint8): "UINT8", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64"}.get(x.dtype)
        if dtype is None:
            raise TypeError(f"infer_preprocessed: argument 'x' has dtype {x.dtype}, which cannot be sent")
        # The server refuses NaN/inf too (its own error response, after dynamic batching); refusing them here
        # saves the round trip and names the argument.
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise ValueError("infer_preprocessed: argument 'x' contains NaN or inf (the server would refuse it)")
        inp = tc.InferInput("image", list(x.shape), dtype)
        if self.protocol == "http":
            inp.set_data_from_numpy(np.ascontiguousarray(x), binary_data=True)
            outs = [tc.InferRequestedOutput("score", binary_data=True), tc.InferRequestedOutput("anomaly_map", binary_data=True)]
        else:
            inp.set_data_from_numpy(np.ascontiguousarray(x))
            outs = [tc.InferRequestedOutput("score"), tc.InferRequestedOutput("anomaly_map")]
        kw = {} if self.protocol == "http" else {"client_timeout": self.timeout_s}
        res = self._call(conn.infer, self.model, [inp], outputs=outs, **kw)
        scores = np.asarray(res.as_numpy("score"), dtype=np.float32).reshape(-1)
        maps = np.asarray(res.as_numpy("anomaly_map"), dtype=np.float32)
        if scores.shape[0] != x.shape[0] or maps.ndim != 3 or maps.shape[0] != x.shape[0]:
            raise ServerError(f"{self.url} model '{self.model}': {x.shape[0]} images sent, got scores {scores.shape} "
                              f"and maps {maps.shape}")
        return scores, maps

    def __call__(self, images):
        """Same inputs and Results as :meth:`edgead.runtime.Detector.__call__`."""
        return self.detector(images)

    def ready(self) -> bool:
        """Server live and the model ready."""
        conn = self._conn()
        try:
            return bool(conn.is_server_live() and conn.is_model_ready(self.model))
        except Exception:
            return False

    def close(self) -> None:
        with _ALL_LOCK:
            conns, self._all = getattr(self, "_all", []), []
        for c in conns:
            try:
                c.close()
            except Exception:  # pragma: no cover - best effort
                pass
        self._local = threading.local()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, model={self.model!r})"


_ALL_LOCK = threading.Lock()
