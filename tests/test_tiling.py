"""edgead.tiling: tile grid, stitching at native resolution, the Detector / pipeline hooks, PatchCore's
bounded fit (bank cap, coreset candidates) and native-resolution metrics over mixed image sizes."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from edgead.tiling import (Stitcher, Tiling, TiledSamples, blend_window, iter_tiles, pad_to, resolve_tiling,
                           tile_origins, tiled_predict)


# ----------------------------------------------------------------------------------------------
# grid and arguments
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,tile,stride", [(10, 4, 3), (10, 4, 4), (9, 4, 2), (4, 4, 1), (3, 4, 2), (1000, 256, 192)])
def test_origins_cover_every_pixel_inside_the_image(length, tile, stride):
    org = tile_origins(length, tile, stride)
    assert org[0] == 0 and org == sorted(set(org))
    covered = np.zeros(max(length, tile), bool)
    for o in org:
        assert o + tile <= max(length, tile)
        covered[o : o + tile] = True
    assert covered[:length].all()
    steps = np.diff(org)
    assert (steps <= stride).all() and (steps[:-1] == stride).all() if steps.size else True


def test_bad_tiling_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="stride"):
        Tiling(256, 0)
    with pytest.raises(ValueError, match="larger than 'tile'"):
        Tiling(256, 300)
    with pytest.raises(ValueError, match="'tile'"):
        Tiling(0, 1)
    with pytest.raises(ValueError, match="'tile'"):
        Tiling("big", 1)
    with pytest.raises(ValueError, match="'tile'"):
        Tiling((2, 3, 4), 1)
    with pytest.raises(ValueError, match="blend"):
        Tiling(8, 4, blend="cubic")
    with pytest.raises(ValueError, match="score"):
        Tiling(8, 4, score="mean")
    with pytest.raises(ValueError, match="unknown keys"):
        Tiling.from_config({"tile": 8, "strde": 4})
    with pytest.raises(ValueError, match="stride"):
        tile_origins(10, 4, 0)
    assert Tiling.from_config(None) is None and Tiling.from_config({"tile": None}) is None
    t = Tiling.from_config({"tile": [8, 6], "stride": 4})
    assert t.tile == (8, 6) and t.stride == (4, 4) and Tiling.from_config(t.to_dict()) == t
    assert Tiling(8).stride == (8, 8)


def test_resolve_tiling_overrides():
    stored = {"tiling": {"tile": [64, 64], "stride": [48, 48], "blend": "mean"}}
    assert resolve_tiling(stored) == Tiling(64, 48, blend="mean")
    assert resolve_tiling(stored, tile=32, stride=16) == Tiling(32, 16, blend="mean")
    assert resolve_tiling(stored, stride=32) == Tiling(64, 32, blend="mean")
    assert resolve_tiling(stored, tile=0) is None
    assert resolve_tiling({}) is None and resolve_tiling({"tiling": None}, tile=16) == Tiling(16, 16)
    with pytest.raises(ValueError, match="without 'tile'"):
        resolve_tiling({}, stride=8)


def test_tile_larger_than_image_pads_by_reflection_and_crops_back():
    img = np.arange(3 * 5, dtype=np.float32).reshape(3, 5) / 20
    g = Tiling(8, 6).grid(img.shape)
    assert len(g) == 1 and g.padded_hw == (8, 8)
    p = pad_to(img, g.padded_hw)
    assert p.shape == (8, 8)
    np.testing.assert_array_equal(p[:3, :5], img)
    np.testing.assert_array_equal(p[3], img[1, list(range(5)) + [3, 2, 1]])  # reflect-101 (no edge repeat)
    score, amap = tiled_predict(img, Tiling(8, 6), lambda t: (np.array([x.max() for x in t]), np.stack(t)))
    assert amap.shape == img.shape
    np.testing.assert_allclose(amap, img, rtol=1e-6)
    assert pad_to(np.ones((1, 1)), (4, 4)).shape == (4, 4)


# ----------------------------------------------------------------------------------------------
# stitching
# ----------------------------------------------------------------------------------------------
def _identity_infer(calls=None, chunk=None):
    def infer(tiles):
        if calls is not None:
            calls.append(len(tiles))
        if chunk is not None:
            assert len(tiles) <= chunk
        m = np.stack([np.asarray(t, np.float32) for t in tiles])
        return m.reshape(len(tiles), -1).max(axis=1), m

    return infer


@pytest.mark.parametrize("blend", ["linear", "mean"])
@pytest.mark.parametrize("hw,tile,stride", [((37, 53), 16, 12), ((37, 53), (16, 20), (5, 20)), ((10, 70), 16, 9),
                                            ((64, 64), 16, 16)])
def test_stitched_map_equals_the_global_map_when_tiles_agree(blend, hw, tile, stride):
    """Every tile map is the crop of one global map (here: the image itself): whatever the overlap and
    weights, the stitched map must be that global map, at the image's size."""
    img = np.random.default_rng(0).random(hw).astype(np.float32)
    score, amap = tiled_predict(img, Tiling(tile, stride, blend=blend), _identity_infer(chunk=5), chunk=5)
    assert amap.shape == hw and amap.dtype == np.float32
    np.testing.assert_allclose(amap, img, rtol=1e-6, atol=1e-6)
    assert score == pytest.approx(float(img.max()))


