import json
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from edgead import ops  # noqa: E402
from edgead.artifact import ArtifactError, load_artifact  # noqa: E402

from edgead.models import patchcore as pc  # noqa: E402
from edgead.runtime import post_patchcore as post  # noqa: E402


def textures(n, rng, size=64, defect=False):
    """16x16 random tile repeated to size x size + noise; defect = a bright 8x8 square."""
    tile = np.random.default_rng(123).random((16, 16)).astype(np.float32)
    out, masks = [], []
    for _ in range(n):
        dy, dx = rng.integers(0, 16, size=2)
        img = np.tile(np.roll(tile, (dy, dx), (0, 1)), (size // 16, size // 16))
        img = img + 0.05 * rng.standard_normal(img.shape).astype(np.float32)
        m = np.zeros((size, size), bool)
        if defect:
            y, x = rng.integers(4, size - 12, size=2)
            img[y : y + 8, x : x + 8] = 2.5
            m[y : y + 8, x : x + 8] = True
        out.append(np.repeat(img[None], 3, 0))
        masks.append(m)
    return torch.from_numpy(np.stack(out)), np.stack(masks)


def make_model(**kw):
    cfg = dict(backbone="resnet18", allow_random=True, layers=["layer1", "layer2"], image_size=[64, 64],
               coreset_ratio=0.25, num_neighbors=3, embedding_dim=96, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3)
    cfg.update(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        return pc.PatchCore(cfg)


def auroc(scores, labels):
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    train, _ = textures(12, rng)
    val, _ = textures(3, rng)
    model = make_model()
    stats = model.fit(train, val=val, progress=False)
    return model, stats


def test_channel_pool_matches_adaptive_avg_pool():
    x = torch.randn(5, 7, 128)
    for d in (1, 13, 64, 100, 128):
        ref = torch.nn.functional.adaptive_avg_pool1d(x.reshape(-1, 1, 128), d).reshape(5, 7, d)
        torch.testing.assert_close(x @ pc.channel_pool_matrix(128, d), ref, rtol=1e-5, atol=1e-6)


def test_reweighting_formula_against_numpy():
    rng = np.random.default_rng(1)
    s_star = rng.random(4).astype(np.float32) * 3
    d = (s_star[:, None] + rng.random((4, 5)).astype(np.float32)).astype(np.float32)
    d[:, 0] = s_star  # N_b(m*) contains m* itself
    w = 1 - np.exp(s_star.astype(np.float64)) / np.exp(d.astype(np.float64)).sum(1)
    ref = w * s_star
    np.testing.assert_allclose(post.reweight_scores(s_star, d), ref, rtol=1e-5)
    np.testing.assert_allclose(pc.reweight_scores(torch.from_numpy(s_star), torch.from_numpy(d)).numpy(), ref, rtol=1e-5)
    # stable for large distances (naive exp overflows float32)
    big = post.reweight_scores(s_star + 500, d + 500)
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big, (1 - np.exp(s_star - 0.0) / np.exp(d).sum(1)) * (s_star + 500), rtol=1e-4)


@pytest.mark.parametrize("grid,size,sigma", [((8, 8), (64, 64), 4.0), ((4, 6), (16, 24), 4.0), ((7, 5), (28, 20), 1.5), ((3, 3), (9, 9), 0)])
def test_map_upsample_blur_torch_matches_cv2(grid, size, sigma):
    rng = np.random.default_rng(2)
    p = rng.random((2,) + grid).astype(np.float32) * 5
    t = torch.nn.functional.interpolate(torch.from_numpy(p)[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    t = pc.gaussian_blur(t, sigma).numpy()
    c = post.anomaly_maps(p, size, sigma)
    np.testing.assert_allclose(t, c, atol=1e-5, rtol=1e-5)


def test_detects_bright_defect(fitted):
    model, stats = fitted
    assert stats["bank_size"] == round(12 * 16 * 16 * 0.25)
    assert stats["val_image"]["max"] >= stats["val_image"]["min"] > 0
    rng = np.random.default_rng(5)
    good, _ = textures(6, rng)
    bad, masks = textures(6, rng, defect=True)
    s, maps = model.predict(torch.cat([good, bad]))
    assert s.shape == (12,) and maps.shape == (12, 64, 64)
    assert auroc(s.numpy(), [0] * 6 + [1] * 6) > 0.9
    pm = maps[6:].numpy()
    assert auroc(pm.ravel(), masks.ravel()) > 0.9


def test_predict_matches_export_plus_postprocess(fitted, tmp_path):
    model, _ = fitted
    path = model.save(str(tmp_path / "art"))
    art = load_artifact(path)
    x, _ = textures(3, np.random.default_rng(7), defect=True)
    s, maps = model.predict(x)
    with torch.no_grad():
        emb = model.export_module()(x)
    assert emb.shape == (3, 16 * 16, 96)
    s2, maps2 = post.postprocess({"embeddings": emb.numpy()}, art)
    np.testing.assert_allclose(s2, s.numpy(), atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(maps2, maps.numpy(), atol=1e-4, rtol=1e-5)
    # batch 1 equals the rows of batch 3
    s1, m1 = model.predict(x[1:2])
    torch.testing.assert_close(s1, s[1:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m1, maps[1:2], atol=1e-5, rtol=1e-5)


def test_artifact_round_trip(fitted, tmp_path):
    model, _ = fitted
    path = model.save(str(tmp_path / "art"), thresholds={"image": 1.0})
    art = load_artifact(path)
    assert "memory_bank" in art.tensors and "bank_neighbors" in art.tensors
    assert art.tensors["bank_neighbors"].shape == (model.memory_bank.shape[0], 3)
    assert art.config["grid"] == [16, 16] and art.preprocessing["size"] == [64, 64]
    assert not any(k.startswith("backbone.layer3") for k in art.tensors)  # truncated backbone only
    m2 = pc.PatchCore.from_artifact(art)
    x, _ = textures(2, np.random.default_rng(8), defect=True)
    s, maps = model.predict(x)
    s2, maps2 = m2.predict(x)
    torch.testing.assert_close(s2, s, atol=0, rtol=0)
    torch.testing.assert_close(maps2, maps, atol=0, rtol=0)
    from edgead.models import load_model

    s3, _ = load_model(path).predict(x)
    torch.testing.assert_close(s3, s, atol=0, rtol=0)


def test_corrupt_artifacts_raise(fitted, tmp_path):
    model, _ = fitted
    path = model.save(str(tmp_path / "art"))
    wfile = os.path.join(path, "weights.safetensors")
    # truncated weights file
    data = open(wfile, "rb").read()
    with open(wfile, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ArtifactError):
        load_artifact(path)
    # bank of the wrong width (consistent checksums: rewritten through save_artifact)
    from edgead.artifact import save_artifact

    t = model.artifact_tensors()
    t["memory_bank"] = t["memory_bank"][:, :10]
    p2 = save_artifact(str(tmp_path / "bad"), "patchcore", model.artifact_config(), model.preprocessing().to_dict(), t)
    with pytest.raises(ArtifactError, match="memory_bank"):
        pc.PatchCore.from_artifact(load_artifact(p2))
    t = model.artifact_tensors()
    t["bank_neighbors"] = t["bank_neighbors"] + 10**6
    p3 = save_artifact(str(tmp_path / "bad3"), "patchcore", model.artifact_config(), model.preprocessing().to_dict(), t)
    with pytest.raises(ArtifactError, match="outside"):
        pc.PatchCore.from_artifact(load_artifact(p3))
    t = model.artifact_tensors()
    del t["backbone.conv1.weight"]
    p4 = save_artifact(str(tmp_path / "bad4"), "patchcore", model.artifact_config(), model.preprocessing().to_dict(), t)
    with pytest.raises(ArtifactError, match="missing keys"):
        pc.PatchCore.from_artifact(load_artifact(p4))
    meta = json.load(open(os.path.join(p4, "edgead.json")))
    meta["config"]["grid"] = [3, 3]
    t = model.artifact_tensors()
    p5 = save_artifact(str(tmp_path / "bad5"), "patchcore", meta["config"], model.preprocessing().to_dict(), t)
    with pytest.raises(ArtifactError, match="grid"):
        pc.PatchCore.from_artifact(load_artifact(p5))


def test_config_errors():
    with pytest.raises(ValueError, match="coreset_ratio"):
        make_model(coreset_ratio=0)
    with pytest.raises(ValueError, match="unknown keys"):
        make_model(coreset_ration=0.1)
    with pytest.raises(ValueError, match="no weights"):
        pc.PatchCore({"backbone": "resnet18", "image_size": [32, 32]})
    with pytest.raises(RuntimeError, match="not fitted"):
        make_model().predict(torch.zeros(1, 3, 64, 64))


def test_keep_all_and_no_reweighting():
    rng = np.random.default_rng(3)
    train, _ = textures(2, rng, size=32)
    m = make_model(image_size=[32, 32], coreset_ratio=1.0, num_neighbors=1)
    m.fit(train, progress=False)
    assert m.memory_bank.shape[0] == 2 * 8 * 8
    x, _ = textures(1, rng, size=32, defect=True)
    s, maps = m.predict(x)
    _, dist, _ = m.patch_scores(x)
    torch.testing.assert_close(s, dist.max(dim=1).values)


def test_mobilenet_weights_default_normalisation(mobilenet_weights):
    m = pc.PatchCore({"backbone": "mobilenet_v2", "weights": mobilenet_weights, "image_size": [64, 64]})
    assert m.config["mean"] == [0.5] * 3 and m.config["std"] == [0.5] * 3
    assert m.grid == (8, 8) and m.embedder.embedding_dim == 128
    assert m.artifact_config()["weights"] == os.path.basename(mobilenet_weights)
