"""EfficientAD: networks against the paper, losses, map normalisation, training smoke, export, artifacts.

Tiny: 64x64 inputs and a few iterations (a 256x256 forward only for the paper's shapes)."""
import io
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgead.models.efficientad import (  # noqa: E402
    AutoEncoder,
    EfficientAD,
    build_pdn,
    hard_feature_loss,
    linear_quantile,
    normalize_map,
    pdn_output_size,
)

warnings.filterwarnings("ignore", message=".*RANDOM.*")


def textures(n, size=64, seed=0, defect=False):
    """Normalised-ish stripe textures (N, 3, size, size); `defect` adds a bright square."""
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        ph = g.uniform(0, 2 * np.pi)
        img = 0.5 + 0.3 * np.sin(xx / 3.0 + ph) + 0.05 * g.standard_normal((size, size))
        img = np.repeat(img[None], 3, axis=0)
        if defect:
            y0, x0 = g.integers(8, size - 24, 2)
            img[:, y0 : y0 + 14, x0 : x0 + 14] = 2.5
        out.append(img)
    return torch.tensor(np.stack(out), dtype=torch.float32)


def tiny_config(**kw):
    cfg = {"image_size": [64, 64], "iterations": 3, "batch_size": 2, "allow_random_teacher": True, "seed": 0}
    cfg.update(kw)
    return cfg


def onnx_export(module, x, path):
    kw = dict(input_names=["image"], output_names=["score", "map"], opset_version=17)
    try:
        torch.onnx.export(module, (x,), path, dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "score": {0: "batch"}, "map": {0: "batch"}}, **kw)
    except Exception:  # legacy exporter gone: the dynamo exporter
        torch.onnx.export(module, (x,), path, dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), **kw)


@pytest.fixture(scope="module")
def fitted():
    torch.manual_seed(0)
    model = EfficientAD(tiny_config())
    x_train, x_val = textures(6, seed=1), textures(3, seed=2)
    stats = model.fit(x_train, x_val, progress=False)
    return model, stats, x_val


# --- the paper's networks --------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["S", "M"])
def test_pdn_shapes_match_paper(size):
    x = torch.zeros(1, 3, 256, 256)
    with torch.no_grad():
        assert tuple(build_pdn(size, 384)(x).shape) == (1, 384, 56, 56)
    convs = [m for m in build_pdn(size) if isinstance(m, torch.nn.Conv2d)]
    if size == "S":
        assert [(c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [(128, 4, 0), (256, 4, 0), (256, 3, 0), (384, 4, 0)]
    else:
        assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(256, 4), (512, 4), (512, 1), (512, 3), (384, 4), (384, 1)]


def test_student_and_autoencoder_shapes():
    with torch.no_grad():
        assert tuple(build_pdn("S", 768)(torch.zeros(1, 3, 64, 64)).shape) == (1, 768, 8, 8)
        ae = AutoEncoder(384, (256, 256)).eval()
        assert tuple(ae.encoder(torch.zeros(1, 3, 256, 256)).shape) == (1, 64, 1, 1)  # 64-d bottleneck
        assert tuple(ae(torch.zeros(1, 3, 256, 256)).shape) == (1, 384, 56, 56)
        assert ae.dec_sizes == [(3, 3), (8, 8), (15, 15), (32, 32), (63, 63), (127, 127)]
    for h in (64, 100, 128, 257):
        with torch.no_grad():
            out = build_pdn("S", 4)(torch.zeros(1, 3, h, h + 4))
        assert tuple(out.shape[-2:]) == pdn_output_size(h, h + 4)


# --- losses and normalisation ----------------------------------------------------------------------
def test_linear_quantile_matches_torch():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000, 4097):
        x = torch.randn(n, generator=g)
        for q in (0.0, 0.1, 0.5, 0.9, 0.995, 0.999, 1.0):
            assert torch.allclose(linear_quantile(x, q), torch.quantile(x, q), atol=1e-6)


def test_hard_feature_loss_matches_direct_computation():
    g = torch.Generator().manual_seed(0)
    t, s = torch.randn(2, 384, 12, 12, generator=g), torch.randn(2, 384, 12, 12, generator=g, requires_grad=True)
    loss = hard_feature_loss(t, s, 0.999)
    d = ((t - s) ** 2).detach().numpy().ravel()
    # Hand count: n = 2*384*12*12 = 110592 distinct values; the 0.999 quantile (linear) sits at sorted
    # position 0.999 * (n - 1) = 110480.409, between sorted[110480] and sorted[110481], so exactly the
    # n - 110481 = 111 largest elements are >= it.
    assert d.size == 110592
    hard = np.sort(d)[-111:]
    assert (d >= np.quantile(d, 0.999)).sum() == 111
    np.testing.assert_allclose(float(loss), hard.astype(np.float64).mean(), rtol=1e-5)
    loss.backward()  # only the hard elements get gradient
    assert int((s.grad != 0).sum()) == 111


