"""Mixed supervision (edgead.models.mixed): painters, real-defect validation, training stream, artifact,
--init, ONNX / Detector parity, CLI, and the recall-target threshold (against brute force).

Tiny images (48 px), a few SGD steps and random backbone weights written to a temporary safetensors
file: nothing here reads ../shared."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from edgead import metrics  # noqa: E402
from edgead.data.io import write_image  # noqa: E402

SIZE = 48


def _tex(rng, h=56, w=64):
    base = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.float32), (0, 0), 2)
    return np.clip(base * 0.4 + 90, 0, 255).astype(np.uint8)


def _defect(rng, h=56, w=64):
    img = _tex(rng, h, w)
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (int(rng.integers(15, w - 15)), int(rng.integers(15, h - 15))), 7, 255, -1)
    img[m > 0] = 15
    return img, m


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """An MVTec-layout category and a real-defect folder (masks for 'hole', image labels only for 'weak')."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("mixed_data")
    d = str(root / "cat")
    for i in range(10):
        write_image(os.path.join(d, "train", "good", f"{i:03d}.png"), _tex(rng))
    for i in range(3):
        write_image(os.path.join(d, "test", "good", f"{i:03d}.png"), _tex(rng))
        img, m = _defect(rng)
        write_image(os.path.join(d, "test", "hole", f"{i:03d}.png"), img)
        write_image(os.path.join(d, "ground_truth", "hole", f"{i:03d}_mask.png"), m)
    dd = str(root / "defects")
    for i in range(3):
        img, m = _defect(rng)
        write_image(os.path.join(dd, "hole", f"h{i}.png"), img)
        write_image(os.path.join(dd, "ground_truth", "hole", f"h{i}_mask.png"), m)
        img, _ = _defect(rng)
        write_image(os.path.join(dd, "weak", f"w{i}.png"), img)
    from edgead.models.backbones import FeatureExtractor
    from safetensors.torch import save_file

    torch.manual_seed(0)
    fe = FeatureExtractor("mobilenet_v2", ("layer2", "layer3"))
    w = str(root / "mnv2_random.safetensors")
    save_file({k: v.contiguous() for k, v in fe.state_dict().items()}, w)
    return d, dd, w


def _cfg(weights, **kw):
    cfg = {"weights": weights, "mean": [0.5] * 3, "std": [0.5] * 3, "image_size": [SIZE, SIZE], "batch_size": 4,
           "epochs": 2, "steps_per_epoch": 2, "head_channels": 8, "patience": 5}
    cfg.update(kw)
    return cfg


# ------------------------------------------------------------------------------------------------
# painters and augmentation
# ------------------------------------------------------------------------------------------------
def test_random_walk_defect_changes_only_inside_its_mask():
    from edgead.models.mixed import random_walk_defect

    rng = np.random.default_rng(1)
    for i in range(20):
        img = _tex(rng) if i % 2 else np.repeat(_tex(rng)[:, :, None], 3, axis=2)
        out, mask = random_walk_defect(img, np.random.default_rng(i))
        out2, mask2 = random_walk_defect(img, np.random.default_rng(i))
        assert out.dtype == np.uint8 and out.shape == img.shape and mask.shape == img.shape[:2]
        assert np.array_equal(out, out2) and np.array_equal(mask, mask2)  # deterministic per generator
        changed = (out != img) if img.ndim == 2 else (out != img).any(axis=2)
        assert mask.any() and changed.any()
        assert not (changed & ~mask).any()


def test_augment_moves_image_and_mask_together():
    from edgead.models.mixed import DEFAULTS, augment

    rng = np.random.default_rng(0)
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:20, 5:15] = 255
    mask = img[:, :, 0] > 0
    cfg = dict(DEFAULTS, augment_probability=1.0, brightness=None, contrast=None)
    for _ in range(10):
        a, m = augment(img, mask, rng, cfg)
        bright = a[:, :, 0] > 127
        # nearest-neighbour mask vs bilinear image: they agree except along the square's edge
        assert (bright ^ m).sum() <= 0.5 * max(m.sum(), 1) + 4


# ------------------------------------------------------------------------------------------------
# real defects: discovery and validation (every failure names the file)
# ------------------------------------------------------------------------------------------------
def test_load_real_defects_layouts(tiny_data, tmp_path):
    from edgead.models.mixed import load_real_defects

    _, dd, _ = tiny_data
    found = load_real_defects(dd)
    assert sorted({d.defect_type for d in found}) == ["hole", "weak"]
    assert all((d.mask_path is None) == (d.defect_type == "weak") for d in found)
    assert len(load_real_defects(dd, max_defects=2)) == 2
    # an MVTec category root: test/<type> with ground_truth/<type>
    cat, _, _ = tiny_data
    mv = load_real_defects(cat)
    assert len(mv) == 3 and all(d.mask_path for d in mv)
    # a flat folder: image-level labels only
    write_image(str(tmp_path / "a.png"), _tex(np.random.default_rng(0)))
    flat = load_real_defects(str(tmp_path))
    assert len(flat) == 1 and flat[0].mask_path is None
    with pytest.raises(ValueError, match="does not exist"):
        load_real_defects(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ValueError, match="no defect images"):
        load_real_defects(str(tmp_path / "empty"))