def _reference_blend(hw, tiling, tile_maps):
    """Pixel-by-pixel weighted average, written independently of Stitcher."""
    grid = tiling.grid(hw)
    th, tw = grid.tile
    o_y, o_x = th - tiling.stride[0], tw - tiling.stride[1]

    def w1(i, n, o):
        if tiling.blend == "mean" or o <= 0:
            return 1.0
        return min(1.0, (min(i, n - 1 - i) + 1.0) / (o + 1.0))

    out = np.zeros(hw)
    for y in range(hw[0]):
        for x in range(hw[1]):
            num = den = 0.0
            for (oy, ox), m in zip(grid.origins, tile_maps):
                if oy <= y < oy + th and ox <= x < ox + tw:
                    wt = w1(y - oy, th, o_y) * w1(x - ox, tw, o_x)
                    num += wt * m[y - oy, x - ox]
                    den += wt
            out[y, x] = num / den
    return out


@pytest.mark.parametrize("blend", ["linear", "mean"])
def test_overlap_blending_matches_a_pixelwise_reference(blend):
    rng = np.random.default_rng(1)
    hw, t = (23, 31), Tiling(10, 7, blend=blend)
    n = len(t.grid(hw))
    tile_maps = rng.random((n, 10, 10)).astype(np.float32)  # tiles disagree: blending matters
    st = Stitcher(t.grid(hw), t.window())
    st.add(0, tile_maps[:3])
    st.add(3, tile_maps[3:])
    np.testing.assert_allclose(st.result(), _reference_blend(hw, t, tile_maps), rtol=1e-5, atol=1e-6)


def test_no_overlap_is_plain_concatenation_and_scores():
    img = np.zeros((20, 30), np.float32)
    t = Tiling(10, 10, score="tile_max")
    consts = iter(range(100))

    def infer(tiles):
        c = np.array([next(consts) for _ in tiles], np.float32)
        return c + 0.5, np.stack([np.full((10, 10), v, np.float32) for v in c])

    score, amap = tiled_predict(img, t, infer, chunk=4)
    np.testing.assert_array_equal(amap, np.kron(np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((10, 10))))
    assert score == pytest.approx(5.5)  # tile_max: the models' own tile scores
    s2, _ = tiled_predict(img, Tiling(10, 10), lambda tl: (np.zeros(len(tl)), np.stack([np.full((10, 10), 2.0)] * len(tl))))
    assert s2 == pytest.approx(2.0)  # max of the stitched map


def test_blend_window_shape_and_floor():
    w = blend_window((8, 8), (5, 8))
    assert w.shape == (8, 8) and w.min() > 0 and w.max() == 1.0
    np.testing.assert_array_equal(w[:, 0], w[:, 4])  # no overlap along x: flat
    np.testing.assert_allclose(w[:4, 0], [0.25, 0.5, 0.75, 1.0])


