"""TensorRT 8.6 / 10 / 11 support without TensorRT: stand-in modules and ONNX Runtime checks of the graphs.

Part 1 -- stand-ins. ``fake_trt(surface)`` builds a ``tensorrt`` module with only the attributes the
engine builder touches, as each release documents them:

* 8.6 (JetPack 6.0): NetworkDefinitionCreationFlag {EXPLICIT_BATCH}; BuilderFlag {FP16, INT8,
  GPU_FALLBACK}; IInt8EntropyCalibrator2, IBuilderConfig.int8_calibrator / set_calibration_profile;
  PreviewFeature.PROFILE_SHARING_0806; Builder.platform_has_fast_fp16.
* 10.x: as 8.6 plus NetworkDefinitionCreationFlag.STRONGLY_TYPED (EXPLICIT_BATCH kept, deprecated
  and ignored; PROFILE_SHARING_0806 deprecated, always on).
* 11.x: BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator / set_calibration_profile,
  IInt8EntropyCalibrator2, platform_has_fast_fp16 and EXPLICIT_BATCH removed; STRONGLY_TYPED kept
  (ignored: every network is strongly typed).

The stand-in config refuses any attribute its release does not have (AttributeError), the builder
checks the network-creation bits against the release's flags, records every call and returns
bytes. Tests assert the chosen path and the exact calls for fp32 / fp16 / int8 on each surface, on a
real ONNX file (the parser stand-in reads its input with onnx).

Part 2 -- graphs. The fp16 graph (edgead.export.fp16) and the TensorRT Q/DQ graph
(edgead.export.quantize, target='tensorrt') of tiny real models of every type (PatchCore
embeddings, EfficientAD-S, PUAD, FADeR; 64x64) are run with ONNX Runtime against their fp32 graph.
Tolerances, as a fraction of max|fp32 output| over the verification inputs:

* fp16: 2e-3. fp16 has a unit roundoff of 2^-11 = 4.9e-4 per stored value; measured on these
  models (normal + defect images; 2026-11-26, loaded 2-core machine, onnxruntime 1.32):
  PatchCore 4.4e-4, EfficientAD 6.1e-4 / 6.4e-4 (score / map), PUAD 7.7e-4 / 6.4e-4, FADeR
  3.0e-5 / 9.8e-5 (reconstruction / original), i.e. within 1.6x the unit roundoff; 2e-3 (4x)
  leaves room for other ORT builds while a wrong cast (fp16 overflow, a weight stored in the wrong
  type, a lost Cast) is off by O(1) or inf/NaN.
* Q/DQ (int8 symmetric activations, per-channel weights, float bias, MinMax on 8 images, verified
  on 3 held-out normal images): 0.25 for PatchCore embeddings (measured 0.154; uint8 asymmetric
  activations give 0.026: the symmetric int8 TensorRT needs costs accuracy) and FADeR
  reconstructions (measured 1.0e-3). EfficientAD / PUAD: see test_qdq_graph_for_tensorrt.
"""
import json
import os
import sys
import types
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from edgead.export import tensorrt as etrt  # noqa: E402

GPU = {"name": "NVIDIA Orin (nvgpu)", "compute_capability": "8.7"}
VERSIONS = {"8.6": "8.6.2.3", "10": "10.3.0", "11": "11.2.1"}


# ----------------------------------------------------------------------------------------------
# stand-in tensorrt modules
# ----------------------------------------------------------------------------------------------
class _Member(int):
    def __new__(cls, name, value):
        m = int.__new__(cls, value)
        m.name = name
        return m

    def __repr__(self):
        return self.name


def _enum(name, members):
    ns = {m: _Member(m, i) for i, m in enumerate(members)}
    return type(name, (), ns)


