"""Network executors for the runtime: TensorRT, ONNX Runtime and torch.

A backend runs only the exported network (``export_module()`` of the model: input ``"image"``
(B, C, H, W) float32, outputs named in ``export_outputs``); pre- and post-processing live in
:mod:`edgead.runtime.detector` and :mod:`edgead.runtime.postprocess` and are the same for all
backends.

``Backend.run(x)`` takes a pre-processed float32 NumPy batch and returns ``{name: array}``. The arrays
are NumPy on the host, or CUDA arrays (CuPy for TensorRT, torch CUDA tensors for the torch backend)
when ``outputs_on_device`` is True, so that post-processing can stay on the GPU with edgead._C
kernels (which accept anything with ``__cuda_array_interface__``).

Importing this module imports neither torch nor tensorrt nor onnxruntime; each backend imports its
framework when it is constructed.

Selection order for ``backend="auto"`` (:func:`select_backend`):

1. ``"tensorrt"``    -- ``import tensorrt`` works and a CUDA GPU is visible;
2. ``"onnxruntime"`` -- with ``CUDAExecutionProvider`` when onnxruntime-gpu and a GPU are present;
3. ``"torch"``       -- torch is installed and ``torch.cuda.is_available()`` (imports torch);
4. ``"onnxruntime"`` -- on the CPU.

With ``device="cpu"`` the order is onnxruntime (CPU), then torch (CPU).

Device memory without torch: CuPy when it is importable (outputs stay on the GPU as CuPy arrays),
else cuda-python's ``cudart`` (``cuda.bindings.runtime``; outputs are copied back to NumPy).

CPU threads: ``threads=N`` (onnxruntime: intra-op threads of the session; torch: torch.set_num_threads,
process-wide). On a shared or small CPU, 1 thread per process is often much faster than oversubscribing.

Thread safety: ONNX Runtime sessions are safe to call concurrently; TensorRT keeps one execution
context, stream and set of buffers per thread; the torch backend serialises calls with a lock (its
CUDA graphs use static buffers).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

BACKENDS = ("tensorrt", "onnxruntime", "torch")
PRECISIONS = ("fp32", "fp16", "int8")

__all__ = [
    "BACKENDS",
    "Backend",
    "OnnxRuntimeBackend",
    "TorchBackend",
    "TensorRTBackend",
    "available_backends",
    "select_backend",
    "cuda_device_count",
    "cuda_device_info",
    "to_host",
    "import_tensorrt",
]


# ----------------------------------------------------------------------------------------------
# CUDA plumbing without torch
# ----------------------------------------------------------------------------------------------
def _cudart():
    """cuda-python's runtime module (new layout first), or None."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except Exception:
            continue
    return None


def _cupy():
    try:
        import cupy  # noqa: F401

        return sys.modules["cupy"]
    except Exception:
        return None


def _check(res, what: str):
    """cuda-python calls return (err, *values); raise on error, return the values."""
    cudart = _cudart()
    err, rest = res[0], res[1:]
    if int(err) != 0:
        try:
            msg = cudart.cudaGetErrorString(err)[1]
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        except Exception:
            msg = str(err)
        raise RuntimeError(f"{what} failed: {msg}")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def cuda_device_count() -> int:
    """Number of usable CUDA devices, found without torch (edgead._C, CuPy or cuda-python); 0 on error."""
    try:
        import edgead

        if edgead.cuda_available():
            return int(edgead._ext().cuda_device_count())
    except Exception:
        pass
    cp = _cupy()
    if cp is not None:
        try:
            return int(cp.cuda.runtime.getDeviceCount())
        except Exception:
            pass
    cudart = _cudart()
    if cudart is not None:
        try:
            err, n = cudart.cudaGetDeviceCount()
            return int(n) if int(err) == 0 else 0
        except Exception:
            pass
    return 0


