"""Soak: 20,000 ONNX Runtime Detector calls on a tiny real artifact (tests/_tiny.py: FADeR 32x32), timed
as one round; resident memory after 20,000 calls must be within 1 % of the level after a 500-call warm-up.
Not part of CI (about 3 minutes on 2 loaded cores); tests/test_soak.py runs 2,000 calls there.

    python3 -m pytest bench/test_bench_soak.py --benchmark-only -s -q
"""
import gc
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from _tiny import build_tiny_artifact, rss_bytes, tiny_images  # noqa: E402

CALLS = int(os.environ.get("EDGEAD_SOAK_CALLS", "20000"))
WARMUP = 500


def test_soak_20000_calls_rss(benchmark, tmp_path):
    from edgead.runtime import Detector

    det = Detector.load(build_tiny_artifact(str(tmp_path / "art")), backend="onnxruntime", device="cpu")
    img = tiny_images(1, seed=9)[0]
    first = det(img)
    for _ in range(WARMUP):
        det(img)
    gc.collect()
    base = rss_bytes()
    state = {}

    def run():
        for _ in range(CALLS):
            state["last"] = det(img)

    benchmark.pedantic(run, rounds=1, iterations=1)
    gc.collect()
    end = rss_bytes()
    growth = end - base
    benchmark.extra_info.update(calls=CALLS, rss_after_warmup_mib=base / 2**20, rss_end_mib=end / 2**20,
                                growth_pct=100 * growth / base, bytes_per_call=growth / CALLS,
                                per_call_ms=(benchmark.stats.stats.median if benchmark.stats else float('nan')) / CALLS * 1e3)
    print(f"soak: {CALLS} calls, {(benchmark.stats.stats.median if benchmark.stats else float('nan')) / CALLS * 1e3:.2f} ms/call, RSS {base / 2**20:.1f} -> "
          f"{end / 2**20:.1f} MiB ({100 * growth / base:+.3f} %, {growth / CALLS:+.1f} B/call)")
    assert growth < 0.01 * base
    assert state["last"].score == first.score
    np.testing.assert_array_equal(state["last"].anomaly_map, first.anomaly_map)