def test_validate_mask_errors_name_the_file(tmp_path):
    from edgead.models.mixed import validate_mask

    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:10] = 255
    good = str(tmp_path / "good_mask.png")
    write_image(good, m)
    assert validate_mask(good, (20, 30)).sum() == 25
    assert validate_mask(good, (20, 30, 3)).sum() == 25
    with pytest.raises(ValueError, match="good_mask.png.*differs"):
        validate_mask(good, (21, 30))
    soft = m.copy()
    soft[10, 5:10] = 100  # anti-aliased edge
    sp = str(tmp_path / "soft_mask.png")
    write_image(sp, soft)
    with pytest.raises(ValueError, match="soft_mask.png.*not binary"):
        validate_mask(sp, (20, 30))
    assert validate_mask(sp, (20, 30), threshold=128).sum() == 25
    assert validate_mask(sp, (20, 30), threshold=50).sum() == 30
    ep = str(tmp_path / "empty_mask.png")
    write_image(ep, np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match="empty_mask.png.*no defect pixel"):
        validate_mask(ep, (20, 30))
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[2:4, 2:4, 0] = 255
    cp = str(tmp_path / "colour_mask.png")
    write_image(cp, rgb)
    with pytest.raises(ValueError, match="colour_mask.png.*single-channel"):
        validate_mask(cp, (20, 30))


def test_training_rejects_bad_real_defect_files(tiny_data, tmp_path):
    from edgead.data.datasets import Sample
    from edgead.models.mixed import MixedSupervision

    cat, _, w = tiny_data
    rng = np.random.default_rng(0)
    img, m = _defect(rng)
    write_image(str(tmp_path / "d" / "scratch" / "x.png"), img)
    write_image(str(tmp_path / "d" / "ground_truth" / "scratch" / "x_mask.png"), cv2.resize(m, (32, 32)))
    train = [Sample(os.path.join(cat, "train", "good", f"{i:03d}.png"), 0, "good") for i in range(4)]
    model = MixedSupervision(_cfg(w, defects=str(tmp_path / "d"), mask_threshold=128))
    with pytest.raises(ValueError, match="x_mask.png"):
        model.fit(train, None, progress=False)
    # an unreadable image names its file too
    open(tmp_path / "d" / "scratch" / "x.png", "wb").write(b"not an image")
    with pytest.raises(ValueError, match="x.png"):
        MixedSupervision(_cfg(w, defects=str(tmp_path / "d"))).fit(train, None, progress=False)


def test_config_validation(tiny_data):
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    for bad, match in (({"real_probability": 1.5}, "real_probability"), ({"painters": {"nope": 1}}, "painters"),
                       ({"backbone": "vgg"}, "backbone"), ({"epochs": 0}, "epochs"), ({"typo_key": 1}, "typo_key"),
                       ({"image_size": [16, 16]}, "image_size")):
        with pytest.raises(ValueError, match=match):
            MixedSupervision(_cfg(w, **bad))


# ------------------------------------------------------------------------------------------------
# training stream and losses
# ------------------------------------------------------------------------------------------------
def test_stream_balance_and_real_injection(tiny_data):
    from edgead.models.mixed import MixedSupervision, _check_painters

    cat, dd, w = tiny_data
    model = MixedSupervision(_cfg(w, defects=dd, real_probability=0.25))
    normals = [model._uint8(os.path.join(cat, "train", "good", f"{i:03d}.png")) for i in range(4)]
    defects = model._load_defects(progress=False)
    assert len(defects) == 6 and sum(m is None for _, m, _ in defects) == 3
    names, probs = _check_painters(model.config["painters"])
    rng = np.random.default_rng(0)
    kinds = [model._sample(normals, defects, rng, names, probs)[4] for _ in range(800)]
    n_real = kinds.count("real")
    assert 0.25 * 800 - 50 < n_real < 0.25 * 800 + 50
    n_normal = kinds.count("normal")
    n_syn = len(kinds) - n_real - n_normal
    assert abs(n_normal - n_syn) < 0.15 * (n_normal + n_syn)  # synthetic defects in ~50 % of the normal images
    assert kinds.count("walk") > kinds.count("spot")  # painter weights 0.5 vs 0.1


def test_weak_labels_get_only_the_classification_loss(tiny_data):
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    model = MixedSupervision(_cfg(w))
    img = np.full((SIZE, SIZE, 3), 120, np.uint8)
    weak = [(img, None, 1, False, "real")] * 2
    x, m, y, has = model._batch(weak, "cpu")
    loss, l_cls, l_seg = model._loss(x, m, y, has)
    assert float(l_seg) == 0.0 and torch.allclose(loss, l_cls)
    # with a mask the segmentation loss is there
    full = [(img, np.ones((SIZE, SIZE), bool), 1, True, "real")] * 2
    x, m, y, has = model._batch(full, "cpu")
    _, _, l_seg = model._loss(x, m, y, has)
    assert float(l_seg.detach()) > 0