def test_normalize_map_sends_quantiles_to_0_and_0_1():
    m = torch.rand(5, 1, 8, 8) * 3
    qa, qb = torch.quantile(m.flatten(), 0.9), torch.quantile(m.flatten(), 0.995)
    n = normalize_map(m, qa, qb)
    assert torch.allclose(torch.quantile(n.flatten(), 0.9), torch.tensor(0.0), atol=1e-6)
    assert torch.allclose(torch.quantile(n.flatten(), 0.995), torch.tensor(0.1), atol=1e-6)


# --- training and inference ------------------------------------------------------------------------
def test_fit_smoke_and_validation_quantiles(fitted):
    model, stats, x_val = fitted
    assert stats["iterations"] == 3 and stats["n_train"] == 6 and stats["n_val"] == 3
    assert np.isfinite(stats["final_loss"]["loss"])
    inf = model.inference_module().eval()
    with torch.no_grad():
        st, ae, _ = inf.maps(x_val)
    st_n = normalize_map(st, model.q_st[0], model.q_st[1])
    ae_n = normalize_map(ae, model.q_ae[0], model.q_ae[1])
    for m in (st_n, ae_n):  # q_a -> 0 and q_b -> 0.1 on the validation maps
        assert abs(float(torch.quantile(m.flatten(), 0.9))) < 1e-5
        assert abs(float(torch.quantile(m.flatten(), 0.995)) - 0.1) < 1e-5
    scores, maps = model.predict(x_val)
    assert scores.shape == (3,) and maps.shape == (3, 64, 64)
    assert torch.allclose(scores, maps.flatten(1).amax(1))


def test_map_is_half_st_plus_half_ae_padded_and_resized(fitted):
    model, _, x_val = fitted
    inf = model.inference_module().eval()
    with torch.no_grad():
        st, ae, _ = inf.maps(x_val[:1])
        comb = 0.5 * normalize_map(st, model.q_st[0], model.q_st[1]) + 0.5 * normalize_map(ae, model.q_ae[0], model.q_ae[1])
        expect = torch.nn.functional.interpolate(torch.nn.functional.pad(comb, (4, 4, 4, 4)), size=(64, 64), mode="bilinear")[:, 0]
        _, maps = model.predict(x_val[:1])
    assert torch.allclose(maps, expect, atol=1e-6)


def test_requires_a_teacher():
    with pytest.raises(ValueError, match="teacher"):
        EfficientAD(tiny_config(allow_random_teacher=False)).fit(textures(3), progress=False)
    with pytest.raises(ValueError, match="size"):
        EfficientAD({"size": "L"})
    with pytest.raises(ValueError, match="image_size"):
        EfficientAD({"image_size": [32, 32]})


def reference_efficientad(model, x):
    """Independent EfficientAD inference: the three networks' raw outputs, then everything the exported
    module does after them re-done in NumPy/OpenCV (teacher normalisation, the two squared-difference maps,
    quantile normalisation, 0.5/0.5 combination, 4-pixel zero padding, bilinear resize with half-pixel
    centres = cv2.INTER_LINEAR, image score = max of the map). Returns float64 (scores (B,), maps (B,H,W))."""
    import cv2

    with torch.no_grad():
        t = model.teacher(x).double().numpy()
        s = model.student(x).double().numpy()
        a = model.autoencoder(x).double().numpy()
    c = int(model.out_channels)
    t = (t - model.teacher_mean.double().numpy()) / model.teacher_std.double().numpy()
    st = ((t - s[:, :c]) ** 2).mean(axis=1)
    ae = ((a - s[:, c:]) ** 2).mean(axis=1)
    qst, qae = model.q_st.double().numpy(), model.q_ae.double().numpy()
    comb = 0.5 * 0.1 * (st - qst[0]) / (qst[1] - qst[0]) + 0.5 * 0.1 * (ae - qae[0]) / (qae[1] - qae[0])
    h, w = x.shape[-2:]
    maps = np.stack([cv2.resize(np.pad(m, 4), (int(w), int(h)), interpolation=cv2.INTER_LINEAR) for m in comb])
    return maps.reshape(len(maps), -1).max(axis=1), maps