def test_model_maps_of_another_size_are_resized_to_the_tile():
    img = np.full((40, 40), 0.5, np.float32)
    score, amap = tiled_predict(img, Tiling(20, 20), lambda tl: (np.ones(len(tl)), np.full((len(tl), 10, 10), 3.0, np.float32)))
    assert amap.shape == (40, 40) and np.allclose(amap, 3.0)


def test_4096_image_is_processed_in_bounded_chunks():
    img = np.random.default_rng(0).integers(0, 256, (4096, 4096), dtype=np.uint8)
    calls = []
    t = Tiling(256, 192)
    score, amap = tiled_predict(img, t, _identity_infer(calls, chunk=8), chunk=8)
    assert amap.shape == (4096, 4096) and max(calls) <= 8 and sum(calls) == len(t.grid(img.shape)) == 21 * 21
    np.testing.assert_allclose(amap[::509, ::509], img[::509, ::509].astype(np.float32), rtol=1e-6)


def test_iter_tiles_views():
    img = np.arange(12 * 9).reshape(12, 9)
    g = Tiling((6, 4), (3, 3)).grid(img.shape)
    tiles = [t for _, chunk in iter_tiles(img, g, 2) for t in chunk]
    assert len(tiles) == len(g)
    for (y, x), t in zip(g.origins, tiles):
        np.testing.assert_array_equal(t, img[y : y + 6, x : x + 4])
    with pytest.raises(ValueError, match="chunk"):
        next(iter_tiles(img, g, 0))


def test_tiling_module_is_torch_free():
    code = "import sys, edgead.tiling; assert 'torch' not in sys.modules, 'torch imported'"
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ----------------------------------------------------------------------------------------------
# training tiles
# ----------------------------------------------------------------------------------------------
def _write_images(folder, sizes, seed=0):
    import cv2

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        p = os.path.join(folder, f"{i:03d}.png")
        cv2.imwrite(p, rng.integers(60, 200, (h, w), dtype=np.uint8))
        paths.append(p)
    return paths


def test_tiled_samples_yield_the_tiles_of_each_image(tmp_path):
    from edgead.data.datasets import iter_batches
    from edgead.data.io import read_image
    from edgead.data.transforms import Preprocessing

    paths = _write_images(str(tmp_path), [(40, 50), (20, 20), (33, 70)])  # mixed sizes, one smaller than a tile
    t = Tiling(24, 16)
    ts = TiledSamples(paths, t)
    assert len(ts) == sum(len(t.grid(read_image(p).shape[:2])) for p in paths)
    pre = Preprocessing(size=(24, 24), channels=1, mean=0.0, std=1.0)
    got = [(x, meta) for x, meta in iter_batches(ts, pre, batch_size=4, progress=False)]
    assert sum(x.shape[0] for x, _ in got) == len(ts) and all(x.shape[1:] == (1, 24, 24) for x, _ in got)
    x0, meta0 = got[0]
    (p, (y, xo)) = meta0[1]
    img = pad_to(read_image(p), t.grid(read_image(p).shape[:2]).padded_hw)
    np.testing.assert_allclose(x0[1, 0], img[y : y + 24, xo : xo + 24] / 255.0, atol=1e-6)
    few = TiledSamples(paths, Tiling(24, 16, max_tiles_per_image=2), seed=3)
    assert len(few) == sum(min(2, len(t.grid(read_image(p).shape[:2]))) for p in paths)
    assert [m for m in few.index] == [m for m in TiledSamples(paths, Tiling(24, 16, max_tiles_per_image=2), seed=3).index]


