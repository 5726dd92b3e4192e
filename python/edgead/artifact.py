"""Trained-model artifacts: a directory with edgead.json (metadata) + weights.safetensors (tensors).

Torch-free and pickle-free: loading can never run code. Layout::

    artifact_dir/
      edgead.json            format_version, model_type, config, preprocessing, thresholds,
                             statistics, tensors (name -> shape, dtype), files (name -> sha256, bytes)
      weights.safetensors    every tensor the model needs (network weights, memory bank, ...)
      (optional) model.onnx, engines/...  written by edgead.export

Saving is atomic (written to a temporary sibling directory, files and directory fsynced, then put in
place with one rename, or one RENAME_EXCHANGE of the old and the new directory on Linux) and refuses
to replace a directory that is not an edgead artifact, so user data is never lost: a process killed at
any point leaves the old or the new artifact at the path. Stale temporary directories of killed saves
(``.edgead-tmp-*``) are removed by the next save into the same folder. Files are created with the
process umask (no forced 0600/0700), so a service account can read what a build account wrote.

Loading checks everything the runtime will trust: the structure of edgead.json (an ArtifactError
naming the field, never KeyError/AttributeError/RecursionError), finite numbers everywhere, thresholds,
per-model config values and tensor values (e.g. PatchCore's blur_sigma and bank_neighbors), every path
confined to the artifact directory, and the sha256 of every file the runtime opens
(:func:`verified_path`: weights, ONNX graphs, TensorRT engines). The set of files that must carry a
checksum follows from the format (weights always, every export's file), so deleting a checksum entry
makes the artifact invalid instead of unverified.
"""
from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

FORMAT_VERSION = 1
META_FILE = "edgead.json"
WEIGHTS_FILE = "weights.safetensors"
MODEL_TYPES = ("patchcore", "efficientad", "puad", "fader", "mixed")
TMP_PREFIX = ".edgead-tmp-"
#: edgead.json larger than this is not an artifact's metadata (it is a few KB)
MAX_META_BYTES = 64 << 20
#: PatchCore's Gaussian has 2*ceil(4*sigma)+1 taps: sigma beyond this is no longer a blur but a hang
MAX_BLUR_SIGMA = 64.0
_TENSOR_DTYPES = ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                  "uint8", "uint16", "uint32", "uint64", "bool")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


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
        """Path of an extra file stored in the artifact directory (e.g. 'model.onnx'); confined to it."""
        if self.path is None:
            raise ArtifactError("this artifact has not been saved to a directory yet")
        return confined_path(self.path, name, "file")

    def verified_file(self, name: str) -> str:
        """Like :meth:`file`, and the file's sha256 must match edgead.json's ``files`` entry."""
        if self.path is None:
            raise ArtifactError("this artifact has not been saved to a directory yet")
        return verified_path(self.path, name, meta=self.meta)


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


def _fsync_path(path: str) -> None:
    """fsync a file or a directory (directories: best effort where the OS cannot open them)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - e.g. Windows directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - filesystems without fsync on directories
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: exists, owned by someone else
        return True
    return True


#: temporary directories without a live owner pid are removed after this many seconds (legacy names)
_STALE_SECONDS = 3600.0


def clean_stale_tmp(parent: str) -> list:
    """Remove ``.edgead-tmp-*`` directories in `parent` left by killed saves; returns the removed paths.

    Names carry the owner's pid (``.edgead-tmp-<pid>-<rand>``): removed when that process is gone.
    Older names without a pid are removed when not modified for an hour (a save takes seconds)."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.startswith(TMP_PREFIX):
            continue
        full = os.path.join(parent, name)
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-[0-9a-f]+$", name)
        try:
            if not stat.S_ISDIR(os.lstat(full).st_mode):
                continue
            stale = (not _pid_alive(int(m.group(1)))) if m else (now - os.lstat(full).st_mtime > _STALE_SECONDS)
        except OSError:
            continue
        if stale and (m is None or int(m.group(1)) != os.getpid()):
            shutil.rmtree(full, ignore_errors=True)
            if not os.path.exists(full):
                removed.append(full)
    return removed


