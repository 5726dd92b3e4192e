"""Soak and concurrency of the torch-free runtime on a tiny real artifact (tests/_tiny.py: FADeR 32x32
exported to ONNX, ONNX Runtime backend).

- 8 threads sharing one Detector give results bit-identical to one thread.
- CALLS (default 2,000; ~20 s here) single-image calls: resident memory after the calls grows < 1 %
  over the level after a warm-up (WARMUP calls), and < 2 KiB per call. The 20,000-call version is
  bench/test_bench_soak.py (run by hand, not in CI).
"""
import concurrent.futures as cf
import gc
import os

import numpy as np
import pytest

from _tiny import build_tiny_artifact, rss_bytes, tiny_images

CALLS = int(os.environ.get("EDGEAD_SOAK_CALLS", "2000"))
WARMUP = 200


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from edgead.runtime import Detector

    path = build_tiny_artifact(str(tmp_path_factory.mktemp("soak") / "art"))
    return Detector.load(path, backend="onnxruntime", device="cpu")


def test_eight_threads_share_one_detector_bit_identical(detector):
    imgs = tiny_images(12, seed=5)
    single = [detector(im) for im in imgs]
    jobs = [(t, i) for t in range(8) for i in range(len(imgs))]
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        out = list(ex.map(lambda job: (job, detector(imgs[job[1]])), jobs))
    for (t, i), r in out:
        assert r.score == single[i].score, (t, i)
        np.testing.assert_array_equal(r.anomaly_map, single[i].anomaly_map)
        np.testing.assert_array_equal(r.mask, single[i].mask)
        assert r.label == single[i].label
    # batches too: the threads call with lists of 3 images
    batch = imgs[:3]
    ref = detector(batch)
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        res = list(ex.map(lambda _: detector(batch), range(16)))
    for r in res:
        np.testing.assert_array_equal(r.scores, ref.scores)
        np.testing.assert_array_equal(r.anomaly_maps, ref.anomaly_maps)


def soak(detector, calls, warmup=WARMUP):
    """(rss after warm-up, rss at the end, the first result, the last result)."""
    img = tiny_images(1, seed=9)[0]
    first = detector(img)
    for _ in range(warmup):
        detector(img)
    gc.collect()
    base = rss_bytes()
    for _ in range(calls):
        last = detector(img)
    gc.collect()
    return base, rss_bytes(), first, last


def test_soak_rss_growth_below_one_percent(detector):
    base, end, first, last = soak(detector, CALLS)
    growth = end - base
    print(f"soak: {CALLS} calls, RSS {base / 2**20:.1f} -> {end / 2**20:.1f} MiB ({100 * growth / base:+.3f} %, "
          f"{growth / CALLS:+.0f} B/call)")
    assert growth < 0.01 * base, f"RSS grew {growth / 2**20:.2f} MiB over {CALLS} calls ({100 * growth / base:.2f} %)"
    assert growth / CALLS < 2048, f"{growth / CALLS:.0f} bytes per call"
    assert last.score == first.score
    np.testing.assert_array_equal(last.anomaly_map, first.anomaly_map)