def test_predict_equals_export_and_onnxruntime(fitted, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, _, x_val = fitted
    ref_scores, ref_maps = reference_efficientad(model, x_val)
    mod = model.export_module()
    with torch.no_grad():
        e_scores, e_maps = mod(x_val)
    scores, maps = model.predict(x_val)
    # fp32 torch vs the float64 NumPy re-implementation: maps are O(1), float32 rounding ~1e-6
    np.testing.assert_allclose(e_maps.numpy(), ref_maps, atol=1e-4)
    np.testing.assert_allclose(e_scores.numpy(), ref_scores, atol=1e-4)
    np.testing.assert_allclose(maps.numpy(), ref_maps, atol=1e-4)
    np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-4)
    path = str(tmp_path / "ead.onnx")
    onnx_export(mod, x_val[:2], path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["score", "map"]
    o_scores, o_maps = sess.run(None, {"image": x_val.numpy()})  # batch 3 != export batch 2
    np.testing.assert_allclose(o_scores, ref_scores, atol=1e-4)
    np.testing.assert_allclose(o_maps, ref_maps, atol=1e-4)
    from edgead.runtime.post_efficientad import postprocess

    s2, m2 = postprocess({"score": o_scores, "map": o_maps[:, None]})  # (B, 1, H, W) accepted too
    assert s2.dtype == np.float32 and m2.dtype == np.float32 and m2.shape == (3, 64, 64)
    np.testing.assert_array_equal(m2, o_maps)  # passed through, not recomputed
    np.testing.assert_array_equal(s2, o_maps.reshape(3, -1).max(axis=1))  # the graph's score is the map's max
    np.testing.assert_allclose(s2, ref_scores, atol=1e-4)


def test_artifact_round_trip(fitted, tmp_path):
    from edgead.artifact import load_artifact, save_artifact

    model, stats, x_val = fitted
    path = save_artifact(str(tmp_path / "art"), model.model_type, model.artifact_config(),
                         model.preprocessing().to_dict(), model.artifact_tensors(), statistics=stats)
    art = load_artifact(path)
    again = EfficientAD.from_artifact(art)
    a, b = model.predict(x_val), again.predict(x_val)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert again.preprocessing().to_dict() == model.preprocessing().to_dict()


def test_postprocess_validates():
    from edgead.runtime.post_efficientad import postprocess

    s, m = postprocess([np.zeros(2), np.zeros((2, 1, 5, 5))])
    assert s.dtype == np.float32 and m.shape == (2, 5, 5)
    with pytest.raises(ValueError, match="missing"):
        postprocess({"score": np.zeros(2)})
    with pytest.raises(ValueError, match="maps"):
        postprocess([np.zeros(3), np.zeros((2, 5, 5))])


def test_distill_teacher_then_train_with_it_and_penalty(tmp_path):
    """distill_teacher with a tiny stand-in backbone; EfficientAD trains with that teacher + penalty images."""
    from edgead.data.io import write_image
    from edgead.models.distill import distill_teacher

    folder = tmp_path / "imgs"
    folder.mkdir()
    g = np.random.default_rng(0)
    for i in range(4):
        write_image(str(folder / f"{i}.png"), (g.random((40, 48, 3)) * 255).astype(np.uint8))

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.b = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)

        def forward(self, x):
            f1 = self.a(x)
            return [f1, self.b(f1)]

    out = str(tmp_path / "teacher.safetensors")
    meta = distill_teacher(Tiny(), None, str(folder), out, size="S", iterations=2, batch_size=2,
                           image_size=(64, 64), progress=False)
    assert os.path.isfile(out) and os.path.isfile(str(tmp_path / "teacher.json"))
    assert meta["feature_channels"] == 24 and meta["projection"].startswith("random_orthonormal")
    model = EfficientAD(tiny_config(allow_random_teacher=False, teacher_weights=out, iterations=2,
                                    penalty_folder=str(folder), teacher_norm="teacher"))
    stats = model.fit(textures(4), progress=False)
    from safetensors.torch import load_file

    sd = load_file(out)
    assert torch.equal(model.teacher[0].weight, sd["teacher.0.weight"])
    assert torch.equal(model.teacher_std.flatten(), sd["channel_std"])
    assert stats["n_penalty"] == 4 and stats["final_loss"]["penalty"] > 0


def test_feature_target_adaptive_pool_projection():
    from edgead.models.distill import FeatureTarget

    class Wide(torch.nn.Module):
        def forward(self, x):
            return [x.repeat(1, 200, 1, 1)[:, :512], x[:, :1].repeat(1, 1024, 1, 1)[:, :, ::2, ::2]]

    ft = FeatureTarget(Wide(), (8, 8), 1536, 384)
    y = ft(torch.randn(2, 3, 16, 16))
    assert tuple(y.shape) == (2, 384, 8, 8) and ft.projection == "adaptive_avg_pool"


def test_detects_an_easy_synthetic_defect():
    """A bright square on stripes: after a short training the defect images score higher."""
    torch.manual_seed(0)
    model = EfficientAD(tiny_config(iterations=15, batch_size=4, lr=1e-3))
    model.fit(textures(12, seed=3), textures(4, seed=4), progress=False)
    good, _ = model.predict(textures(6, seed=5))
    bad, maps = model.predict(textures(6, seed=6, defect=True))
    assert float(bad.min()) > float(good.max())


def test_initial_weights_follow_the_seed_not_the_global_rng():
    """Building the model draws its initial weights from config['seed'] under a forked RNG: the same seed
    gives the same weights whatever the global RNG holds, another seed other weights, and the global RNG
    is left untouched."""
    def build(seed, noise):
        torch.manual_seed(noise)
        m = EfficientAD(tiny_config(seed=seed))
        after = torch.rand(1)
        torch.manual_seed(noise)
        assert torch.equal(after, torch.rand(1))
        return m.state_dict()

    a, b, c = build(0, 1), build(0, 2), build(3, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    k = next(k for k in sorted(a) if k.startswith("student") and k.endswith("weight"))
    assert not torch.equal(a[k], c[k])