def _umask() -> int:
    """The process umask, read without changing it (os.umask(x) would race with other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # pragma: no cover - non-Linux
    os.umask(old)
    return old


def _make_tmp_dir(parent: str) -> str:
    """A fresh temporary sibling directory, created with the umask's permissions (mkdtemp forces 0700)."""
    for _ in range(100):
        tmp = os.path.join(parent, f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
        try:
            os.mkdir(tmp)  # mode 0o777 & ~umask
            return tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    raise ArtifactError(f"save_artifact: cannot create a temporary directory in '{parent}'")  # pragma: no cover


_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux renameat2(RENAME_EXCHANGE)); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):  # pragma: no cover - old glibc / musl
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    AT_FDCWD = -100
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
        return False  # filesystem without RENAME_EXCHANGE
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) '{a}' <-> '{b}': {os.strerror(err)}")


def _install_dir(tmp: str, path: str) -> None:
    """Put the complete directory `tmp` at `path` so that a kill at any point leaves old or new there."""
    parent = os.path.dirname(path)
    if not os.path.lexists(path):
        os.rename(tmp, path)  # one rename: absent -> new
        _fsync_path(parent)
        return
    if _exchange(tmp, path):  # one syscall: old <-> new; the old one now sits at `tmp`
        _fsync_path(parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # Without RENAME_EXCHANGE: the old directory is moved aside under a temporary name first. A kill
    # between the two renames leaves `<path>.edgead-old`, which read_meta/save_artifact put back.
    old = path + ".edgead-old"
    if os.path.exists(old):
        shutil.rmtree(old)
    os.rename(path, old)
    os.rename(tmp, path)
    _fsync_path(parent)
    shutil.rmtree(old, ignore_errors=True)


def _save_in_progress(parent: str) -> bool:
    """True when a live process (other than this one) has a temporary save directory in `parent`."""
    try:
        names = os.listdir(parent)
    except OSError:
        return False
    for name in names:
        m = re.match(re.escape(TMP_PREFIX) + r"(\d+)-[0-9a-f]+$", name)
        if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
            return True
    return False


def _recover_interrupted(path: str) -> None:
    """A save killed between its two renames (filesystems without RENAME_EXCHANGE): restore the old one,
    unless another process is saving right now (it is between its renames, not killed)."""
    old = path + ".edgead-old"
    if (not os.path.lexists(path) and os.path.isfile(os.path.join(old, META_FILE))
            and not _save_in_progress(os.path.dirname(path))):
        try:
            os.rename(old, path)
        except OSError:  # pragma: no cover - read-only parent: read_meta reports the missing artifact
            pass


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


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
    _recover_interrupted(path)
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
    clean_stale_tmp(parent)
    tmp = _make_tmp_dir(parent)
    try:
        wpath = os.path.join(tmp, WEIGHTS_FILE)
        save_file(arrays, wpath)
        os.chmod(wpath, 0o666 & ~_umask())  # safetensors creates 0600; files follow the umask like any other
        _fsync_path(wpath)
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
        _write_json(os.path.join(tmp, META_FILE), meta)
        _fsync_path(tmp)
        # Replace an existing artifact whole: its exports (ONNX, engines) were built from the old weights.
        _install_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _version() -> str:
    from edgead import __version__

    return __version__


# ------------------------------------------------------------------------------------------------
# paths inside the artifact
# ------------------------------------------------------------------------------------------------


def _rel_parts(rel: Any, field: str) -> list:
    if not isinstance(rel, str) or not rel.strip():
        raise ArtifactError(f"{field}: expected a relative file path inside the artifact directory, got {rel!r}")
    if "\x00" in rel:
        raise ArtifactError(f"{field}: path {rel!r} contains a NUL byte")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise ArtifactError(f"{field}: absolute path {rel!r} is not allowed; paths are relative to the artifact directory")
    parts = [p for p in re.split(r"[\\/]+", rel) if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ArtifactError(f"{field}: path {rel!r} leaves the artifact directory; only files inside it are used")
    return parts


def confined_path(artifact_dir: str, rel: Any, field: str = "path") -> str:
    """`rel` resolved inside `artifact_dir`; ArtifactError naming `field` for absolute paths, '..' or a
    symlink that leads outside the directory."""
    parts = _rel_parts(rel, field)
    root = os.path.realpath(artifact_dir)
    full = os.path.join(os.path.abspath(artifact_dir), *parts)
    real = os.path.realpath(full)
    if os.path.commonpath([root, real]) != root:
        raise ArtifactError(f"{field}: path {rel!r} resolves to '{real}', outside the artifact directory '{root}'")
    return full


def _files_key(rel: str) -> str:
    return "/".join(p for p in re.split(r"[\\/]+", rel) if p not in ("", "."))


def verified_path(artifact_dir: str, relpath: str, meta: Optional[Mapping[str, Any]] = None) -> str:
    """The path of `relpath` inside `artifact_dir`, after checking that it stays inside the directory,
    is a regular file and matches the sha256 and size recorded in edgead.json ``files[relpath]``.

    Every file the runtime or the exporters open from an artifact (weights, ONNX graphs, TensorRT
    engines) goes through this function. A file without a recorded checksum is an error, not an
    unverified file. Raises ArtifactError (FileNotFoundError-free: a missing file is an ArtifactError
    naming it too)."""
    artifact_dir = os.path.abspath(artifact_dir)
    if meta is None:
        meta = read_meta(artifact_dir)
    full = confined_path(artifact_dir, relpath, f"files[{relpath!r}]")
    key = _files_key(relpath)
    entry = (meta.get("files") or {}).get(key)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise ArtifactError(
            f"artifact '{artifact_dir}': {META_FILE} files[{key!r}] is missing: '{key}' has no recorded sha256, "
            "so it cannot be verified (re-run the export that wrote it)")
    try:
        st = os.stat(full)
    except FileNotFoundError:
        raise ArtifactError(f"artifact '{artifact_dir}': '{key}' is listed in {META_FILE} but the file is missing") from None
    except PermissionError:
        raise ArtifactError(f"artifact '{artifact_dir}': '{key}': permission denied") from None
    if not stat.S_ISREG(st.st_mode):
        raise ArtifactError(f"artifact '{artifact_dir}': '{key}' is not a regular file")
    if "bytes" in entry and st.st_size != entry["bytes"]:
        raise ArtifactError(f"'{full}' is truncated or altered: {st.st_size} bytes, expected {entry['bytes']}")
    try:
        digest = _sha256(full)
    except PermissionError:
        raise ArtifactError(f"'{full}': permission denied (cannot read it to verify its sha256)") from None
    if digest != entry["sha256"]:
        raise ArtifactError(f"'{full}' is corrupt or was altered: its sha256 does not match {META_FILE} files[{key!r}]")
    return full


# ------------------------------------------------------------------------------------------------
# metadata validation
# ------------------------------------------------------------------------------------------------


def _non_finite(obj: Any, where: str) -> Optional[str]:
    """Dotted path of the first non-finite float (or over-deep nesting) in a JSON value."""
    stack = [(obj, where, 0)]
    while stack:
        x, w, depth = stack.pop()
        if depth > 64:
            return w + " (nested more than 64 levels)"
        if isinstance(x, float) and not math.isfinite(x):
            return w
        if isinstance(x, dict):
            stack.extend((v, f"{w}.{k}", depth + 1) for k, v in x.items())
        elif isinstance(x, list):
            stack.extend((v, f"{w}[{i}]", depth + 1) for i, v in enumerate(x))
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _validate_meta(meta: Dict[str, Any], mpath: str) -> None:
    def bad(field: str, expected: str, got: Any) -> ArtifactError:
        g = repr(got)
        return ArtifactError(f"'{mpath}': field '{field}' expected {expected}, got {g[:200]}")

    for key in ("config", "preprocessing"):
        if not isinstance(meta[key], dict):
            raise bad(key, "a JSON object", meta[key])
    for key in ("thresholds", "statistics", "exports"):
        if meta.get(key) is None:
            continue
        if not isinstance(meta[key], dict):
            raise bad(key, "a JSON object", meta[key])
    for key in ("config", "preprocessing", "thresholds", "statistics", "exports", "tensors", "files"):
        w = _non_finite(meta.get(key), key)
        if w is not None and w.endswith("levels)"):
            raise ArtifactError(f"'{mpath}': field '{w}' is nested too deeply")
        if w is not None:
            raise ArtifactError(f"'{mpath}': field '{w}' is not a finite number (NaN/inf are not allowed)")
    # thresholds: the active ones and the candidates are finite numbers
    th = meta.get("thresholds") or {}
    for kind in ("image", "pixel"):
        if th.get(kind) is not None and not _is_number(th[kind]):
            raise bad(f"thresholds.{kind}", "a finite number or null", th[kind])
    cands = th.get("candidates")
    if cands is not None:
        if not isinstance(cands, dict):
            raise bad("thresholds.candidates", "a JSON object", cands)
        for k, v in cands.items():
            vals = v.items() if isinstance(v, dict) else [(None, v)]
            for k2, v2 in vals:
                if v2 is not None and not _is_number(v2):
                    raise bad(f"thresholds.candidates.{k}" + (f".{k2}" if k2 is not None else ""), "a finite number", v2)
    # tensors: name -> {shape: [ints >= 0], dtype: str}
    tensors = meta["tensors"]
    if not isinstance(tensors, dict):
        raise bad("tensors", "a JSON object (name -> {shape, dtype})", tensors)
    for name, spec in tensors.items():
        f = f"tensors.{name}"
        if not isinstance(spec, dict):
            raise bad(f, "a JSON object {shape, dtype}", spec)
        if "shape" not in spec:
            raise ArtifactError(f"'{mpath}': field '{f}.shape' is missing")
        if "dtype" not in spec:
            raise ArtifactError(f"'{mpath}': field '{f}.dtype' is missing")
        if not isinstance(spec["shape"], list) or not all(_is_int(d) and d >= 0 for d in spec["shape"]):
            raise bad(f + ".shape", "a list of non-negative ints", spec["shape"])
        if spec["dtype"] not in _TENSOR_DTYPES:
            raise bad(f + ".dtype", f"one of {_TENSOR_DTYPES}", spec["dtype"])
    # files: relpath -> {sha256, bytes}; confined; the weights are always listed
    files = meta["files"]
    if not isinstance(files, dict):
        raise bad("files", "a JSON object (file -> {sha256, bytes})", files)
    for rel, info in files.items():
        f = f"files[{rel!r}]"
        _rel_parts(rel, f)
        if not isinstance(info, dict):
            raise bad(f, "a JSON object {sha256, bytes}", info)
        if not isinstance(info.get("sha256"), str) or not _SHA_RE.match(info["sha256"]):
            raise bad(f + ".sha256", "64 lower-case hex digits", info.get("sha256"))
        if "bytes" in info and not (_is_int(info["bytes"]) and info["bytes"] >= 0):
            raise bad(f + ".bytes", "a non-negative int", info["bytes"])
    if WEIGHTS_FILE not in files:
        raise ArtifactError(f"'{mpath}': field 'files[{WEIGHTS_FILE!r}]' is missing: the weights' checksum is required")
    # exports: every recorded file is inside the artifact and has a checksum in `files`
    for key, ex in (meta.get("exports") or {}).items():
        if ex is None:
            continue
        if not isinstance(ex, dict):
            raise bad(f"exports.{key}", "a JSON object", ex)
        if "file" in ex:
            _rel_parts(ex["file"], f"exports.{key}.file")
            if _files_key(ex["file"]) not in files:
                raise ArtifactError(f"'{mpath}': field 'files[{_files_key(ex['file'])!r}]' is missing: exports.{key}.file "
                                    "has no recorded checksum")
    _validate_preprocessing(meta, mpath, bad)
    _validate_config(meta, mpath, bad)


_PRE_KEYS = ("size", "channels", "mean", "std", "interpolation")
_INTERPOLATIONS = ("auto", "area", "linear", "cubic", "nearest")


def _validate_preprocessing(meta: Dict[str, Any], mpath: str, bad) -> None:
    """The fields Preprocessing.to_dict writes (explicit lists; present fields are checked)."""
    pre = meta["preprocessing"]
    unknown = sorted(set(pre) - set(_PRE_KEYS))
    if unknown:
        raise bad("preprocessing", f"only the fields {list(_PRE_KEYS)}", f"unknown field(s) {unknown}")
    size = pre.get("size")
    if "size" in pre and not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= 1 << 15 for v in size)):
        raise bad("preprocessing.size", "[h, w] ints in [1, 32768]", size)
    ch = pre.get("channels")
    if "channels" in pre and not (_is_int(ch) and ch in (1, 3)):
        raise bad("preprocessing.channels", "1 or 3", ch)
    for key in ("mean", "std"):
        if key not in pre:
            continue
        v = pre[key]
        n = ch if _is_int(ch) else None
        ok = isinstance(v, list) and len(v) >= 1 and (n is None or len(v) == n) and all(
            _is_number(x) and abs(x) < 1e30 for x in v)
        if ok and key == "std":
            ok = all(x > 1e-30 for x in v)
        if not ok:
            raise bad(f"preprocessing.{key}", f"a list of {n or 'channels'} finite numbers"
                      + (" > 0" if key == "std" else ""), v)
    if "interpolation" in pre and pre["interpolation"] not in _INTERPOLATIONS:
        raise bad("preprocessing.interpolation", f"one of {_INTERPOLATIONS}", pre["interpolation"])
    # the exported graph's fixed input size must be the pre-processing's output size
    shape = ((meta.get("exports") or {}).get("onnx") or {}).get("input_shape")
    if isinstance(shape, list) and len(shape) == 4 and isinstance(size, list) and len(size) == 2:
        if _is_int(shape[2]) and _is_int(shape[3]) and list(shape[2:]) != list(size):
            raise bad("preprocessing.size", f"the ONNX graph's input size {shape[2:]} (exports.onnx.input_shape)", size)
        if _is_int(shape[1]) and _is_int(ch) and shape[1] != ch:
            raise bad("preprocessing.channels", f"the ONNX graph's {shape[1]} input channels", ch)


