import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from edgead.models import backbones  # noqa: E402
from edgead.models.backbones import build_backbone, default_normalization  # noqa: E402


def _random(name="resnet18", layers=("layer2", "layer3")):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_backbone(name, layers, allow_random=True)


def test_mobilenet_weights_channels_strides(mobilenet_weights):
    fe = build_backbone("mobilenet_v2", ("layer2", "layer3"), weights=mobilenet_weights)
    assert fe.channels == [32, 96] and fe.strides == [8, 16]
    x = torch.randn(2, 3, 64, 96)
    feats = fe(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 8, 12), (2, 96, 4, 6)]
    assert not any(p.requires_grad for p in fe.parameters())
    fe.train()
    assert not fe.training
    # truncated: nothing after features[13]
    assert len(fe.features) == 14
    assert default_normalization("mobilenet_v2", mobilenet_weights) == ((0.5,) * 3, (0.5,) * 3)


def test_mobilenet_all_layers_and_raw_names():
    fe = _random("mobilenet_v2", ("layer1", "layer2", "layer3", "layer4"))
    assert fe.channels == [24, 32, 96, 160] and fe.strides == [4, 8, 16, 32]
    fe2 = _random("mobilenet_v2", ("features.6", "features.3"))
    assert fe2.channels == [32, 24] and fe2.strides == [8, 4]


def test_resnet18_random_and_round_trip():
    with pytest.warns(UserWarning, match="RANDOM"):
        fe = build_backbone("resnet18", allow_random=True)
    assert fe.channels == [128, 256] and fe.strides == [8, 16]
    assert not hasattr(fe, "layer4") and not hasattr(fe, "fc")
    fe2 = build_backbone("resnet18", weights=fe.state_dict())
    x = torch.randn(1, 3, 32, 32)
    for a, b in zip(fe(x), fe2(x)):
        torch.testing.assert_close(a, b)


def test_full_state_dict_loads_into_truncated(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.resnet18(weights=None)
    p = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(p))
    fe = build_backbone("resnet18", ("layer1",), weights=str(p))
    torch.testing.assert_close(fe.conv1.weight, net.conv1.weight)
    # a torch state dict (weights_only) works as well
    p2 = tmp_path / "r18.pt"
    torch.save(net.state_dict(), str(p2))
    fe = build_backbone("resnet18", ("layer1",), weights=str(p2))
    torch.testing.assert_close(fe.layer1[0].conv1.weight, net.layer1[0].conv1.weight)
    assert default_normalization("resnet18", str(p)) == (backbones.IMAGENET_MEAN, backbones.IMAGENET_STD)


def test_wrong_state_dict_errors_clearly(tmp_path):
    fe = _random("mobilenet_v2", ("layer2",))
    with pytest.raises(ValueError, match="missing keys") as ei:
        build_backbone("resnet18", weights=fe.state_dict())
    assert "unexpected keys" in str(ei.value)
    sd = _random("resnet18").state_dict()
    sd["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        build_backbone("resnet18", weights=sd)
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"not a weights file at all")
    with pytest.raises(ValueError, match="safetensors"):
        build_backbone("resnet18", weights=str(bad))
    with pytest.raises(FileNotFoundError):
        build_backbone("resnet18", weights=str(tmp_path / "nope.safetensors"))


def test_argument_errors():
    with pytest.raises(ValueError, match="no weights given"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="expected one of"):
        build_backbone("vgg16", allow_random=True)
    with pytest.raises(ValueError, match="layers"):
        _random("resnet18", ("features.3",))
    with pytest.raises(ValueError, match="layers"):
        _random("mobilenet_v2", ("layer7",))


def test_imagenet_offline_fails_fast(monkeypatch):
    import urllib.error

    from torchvision.models import ResNet18_Weights

    def boom(self, *a, **k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(type(ResNet18_Weights.IMAGENET1K_V1), "get_state_dict", boom)
    with pytest.raises(RuntimeError, match="local weights file"):
        build_backbone("resnet18", weights="imagenet")
