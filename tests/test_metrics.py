"""edgead.metrics against scikit-learn and hand-computed values; input validation; plots."""
import os
import subprocess
import sys

import numpy as np
import pytest

from edgead import metrics
from edgead import ops_reference as R

sk = pytest.importorskip("sklearn.metrics")


def data(rng, n, ties=None, pos=0.3):
    y = (rng.random(n) < pos).astype(np.int64)
    y[0], y[1] = 0, 1
    s = rng.standard_normal(n) + y
    if ties:
        s = np.round(s * ties) / ties
    return s, y


# ----------------------------------------------------------------------------------------------
# against scikit-learn
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", [None, 1, 4])
@pytest.mark.parametrize("n", [2, 7, 100, 5000])
def test_auroc_ap_match_sklearn(rng, n, ties):
    s, y = data(rng, n, ties)
    assert metrics.auroc(s, y) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert metrics.average_precision(s, y) == pytest.approx(sk.average_precision_score(y, s), abs=1e-12)
    fpr, tpr, thr = metrics.roc_curve(s, y)
    f2, t2, th2 = sk.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, f2, atol=1e-15)
    np.testing.assert_allclose(tpr, t2, atol=1e-15)
    np.testing.assert_array_equal(thr[1:], th2[1:])
    p, r, t = metrics.pr_curve(s, y)
    p2, r2, t2 = sk.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, p2[:-1][::-1], atol=1e-15)
    np.testing.assert_allclose(r, r2[:-1][::-1], atol=1e-15)
    np.testing.assert_array_equal(t, t2[::-1])


def test_f1_mcc_fpr_recall_match_sklearn(rng):
    s, y = data(rng, 400, ties=3)
    f1, t = metrics.f1_max(s, y)
    best = max(sk.f1_score(y, s >= th) for th in np.unique(s))
    assert f1 == pytest.approx(best, abs=1e-12)
    assert sk.f1_score(y, s >= t) == pytest.approx(f1, abs=1e-12)
    for th in (-1.0, 0.0, 0.5, float(np.median(s)), 10.0):
        assert metrics.mcc(s, y, th) == pytest.approx(sk.matthews_corrcoef(y, s >= th), abs=1e-12)
        tn, fp, fn, tp = sk.confusion_matrix(y, s >= th, labels=[0, 1]).ravel()
        assert metrics.fpr_at_threshold(s, y, th) == pytest.approx(fp / (fp + tn), abs=1e-15)
        assert metrics.recall_at_threshold(s, y, th) == pytest.approx(tp / (tp + fn), abs=1e-15)


def test_threshold_at_fpr(rng):
    s, y = data(rng, 300, ties=2)
    fpr, tpr, thr = sk.roc_curve(y, s, drop_intermediate=False)
    for target in (0.0, 0.01, 0.1, 0.3, 0.999, 1.0):
        t = metrics.threshold_at_fpr(s, y, target)
        ok = fpr <= target
        expected = thr[ok][np.argmax(np.where(ok, tpr, -1)[ok])] if ok[1:].any() else np.inf
        if np.isfinite(expected):
            assert metrics.fpr_at_threshold(s, y, t) <= target
            assert metrics.recall_at_threshold(s, y, t) == pytest.approx(tpr[ok].max())
        # lowest score reaching the best recall within the FPR budget
        assert t == expected or (not np.isfinite(expected) and not np.isfinite(t))
    assert metrics.threshold_at_fpr([1.0, 0.0], [0, 1], 0.0) == np.inf