def _validate_config(meta: Dict[str, Any], mpath: str, bad) -> None:
    """Per-model config values the torch-free runtime uses directly."""
    cfg = meta["config"]
    if meta["model_type"] == "patchcore":
        if "blur_sigma" in cfg and cfg["blur_sigma"] is not None:
            v = cfg["blur_sigma"]
            if not _is_number(v) or not 0.0 <= v <= MAX_BLUR_SIGMA:
                raise bad("config.blur_sigma", f"a number in [0, {MAX_BLUR_SIGMA:g}] (0 = no blur)", v)
        if "num_neighbors" in cfg and not (_is_int(cfg["num_neighbors"]) and 1 <= cfg["num_neighbors"] <= 1 << 20):
            raise bad("config.num_neighbors", "an int >= 1", cfg["num_neighbors"])
        if "grid" in cfg:
            g = cfg["grid"]
            if not (isinstance(g, list) and len(g) == 2 and all(_is_int(v) and 1 <= v <= 1 << 16 for v in g)):
                raise bad("config.grid", "[h, w] positive ints", g)
    if meta["model_type"] == "fader":  # the runtime passes these to ops.msgms_map
        c = cfg.get("msgms_c")
        if c is not None and not (_is_number(c) and 1.1754944e-38 <= c <= 3.4028234e38):
            raise bad("config.msgms_c", "a finite number > 0 representable in float32", c)
        sc = cfg.get("msgms_scales")
        if sc is not None and not (_is_int(sc) and 1 <= sc <= 8):
            raise bad("config.msgms_scales", "an int in [1, 8]", sc)
        mf = cfg.get("msgms_mean_filter")
        if mf is not None and not (_is_int(mf) and 1 <= mf <= 63 and mf % 2 == 1):
            raise bad("config.msgms_mean_filter", "an odd int in [1, 63]", mf)


