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