def fake_trt(surface: str, dla_cores: int = 0):
    """A stand-in `tensorrt` module with the attribute surface of TensorRT `surface` ('8.6', '10', '11')."""
    legacy = surface in ("8.6", "10")
    calls = []
    mod = types.ModuleType("tensorrt")
    mod.__version__ = VERSIONS[surface]
    mod.calls = calls
    mod.NetworkDefinitionCreationFlag = _enum("NetworkDefinitionCreationFlag", {
        "8.6": ["EXPLICIT_BATCH"], "10": ["EXPLICIT_BATCH", "STRONGLY_TYPED"], "11": ["STRONGLY_TYPED"]}[surface])
    mod.BuilderFlag = _enum("BuilderFlag", (["FP16", "INT8"] if legacy else []) + ["GPU_FALLBACK", "TF32"])
    mod.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
    mod.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    if legacy:
        mod.PreviewFeature = _enum("PreviewFeature", ["PROFILE_SHARING_0806"])

    class Logger:
        WARNING, VERBOSE = 2, 4

        def __init__(self, level):
            self.level = level

    mod.Logger = Logger

    if legacy:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                calls.append(("calibrator_init",))

        mod.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    allowed_attrs = {"default_device_type", "DLA_core"} | ({"int8_calibrator"} if legacy else set())

    def set_memory_pool_limit(self, pool, size):
        calls.append(("set_memory_pool_limit", pool.name, int(size)))

    def set_flag(self, flag):
        assert isinstance(flag, _Member) and getattr(mod.BuilderFlag, flag.name) is flag
        calls.append(("set_flag", flag.name))

    def add_optimization_profile(self, profile):
        calls.append(("add_optimization_profile", profile.shapes))

    def set_preview_feature(self, feature, on):
        calls.append(("set_preview_feature", feature.name, on))

    def set_calibration_profile(self, profile):
        calls.append(("set_calibration_profile", profile.shapes))

    def __setattr__(self, name, value):
        if name not in allowed_attrs:
            raise AttributeError(f"'tensorrt.IBuilderConfig' ({surface}) object has no attribute '{name}'")
        calls.append(("config." + name, value if not hasattr(value, "get_batch") else type(value).__mro__[1].__name__))
        object.__setattr__(self, name, value)

    ns = {"set_memory_pool_limit": set_memory_pool_limit, "set_flag": set_flag, "__setattr__": __setattr__,
          "add_optimization_profile": add_optimization_profile}
    if legacy:
        ns.update(set_preview_feature=set_preview_feature, set_calibration_profile=set_calibration_profile,
                  int8_calibrator=None)
    mod.IBuilderConfig = type("IBuilderConfig", (), ns)

    class Profile:
        def __init__(self):
            self.shapes = None

        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, tuple(lo), tuple(opt), tuple(hi))

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape = name, shape

    class Network:
        def __init__(self, flags):
            self.flags, self.inputs = flags, []

        def get_input(self, i):
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            calls.append(("parse_from_file", os.path.basename(path)))
            m = onnx.load(path)
            vi = m.graph.input[0]
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim)
            self.network.inputs.append(Tensor(vi.name, dims))
            return True

    mod.OnnxParser = OnnxParser

    class Builder:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            valid = 0
            for m in vars(mod.NetworkDefinitionCreationFlag).values():
                if isinstance(m, _Member):
                    valid |= 1 << int(m)
            assert flags & ~valid == 0, f"network flag bits {flags:b} not in this release's flags {valid:b}"
            names = sorted(m.name for m in vars(mod.NetworkDefinitionCreationFlag).values()
                           if isinstance(m, _Member) and flags & (1 << int(m)))
            calls.append(("create_network", tuple(names)))
            return Network(flags)

        def create_builder_config(self):
            return mod.IBuilderConfig()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            return b"engine:" + surface.encode()

    if legacy:
        Builder.platform_has_fast_fp16 = True
    mod.Builder = Builder
    return mod


