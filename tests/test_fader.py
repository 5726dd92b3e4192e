"""FADeR: U-Net, mosaic hints, mask sources, patch-wise GT, ranking loss, soft mask, optimizer
groups, ONNX parity, predict == export + post-processing, artifact round trip, smoke fit.

Tiny on purpose (64x64, widths 4..16, a few iterations): the whole file runs in well under a
minute on 2 CPU cores."""
import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from edgead.models import get_model_class  # noqa: E402
from edgead.models import masks as M  # noqa: E402
from edgead.models.fader import (  # noqa: E402
    FADeR,
    TokenMLP,
    UNet,
    margin_ranking_loss,
    msgms_loss,
    softmask_torch,
    ssim_loss,
)
from edgead.ops import softmask_apply  # noqa: E402
from edgead.ops_reference import msgms_map_reference, softmask_apply_reference  # noqa: E402
from edgead.runtime import post_fader  # noqa: E402

TINY = {"image_size": [64, 64], "widths": [4, 8, 8, 16, 16], "mosaic_scale": 8, "mlp_hidden": 16,
        "batch_size": 4, "pretrain_iters": 2, "fader_iters": 2, "seed": 0}


def tiny(**kw):
    cfg = dict(TINY)
    cfg.update(kw)
    return FADeR(cfg)


@pytest.fixture(scope="module")
def images():
    g = np.random.default_rng(0)
    # smooth-ish random images in [0,1]
    base = g.random((6, 3, 8, 8)).astype(np.float32)
    x = torch.nn.functional.interpolate(torch.from_numpy(base), size=(64, 64), mode="bilinear", align_corners=False)
    x = (x + 0.05 * torch.from_numpy(g.standard_normal((6, 3, 64, 64)).astype(np.float32))).clamp(0, 1)
    return x.numpy()


# --- network -------------------------------------------------------------------------------------
def test_registry_and_unet_shapes_and_skips():
    assert get_model_class("fader") is FADeR
    net = UNet(3, [4, 8, 8, 16, 16])
    x = torch.rand(2, 3, 64, 64)
    feats = net.encode(x)
    assert [tuple(f.shape) for f in feats] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]
    assert net.depth == 5 and net.n_skips == 4
    for blk in net.encoder:  # 3 x conv-BN-LeakyReLU, stride 2 in the third conv
        convs = [m for m in blk.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [c.stride for c in convs] == [(1, 1), (1, 1), (2, 2)]
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in blk.modules()) == 3
        assert sum(isinstance(m, torch.nn.LeakyReLU) for m in blk.modules()) == 3
    calls = []

    def spy(pred, f):
        calls.append(tuple(f.shape))
        return softmask_torch(pred, f)

    with torch.no_grad():
        y = net(x, torch.rand(2, 8, 8), spy)
    assert tuple(y.shape) == (2, 3, 64, 64) and float(y.min()) >= 0 and float(y.max()) <= 1
    assert calls == [(2, 16, 4, 4), (2, 8, 8, 8), (2, 8, 16, 16), (2, 4, 32, 32)]  # depths D-1 .. 1
    grey = UNet(1, [4, 8, 8, 16, 16])(torch.rand(1, 1, 64, 64))
    assert tuple(grey.shape) == (1, 1, 64, 64)


def test_config_validation():
    with pytest.raises(ValueError, match="image_size"):
        tiny(image_size=[60, 64])
    with pytest.raises(ValueError, match="mlp_input"):
        tiny(mlp_input="both")
    with pytest.raises(ValueError, match="mask_source"):
        tiny(mask_source="dino")
    with pytest.raises(ValueError, match="fader"):
        tiny(fader="yes")
    with pytest.raises(ValueError, match="needs a callable"):
        tiny(mask_source="attention").compute_mask(torch.rand(1, 3, 64, 64))