def test_segmentation_gradient_absent_for_weak_labels(tiny_data):
    """The classifier sees max/mean of the segmentation logits, so seg_out gets a gradient from the image
    loss too; what must be absent is the pixel loss: compare against the classification loss alone."""
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    model = MixedSupervision(_cfg(w))
    img = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3)).astype(np.uint8)
    x, m, y, has = model._batch([(img, None, 1, False, "real")], "cpu")
    loss, _, _ = model._loss(x, m, y, has)
    g1 = torch.autograd.grad(loss, model.net.seg_out.weight)[0]
    seg, cls = model.net.logits(x)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(cls, y)
    g2 = torch.autograd.grad(ref, model.net.seg_out.weight)[0]
    assert torch.allclose(g1, g2)


# ------------------------------------------------------------------------------------------------
# fit, artifact, --init, ONNX / Detector, CLI
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    from edgead import pipeline

    cat, dd, w = tiny_data
    out = str(tmp_path_factory.mktemp("mixed_art") / "art")
    path = pipeline.train({"model": "mixed", "config": _cfg(w, defects=dd, real_probability=0.5)}, cat, out,
                          device="cpu", progress=False, overrides={"val_fraction": 0.2})
    return path


def test_fit_artifact_roundtrip_and_stats(trained, tiny_data):
    from edgead.artifact import load_artifact
    from edgead.data.transforms import Preprocessing
    from edgead.models import load_model

    art = load_artifact(trained)
    st = art.statistics["mixed"]
    assert st["n_real_defects"] == 6 and st["n_real_with_mask"] == 3 and st["epochs_run"] == 2
    assert st["stream_counts"].get("real", 0) > 0 and len(st["history"]) == 2 and "val_loss" in st["history"][0]
    assert art.thresholds.get("image") is not None
    model = load_model(trained)
    x = torch.from_numpy(Preprocessing.from_dict(art.preprocessing).batch(
        [_tex(np.random.default_rng(i)) for i in range(3)]))
    s, m = model.predict(x)
    assert s.shape == (3,) and m.shape == (3, SIZE, SIZE)
    assert float(s.min()) >= 0 and float(s.max()) <= 1 and float(m.min()) >= 0 and float(m.max()) <= 1
    s2, m2 = load_model(trained).predict(x)
    assert torch.equal(s, s2) and torch.equal(m, m2)


def test_init_continues_from_an_artifact(trained, tiny_data, tmp_path):
    from edgead.artifact import load_artifact
    from edgead.models.mixed import MixedSupervision

    cat, dd, w = tiny_data
    from edgead.data.datasets import Sample

    train = [Sample(os.path.join(cat, "train", "good", f"{i:03d}.png"), 0, "good") for i in range(4)]
    # zero epochs of change is not allowed, so check the loaded state directly: lr 0 keeps the weights
    model = MixedSupervision(_cfg(w, init=trained, lr=0.0, lr_min=0.0, epochs=1, steps_per_epoch=1))
    model.fit(train, None, progress=False)
    ref = load_artifact(trained).tensors
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and not k.endswith("num_batches_tracked"):
            assert np.allclose(v.numpy(), ref[k], atol=1e-6), k
    with pytest.raises(ValueError, match="head_channels"):
        MixedSupervision(_cfg(w, init=trained, head_channels=16)).fit(train, None, progress=False)


def test_onnx_and_detector_match_predict(trained):
    pytest.importorskip("onnxruntime")
    from edgead.data.transforms import Preprocessing
    from edgead.export.onnx import export_onnx
    from edgead.models import load_model
    from edgead.runtime.detector import Detector

    export_onnx(trained)
    model = load_model(trained)
    imgs = [_tex(np.random.default_rng(10 + i), SIZE, SIZE) for i in range(3)]
    pre = Preprocessing.from_dict(model.preprocessing().to_dict())
    s, m = model.predict(torch.from_numpy(pre.batch(imgs)))
    res = Detector.load(trained, backend="onnxruntime", device="cpu")(imgs)
    np.testing.assert_allclose(res.scores, s.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.anomaly_maps), m.numpy(), atol=1e-4)