def _tiny_onnx(path, c=3, hw=16):
    """Conv -> Relu -> Conv, input 'image' (B,3,16,16) with a dynamic batch, output 'map' -- plain onnx, no torch."""
    from onnx import TensorProto, helper, numpy_helper

    g = np.random.default_rng(0)
    w1 = numpy_helper.from_array((g.standard_normal((4, c, 3, 3)) * 0.3).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((g.standard_normal((1, 4, 3, 3)) * 0.3).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["image", "w1"], ["h"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Conv", ["r", "w2"], ["map"], pads=[1, 1, 1, 1], name="conv2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["B", c, hw, hw])],
                              [helper.make_tensor_value_info("map", TensorProto.FLOAT, ["B", 1, hw, hw])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def graph(tmp_path):
    return _tiny_onnx(str(tmp_path / "model.onnx"))


@pytest.fixture
def use_fake(monkeypatch):
    def install(surface, dla_cores=0):
        mod = fake_trt(surface, dla_cores)
        monkeypatch.setattr(etrt, "_import_trt", lambda: mod)
        monkeypatch.setattr(etrt, "_gpu_info", lambda: dict(GPU))
        return mod

    return install


CALIB = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# path selection
# ----------------------------------------------------------------------------------------------
def test_api_surface_labels():
    for s in ("8.6", "10", "11"):
        surf = etrt.api_surface(fake_trt(s))
        assert surf.label == s
    s86, s10, s11 = (etrt.api_surface(fake_trt(s)) for s in ("8.6", "10", "11"))
    assert s86.precision_flags and s86.calibrator and s86.explicit_batch_flag and not s86.strongly_typed_flag
    assert s10.precision_flags and s10.calibrator and s10.strongly_typed_flag and s10.profile_sharing_preview
    assert not (s11.precision_flags or s11.calibrator or s11.explicit_batch_flag) and s11.strongly_typed_flag


# (surface, strongly_typed, precision) -> (path, graph, network flags, builder flags, calibrator, preview)
PLANS = {
    ("8.6", None, "fp32"): ("flags", "fp32", ("EXPLICIT_BATCH",), (), False, True),
    ("8.6", None, "fp16"): ("flags", "fp32", ("EXPLICIT_BATCH",), ("FP16",), False, True),
    ("8.6", None, "int8"): ("flags", "fp32", ("EXPLICIT_BATCH",), ("FP16", "INT8"), True, True),
    ("10", None, "fp32"): ("flags", "fp32", (), (), False, False),
    ("10", None, "fp16"): ("flags", "fp32", (), ("FP16",), False, False),
    ("10", None, "int8"): ("flags", "fp32", (), ("FP16", "INT8"), True, False),
    ("10", True, "fp32"): ("strongly_typed", "fp32", ("STRONGLY_TYPED",), (), False, False),
    ("10", True, "fp16"): ("strongly_typed", "fp16", ("STRONGLY_TYPED",), (), False, False),
    ("10", True, "int8"): ("strongly_typed", "qdq", ("STRONGLY_TYPED",), (), False, False),
    ("11", None, "fp32"): ("strongly_typed", "fp32", ("STRONGLY_TYPED",), (), False, False),
    ("11", None, "fp16"): ("strongly_typed", "fp16", ("STRONGLY_TYPED",), (), False, False),
    ("11", None, "int8"): ("strongly_typed", "qdq", ("STRONGLY_TYPED",), (), False, False),
    ("11", True, "fp16"): ("strongly_typed", "fp16", ("STRONGLY_TYPED",), (), False, False),
}


@pytest.mark.parametrize("surface,st,precision", sorted(PLANS, key=str))
def test_plan_per_surface(surface, st, precision):
    p = etrt.plan_build(fake_trt(surface), precision, strongly_typed=st)
    assert (p.path, p.graph, p.network_flags, p.builder_flags, p.calibrator, p.profile_sharing_preview) == \
        PLANS[(surface, st, precision)]
    assert p.api == surface


def test_plan_refuses_what_a_release_cannot_do():
    with pytest.raises(RuntimeError, match="removed BuilderFlag.FP16"):
        etrt.plan_build(fake_trt("11"), "fp16", strongly_typed=False)
    with pytest.raises(RuntimeError, match="TensorRT >= 10"):
        etrt.plan_build(fake_trt("8.6"), "int8", strongly_typed=True)
    with pytest.raises(ValueError, match="precision"):
        etrt.plan_build(fake_trt("10"), "bf16")
    with pytest.raises(TypeError, match="strongly_typed"):
        etrt.plan_build(fake_trt("10"), "fp16", strongly_typed="yes")
    # a 10.x build without the calibrator classes (a stripped install) cannot do implicit int8
    t = fake_trt("10")
    del t.IInt8EntropyCalibrator2
    with pytest.raises(RuntimeError, match="Q/DQ"):
        etrt.plan_build(t, "int8")
    assert etrt.plan_build(t, "int8", strongly_typed=True).graph == "qdq"


# ----------------------------------------------------------------------------------------------
# the calls build_engine makes on each surface
# ----------------------------------------------------------------------------------------------
WS = 2 << 30


def _expected_calls(surface, st, precision, profile=("image", (1, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16))):
    path, graph, nflags, bflags, calib, preview = PLANS[(surface, st, precision)]
    parsed = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "qdq": "model.int8.tensorrt.onnx"}[graph]
    calls = [("create_network", tuple(sorted(nflags))), ("parse_from_file", parsed),
             ("set_memory_pool_limit", "WORKSPACE", WS)]
    calls += [("set_flag", f) for f in bflags]
    if preview:
        calls.append(("set_preview_feature", "PROFILE_SHARING_0806", True))
    calls.append(("add_optimization_profile", profile))
    if calib:
        calls += [("set_calibration_profile", ("image", (8, 3, 16, 16), (8, 3, 16, 16), (8, 3, 16, 16))),
                  ("calibrator_init",), ("config.int8_calibrator", "IInt8EntropyCalibrator2")]
    calls.append(("build_serialized_network",))
    return calls


@pytest.mark.parametrize("surface,st,precision", sorted(PLANS, key=str))
def test_build_engine_calls_per_surface(surface, st, precision, graph, use_fake, tmp_path):
    pytest.importorskip("onnxruntime")
    if precision == "int8" and PLANS[(surface, st, precision)][1] == "qdq":
        pytest.importorskip("onnxruntime.quantization")
    trt = use_fake(surface)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = etrt.build_engine(graph, precision=precision, strongly_typed=st,
                                   calibration_images=CALIB if precision == "int8" else None)
    assert trt.calls == _expected_calls(surface, st, precision)
    with open(engine, "rb") as f:
        assert f.read() == b"engine:" + surface.encode()
    with open(engine[: -len(".engine")] + ".json") as f:
        rec = json.load(f)
    path, variant = PLANS[(surface, st, precision)][:2]
    parsed = rec["graph"]
    assert rec["key"]["path"] == path and rec["key"]["graph"] == variant and rec["plan"]["api"] == surface
    assert rec["key"]["graph_sha256"] == etrt.sha256_file(parsed) and rec["key"]["onnx_sha256"] == etrt.sha256_file(graph)
    assert ("-st_" in os.path.basename(engine)) == (path == "strongly_typed")
    m = onnx.load(parsed)
    io = {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.input) + list(m.graph.output)}
    assert io == {"image": onnx.TensorProto.FLOAT, "map": onnx.TensorProto.FLOAT}  # fp32 I/O on every variant
    init_types = {t.data_type for t in m.graph.initializer}
    ops = {n.op_type for n in m.graph.node}
    if variant == "fp16":
        assert init_types == {onnx.TensorProto.FLOAT16} and "Cast" in ops
    elif variant == "qdq":
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        zps = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.INT8 and "zero_point" in t.name]
        assert zps and all(not np.any(onnx.numpy_helper.to_array(t)) for t in zps)  # TensorRT: int8, zero point 0
        assert onnx.TensorProto.UINT8 not in init_types
    else:
        assert init_types == {onnx.TensorProto.FLOAT}


