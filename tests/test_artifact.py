import json
import os
import subprocess
import sys

import numpy as np
import pytest

from edgead.artifact import ArtifactError, load_artifact, read_meta, save_artifact, update_meta


def _save(path, **kw):
    tensors = kw.pop("tensors", {"bank": np.arange(12, dtype=np.float32).reshape(3, 4), "idx": np.array([1, 2], np.int64)})
    return save_artifact(
        str(path), "patchcore", {"k": 1}, {"size": [8, 8], "channels": 3}, tensors,
        thresholds={"image": 0.5}, statistics={"val_max": 0.4}, **kw,
    )


def test_round_trip(tmp_path):
    p = _save(tmp_path / "a")
    art = load_artifact(p)
    assert art.model_type == "patchcore"
    assert art.config == {"k": 1}
    assert art.thresholds == {"image": 0.5}
    np.testing.assert_array_equal(art.tensors["bank"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert art.tensors["idx"].dtype == np.int64
    assert art.meta["tensors"]["bank"] == {"shape": [3, 4], "dtype": "float32"}


def test_update_meta_changes_thresholds_only(tmp_path):
    p = _save(tmp_path / "a")
    update_meta(p, thresholds={"image": 0.7})
    assert load_artifact(p).thresholds == {"image": 0.7}
    with pytest.raises(ValueError, match="tensors"):
        update_meta(p, tensors={})


def test_truncated_weights_raise(tmp_path):
    p = _save(tmp_path / "a")
    w = os.path.join(p, "weights.safetensors")
    data = open(w, "rb").read()
    open(w, "wb").write(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        load_artifact(p)


def test_corrupt_weights_raise(tmp_path):
    p = _save(tmp_path / "a")
    w = os.path.join(p, "weights.safetensors")
    data = bytearray(open(w, "rb").read())
    data[-1] ^= 0xFF
    open(w, "wb").write(bytes(data))
    with pytest.raises(ArtifactError, match="corrupt"):
        load_artifact(p)


def test_corrupt_json_and_version(tmp_path):
    p = _save(tmp_path / "a")
    m = os.path.join(p, "edgead.json")
    meta = json.load(open(m))
    meta["format_version"] = 99
    json.dump(meta, open(m, "w"))
    with pytest.raises(ArtifactError, match="format_version 99"):
        read_meta(p)
    open(m, "w").write('{"format_version": 1, "model_')
    with pytest.raises(ArtifactError, match="corrupt or truncated"):
        load_artifact(p)


def test_shape_mismatch_in_meta(tmp_path):
    p = _save(tmp_path / "a")
    m = os.path.join(p, "edgead.json")
    meta = json.load(open(m))
    meta["tensors"]["bank"]["shape"] = [4, 3]
    json.dump(meta, open(m, "w"))
    with pytest.raises(ArtifactError, match="bank"):
        load_artifact(p)


def test_missing_dir_and_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(str(tmp_path / "nope"))
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "precious.txt").write_text("data")
    with pytest.raises(ArtifactError, match="refusing"):
        _save(tmp_path / "user")
    assert (tmp_path / "user" / "precious.txt").read_text() == "data"
    with pytest.raises(ArtifactError, match="not an edgead artifact"):
        load_artifact(str(tmp_path / "user"))


def test_overwrite_replaces_and_nan_rejected(tmp_path):
    p = _save(tmp_path / "a")
    _save(tmp_path / "a", tensors={"bank": np.ones((2, 2), np.float32)})
    assert load_artifact(p).tensors["bank"].shape == (2, 2)
    with pytest.raises(ArtifactError, match="exists"):
        _save(tmp_path / "a", overwrite=False)
    with pytest.raises(ValueError, match="NaN"):
        _save(tmp_path / "b", tensors={"bank": np.array([np.nan], np.float32)})
    assert not (tmp_path / "b").exists()
    assert [f for f in os.listdir(tmp_path) if f.startswith(".edgead")] == []


def test_bad_model_type(tmp_path):
    with pytest.raises(ValueError, match="model_type"):
        save_artifact(str(tmp_path / "a"), "unknown", {}, {}, {})


def test_loading_does_not_import_torch(tmp_path):
    p = _save(tmp_path / "a")
    code = f"import sys; from edgead.artifact import load_artifact; load_artifact({p!r}); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------
# bad-input probe defects (issue 11, item 7): each test failed before its fix
# ------------------------------------------------------------------------------------------------
import stat as _stat  # noqa: E402
import time as _time  # noqa: E402

import edgead.artifact as artifact_mod  # noqa: E402
from edgead.artifact import record_export  # noqa: E402


def _edit_meta(p, fn):
    mpath = os.path.join(p, "edgead.json")
    with open(mpath) as f:
        meta = json.load(f)
    fn(meta)
    with open(mpath, "w") as f:
        json.dump(meta, f)


def _with_export(tmp_path, name="model.onnx", data=b"onnx graph bytes"):
    p = _save(tmp_path / "a")
    with open(os.path.join(p, name), "wb") as f:
        f.write(data)
    record_export(p, "onnx", os.path.join(p, name), {"opset": 17})
    return p


def test_verified_path_accepts_recorded_file(tmp_path):
    p = _with_export(tmp_path)
    assert artifact_mod.verified_path(p, "model.onnx") == os.path.join(p, "model.onnx")
    assert load_artifact(p).verified_file("model.onnx") == os.path.join(p, "model.onnx")


def test_tampered_export_is_rejected(tmp_path):
    """A swapped model.onnx (same size) was used silently: only the weights were verified."""
    p = _with_export(tmp_path)
    with open(os.path.join(p, "model.onnx"), "r+b") as f:
        f.write(b"ONNX")
    with pytest.raises(ArtifactError, match="sha256"):
        artifact_mod.verified_path(p, "model.onnx")


def test_deleting_checksum_entry_does_not_disable_verification(tmp_path):
    p = _with_export(tmp_path)
    _edit_meta(p, lambda m: m["files"].pop("model.onnx"))
    with pytest.raises(ArtifactError, match="model.onnx"):
        read_meta(p)
    with pytest.raises(ArtifactError, match="model.onnx"):
        artifact_mod.verified_path(p, "model.onnx", meta={"files": {}})
    q = _save(tmp_path / "b")
    _edit_meta(q, lambda m: m["files"].pop("weights.safetensors"))
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        load_artifact(q)
    _edit_meta(q, lambda m: m.__setitem__("files", {}))
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        load_artifact(q)


@pytest.mark.parametrize("bad", ["../x.onnx", "/etc/passwd", "sub/../../x.onnx", "..", "", "a\x00b"])
def test_export_paths_confined_to_artifact_dir(tmp_path, bad):
    p = _with_export(tmp_path)
    (tmp_path / "x.onnx").write_bytes(b"outside")

    def edit(m):
        m["exports"]["onnx"]["file"] = bad
        m["files"][bad] = m["files"]["model.onnx"]
    _edit_meta(p, edit)
    with pytest.raises(ArtifactError, match="exports.onnx.file|files\\["):
        read_meta(p)
    with pytest.raises(ArtifactError):
        artifact_mod.confined_path(p, bad, "exports.onnx.file")


def test_symlink_leaving_artifact_dir_rejected(tmp_path):
    p = _with_export(tmp_path)
    (tmp_path / "outside.onnx").write_bytes(b"onnx graph bytes")
    os.remove(os.path.join(p, "model.onnx"))
    os.symlink(str(tmp_path / "outside.onnx"), os.path.join(p, "model.onnx"))
    with pytest.raises(ArtifactError, match="outside the artifact"):
        artifact_mod.verified_path(p, "model.onnx")


def test_export_file_outside_rejected(tmp_path):
    p = _with_export(tmp_path)
    meta = read_meta(p)
    for bad in ("/etc/passwd", "../x.onnx"):
        meta["exports"]["onnx"]["file"] = bad
        with pytest.raises(ArtifactError, match="exports.onnx.file"):
            artifact_mod.export_file(meta, p, "onnx")


def test_record_export_outside_dir_not_recorded(tmp_path):
    p = _save(tmp_path / "a")
    out = tmp_path / "elsewhere.onnx"
    out.write_bytes(b"x")
    meta = record_export(p, "onnx", str(out), {})
    assert "exports" not in meta or "onnx" not in (meta["exports"] or {})
    assert all(not os.path.isabs(k) for k in read_meta(p)["files"])


@pytest.mark.parametrize("field,value,match", [
    (("thresholds", "image"), float("nan"), "thresholds.image"),
    (("thresholds", "pixel"), float("inf"), "thresholds.pixel"),
    (("thresholds", "image"), "0.5", "thresholds.image"),
    (("thresholds", "candidates"), {"image_f1": float("nan")}, "thresholds.candidates"),
    (("statistics", "val_max"), float("-inf"), "statistics.val_max"),
    (("config", "blur_sigma"), 1e6, "config.blur_sigma"),
    (("config", "blur_sigma"), -1.0, "config.blur_sigma"),
    (("config", "blur_sigma"), float("nan"), "config.blur_sigma"),
    (("config", "num_neighbors"), -3, "config.num_neighbors"),
    (("config", "grid"), [0, 4], "config.grid"),
])
def test_non_finite_and_out_of_range_values_rejected(tmp_path, field, value, match):
    p = _save(tmp_path / "a")

    def edit(m):
        m.setdefault(field[0], {})[field[1]] = value
    _edit_meta(p, edit)  # json.dump writes NaN / Infinity literals
    with pytest.raises(ArtifactError, match=match.replace(".", r"\.")):
        load_artifact(p)


@pytest.mark.parametrize("key,value", [("msgms_c", 1e-46), ("msgms_c", 1e39), ("msgms_scales", 3.9),
                                       ("msgms_scales", 0), ("msgms_mean_filter", 2), ("msgms_mean_filter", True)])
def test_fader_msgms_config_validated_on_load(tmp_path, key, value):
    p = save_artifact(str(tmp_path / "f"), "fader", {key: value}, {"size": [8, 8], "channels": 3},
                      {"w": np.zeros(2, np.float32)})
    with pytest.raises(ArtifactError, match=f"config\\.{key}"):
        load_artifact(p)


def _save_patchcore(path, neighbors):
    bank = np.arange(12, dtype=np.float32).reshape(4, 3)
    return save_artifact(str(path), "patchcore", {"blur_sigma": 4.0, "num_neighbors": 2, "grid": [2, 2]},
                         {"size": [8, 8], "channels": 3},
                         {"memory_bank": bank, "bank_neighbors": np.asarray(neighbors, np.int64)})


@pytest.mark.parametrize("neighbors", [[[0, -1], [1, 0], [2, 1], [3, 2]], [[0, 1], [1, 2**40], [2, 1], [3, 2]],
                                       [[0, 4], [1, 0], [2, 1], [3, 2]]])
def test_bank_neighbors_out_of_range_rejected_on_load(tmp_path, neighbors):
    p = _save_patchcore(tmp_path / "a", neighbors)
    with pytest.raises(ArtifactError, match="bank_neighbors"):
        load_artifact(p)


def test_valid_patchcore_tensors_load(tmp_path):
    p = _save_patchcore(tmp_path / "a", [[0, 1], [1, 0], [2, 1], [3, 2]])
    assert load_artifact(p).tensors["bank_neighbors"].shape == (4, 2)


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.__setitem__("files", ["weights.safetensors"]), "'files'"),
    (lambda m: m["files"].__setitem__("weights.safetensors", "abc"), "weights.safetensors"),
    (lambda m: m["files"]["weights.safetensors"].__setitem__("sha256", 5), "sha256"),
    (lambda m: m["tensors"]["bank"].pop("dtype"), r"tensors\.bank\.dtype"),
    (lambda m: m["tensors"]["bank"].pop("shape"), r"tensors\.bank\.shape"),
    (lambda m: m["tensors"].__setitem__("bank", [3, 4]), r"tensors\.bank"),
    (lambda m: m.__setitem__("tensors", []), "'tensors'"),
    (lambda m: m.__setitem__("thresholds", [0.5]), "'thresholds'"),
    (lambda m: m.__setitem__("config", "x"), "'config'"),
    (lambda m: m.__setitem__("exports", {"onnx": "model.onnx"}), r"exports\.onnx"),
    (lambda m: m.__setitem__("model_type", ["patchcore"]), "model_type"),
])
def test_malformed_structure_is_artifact_error(tmp_path, edit, match):
    p = _save(tmp_path / "a")
    _edit_meta(p, edit)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(p)


