"""Trained-model artifacts: a directory with edgead.json (metadata) + weights.safetensors (tensors).

Torch-free and pickle-free: loading can never run code. Layout::

    artifact_dir/
      edgead.json            format_version, model_type, config, preprocessing, thresholds,
                             statistics, tensors (name -> shape, dtype), files (name -> sha256, bytes)
      weights.safetensors    every tensor the model needs (network weights, memory bank, ...)
      (optional) model.onnx, engines/...  written by edgead.export

Saving is atomic (written to a temporary sibling directory, then renamed) and refuses to replace
a directory that is not an edgead artifact, so user data is never lost.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

FORMAT_VERSION = 1
META_FILE = "edgead.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_TYPES = ("patchcore", "efficientad", "puad", "fader")


class ArtifactError(ValueError):
    """An artifact directory is missing, corrupt, truncated or from an incompatible version."""


@dataclass
class Artifact:
    """A loaded artifact. `tensors` are NumPy arrays (no torch needed)."""

    path: Optional[str]
    model_type: str
    config: Dict[str, Any]
    preprocessing: Dict[str, Any]
    tensors: Dict[str, np.ndarray]
    thresholds: Dict[str, Any] = field(default_factory=dict)
    statistics: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> str:
        """Path of an extra file stored in the artifact directory (e.g. 'model.onnx')."""
        if self.path is None:
            raise ArtifactError("this artifact has not been saved to a directory yet")
        return os.path.join(self.path, name)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        raise ValueError(f"artifact metadata must be finite numbers, got {x}")
    return x


def save_artifact(
    path: str,
    model_type: str,
    config: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    tensors: Mapping[str, Any],
    thresholds: Optional[Mapping[str, Any]] = None,
    statistics: Optional[Mapping[str, Any]] = None,
    overwrite: bool = True,
) -> str:
    """Write an artifact directory atomically. `tensors` values: NumPy arrays or torch tensors."""
    from safetensors.numpy import save_file

    if model_type not in MODEL_TYPES:
        raise ValueError(f"save_artifact: argument 'model_type' expected one of {MODEL_TYPES}, got {model_type!r}")
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ArtifactError(f"save_artifact: '{path}' exists and is not a directory; refusing to replace it")
        if os.listdir(path) and not os.path.isfile(os.path.join(path, META_FILE)):
            raise ArtifactError(
                f"save_artifact: '{path}' is a non-empty directory that is not an edgead artifact; refusing to replace it"
            )
        if not overwrite:
            raise ArtifactError(f"save_artifact: '{path}' exists (pass overwrite=True to replace it)")

    arrays: Dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):  # torch tensor, without importing torch
            t = t.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(np.asarray(t))
        if a.dtype == object:
            raise TypeError(f"save_artifact: tensor '{name}' has dtype object")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ValueError(f"save_artifact: tensor '{name}' contains NaN or inf")
        arrays[name] = a

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".edgead-tmp-", dir=parent)
    try:
        wpath = os.path.join(tmp, WEIGHTS_FILE)
        save_file(arrays, wpath)
        meta = {
            "format_version": FORMAT_VERSION,
            "model_type": model_type,
            "edgead_version": _version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "config": _jsonable(dict(config)),
            "preprocessing": _jsonable(dict(preprocessing)),
            "thresholds": _jsonable(dict(thresholds or {})),
            "statistics": _jsonable(dict(statistics or {})),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "files": {WEIGHTS_FILE: {"sha256": _sha256(wpath), "bytes": os.path.getsize(wpath)}},
        }
        with open(os.path.join(tmp, META_FILE), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True, allow_nan=False)
        # Replace an existing artifact whole: its exports (ONNX, engines) were built from the old weights.
        if os.path.isdir(path):
            old = path + ".edgead-old"
            if os.path.exists(old):
                shutil.rmtree(old)
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _version() -> str:
    from edgead import __version__

    return __version__


def read_meta(path: str) -> Dict[str, Any]:
    """Read and validate edgead.json only (cheap; no tensors)."""
    mpath = os.path.join(path, META_FILE)
    if not os.path.isdir(path):
        raise ArtifactError(f"artifact directory '{path}' does not exist")
    if not os.path.isfile(mpath):
        raise ArtifactError(f"'{path}' is not an edgead artifact: {META_FILE} is missing")
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"'{mpath}' is corrupt or truncated: {e}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"'{mpath}' expected a JSON object, got {type(meta).__name__}")
    for key in ("format_version", "model_type", "config", "preprocessing", "tensors", "files"):
        if key not in meta:
            raise ArtifactError(f"'{mpath}' lacks the required key '{key}'")
    v = meta["format_version"]
    if v != FORMAT_VERSION:
        raise ArtifactError(
            f"'{path}' has artifact format_version {v!r}; this edgead ({_version()}) reads version {FORMAT_VERSION}"
        )
    if meta["model_type"] not in MODEL_TYPES:
        raise ArtifactError(f"'{mpath}': model_type expected one of {MODEL_TYPES}, got {meta['model_type']!r}")
    return meta


def load_artifact(path: str, verify_checksum: bool = True) -> Artifact:
    """Load and validate an artifact (version, checksums, tensor names/shapes/dtypes). No pickle, no torch."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.path.abspath(path)
    meta = read_meta(path)
    wpath = os.path.join(path, WEIGHTS_FILE)
    if not os.path.isfile(wpath):
        raise ArtifactError(f"artifact '{path}' lacks {WEIGHTS_FILE}")
    finfo = meta["files"].get(WEIGHTS_FILE, {})
    size = os.path.getsize(wpath)
    if "bytes" in finfo and size != finfo["bytes"]:
        raise ArtifactError(f"'{wpath}' is truncated or altered: {size} bytes, expected {finfo['bytes']}")
    if verify_checksum and "sha256" in finfo and _sha256(wpath) != finfo["sha256"]:
        raise ArtifactError(f"'{wpath}' is corrupt: sha256 does not match {META_FILE}")
    try:
        tensors = load_file(wpath)
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"'{wpath}' cannot be read as safetensors: {e}") from None
    expected = meta["tensors"]
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ArtifactError(f"'{wpath}' tensors do not match {META_FILE}: missing {missing}, unexpected {extra}")
    for name, spec in expected.items():
        t = tensors[name]
        if list(t.shape) != list(spec["shape"]) or str(t.dtype) != spec["dtype"]:
            raise ArtifactError(
                f"'{wpath}': tensor '{name}' expected shape {spec['shape']} dtype {spec['dtype']}, "
                f"got {list(t.shape)} {t.dtype}"
            )
    return Artifact(
        path=path,
        model_type=meta["model_type"],
        config=meta["config"],
        preprocessing=meta["preprocessing"],
        tensors=tensors,
        thresholds=meta.get("thresholds", {}),
        statistics=meta.get("statistics", {}),
        meta=meta,
    )


