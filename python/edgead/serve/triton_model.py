"""The Python-backend model that `edgead serve` runs inside tritonserver (imported by the generated model.py).

One model, ``<name>``, dynamic batching: every request of a batch is checked on its own (FP32, (B>=1, C, H, W),
finite); a bad one gets its own error response (``pb_utils.InferenceResponse(error=...)``) and the good ones are
scored together by one ``Detector.infer_preprocessed`` call -- the in-process Detector's code, loaded from the
artifact with the backend/device/precision the server was started with (model config parameter
``edgead_load``). If that call fails for a batch of several requests, each request is scored alone so only the
request that causes the failure gets the error.

``triton_python_backend_utils`` only exists inside the Python backend stub: it is imported in ``initialize``.
"""
from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np


def request_error(x: Optional[np.ndarray], shape: Sequence[int]) -> Optional[str]:
    """Why one request's ``image`` cannot be scored (None when it can). tritonserver already refuses wrong
    dtypes, shapes and truncated payloads against config.pbtxt; this repeats the checks (cheap) and adds what
    only the model can see: an empty batch, NaN or inf."""
    if x is None:
        return "input 'image': missing"
    if x.dtype != np.float32:
        return f"input 'image': expected FP32, got {x.dtype}"
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        return f"input 'image': expected shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}"
    if x.shape[0] == 0:
        return "input 'image': empty batch"
    if not np.isfinite(x).all():
        return "input 'image': contains NaN or inf"
    return None


class TritonPythonModel:
    def initialize(self, args):
        import triton_python_backend_utils as pb_utils

        from edgead.runtime import Detector

        self.pb = pb_utils
        cfg = json.loads(args["model_config"])
        load = json.loads(cfg["parameters"]["edgead_load"]["string_value"])
        self.det = Detector.load(load.pop("artifact"), **load)
        self.shape = tuple(int(v) for v in cfg["input"][0]["dims"])

    def _ok(self, s, m):
        pb = self.pb
        return pb.InferenceResponse(output_tensors=[
            pb.Tensor("score", np.ascontiguousarray(np.asarray(s, np.float32).reshape(-1, 1))),
            pb.Tensor("anomaly_map", np.ascontiguousarray(m, dtype=np.float32))])

    def _error(self, msg):
        return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(msg))

    def execute(self, requests):
        out = [None] * len(requests)
        good, xs = [], []
        for i, req in enumerate(requests):
            t = self.pb.get_input_tensor_by_name(req, "image")
            x = None if t is None else t.as_numpy()
            why = request_error(x, self.shape)
            if why is None:
                good.append(i)
                xs.append(x)
            else:
                out[i] = self._error(why)
        if xs:
            try:
                s, m = self.det.infer_preprocessed(xs[0] if len(xs) == 1 else np.concatenate(xs))
            except Exception as e:  # noqa: BLE001 - answered as error responses, the model keeps serving
                if len(xs) == 1:
                    out[good[0]] = self._error(f"edgead: scoring failed: {type(e).__name__}: {e}")
                else:  # find the request that fails: score each alone
                    for i, x in zip(good, xs):
                        try:
                            out[i] = self._ok(*self.det.infer_preprocessed(x))
                        except Exception as e1:  # noqa: BLE001
                            out[i] = self._error(f"edgead: scoring failed: {type(e1).__name__}: {e1}")
            else:
                k = 0
                for i, x in zip(good, xs):
                    n = x.shape[0]
                    out[i] = self._ok(s[k:k + n], m[k:k + n])
                    k += n
        return out

    def finalize(self):
        det, self.det = getattr(self, "det", None), None
        if det is not None:
            det.close()