def test_engine_cache_reuse_and_key_covers_path_and_graph(graph, use_fake, tmp_path):
    pytest.importorskip("onnxruntime")
    trt = use_fake("10")
    flags = etrt.build_engine(graph, precision="fp16")
    st = etrt.build_engine(graph, precision="fp16", strongly_typed=True)
    assert flags != st and os.path.isfile(flags) and os.path.isfile(st)
    n = len(trt.calls)
    assert etrt.build_engine(graph, precision="fp16", strongly_typed=True) == st  # cached: no builder call
    assert len(trt.calls) == n
    # a changed fp16 graph (another conversion setting, a hand edit) is a different engine
    fp16 = os.path.join(os.path.dirname(graph), "model.fp16.onnx")
    m = onnx.load(fp16)
    m.doc_string = "edited"
    onnx.save(m, fp16)
    st2 = etrt.build_engine(graph, precision="fp16", strongly_typed=True)
    assert st2 != st and trt.calls[-1] == ("build_serialized_network",)
    # a changed source graph re-derives the fp16 graph (its recorded source sha no longer matches)
    src = onnx.load(graph)
    src.doc_string = "retrained"
    onnx.save(src, graph)
    st3 = etrt.build_engine(graph, precision="fp16", strongly_typed=True)
    with open(fp16 + ".json") as f:
        assert json.load(f)["source_onnx_sha256"] == etrt.sha256_file(graph)
    assert st3 not in (st, st2)