def _validate_tensors(meta: Mapping[str, Any], tensors: Mapping[str, np.ndarray], wpath: str) -> None:
    """Tensor values the runtime indexes with or computes on directly."""
    for name, t in tensors.items():
        if t.dtype.kind == "f" and t.size and not np.isfinite(t).all():
            raise ArtifactError(f"'{wpath}': tensor '{name}' contains NaN or inf")
    if meta["model_type"] == "patchcore" and "bank_neighbors" in tensors:
        nb = tensors["bank_neighbors"]
        bank = tensors.get("memory_bank")
        m = int(bank.shape[0]) if bank is not None and bank.ndim >= 1 else 0
        if nb.dtype.kind not in "iu" or nb.ndim != 2 or nb.shape[0] != m:
            raise ArtifactError(f"'{wpath}': tensor 'bank_neighbors' expected int64 ({m}, b), got {nb.dtype} {nb.shape}")
        if nb.size and (int(nb.min()) < 0 or int(nb.max()) >= m):
            raise ArtifactError(f"'{wpath}': tensor 'bank_neighbors' holds indices outside [0, {m}) "
                                f"(min {int(nb.min())}, max {int(nb.max())})")


def _open_error(e: OSError, path: str, what: str) -> ArtifactError:
    if isinstance(e, PermissionError):
        return ArtifactError(f"cannot read {what} '{path}': permission denied (check the owner and mode of the "
                             "artifact directory and its files)")
    if isinstance(e, FileNotFoundError):
        return ArtifactError(f"{what} '{path}' is missing")
    return ArtifactError(f"cannot read {what} '{path}': {e}")