# ----------------------------------------------------------------------------------------------
# native-resolution metrics over mixed sizes
# ----------------------------------------------------------------------------------------------
def _aupro_reference_lists(maps, masks, limit):
    """ops_reference.pro_curve's algorithm on a list of differently sized images (per-image regions)."""
    from scipy import ndimage

    from edgead.ops_reference import pro_area

    scores, labels, n_regions = [], [], 0
    for m, g in zip(maps, masks):
        lab, k = ndimage.label(g, structure=np.ones((3, 3), int))
        labels.append(np.where(lab > 0, lab + n_regions, 0).ravel())
        scores.append(np.asarray(m, np.float64).ravel())
        n_regions += k
    s, lab = np.concatenate(scores), np.concatenate(labels)
    sizes = np.bincount(lab, minlength=n_regions + 1).astype(np.float64)
    n_normal = int((lab == 0).sum())
    order = np.argsort(-s, kind="stable")
    s, lab = s[order], lab[order]
    fpr_inc = (lab == 0) / n_normal
    pro_inc = np.where(lab > 0, 1.0 / (sizes[lab] * n_regions), 0.0)
    fpr, pro = np.cumsum(fpr_inc), np.cumsum(pro_inc)
    last = np.r_[s[1:] != s[:-1], True]
    return pro_area(np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]], limit)


def test_mixed_size_pixel_metrics_match_references():
    from sklearn.metrics import average_precision_score, roc_auc_score

    from edgead import metrics

    rng = np.random.default_rng(0)
    sizes = [(30, 40), (17, 52), (45, 12), (30, 40), (8, 9)]
    maps, masks = [], []
    for i, (h, w) in enumerate(sizes):
        m = rng.random((h, w)).astype(np.float32)
        g = np.zeros((h, w), bool)
        if i % 2 == 0:
            y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
            g[y : y + 4, x : x + 3] = True
            g[-1, -1] = True  # a region on the image border (must not merge with the next image's)
            m[g] += 0.3
        maps.append(m)
        masks.append(g)
    got = metrics.pixel_metrics_mixed(maps, masks, 0.3)
    ps = np.concatenate([m.ravel() for m in maps])
    py = np.concatenate([g.ravel() for g in masks])
    assert got["pixel_auroc"] == pytest.approx(roc_auc_score(py, ps), abs=1e-9)
    assert got["pixel_ap"] == pytest.approx(average_precision_score(py, ps), abs=1e-9)
    for lim in (0.3, 0.05, 1.0):
        assert metrics.pixel_metrics_mixed(maps, masks, lim)["aupro"] == pytest.approx(
            _aupro_reference_lists(maps, masks, lim), abs=1e-6)
    ev = metrics.evaluate(rng.random(5), [1, 0, 1, 0, 1], maps, masks)
    assert ev["aupro"] == pytest.approx(got["aupro"]) and ev["pixel_auroc"] == pytest.approx(got["pixel_auroc"])
    same = metrics.evaluate(rng.random(2), [1, 0], [maps[0], maps[3]], [masks[0], masks[3]])
    ref = metrics.evaluate(rng.random(2), [1, 0], np.stack([maps[0], maps[3]]), np.stack([masks[0], masks[3]]))
    assert same["aupro"] == pytest.approx(ref["aupro"]) and same["pixel_auroc"] == pytest.approx(ref["pixel_auroc"])
    with pytest.raises(ValueError, match="maps"):
        metrics.evaluate(rng.random(4), [1, 0, 1, 0], maps, masks)


# ----------------------------------------------------------------------------------------------
# PatchCore: tiles, bounded fit
# ----------------------------------------------------------------------------------------------
def _tiny_patchcore(**kw):
    import warnings

    from edgead.models.patchcore import PatchCore

    cfg = dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"], image_size=[32, 32],
               coreset_ratio=0.5, num_neighbors=3, embedding_dim=24, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3,
               coreset_dim=16, blur_sigma=1.0)
    cfg.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PatchCore(cfg)