def update_meta(path: str, **fields: Any) -> Dict[str, Any]:
    """Update top-level JSON fields (e.g. thresholds, statistics, files of exports) in place, atomically."""
    meta = read_meta(path)
    for k, v in fields.items():
        if k in ("format_version", "model_type", "tensors"):
            raise ValueError(f"update_meta: field '{k}' cannot be changed")
        meta[k] = _jsonable(v)
    mpath = os.path.join(path, META_FILE)
    fd, tmp = tempfile.mkstemp(prefix=".edgead-meta-", dir=path)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(tmp, mpath)
    return meta


def record_export(artifact_dir: str, key: str, path: str, info: Mapping[str, Any]) -> Dict[str, Any]:
    """Record an exported file (ONNX graph, quantized graph, ...) in the artifact's metadata.

    Sets exports[key] = {file, sha256, bytes, **info, created}; a file inside the artifact directory
    is stored by its name and also listed in `files` (checksummed like the weights).
    """
    artifact_dir = os.path.abspath(artifact_dir)
    sha = _sha256(path)
    size = os.path.getsize(path)
    inside = os.path.dirname(os.path.abspath(path)) == artifact_dir
    rel = os.path.basename(path) if inside else path
    meta = read_meta(artifact_dir)
    files = dict(meta.get("files", {}))
    if inside:
        files[rel] = {"sha256": sha, "bytes": size}
    exports = dict(meta.get("exports", {}) or {})
    exports[key] = {"file": rel, "sha256": sha, "bytes": size, **dict(info),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return update_meta(artifact_dir, files=files, exports=exports)


# ------------------------------------------------------------------------------------------------
# Artifact layout: names of the files edgead.export writes and edgead.runtime reads. Both import
# them from here, so the two packages never import each other for a file name.
# ------------------------------------------------------------------------------------------------
ONNX_FILE = "model.onnx"
INT8_ONNX_FILE = "model.int8.onnx"
ENGINES_DIR = "engines"
#: keys of edgead.json "exports" -> the default file name of that export
EXPORT_FILES = {"onnx": ONNX_FILE, "onnx_int8": INT8_ONNX_FILE}


def sha256_file(path: str) -> str:
    """sha256 hex digest of a file (the checksum recorded in edgead.json "files" / "exports")."""
    return _sha256(path)


def export_file(meta_or_artifact: Any, artifact_dir: str, key: str = "onnx") -> str:
    """Path of the artifact's export `key` ("onnx" | "onnx_int8"): exports[key]["file"] as recorded by
    record_export (relative to the artifact directory), or the default name when none is recorded."""
    if key not in EXPORT_FILES:
        raise ValueError(f"export_file: argument 'key' expected one of {sorted(EXPORT_FILES)}, got {key!r}")
    meta = meta_or_artifact.meta if isinstance(meta_or_artifact, Artifact) else meta_or_artifact
    rel = ((meta.get("exports") or {}).get(key) or {}).get("file", EXPORT_FILES[key])
    return rel if os.path.isabs(rel) else os.path.join(artifact_dir, rel)


def engines_dir(artifact_dir: str) -> str:
    """Folder of the artifact's cached TensorRT engines (<artifact>/engines)."""
    return os.path.join(os.path.abspath(artifact_dir), ENGINES_DIR)