def read_meta(path: str) -> Dict[str, Any]:
    """Read and validate edgead.json only (cheap; no tensors)."""
    path = os.fspath(path)
    _recover_interrupted(os.path.abspath(path))
    mpath = os.path.join(path, META_FILE)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ArtifactError(f"artifact directory '{path}' does not exist") from None
    except PermissionError:
        raise ArtifactError(f"artifact directory '{path}': permission denied") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ArtifactError(f"artifact directory '{path}' does not exist (it is not a directory)")
    try:
        with open(mpath, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ArtifactError(f"'{mpath}' is not a regular file")
            raw = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise ArtifactError(f"'{path}' is not an edgead artifact: {META_FILE} is missing") from None
    except IsADirectoryError:
        raise ArtifactError(f"'{mpath}' is not a regular file") from None
    except OSError as e:
        raise _open_error(e, mpath, META_FILE) from None
    if len(raw) > MAX_META_BYTES:
        raise ArtifactError(f"'{mpath}' is larger than {MAX_META_BYTES} bytes; not an edgead metadata file")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"'{mpath}' is corrupt or truncated: {e}") from None
    except RecursionError:
        raise ArtifactError(f"'{mpath}' is corrupt: JSON nested too deeply") from None
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
    if not isinstance(meta["model_type"], str) or meta["model_type"] not in MODEL_TYPES:
        raise ArtifactError(f"'{mpath}': model_type expected one of {MODEL_TYPES}, got {meta['model_type']!r}")
    _validate_meta(meta, mpath)
    return meta


