import os

import numpy as np
import pytest

import edgead

HAS_CUDA = edgead.cuda_available()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")
SHARED_WEIGHTS = os.path.join(os.path.dirname(REPO), "shared", "weights")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason=f"no usable CUDA GPU: {edgead.cuda_status()}")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch intra-op thread for the whole suite: the tests run tiny convolutions on 2 shared
    cores, where OpenMP spin-waiting with 2 threads made steps 10-60x slower. Restored afterwards."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def torch_cuda():
    """torch with a CUDA device, or skip."""
    torch = pytest.importorskip("torch")
    if not (HAS_CUDA and torch.cuda.is_available()):
        pytest.skip("needs torch with CUDA and a GPU")
    return torch


# Data and weights from ../shared when this checkout sits next to it (the project's machines); a fresh
# clone without ../shared gets small stand-ins made here, so no test skips for missing files.
SMALL_TEXTURE_AD = {"n_train": 8, "n_test_good": 3, "n_per_defect": 1, "size": 64}


@pytest.fixture(scope="session")
def texture_ad(tmp_path_factory):
    """(root, (n_train, n_test_good, n_test_defect) of brick): the shared texture-ad dataset, or a small
    generated one with the same layout (MVTec: <category>/{train/good, test/<good|defect>, ground_truth/<defect>})."""
    path = os.path.join(SHARED_DATA, "texture-ad")
    if os.path.isdir(os.path.join(path, "brick")):
        return path, (200, 60, 75)
    from edgead.data.synthetic import DEFECT_TYPES, make_mvtec_dataset

    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:160, 0:160]
    photo = (127 + 60 * np.sin(xx / 4.0) * np.cos(yy / 7.0) + 20 * g.standard_normal((160, 160))).clip(0, 255).astype(np.uint8)
    root = tmp_path_factory.mktemp("texture-ad")
    c = SMALL_TEXTURE_AD
    make_mvtec_dataset(root, {"brick": photo}, n_train=c["n_train"], n_test_good=c["n_test_good"],
                       n_per_defect=c["n_per_defect"], size=c["size"], seed=0, progress=False)
    return str(root), (c["n_train"], c["n_test_good"], c["n_per_defect"] * len(DEFECT_TYPES))


def _folded_bn_mobilenet_v2(path):
    """A random-init torchvision MobileNetV2 state dict in the shared file's format (safetensors, BatchNorm
    folded: running mean 0, running var 1 - 1e-5, which default_normalization recognises as the Keras
    conversion)."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = torchvision.models.mobilenet_v2(weights=None).state_dict()
    for k, v in sd.items():
        if k.endswith("running_mean"):
            sd[k] = torch.zeros_like(v)
        elif k.endswith("running_var"):
            sd[k] = torch.full_like(v, 1 - 1e-5)
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return path


@pytest.fixture(scope="session")
def mobilenet_weights(tmp_path_factory):
    path = os.path.join(SHARED_WEIGHTS, "mobilenet_v2_imagenet.safetensors")
    if os.path.isfile(path):
        return path
    pytest.importorskip("torchvision")
    return _folded_bn_mobilenet_v2(str(tmp_path_factory.mktemp("weights") / "mobilenet_v2_imagenet.safetensors"))


def make_texture_category(root, size=48, channels=1, tile=12, n_train=10, n_good=4, n_defect=4, defect=10,
                          defect_range=(6, 30), seed=0):
    """A tiny MVTec-layout category written under `root`: periodic texture images (train/good, test/good)
    and test/spot images with a bright square defect and its ground-truth mask. Returns str(root)."""
    from edgead.data.io import write_image

    rng = np.random.default_rng(seed)
    shape = (tile, tile) + ((channels,) if channels > 1 else ())
    base = np.random.default_rng(123).integers(0, 256, shape).astype(np.float32)
    reps = (size // tile, size // tile) + ((1,) if channels > 1 else ())

    def texture():
        dy, dx = rng.integers(0, tile, size=2)
        img = np.tile(np.roll(base, (dy, dx), (0, 1)), reps)
        return np.clip(img + rng.normal(0, 8, img.shape), 0, 255)

    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        os.makedirs(os.path.join(root, sub))
    for i in range(n_train):
        write_image(os.path.join(root, "train/good", f"{i:03d}.png"), texture().astype(np.uint8))
    for i in range(n_good):
        write_image(os.path.join(root, "test/good", f"{i:03d}.png"), texture().astype(np.uint8))
    for i in range(n_defect):
        img = texture()
        m = np.zeros(img.shape[:2], np.uint8)
        y, x = rng.integers(defect_range[0], defect_range[1], size=2)
        img[y : y + defect, x : x + defect] = 255
        m[y : y + defect, x : x + defect] = 255
        write_image(os.path.join(root, "test/spot", f"{i:03d}.png"), img.astype(np.uint8))
        write_image(os.path.join(root, "ground_truth/spot", f"{i:03d}_mask.png"), m)
    return str(root)
