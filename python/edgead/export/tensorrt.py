"""TensorRT engines from the artifact's ONNX graph (FP32 / FP16 / INT8, optional DLA), cached per GPU.

Supported TensorRT: 8.6 (JetPack 6.0), 10.x and 11.x (``pyproject``: ``tensorrt>=8.6,<12``; on Jetson
the JetPack package ``python3-libnvinfer``, not PyPI). Not exercised in edgead's CI (no GPU, no
builder): the choice of build path and every builder call are unit-tested against stand-in modules
with the 8.6, 10 and 11 API surfaces (tests/test_tensorrt_api.py), and every graph the builder
parses (fp32, fp16, Q/DQ) is verified with ONNX Runtime against the fp32 model.

Two build paths, chosen from the API surface of the imported ``tensorrt`` (attribute presence,
:func:`api_surface` / :func:`plan_build`), not from the version string:

* ``"flags"`` (weakly typed; TensorRT 8.6 and 10): the fp32 ONNX graph; ``BuilderFlag.FP16`` for
  fp16; ``BuilderFlag.FP16 + INT8`` and an :class:`EntropyCalibrator` (``IInt8EntropyCalibrator2``
  over the calibration images, ``set_calibration_profile`` + ``int8_calibrator``) for int8.
  ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` and ``PreviewFeature.PROFILE_SHARING_0806`` are
  set only on the 8.6 surface (EXPLICIT_BATCH present, STRONGLY_TYPED absent): both are deprecated
  no-ops in 10 and EXPLICIT_BATCH is gone in 11.
* ``"strongly_typed"`` (TensorRT 11, where ``BuilderFlag.FP16/INT8``, ``int8_calibrator`` and the
  calibration profile were removed; and TensorRT 10 with ``strongly_typed=True``): the network is
  created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` where that flag exists (required in
  10, accepted and ignored in 11, where every network is strongly typed) and takes its precision
  from the graph: fp32 -> the fp32 graph; fp16 -> ``model.fp16.onnx`` (:mod:`edgead.export.fp16`:
  weights and activations cast in the graph, inputs and outputs float32); int8 -> an explicitly
  quantized Q/DQ graph ``model.int8.tensorrt.onnx`` (:mod:`edgead.export.quantize`, the existing
  ONNX Runtime static calibration, with symmetric int8 activations as TensorRT requires). No
  precision builder flag is set on this path.

``strongly_typed=None`` (default) picks ``"strongly_typed"`` when the precision flags are absent
(11.x) and ``"flags"`` otherwise; ``True`` / ``False`` force a path and raise a clear error where
the TensorRT at hand cannot do it (8.6 has no strongly typed networks, 11 has no flags).

Common to both: ``trt.Builder`` -> ``create_network(flags)`` -> ``trt.OnnxParser.parse_from_file``;
``set_memory_pool_limit(WORKSPACE, workspace_gib)``; one optimisation profile for input ``"image"``
(min 1, opt ``opt_batch`` (default min(8, max_batch)), max ``max_batch``; DLA cannot run dynamic
shapes, so with ``dla_core`` the profile is fixed at ``dla_batch`` and the runtime pads smaller
batches); ``dla_core``: ``default_device_type = DeviceType.DLA``, ``DLA_core = n`` and
``BuilderFlag.GPU_FALLBACK``; ``build_serialized_network`` -> file.

INT8 calibration data: pre-processed train images fed from NumPy through device buffers of the
runtime's own :class:`edgead.runtime.backends.CudaMemory` (CuPy when installed, else cuda-python's
``cudart``), so no pycuda and no torch. The calibration table is cached next to the engine.

Engine cache: ``<artifact>/engines/<name>.engine`` + ``.json``; the name and the JSON key hold the
build path (``flags`` / ``strongly_typed``), the graph variant (fp32 / fp16 / qdq) and the sha256 of
the graph that was parsed, the source fp32 ONNX sha256, the precision, the GPU name and compute
capability, the TensorRT version, the DLA core and the batch profile. An engine is reused only when
every field matches (engines are not portable across GPUs or TensorRT versions).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edgead.artifact import ENGINES_DIR, export_file, read_meta, record_file, sha256_file, verified_path

_sha256 = sha256_file  # the name tests/test_tensorrt_api.py uses

PRECISIONS = ("fp32", "fp16", "int8")
BUILD_PATHS = ("flags", "strongly_typed")
GRAPH_VARIANTS = ("fp32", "fp16", "qdq")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

__all__ = ["build_engine", "find_or_build_engine", "engine_key", "EntropyCalibrator", "tensorrt_available", "api_surface",
           "plan_build", "prepare_graph", "ApiSurface", "BuildPlan"]


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
               min_batch: int, opt_batch: int, max_batch: int, path: str = "flags", graph: str = "fp32",
               graph_sha256: Optional[str] = None) -> Dict[str, Any]:
    """Everything an engine depends on; two builds with equal keys are interchangeable.

    onnx_sha256: the source fp32 graph; path: 'flags' or 'strongly_typed'; graph: the variant the
    builder parsed ('fp32', 'fp16', 'qdq') and graph_sha256 its sha256 (default: onnx_sha256)."""
    if path not in BUILD_PATHS:
        raise ValueError(f"engine_key: argument 'path' expected one of {BUILD_PATHS}, got {path!r}")
    if graph not in GRAPH_VARIANTS:
        raise ValueError(f"engine_key: argument 'graph' expected one of {GRAPH_VARIANTS}, got {graph!r}")
    return {
        "onnx_sha256": onnx_sha256,
        "precision": precision,
        "path": path,
        "graph": graph,
        "graph_sha256": graph_sha256 or onnx_sha256,
        "gpu": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "tensorrt": trt_version,
        "dla_core": dla_core,
        "batch": [int(min_batch), int(opt_batch), int(max_batch)],
    }


def _engine_name(key: Dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    dla = f"_dla{key['dla_core']}" if key["dla_core"] is not None else ""
    st = "-st" if key.get("path") == "strongly_typed" else ""
    return (f"{key['precision']}{st}_{_slug(key['gpu'])}_sm{key['compute_capability'].replace('.', '')}"
            f"_trt{key['tensorrt']}{dla}_b{key['batch'][2]}_{h}")


# ----------------------------------------------------------------------------------------------
# API surface and build plan
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiSurface:
    """What the imported tensorrt module offers, by attribute presence."""

    version: str
    precision_flags: bool       # BuilderFlag.FP16 and BuilderFlag.INT8 (8.6, 10; removed in 11)
    calibrator: bool            # IInt8EntropyCalibrator2 and IBuilderConfig.int8_calibrator (8.6, 10; removed in 11)
    strongly_typed_flag: bool   # NetworkDefinitionCreationFlag.STRONGLY_TYPED (10: opt-in; 11: ignored, always on)
    explicit_batch_flag: bool   # NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.6: needed; 10: ignored; 11: removed)
    profile_sharing_preview: bool  # PreviewFeature.PROFILE_SHARING_0806 (8.6: opt-in; 10: default on, deprecated)

    @property
    def label(self) -> str:
        """'8.6', '10' or '11': the documented surface this one matches."""
        if not self.precision_flags:
            return "11"
        return "10" if self.strongly_typed_flag else "8.6"


def _has(obj, *names: str) -> bool:
    for n in names:
        if obj is None or not hasattr(obj, n):
            return False
        obj = getattr(obj, n)
    return True


def api_surface(trt) -> ApiSurface:
    cfg = getattr(trt, "IBuilderConfig", None)
    return ApiSurface(
        version=str(getattr(trt, "__version__", "")),
        precision_flags=_has(trt, "BuilderFlag", "FP16") and _has(trt, "BuilderFlag", "INT8"),
        calibrator=_has(trt, "IInt8EntropyCalibrator2") and _has(cfg, "int8_calibrator"),
        strongly_typed_flag=_has(trt, "NetworkDefinitionCreationFlag", "STRONGLY_TYPED"),
        explicit_batch_flag=_has(trt, "NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),
        profile_sharing_preview=_has(trt, "PreviewFeature", "PROFILE_SHARING_0806"),
    )


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built: path, graph variant and the exact builder settings."""

    precision: str
    path: str                       # 'flags' | 'strongly_typed'
    graph: str                      # 'fp32' | 'fp16' | 'qdq'
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag members OR-ed into create_network()
    builder_flags: Tuple[str, ...]  # BuilderFlag members set on the config (precision + GPU_FALLBACK)
    calibrator: bool                # IInt8EntropyCalibrator2 + calibration profile
    profile_sharing_preview: bool   # set PreviewFeature.PROFILE_SHARING_0806 (8.6 only)
    api: str                        # surface label, for logs and the engine's JSON

    def network_flag_bits(self, trt) -> int:
        bits = 0
        for name in self.network_flags:
            bits |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
        return bits