def test_pixel_metrics_match_sklearn(rng):
    masks = (rng.random((3, 9, 11)) < 0.2).astype(np.uint8)
    maps = (rng.standard_normal(masks.shape) + masks).astype(np.float32)
    assert metrics.pixel_auroc(maps, masks) == pytest.approx(sk.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert metrics.pixel_average_precision(maps, masks) == pytest.approx(
        sk.average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# hand-computed
# ----------------------------------------------------------------------------------------------


def test_hand_computed():
    s = [0.1, 0.4, 0.35, 0.8]
    y = [0, 0, 1, 1]
    assert metrics.auroc(s, y) == 0.75
    # thresholds 0.8, 0.4, 0.35, 0.1: precision 1, 1/2, 2/3, 1/2; recall 1/2, 1/2, 1, 1
    assert metrics.average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3, abs=1e-15)
    f1, t = metrics.f1_max(s, y)
    assert (f1, t) == (pytest.approx(0.8), 0.35)
    assert metrics.mcc(s, y, 0.35) == pytest.approx(0.5773502691896258)
    assert metrics.fpr_at_threshold(s, y, 0.35) == 0.5
    assert metrics.recall_at_threshold(s, y, 0.4) == 0.5
    assert metrics.threshold_at_fpr(s, y, 0.0) == 0.8
    assert metrics.threshold_at_fpr(s, y, 0.5) == 0.35
    # ties count one half
    assert metrics.auroc([0.5, 0.5], [0, 1]) == 0.5


def test_aupro_and_evaluate(rng):
    masks = np.zeros((4, 16, 16), np.uint8)
    masks[1, 3:7, 4:9] = 1
    masks[2, 10:12, 1:15] = 1
    masks[3, 0, 0] = 1
    maps = (rng.standard_normal(masks.shape) + 2 * masks).astype(np.float32)
    ref = R.pro_curve(maps, masks, 0.3)[3]
    assert metrics.aupro(maps, masks) == pytest.approx(ref, abs=1e-9)
    assert metrics.aupro(maps, masks.astype(bool), fpr_limit=1.0) == pytest.approx(R.pro_curve(maps, masks, 1.0)[3], abs=1e-9)
    assert metrics.aupro(maps, masks.astype(np.int64)) == pytest.approx(ref, abs=1e-9)
    c = metrics.pro_curve(maps, masks)
    assert c.aupro == pytest.approx(ref, abs=1e-9) and c.fpr[0] == 0 and c.thresholds[0] == np.inf
    img_scores = maps.reshape(4, -1).max(1)
    img_labels = masks.reshape(4, -1).max(1)
    out = metrics.evaluate(img_scores, img_labels, maps, masks)
    img_keys = {"image_auroc", "image_ap", "image_f1_max", "image_f1_threshold", "image_fpr_at_recall",
                "image_recall_threshold", "target_recall"}
    assert set(out) == img_keys | {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}
    assert out["image_auroc"] == pytest.approx(sk.roc_auc_score(img_labels, img_scores), abs=1e-12)
    assert out["image_ap"] == pytest.approx(sk.average_precision_score(img_labels, img_scores), abs=1e-12)
    assert out["pixel_auroc"] == pytest.approx(sk.roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out["pixel_ap"] == pytest.approx(sk.average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert out["aupro"] == pytest.approx(ref, abs=1e-9)
    only_images = metrics.evaluate(img_scores, img_labels)
    assert set(only_images) == img_keys


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def test_validation_errors():
    s, y = [0.1, 0.2, 0.3], [0, 1, 1]
    with pytest.raises(ValueError, match=r"'scores'.*finite.*nan"):
        metrics.auroc([0.1, np.nan, 0.3], y)
    with pytest.raises(ValueError, match=r"'scores' and 'labels'.*\(3,\) and \(2,\)"):
        metrics.auroc(s, [0, 1])
    with pytest.raises(ValueError, match=r"'labels'.*binary.*\[2\]"):
        metrics.average_precision(s, [0, 1, 2])
    with pytest.raises(TypeError, match=r"'labels'.*float64"):
        metrics.auroc(s, [0.0, 1.0, 1.0])
    with pytest.raises(TypeError, match=r"'scores'.*dtype"):
        metrics.auroc(["a", "b", "c"], y)
    with pytest.raises(TypeError, match=r"'scores'.*bool"):
        metrics.auroc([True, False, True], y)
    with pytest.raises(ValueError, match=r"'scores'.*non-empty"):
        metrics.auroc([], [])
    with pytest.raises(ValueError, match=r"single class.*all 3 labels are 1"):
        metrics.auroc(s, [1, 1, 1])
    with pytest.raises(ValueError, match=r"single class.*0 \(normal\)"):
        metrics.roc_curve(s, [0, 0, 0])
    with pytest.raises(ValueError, match="no 1"):
        metrics.average_precision(s, [0, 0, 0])
    with pytest.raises(ValueError, match="no 1"):
        metrics.f1_max(s, [0, 0, 0])
    with pytest.raises(ValueError, match="no 0"):
        metrics.fpr_at_threshold(s, [1, 1, 1], 0.2)
    with pytest.raises(ValueError, match=r"'scores'.*1 dimension"):
        metrics.auroc(np.zeros((3, 1)), np.zeros((3, 1), int))
    with pytest.raises(TypeError, match="threshold"):
        metrics.mcc(s, y, "0.5")
    with pytest.raises(ValueError, match="target_fpr"):
        metrics.threshold_at_fpr(s, y, 1.5)
    with pytest.raises(TypeError, match="labels"):
        metrics.auroc(s, None)


def test_pixel_validation_errors(rng):
    maps = rng.random((2, 5, 5)).astype(np.float32)
    masks = np.zeros((2, 5, 5), np.uint8)
    masks[0, 1, 1] = 1
    with pytest.raises(ValueError, match=r"'masks'.*255.*masks > 0"):
        metrics.aupro(maps, masks * 255)
    with pytest.raises(TypeError, match="'masks'"):
        metrics.aupro(maps, masks.astype(np.float32))
    with pytest.raises(ValueError, match=r"'anomaly_maps' and 'masks'"):
        metrics.aupro(maps, masks[:1])
    with pytest.raises(ValueError, match="anomaly_maps"):
        metrics.aupro(np.where(masks > 0, np.inf, maps), masks)
    with pytest.raises(ValueError, match="anomaly_maps"):
        metrics.aupro([], [])
    with pytest.raises(ValueError, match="no defect pixels"):
        metrics.aupro(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="fpr_limit"):
        metrics.aupro(maps, masks, 0)
    with pytest.raises(ValueError, match=r"expected 3 maps.*got 2"):
        metrics.evaluate([0.1, 0.9, 0.5], [0, 1, 0], maps, masks)
    with pytest.raises(ValueError, match="go together"):
        metrics.evaluate([0.1, 0.9], [0, 1], maps, None)
    with pytest.raises(ValueError, match=r"'image_labels'.*single class"):
        metrics.evaluate([0.1, 0.9], [1, 1])


def test_plots(tmp_path, rng):
    s, y = data(rng, 50)
    p = metrics.plot_roc(s, y, str(tmp_path / "roc.png"))
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 2:4, 2:5] = 1
    maps = rng.random(masks.shape) + masks
    q = metrics.plot_pro(maps, masks, str(tmp_path / "sub" / "pro.png"))
    for path in (p, q):
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 1000


def test_metrics_does_not_import_torch():
    code = "import sys, edgead.metrics; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
