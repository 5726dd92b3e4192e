"""fp16 ONNX graph with fp32 inputs and outputs, for TensorRT's strongly typed networks.

TensorRT 11 removed the precision builder flags (``BuilderFlag.FP16``): a strongly typed network
computes in the types written in the graph. ``convert_fp16(src, dst)`` writes that graph:

* every float32 tensor computed inside the graph becomes float16: float32 initializers are stored
  as float16, float ``Constant`` values are folded into (float16) initializers, ``Cast(to=FLOAT)``
  becomes ``Cast(to=FLOAT16)``, ``ConstantOfShape`` float values become float16;
* the graph's inputs and outputs keep their float32 type: one ``Cast`` after each input and one
  before each output (``keep_io_types`` in onnxconverter-common's terms);
* inputs that the ONNX spec types as float32 whatever the data type (``Resize`` roi/scales,
  ``Upsample`` scales) stay float32;
* a node stays float32 (its float inputs are cast back to float32 around it) when

  - its op type is in ``keep_fp32_ops`` or its name in ``keep_fp32_nodes``;
  - it reads a float32 initializer with a value beyond fp16's range (> 65504), or a small
    constant (<= 16 values, e.g. an epsilon) whose non-zero values would flush to zero in fp16;
  - on the ``sample`` inputs, the fp32 graph gives one of its float inputs or outputs a magnitude
    above ``max_abs`` (default 4096: 16x headroom below fp16's 65504, for inputs that are more
    anomalous than the sample). Without ``sample``, N(0, 1) images are used: the pre-processed
    input of every edgead model is a normalised image.

Why not onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)`` (1.16.0, 2025-08):
on this project's EfficientAD, PUAD and FADeR graphs (torch 2.14 TorchScript exporter, opset 17) it
left stale float32 ``value_info`` / ``Cast`` types behind (onnx.checker: "Inferred elem type differs
from existing elem type"; ONNX Runtime refuses to load the graph), by default clamps weights to
+-1e4 and flushes weights below 1e-7, and wraps every ``Resize`` in a Cast pair. This pass is
~200 lines, re-infers all types from scratch and is checked with ``onnx.checker`` (full check).

The result is verified with ONNX Runtime against the fp32 graph (:func:`compare_graphs`); note that
ONNX Runtime's CPU provider runs some fp16 ops by casting to fp32 internally, so the comparison
covers the graph's weight rounding, fp16 storage of every intermediate tensor at kernel boundaries
and overflow, not TensorRT's fp16 kernels (which accumulate in fp32 for convolutions and reductions).

No torch: onnx, numpy (and onnxruntime for the range probe and the comparison).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

FP16_ONNX_FILE = "model.fp16.onnx"
EXPORT_KEY = "onnx_fp16"
FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -24  # smallest positive fp16 subnormal; smaller magnitudes round to 0
DEFAULT_MAX_ABS = 4096.0

#: (op_type, input index) that the ONNX spec types as float32 regardless of the data type
FIXED_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}
#: ops whose inputs are read as they are (any type): no Cast is inserted in front of them
TYPE_AGNOSTIC_INPUT_OPS = {"Cast", "Shape", "Size"}

__all__ = ["convert_fp16", "convert_fp16_model", "compare_graphs", "graph_io_types", "FP16_ONNX_FILE", "EXPORT_KEY"]


def _onnx():
    import onnx

    return onnx


def _fold_constants(model) -> None:
    """Float/int ``Constant`` nodes with a tensor ``value`` become initializers (same names)."""
    onnx = _onnx()
    g = model.graph
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)


def _elem_types(model) -> Dict[str, int]:
    """Element type of every tensor name after ONNX shape inference (strict)."""
    onnx = _onnx()
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    out: Dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi.type.tensor_type.elem_type
    for t in g.initializer:
        out[t.name] = t.data_type
    return out


def _probe_ranges(model, sample: Sequence[Dict[str, np.ndarray]], float_names: Iterable[str]) -> Dict[str, float]:
    """max |value| of every listed float tensor of the fp32 graph on the sample feeds (ONNX Runtime)."""
    onnx = _onnx()
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    extra = [n for n in float_names if n not in have]
    for n in extra:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor name
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ranges: Dict[str, float] = {}
    for feed in sample:
        for n, v in zip(names, sess.run(names, feed)):
            v = np.asarray(v)
            if v.size and v.dtype.kind == "f":
                ranges[n] = max(ranges.get(n, 0.0), float(np.nanmax(np.abs(v))))
    return ranges


def _default_sample(model, n: int = 2, seed: int = 0) -> List[Dict[str, np.ndarray]]:
    """N(0,1) float32 feeds for the graph inputs (dynamic dims -> 2)."""
    rng = np.random.default_rng(seed)
    feed = {}
    init = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in init:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type != 1:
            raise ValueError(f"convert_fp16: input '{vi.name}' is not float32; pass `sample` feeds")
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else n for d in tt.shape.dim]
        feed[vi.name] = rng.standard_normal(shape).astype(np.float32)
    return [feed]


def _blocked_nodes(model, types: Dict[str, int], keep_fp32_ops: Set[str], keep_fp32_nodes: Set[str],
                   ranges: Optional[Dict[str, float]], max_abs: float) -> Dict[int, str]:
    """index of each node kept in fp32 -> why."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    init_cache: Dict[str, np.ndarray] = {}
    why: Dict[int, str] = {}
    for i, n in enumerate(model.graph.node):
        if n.op_type in keep_fp32_ops:
            why[i] = f"op type {n.op_type} in keep_fp32_ops"
            continue
        if n.name and n.name in keep_fp32_nodes:
            why[i] = "named in keep_fp32_nodes"
            continue
        for j, name in enumerate(n.input):
            if name in inits and inits[name].data_type == 1 and (n.op_type, j) not in FIXED_FP32_INPUTS:
                if name not in init_cache:
                    init_cache[name] = numpy_helper.to_array(inits[name])
                v = np.abs(init_cache[name])
                if v.size and float(v.max()) > FP16_MAX:
                    why[i] = f"initializer '{name}' max |value| {float(v.max()):.3g} > fp16 max"
                    break
                if 0 < v.size <= 16 and np.any((v > 0) & (v < FP16_TINY)):
                    why[i] = f"small constant '{name}' would flush to 0 in fp16"
                    break
        if i in why or ranges is None:
            continue
        for name in list(n.input) + list(n.output):
            if types.get(name) == 1 and ranges.get(name, 0.0) > max_abs:
                why[i] = f"'{name}' reaches {ranges[name]:.3g} (> max_abs={max_abs:g}) on the sample"
                break
    return why