def test_cli_train_defects_init_and_eval(tiny_data, tmp_path):
    import yaml

    from edgead.cli import main

    cat, dd, w = tiny_data
    recipe = str(tmp_path / "mixed_tiny.yaml")
    with open(recipe, "w") as f:
        yaml.safe_dump({"model": "mixed", "config": _cfg(w, epochs=1, steps_per_epoch=1)}, f)
    a0, a1 = str(tmp_path / "a0"), str(tmp_path / "a1")
    assert main(["train", recipe, cat, a0, "--quiet", "--device", "cpu"]) == 0  # cold start
    assert main(["train", recipe, cat, a1, "--defects", dd, "--init", a0, "--quiet", "--device", "cpu"]) == 0
    from edgead.artifact import read_meta

    meta = read_meta(a1)
    assert meta["config"]["init"] == a0 and meta["statistics"]["mixed"]["n_real_defects"] == 6
    assert main(["eval", a1, cat, "--out", str(tmp_path / "ev"), "--quiet", "--device", "cpu",
                 "--set-threshold", "recall"]) == 0
    meta = read_meta(a1)
    assert meta["thresholds"]["image"] == meta["thresholds"]["candidates"]["image_recall0.95"]
    # --defects is for the mixed model only
    assert main(["train", "patchcore_mobilenet_v2", cat, str(tmp_path / "pc"), "--defects", dd, "--quiet"]) == 2


# ------------------------------------------------------------------------------------------------
# the industrial operating point: recall >= target, FPR there (against brute force)
# ------------------------------------------------------------------------------------------------
def _brute(s, y, target):
    best = None
    for t in sorted(set(s.tolist()), reverse=True):  # highest threshold first
        pred = s >= t
        if pred[y == 1].mean() >= target:
            best = t
            break
    fpr = float((s[y == 0] >= best).mean())
    return best, fpr


@pytest.mark.parametrize("seed", range(30))
def test_threshold_at_recall_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1
    s = np.round(rng.normal(size=n) + y * rng.uniform(0, 2), int(rng.integers(0, 3)))  # ties when rounded
    for target in (0.0, 0.5, 0.8, 0.95, 1.0, float(rng.uniform())):
        t_ref, f_ref = _brute(s, y, target)
        assert metrics.threshold_at_recall(s, y, target) == t_ref
        f, t = metrics.fpr_at_recall(s, y, target)
        assert t == t_ref and f == pytest.approx(f_ref)
        assert metrics.recall_at_threshold(s, y, t) >= target


def test_threshold_at_recall_input_errors():
    with pytest.raises(ValueError, match="target_recall"):
        metrics.threshold_at_recall([0.1, 0.2], [0, 1], 1.5)
    with pytest.raises(ValueError, match="no 1"):
        metrics.threshold_at_recall([0.1, 0.2], [0, 0], 0.9)
    with pytest.raises(ValueError, match="no 0"):
        metrics.fpr_at_recall([0.1, 0.2], [1, 1], 0.9)
    m = metrics.evaluate(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    assert m["image_fpr_at_recall"] == 0.5 and m["image_recall_threshold"] == 0.35


# ------------------------------------------------------------------------------------------------
# the normality prior (normal_prior: knn)
# ------------------------------------------------------------------------------------------------
def _prior_cfg(w, **kw):
    return _cfg(w, **{"normal_prior": "knn", "prior_bank_size": 40, "prior_candidates": 300, **kw})


def _brute_nn(q, bank):
    """Plain NumPy float64: distance of every row of q to its nearest bank row."""
    q, bank = np.asarray(q, np.float64), np.asarray(bank, np.float64)
    return np.sqrt(((q[:, None, :] - bank[None, :, :]) ** 2).sum(-1)).min(axis=1)


@pytest.mark.parametrize("seed", range(3))
def test_prior_distance_matches_brute_force(tiny_data, seed):
    from edgead.models.mixed import MixedNet
    from edgead.ops_reference import knn_reference

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = MixedNet("mobilenet_v2", ["layer2", "layer3"], 8, 1.0, normal_prior="knn").eval()
    c = net.prior_embedder.feature_dim
    x = torch.from_numpy(rng.normal(size=(2, 3, SIZE, SIZE)).astype(np.float32))
    with torch.no_grad():
        q = net.prior_embed(x).reshape(-1, c)
    bank = rng.normal(size=(int(rng.integers(5, 60)), c)).astype(np.float32) * float(q.std())
    bank[:3] = q[:3].numpy()  # exact hits: the clamp must give 0, not NaN
    net.set_prior(torch.from_numpy(bank), 2.5)
    with torch.no_grad():
        d = net.prior_distance(q[None])[0].numpy()
    ref = _brute_nn(q.numpy(), bank)
    scale = max(1.0, float(ref.max()))
    np.testing.assert_allclose(d, ref, atol=2e-3 * scale, rtol=1e-3)
    assert np.all(np.isfinite(d)) and np.all(d[:3] < 2e-3 * scale)
    np.testing.assert_allclose(d, knn_reference(q.numpy(), bank, k=1)[0][:, 0], atol=2e-3 * scale, rtol=1e-3)
    # the map the heads see is that distance / scale on the first tap's grid
    seen = {}
    hook = net.seg[0].register_forward_hook(lambda m, i, o: seen.update(x=i[0]))  # returns None
    with torch.no_grad():
        net.logits(torch.from_numpy(rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32)))
    hook.remove()
    assert seen["x"].shape[1] == 9  # head_channels 8 + the prior channel