# --- mosaic hints and masks -----------------------------------------------------------------------
def test_mosaic_and_obfuscation_match_numpy(rng):
    x = rng.random((2, 3, 32, 48)).astype(np.float32)
    m = 8
    ref = np.empty_like(x)
    for i in range(0, 32, m):
        for j in range(0, 48, m):
            ref[:, :, i : i + m, j : j + m] = x[:, :, i : i + m, j : j + m].mean(axis=(2, 3), keepdims=True)
    got = M.mosaic(torch.from_numpy(x), m).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    mask = np.zeros((2, 1, 32, 48), np.float32)
    mask[0, :, 8:16, 16:32] = 1
    mask[1, :, 24:32, 0:8] = 1
    ob = M.obfuscate(torch.from_numpy(x), torch.from_numpy(mask), m).numpy()
    np.testing.assert_allclose(ob, np.where(mask > 0, ref, x), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        M.mosaic(torch.rand(1, 1, 30, 32), 8)


def test_token_mask_topk_dilate_and_random_blocks():
    s = torch.zeros(1, 4, 4)
    s[0, 1, 2] = 5.0
    s[0, 3, 0] = 4.0
    tm = M.top_ratio_token_mask(s, 8, ratio=2 / 16, dilate=0)
    assert tm.shape == (1, 1, 4, 4) and tm.sum() == 2 and tm[0, 0, 1, 2] == 1 and tm[0, 0, 3, 0] == 1
    td = M.top_ratio_token_mask(s, 8, ratio=1 / 16, dilate=1)
    assert td.sum() == 9 and td[0, 0, 0:3, 1:4].sum() == 9
    # a full-resolution map is max-pooled onto the token grid
    full = torch.zeros(1, 32, 32)
    full[0, 9, 17] = 1.0  # token (1, 2)
    tf = M.top_ratio_token_mask(full, 8, ratio=1 / 16, image_size=(32, 32))
    assert tf[0, 0, 1, 2] == 1 and tf.sum() == 1
    g = torch.Generator().manual_seed(0)
    rb = M.random_block_mask(16, (64, 64), 8, (0.3, 0.3), block=2, generator=g)
    assert rb.shape == (16, 1, 64, 64)
    cells = rb[:, :, ::8, ::8]  # token-aligned: every 8x8 cell constant
    assert torch.equal(M.expand_token_mask(cells, (64, 64)), rb)
    assert 0.1 < float(rb.mean()) < 0.5


def test_mask_sources(images):
    x = torch.from_numpy(images[:2])
    model = tiny().eval()
    with torch.no_grad():
        mk = model.compute_mask(x)  # reconstruction source
    assert mk.shape == (2, 1, 64, 64)
    assert set(torch.unique(mk).tolist()) <= {0.0, 1.0}
    assert 0 < float(mk.mean()) < 1  # top 5% of 64 tokens (3) dilated by one token

    def attention(t):  # a stand-in attention model: bright spot at the top-left
        a = torch.zeros(t.shape[0], 16, 16)
        a[:, 0, 0] = 1.0
        return a

    att = tiny(mask_source="attention", mask_ratio=1 / 64, mask_dilate=0)
    att.set_mask_fn(attention)
    ma = att.compute_mask(x)
    assert float(ma[:, :, :8, :8].min()) == 1 and float(ma.sum()) == 2 * 64
    amap = tiny(mask_source="anomaly_map", mask_ratio=1 / 64, mask_dilate=0)
    amap.set_mask_fn(lambda t: (None, torch.zeros(t.shape[0], 64, 64).index_fill_(2, torch.tensor([63]), 1.0)))
    mm = amap.compute_mask(x)
    assert float(mm[:, :, 56:, 56:].min()) == 1  # predict-style (scores, maps) tuple accepted
    assert amap.export_inputs() == ("image", "mask") and model.export_inputs() == ("image",)
    assert float(tiny(mask_source="full").compute_mask(x).min()) == 1
    assert float(tiny(mask_source="none").compute_mask(x).max()) == 0


# --- FADeR pieces ---------------------------------------------------------------------------------
def test_patch_l2_ground_truth(rng):
    x = rng.random((2, 3, 32, 32)).astype(np.float32)
    y = rng.random((2, 3, 32, 32)).astype(np.float32)
    m = 8
    ref = np.zeros((2, 4, 4), np.float32)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                d = x[b, :, i * m : (i + 1) * m, j * m : (j + 1) * m] - y[b, :, i * m : (i + 1) * m, j * m : (j + 1) * m]
                ref[b, i, j] = np.mean(d**2)
    got = M.token_error(torch.from_numpy(x), torch.from_numpy(y), m).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


def test_token_mlp_is_a_per_token_two_layer_mlp(rng):
    mlp = TokenMLP(3, 8, 16)
    x = torch.from_numpy(rng.random((2, 3, 32, 24)).astype(np.float32))
    out = mlp(x)
    assert tuple(out.shape) == (2, 4, 3)
    tokens = x.unfold(2, 8, 8).unfold(3, 8, 8)  # (B, C, h, w, m, m)
    tokens = tokens.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * 64)
    with torch.no_grad():
        np.testing.assert_allclose(out.detach().reshape(-1).numpy(), mlp.forward_tokens(tokens).numpy(), rtol=1e-4, atol=1e-5)
    assert sum(isinstance(mm, torch.nn.Conv2d) for mm in mlp.modules()) == 2