def load_artifact(path: str, verify_checksum: bool = True) -> Artifact:
    """Load and validate an artifact (version, checksums, tensor names/shapes/dtypes/values, config). No pickle, no torch."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = os.path.abspath(path)
    meta = read_meta(path)
    if verify_checksum:
        wpath = verified_path(path, WEIGHTS_FILE, meta=meta)
    else:
        wpath = confined_path(path, WEIGHTS_FILE, WEIGHTS_FILE)
        finfo = meta["files"][WEIGHTS_FILE]
        try:
            size = os.path.getsize(wpath)
        except OSError as e:
            raise _open_error(e, wpath, WEIGHTS_FILE) from None
        if "bytes" in finfo and size != finfo["bytes"]:
            raise ArtifactError(f"'{wpath}' is truncated or altered: {size} bytes, expected {finfo['bytes']}")
    try:
        tensors = load_file(wpath)
    except PermissionError as e:
        raise _open_error(e, wpath, WEIGHTS_FILE) from None
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
    _validate_tensors(meta, tensors, wpath)
    return Artifact(
        path=path,
        model_type=meta["model_type"],
        config=meta["config"],
        preprocessing=meta["preprocessing"],
        tensors=tensors,
        thresholds=meta.get("thresholds") or {},
        statistics=meta.get("statistics") or {},
        meta=meta,
    )


def update_meta(path: str, **fields: Any) -> Dict[str, Any]:
    """Update top-level JSON fields (e.g. thresholds, statistics, files of exports) in place, atomically."""
    meta = read_meta(path)
    for k, v in fields.items():
        if k in ("format_version", "model_type", "tensors"):
            raise ValueError(f"update_meta: field '{k}' cannot be changed")
        meta[k] = _jsonable(v)
    _validate_meta(meta, os.path.join(path, META_FILE))
    mpath = os.path.join(path, META_FILE)
    tmp = os.path.join(path, f".edgead-meta-{os.getpid()}-{secrets.token_hex(6)}")
    try:
        _write_json(tmp, meta)  # created with the umask's mode (mkstemp forced 0600)
        try:
            shutil.copymode(mpath, tmp)  # keep the mode the file had
        except OSError:  # pragma: no cover
            pass
        os.replace(tmp, mpath)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_path(path)
    return meta


def record_export(artifact_dir: str, key: str, path: str, info: Mapping[str, Any]) -> Dict[str, Any]:
    """Record an exported file (ONNX graph, quantized graph, engine, ...) in the artifact's metadata.

    Sets exports[key] = {file, sha256, bytes, **info, created} and lists the file in `files`
    (checksummed like the weights). Only files inside the artifact directory are recorded: edgead.json
    never points outside its directory, so a file written elsewhere (``--out``) is a standalone export
    and the artifact's metadata is returned unchanged.
    """
    artifact_dir = os.path.abspath(artifact_dir)
    root = os.path.realpath(artifact_dir)
    real = os.path.realpath(path)
    meta = read_meta(artifact_dir)
    if os.path.commonpath([root, real]) != root or real == root:
        return meta
    rel = os.path.relpath(real, root).replace(os.sep, "/")
    sha = _sha256(path)
    size = os.path.getsize(path)
    files = dict(meta.get("files", {}))
    files[rel] = {"sha256": sha, "bytes": size}
    exports = dict(meta.get("exports", {}) or {})
    exports[key] = {"file": rel, "sha256": sha, "bytes": size, **dict(info),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    return update_meta(artifact_dir, files=files, exports=exports)


def record_file(artifact_dir: str, path: str) -> Optional[str]:
    """List a file inside the artifact directory (e.g. a TensorRT engine) in `files` with its sha256.
    Returns its relative name, or None when `path` is outside the artifact directory (not recorded)."""
    artifact_dir = os.path.abspath(artifact_dir)
    root = os.path.realpath(artifact_dir)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or real == root:
        return None
    rel = os.path.relpath(real, root).replace(os.sep, "/")
    meta = read_meta(artifact_dir)
    files = dict(meta.get("files", {}))
    files[rel] = {"sha256": _sha256(path), "bytes": os.path.getsize(path)}
    update_meta(artifact_dir, files=files)
    return rel


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
    record_export (relative to the artifact directory), or the default name when none is recorded.
    Confined to the artifact directory (ArtifactError otherwise); open it through :func:`verified_path`."""
    if key not in EXPORT_FILES:
        raise ValueError(f"export_file: argument 'key' expected one of {sorted(EXPORT_FILES)}, got {key!r}")
    meta = meta_or_artifact.meta if isinstance(meta_or_artifact, Artifact) else meta_or_artifact
    rel = ((meta.get("exports") or {}).get(key) or {}).get("file", EXPORT_FILES[key])
    return confined_path(artifact_dir, rel, f"exports.{key}.file")  # never outside the artifact directory


def engines_dir(artifact_dir: str) -> str:
    """Folder of the artifact's cached TensorRT engines (<artifact>/engines)."""
    return os.path.join(os.path.abspath(artifact_dir), ENGINES_DIR)
