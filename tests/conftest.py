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


@pytest.fixture(scope="session")
def texture_ad():
    path = os.path.join(SHARED_DATA, "texture-ad")
    if not os.path.isdir(path):
        pytest.skip(f"texture-ad data not found at {path}")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights():
    path = os.path.join(SHARED_WEIGHTS, "mobilenet_v2_imagenet.safetensors")
    if not os.path.isfile(path):
        pytest.skip(f"MobileNetV2 weights not found at {path}")
    return path


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