@pytest.mark.parametrize("n_images,candidates", [(37, 10_000), (37, 500), (3, 50)])
def test_prior_candidates_are_a_uniform_sample_streamed_in_batches(tiny_data, n_images, candidates):
    """_fit_prior streams the embeddings 16 images at a time: with candidates >= all patches the bank is
    every training patch exactly once; with fewer, distinct patches of the training images, spread over
    all the batches (not only the first)."""
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    rng = np.random.default_rng(n_images)
    model = MixedSupervision(_prior_cfg(w, prior_candidates=candidates, prior_bank_size=10_000))
    imgs = [model._resize(_tex(rng)) for _ in range(n_images)]  # as fit holds them: RGB at image_size
    info = model._fit_prior(imgs, [], "cpu", False)
    emb = model._prior_embeddings(imgs, "cpu")
    n_patch = emb.shape[1]
    allrows = emb.reshape(-1, emb.shape[-1]).numpy()
    bank = model.net.prior_bank.numpy()
    assert info["patches"] == n_images * n_patch and info["scale_from"] == "training"
    assert bank.shape[0] == min(candidates, n_images * n_patch)
    d = np.sqrt(((bank[:, None, :] - allrows[None, :, :]) ** 2).sum(-1))
    src = d.argmin(axis=1)
    assert np.all(d.min(axis=1) < 1e-4)          # every bank row is a training patch ...
    assert len(np.unique(src)) == bank.shape[0]  # ... and no patch is taken twice
    if bank.shape[0] < n_images * n_patch and n_images > 16:
        assert (src // n_patch).max() >= 32       # the last batch of 16 images contributes too


@pytest.fixture(scope="module")
def trained_prior(tiny_data, tmp_path_factory):
    from edgead import pipeline

    cat, dd, w = tiny_data
    out = str(tmp_path_factory.mktemp("mixed_prior") / "art")
    return pipeline.train({"model": "mixed", "config": _prior_cfg(w, defects=dd, real_probability=0.5)}, cat, out,
                          device="cpu", progress=False, overrides={"val_fraction": 0.2})


def test_prior_bank_is_fitted_on_normal_patches(trained_prior, tiny_data):
    """Bank rows are patches of the normal training images (no augmentation); the scale is the 0.99
    quantile of the held-out normal images' brute-force NN distances."""
    from edgead.artifact import load_artifact
    from edgead.data.datasets import MVTecDataset
    from edgead.models import load_model

    cat, _, _ = tiny_data
    art = load_artifact(trained_prior)
    st = art.statistics["mixed"]
    assert st["normal_prior"] == "knn" and st["prior"]["bank_rows"] == 40 and st["prior"]["scale_from"] == "validation"
    model = load_model(trained_prior)
    bank = art.tensors["net.prior_bank"]
    assert bank.shape == (40, model.net.prior_embedder.feature_dim)
    assert float(art.tensors["net.prior_scale"][0]) == pytest.approx(st["prior"]["scale"])
    train, val = MVTecDataset(cat).split_validation(0.2, 0)  # what pipeline.train used

    def emb(samples):
        imgs = [model._uint8(s.path) for s in samples]
        return model._prior_embeddings(imgs, "cpu").reshape(-1, bank.shape[1]).numpy()

    assert np.all(_brute_nn(bank, emb(train)) < 1e-4)  # every bank row is a training patch
    d_val = _brute_nn(emb(val), bank)
    assert float(art.tensors["net.prior_scale"][0]) == pytest.approx(np.quantile(d_val, 0.99), rel=1e-3, abs=1e-4)


def test_prior_artifact_roundtrip_and_onnx_parity(trained_prior):
    pytest.importorskip("onnxruntime")
    from edgead.data.transforms import Preprocessing
    from edgead.export.onnx import export_onnx
    from edgead.models import load_model
    from edgead.runtime.detector import Detector

    model = load_model(trained_prior)
    assert model.net.normal_prior == "knn" and model.net.prior_bank.shape[0] == 40
    assert not model.net.share_prior_backbone  # backbone fine-tuned (backbone_lr_scale 0.1): its own copy
    export_onnx(trained_prior)
    imgs = [_tex(np.random.default_rng(20 + i), SIZE, SIZE) for i in range(2)]
    imgs.append(_defect(np.random.default_rng(30), SIZE, SIZE)[0])
    pre = Preprocessing.from_dict(model.preprocessing().to_dict())
    s, m = model.predict(torch.from_numpy(pre.batch(imgs)))
    s2, m2 = load_model(trained_prior).predict(torch.from_numpy(pre.batch(imgs)))
    assert torch.equal(s, s2) and torch.equal(m, m2)
    res = Detector.load(trained_prior, backend="onnxruntime", device="cpu")(imgs)
    np.testing.assert_allclose(res.scores, s.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.anomaly_maps), m.numpy(), atol=1e-4)
    import onnx

    g = onnx.load(os.path.join(trained_prior, "model.onnx")).graph
    assert [o.name for o in g.output][:2] == ["score", "map"] and [i.name for i in g.input] == ["image"]


