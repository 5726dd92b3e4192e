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
