"""edgead.data: IO, datasets, transforms, synthetic defects, demo builder (no torch)."""
import json
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from edgead.data import (
    DEFECT_TYPES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageFolder,
    ImageReadError,
    MVTecDataset,
    Preprocessing,
    Sample,
    VisADataset,
    build_demo_dataset,
    iter_batches,
    load_mask,
    make_large_train_split,
    make_mvtec_dataset,
    open_dataset,
    read_image,
    read_mask,
    resize_mask,
    write_image,
)
from edgead.data import synthetic

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared", "data")
BRICK = os.path.join(SHARED, "texture-ad", "brick")


# ------------------------------------------------------------------ io
@pytest.mark.parametrize("shape", [(7, 13), (31, 5, 3), (9, 11, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip(tmp_path, rng, shape, dtype):
    hi = np.iinfo(dtype).max
    img = rng.integers(0, hi + 1, size=shape, dtype=np.int64).astype(dtype)
    p = str(tmp_path / "a.png")
    assert cv2.imwrite(p, img)  # cv2 writes BGR(A)
    out = read_image(p)
    assert out.dtype == dtype
    if len(shape) == 2:
        np.testing.assert_array_equal(out, img)
    else:
        assert out.shape == shape[:2] + (3,)
        np.testing.assert_array_equal(out, img[:, :, [2, 1, 0]])  # BGR(A) -> RGB, alpha dropped
    # write_image takes RGB and round-trips
    q = tmp_path / "sub" / "dir" / "b.png"
    write_image(q, out)
    np.testing.assert_array_equal(read_image(q), out)


def test_grey_hxwx1_and_bool_write(tmp_path):
    m = np.zeros((5, 6), bool)
    m[1:3, 2:5] = True
    write_image(tmp_path / "m.png", m)
    raw = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(raw)) == {0, 255}
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), m)