def test_engine_key_names_differ_by_path_and_graph_sha():
    base = dict(onnx_sha256="ab" * 32, precision="fp16", gpu=GPU, trt_version="10.3.0", dla_core=None,
                min_batch=1, opt_batch=8, max_batch=32)
    k_flags = etrt.engine_key(**base)
    k_st = etrt.engine_key(**base, path="strongly_typed", graph="fp16", graph_sha256="cd" * 32)
    k_st2 = etrt.engine_key(**base, path="strongly_typed", graph="fp16", graph_sha256="ef" * 32)
    names = {etrt._engine_name(k) for k in (k_flags, k_st, k_st2)}
    assert len(names) == 3
    assert etrt._engine_name(k_st).startswith("fp16-st_nvidia-orin-nvgpu_sm87_trt10.3.0_b32_")
    assert k_flags["graph_sha256"] == k_flags["onnx_sha256"]
    with pytest.raises(ValueError, match="path"):
        etrt.engine_key(**base, path="weak")
    with pytest.raises(ValueError, match="graph"):
        etrt.engine_key(**base, graph="int4")


def test_dla_build_calls(graph, use_fake):
    trt = use_fake("10", dla_cores=2)
    etrt.build_engine(graph, precision="fp16", dla_core=1)
    assert ("set_flag", "FP16") in trt.calls and ("set_flag", "GPU_FALLBACK") in trt.calls
    assert ("config.default_device_type", trt.DeviceType.DLA) in trt.calls and ("config.DLA_core", 1) in trt.calls
    assert ("add_optimization_profile", ("image", (1, 3, 16, 16), (1, 3, 16, 16), (1, 3, 16, 16))) in trt.calls
    trt = use_fake("10", dla_cores=0)
    with pytest.raises(RuntimeError, match="no DLA"):
        etrt.build_engine(graph, precision="fp16", dla_core=0, force=True)


def test_int8_needs_calibration_data(graph, use_fake):
    use_fake("10")
    with pytest.raises(ValueError, match="calibration_images"):
        etrt.build_engine(graph, precision="int8")
    use_fake("11")
    with pytest.raises(ValueError, match="Q/DQ graph"):
        etrt.build_engine(graph, precision="int8")