def cuda_device_info(device_id: int = 0) -> Dict[str, Any]:
    """{'name': GPU name, 'compute_capability': 'major.minor'} without torch; raises if no GPU."""
    cp = _cupy()
    if cp is not None:
        p = cp.cuda.runtime.getDeviceProperties(device_id)
        name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        return {"name": name, "compute_capability": f"{p['major']}.{p['minor']}"}
    cudart = _cudart()
    if cudart is None:
        raise RuntimeError("cannot query the GPU: install cupy or cuda-python (pip install cuda-python)")
    p = _check(cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = p.name.decode(errors="replace").rstrip("\x00") if isinstance(p.name, bytes) else str(p.name)
    return {"name": name, "compute_capability": f"{p.major}.{p.minor}"}


class CudaMemory:
    """Minimal device memory + stream API over CuPy (preferred) or cuda-python's cudart."""

    def __init__(self, device_id: int = 0):
        self.device_id = int(device_id)
        self.cupy = _cupy()
        self.cudart = None if self.cupy is not None else _cudart()
        if self.cupy is None and self.cudart is None:
            raise RuntimeError(
                "the TensorRT backend needs device memory without torch: install cupy "
                "(pip install cupy-cuda12x) or cuda-python (pip install cuda-python)"
            )
        if self.cudart is not None:
            _check(self.cudart.cudaSetDevice(self.device_id), "cudaSetDevice")

    @property
    def kind(self) -> str:
        return "cupy" if self.cupy is not None else "cudart"

    # streams
    def new_stream(self):
        if self.cupy is not None:
            with self.cupy.cuda.Device(self.device_id):
                s = self.cupy.cuda.Stream(non_blocking=True)
            return s, int(s.ptr)
        s = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        return s, int(s)

    def synchronize(self, stream) -> None:
        if self.cupy is not None:
            stream.synchronize()
        else:
            _check(self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    # buffers
    def empty(self, shape, dtype):
        """A device buffer: a CuPy array (cupy) or (ptr, nbytes) owned by this object (cudart)."""
        if self.cupy is not None:
            with self.cupy.cuda.Device(self.device_id):
                return self.cupy.empty(tuple(shape), dtype=dtype)
        nbytes = max(1, int(np.prod(shape)) * np.dtype(dtype).itemsize)
        ptr = _check(self.cudart.cudaMalloc(nbytes), "cudaMalloc")
        return _RawBuffer(self, int(ptr), tuple(shape), np.dtype(dtype))

    @staticmethod
    def ptr(buf) -> int:
        return int(buf.data.ptr) if hasattr(buf, "data") and hasattr(buf.data, "ptr") else int(buf.ptr)

    def h2d(self, dst, src: np.ndarray, stream, stream_handle: int) -> None:
        src = np.ascontiguousarray(src)
        if self.cupy is not None:
            dst[: src.shape[0]].set(src, stream=stream)
        else:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            _check(self.cudart.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync")

    def d2h(self, src, shape, dtype, stream) -> np.ndarray:
        out = np.empty(shape, dtype=dtype)
        if self.cupy is not None:
            n = int(shape[0])
            src[:n].get(stream=stream, out=out)
        else:
            kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, src.ptr, out.nbytes, kind, stream), "cudaMemcpyAsync")
        return out


class _RawBuffer:
    def __init__(self, mem: CudaMemory, ptr: int, shape, dtype):
        self.mem, self.ptr, self.shape, self.dtype = mem, ptr, shape, dtype

    def __del__(self):  # pragma: no cover - GPU only
        try:
            self.mem.cudart.cudaFree(self.ptr)
        except Exception:
            pass


def to_host(a: Any) -> np.ndarray:
    """NumPy copy of a NumPy / CuPy / torch array (CPU or CUDA) without importing torch."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    if hasattr(a, "detach") and hasattr(a, "cpu"):  # torch tensor
        return a.detach().float().cpu().numpy()
    return np.asarray(a)


# ----------------------------------------------------------------------------------------------
# availability and selection
# ----------------------------------------------------------------------------------------------
def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


#: oldest TensorRT the engine builder and TensorRTBackend run on: 8.6 (JetPack 6.0); 10.x elsewhere
TRT_MIN_VERSION = (8, 6)


def _trt_version_ok(version: str) -> bool:
    try:
        major, minor = (int(v) for v in str(version).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= TRT_MIN_VERSION


def import_tensorrt():
    """``import tensorrt`` with an actionable error when it is missing, broken or too old."""
    try:
        import tensorrt as trt
    except Exception as e:
        raise ImportError(
            "TensorRT is not installed or cannot be loaded: on x86 `pip install 'tensorrt>=8.6,<12'`; on Jetson use "
            f"JetPack's python3-libnvinfer (see docs/jetson.md); import error: {e}"
        ) from e
    if not _trt_version_ok(getattr(trt, "__version__", "")):
        raise ImportError(f"edgead needs TensorRT >= {'.'.join(map(str, TRT_MIN_VERSION))}, found {trt.__version__}")
    return trt


def _tensorrt_importable() -> bool:
    """tensorrt imports and is new enough (an older one, e.g. JetPack 5's 8.5, must not win 'auto')."""
    if not _importable("tensorrt"):
        return False
    try:
        import_tensorrt()
    except Exception:
        return False
    return True


def _ort_providers() -> Tuple[str, ...]:
    try:
        import onnxruntime as ort
    except Exception:
        return ()
    return tuple(ort.get_available_providers())


def available_backends(device: Optional[str] = None) -> Tuple[str, ...]:
    """Backends that can run here on `device` (None: any), without importing torch."""
    gpu = cuda_device_count() > 0
    out = []
    if device in (None, "cuda") and gpu and _tensorrt_importable():
        out.append("tensorrt")
    prov = _ort_providers()
    if prov and (device != "cuda" or "CUDAExecutionProvider" in prov and gpu):
        out.append("onnxruntime")
    if _importable("torch") and (device != "cuda" or gpu):
        out.append("torch")
    return tuple(out)


def select_backend(device: Optional[str] = None) -> Tuple[str, str]:
    """(backend, device) for backend='auto'; the order is in the module docstring."""
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"select_backend: argument 'device' expected 'cuda', 'cpu' or None, got {device!r}")
    gpu = cuda_device_count() > 0
    if device == "cuda" and not gpu:
        raise RuntimeError("device='cuda' was requested but no CUDA GPU is usable here")
    prov = _ort_providers()
    if device != "cpu" and gpu:
        if _tensorrt_importable():
            return "tensorrt", "cuda"
        if "CUDAExecutionProvider" in prov:
            return "onnxruntime", "cuda"
        if _importable("torch"):
            import torch  # torch is the chosen backend: importing it is allowed

            if torch.cuda.is_available():
                return "torch", "cuda"
        if device == "cuda":
            raise RuntimeError(
                "device='cuda': no GPU backend is installed (tensorrt, onnxruntime-gpu or torch with CUDA)"
            )
    if prov:
        return "onnxruntime", "cpu"
    if _importable("torch"):
        return "torch", "cpu"
    raise RuntimeError("no runtime backend is installed: pip install onnxruntime (or tensorrt / torch)")


# ----------------------------------------------------------------------------------------------
# backends
# ----------------------------------------------------------------------------------------------
class Backend:
    name = ""
    device = "cpu"
    precision = "fp32"
    input_name = "image"
    output_names: Tuple[str, ...] = ()
    #: largest batch one run() accepts (None: unlimited); the Detector splits larger batches
    max_batch: Optional[int] = None
    #: run() may return CUDA arrays (CuPy / torch) instead of NumPy
    outputs_on_device = False

    def run(self, x: np.ndarray) -> Dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "device": self.device, "precision": self.precision}

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"{self.name}: input expected a (B,C,H,W) NumPy array, got {getattr(x, 'shape', type(x))}")
        return np.ascontiguousarray(x, dtype=np.float32)


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPUExecutionProvider, or CUDAExecutionProvider when device='cuda'.

    precision is a label: 'fp32' for model.onnx, 'int8' for the QDQ graph model.int8.onnx (both take
    and return float32)."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str, device: str = "cpu", threads: Optional[int] = None, precision: str = "fp32"):
        import onnxruntime as ort

        if precision not in ("fp32", "int8"):
            raise ValueError(f"onnxruntime backend: argument 'precision' expected 'fp32' or 'int8', got {precision!r}")

        if not os.path.isfile(onnx_path):
            raise FileNotFoundError(f"onnxruntime backend: ONNX file '{onnx_path}' not found; run `edgead export`")
        avail = ort.get_available_providers()
        if device == "cuda":
            if "CUDAExecutionProvider" not in avail:
                raise RuntimeError(
                    f"onnxruntime backend: device='cuda' needs onnxruntime-gpu (CUDAExecutionProvider); available: {avail}"
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device in ("cpu", None):
            providers = ["CPUExecutionProvider"]
            device = "cpu"
        else:
            raise ValueError(f"onnxruntime backend: argument 'device' expected 'cpu' or 'cuda', got {device!r}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
        # ORT's idle worker threads spin after run() returns; on a few cores they then steal the CPU
        # from the post-processing kernels (edgead._C OpenMP): PatchCore's kNN measured 21.8 ms with
        # spinning vs 6.0 ms after a torch forward on 2 cores. Post-processing follows every run.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(onnx_path, sess_options=so, providers=providers)
        self.device = device
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        self.onnx_path = onnx_path
        # int8: the graph is QDQ-quantized (edgead.export.quantize); the session takes and returns float32
        self.precision = precision

    def run(self, x: np.ndarray) -> Dict[str, Any]:
        x = self._check_input(x)
        # InferenceSession.run is thread-safe: no lock needed.
        outs = self.session.run(list(self.output_names), {self.input_name: x})
        return dict(zip(self.output_names, outs))

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d["providers"] = self.session.get_providers()
        return d


class TorchBackend(Backend):
    """The torch model's export_module() in eager mode; on CUDA optionally fp16 and CUDA graphs.

    CUDA graphs are captured lazily, one per batch size seen (at most ``max_graphs``); calls are
    serialised with a lock because a graph replays into static input/output buffers.
    """

    name = "torch"

    def __init__(
        self,
        artifact_dir: Optional[str] = None,
        device: str = "cpu",
        precision: str = "fp32",
        cuda_graphs: bool = True,
        model=None,
        max_graphs: int = 8,
        threads: Optional[int] = None,
    ):
        import torch

        if threads:  # process-wide in torch: intra-op threads of every torch computation
            torch.set_num_threads(int(threads))
        self._torch = torch
        device = device or "cpu"
        if device not in ("cpu", "cuda"):
            raise ValueError(f"torch backend: argument 'device' expected 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch backend: device='cuda' but torch.cuda.is_available() is False")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"torch backend: argument 'precision' expected 'fp32' or 'fp16', got {precision!r}")
        if precision == "fp16" and device != "cuda":
            raise ValueError("torch backend: precision='fp16' needs device='cuda'")
        if model is None:
            if artifact_dir is None:
                raise ValueError("torch backend: pass artifact_dir or model")
            from edgead.models import load_model

            model = load_model(artifact_dir, device=device)
        self.model = model.to(device).eval()
        self.module = model.export_module().to(device).eval()
        if precision == "fp16":
            self.module = self.module.half()
        self.device, self.precision = device, precision
        self.output_names = tuple(model.export_outputs)
        self.cuda_graphs = bool(cuda_graphs) and device == "cuda"
        self.max_graphs = int(max_graphs)
        self.outputs_on_device = device == "cuda"
        self._graphs: Dict[int, Any] = {}
        self._lock = threading.Lock()

    def _as_dict(self, outs) -> Dict[str, Any]:
        torch = self._torch
        if isinstance(outs, dict):
            outs = [outs[n] for n in self.output_names]
        elif isinstance(outs, torch.Tensor):
            outs = [outs]
        outs = list(outs)
        if len(outs) != len(self.output_names):
            raise RuntimeError(f"torch backend: export_module returned {len(outs)} outputs, expected {self.output_names}")
        return dict(zip(self.output_names, outs))

    def _capture(self, b: int, shape):  # pragma: no cover - needs a GPU
        torch = self._torch
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        static_in = torch.zeros((b,) + tuple(shape[1:]), device="cuda", dtype=dtype)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                self.module(static_in)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            static_out = self._as_dict(self.module(static_in))
        return g, static_in, static_out

    def run(self, x: np.ndarray) -> Dict[str, Any]:
        torch = self._torch
        x = self._check_input(x)
        with self._lock, torch.inference_mode():
            xt = torch.from_numpy(x)
            if self.device == "cpu":
                outs = self._as_dict(self.module(xt))
                return {k: v.detach().float().numpy() for k, v in outs.items()}
            xt = xt.to("cuda", non_blocking=False)
            if self.precision == "fp16":
                xt = xt.half()
            b = x.shape[0]
            entry = self._graphs.get(b) if self.cuda_graphs else None
            if self.cuda_graphs and entry is None and len(self._graphs) < self.max_graphs:
                try:
                    entry = self._graphs[b] = self._capture(b, x.shape)
                except Exception as e:  # fall back to eager for this batch size
                    warnings.warn(f"torch backend: CUDA graph capture failed for batch {b} ({e}); running eagerly")
                    self.cuda_graphs = False
                    entry = None
            if entry is not None:
                g, static_in, static_out = entry
                static_in.copy_(xt)
                g.replay()
                # clone: the next replay overwrites the static outputs
                return {k: v.float().clone() for k, v in static_out.items()}
            outs = self._as_dict(self.module(xt))
            return {k: v.float() for k, v in outs.items()}


class TensorRTBackend(Backend):  # pragma: no cover - needs tensorrt and a GPU
    """TensorRT 8.6 / 10 / 11: deserialised engine, one execution context + stream + buffers per thread,
    ``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3`` (the name-based API of 8.5+, unchanged
    in 11). Engines of both build paths (precision flags or strongly typed fp16 / Q/DQ graphs, see
    edgead.export.tensorrt) take and return float32: the I/O dtypes are read from the engine."""

    name = "tensorrt"

    def __init__(self, engine_path: str, device_id: int = 0, precision: str = "fp16"):
        trt = import_tensorrt()

        self.trt = trt
        if not os.path.isfile(engine_path):
            raise FileNotFoundError(f"tensorrt backend: engine '{engine_path}' not found")
        self.mem = CudaMemory(device_id)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with open(engine_path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RuntimeError(
                f"tensorrt backend: cannot deserialise '{engine_path}' (built with another TensorRT version or GPU?)"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise RuntimeError(f"tensorrt backend: expected one input tensor, got {inputs}")
        self.input_name = inputs[0]
        self.output_names = tuple(n for n in names if n not in inputs)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        min_shape, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.input_shape = tuple(int(d) for d in max_shape[1:])
        self.max_batch = int(max_shape[0])
        # fixed-batch engines (DLA): smaller batches are zero-padded to the engine's batch
        self.fixed_batch = int(min_shape[0]) if int(min_shape[0]) == self.max_batch else None
        self.device, self.precision, self.engine_path = "cuda", precision, engine_path
        self.outputs_on_device = self.mem.kind == "cupy"
        self._local = threading.local()

    def _state(self):
        st = getattr(self._local, "state", None)
        if st is not None:
            return st
        trt = self.trt
        ctx = self.engine.create_execution_context()
        stream, handle = self.mem.new_stream()
        ctx.set_input_shape(self.input_name, (self.max_batch,) + self.input_shape)
        bufs = {self.input_name: self.mem.empty((self.max_batch,) + self.input_shape, self.dtypes[self.input_name])}
        for n in self.output_names:
            shape = tuple(ctx.get_tensor_shape(n))
            if any(d < 0 for d in shape):
                raise RuntimeError(f"tensorrt backend: output '{n}' has data-dependent shape {shape}")
            bufs[n] = self.mem.empty(shape, self.dtypes[n])
        for n, b in bufs.items():
            ctx.set_tensor_address(n, self.mem.ptr(b))
        st = self._local.state = (ctx, stream, handle, bufs)
        return st

    def run(self, x: np.ndarray) -> Dict[str, Any]:
        x = self._check_input(x)
        b = x.shape[0]
        if b > self.max_batch:
            raise ValueError(f"tensorrt backend: batch {b} exceeds the engine's max batch {self.max_batch}")
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"tensorrt backend: input expected (B,){self.input_shape}, got {x.shape}")
        ctx, stream, handle, bufs = self._state()
        if self.fixed_batch is not None and b < self.fixed_batch:
            x = np.concatenate([x, np.zeros((self.fixed_batch - b,) + x.shape[1:], x.dtype)])
        ctx.set_input_shape(self.input_name, x.shape)
        self.mem.h2d(bufs[self.input_name], x.astype(self.dtypes[self.input_name], copy=False), stream, handle)
        if not ctx.execute_async_v3(handle):
            raise RuntimeError("tensorrt backend: execute_async_v3 failed")
        out = {}
        for n in self.output_names:
            shape = tuple(ctx.get_tensor_shape(n))
            if self.mem.kind == "cupy":
                # copy on the same stream: the buffers are reused by this thread's next call
                with stream:
                    out[n] = bufs[n][:b].astype(np.float32, copy=True)
            else:
                out[n] = self.mem.d2h(bufs[n], shape, self.dtypes[n], stream)[:b].astype(np.float32, copy=False)
        self.mem.synchronize(stream)
        return out

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d["engine"] = self.engine_path
        d["tensorrt_version"] = self.trt.__version__
        return d
