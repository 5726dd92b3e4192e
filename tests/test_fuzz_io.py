"""Fuzzing the file-reading paths with corrupted bytes (hypothesis): image decoding, dataset loading and
artifact loading (load_artifact and the ONNX Runtime Detector).

Property: never a crash, never a hang, and only the documented exceptions -- edgead.data.io.ImageReadError
naming the file for images; ImageReadError / ValueError for datasets; edgead.artifact.ArtifactError
(or the runtime's ExportMissingError) for artifacts. Files whose bytes the artifact records (weights,
model.onnx) must be rejected when altered, never used silently. Every call runs under an address-space
limit (current + 3 GiB, restored afterwards), so a decompression bomb fails the test with a MemoryError
instead of exhausting a shared machine.

Bounded for CI like test_fuzz_ops (EDGEAD_FUZZ_EXAMPLES, derandomized).
"""
import contextlib
import json
import os
import resource
import shutil
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgead.artifact import ArtifactError, load_artifact
from edgead.data.io import ImageReadError, read_image, read_mask

from _tiny import build_tiny_artifact, tiny_images

N_EXAMPLES = int(os.environ.get("EDGEAD_FUZZ_EXAMPLES", "60"))
DERANDOMIZE = os.environ.get("EDGEAD_FUZZ_RANDOM", "0") != "1"
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)