def test_artifact_records_graph_variants_and_reuses_them(use_fake, tmp_path):
    """TensorRT 11 on an artifact: the fp16 and Q/DQ graphs are recorded in edgead.json, the int8 one is
    calibrated from image files with the artifact's preprocessing, and the cached engine needs no images."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime.quantization")
    cv2 = pytest.importorskip("cv2")
    from test_runtime import make_tiny_artifact

    from edgead.artifact import read_meta

    path, _ = make_tiny_artifact(str(tmp_path / "art"))
    calib = tmp_path / "good"
    calib.mkdir()
    g = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(calib / f"{i}.png"), g.integers(0, 256, (40, 48, 3), dtype=np.uint8))
    trt = use_fake("11")
    e16 = etrt.find_or_build_engine(path, "fp16")
    e8 = etrt.find_or_build_engine(path, "int8", calibration_images=str(calib))
    meta = read_meta(path)
    src = meta["exports"]["onnx"]["sha256"]
    assert meta["exports"]["onnx_fp16"]["file"] == "model.fp16.onnx"
    assert meta["exports"]["onnx_fp16"]["source_onnx_sha256"] == src
    q = meta["exports"]["onnx_int8_tensorrt"]
    assert q["file"] == "model.int8.tensorrt.onnx" and q["source_onnx_sha256"] == src
    assert q["activation_type"] == "int8" and q["activation_symmetric"] and not q["quantize_bias"]
    assert q["calibration"]["images"] == 4
    assert [c for c in trt.calls if c[0] == "parse_from_file"] == [("parse_from_file", "model.fp16.onnx"),
                                                                    ("parse_from_file", "model.int8.tensorrt.onnx")]
    n = len(trt.calls)
    assert etrt.find_or_build_engine(path, "int8") == e8 and etrt.find_or_build_engine(path, "fp16") == e16
    assert len(trt.calls) == n  # both cached, no calibration images needed


def test_tensorrt_absent_is_reported_not_raised(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    assert etrt.tensorrt_available() is False
    with pytest.raises(ImportError, match="TensorRT is not installed"):
        etrt._import_trt()


def test_real_tensorrt_surface():
    """With a real TensorRT (GPU box / Jetson) its surface must be one of the three; skipped cleanly without it."""
    if not etrt.tensorrt_available():
        pytest.skip("tensorrt (>= 8.6) cannot be imported here")
    import tensorrt as trt

    surf = etrt.api_surface(trt)
    assert surf.label in ("8.6", "10", "11")
    for precision in ("fp32", "fp16", "int8"):
        plan = etrt.plan_build(trt, precision)
        for f in plan.network_flags:
            assert hasattr(trt.NetworkDefinitionCreationFlag, f)
        for f in plan.builder_flags:
            assert hasattr(trt.BuilderFlag, f)


# ----------------------------------------------------------------------------------------------
# Part 2: the fp16 and Q/DQ graphs of tiny real models, verified with ONNX Runtime
# ----------------------------------------------------------------------------------------------
FP16_TOL = 2e-3   # of max|fp32 output|; measured <= 7.7e-4 (see the module docstring)
QDQ_TOL = 0.25    # of max|fp32 output| on held-out normal images, for embeddings / reconstructions


def _stripes(n, seed, defect=False, size=64):
    """Normalised-ish stripe textures (N,3,size,size) float32; `defect` adds a bright 14x14 square."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        img = 0.5 + 0.3 * np.sin(xx / 3.0 + g.uniform(0, 2 * np.pi)) + 0.05 * g.standard_normal((size, size))
        img = np.repeat(img[None], 3, axis=0)
        if defect:
            y0, x0 = g.integers(8, size - 24, 2)
            img[:, y0: y0 + 14, x0: x0 + 14] = 2.5
        out.append(img)
    return np.stack(out).astype(np.float32)