def test_read_mask_thresholds(tmp_path):
    a = np.array([[0, 127, 128, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / "m8.png"), a)
    np.testing.assert_array_equal(read_mask(tmp_path / "m8.png"), [[False, False, True, True]])
    np.testing.assert_array_equal(read_mask(tmp_path / "m8.png", threshold=1), [[False, True, True, True]])
    b = np.array([[0, 32767, 32768, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "m16.png"), b)
    np.testing.assert_array_equal(read_mask(tmp_path / "m16.png"), [[False, False, True, True]])


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_file_raises_naming_file(tmp_path, rng, ext):
    img = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(ext, img)
    data = buf.tobytes()
    good = tmp_path / f"good{ext}"
    good.write_bytes(data)
    assert read_image(good).shape == (64, 80, 3)
    for cut in (len(data) // 2, len(data) - 3, 20):
        bad = tmp_path / f"trunc_{cut}{ext}"
        bad.write_bytes(data[:cut])
        with pytest.raises(ImageReadError, match=bad.name):
            read_image(bad)


def test_missing_empty_not_image(tmp_path):
    with pytest.raises(ImageReadError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("this is not an image\n" * 10)
    with pytest.raises(ImageReadError, match="text.png"):
        read_image(tmp_path / "text.png")
    with pytest.raises(ImageReadError, match="not found"):
        read_mask(tmp_path / "nope_mask.png")
    assert issubclass(ImageReadError, ValueError)


# ------------------------------------------------------------------ transforms
def test_preprocessing_dict_round_trip_and_validation():
    p = Preprocessing(size=(32, 48), channels=3, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="linear")
    d = p.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert Preprocessing.from_dict(d) == p
    with pytest.raises(ValueError, match="bogus"):
        Preprocessing.from_dict(dict(d, bogus=1))
    with pytest.raises(ValueError, match="std"):
        Preprocessing.from_dict(dict(d, std=[0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="mean"):
        Preprocessing.from_dict(dict(d, mean=[0.5]))
    with pytest.raises(ValueError, match="size"):
        Preprocessing.from_dict(dict(d, size=[0, 3]))
    with pytest.raises(ValueError, match="channels"):
        Preprocessing.from_dict(dict(d, channels=2))
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing.from_dict(dict(d, interpolation="lanczos9"))
    with pytest.raises(ValueError, match="missing"):
        Preprocessing.from_dict({"size": [4, 4]})
    assert Preprocessing(channels=1).mean == (0.449,)


def test_preprocessing_numeric_grey_to_rgb():
    img = np.array([[0, 51], [102, 255]], np.uint8)
    p = Preprocessing(size=(2, 2), channels=3)
    x = p(img)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(x[c], (img / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c], rtol=1e-5, atol=1e-6)
    # uint16 and float inputs give the same result
    np.testing.assert_allclose(p(img.astype(np.uint16) * 257), x, atol=1e-5)
    np.testing.assert_allclose(p(img / 255.0), x, atol=1e-5)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        p(img.astype(np.float32))
    with pytest.raises(ValueError, match="dtype"):
        p(img.astype(np.int32))


def test_preprocessing_rgb_to_grey_resize_batch():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 255
    p = Preprocessing(size=(20, 30), channels=1, mean=(0.0,), std=(1.0,))
    x = p(rgb)
    assert x.shape == (1, 20, 30)
    np.testing.assert_allclose(x, 0.299, atol=2e-3)
    assert p.cv2_interpolation((40, 60)) == cv2.INTER_AREA
    assert p.cv2_interpolation((10, 60)) == cv2.INTER_LINEAR
    b = p.batch([rgb, rgb[:10, :15]])
    assert b.shape == (2, 1, 20, 30) and b.dtype == np.float32
    assert p.batch([]).shape == (0, 1, 20, 30)


def test_resize_mask_nearest():
    m = np.zeros((10, 10), bool)
    m[:5] = True
    r = resize_mask(m, (4, 6))
    assert r.dtype == bool and r.shape == (4, 6)
    assert r[:2].all() and not r[2:].any()


# ------------------------------------------------------------------ synthetic
@pytest.mark.parametrize("kind", DEFECT_TYPES)
@pytest.mark.parametrize("rgb", [False, True])
def test_synthetic_defects_exact_masks(kind, rgb):
    base = np.random.default_rng(1).integers(60, 200, size=(96, 112), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 1.0)
    if rgb:
        base = np.stack([base, base // 2 + 40, 255 - base], axis=2)
    for seed in range(3):
        img, mask = synthetic.paint_defect(kind, base, np.random.default_rng(seed))
        img2, mask2 = synthetic.paint_defect(kind, base, np.random.default_rng(seed))
        np.testing.assert_array_equal(img, img2)  # deterministic
        np.testing.assert_array_equal(mask, mask2)
        assert img.shape == base.shape and img.dtype == np.uint8
        assert mask.shape == base.shape[:2] and mask.dtype == bool and mask.any()
        changed = img != base
        if changed.ndim == 3:
            changed = changed.any(axis=2)
        assert not (changed & ~mask).any(), "pixels outside the mask changed"
        assert changed.sum() >= 0.5 * mask.sum() if kind != "smudge" else changed.any()


# ------------------------------------------------------------------ datasets
@pytest.fixture(scope="module")
def tiny_mvtec(tmp_path_factory):
    out = tmp_path_factory.mktemp("mv")
    src = np.random.default_rng(0).integers(0, 256, size=(120, 90), dtype=np.uint8)
    src = cv2.GaussianBlur(src, (0, 0), 2)
    make_mvtec_dataset(out, {"tex": src, "tex2": 255 - src}, n_train=10, n_test_good=3, n_per_defect=2, size=32, progress=False)
    return out


def test_mvtec_discovery(tiny_mvtec):
    ds = MVTecDataset(tiny_mvtec / "tex")
    tr, te = ds.train_samples(), ds.test_samples()
    assert len(tr) == 10 and all(s.label == 0 and s.defect_type == "good" and not s.mask_paths for s in tr)
    assert len(te) == 3 + 2 * len(DEFECT_TYPES)
    assert sum(s.label for s in te) == 2 * len(DEFECT_TYPES)
    assert ds.defect_types() == sorted(DEFECT_TYPES)
    for s in te:
        img = read_image(s.path)
        assert img.shape == (32, 32)
        m = load_mask(s, img.shape)
        assert m.any() == bool(s.label)
    assert isinstance(open_dataset(tiny_mvtec / "tex"), MVTecDataset)
    with pytest.raises(ValueError, match="tex2"):
        open_dataset(tiny_mvtec)  # several categories: name them
    with pytest.raises(ValueError, match="categories"):
        MVTecDataset(tiny_mvtec)


def test_mvtec_errors(tmp_path, tiny_mvtec):
    with pytest.raises(ValueError, match="does not exist"):
        MVTecDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="train"):
        MVTecDataset(tmp_path)
    (tmp_path / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        MVTecDataset(tmp_path)
    write_image(tmp_path / "train" / "good" / "0.png", np.zeros((8, 8), np.uint8))
    write_image(tmp_path / "test" / "crack" / "0.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="0.png"):
        MVTecDataset(tmp_path).test_samples()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        te = MVTecDataset(tmp_path, allow_missing_masks=True).test_samples()
    assert te[0].mask_paths == ()
    # mask/image shape mismatch names the mask file
    write_image(tmp_path / "ground_truth" / "crack" / "0_mask.png", np.zeros((4, 8), np.uint8))
    s = MVTecDataset(tmp_path).test_samples()[0]
    with pytest.raises(ValueError, match="0_mask.png"):
        load_mask(s, (8, 8))


def test_split_validation(tiny_mvtec):
    ds = MVTecDataset(tiny_mvtec / "tex")
    tr, va = ds.split_validation(0.3, seed=0)
    assert len(va) == 3 and len(tr) == 7
    assert not {s.path for s in tr} & {s.path for s in va}
    assert {s.path for s in tr} | {s.path for s in va} == {s.path for s in ds.train_samples()}
    assert all(os.sep + "train" + os.sep in s.path and s.label == 0 for s in va)
    assert (tr, va) == ds.split_validation(0.3, seed=0)
    with pytest.raises(ValueError, match="fraction"):
        ds.split_validation(1.0)


def test_loco_multi_mask_union(tmp_path):
    write_image(tmp_path / "train" / "good" / "000.png", np.zeros((6, 6, 3), np.uint8))
    write_image(tmp_path / "test" / "good" / "000.png", np.zeros((6, 6, 3), np.uint8))
    write_image(tmp_path / "test" / "logical_anomalies" / "000.png", np.zeros((6, 6, 3), np.uint8))
    a = np.zeros((6, 6), np.uint8)
    a[0, 0] = 255
    b = np.zeros((6, 6), np.uint8)
    b[5, 5] = 255
    write_image(tmp_path / "ground_truth" / "logical_anomalies" / "000" / "000.png", a)
    write_image(tmp_path / "ground_truth" / "logical_anomalies" / "000" / "001.png", b)
    write_image(tmp_path / "validation" / "good" / "000.png", np.zeros((6, 6, 3), np.uint8))
    ds = MVTecDataset(tmp_path)
    assert ds.is_loco
    te = ds.test_samples()
    assert [s.label for s in te] == [0, 1]
    assert len(te[1].mask_paths) == 2
    m = load_mask(te[1], (6, 6, 3))
    assert m.sum() == 2 and m[0, 0] and m[5, 5]
    assert len(ds.validation_samples()) == 1


def test_visa_csv(tmp_path):
    for name in ("n0", "n1", "n2"):
        write_image(tmp_path / "candle" / "Normal" / f"{name}.png", np.zeros((5, 7), np.uint8))
    write_image(tmp_path / "candle" / "Anomaly" / "a0.png", np.zeros((5, 7), np.uint8))
    m = np.zeros((5, 7), np.uint8)
    m[2, 3] = 1  # VisA raw masks use small label values
    write_image(tmp_path / "candle" / "Masks" / "a0.png", m)
    write_image(tmp_path / "pcb1" / "Normal" / "p0.png", np.zeros((5, 7), np.uint8))
    (tmp_path / "split_csv").mkdir()
    (tmp_path / "split_csv" / "1cls.csv").write_text(
        "object,split,label,image,mask\n"
        "candle,train,normal,candle/Normal/n0.png,\n"
        "candle,train,normal,candle/Normal/n1.png,\n"
        "candle,test,normal,candle/Normal/n2.png,\n"
        "candle,test,anomaly,candle/Anomaly/a0.png,candle/Masks/a0.png\n"
        "pcb1,train,normal,pcb1/Normal/p0.png,\n"
    )
    ds = VisADataset(tmp_path, "split_csv/1cls.csv", category="candle")
    assert [os.path.basename(s.path) for s in ds.train_samples()] == ["n0.png", "n1.png"]
    te = ds.test_samples()
    assert [s.label for s in te] == [0, 1]
    mk = load_mask(te[1], (5, 7))
    assert mk.sum() == 1 and mk[2, 3]
    assert len(VisADataset(tmp_path, tmp_path / "split_csv" / "1cls.csv").train_samples()) == 3
    with pytest.raises(ValueError, match="bottle"):
        VisADataset(tmp_path, "split_csv/1cls.csv", category="bottle")
    assert isinstance(open_dataset(tmp_path, category="candle"), VisADataset)
    (tmp_path / "bad.csv").write_text("object,split,image\n")
    with pytest.raises(ValueError, match="label"):
        VisADataset(tmp_path, "bad.csv")


def test_image_folder_and_iter_batches(tiny_mvtec, tmp_path):
    folder = tiny_mvtec / "tex" / "train" / "good"
    f = ImageFolder(folder)
    assert len(f) == 10 and f.paths == sorted(f.paths)
    assert len(ImageFolder(tiny_mvtec / "tex", recursive=True)) == 10 + 3 + 2 * len(DEFECT_TYPES) * 2
    assert len(ImageFolder(f.paths[0])) == 1
    assert len(ImageFolder([f.paths[0], f.paths[1]])) == 2
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path)
    p = Preprocessing(size=(16, 16))
    got = list(iter_batches(f.paths, p, batch_size=4, progress=False))
    assert [b.shape for b, _ in got] == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]
    assert sum((items for _, items in got), []) == f.paths
    np.testing.assert_allclose(got[0][0][1], p(read_image(f.paths[1])))
    samples = MVTecDataset(tiny_mvtec / "tex").test_samples()
    (b, items), = list(iter_batches(samples, p, batch_size=64, progress=False))
    assert b.shape[0] == len(samples) and items == samples
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nxxxx")
    with pytest.raises(ImageReadError, match="bad.png"):
        list(iter_batches([bad], p, progress=False))


@pytest.mark.skipif(not os.path.isdir(BRICK), reason="shared texture-ad data not present")
def test_shared_texture_ad_brick():
    ds = MVTecDataset(BRICK)
    tr, te = ds.train_samples(), ds.test_samples()
    assert len(tr) == 200
    assert sum(1 for s in te if s.label == 0) == 60 and sum(s.label for s in te) == 75
    for s in te[::7]:
        img = read_image(s.path)
        assert load_mask(s, img.shape).any() == bool(s.label)


# ------------------------------------------------------------------ generators
def test_demo_builder(tmp_path):
    out = tmp_path / "demo"
    (tmp_path / "demo").mkdir()
    (out / "user_notes.txt").write_text("keep me")
    kw = dict(size=48, n_train=4, n_test_good=2, n_per_defect=1, progress=False)
    p = build_demo_dataset(out, **kw)
    for c in ("brick", "grass", "gravel"):
        ds = MVTecDataset(p / c)
        assert len(ds.train_samples()) == 4
        te = ds.test_samples()
        assert len(te) == 2 + len(DEFECT_TYPES)
        assert read_image(te[-1].path).shape == (48, 48)
    mtime = os.path.getmtime(p / "brick" / "train" / "good" / "000.png")
    assert build_demo_dataset(out, **kw) == p  # idempotent: nothing rewritten
    assert os.path.getmtime(p / "brick" / "train" / "good" / "000.png") == mtime
    build_demo_dataset(out, **dict(kw, n_train=2))  # parameters changed: regenerated
    assert len(MVTecDataset(p / "grass").train_samples()) == 2
    assert (out / "user_notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="not generated"):
        other = tmp_path / "other"
        (other / "brick").mkdir(parents=True)
        (other / "brick" / "x.txt").write_text("mine")
        build_demo_dataset(other, **kw)


def test_train_and_test_regions_disjoint():
    photo = np.arange(64 * 40, dtype=np.int64).reshape(64, 40) % 251
    tr, te = synthetic._regions(photo.astype(np.uint8), 0.5)
    assert tr.shape[0] + te.shape[0] == 64 and tr.shape[0] == 32


def test_large_split_resumable(tmp_path):
    out = tmp_path / "sem"
    make_large_train_split(out, n_images=5, size=32, workers=1, progress=False, n_per_defect=1, defects=("spot",))
    files = sorted(os.listdir(out / "train" / "good"))
    assert files == [f"{i:06d}.png" for i in range(5)]
    a = read_image(out / "train" / "good" / "000003.png")
    assert a.shape == (32, 32) and a.dtype == np.uint8
    assert read_mask(out / "ground_truth" / "spot" / "000000_mask.png").any()
    os.remove(out / "train" / "good" / "000003.png")
    make_large_train_split(out, n_images=5, size=32, workers=2, progress=False, chunk=2)
    np.testing.assert_array_equal(read_image(out / "train" / "good" / "000003.png"), a)
    with pytest.raises(ValueError, match="different parameters"):
        make_large_train_split(out, n_images=5, size=64, workers=1, progress=False)
    assert synthetic.main_make_data([str(tmp_path / "cli"), "--n-images", "2", "--size", "32", "--workers", "1", "--no-progress"]) == 0


def test_import_does_not_import_torch():
    code = "import sys, edgead.data, edgead.data.demo, edgead.data.synthetic; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------
# bad-input probe defects (issue 11, item 7): each test failed before its fix
# ------------------------------------------------------------------------------------------------
REPO_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python")


def _run_limited(code, timeout=60, mem_bytes=1 << 30):
    """Run `code` in a child with an address-space limit (a decoder bomb cannot take the machine down)
    and a timeout (a blocking read cannot hang the suite). Returns (returncode, stdout, stderr)."""
    import edgead

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(edgead.__file__)), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    prelude = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (%d, %d))\n" % (mem_bytes, mem_bytes))
    try:
        p = subprocess.run([sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "", "timeout"
    return p.returncode, p.stdout, p.stderr


def _jpeg_claiming(w, h):
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    i = data.find(b"\xff\xc0")
    assert i > 0
    data[i + 5:i + 9] = int(h).to_bytes(2, "big") + int(w).to_bytes(2, "big")
    return bytes(data)


def test_jpeg_header_claiming_30000x30000_is_refused_before_decoding(tmp_path):
    """A 691-byte JPEG claiming 30000x30000 reached 5.2 GB RSS and a bare MemoryError."""
    p = tmp_path / "bomb.jpg"
    p.write_bytes(_jpeg_claiming(30000, 30000))
    assert p.stat().st_size < 1000
    code = ("from edgead.data.io import read_image, ImageReadError\n"
            f"try:\n    read_image({str(p)!r})\nexcept ImageReadError as e:\n    print('ERR', e)\n")
    rc, out, err = _run_limited(code, mem_bytes=1536 << 20)
    assert rc == 0, err[-2000:]
    assert "ERR" in out and "30000x30000" in out and str(p) in out


def test_header_pixel_limit_is_configurable(tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), np.zeros((40, 50), np.uint8))
    with pytest.raises(ImageReadError, match=r"50x40.*a\.png"):
        read_image(p, max_pixels=1999)
    assert read_image(p, max_pixels=2000).shape == (40, 50)
    from edgead.data import io as dio

    old = (dio.MAX_IMAGE_PIXELS, dio.MAX_IMAGE_BYTES)
    try:
        dio.set_image_limits(max_pixels=100)
        with pytest.raises(ImageReadError, match="a.png"):
            read_image(p)
    finally:
        dio.set_image_limits(*old)
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(p, max_pixels=0)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".bmp", ".webp", ".ppm"])
def test_header_size_matches_decoder(tmp_path, ext):
    from edgead.data.io import image_header_size

    img = np.zeros((37, 53, 3), np.uint8)
    ok, buf = cv2.imencode(ext, img)
    assert image_header_size(buf.tobytes()) == (53, 37)


def test_file_size_limit(tmp_path):
    p = tmp_path / "a.png"
    cv2.imwrite(str(p), np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageReadError, match=r"limit.*a\.png"):
        read_image(p, max_bytes=100)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_is_refused_without_blocking(tmp_path):
    """read_image / Detector(path) blocked forever on a FIFO."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code = ("from edgead.data.io import read_image, ImageReadError\n"
            f"try:\n    read_image({str(fifo)!r})\nexcept ImageReadError as e:\n    print('ERR', e)\n")
    rc, out, err = _run_limited(code, timeout=30)
    assert rc == 0 and "ERR" in out and "pipe.png" in out, (rc, out, err[-1000:])
    with pytest.raises(ValueError, match=r"not a regular file.*pipe\.png"):
        ImageFolder([str(fifo)])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_device_file_is_refused(tmp_path):
    """read_image('/dev/zero') read until memory ran out."""
    code = ("from edgead.data.io import read_image, ImageReadError\n"
            "try:\n    read_image('/dev/zero')\nexcept ImageReadError as e:\n    print('ERR', e)\n")
    rc, out, err = _run_limited(code, timeout=30)
    assert rc == 0 and "ERR" in out and "/dev/zero" in out, (rc, out, err[-1000:])
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 2.0, -0.5])
def test_float_tiff_out_of_range_names_file(tmp_path, bad):
    img = np.full((8, 8), 0.5, np.float32)
    img[3, 4] = bad
    p = tmp_path / "float_img.tif"
    assert cv2.imwrite(str(p), img)
    with pytest.raises(ImageReadError, match=r"float_img\.tif"):
        read_image(p)
    ok = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    cv2.imwrite(str(p), ok)
    np.testing.assert_array_equal(read_image(p), ok)


def test_large_image_resized_before_float_conversion(rng):
    """The pre-processing converted a 20000x20000 image to float32 before resizing (6.6 GB)."""
    import tracemalloc

    img = rng.integers(0, 256, (2400, 2400, 3), dtype=np.uint8)  # 5.8 M pixels > LARGE_IMAGE_PIXELS
    pre = Preprocessing(size=(64, 64))
    exact = pre.mean, pre.std
    tracemalloc.start()
    try:
        out = pre(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < img.nbytes, f"pre-processing peaked at {peak / 1e6:.1f} MB for a {img.nbytes / 1e6:.1f} MB image"
    # same result as resizing in float32 up to the uint8 rounding of the resized pixels
    f = cv2.resize(img.astype(np.float32) / 255.0, (64, 64), interpolation=cv2.INTER_AREA)
    ref = ((f - np.asarray(exact[0], np.float32)) / np.asarray(exact[1], np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(out, ref, atol=0.51 / 255 / min(exact[1]) + 1e-5)


def test_heatmap_overlay_not_float64_full_size(rng):
    import tracemalloc

    from edgead.pipeline import heatmap_overlay

    img = rng.integers(0, 256, (1500, 1500, 3), dtype=np.uint8)
    amap = rng.random((1500, 1500), dtype=np.float32)
    tracemalloc.start()
    try:
        out = heatmap_overlay(img, amap, 0.0, 1.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert peak < 5 * img.nbytes, f"overlay peaked at {peak / 1e6:.1f} MB for a {img.nbytes / 1e6:.1f} MB image"
    heat = cv2.applyColorMap((np.clip(amap, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    ref = (0.5 * heat.astype(np.float64) + 0.5 * img).astype(np.uint8)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