def plan_build(trt, precision: str, strongly_typed: Optional[bool] = None, dla_core: Optional[int] = None) -> BuildPlan:
    """Choose the build path for `precision` on this TensorRT (see the module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"build_engine: argument 'precision' expected one of {PRECISIONS}, got {precision!r}")
    if strongly_typed not in (None, True, False):
        raise TypeError(f"build_engine: argument 'strongly_typed' expected None, True or False, got {strongly_typed!r}")
    s = api_surface(trt)
    can_flags = s.precision_flags
    can_st = s.strongly_typed_flag or not s.precision_flags  # 11.x: always strongly typed
    if strongly_typed is None:
        strongly_typed = not can_flags
    if strongly_typed and not can_st:
        raise RuntimeError(
            f"build_engine: strongly_typed=True needs TensorRT >= 10 (NetworkDefinitionCreationFlag.STRONGLY_TYPED); "
            f"TensorRT {s.version} has only the precision-flag path: pass strongly_typed=None or False")
    if not strongly_typed and not can_flags:
        raise RuntimeError(
            f"build_engine: TensorRT {s.version} removed BuilderFlag.FP16/INT8 and the INT8 calibrator (TensorRT 11): "
            "only strongly typed builds (fp16 / Q/DQ graphs) exist; pass strongly_typed=None or True")
    extra = ("GPU_FALLBACK",) if dla_core is not None else ()
    if strongly_typed:
        return BuildPlan(precision, "strongly_typed", {"fp32": "fp32", "fp16": "fp16", "int8": "qdq"}[precision],
                         ("STRONGLY_TYPED",) if s.strongly_typed_flag else (), extra, False, False, s.label)
    if precision == "int8" and not s.calibrator:
        raise RuntimeError(f"build_engine: TensorRT {s.version} has BuilderFlag.INT8 but no IInt8EntropyCalibrator2 / "
                           "int8_calibrator; build int8 from the Q/DQ graph with strongly_typed=True")
    legacy = s.explicit_batch_flag and not s.strongly_typed_flag  # the 8.6 surface
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    return BuildPlan(precision, "flags", "fp32", ("EXPLICIT_BATCH",) if legacy else (), flags + extra,
                     precision == "int8", legacy and s.profile_sharing_preview, s.label)


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
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """IInt8EntropyCalibrator2 over a NumPy (N,C,H,W) array, copied batch by batch to a device buffer
        (allocated on the first get_batch, so constructing one needs no GPU)."""

        def __init__(self, data: np.ndarray, batch_size: int, cache_file: Optional[str], input_name: str = "image"):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.data = np.ascontiguousarray(data, dtype=np.float32)
            self.batch_size = int(batch_size)
            self.cache_file = cache_file
            self.input_name = input_name
            self.index = 0
            self.mem = None

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):  # pragma: no cover - needs a GPU
            if self.index + self.batch_size > self.data.shape[0]:
                return None
            if self.mem is None:
                from edgead.runtime.backends import CudaMemory

                self.mem = CudaMemory(0)
                self.stream, self.handle = self.mem.new_stream()
                self.buf = self.mem.empty((self.batch_size,) + self.data.shape[1:], np.float32)
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
    """Factory for the IInt8EntropyCalibrator2 subclass (the class is defined once tensorrt is imported;
    TensorRT 8.6 and 10 only: 11 removed implicit INT8 calibration)."""
    return _calibrator_class(_import_trt())(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# graph variants for the strongly typed path
# ----------------------------------------------------------------------------------------------
def _has_meta(artifact_dir: Optional[str]) -> bool:
    return bool(artifact_dir) and os.path.isfile(os.path.join(artifact_dir, "edgead.json"))


def _read_sidecar(path: str) -> Dict[str, Any]:
    try:
        with open(path + ".json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_sidecar(path: str, info: Dict[str, Any]) -> None:
    tmp = path + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path + ".json")


def prepare_graph(plan: BuildPlan, onnx_path: str, artifact_dir: Optional[str] = None, calibration_images=None,
                  force: bool = False) -> str:
    """The ONNX file the builder parses for `plan`: the fp32 graph, or its fp16 / Q/DQ variant (written once
    into artifact_dir -- default: the ONNX file's directory -- with a ``<file>.json`` sidecar, recorded in
    the artifact's metadata when there is one, and reused while its recorded source sha256 matches the
    fp32 graph)."""
    if plan.graph == "fp32":
        return onnx_path
    from edgead.export import fp16 as f16
    from edgead.export import quantize as q

    src_sha = sha256_file(onnx_path)
    meta = read_meta(artifact_dir) if _has_meta(artifact_dir) else None
    where = artifact_dir or os.path.dirname(os.path.abspath(onnx_path))
    name = f16.FP16_ONNX_FILE if plan.graph == "fp16" else q.TRT_INT8_ONNX_FILE
    dst = os.path.join(where, name)
    if not force and os.path.isfile(dst) and _read_sidecar(dst).get("source_onnx_sha256") == src_sha:
        return dst
    preprocessing = meta["preprocessing"] if meta is not None else None
    if plan.graph == "fp16":
        sample = None
        if calibration_images is not None:
            data = load_calibration_batch(calibration_images, preprocessing, limit=8)
            sample = [{"image": data}]
        report = f16.convert_fp16(onnx_path, dst, sample=sample)
        info = {"source_onnx_sha256": src_sha, "conversion": report}
        if meta is not None:
            from edgead.artifact import record_export

            record_export(artifact_dir, f16.EXPORT_KEY, dst, info)
        _write_sidecar(dst, info)
        return dst
    # qdq
    if calibration_images is None:
        raise ValueError("build_engine: precision='int8' on the strongly typed path needs calibration_images to write "
                         f"the Q/DQ graph {name} (none matching this ONNX graph exists yet)")
    data = load_calibration_batch(calibration_images, preprocessing, limit=64)
    info = {"source_onnx_sha256": src_sha,
            **q.quantize_graph(onnx_path, dst, data, target="tensorrt", preprocess=False),
            "calibration": {"images": int(data.shape[0])}}
    if meta is not None:
        from edgead.artifact import record_export

        record_export(artifact_dir, q.TRT_EXPORT_KEY, dst, info)
    _write_sidecar(dst, info)
    return dst


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------
def _gpu_info() -> Dict[str, str]:  # pragma: no cover - needs a GPU; tests replace it
    from edgead.runtime.backends import cuda_device_info

    return cuda_device_info(0)


def _configure(trt, builder, network, plan: BuildPlan, *, workspace_gib: float, min_b: int, opt_b: int, max_b: int,
               chw: Tuple[int, ...], input_name: str, dla_core: Optional[int], calibration=None, calib_cache=None,
               calibration_batch: int = 8):
    """The builder config for `plan`; touches only the API the plan's path exists on."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if "FP16" in plan.builder_flags and not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.5
        import warnings

        warnings.warn("this GPU has no fast fp16; the fp16 engine may be slower than fp32")
    for flag in plan.builder_flags:
        if flag != "GPU_FALLBACK":
            config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.profile_sharing_preview:
        # TensorRTBackend runs one execution context per thread on profile 0: TRT 10 shares profiles across
        # contexts by default, 8.6 only with this preview feature
        config.set_preview_feature(trt.PreviewFeature.PROFILE_SHARING_0806, True)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (min_b,) + chw, (opt_b,) + chw, (max_b,) + chw)
    config.add_optimization_profile(profile)
    if plan.calibrator:
        cb = max(1, min(int(calibration_batch), calibration.shape[0]))
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(input_name, (cb,) + chw, (cb,) + chw, (cb,) + chw)
        config.set_calibration_profile(calib_profile)
        config.int8_calibrator = _calibrator_class(trt)(calibration, cb, calib_cache, input_name)
    if dla_core is not None:
        if builder.num_DLA_cores == 0:
            raise RuntimeError("build_engine: dla_core was given but this device has no DLA (Jetson AGX/NX only)")
        if not 0 <= int(dla_core) < builder.num_DLA_cores:
            raise ValueError(f"build_engine: dla_core expected 0..{builder.num_DLA_cores - 1}, got {dla_core}")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return config


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
    strongly_typed: Optional[bool] = None,
) -> str:
    """Build (or reuse from the cache) a TensorRT engine for `onnx_path`; returns the engine path.

    cache_dir defaults to ``<artifact_dir>/engines`` where artifact_dir defaults to the ONNX file's
    directory. calibration_images (int8; optional for fp16, where they are the range probe of the fp16
    conversion): pre-processed (N,C,H,W) float32 array, an image directory or a list of image paths
    (pre-processed with the artifact's preprocessing). strongly_typed: None (auto: strongly typed where
    the precision flags are gone, TensorRT 11), True or False (see the module docstring).
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
    plan = plan_build(trt, precision, strongly_typed, dla_core)

    onnx_path = os.path.abspath(onnx_path)
    artifact_dir = os.path.abspath(artifact_dir or os.path.dirname(onnx_path))
    cache_dir = cache_dir or os.path.join(artifact_dir, ENGINES_DIR)
    os.makedirs(cache_dir, exist_ok=True)
    if dla_core is not None:
        min_b = opt_b = max_b = int(dla_batch)
    else:
        min_b, max_b = 1, int(max_batch)
        opt_b = int(opt_batch or min(8, max_b))
    onnx_sha = sha256_file(onnx_path)
    graph_path = prepare_graph(plan, onnx_path, artifact_dir, calibration_images, force=force)
    gpu = _gpu_info()
    key = engine_key(onnx_sha, precision, gpu, str(trt.__version__), dla_core, min_b, opt_b, max_b,
                     path=plan.path, graph=plan.graph, graph_sha256=sha256_file(graph_path))
    base = os.path.join(cache_dir, _engine_name(key))
    engine_path, key_path = base + ".engine", base + ".json"
    is_artifact = os.path.isfile(os.path.join(artifact_dir, "edgead.json"))
    if not force and os.path.isfile(engine_path) and os.path.isfile(key_path):
        with open(key_path) as f:
            if json.load(f).get("key") == key and _cached_engine_ok(artifact_dir, engine_path, is_artifact):
                return engine_path
    # only a build needs the calibration data: a cached int8 engine is found without it
    data = None
    if plan.calibrator:
        if calibration_images is None:
            raise ValueError("build_engine: precision='int8' needs calibration_images (train images of normal parts) "
                             "to build an engine; none is cached for this GPU / TensorRT / batch profile")
        meta = read_meta(artifact_dir) if _has_meta(artifact_dir) else None
        data = load_calibration_batch(calibration_images, meta["preprocessing"] if meta else None)

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flag_bits(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(graph_path):
        errs = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse '{graph_path}':\n{errs}")
    inp = network.get_input(0)
    chw = tuple(int(d) for d in inp.shape[1:])
    if any(d < 0 for d in chw):
        raise RuntimeError(f"build_engine: input '{inp.name}' must have a fixed C,H,W; got {tuple(inp.shape)}")
    calib_cache = os.path.join(cache_dir, f"calib_{onnx_sha[:12]}_{_slug(key['gpu'])}.cache") if plan.calibrator else None
    config = _configure(trt, builder, network, plan, workspace_gib=workspace_gib, min_b=min_b, opt_b=opt_b,
                        max_b=max_b, chw=chw, input_name=inp.name, dla_core=dla_core, calibration=data,
                        calib_cache=calib_cache, calibration_batch=calibration_batch)

    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from '{graph_path}' (precision={precision}, "
                           f"path={plan.path}); rerun with verbose=True for the builder log")
    tmp = engine_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(bytes(serialized))
    os.replace(tmp, engine_path)
    with open(key_path, "w") as f:
        json.dump({"key": key, "onnx": onnx_path, "graph": graph_path, "plan": asdict(plan),
                   "build_seconds": round(time.time() - t0, 2), "workspace_gib": workspace_gib},
                  f, indent=2, sort_keys=True)
    if is_artifact:  # the runtime verifies the engine against this sha256 before deserialising it
        record_file(artifact_dir, engine_path)
    return engine_path


def _cached_engine_ok(artifact_dir: str, engine_path: str, is_artifact: bool) -> bool:
    """A cached engine inside an artifact is reused only when it matches its recorded sha256."""
    if not is_artifact:
        return True
    root = os.path.realpath(artifact_dir)
    real = os.path.realpath(engine_path)
    if os.path.commonpath([root, real]) != root:
        return True
    try:
        verified_path(artifact_dir, os.path.relpath(real, root))
    except Exception:  # not recorded (older edgead) or altered: rebuild it
        return False
    return True


def find_or_build_engine(artifact_dir: str, precision: str = "fp16", **kwargs) -> str:  # pragma: no cover - GPU
    """The artifact's cached engine for this GPU / TensorRT / precision, built from its ONNX graph if missing."""
    meta = read_meta(artifact_dir)
    onnx_path = export_file(meta, os.path.abspath(artifact_dir), "onnx")
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(
            f"artifact '{artifact_dir}' has no ONNX export: run `edgead export {artifact_dir}` "
            f"(then `edgead export {artifact_dir} --format tensorrt` on the target GPU)"
        )
    onnx_path = verified_path(artifact_dir, os.path.relpath(onnx_path, os.path.abspath(artifact_dir)), meta=meta)
    return build_engine(onnx_path, precision=precision, artifact_dir=artifact_dir, **kwargs)
