"""TensorRT 10 engines from the artifact's ONNX graph (FP32 / FP16 / INT8, optional DLA), cached per GPU.

Written against the TensorRT 10 Python API (``import tensorrt``; on Jetson the JetPack package
``python3-libnvinfer``); TensorRT 8.6 (JetPack 6.0) works too: explicit-batch network flag and the
PROFILE_SHARING_0806 preview feature, both defaults in TRT 10. Not exercised in edgead's CI (no GPU,
no builder): everything the engine consumes -- the ONNX graph and the pre/post-processing -- is verified with ONNX Runtime and torch.

``build_engine(onnx_path, precision="fp16")``:

* ``trt.Builder`` -> ``create_network(0)`` (explicit batch is the only mode in TRT 10) ->
  ``trt.OnnxParser.parse_from_file``;
* builder config: ``set_memory_pool_limit(WORKSPACE, workspace_gib)``, ``BuilderFlag.FP16`` for
  fp16 and int8 (int8 layers may fall back to fp16), ``BuilderFlag.INT8`` + an
  :class:`EntropyCalibrator` (``IInt8EntropyCalibrator2``) for int8;
* one optimisation profile for input ``"image"``: min batch 1, opt ``opt_batch`` (default
  min(8, max_batch)), max ``max_batch``. DLA cannot run dynamic shapes, so with ``dla_core`` the
  profile is fixed at ``dla_batch`` (default 1) and the runtime pads smaller batches;
* ``dla_core``: ``default_device_type = DeviceType.DLA``, ``DLA_core = n`` and
  ``BuilderFlag.GPU_FALLBACK`` (layers DLA cannot run go to the GPU); DLA needs fp16 or int8;
* ``build_serialized_network`` -> file.

INT8 calibration data: pre-processed train images fed from NumPy through device buffers of the
runtime's own :class:`edgead.runtime.backends.CudaMemory` (CuPy when installed, else cuda-python's
``cudart``), so no pycuda and no torch. The calibration table is cached next to the engine.
(TensorRT 10.1+ marks implicit INT8 calibration as deprecated in favour of explicit Q/DQ
quantization; it still works in TensorRT 10.x.)

Engine cache: ``<artifact>/engines/<name>.engine`` + ``.json``; the name and the JSON key hold the
ONNX sha256, the precision, the GPU name and compute capability, the TensorRT version, the DLA core
and the batch profile. An engine is reused only when every field matches (engines are not portable
across GPUs or TensorRT versions).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edgead.artifact import ENGINES_DIR, export_file, read_meta, sha256_file

PRECISIONS = ("fp32", "fp16", "int8")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

__all__ = ["build_engine", "find_or_build_engine", "engine_key", "EntropyCalibrator", "tensorrt_available"]


def tensorrt_available() -> bool:
    """``import tensorrt`` works and the version is supported (>= 8.6)."""
    try:
        _import_trt()
    except Exception:
        return False
    return True


def _import_trt():
    from edgead.runtime.backends import import_tensorrt

    return import_tensorrt()


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def engine_key(onnx_sha256: str, precision: str, gpu: Dict[str, str], trt_version: str, dla_core: Optional[int],
               min_batch: int, opt_batch: int, max_batch: int) -> Dict[str, Any]:
    """Everything an engine depends on; two builds with equal keys are interchangeable."""
    return {
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "gpu": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "tensorrt": trt_version,
        "dla_core": dla_core,
        "batch": [int(min_batch), int(opt_batch), int(max_batch)],
    }


def _engine_name(key: Dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    dla = f"_dla{key['dla_core']}" if key["dla_core"] is not None else ""
    return (f"{key['precision']}_{_slug(key['gpu'])}_sm{key['compute_capability'].replace('.', '')}"
            f"_trt{key['tensorrt']}{dla}_b{key['batch'][2]}_{h}")


# ----------------------------------------------------------------------------------------------
# INT8 calibration
# ----------------------------------------------------------------------------------------------
def _list_images(src: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(src, (str, os.PathLike)):
        src = os.fspath(src)
        if os.path.isdir(src):
            files = sorted(p for p in glob.glob(os.path.join(src, "**", "*"), recursive=True)
                           if p.lower().endswith(IMAGE_EXTS))
            if not files:
                raise ValueError(f"calibration_images: no images ({', '.join(IMAGE_EXTS)}) under '{src}'")
            return files
        return [src]
    return [os.fspath(p) for p in src]


def load_calibration_batch(calibration_images, preprocessing: Optional[Dict[str, Any]], limit: int = 512) -> np.ndarray:
    """(N,C,H,W) float32 pre-processed calibration data from an array, a directory or a list of paths."""
    if isinstance(calibration_images, np.ndarray):
        x = calibration_images
        if x.ndim != 4 or x.dtype != np.float32:
            raise ValueError(f"calibration_images: expected a pre-processed (N,C,H,W) float32 array, got {x.shape} {x.dtype}")
        return np.ascontiguousarray(x[:limit])
    if preprocessing is None:
        raise ValueError("calibration_images given as files need the artifact's preprocessing (pass artifact_dir)")
    from edgead.data.io import read_image
    from edgead.data.transforms import Preprocessing

    pre = Preprocessing.from_dict(dict(preprocessing))
    files = _list_images(calibration_images)[:limit]
    return pre.batch([read_image(p) for p in files])


def _calibrator_class(trt):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # pragma: no cover - needs TensorRT + GPU
        """IInt8EntropyCalibrator2 over a NumPy (N,C,H,W) array, copied batch by batch to a device buffer."""

        def __init__(self, data: np.ndarray, batch_size: int, cache_file: Optional[str], input_name: str = "image"):
            trt.IInt8EntropyCalibrator2.__init__(self)
            from edgead.runtime.backends import CudaMemory

            self.data = np.ascontiguousarray(data, dtype=np.float32)
            self.batch_size = int(batch_size)
            self.cache_file = cache_file
            self.input_name = input_name
            self.index = 0
            self.mem = CudaMemory(0)
            self.stream, self.handle = self.mem.new_stream()
            self.buf = self.mem.empty((self.batch_size,) + self.data.shape[1:], np.float32)

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            if self.index + self.batch_size > self.data.shape[0]:
                return None
            chunk = self.data[self.index : self.index + self.batch_size]
            self.index += self.batch_size
            self.mem.h2d(self.buf, chunk, self.stream, self.handle)
            self.mem.synchronize(self.stream)
            return [self.mem.ptr(self.buf)]

        def read_calibration_cache(self):
            if self.cache_file and os.path.isfile(self.cache_file):
                with open(self.cache_file, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            if self.cache_file:
                with open(self.cache_file, "wb") as f:
                    f.write(bytes(cache))

    return EntropyCalibrator


def EntropyCalibrator(*args, **kwargs):  # pragma: no cover - needs TensorRT
    """Factory for the IInt8EntropyCalibrator2 subclass (the class is defined once tensorrt is imported)."""
    return _calibrator_class(_import_trt())(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------
def build_engine(
    onnx_path: str,
    precision: str = "fp16",
    calibration_images=None,
    dla_core: Optional[int] = None,
    max_batch: int = 32,
    opt_batch: Optional[int] = None,
    dla_batch: int = 1,
    workspace_gib: float = 2.0,
    cache_dir: Optional[str] = None,
    artifact_dir: Optional[str] = None,
    calibration_batch: int = 8,
    force: bool = False,
    verbose: bool = False,
) -> str:  # pragma: no cover - needs TensorRT + GPU
    """Build (or reuse from the cache) a TensorRT engine for `onnx_path`; returns the engine path.

    cache_dir defaults to ``<artifact_dir>/engines`` where artifact_dir defaults to the ONNX file's
    directory. calibration_images (int8 only): pre-processed (N,C,H,W) float32 array, an image
    directory or a list of image paths (pre-processed with the artifact's preprocessing).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"build_engine: argument 'precision' expected one of {PRECISIONS}, got {precision!r}")
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"build_engine: ONNX file '{onnx_path}' not found; run `edgead export <artifact>` first")
    if int(max_batch) < 1:
        raise ValueError(f"build_engine: argument 'max_batch' expected >= 1, got {max_batch}")
    if dla_core is not None and precision == "fp32":
        raise ValueError("build_engine: DLA runs fp16 or int8 only; pass precision='fp16' or 'int8' with dla_core")
    trt = _import_trt()
    from edgead.runtime.backends import cuda_device_info

    artifact_dir = os.path.abspath(artifact_dir or os.path.dirname(os.path.abspath(onnx_path)))
    cache_dir = cache_dir or os.path.join(artifact_dir, ENGINES_DIR)
    os.makedirs(cache_dir, exist_ok=True)
    if dla_core is not None:
        min_b = opt_b = max_b = int(dla_batch)
    else:
        min_b, max_b = 1, int(max_batch)
        opt_b = int(opt_batch or min(8, max_b))
    onnx_sha = sha256_file(onnx_path)
    key = engine_key(onnx_sha, precision, cuda_device_info(0), trt.__version__, dla_core, min_b, opt_b, max_b)
    base = os.path.join(cache_dir, _engine_name(key))
    engine_path, key_path = base + ".engine", base + ".json"
    if not force and os.path.isfile(engine_path) and os.path.isfile(key_path):
        with open(key_path) as f:
            if json.load(f).get("key") == key:
                return engine_path
    # only a build needs the calibration data: a cached int8 engine is found without it
    if precision == "int8" and calibration_images is None:
        raise ValueError("build_engine: precision='int8' needs calibration_images (train images of normal parts) "
                         "to build an engine; none is cached for this GPU / TensorRT / batch profile")

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    trt10 = int(trt.__version__.split(".")[0]) >= 10
    # TRT 10: explicit batch is the only mode (the flag is deprecated); 8.6 (JetPack 6.0) needs the flag for ONNX
    network = builder.create_network(0 if trt10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(os.path.abspath(onnx_path)):
        errs = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse '{onnx_path}':\n{errs}")
    inp = network.get_input(0)
    chw = tuple(int(d) for d in inp.shape[1:])
    if any(d < 0 for d in chw):
        raise RuntimeError(f"build_engine: input '{inp.name}' must have a fixed C,H,W; got {tuple(inp.shape)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in TRT 10
            import warnings

            warnings.warn("this GPU has no fast fp16; the fp16 engine may be slower than fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    if not trt10:
        # TensorRTBackend runs one execution context per thread on profile 0: TRT 10 shares profiles across
        # contexts by default, 8.6 only with this preview feature
        config.set_preview_feature(trt.PreviewFeature.PROFILE_SHARING_0806, True)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (min_b,) + chw, (opt_b,) + chw, (max_b,) + chw)
    config.add_optimization_profile(profile)

    if precision == "int8":
        meta = read_meta(artifact_dir) if os.path.isfile(os.path.join(artifact_dir, "edgead.json")) else None
        data = load_calibration_batch(calibration_images, meta["preprocessing"] if meta else None)
        cb = max(1, min(int(calibration_batch), data.shape[0]))
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(inp.name, (cb,) + chw, (cb,) + chw, (cb,) + chw)
        config.set_calibration_profile(calib_profile)
        config.set_flag(trt.BuilderFlag.INT8)
        calib_cache = os.path.join(cache_dir, f"calib_{onnx_sha[:12]}_{_slug(key['gpu'])}.cache")
        config.int8_calibrator = _calibrator_class(trt)(data, cb, calib_cache, inp.name)

    if dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise RuntimeError("build_engine: dla_core was given but this device has no DLA (Jetson AGX/NX only)")
        if not 0 <= int(dla_core) < builder.num_DLA_cores:
            raise ValueError(f"build_engine: dla_core expected 0..{builder.num_DLA_cores - 1}, got {dla_core}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from '{onnx_path}' (precision={precision}); "
                           "rerun with verbose=True for the builder log")
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)
    with open(key_path, "w") as f:
        json.dump({"key": key, "onnx": os.path.abspath(onnx_path), "build_seconds": round(time.time() - t0, 2),
                   "workspace_gib": workspace_gib}, f, indent=2, sort_keys=True)
    return engine_path


def find_or_build_engine(artifact_dir: str, precision: str = "fp16", **kwargs) -> str:  # pragma: no cover - GPU
    """The artifact's cached engine for this GPU / TensorRT / precision, built from its ONNX graph if missing."""
    meta = read_meta(artifact_dir)
    onnx_path = export_file(meta, os.path.abspath(artifact_dir), "onnx")
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(
            f"artifact '{artifact_dir}' has no ONNX export: run `edgead export {artifact_dir}` "
            f"(then `edgead export {artifact_dir} --format tensorrt` on the target GPU)"
        )
    return build_engine(onnx_path, precision=precision, artifact_dir=artifact_dir, **kwargs)