@contextlib.contextmanager
def memory_limit(extra=3 << 30):
    """RLIMIT_AS soft limit = current virtual size + extra (hard limit untouched, so it can be restored)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    new = vm + extra if hard == resource.RLIM_INFINITY else min(vm + extra, hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ------------------------------------------------------------------------------------------------
# byte mutations
# ------------------------------------------------------------------------------------------------
def _png_chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def png_claiming(width, height):
    """A tiny, valid-looking PNG whose header claims width x height (CRC correct, data truncated)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(data, width, height):
    """`data` (a JPEG) with its SOF0/SOF2 frame size replaced."""
    b = bytearray(data)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = b.find(marker)
        if i >= 0:
            b[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(b)


@st.composite
def mutated(draw, data: bytes):
    kind = draw(st.sampled_from(["flip", "flip", "set", "truncate", "insert", "delete", "splice", "empty", "same"]))
    b = bytearray(data)
    if kind == "empty":
        return b""
    if kind == "same" or not b:
        return bytes(b)
    n = len(b)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, n - 1))
            b[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set":
        i = draw(st.integers(0, n - 1))
        chunk = draw(st.binary(min_size=1, max_size=16))
        b[i : i + len(chunk)] = chunk
    elif kind == "truncate":
        b = b[: draw(st.integers(0, n - 1))]
    elif kind == "insert":
        i = draw(st.integers(0, n))
        b[i:i] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        i = draw(st.integers(0, n - 1))
        del b[i : i + draw(st.integers(1, 64))]
    else:  # splice: repeat a block
        i = draw(st.integers(0, n - 1))
        j = draw(st.integers(i, min(n, i + 256)))
        b[j:j] = b[i:j]
    return bytes(b)


def _encoded_images():
    g = np.random.default_rng(0)
    rgb = g.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    grey = g.integers(0, 256, (17, 12), dtype=np.uint8)
    out = {}
    for ext, img in ((".png", rgb), (".jpg", rgb), (".bmp", grey), (".tiff", rgb), (".png", grey.astype(np.uint16) * 257)):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        out[f"{ext}-{img.dtype}-{img.ndim}"] = (ext, buf.tobytes())
    return out


ENCODED = _encoded_images()


def check_image_result(img, path):
    assert isinstance(img, np.ndarray) and img.dtype in (np.uint8, np.uint16), (path, getattr(img, "dtype", None))
    assert img.ndim in (2, 3) and min(img.shape[:2]) > 0
    if img.ndim == 3:
        assert img.shape[2] == 3


@FUZZ
@given(st.data())
def test_fuzz_image_decoding(tmp_path_factory, data):
    key = data.draw(st.sampled_from(sorted(ENCODED)), label="format")
    ext, raw = ENCODED[key]
    blob = data.draw(mutated(raw), label="bytes")
    path = str(tmp_path_factory.mktemp("img") / f"x{ext}")
    with open(path, "wb") as f:
        f.write(blob)
    reader = data.draw(st.sampled_from(["read_image", "read_mask"]), label="reader")
    with memory_limit():
        try:
            img = read_image(path) if reader == "read_image" else read_mask(path)
        except ImageReadError as e:
            assert "x" + ext in str(e), f"error does not name the file: {e}"
            return
        except ValueError as e:  # read_mask's documented non-binary/threshold errors name the file too
            assert reader == "read_mask" and "x" + ext in str(e), f"{type(e).__name__}: {e}"
            return
    if reader == "read_image":
        check_image_result(img, path)
    else:
        assert img.dtype == np.bool_ and img.ndim == 2


@pytest.mark.parametrize("claim", [(30000, 30000), (65535, 65535), (1, 2**31 - 1), (100000, 1)])
def test_image_header_claiming_a_huge_size_is_refused_without_allocating(tmp_path, claim):
    """A few hundred bytes claiming gigapixels: ImageReadError naming the file, not a MemoryError or a
    multi-GB allocation (the address-space limit turns such an allocation into a failure here)."""
    cases = [("bomb.png", png_claiming(*claim))]
    if max(claim) <= 65535:  # JPEG frame sizes are 16-bit
        cases.append(("bomb.jpg", jpeg_claiming(ENCODED[".jpg-uint8-3"][1], *claim)))
    for name, blob in cases:
        p = str(tmp_path / name)
        with open(p, "wb") as f:
            f.write(blob)
        with memory_limit(1 << 30):
            with pytest.raises(ImageReadError, match=name.replace(".", r"\.")) as e:
                read_image(p)
        # refused for its size (the message reports the header's claim), not a failed allocation
        assert str(claim[0]) in str(e.value) and str(claim[1]) in str(e.value), str(e.value)


def test_special_files_are_refused(tmp_path):
    """A FIFO (would block forever) and a character device (endless bytes) are not regular files."""
    import threading

    fifo = str(tmp_path / "pipe.png")
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_image(fifo)
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - judged below
            outcome.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # blocked in open(): unblock it with a writer that closes at once (EOF), then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("read_image blocked on a FIFO")
    assert isinstance(outcome[0], ImageReadError) and "pipe" in str(outcome[0]), outcome
    with memory_limit(1 << 30):
        if os.path.exists("/dev/zero"):
            with pytest.raises(ImageReadError, match="zero"):
                read_image("/dev/zero")


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------
def _tiny_mvtec(root):
    g = np.random.default_rng(1)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for sub in ("train/good", "test/good", "test/spot"):
        for i in range(2):
            cv2.imwrite(os.path.join(root, sub, f"{i:03d}.png"), g.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for i in range(2):
        m = np.zeros((16, 16), np.uint8)
        m[4:9, 5:10] = 255
        cv2.imwrite(os.path.join(root, "ground_truth/spot", f"{i:03d}_mask.png"), m)
    return root


DATASET_FILES = ["train/good/000.png", "test/good/001.png", "test/spot/000.png", "ground_truth/spot/000_mask.png",
                 "ground_truth/spot/001_mask.png"]


@FUZZ
@given(st.data())
def test_fuzz_dataset_loading(tmp_path_factory, data):
    from edgead.data import open_dataset
    from edgead.data.datasets import load_mask

    root = _tiny_mvtec(str(tmp_path_factory.mktemp("ds") / "cat"))
    target = os.path.join(root, data.draw(st.sampled_from(DATASET_FILES), label="file"))
    action = data.draw(st.sampled_from(["bytes", "bytes", "delete", "directory", "resize", "extra_file"]), label="action")
    if action == "bytes":
        with open(target, "rb") as f:
            raw = f.read()
        with open(target, "wb") as f:
            f.write(data.draw(mutated(raw), label="bytes"))
    elif action == "delete":
        os.remove(target)
    elif action == "directory":
        os.remove(target)
        os.makedirs(target)
    elif action == "resize":
        cv2.imwrite(target, np.full((7, 9), 255, np.uint8))
    else:
        with open(os.path.join(os.path.dirname(target), "notes.txt"), "w") as f:
            f.write("not an image")
    with memory_limit():
        try:
            ds = open_dataset(root)
            samples = list(ds.train_samples()) + list(ds.test_samples())
            for s in samples:
                img = read_image(s.path)
                check_image_result(img, s.path)
                m = load_mask(s, img.shape)
                assert m.dtype == np.bool_ and m.shape == img.shape[:2]
        except ImageReadError as e:
            assert root in str(e) or os.path.basename(target) in str(e), f"error names no file: {e}"
        except (ValueError, FileNotFoundError) as e:  # documented: missing masks, size mismatch, bad layout
            assert os.sep in str(e) or "mask" in str(e), f"{type(e).__name__} names no file: {e}"


# ------------------------------------------------------------------------------------------------
# artifacts
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    path = build_tiny_artifact(str(tmp_path_factory.mktemp("tiny") / "art"))
    from edgead.runtime import Detector

    img = tiny_images(1, seed=3)[0]
    ref = Detector.load(path, backend="onnxruntime", device="cpu")(img)
    return path, img, ref


JSON_VALUES = st.sampled_from([None, True, 0, -1, 1e308, float("nan"), float("inf"), "", "x", "../model.onnx",
                               "/etc/passwd", [], [1, 2], {}, {"a": 1}])
JSON_PATHS = [("thresholds", "image"), ("thresholds", "pixel"), ("thresholds",), ("files",), ("files", "weights.safetensors"),
              ("files", "weights.safetensors", "sha256"), ("files", "model.onnx"), ("files", "model.onnx", "sha256"),
              ("tensors",), ("exports", "onnx", "file"), ("exports", "onnx", "sha256"), ("exports",), ("config",),
              ("config", "msgms_scales"), ("config", "msgms_mean_filter"), ("config", "msgms_c"), ("config", "image_size"),
              ("preprocessing",), ("preprocessing", "size"), ("preprocessing", "mean"), ("model_type",), ("format_version",)]


def _set(meta, keys, value, delete):
    d = meta
    for k in keys[:-1]:
        if not isinstance(d, dict) or k not in d:
            return False
        d = d[k]
    if not isinstance(d, dict):
        return False
    if delete:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value
    return True


def _load_detector(path):
    from edgead.runtime import Detector

    return Detector.load(path, backend="onnxruntime", device="cpu")


DOCUMENTED = (ArtifactError,)


def _documented_runtime_errors():
    """ArtifactError (a ValueError), the runtime's ExportMissingError, or a ValueError/TypeError that
    names the offending field (checked by the callers): the brief's 'clear exception naming the argument'."""
    from edgead.runtime.detector import ExportMissingError

    return (ArtifactError, ExportMissingError, ValueError, TypeError)


@FUZZ
@given(st.data())
def test_fuzz_artifact_files(tiny_artifact, tmp_path_factory, data):
    """Corrupted bytes in any artifact file: load_artifact and Detector.load reject it (ArtifactError /
    ExportMissingError) or, for edgead.json edits that keep it valid, give the pristine result."""
    src, img, ref = tiny_artifact
    path = str(tmp_path_factory.mktemp("fz") / "art")
    shutil.copytree(src, path)
    name = data.draw(st.sampled_from(["edgead.json", "weights.safetensors", "model.onnx"]), label="file")
    fpath = os.path.join(path, name)
    with open(fpath, "rb") as f:
        raw = f.read()
    blob = data.draw(mutated(raw), label="bytes")
    with open(fpath, "wb") as f:
        f.write(blob)
    changed = blob != raw
    errors = _documented_runtime_errors()
    with memory_limit():
        try:
            load_artifact(path)
        except ArtifactError:
            pass
        else:
            assert not (changed and name == "weights.safetensors"), "altered weights loaded silently"
        try:
            det = _load_detector(path)
            res = det(img)
        except errors as e:
            if not isinstance(e, DOCUMENTED):  # plain ValueError/TypeError: must name the file
                assert name in str(e) or path in str(e), f"{type(e).__name__} names no file: {e}"
            return
    assert not (changed and name in ("weights.safetensors", "model.onnx")), f"altered {name} used silently"
    assert np.isfinite(res.score)
    np.testing.assert_array_equal(res.anomaly_map, ref.anomaly_map)


@FUZZ
@given(st.data())
def test_fuzz_artifact_metadata(tiny_artifact, tmp_path_factory, data):
    """Structural edits of edgead.json (wrong types, NaN, paths leaving the directory, deleted checksums):
    ArtifactError naming the field, or a detector that still gives the pristine, finite result."""
    src, img, ref = tiny_artifact
    path = str(tmp_path_factory.mktemp("fz") / "art")
    shutil.copytree(src, path)
    mpath = os.path.join(path, "edgead.json")
    with open(mpath) as f:
        meta = json.load(f)
    keys = data.draw(st.sampled_from(JSON_PATHS), label="field")
    delete = data.draw(st.booleans(), label="delete")
    value = data.draw(JSON_VALUES, label="value")
    if not _set(meta, keys, value, delete):
        return
    with open(mpath, "w") as f:
        json.dump(meta, f)  # NaN/Infinity written as JSON extensions, as a careless editor would
    errors = _documented_runtime_errors()
    with memory_limit():
        try:
            det = _load_detector(path)
            res = det(img)
        except errors as e:
            msg = str(e).lower()
            assert any(str(k).lower() in msg for k in keys), f"error names no field {keys}: {e}"
            return
    # accepted: the edit must not have changed what the detector computes or made its decisions garbage
    assert np.isfinite(res.score)
    np.testing.assert_array_equal(res.anomaly_map, ref.anomaly_map)
    for thr in (det.image_threshold, det.pixel_threshold):  # None: no threshold (no labels/masks)
        assert thr is None or (isinstance(thr, float) and np.isfinite(thr)), thr
    if det.image_threshold is None:
        assert res.label is None
    else:
        assert res.label in (bool(res.score >= det.image_threshold), bool(res.score > det.image_threshold))
    if keys[:2] == ("files", "weights.safetensors") or keys == ("files",):
        # deleting/altering the recorded checksum must not switch verification off: tamper and reload
        with open(os.path.join(path, "weights.safetensors"), "r+b") as f:
            f.seek(-1, 2)
            last = f.read(1)
            f.seek(-1, 2)
            f.write(bytes([last[0] ^ 1]))
        with pytest.raises(errors):
            _load_detector(path)(img)


def test_deeply_nested_metadata_is_an_artifact_error(tiny_artifact, tmp_path):
    src, _, _ = tiny_artifact
    path = str(tmp_path / "art")
    shutil.copytree(src, path)
    with open(os.path.join(path, "edgead.json"), "w") as f:
        f.write("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ArtifactError):
        load_artifact(path)


def test_null_preprocessing_value_is_rejected(tiny_artifact, tmp_path):
    """Found by the metadata fuzz: 'mean': null silently became the default mean (maps off by ~4e-4)."""
    src, img, ref = tiny_artifact
    path = str(tmp_path / "art")
    shutil.copytree(src, path)
    mpath = os.path.join(path, "edgead.json")
    with open(mpath) as f:
        meta = json.load(f)
    meta["preprocessing"]["mean"] = None
    with open(mpath, "w") as f:
        json.dump(meta, f)
    with pytest.raises((ArtifactError, ValueError), match="mean"):
        _load_detector(path)(img)