def test_margin_ranking_loss_matches_torch(rng):
    pred = torch.from_numpy(rng.standard_normal((3, 4, 4)).astype(np.float32))
    gt = torch.from_numpy(rng.random((3, 4, 4)).astype(np.float32))
    gt[0, 0, 0] = gt[0, 0, 1]  # a tie: target -1 ("otherwise")
    i = torch.tensor([[0, 2, 4, 6, 8, 10, 12, 14]] * 3)
    j = torch.tensor([[1, 3, 5, 7, 9, 11, 13, 15]] * 3)
    got = margin_ranking_loss(pred, gt, 0.5, pairs=(i, j))
    p, g = pred.reshape(3, -1), gt.reshape(3, -1)
    x1, x2 = torch.gather(p, 1, i).reshape(-1), torch.gather(p, 1, j).reshape(-1)
    gi, gj = torch.gather(g, 1, i).reshape(-1), torch.gather(g, 1, j).reshape(-1)
    target = torch.where(gi > gj, 1.0, -1.0)
    assert target[0] == -1
    ref = F.margin_ranking_loss(x1, x2, target, margin=0.5)
    torch.testing.assert_close(got, ref)
    # random pairs: disjoint within an image, gradients flow to pred only
    pr = pred.clone().requires_grad_(True)
    margin_ranking_loss(pr, gt, 1.0, generator=torch.Generator().manual_seed(0)).backward()
    assert pr.grad is not None and torch.isfinite(pr.grad).all()


def _softmask_numpy(pred, feats):
    b, h, w = pred.shape
    out = np.empty_like(feats)
    hs, ws = feats.shape[-2:]
    for k in range(b):
        p = pred[k]
        s = 1.0 - (p - p.min()) / max(p.max() - p.min(), 1e-12)
        ri = np.floor(np.arange(hs) * (h / hs)).astype(int)
        ci = np.floor(np.arange(ws) * (w / ws)).astype(int)
        out[k] = feats[k] * s[ri][:, ci][None]
    return out