def convert_fp16_model(model, sample: Optional[Sequence[Dict[str, np.ndarray]]] = None,
                       keep_fp32_ops: Sequence[str] = (), keep_fp32_nodes: Sequence[str] = (),
                       max_abs: float = DEFAULT_MAX_ABS, probe: bool = True) -> Tuple[Any, Dict[str, Any]]:
    """fp16 copy of an fp32 ModelProto with fp32 graph inputs/outputs; returns (model, report)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"convert_fp16_model: argument 'model' expected an onnx.ModelProto, got {type(model).__name__}")
    if not (isinstance(max_abs, (int, float)) and 0 < max_abs <= FP16_MAX):
        raise ValueError(f"convert_fp16_model: argument 'max_abs' expected a number in (0, {FP16_MAX:g}], got {max_abs!r}")
    src = onnx.ModelProto()
    src.CopyFrom(model)
    g = src.graph
    for n in g.node:
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                raise ValueError(f"convert_fp16_model: node '{n.name or n.op_type}' has a subgraph (If/Loop/Scan); "
                                 "edgead's graphs have none and this pass does not convert them")
    if any(t.data_type == TensorProto.FLOAT16 for t in g.initializer):
        raise ValueError("convert_fp16_model: the graph already holds float16 initializers (converted twice?)")
    _fold_constants(src)
    del g.value_info[:]
    types = _elem_types(src)
    graph_inputs = {vi.name for vi in g.input}
    graph_outputs = [vi.name for vi in g.output]
    ranges = None
    if probe:
        feeds = list(sample) if sample is not None else _default_sample(src)
        float_names = [name for name, t in types.items() if t == TensorProto.FLOAT and name not in
                       {i.name for i in g.initializer}]
        ranges = _probe_ranges(src, feeds, float_names)
    blocked = _blocked_nodes(src, types, set(keep_fp32_ops), set(keep_fp32_nodes), ranges, float(max_abs))
    folded = list(g.node)

    inits = {t.name: t for t in g.initializer}
    # name -> (current name, elem type) of the value as the rewritten graph holds it
    cur: Dict[str, Tuple[str, int]] = {n: (n, types.get(n, 0)) for n in graph_inputs}
    for name, t in inits.items():
        cur[name] = (name, t.data_type)
    casts: Dict[Tuple[str, int], str] = {}
    fp16_inits: Dict[str, str] = {}
    new_inits: List[Any] = []
    used_inits: Set[str] = set()
    nodes: List[Any] = []
    stats = {"casts": 0, "fp16_initializers": 0, "flushed_to_zero": 0}

    def as_type(name: str, want: int) -> str:
        actual, have = cur[name]
        if have == want or have not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            if actual in inits:
                used_inits.add(actual)
            return actual
        if actual in inits and want == TensorProto.FLOAT16:
            if actual not in fp16_inits:
                arr = numpy_helper.to_array(inits[actual])
                h = arr.astype(np.float16)
                stats["flushed_to_zero"] += int(np.count_nonzero((h == 0) & (arr != 0)))
                t = numpy_helper.from_array(h, actual + "__fp16")
                new_inits.append(t)
                fp16_inits[actual] = t.name
                stats["fp16_initializers"] += 1
            return fp16_inits[actual]
        key = (actual, want)
        if key not in casts:
            out = f"{actual}__to_{'fp16' if want == TensorProto.FLOAT16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [actual], [out], to=want, name=out))
            stats["casts"] += 1
            casts[key] = out
        return casts[key]

    fp16_nodes = 0
    for i, n in enumerate(folded):
        half = i not in blocked
        fp16_nodes += half
        compute = TensorProto.FLOAT16 if half else TensorProto.FLOAT
        new = onnx.NodeProto()
        new.CopyFrom(n)
        del new.input[:]
        for j, name in enumerate(n.input):
            if not name:
                new.input.append(name)
                continue
            if n.op_type in TYPE_AGNOSTIC_INPUT_OPS:
                new.input.append(as_type(name, cur[name][1]))
            elif (n.op_type, j) in FIXED_FP32_INPUTS:
                new.input.append(as_type(name, TensorProto.FLOAT))
            else:
                new.input.append(as_type(name, compute))
        if half:
            for a in new.attribute:
                if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
                if n.op_type == "ConstantOfShape" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        del new.output[:]
        for o in n.output:
            t = types.get(o, 0)
            if t == TensorProto.FLOAT and half:
                t = TensorProto.FLOAT16
            name = o + "__fp16" if (o in graph_outputs and t == TensorProto.FLOAT16) else o
            new.output.append(name)
            cur[o] = (name, t)
        nodes.append(new)
    # graph outputs: back to float32 under their original names
    for o in graph_outputs:
        actual, t = cur[o]
        if actual != o:
            nodes.append(helper.make_node("Cast", [actual], [o], to=TensorProto.FLOAT, name=o + "__to_fp32"))
            stats["casts"] += 1
    # graph inputs that are read in fp16 get their Cast from as_type (already in `nodes`, before the first reader)
    del g.node[:]
    g.node.extend(nodes)
    referenced = {x for n in nodes for x in n.input}
    keep_inits = [t for t in g.initializer if t.name in referenced] + [t for t in new_inits if t.name in referenced]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    # the original fp32 initializers are no longer graph inputs either (IR < 4 lists them there)
    names_left = {t.name for t in keep_inits}
    stale = [vi for vi in g.input if vi.name in inits and vi.name not in names_left]
    for vi in stale:
        g.input.remove(vi)
    onnx.checker.check_model(src, full_check=True)
    report = {
        "nodes": len(folded),
        "fp16_nodes": int(fp16_nodes),
        "kept_fp32": [{"node": n.name or f"{n.op_type}_{i}", "op": n.op_type, "why": blocked[i]}
                      for i, n in enumerate(folded) if i in blocked],
        "max_abs": float(max_abs),
        "probed": bool(probe),
        **stats,
    }
    return src, report


def graph_io_types(path_or_model) -> Dict[str, int]:
    """{name: ONNX elem type} of the graph's inputs and outputs (1 = float32, 10 = float16)."""
    onnx = _onnx()
    m = onnx.load(path_or_model) if isinstance(path_or_model, (str, os.PathLike)) else path_or_model
    return {vi.name: vi.type.tensor_type.elem_type for vi in list(m.graph.input) + list(m.graph.output)
            if vi.name not in {t.name for t in m.graph.initializer}}