def _tiny_model(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    tr, va = torch.from_numpy(_stripes(6, 1)), torch.from_numpy(_stripes(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "patchcore":  # the exported graph ends at the embeddings: no memory bank, no fit needed
            from edgead.models.patchcore import PatchCore

            return PatchCore(dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"],
                                  image_size=[64, 64], embedding_dim=96, mean=[0.5] * 3, std=[0.25] * 3))
        if kind in ("efficientad", "puad"):
            from edgead.models.efficientad import EfficientAD
            from edgead.models.puad import PUAD

            m = (EfficientAD if kind == "efficientad" else PUAD)(
                {"image_size": [64, 64], "iterations": 3, "batch_size": 2, "allow_random_teacher": True, "seed": 0})
        else:
            from edgead.models.fader import FADeR

            m = FADeR({"image_size": [64, 64], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8, "mlp_hidden": 16,
                       "batch_size": 4, "pretrain_iters": 2, "fader_iters": 2, "seed": 0})
        m.fit(tr, va, progress=False)
    return m


@pytest.fixture(scope="module", params=["patchcore", "efficientad", "puad", "fader"])
def real_graph(request, tmp_path_factory):
    """(kind, fp32 ONNX path, output names) of a tiny fitted model, exported like edgead.export.onnx does."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    kind = request.param
    model = _tiny_model(kind)
    path = str(tmp_path_factory.mktemp(kind) / "model.onnx")
    outs = list(model.export_outputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.export_module().eval(), (torch.zeros(2, 3, 64, 64),), path, dynamo=False,
                          input_names=["image"], output_names=outs, opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outs}})
    return kind, path, outs


def test_fp16_graph_matches_fp32(real_graph):
    from edgead.export.fp16 import compare_graphs, convert_fp16, graph_io_types

    kind, path, outs = real_graph
    dst = path.replace(".onnx", ".fp16.onnx")
    report = convert_fp16(path, dst, sample=[{"image": _stripes(8, 3)}])
    assert graph_io_types(dst) == {n: onnx.TensorProto.FLOAT for n in ["image"] + outs}  # fp32 I/O
    m = onnx.load(dst)
    n16 = sum(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer)
    n32 = sum(t.data_type == onnx.TensorProto.FLOAT for t in m.graph.initializer)
    assert n16 > 0 and report["fp16_nodes"] >= 0.9 * report["nodes"]
    # what stays fp32 is what fp16 cannot hold: PUAD's Mahalanobis precision matrix exceeds 65504
    if kind == "puad":
        assert any(k["op"] == "MatMul" and "fp16 max" in k["why"] for k in report["kept_fp32"]) and n32 > 0
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True).graph
    elem = {t.name: t.data_type for t in m.graph.initializer}
    elem.update({v.name: v.type.tensor_type.elem_type for v in list(inferred.value_info) + list(inferred.input)})
    # weights and activations cast in the graph (FADeR shares weights through Identity nodes: typed by inference)
    assert convs and all(elem.get(n.input[0]) == elem.get(n.input[1]) == onnx.TensorProto.FLOAT16 for n in convs)
    feeds = [{"image": _stripes(3, 4)}, {"image": _stripes(3, 5, defect=True)}]
    cmp = compare_graphs(path, dst, feeds)
    for name, c in cmp.items():
        assert c["finite"], (kind, name)
        assert c["max_rel_diff"] <= FP16_TOL, (kind, name, c)


def _auroc(neg, pos):
    neg, pos = np.asarray(neg, float).ravel(), np.asarray(pos, float).ravel()
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_qdq_graph_for_tensorrt(real_graph):
    """Q/DQ graph (target='tensorrt') vs fp32. Measured (max|q - fp32| / max|fp32| on 3 held-out normal images):
    PatchCore embeddings 0.154, FADeR reconstruction 1.0e-3. The tiny EfficientAD / PUAD (3 iterations,
    random teacher) quantize poorly in value (normal-image scores ~0 -> ~2.3 (EfficientAD) and -2.4..0.8 ->
    ~350 (PUAD), defects 134..143 -> 4.2..4.9 and 1.5e4 -> 570..650), so for them the check is the
    deployment one: int8 scores rank the defect images above the normal ones exactly as fp32 does
    (AUROC 1.0 both)."""
    pytest.importorskip("onnxruntime.quantization")
    import onnxruntime as ort

    from edgead.export.fp16 import compare_graphs, graph_io_types
    from edgead.export.quantize import quantize_graph

    kind, path, outs = real_graph
    dst = path.replace(".onnx", ".int8.tensorrt.onnx")
    info = quantize_graph(path, dst, _stripes(8, 3), target="tensorrt", preprocess=False)
    assert info["activation_type"] == "int8" and info["activation_symmetric"]
    assert graph_io_types(dst) == {n: onnx.TensorProto.FLOAT for n in ["image"] + outs}
    m = onnx.load(dst)
    inits = {t.name: t for t in m.graph.initializer}
    q_nodes = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes
    for n in q_nodes + [n for n in m.graph.node if n.op_type == "DequantizeLinear"]:
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None
        assert zp is not None and zp.data_type == onnx.TensorProto.INT8, n.name  # TensorRT: int8 ...
        assert not np.any(onnx.numpy_helper.to_array(zp)), n.name                 # ... with zero point 0
        assert n.input[1] in inits, n.name                                        # constant scales
    normal = _stripes(3, 4)
    cmp = compare_graphs(path, dst, [{"image": normal}])
    assert all(c["finite"] for c in cmp.values())
    if kind in ("patchcore", "fader"):
        key = "embeddings" if kind == "patchcore" else "reconstruction"
        assert cmp[key]["max_rel_diff"] <= QDQ_TOL, cmp
    else:
        defect = _stripes(4, 5, defect=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s32, s8 = (ort.InferenceSession(p, so, providers=["CPUExecutionProvider"]) for p in (path, dst))
        x = np.concatenate([_stripes(4, 6), defect])
        r = s32.run(["score"], {"image": x})[0].ravel()
        q = s8.run(["score"], {"image": x})[0].ravel()
        assert _auroc(r[:4], r[4:]) == 1.0 and _auroc(q[:4], q[4:]) == _auroc(r[:4], r[4:])


def test_fp16_pass_guards(tmp_path):
    from edgead.export.fp16 import convert_fp16, convert_fp16_model

    src = _tiny_onnx(str(tmp_path / "m.onnx"))
    with pytest.raises(TypeError, match="ModelProto"):
        convert_fp16_model("m.onnx")
    with pytest.raises(ValueError, match="max_abs"):
        convert_fp16_model(onnx.load(src), max_abs=1e6)
    pytest.importorskip("onnxruntime")
    convert_fp16(src, str(tmp_path / "h.onnx"))
    with pytest.raises(ValueError, match="already"):
        convert_fp16(str(tmp_path / "h.onnx"), str(tmp_path / "hh.onnx"))
    with pytest.raises(FileNotFoundError):
        convert_fp16(str(tmp_path / "nope.onnx"), str(tmp_path / "x.onnx"))
    # an activation beyond max_abs on the sample keeps its node (and its readers) in fp32
    big = [{"image": np.full((1, 3, 16, 16), 5000.0, np.float32)}]
    rep = convert_fp16(src, str(tmp_path / "b.onnx"), sample=big)
    assert {k["node"] for k in rep["kept_fp32"]} >= {"conv1"}
    m = onnx.load(str(tmp_path / "b.onnx"))
    assert any(t.name == "w1" and t.data_type == onnx.TensorProto.FLOAT for t in m.graph.initializer)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_real_tensorrt_strongly_typed_engine_matches_onnxruntime(precision, tmp_path):  # pragma: no cover - GPU
    """On a GPU box with TensorRT 10/11: the strongly typed engine (fp16 graph / Q/DQ graph) runs and matches the
    fp32 graph on ONNX Runtime (fp16: 1e-2 of max|fp32|, TensorRT's fp16 kernels; int8: QDQ_TOL)."""
    if not etrt.tensorrt_available():
        pytest.skip("tensorrt (>= 8.6) cannot be imported here")
    import tensorrt as trt

    surf = etrt.api_surface(trt)
    if surf.precision_flags and not surf.strongly_typed_flag:
        pytest.skip(f"TensorRT {surf.version} has no strongly typed networks")
    pytest.importorskip("torch")
    from test_runtime import make_tiny_artifact

    from edgead.runtime.backends import OnnxRuntimeBackend, TensorRTBackend

    path, _ = make_tiny_artifact(str(tmp_path / "art"))
    calib = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    engine = etrt.find_or_build_engine(path, precision, strongly_typed=True, calibration_images=calib, max_batch=8)
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ref = OnnxRuntimeBackend(os.path.join(path, "model.onnx")).run(x)
    got = TensorRTBackend(engine, precision=precision).run(x)
    from edgead.runtime.backends import to_host

    tol = 1e-2 if precision == "fp16" else QDQ_TOL
    for name, r in ref.items():
        g = to_host(got[name])
        assert g.dtype == np.float32 and g.shape == r.shape
        assert float(np.abs(g - r).max()) <= tol * max(1e-6, float(np.abs(r).max())), name
