"""tools/gpu_report.py (the GPU acceptance report writer): per-call times from every benchmark's
extra_info convention, on a synthetic pytest-benchmark JSON (no GPU needed)."""
import importlib.util
import json
import math
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gr():
    spec = importlib.util.spec_from_file_location("gpu_report", os.path.join(ROOT, "tools", "gpu_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(name, group, impl, median_s, **extra):
    return {"name": name, "group": group, "params": {"impl": impl}, "extra_info": extra,
            "stats": {"median": median_s, "rounds": 10}}


BENCH = {"benchmarks": [
    # knn / msgms: LOOP calls per round, per_call_ms = median / LOOP
    _bench("test_msgms_cuda[edgead-1]", "msgms", "edgead", 2.5e-3, per_call_ms=0.05),
    _bench("test_msgms_cuda[torch-1]", "msgms", "torch", 55e-3, per_call_ms=1.1),
    # coreset: 100 steps per round, per_step_ms
    _bench("test_coreset_cuda_step[edgead]", "coreset", "edgead", 30.0e-3, per_step_ms=0.30),
    _bench("test_coreset_cuda_step[torch_anomalib]", "coreset", "torch_anomalib", 60.0e-3, per_step_ms=0.60),
    # softmask: 100 calls per round, per_call_us (run 1 printed the 5.4 ms median as the time)
    _bench("test_softmask_cuda[edgead-a]", "softmask", "edgead", 5.4e-3, per_call_us=54.0),
    _bench("test_softmask_cuda[torch-a]", "softmask", "torch", 13.2e-3, per_call_us=132.0),
    # no loop: the median; a NaN per-call time (benchmark disabled) falls back to it as well
    _bench("test_predict_cuda", "predict", None, 3.9e-3),
    _bench("test_x[edgead]", "x", "edgead", 2e-3, per_call_ms=float("nan")),
]}


def test_time_per_call_from_every_convention(gr):
    rows = {r["name"]: r for r in gr.bench_rows(BENCH)}
    expect = {  # name -> (ms, basis)
        "test_msgms_cuda[edgead-1]": (0.05, "per call (per_call_ms)"),
        "test_coreset_cuda_step[edgead]": (0.30, "per step (per_step_ms)"),
        "test_softmask_cuda[edgead-a]": (0.054, "per call (per_call_us)"),
        "test_softmask_cuda[torch-a]": (0.132, "per call (per_call_us)"),
        "test_predict_cuda": (3.9, "median of a round"),
        "test_x[edgead]": (2.0, "median of a round"),
    }
    for name, (ms, basis) in expect.items():
        assert math.isclose(rows[name]["ms"], ms, rel_tol=1e-9), (name, rows[name]["ms"])
        assert rows[name]["basis"] == basis
    rat = {r["group"]: r for r in gr.ratios(gr.bench_rows(BENCH))}
    assert math.isclose(rat["softmask"]["ratio"], 132.0 / 54.0) and rat["softmask"]["basis"] == "per call (per_call_us)"
    assert math.isclose(rat["coreset"]["ratio"], 2.0) and math.isclose(rat["msgms"]["ratio"], 22.0)


def test_quick_report_tables_say_which_time(gr, tmp_path):
    (tmp_path / "stages.tsv").write_text("build\tPASS\t22\t\nbench_cuda\tPASS\t100\t\n")
    (tmp_path / "versions.json").write_text(json.dumps({"device": "GPU X", "compute_capability": "9.0"}))
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    out = str(tmp_path / "rep")
    rc = gr.main(["quick", "--stages", str(tmp_path / "stages.tsv"), "--versions", str(tmp_path / "versions.json"),
                  "--bench", str(tmp_path / "bench.json"), "--out", out])
    assert rc == 0
    md = open(out + ".md").read()
    assert "| softmask | edgead | 0.0540 | per call (per_call_us) |" in md
    assert "| coreset | edgead | 0.3000 | per step (per_step_ms) |" in md
    assert "| predict | predict_cuda | 3.900 | median of a round |" in md
    assert "| softmask | edgead | torch | 2.44x | per call (per_call_us) |" in md
    doc = json.load(open(out + ".json"))
    assert {r["name"]: r["basis"] for r in doc["benchmarks"]}["test_coreset_cuda_step[edgead]"] == "per step (per_step_ms)"