def test_deeply_nested_json_is_artifact_error(tmp_path):
    p = _save(tmp_path / "a")
    with open(os.path.join(p, "edgead.json"), "w") as f:
        f.write("[" * 100000 + "]" * 100000)
    with pytest.raises(ArtifactError, match="nested|edgead.json"):
        read_meta(p)
    with open(os.path.join(p, "edgead.json"), "w") as f:
        f.write('{"format_version": 1, "model_type": "patchcore", "config": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(ArtifactError):
        read_meta(p)


def _umask(mask):
    old = os.umask(mask)
    return old


def test_save_honours_umask(tmp_path):
    """Artifacts were created 0700/0600 whatever the umask: a service account could not read them."""
    old = os.umask(0o022)
    try:
        p = _save(tmp_path / "a")
        update_meta(p, thresholds={"image": 0.7})
    finally:
        os.umask(old)
    assert _stat.S_IMODE(os.stat(p).st_mode) == 0o755
    for name in ("edgead.json", "weights.safetensors"):
        assert _stat.S_IMODE(os.stat(os.path.join(p, name)).st_mode) == 0o644, name


def test_permission_denied_is_named(tmp_path, monkeypatch):
    """A load that fails on permissions said 'edgead.json is missing'."""
    p = _save(tmp_path / "a")
    real_open = open

    def deny(path, *a, **k):
        if str(path).endswith("edgead.json"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(artifact_mod, "open", deny, raising=False)
    with pytest.raises(ArtifactError, match="permission denied"):
        load_artifact(p)


def test_stale_tmp_dirs_are_cleaned(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".edgead-tmp-{dead.pid}-abcdef"
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"x")
    legacy = tmp_path / ".edgead-tmp-k3j4h5"
    legacy.mkdir()
    old = _time.time() - 7200
    os.utime(legacy, (old, old))
    live = tmp_path / f".edgead-tmp-{os.getppid()}-abcdef"  # a live process's save in progress
    live.mkdir()
    _save(tmp_path / "a")
    left = sorted(f for f in os.listdir(tmp_path) if f.startswith(".edgead"))
    assert left == [live.name]


_KILL_SCRIPT = r"""
import os, shutil, signal, sys
import numpy as np
from edgead.artifact import save_artifact
path, kill_at = sys.argv[1], int(sys.argv[2])
calls = [0]

def killing(fn):
    def wrapper(*a, **k):
        calls[0] += 1
        if calls[0] == kill_at:  # SIGKILL: no except/finally handler runs
            os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **k)
    return wrapper

for mod, name in ((os, "rename"), (os, "replace"), (os, "mkdir"), (os, "fsync"), (shutil, "rmtree")):
    setattr(mod, name, killing(getattr(mod, name)))
save_artifact(path, "patchcore", {"v": 1}, {"size": [8, 8], "channels": 3},
              {"bank": np.full((64, 16), 1.0, np.float32)})
print("calls", calls[0])
"""


def test_killed_save_leaves_old_or_new_artifact(tmp_path):
    """A save killed between its two renames left no artifact at the path, and killed saves left
    .edgead-tmp-* directories that were never cleaned. Kill the saving process (SIGKILL) at every
    file-system step in turn: the path must always hold the old or the new artifact."""
    path = str(tmp_path / "art")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(artifact_mod.__file__)),
                                         env.get("PYTHONPATH", "")])  # the edgead under test
    outcomes = set()
    for kill_at in range(1, 30):
        save_artifact(path, "patchcore", {"v": 0}, {"size": [8, 8], "channels": 3},
                      {"bank": np.zeros((64, 16), np.float32)})
        proc = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, path, str(kill_at)], env=env,
                              capture_output=True, text=True)
        art = load_artifact(path)  # old or new, never missing or half-written
        outcomes.add(art.config["v"])
        if proc.returncode == 0:  # the save finished before the kill_at-th step: every step was covered
            break
        assert proc.returncode == -9, proc.stderr
    else:
        pytest.fail("the save never completed")
    assert outcomes == {0, 1}
    save_artifact(path, "patchcore", {"v": 2}, {"size": [8, 8], "channels": 3}, {"bank": np.zeros((2, 2), np.float32)})
    assert [f for f in os.listdir(tmp_path) if f.startswith(".edgead") or f.endswith(".edgead-old")] == []
    assert load_artifact(path).config["v"] == 2