@pytest.mark.parametrize("hs,ws", [(32, 32), (16, 16), (8, 8), (4, 4), (2, 2)])
def test_softmask_equals_reference(rng, hs, ws):
    pred = rng.standard_normal((2, 8, 8)).astype(np.float32)
    feats = rng.standard_normal((2, 5, hs, ws)).astype(np.float32)
    got = softmask_torch(torch.from_numpy(pred), torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(got, _softmask_numpy(pred, feats), rtol=1e-5, atol=1e-6)
    ref = softmask_apply_reference(torch.from_numpy(pred), torch.from_numpy(feats))
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, np.asarray(softmask_apply(pred, feats)), rtol=1e-5, atol=1e-6)
    # constant prediction (anomaly-free): soft mask 1 everywhere, features unchanged
    const = softmask_torch(torch.ones(2, 8, 8), torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(const, feats)


def test_decoder_lr_is_a_tenth_and_encoder_excluded():
    model = tiny(fader_lr=3e-4)
    opt = model.build_fader_optimizer()
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["mlp"]["lr"] == pytest.approx(3e-4)
    assert groups["decoder"]["lr"] == pytest.approx(3e-5)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in ids for p in model.unet.encoder.parameters())
    assert all(id(p) in ids for p in model.unet.decoder.parameters())
    assert all(id(p) in ids for p in model.mlp.parameters())
    with pytest.raises(ValueError, match="fader: false"):
        tiny(fader=False).build_fader_optimizer()


@pytest.mark.parametrize("mlp_input", ["input", "reconstruction"])
def test_mlp_input_modes_train_step_and_inference(images, mlp_input):
    model = tiny(mlp_input=mlp_input)
    x = torch.from_numpy(images[:2])
    mask = M.random_block_mask(2, (64, 64), 8, (0.3, 0.3), generator=torch.Generator().manual_seed(0))
    model.train()
    losses = model.fader_step(x, mask, torch.Generator().manual_seed(0))
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.mlp.fc1.weight.grad is not None and model.unet.decoder[0].convs[0][0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        rec = model.reconstruct(x)
    assert tuple(rec.shape) == (2, 3, 64, 64)


# --- export, predict, artifact, fit ---------------------------------------------------------------
def _onnx_export(module, path, n_inputs=1):
    names = ["image", "mask"][:n_inputs]
    dummy = (torch.rand(2, 3, 64, 64),) + ((torch.ones(2, 1, 64, 64),) if n_inputs == 2 else ())
    dyn = {n: {0: "batch"} for n in names + ["reconstruction", "original"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, dummy, path, input_names=names, output_names=list(FADeR.export_outputs),
                          opset_version=17, dynamic_axes=dyn, dynamo=False)


@pytest.mark.parametrize("cfg", [{}, {"mlp_input": "reconstruction"}])
def test_onnx_parity_dynamic_batch(tmp_path, images, cfg):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = tiny(**cfg).eval()
    path = str(tmp_path / "fader.onnx")
    _onnx_export(model.export_module(), path)
    import onnx

    assert onnx.load(path).opset_import[0].version == 17
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = images[:b]
        got = sess.run(None, {"image": x})
        with torch.no_grad():
            ref = model.export_module()(torch.from_numpy(x))
        np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-4)
        np.testing.assert_allclose(got[1], x, atol=0)


def test_onnx_with_external_mask_input(tmp_path, images):
    ort = pytest.importorskip("onnxruntime")
    model = tiny(mask_source="attention")
    model.set_mask_fn(lambda t: torch.rand(t.shape[0], 8, 8))
    model.eval()
    path = str(tmp_path / "fader_mask.onnx")
    _onnx_export(model.export_module(), path, n_inputs=2)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = images[:2]
    mask = np.zeros((2, 1, 64, 64), np.float32)
    mask[:, :, 8:24, 8:24] = 1
    got = sess.run(None, {"image": x, "mask": mask})
    with torch.no_grad():
        ref = model.reconstruct(torch.from_numpy(x), torch.from_numpy(mask))
    np.testing.assert_allclose(got[0], ref.numpy(), atol=1e-4)


def test_predict_equals_export_plus_postprocess(images):
    model = tiny().eval()
    x = torch.from_numpy(images[:2])
    scores, maps = model.predict(x)
    assert tuple(scores.shape) == (2,) and tuple(maps.shape) == (2, 64, 64)
    with torch.no_grad():
        rec, orig = model.export_module()(x)
        rec_direct = model.reconstruct(x)
    np.testing.assert_array_equal(orig.numpy(), images[:2])  # the exported graph passes the input through
    np.testing.assert_allclose(rec.numpy(), rec_direct.numpy(), atol=1e-6)
    # Independent post-processing: the plain-torch MSGMS (ops_reference, not the C++ kernel predict uses)
    # with the paper's parameters, score = max of the map. Tolerance: float32 kernel vs float32 torch,
    # maps in [0, 2], measured agreement ~1e-6.
    ref_m = msgms_map_reference(images[:2], rec_direct.numpy(), c=0.0026, scales=4, mean_filter=21).numpy()
    np.testing.assert_allclose(maps.numpy(), ref_m, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), ref_m.reshape(2, -1).max(axis=1), atol=1e-5)
    assert float(ref_m.max()) > 1e-3  # an untrained reconstruction differs from its input: a non-trivial map
    s2, m2 = post_fader.postprocess({"reconstruction": rec.numpy(), "original": orig.numpy()}, model.artifact_config())
    np.testing.assert_allclose(m2, ref_m, atol=1e-5)
    s3, _ = post_fader.postprocess((rec.numpy(), orig.numpy()))
    np.testing.assert_allclose(s3, ref_m.reshape(2, -1).max(axis=1), atol=1e-5)
    with pytest.raises(ValueError, match="original"):
        post_fader.postprocess({"reconstruction": rec.numpy()})