def test_prior_init_keeps_the_bank_and_checks_the_prior(trained_prior, trained, tiny_data):
    from edgead.artifact import load_artifact
    from edgead.data.datasets import Sample
    from edgead.models.mixed import MixedSupervision

    cat, _, w = tiny_data
    train = [Sample(os.path.join(cat, "train", "good", f"{i:03d}.png"), 0, "good") for i in range(4)]
    model = MixedSupervision(_prior_cfg(w, init=trained_prior, lr=0.0, lr_min=0.0, epochs=1, steps_per_epoch=1,
                                        prior_bank_size=7))
    st = model.fit(train, None, progress=False)["mixed"]
    assert st["prior"] is None  # not refitted
    ref = load_artifact(trained_prior).tensors
    np.testing.assert_array_equal(model.net.prior_bank.numpy(), ref["net.prior_bank"])
    assert float(model.net.prior_scale[0]) == float(ref["net.prior_scale"][0])
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            assert np.allclose(v.numpy(), ref[k], atol=1e-6), k
    # a prior-less artifact cannot continue as a prior model, nor the reverse
    with pytest.raises(ValueError, match="normal_prior"):
        MixedSupervision(_prior_cfg(w, init=trained)).fit(train, None, progress=False)
    with pytest.raises(ValueError, match="normal_prior"):
        MixedSupervision(_cfg(w, init=trained_prior)).fit(train, None, progress=False)


def test_frozen_backbone_shares_the_prior_maps(tiny_data):
    """backbone_lr_scale 0: the backbone gets no gradient and does not move; it then equals the prior's
    frozen copy, whose maps it serves (same output as computing them twice)."""
    from edgead.data.datasets import Sample
    from edgead.models.backbones import build_backbone
    from edgead.models.mixed import MixedSupervision

    cat, _, w = tiny_data
    train = [Sample(os.path.join(cat, "train", "good", f"{i:03d}.png"), 0, "good") for i in range(6)]
    model = MixedSupervision(_prior_cfg(w, backbone_lr_scale=0.0, epochs=1, steps_per_epoch=2))
    before = {k: v.clone() for k, v in model.net.proj.state_dict().items()}
    st = model.fit(train, None, progress=False)["mixed"]
    assert st["backbone_frozen"] and model.net.share_prior_backbone
    assert not any(p.requires_grad for p in model.net.backbone.parameters())
    ref = build_backbone("mobilenet_v2", ["layer2", "layer3"], weights=w).state_dict()
    for k, v in model.net.backbone.state_dict().items():
        assert torch.equal(v, ref[k]), k
    assert any(not torch.equal(v, model.net.proj.state_dict()[k]) for k, v in before.items())  # heads trained
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32))
    s1, m1 = model.predict(x)
    model.net.share_prior_backbone = False
    s2, m2 = model.predict(x)
    torch.testing.assert_close(s1, s2) and torch.testing.assert_close(m1, m2)


def test_prior_config_validation(tiny_data):
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    for bad, key in (({"normal_prior": "faiss"}, "normal_prior"), ({"prior_bank_size": 0}, "prior_bank_size"),
                     ({"prior_candidates": 2.5}, "prior_candidates"), ({"prior_quantile": 0.0}, "prior_quantile"),
                     ({"prior_quantile": 1.5}, "prior_quantile"), ({"backbone_lr_scale": -1}, "backbone_lr_scale"),
                     ({"backbone_lr_scale": float("nan")}, "backbone_lr_scale")):
        with pytest.raises(ValueError, match=key):
            MixedSupervision(_cfg(w, **bad))


def test_prior_heads_start_as_the_prior(tiny_data):
    """Untrained, the prior net scores an image as PRIOR_GAIN * (max d - PRIOR_IMAGE_AT) and its map as
    sigmoid(PRIOR_GAIN * (d - 1)) up to the (small) random head contribution to the map."""
    from edgead.models.mixed import PRIOR_GAIN, PRIOR_IMAGE_AT, MixedNet

    torch.manual_seed(0)
    net = MixedNet("mobilenet_v2", ["layer2", "layer3"], 8, 1.0, normal_prior="knn").eval()
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(3, 3, SIZE, SIZE)).astype(np.float32))
    with torch.no_grad():
        xb = torch.nn.functional.conv2d(x, net.blur, padding=1, groups=3)
        q = net.prior_embed(xb)
        net.set_prior(q[0, :5] * 1.3, 0.7)
        d = net.prior_distance(q) / 0.7
        seg, cls = net.logits(x)
    torch.testing.assert_close(cls, PRIOR_GAIN * (d.amax(dim=1) - PRIOR_IMAGE_AT))
    h = net.seg_out.weight[0, :8].abs().sum()
    assert seg.shape == (3, 1, 6, 6) and float(h) > 0