def test_detector_load_rejects_tampered_onnx(tmp_path):
    """Detector.load verified only the weights: a swapped model.onnx reached ONNX Runtime."""
    pytest.importorskip("onnxruntime")
    from edgead.runtime.detector import Detector

    p = _with_export(tmp_path)
    with open(os.path.join(p, "model.onnx"), "r+b") as f:
        f.write(b"XXXX")
    with pytest.raises(ArtifactError, match="sha256"):
        Detector.load(p, backend="onnxruntime", device="cpu")
    _edit_meta(p, lambda m: m["exports"]["onnx"].__setitem__("file", "../x.onnx"))
    with pytest.raises(ArtifactError, match="exports.onnx.file|outside"):
        Detector.load(p, backend="onnxruntime", device="cpu")


def test_engine_inside_artifact_is_verified(tmp_path):
    from edgead.runtime import detector as det

    p = _save(tmp_path / "a")
    os.makedirs(os.path.join(p, "engines"))
    eng = os.path.join(p, "engines", "x.engine")
    with open(eng, "wb") as f:
        f.write(b"engine bytes")
    with pytest.raises(ArtifactError, match="engines/x.engine"):  # not recorded: cannot be verified
        det._verified_engine(p, eng)
    assert artifact_mod.record_file(p, eng) == "engines/x.engine"
    assert det._verified_engine(p, eng) == eng
    with open(eng, "r+b") as f:
        f.write(b"ENGINE")
    with pytest.raises(ArtifactError, match="sha256"):
        det._verified_engine(p, eng)
    other = tmp_path / "mine.engine"  # an engine file the caller names outside the artifact is theirs
    other.write_bytes(b"x")
    assert det._verified_engine(p, str(other)) == str(other)