def test_obfuscate_keeps_the_image_dtype(rng):
    """Mask sources give float32 masks; I' must keep the image's dtype (fp16 networks on CUDA)."""
    x = torch.from_numpy(rng.random((2, 3, 16, 16), dtype=np.float32))
    mask = torch.zeros((2, 1, 16, 16))
    mask[:, :, :8] = 1
    got = M.obfuscate(x.half(), mask, 8)
    assert got.dtype == torch.float16
    ref = M.obfuscate(x.half().float(), mask, 8)  # same fp16 values, float32 arithmetic
    np.testing.assert_allclose(got.float().numpy(), ref.numpy(), atol=2e-3)  # values in [0,1]: fp16 eps 2^-11


@pytest.mark.parametrize("source", ["reconstruction", "full", "none"])
def test_fp16_export_module_matches_fp32(images, source):
    """The torch backend's precision='fp16' path (export_module().half() fed a half input; CUDA in the
    product) run on the CPU: the in-graph mask sources build float32 masks, which made the obfuscated
    image float32 and the MLP's fp16 convolution raise (GPU run 1, bench test_fader_cuda fp16)."""
    try:  # a torch without CPU fp16 convolutions cannot run this path here (unrelated to edgead)
        F.conv2d(torch.ones(1, 1, 4, 4, dtype=torch.float16), torch.ones(1, 1, 3, 3, dtype=torch.float16))
    except RuntimeError as e:
        pytest.skip(f"torch has no fp16 conv2d on the CPU: {e}")
    model = tiny(mask_source=source).eval()
    x = torch.from_numpy(images[:2])
    with torch.inference_mode():
        ref, _ = model.export_module()(x)
        rec, orig = copy.deepcopy(model).export_module().half()(x.half())
    assert rec.dtype == torch.float16 and orig.dtype == torch.float16
    # sigmoid outputs in [0, 1], fp16 activations (eps 2^-11) through ~10 convolutions: measured ~3e-4
    np.testing.assert_allclose(rec.float().numpy(), ref.numpy(), atol=1e-2)
    assert float((rec.float() - ref).abs().max()) > 0  # it did run in fp16 (not silently upcast)