# ------------------------------------------------------------------------------------------------
# real-defect calibration of the image score (calibration: auto)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,c", [(0, 0.01), (1, 0.1), (2, 1.0), (3, 100.0)])
def test_balanced_logistic_matches_scikit_learn(seed, c):
    sklearn = pytest.importorskip("sklearn.linear_model")
    from edgead.models.mixed import balanced_logistic

    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    x = rng.normal(size=(n, 4)) * rng.uniform(0.2, 3.0, size=4)
    y = (rng.random(n) < 0.2).astype(int)
    y[:2] = [0, 1]
    x[y == 1] += rng.normal(size=4)
    if seed == 3:
        x[:, 1] = 0.5  # a constant input
        x[y == 1, 0] += 20.0  # separable along one input: the L2 term keeps the solution finite
    w, b = balanced_logistic(x, y, c)
    ref = sklearn.LogisticRegression(C=c, class_weight="balanced", tol=1e-12, max_iter=100_000).fit(x, y)
    np.testing.assert_allclose(w, ref.coef_[0], atol=1e-5 * max(1.0, np.abs(ref.coef_).max()))
    assert b == pytest.approx(ref.intercept_[0], abs=1e-5 * max(1.0, abs(ref.intercept_[0])))


def test_balanced_logistic_input_errors():
    from edgead.models.mixed import balanced_logistic

    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="both labels"):
        balanced_logistic(x, np.zeros(4, int), 1.0)
    with pytest.raises(ValueError, match="both labels"):
        balanced_logistic(x, np.array([0, 1, 2, 1]), 1.0)
    with pytest.raises(ValueError, match="expected x"):
        balanced_logistic(x, np.zeros(3, int), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        balanced_logistic(np.full((4, 2), np.nan), np.array([0, 1, 0, 1]), 1.0)
    import warnings

    with warnings.catch_warnings():  # a far outlier: no numpy warning, finite, equal to scikit-learn
        warnings.simplefilter("error")
        x = np.r_[np.zeros((5, 1)), np.full((5, 1), 1000.0), [[-1.0e6]]]
        w, b = balanced_logistic(x, np.r_[[0] * 5, [1] * 6], 100.0)
    assert np.isfinite(w).all() and np.isfinite(b)
    sklearn = pytest.importorskip("sklearn.linear_model")
    ref = sklearn.LogisticRegression(C=100.0, class_weight="balanced", tol=1e-12, max_iter=100_000).fit(x, np.r_[[0] * 5, [1] * 6])
    assert w[0] == pytest.approx(ref.coef_[0, 0], rel=1e-4) and b == pytest.approx(ref.intercept_[0], rel=1e-4)


def test_calibration_refits_the_classifier_on_the_real_defects(trained_prior, tiny_data):
    """trained_prior has 6 real defects (3 masks, 3 image labels) and 2 validation normals: its classifier
    is scikit-learn's class-balanced logistic regression on the standardised classifier inputs of those
    images (computed here from the loaded artifact), folded into the linear layer."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    from edgead.artifact import load_artifact
    from edgead.data.datasets import MVTecDataset
    from edgead.data.io import read_image, to_uint8
    from edgead.models import load_model
    from edgead.models.mixed import load_real_defects

    cat, dd, _ = tiny_data
    st = load_artifact(trained_prior).statistics["mixed"]["calibration"]
    assert st["applied"] and st["n_real_defects"] == 6 and st["normals_from"] == "validation"
    model = load_model(trained_prior)
    _, val = MVTecDataset(cat).split_validation(0.2, 0)  # what pipeline.train used
    assert st["n_normal"] == len(val) >= 2
    with torch.no_grad():
        xn = model.net.heads(model._normalise([model._uint8(s.path) for s in val]))[1].double().numpy()
        imgs = [model._resize(to_uint8(read_image(d.path))) for d in load_real_defects(dd)]
        xd = model.net.heads(model._normalise(imgs))[1].double().numpy()
    mu, sd = xn.mean(0), xn.std(0)
    x = (np.concatenate([xn, xd]) - mu) / sd
    y = np.r_[np.zeros(len(xn), int), np.ones(len(xd), int)]
    ref = sklearn.LogisticRegression(C=0.1, class_weight="balanced", tol=1e-12, max_iter=100_000).fit(x, y)
    w = model.net.cls.weight.detach().double().numpy()[0]
    b = float(model.net.cls.bias)
    np.testing.assert_allclose(w * sd, ref.coef_[0], rtol=1e-4, atol=1e-5)
    assert b + float((w * mu).sum()) == pytest.approx(ref.intercept_[0], rel=1e-4, abs=1e-5)
    assert st["trained_weight"] != w.tolist()
    # the model's score is that classifier's probability
    with torch.no_grad():
        s, _ = model.net(model._normalise(imgs))
    np.testing.assert_allclose(s.double().numpy(), ref.predict_proba((xd - mu) / sd)[:, 1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["none", "too_few", "no_prior"])
def test_calibration_is_skipped_with_its_reason(tiny_data, case):
    from edgead.data.datasets import MVTecDataset
    from edgead.models.mixed import MixedSupervision

    cat, dd, w = tiny_data
    kw = {"defects": dd, "epochs": 1, "steps_per_epoch": 1}
    cfg = {"none": _prior_cfg(w, calibration="none", **kw), "too_few": _prior_cfg(w, max_defects=4, **kw),
           "no_prior": _cfg(w, **kw)}[case]
    model = MixedSupervision(cfg)
    train, val = MVTecDataset(cat).split_validation(0.2, 0)
    seen = {}
    orig = model._calibrate

    def spy(*a, **k):
        seen["before"] = [p.detach().clone() for p in model.net.cls.parameters()]
        return orig(*a, **k)

    model._calibrate = spy
    st = model.fit(train, val, progress=False)["mixed"]["calibration"]
    assert not st["applied"]
    assert {"none": "calibration: none", "too_few": "4 real defects < calibration_min_defects 5",
            "no_prior": "normal_prior: knn"}[case] in st["reason"]
    assert all(torch.equal(a, p) for a, p in zip(seen["before"], model.net.cls.parameters()))


def test_calibration_config_validation(tiny_data):
    from edgead.models.mixed import MixedSupervision

    _, _, w = tiny_data
    for bad, key in (({"calibration": "always"}, "calibration"), ({"calibration_c": 0}, "calibration_c"),
                     ({"calibration_c": float("inf")}, "calibration_c"), ({"calibration_c": True}, "calibration_c"),
                     ({"calibration_min_defects": 0}, "calibration_min_defects")):
        with pytest.raises(ValueError, match=key):
            MixedSupervision(_cfg(w, **bad))


@pytest.mark.parametrize("name", ["mixed", "mixed_resnet18", "mixed_prior"])
def test_mixed_recipes_load_and_build(name, tiny_data):
    """The shipped recipes are valid configs; mixed_prior is the measured prior + calibration setup."""
    from edgead.cli import _recipe_path
    from edgead.models.mixed import MixedSupervision
    from edgead.pipeline import load_recipe

    _, _, w = tiny_data
    recipe = load_recipe(_recipe_path(name), {"weights": w})
    assert recipe["model"] == "mixed"
    cfg = MixedSupervision(recipe["config"]).config
    assert cfg["calibration"] == "auto" and cfg["calibration_min_defects"] == 5
    if name == "mixed_prior":
        assert cfg["normal_prior"] == "knn" and cfg["backbone_lr_scale"] == 0
        assert (cfg["epochs"], cfg["steps_per_epoch"], cfg["t0_epochs"], cfg["patience"]) == (8, 50, 8, 3)
    else:
        assert cfg["normal_prior"] == "none" and cfg["backbone_lr_scale"] == 0.1  # the paper's model


def test_init_with_new_defects_recalibrates(trained_prior, tiny_data):
    """Growth path: --init an artifact and give defects; with lr 0 the heads stay the artifact's and only
    the classifier is refitted (here against the training images: no validation split, with a warning)."""
    from edgead.artifact import load_artifact
    from edgead.data.datasets import Sample
    from edgead.models.mixed import MixedSupervision

    cat, dd, w = tiny_data
    train = [Sample(os.path.join(cat, "train", "good", f"{i:03d}.png"), 0, "good") for i in range(6)]
    model = MixedSupervision(_prior_cfg(w, init=trained_prior, defects=dd, lr=0.0, lr_min=0.0, epochs=1,
                                        steps_per_epoch=1))
    with pytest.warns(UserWarning, match="calibrating against the training images"):
        st = model.fit(train, None, progress=False)["mixed"]["calibration"]
    assert st["applied"] and st["normals_from"] == "training" and st["n_normal"] == 6 and st["n_real_defects"] == 6
    ref = load_artifact(trained_prior).tensors
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and not k.startswith("net.cls."):
            assert np.allclose(v.numpy(), ref[k], atol=1e-6), k
    np.testing.assert_allclose(model.net.cls.weight.detach().numpy()[0], st["weight"], rtol=1e-6)
    assert not np.allclose(model.net.cls.weight.detach().numpy(), ref["net.cls.weight"])


def test_fit_is_reproducible_for_a_seed(tiny_data):
    """Same config and seed: bit-identical weights (head initialisation included), whatever the global RNG
    holds; another seed: different weights. The global RNG is not reseeded by building the model."""
    from edgead.data.datasets import MVTecDataset
    from edgead.models.mixed import MixedSupervision

    cat, dd, w = tiny_data
    train, val = MVTecDataset(cat).split_validation(0.2, 0)

    def fit(seed, noise):
        torch.manual_seed(noise)  # a different global RNG state before each model is built
        m = MixedSupervision(_prior_cfg(w, defects=dd, seed=seed, epochs=1, steps_per_epoch=2))
        after_build = torch.rand(1)
        torch.manual_seed(noise)
        assert torch.equal(after_build, torch.rand(1))  # building did not consume or reseed the global RNG
        m.fit(train, val, progress=False)
        return {k: v.clone() for k, v in m.state_dict().items()}

    a, b, c = fit(0, 1), fit(0, 2), fit(1, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a if k.startswith("net.seg"))