def test_fallback_without_rename_exchange_recovers_old(tmp_path, monkeypatch):
    """Filesystems without RENAME_EXCHANGE: a save interrupted between its two renames leaves the old
    artifact at <path>.edgead-old; the next load (or save) puts it back."""
    path = str(tmp_path / "art")
    _save(path)
    monkeypatch.setattr(artifact_mod, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def rename(a, b):
        calls.append((a, b))
        if len(calls) == 2:  # the interruption between 'path -> old' and 'tmp -> path'
            raise KeyboardInterrupt
        return real_rename(a, b)

    monkeypatch.setattr(artifact_mod.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        _save(path, tensors={"bank": np.ones((2, 2), np.float32)})
    monkeypatch.setattr(artifact_mod.os, "rename", real_rename)
    assert not os.path.exists(path) and os.path.isdir(path + ".edgead-old")
    art = load_artifact(path)  # restored: the old artifact
    assert art.tensors["bank"].shape == (3, 4)
    _save(path, tensors={"bank": np.ones((2, 2), np.float32)})  # fallback save completes
    assert load_artifact(path).tensors["bank"].shape == (2, 2)
    assert [f for f in os.listdir(tmp_path) if "edgead" in f] == []


@pytest.mark.parametrize("key,value", [("size", [1, 2, 3]), ("size", "x"), ("channels", 2), ("mean", None),
                                       ("mean", -1), ("mean", [1e308, 0, 0]), ("std", [0.2, 0.0, 0.2]),
                                       ("interpolation", "bogus"), ("extra", 1)])
def test_preprocessing_validated_on_load(tmp_path, key, value):
    """A null / scalar / overflowing mean was accepted (defaults or inf in float32, NaN maps later)."""
    p = _save(tmp_path / "a")
    _edit_meta(p, lambda m: m["preprocessing"].__setitem__(key, value))
    with pytest.raises(ArtifactError, match="preprocessing"):
        load_artifact(p)


def test_preprocessing_size_must_match_onnx_input(tmp_path):
    p = _with_export(tmp_path)
    _edit_meta(p, lambda m: m["exports"]["onnx"].__setitem__("input_shape", [None, 3, 8, 8]))
    load_artifact(p)
    _edit_meta(p, lambda m: m["preprocessing"].__setitem__("size", [1, 2]))
    with pytest.raises(ArtifactError, match=r"preprocessing\.size"):
        load_artifact(p)