def convert_fp16(src: str, dst: str, sample: Optional[Sequence[Dict[str, np.ndarray]]] = None, **kwargs) -> Dict[str, Any]:
    """Convert the fp32 ONNX file `src` to an fp16 graph with fp32 I/O at `dst` (atomically); returns the report."""
    onnx = _onnx()
    if not os.path.isfile(src):
        raise FileNotFoundError(f"convert_fp16: ONNX file '{src}' not found")
    model, report = convert_fp16_model(onnx.load(src), sample=sample, **kwargs)
    os.makedirs(os.path.dirname(os.path.abspath(dst)) or ".", exist_ok=True)
    tmp = dst + ".tmp"
    try:
        onnx.save(model, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return report


def compare_graphs(ref_path: str, test_path: str, feeds: Sequence[Dict[str, np.ndarray]]) -> Dict[str, Dict[str, float]]:
    """Run both graphs with ONNX Runtime (CPU) on the feeds; per output: max_abs_diff, max_abs_ref, max_rel_diff
    (= max_abs_diff / max_abs_ref) and whether the test output is all finite."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    a = ort.InferenceSession(ref_path, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(test_path, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in a.get_outputs()]
    out: Dict[str, Dict[str, float]] = {n: {"max_abs_diff": 0.0, "max_abs_ref": 0.0, "finite": True} for n in names}
    for feed in feeds:
        for n, r, t in zip(names, a.run(names, feed), b.run(names, feed)):
            if t.dtype != r.dtype or t.shape != r.shape:
                raise AssertionError(f"compare_graphs: output '{n}' is {t.dtype}{t.shape}, the reference {r.dtype}{r.shape}")
            d = out[n]
            d["finite"] = bool(d["finite"] and np.all(np.isfinite(t)))
            if r.size:
                d["max_abs_diff"] = max(d["max_abs_diff"], float(np.abs(t.astype(np.float64) - r).max()))
                d["max_abs_ref"] = max(d["max_abs_ref"], float(np.abs(r).max()))
    for d in out.values():
        d["max_rel_diff"] = d["max_abs_diff"] / d["max_abs_ref"] if d["max_abs_ref"] > 0 else d["max_abs_diff"]
    return out
