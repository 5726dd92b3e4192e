"""PUAD: Ledoit-Wolf and Mahalanobis against sklearn / scipy, the head's features, z-normalisation,
ONNX export parity and artifacts. Tiny 64x64 inputs."""
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgead.models.efficientad import EfficientAD  # noqa: E402
from edgead.models.puad import PUAD, ledoit_wolf, mahalanobis  # noqa: E402

from test_efficientad import onnx_export, reference_efficientad, textures, tiny_config  # noqa: E402,F401

warnings.filterwarnings("ignore", message=".*RANDOM.*")


@pytest.mark.parametrize("n,d", [(5, 12), (40, 8), (200, 384), (2, 3)])
def test_ledoit_wolf_matches_sklearn(n, d):
    LedoitWolf = pytest.importorskip("sklearn.covariance").LedoitWolf
    g = np.random.default_rng(n * d)
    x = g.standard_normal((n, d)) @ g.standard_normal((d, d)) + g.standard_normal(d)
    ref = LedoitWolf().fit(x)
    loc, cov, shrink = ledoit_wolf(torch.from_numpy(x))
    np.testing.assert_allclose(loc.numpy(), ref.location_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cov.numpy(), ref.covariance_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(shrink, ref.shrinkage_, rtol=1e-8, atol=1e-12)


def test_mahalanobis_matches_scipy():
    dist = pytest.importorskip("scipy.spatial.distance")
    g = np.random.default_rng(0)
    x = g.standard_normal((50, 6))
    _, cov, _ = ledoit_wolf(torch.from_numpy(x))
    prec = np.linalg.inv(cov.numpy())
    mu = x.mean(0)
    q = g.standard_normal((7, 6))
    got = mahalanobis(torch.from_numpy(q), torch.from_numpy(mu), torch.from_numpy(prec)).numpy()
    ref = [dist.mahalanobis(v, mu, prec) for v in q]
    np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = PUAD(tiny_config())
    x_train, x_val = textures(6, seed=1), textures(4, seed=2)
    stats = model.fit(x_train, x_val, progress=False)
    return model, stats, x_train, x_val


def test_head_uses_pooled_student_first_half_and_train_statistics(fitted):
    model, stats, x_train, _ = fitted
    with torch.no_grad():
        f = model.student(x_train)[:, :384].mean(dim=(2, 3))
    loc, cov, shrink = ledoit_wolf(f)
    assert torch.allclose(model.puad_mean, loc.float(), atol=1e-5)
    assert torch.allclose(model.puad_precision, torch.linalg.inv(cov).float(), rtol=1e-3, atol=1e-3)
    assert stats["puad_shrinkage"] == pytest.approx(shrink)
    assert stats["puad_n_features"] == 6


def test_score_is_sum_of_validation_z_scores(fitted):
    model, _, _, x_val = fitted
    inf = EfficientAD.inference_module(model).eval()
    head = inf.head
    inf.head = None
    with torch.no_grad():
        ead, maps_ead = inf(x_val)
        maha = head.distance(model.student(x_val)[:, :384])
    ead64, maha64 = ead.double(), maha.double()
    z = model.puad_z.double()
    assert z[0].item() == pytest.approx(ead64.mean().item(), rel=1e-5)
    assert z[1].item() == pytest.approx(ead64.std(unbiased=False).item(), rel=1e-4)
    assert z[2].item() == pytest.approx(maha64.mean().item(), rel=1e-5)
    assert z[3].item() == pytest.approx(maha64.std(unbiased=False).item(), rel=1e-4)
    scores, maps = model.predict(x_val)
    expect = (ead64 - z[0]) / z[1] + (maha64 - z[2]) / z[3]
    np.testing.assert_allclose(scores.double().numpy(), expect.numpy(), atol=1e-4)
    assert abs(float(scores.mean())) < 1e-4  # z-scores of the validation set sum to mean 0
    # independent: the map is EfficientAD's (NumPy re-implementation of the post-network steps) and the
    # head's distance is the Mahalanobis distance of the pooled first-half student features (NumPy)
    ref_scores, ref_maps = reference_efficientad(model, x_val)
    np.testing.assert_allclose(maps.numpy(), ref_maps, atol=1e-4)
    np.testing.assert_allclose(ead64.numpy(), ref_scores, atol=1e-4)
    with torch.no_grad():
        f = model.student(x_val)[:, :384].double().mean(dim=(2, 3)).numpy()
    diff = f - model.puad_mean.double().numpy()
    maha_np = np.sqrt(np.einsum("bi,ij,bj->b", diff, model.puad_precision.double().numpy(), diff))
    np.testing.assert_allclose(maha64.numpy(), maha_np, rtol=1e-4)
    z_np = z.numpy()
    np.testing.assert_allclose(scores.double().numpy(), (ref_scores - z_np[0]) / z_np[1] + (maha_np - z_np[2]) / z_np[3],
                               atol=1e-3)


def test_export_onnx_parity_and_artifact_round_trip(fitted, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from edgead.artifact import load_artifact, save_artifact
    from edgead.runtime.post_efficientad import postprocess

    model, stats, _, x_val = fitted
    scores, maps = model.predict(x_val)
    path = str(tmp_path / "puad.onnx")
    onnx_export(model.export_module(), x_val[:1], path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    o_scores, o_maps = postprocess(sess.run(None, {"image": x_val.numpy()}))
    np.testing.assert_allclose(o_scores, scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_maps, maps.numpy(), atol=1e-4)

    adir = save_artifact(str(tmp_path / "art"), model.model_type, model.artifact_config(),
                         model.preprocessing().to_dict(), model.artifact_tensors(), statistics=stats)
    art = load_artifact(adir)
    assert art.model_type == "puad"
    from edgead.models import get_model_class

    again = get_model_class("puad").from_artifact(art)
    s2, m2 = again.predict(x_val)
    assert torch.equal(s2, scores) and torch.equal(m2, maps)
