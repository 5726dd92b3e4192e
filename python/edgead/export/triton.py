"""Triton Inference Server model repository for an edgead artifact (``edgead export A --format triton --out REPO``).

Layout written (``<name>`` defaults to "edgead")::

    REPO/
      <name>_net/                 the network: ONNX Runtime backend (platform onnxruntime_onnx)
        config.pbtxt
        configs/tensorrt.pbtxt    only when the artifact has a TensorRT engine: the same model as a
        1/model.onnx              tensorrt_plan (start tritonserver with --model-config-name=tensorrt)
        1/model.plan              (the engine; it only runs on the GPU / TensorRT version it was built for)
      <name>_post/                edgead's post-processing as a Python backend model
        config.pbtxt
        1/model.py                calls edgead.runtime.postprocess.postprocess -- the Detector's own code
        1/artifact/               edgead.json (pre-processing, thresholds, config) + weights.safetensors
      <name>/                     the ensemble clients call: image -> <name>_net -> <name>_post
        config.pbtxt              -> score, anomaly_map; parameters carry edgead.json (pre-processing,
        1/                        thresholds) for clients (edgead.client reads them)
      edgead.json                 a copy of the artifact's metadata at the top, for people and tools

Request: ``image`` FP32 (C, H, W) pre-processed as the artifact's ``preprocessing`` says (edgead.client does
it with edgead.data.transforms.Preprocessing), batched by Triton (dynamic batching, max batch
`max_batch_size`). Response: ``score`` FP32 (1,) and ``anomaly_map`` FP32 (H, W) at the model's input size;
the client resizes maps to each image's size and applies the thresholds exactly like the Detector.

The config.pbtxt files are protobuf text format of Triton's ModelConfig (written by :func:`to_pbtxt`; the tests
parse them with tritonclient's model_config_pb2 when present).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["export_triton", "to_pbtxt", "PbEnum", "tensor_config", "model_configs", "TRITON_DTYPES", "ENSEMBLE_INPUT", "ENSEMBLE_OUTPUTS"]

ENSEMBLE_INPUT = "image"
ENSEMBLE_OUTPUTS = ("score", "anomaly_map")
#: NumPy dtype -> Triton model config data_type
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                 "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


class PbEnum(str):
    """A protobuf enum value: written without quotes."""


def _scalar(v: Any) -> str:
    if isinstance(v, PbEnum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string literal is a valid protobuf text string literal
    raise TypeError(f"to_pbtxt: unsupported value {v!r} ({type(v).__name__})")


def to_pbtxt(msg: Mapping[str, Any], indent: int = 0) -> str:
    """A dict as protobuf text format: dict -> message, list -> repeated field, PbEnum -> enum, str -> string.
    A map field (``parameters``) is given as a list of {"key": .., "value": {..}} dicts."""
    pad = "  " * indent
    lines: List[str] = []
    for key, val in msg.items():
        items = val if isinstance(val, list) else [val]
        if isinstance(val, list) and val and not isinstance(val[0], Mapping):  # repeated scalar: packed list
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in val)} ]")
            continue
        for it in items:
            if isinstance(it, Mapping):
                lines.append(f"{pad}{key} {{")
                lines.append(to_pbtxt(it, indent + 1).rstrip("\n"))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_scalar(it)}")
    return "\n".join(l for l in lines if l) + "\n"


def tensor_config(name: str, dtype: str, dims: Sequence[int]) -> Dict[str, Any]:
    """One input/output entry of a config.pbtxt (name, Triton data type, dims without the batch)."""
    if dtype not in TRITON_DTYPES:
        raise ValueError(f"export_triton: tensor '{name}' has dtype {dtype}, which has no Triton type here")
    return {"name": name, "data_type": PbEnum(TRITON_DTYPES[dtype]), "dims": [int(d) for d in dims]}


def _network_signature(onnx_path: str) -> Tuple[Tuple[str, str, List[int]], List[Tuple[str, str, List[int]]]]:
    """(input (name, dtype, dims without batch), outputs [(name, dtype, dims)]) by running the graph once on
    batch 1 with ONNX Runtime (exact output shapes whatever the graph's symbolic dims say)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    dims = [int(d) for d in inp.shape[1:]]
    outs = sess.run(None, {inp.name: np.zeros([1] + dims, np.float32)})
    names = [o.name for o in sess.get_outputs()]
    return (inp.name, "float32", dims), [(n, str(o.dtype), list(o.shape[1:])) for n, o in zip(names, outs)]


def model_configs(name: str, net_in, net_outs, map_size: Sequence[int], meta: Mapping[str, Any],
                  max_batch_size: int = 32, max_queue_delay_us: int = 500, instances: int = 1,
                  instance_kind: str = "gpu", post_instances: int = 2) -> Dict[str, Dict[str, Any]]:
    """The three ModelConfig dicts: {"<name>_net", "<name>_post", "<name>"} (ensemble), plus
    "<name>_net.tensorrt" (the tensorrt_plan variant)."""
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"export_triton: argument 'instance_kind' expected one of {sorted(INSTANCE_KINDS)}, got {instance_kind!r}")
    for arg, v, lo in (("max_batch_size", max_batch_size, 1), ("instances", instances, 1),
                       ("post_instances", post_instances, 1), ("max_queue_delay_us", max_queue_delay_us, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"export_triton: argument '{arg}' expected an int >= {lo}, got {v!r}")
    net, post = f"{name}_net", f"{name}_post"
    in_name, in_dtype, in_dims = net_in
    batching = {"preferred_batch_size": sorted({b for b in (1, 4, 8, max_batch_size) if b <= max_batch_size}),
                "max_queue_delay_microseconds": int(max_queue_delay_us)}
    h, w = (int(v) for v in map_size)
    net_cfg = {
        "name": net, "platform": "onnxruntime_onnx", "max_batch_size": int(max_batch_size),
        "input": [tensor_config(in_name, in_dtype, in_dims)],
        "output": [tensor_config(n, d, s) for n, d, s in net_outs],
        "dynamic_batching": batching,
        "instance_group": [{"count": int(instances), "kind": PbEnum(INSTANCE_KINDS[instance_kind])}],
        "default_model_filename": "model.onnx",
    }
    trt_cfg = dict(net_cfg, platform="tensorrt_plan", default_model_filename="model.plan",
                   instance_group=[{"count": int(instances), "kind": PbEnum("KIND_GPU")}])
    post_cfg = {
        "name": post, "backend": "python", "max_batch_size": int(max_batch_size),
        "input": [tensor_config(n, d, s) for n, d, s in net_outs],
        "output": [tensor_config("score", "float32", [1]), tensor_config("anomaly_map", "float32", [h, w])],
        "dynamic_batching": batching,
        "instance_group": [{"count": int(post_instances), "kind": PbEnum("KIND_CPU")}],
        "parameters": [{"key": "model_type", "value": {"string_value": str(meta["model_type"])}}],
    }
    ens_cfg = {
        "name": name, "platform": "ensemble", "max_batch_size": int(max_batch_size),
        "input": [tensor_config(ENSEMBLE_INPUT, in_dtype, in_dims)],
        "output": [tensor_config("score", "float32", [1]), tensor_config("anomaly_map", "float32", [h, w])],
        "ensemble_scheduling": {"step": [
            {"model_name": net, "model_version": -1,
             "input_map": [{"key": in_name, "value": ENSEMBLE_INPUT}],
             "output_map": [{"key": n, "value": f"_net_{n}"} for n, _, _ in net_outs]},
            {"model_name": post, "model_version": -1,
             "input_map": [{"key": n, "value": f"_net_{n}"} for n, _, _ in net_outs],
             "output_map": [{"key": o, "value": o} for o in ENSEMBLE_OUTPUTS]},
        ]},
        # what a client needs to pre-process and to threshold like the Detector (edgead.client reads these)
        "parameters": [
            {"key": "edgead_model_type", "value": {"string_value": str(meta["model_type"])}},
            {"key": "edgead_preprocessing", "value": {"string_value": json.dumps(meta.get("preprocessing") or {}, sort_keys=True)}},
            {"key": "edgead_thresholds", "value": {"string_value": json.dumps(meta.get("thresholds") or {}, sort_keys=True)}},
        ],
    }
    return {net: net_cfg, f"{net}.tensorrt": trt_cfg, post: post_cfg, name: ens_cfg}


_MODEL_PY = '''"""Triton Python backend model: edgead post-processing (written by edgead.export.triton).

Runs edgead.runtime.postprocess.postprocess -- the function edgead.runtime.Detector calls after the network --
on the network outputs of every request in a (dynamically batched) call, with the artifact in ./artifact.
Needs `pip install edgead` (with its edgead._C extension) in the Python backend's environment.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from edgead.artifact import load_artifact

        cfg = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        self.artifact = load_artifact(os.path.join(here, "artifact"))
        self.model_type = self.artifact.model_type
        self.inputs = [i["name"] for i in cfg["input"]]

    def execute(self, requests):
        from edgead.runtime.postprocess import postprocess

        outs, sizes = {n: [] for n in self.inputs}, []
        for req in requests:
            arrs = {n: pb_utils.get_input_tensor_by_name(req, n).as_numpy() for n in self.inputs}
            sizes.append(len(next(iter(arrs.values()))))
            for n, a in arrs.items():
                outs[n].append(a)
        try:
            batch = {n: np.concatenate(v) for n, v in outs.items()}
            scores, maps = postprocess(self.model_type, batch, self.artifact)
        except Exception as e:  # one bad batch: every request in it gets the error, the model keeps serving
            err = pb_utils.TritonError(f"edgead post-processing failed: {type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        responses, i = [], 0
        for n in sizes:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("score", np.ascontiguousarray(scores[i:i + n].reshape(n, 1), dtype=np.float32)),
                pb_utils.Tensor("anomaly_map", np.ascontiguousarray(maps[i:i + n], dtype=np.float32)),
            ]))
            i += n
        return responses

    def finalize(self):
        self.artifact = None
'''


def _find_engine(artifact_dir: str) -> Optional[str]:
    """The newest engine in <artifact>/engines built with a dynamic batch profile (any precision), or None."""
    import glob

    from edgead.artifact import engines_dir

    found = []
    for p in glob.glob(os.path.join(engines_dir(artifact_dir), "*.engine")):
        found.append((os.path.getmtime(p), p))
    return max(found)[1] if found else None


def export_triton(artifact_dir: str, out: str, name: str = "edgead", max_batch_size: int = 32,
                  max_queue_delay_us: int = 500, instances: int = 1, instance_kind: str = "gpu",
                  post_instances: int = 2, engine: Optional[str] = None, overwrite: bool = False) -> str:
    """Write a Triton model repository for the artifact to `out` (see the module docstring); returns `out`.

    The ONNX graph must exist (`edgead export A` writes it; export_artifact(format="triton") does it first).
    engine: a TensorRT engine to add as the tensorrt_plan variant (default: the newest in <artifact>/engines,
    if any). `out` must not exist or be empty, unless overwrite=True and it is an edgead Triton repository.
    """
    from edgead.artifact import META_FILE, WEIGHTS_FILE, export_file, read_meta

    artifact_dir = os.path.abspath(artifact_dir)
    meta = read_meta(artifact_dir)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise ValueError(f"export_triton: argument 'name' expected letters, digits, '_' or '-', got {name!r}")
    onnx_path = export_file(meta, artifact_dir, "onnx")
    if not os.path.isfile(onnx_path):
        raise FileNotFoundError(f"export_triton: artifact '{artifact_dir}' has no ONNX export ({onnx_path}); "
                                f"run `edgead export {artifact_dir}` first")
    out = os.path.abspath(out)
    marker = os.path.join(out, ".edgead-triton")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise FileExistsError(f"export_triton: --out '{out}' exists and is not a directory")
        if os.listdir(out):
            if not (overwrite and os.path.isfile(marker)):
                raise FileExistsError(f"export_triton: --out '{out}' is not empty (overwrite only replaces an edgead "
                                      "Triton repository, with overwrite=True)")
            shutil.rmtree(out)
    if engine is None:
        engine = _find_engine(artifact_dir)
    elif not os.path.isfile(engine):
        raise FileNotFoundError(f"export_triton: argument 'engine': file '{engine}' does not exist")

    net_in, net_outs = _network_signature(onnx_path)
    size = (meta.get("preprocessing") or {}).get("size") or net_in[2][-2:]
    cfgs = model_configs(name, net_in, net_outs, size, meta, max_batch_size=max_batch_size,
                         max_queue_delay_us=max_queue_delay_us, instances=instances, instance_kind=instance_kind,
                         post_instances=post_instances)
    net, post = f"{name}_net", f"{name}_post"
    tmp = out + ".edgead-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for d in (os.path.join(tmp, net, "1"), os.path.join(tmp, post, "1", "artifact"), os.path.join(tmp, name, "1")):
            os.makedirs(d)
        shutil.copyfile(onnx_path, os.path.join(tmp, net, "1", "model.onnx"))
        _write(os.path.join(tmp, net, "config.pbtxt"), to_pbtxt(cfgs[net]))
        if engine is not None:
            os.makedirs(os.path.join(tmp, net, "configs"))
            shutil.copyfile(engine, os.path.join(tmp, net, "1", "model.plan"))
            _write(os.path.join(tmp, net, "configs", "tensorrt.pbtxt"), to_pbtxt(cfgs[f"{net}.tensorrt"]))
        for f in (META_FILE, WEIGHTS_FILE):
            shutil.copyfile(os.path.join(artifact_dir, f), os.path.join(tmp, post, "1", "artifact", f))
        _write(os.path.join(tmp, post, "1", "model.py"), _MODEL_PY)
        _write(os.path.join(tmp, post, "config.pbtxt"), to_pbtxt(cfgs[post]))
        _write(os.path.join(tmp, name, "config.pbtxt"), to_pbtxt(cfgs[name]))
        shutil.copyfile(os.path.join(artifact_dir, META_FILE), os.path.join(tmp, META_FILE))
        _write(os.path.join(tmp, ".edgead-triton"), json.dumps({"ensemble": name, "network": net, "post": post,
                                                                  "tensorrt": engine is not None}) + "\n")
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