def test_msgms_identity_and_losses(images):
    x = torch.from_numpy(images[:2])
    maps = post_fader.msgms_map(images[:2], images[:2])
    assert np.abs(np.asarray(maps)).max() < 1e-5
    assert float(msgms_loss(x, x)) < 1e-6 and abs(float(ssim_loss(x, x))) < 1e-5
    y = x.flip(-1)
    assert float(msgms_loss(x, y)) > 0.01 and float(ssim_loss(x, y)) > 0.01


def test_artifact_round_trip(tmp_path, images):
    from edgead.artifact import load_artifact, save_artifact

    model = tiny()
    model.fit(images[:4], None, progress=False)
    path = save_artifact(str(tmp_path / "art"), "fader", model.artifact_config(), model.preprocessing().to_dict(),
                         model.artifact_tensors())
    loaded = FADeR.from_artifact(load_artifact(path))
    assert loaded.config == model.config
    x = torch.from_numpy(images[4:6])
    s1, m1 = model.predict(x)
    s2, m2 = loaded.predict(x)
    np.testing.assert_allclose(m1.numpy(), m2.numpy(), atol=1e-6)
    np.testing.assert_allclose(s1.numpy(), s2.numpy(), atol=1e-6)
    # plug-and-play: FADeR on a trained baseline artifact (stage 1 skipped, encoder untouched)
    base = tiny(fader=False)
    base.fit(images[:4], None, progress=False)
    bpath = save_artifact(str(tmp_path / "base"), "fader", base.artifact_config(), base.preprocessing().to_dict(),
                          base.artifact_tensors())
    assert not any(k.startswith("mlp.") for k in load_artifact(bpath).tensors)
    plug = tiny(pretrained_artifact=bpath)
    stats = plug.fit(images[:4], None, progress=False)
    assert stats["pretrain_iters"] == 0 and stats["fader_iters"] == 2
    for a, b in zip(plug.unet.encoder.state_dict().values(), base.unet.encoder.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fader", [True, False])
def test_smoke_fit(images, fader):
    model = tiny(fader=fader)
    stats = model.fit(images[:4], images[4:6], progress=False)
    assert stats["pretrain_iters"] == 2 and np.isfinite(stats["pretrain_final_loss"])
    if fader:
        assert stats["fader_iters"] == 2 and np.isfinite(stats["fader_final_rank_loss"])
    else:
        assert model.mlp is None and "fader_iters" not in stats
    assert stats["n_val"] == 2 and np.isfinite(stats["val_score_mean"])
    pre = model.preprocessing()
    assert pre.size == (64, 64) and pre.mean == (0.0, 0.0, 0.0) and pre.std == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        model.fit(images[:2, :1], None, progress=False)


def test_postprocess_matches_reference_msgms(images):
    from edgead.ops_reference import msgms_map_reference

    x, y = images[:2], images[2:4]
    s, maps = post_fader.postprocess({"reconstruction": y, "original": x}, {"msgms_mean_filter": 21})
    ref = msgms_map_reference(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(maps, ref, atol=1e-5)
    np.testing.assert_allclose(s, ref.reshape(2, -1).max(1), atol=1e-5)


def test_deploy_onnxruntime_detector_matches_predict(tmp_path, images):
    pytest.importorskip("onnxruntime")
    from edgead.artifact import save_artifact
    from edgead.export.onnx import export_onnx
    from edgead.runtime.detector import Detector

    model = tiny().eval()
    path = save_artifact(str(tmp_path / "art"), "fader", model.artifact_config(), model.preprocessing().to_dict(),
                         model.artifact_tensors())
    export_onnx(path, model=model)
    det = Detector.load(path, backend="onnxruntime", device="cpu")
    s, m = det.infer_preprocessed(images[:3])
    s_ref, m_ref = model.predict(torch.from_numpy(images[:3]))
    np.testing.assert_allclose(m, m_ref.numpy(), atol=1e-4)
    np.testing.assert_allclose(s, s_ref.numpy(), atol=1e-4)