def test_patchcore_bank_cap_and_candidate_sampling(tmp_path):
    pytest.importorskip("torch")
    paths = _write_images(str(tmp_path), [(40, 48), (64, 40), (32, 32)])
    ts = TiledSamples(paths, Tiling(32, 16))
    n_patches = len(ts) * 8 * 8
    m = _tiny_patchcore(bank_max_size=50)
    st = m.fit(ts, progress=False)
    assert st["n_patches"] == n_patches and st["bank_size"] == 50 and m.memory_bank.shape == (50, 24)
    m2 = _tiny_patchcore(coreset_candidates=100, bank_max_size=30)
    st2 = m2.fit(ts, progress=False)
    assert st2["n_candidates"] == 100 and st2["bank_size"] == 30
    # the candidates are real training embeddings: every bank row is one of the full embedding set
    import torch

    pre = m2.preprocessing()
    from edgead.data.datasets import iter_batches

    with torch.no_grad():
        allemb = torch.cat([m2.embedder(torch.from_numpy(x)).reshape(-1, 24) for x, _ in iter_batches(ts, pre, 8, False)])
    d = torch.cdist(m2.memory_bank, allemb, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert float(d.max()) < 1e-4
    first = m2.memory_bank.clone()
    m2.fit(ts, progress=False)
    assert torch.equal(first, m2.memory_bank)  # seeded sampling and selection
    with pytest.raises(ValueError, match="bank_max_size"):
        _tiny_patchcore(bank_max_size=0)
    with pytest.raises(ValueError, match="coreset_candidates"):
        _tiny_patchcore(coreset_candidates=2.5)


# ----------------------------------------------------------------------------------------------
# Detector and pipeline hooks
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiled_artifact(tmp_path_factory):
    pytest.importorskip("torch")
    from edgead.artifact import save_artifact, update_meta

    root = tmp_path_factory.mktemp("tiled")
    paths = _write_images(str(root / "train"), [(40, 48), (64, 40), (32, 32)])
    m = _tiny_patchcore()
    m.fit(TiledSamples(paths, Tiling(32, 24)), progress=False)
    art = str(root / "art")
    save_artifact(art, "patchcore", m.artifact_config(), m.preprocessing().to_dict(), m.artifact_tensors(),
                  thresholds={"image": 1.0, "pixel": 1.0})
    update_meta(art, tiling=Tiling(32, 24).to_dict())
    return art, m.eval()


def test_detector_tiles_and_stitches_at_the_original_size(tiled_artifact):
    import torch

    from edgead.runtime import Detector

    art, model = tiled_artifact
    det = Detector.load(art, backend="torch", device="cpu", batch_size=3)
    assert det.tiling == Tiling(32, 24) and det.describe()["tiling"]["tile"] == [32, 32]
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (70, 90, 3), dtype=np.uint8), rng.integers(0, 256, (20, 45, 3), dtype=np.uint8)]
    res = det(imgs)
    assert isinstance(res.anomaly_maps, list)  # mixed sizes: one map per image at its own size
    pre = model.preprocessing()

    def infer(tiles):
        with torch.no_grad():
            s, m = model.predict(torch.from_numpy(pre.batch(tiles)))
        return s.numpy(), m.numpy()

    for img, r in zip(imgs, res):
        s_ref, m_ref = tiled_predict(img, Tiling(32, 24), infer, chunk=3)
        assert r.anomaly_map.shape == img.shape[:2] and r.mask.shape == img.shape[:2]
        np.testing.assert_allclose(r.anomaly_map, m_ref, rtol=1e-4, atol=1e-4)
        assert r.score == pytest.approx(s_ref, rel=1e-4) and r.score == pytest.approx(float(m_ref.max()), rel=1e-4)
        np.testing.assert_array_equal(r.mask, r.anomaly_map >= det.pixel_threshold)
    det.set_tiling(tile=0)
    assert det.tiling is None and det(imgs[0]).anomaly_map.shape == (70, 90)
    det2 = Detector.load(art, backend="torch", device="cpu", tile=48, stride=40)
    assert det2.tiling.tile == (48, 48) and det2(imgs[0]).anomaly_map.shape == (70, 90)


def _mvtec(root, sizes_train, sizes_test, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    for i, (h, w) in enumerate(sizes_train):
        cv2.imwrite(os.path.join(root, "train/good", f"{i:03d}.png"), rng.integers(100, 140, (h, w), dtype=np.uint8))
    for i, (h, w) in enumerate(sizes_test):
        img = rng.integers(100, 140, (h, w), dtype=np.uint8)
        cv2.imwrite(os.path.join(root, "test/good", f"{i:03d}.png"), img)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 3 : h // 3 + 3, w // 2 : w // 2 + 4] = 255
        img = img.copy()
        img[mask > 0] = 255
        cv2.imwrite(os.path.join(root, "test/spot", f"{i:03d}.png"), img)
        cv2.imwrite(os.path.join(root, "ground_truth/spot", f"{i:03d}_mask.png"), mask)


def test_pipeline_trains_on_tiles_and_evaluates_at_native_resolution(tmp_path):
    pytest.importorskip("torch")
    import json

    from edgead import pipeline

    data = str(tmp_path / "data")
    _mvtec(data, [(48, 64), (40, 40), (56, 30), (48, 64), (50, 50)], [(48, 64), (37, 53)])
    recipe = {"model": "patchcore", "config": dict(backbone="resnet18", allow_random=True, layers=["layer1"],
                                                    coreset_ratio=0.5, num_neighbors=3, batch_size=8,
                                                    mean=[0.5] * 3, std=[0.25] * 3, blur_sigma=1.0),
              "tiling": {"tile": 32, "stride": 24}, "train": {"val_fraction": 0.2}}
    r = pipeline.load_recipe(recipe, {"stride": 16})
    assert r["tiling"]["stride"] == [16, 16] and r["config"]["image_size"] == [32, 32]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        art = pipeline.train(recipe, data, str(tmp_path / "art"), device="cpu", progress=False)
    meta = json.load(open(os.path.join(art, "edgead.json")))
    assert meta["tiling"]["tile"] == [32, 32] and meta["preprocessing"]["size"] == [32, 32]
    rep = pipeline.evaluate(art, data, str(tmp_path / "eval"), device="cpu", progress=False)
    assert 0.0 <= rep["metrics"]["aupro"] <= 1.0 and 0.0 <= rep["metrics"]["pixel_auroc"] <= 1.0
    # masks and heatmaps are written at each image's original size (one image is 37 x 53)
    from edgead.data.io import read_image

    res = pipeline.predict(art, os.path.join(data, "test", "spot"), str(tmp_path / "pred"), device="cpu", progress=False)
    for r in res:
        h, w = read_image(r["path"]).shape[:2]
        assert read_image(r["mask"]).shape[:2] == (h, w) and read_image(r["heatmap"]).shape[:2] == (h, w)
    assert {read_image(r["path"]).shape[:2] for r in res} == {(48, 64), (37, 53)}


def test_onnxruntime_detector_runs_tiles_as_a_batch(tiled_artifact):
    pytest.importorskip("onnxruntime")
    from edgead.export.onnx import export_onnx
    from edgead.runtime import Detector

    art, _ = tiled_artifact
    export_onnx(art)
    img = np.random.default_rng(7).integers(0, 256, (75, 61, 3), dtype=np.uint8)
    ref = Detector.load(art, backend="torch", device="cpu")(img)
    det = Detector.load(art, backend="onnxruntime", device="cpu", batch_size=4)
    batches = []
    det.add_timing_hook(lambda stage, sec, n: batches.append(n) if stage == "network" else None)
    got = det(img)
    assert got.anomaly_map.shape == (75, 61) and max(batches) == 4 and sum(batches) == len(det.tiling.grid((75, 61)))
    np.testing.assert_allclose(got.anomaly_map, ref.anomaly_map, rtol=1e-3, atol=1e-3)
    assert got.score == pytest.approx(ref.score, rel=1e-3)


def test_cli_tile_and_stride_options():
    from edgead.cli import build_parser

    p = build_parser()
    a = p.parse_args(["eval", "art", "data", "--tile", "256", "--stride", "192"])
    assert (a.tile, a.stride) == (256, 192)
    assert p.parse_args(["predict", "art", "img.png", "--tile", "0"]).tile == 0
    assert p.parse_args(["train", "r.yaml", "data", "out"]).tile is None
    with pytest.raises(SystemExit):
        p.parse_args(["predict", "art", "img.png", "--tile", "64", "--stride", "0"])
