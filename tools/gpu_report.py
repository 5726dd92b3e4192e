#!/usr/bin/env python3
"""Report writer for tools/gpu_acceptance.sh (stdlib only; no torch import).

  gpu_report.py quick --stages S --versions V --bench B [B ...] --out PREFIX [--budget N --elapsed N]
      stage table + GPU benchmark medians and baseline ratios -> PREFIX.json, PREFIX.md; prints the
      PASS/FAIL summary; exit 0 only when every stage that ran passed.
  gpu_report.py miic --stages S --versions V --fit F --images N --weights W --out PREFIX
      MIIC-sized PatchCore fit: wall time, fit time, peak host RSS, peak GPU memory -> PREFIX.{json,md}.
  gpu_report.py measure --out-json F [--artifact DIR] -- CMD...
      runs CMD, polls nvidia-smi for the GPU memory in use (peak minus the level before the start) and
      records the children's peak RSS (getrusage), wall time and exit code in F; exits with CMD's code.

Benchmark naming (bench/README.md): GPU benchmarks are marked `cuda` and set `benchmark.group`; in a
group, entries whose `impl` parameter (or test name) starts with "edgead" are ours, every other entry
is a baseline run in the same process. The time used, in ms, is the benchmark's own per-call / per-step
time when it loops internally: extra_info["per_call_ms"], ["per_step_ms"] (coreset) or ["per_call_us"]
(softmask, converted from µs), in that order; else the median of a round. The report's tables say which
(column "time"). ratio = baseline time / edgead time (> 1: edgead faster).
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path


def read_stages(path):
    rows = []
    for line in Path(path).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            rows.append({"stage": parts[0], "status": parts[1], "seconds": int(parts[2] or 0),
                         "detail": parts[3] if len(parts) > 3 else ""})
    return rows


def read_json(path, default):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return default


def _impl(b):
    params = b.get("params") or {}
    impl = params.get("impl")
    if isinstance(impl, str):
        return impl
    return re.sub(r"^test_", "", b.get("name", ""))


# extra_info key -> (factor to ms, what the time is); first present finite one wins
TIME_KEYS = (("per_call_ms", 1.0, "per call"), ("per_step_ms", 1.0, "per step"), ("per_call_us", 1e-3, "per call"))


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v not in (float("inf"), float("-inf"))


def bench_time_ms(b):
    """(ms, basis) of one pytest-benchmark entry: its per-call / per-step extra_info time, else the median.
    basis names the source, e.g. 'per call (per_call_us)' or 'median of a round'."""
    extra = b.get("extra_info") or {}
    for key, factor, what in TIME_KEYS:
        if _finite(extra.get(key)):
            return float(extra[key]) * factor, f"{what} ({key})"
    median = (b.get("stats") or {}).get("median")
    return (float(median) * 1e3 if _finite(median) else float("nan")), "median of a round"


def bench_rows(bench):
    """pytest-benchmark json -> rows with group, name, impl, ms, basis, is_edgead."""
    rows = []
    for b in bench.get("benchmarks", []):
        st = b.get("stats") or {}
        extra = b.get("extra_info") or {}
        ms, basis = bench_time_ms(b)
        impl = _impl(b)
        rows.append({"group": b.get("group") or b.get("name"), "name": b.get("name"), "impl": impl,
                     "ms": ms, "basis": basis, "median_s": st.get("median"), "rounds": st.get("rounds"),
                     "edgead": impl.startswith("edgead") or b.get("name", "").startswith("test_edgead"),
                     "extra_info": extra})
    return rows


def ratios(rows):
    """Per group: every (edgead impl, baseline impl) pair -> baseline_ms / edgead_ms."""
    out = []
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    for g, rs in groups.items():
        ours = [r for r in rs if r["edgead"]]
        base = [r for r in rs if not r["edgead"]]
        for o in ours:
            for b in base:
                if o["ms"] > 0:
                    basis = o["basis"] if o["basis"] == b["basis"] else f"{o['basis']} vs {b['basis']}"
                    out.append({"group": g, "edgead": o["impl"], "baseline": b["impl"], "edgead_ms": o["ms"],
                                "baseline_ms": b["ms"], "ratio": b["ms"] / o["ms"], "basis": basis})
    return out


def fmt_ms(ms):
    if ms != ms:
        return "n/a"
    return f"{ms:.4f}" if ms < 1 else f"{ms:.3f}" if ms < 100 else f"{ms:.1f}"


def summary_lines(stages):
    lines = []
    for s in stages:
        lines.append(f"  {s['status']:<8} {s['stage']:<20} {s['seconds']:>4} s  {s['detail']}")
    ran = [s for s in stages if s["status"] != "SKIP"]
    ok = bool(ran) and all(s["status"] == "PASS" for s in ran)
    return ok, lines


def cmd_quick(a):
    stages = read_stages(a.stages)
    versions = read_json(a.versions, {})
    bench = {"benchmarks": []}
    for path in a.bench:  # one pytest-benchmark json per bench stage; a stage killed by its limit wrote none
        part = read_json(path, {})
        bench["benchmarks"] += part.get("benchmarks", [])
        bench.setdefault("machine_info", part.get("machine_info", {}))
    rows = bench_rows(bench)
    rat = ratios(rows)
    ok, lines = summary_lines(stages)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    doc = {"date": date, "versions": versions, "stages": stages, "passed": ok, "budget_s": a.budget,
           "elapsed_s": a.elapsed, "benchmarks": rows, "ratios": rat,
           "machine_info": bench.get("machine_info", {})}
    Path(a.out + ".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    md = [f"# GPU acceptance run, {versions.get('device', '?')}, {date}", "",
          f"- Device: {versions.get('device', '?')} (compute capability {versions.get('compute_capability', '?')}, "
          f"driver {versions.get('driver', '?')})",
          "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                     if k not in ("device", "compute_capability", "driver")),
          f"- Command: `tools/gpu_acceptance.sh` ({a.elapsed} s of a {a.budget} s budget). Raw numbers: "
          f"`{Path(a.out).name}.json`. Times in ms: per call / per step where the benchmark loops (its "
          "extra_info per_call_ms, per_step_ms or per_call_us / 1000), else the median of a round; column "
          "'time' says which. Ratio = baseline / edgead, same process.", "",
          f"Result: **{'PASS' if ok else 'FAIL'}**", "", "| stage | status | seconds |", "|---|---|---|"]
    md += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in stages]
    md += ["", "| benchmark group | impl | ms | time |", "|---|---|---|---|"]
    md += [f"| {r['group']} | {r['impl']} | {fmt_ms(r['ms'])} | {r['basis']} |" for r in rows]
    if rat:
        md += ["", "| group | edgead | baseline | ratio | time |", "|---|---|---|---|---|"]
        md += [f"| {r['group']} | {r['edgead']} | {r['baseline']} | {r['ratio']:.2f}x | {r['basis']} |" for r in rat]
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    print("\n=========================== GPU acceptance summary ===========================")
    print(f"{versions.get('device', '?')}  sm_{str(versions.get('compute_capability', '?')).replace('.', '')}  "
          f"{a.elapsed} s / {a.budget} s")
    print("\n".join(lines))
    if rat:
        print("  ratios (baseline / edgead, same process):")
        for r in rat:
            print(f"    {r['ratio']:7.2f}x  {r['group']}: {r['edgead']} vs {r['baseline']}")
    print(f"  results: {a.out}.md / .json")
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_miic(a):
    stages = read_stages(a.stages)
    versions = read_json(a.versions, {})
    fit = read_json(a.fit, {})
    ok, lines = summary_lines(stages)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    doc = {"date": date, "versions": versions, "stages": stages, "passed": ok, "images": a.images,
           "weights": a.weights, "fit": fit}
    Path(a.out + ".json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    md = [f"# PatchCore fit on a MIIC-sized split ({a.images} images), {versions.get('device', '?')}, {date}", "",
          f"- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
          f"- Backbone weights: {a.weights}",
          f"- Command: `tools/gpu_acceptance.sh miic` (edgead make-data, then edgead train --val-fraction 0 --device cuda)",
          "", f"Result: **{'PASS' if ok else 'FAIL'}**", "", "| stage | status | seconds |", "|---|---|---|"]
    md += [f"| {s['stage']} | {s['status']} | {s['seconds']} |" for s in stages]
    md += ["", "| measure | value |", "|---|---|"]
    for k in ("wall_s", "fit_seconds", "peak_host_rss_mib", "peak_gpu_mib", "gpu_mib_before", "returncode"):
        md.append(f"| {k} | {fit.get(k, 'n/a')} |")
    Path(a.out + ".md").write_text("\n".join(md) + "\n")
    print("\n======================= GPU acceptance summary (miic) ========================")
    print("\n".join(lines))
    print("  " + ", ".join(f"{k} {fit.get(k)}" for k in ("wall_s", "fit_seconds", "peak_host_rss_mib", "peak_gpu_mib")))
    print(f"RESULT: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def _gpu_used_mib():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return int(out[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None


def _find_fit_seconds(root):
    for p in sorted(Path(root).rglob("*.json")) if root and Path(root).is_dir() else []:
        try:
            m = re.search(r'"fit_seconds":\s*([0-9.]+)', p.read_text())
        except OSError:
            continue
        if m:
            return float(m.group(1))
    return None


def cmd_measure(a):
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        print("gpu_report.py measure: no command given", file=sys.stderr)
        return 64
    before = _gpu_used_mib()
    peak = [before]
    stop = threading.Event()

    def poll():
        while not stop.wait(0.5):
            u = _gpu_used_mib()
            if u is not None and (peak[0] is None or u > peak[0]):
                peak[0] = u

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t0 = time.perf_counter()
    try:
        rc = subprocess.call(cmd)
    except KeyboardInterrupt:
        rc = 130
    wall = time.perf_counter() - t0
    stop.set()
    th.join(timeout=2)
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    res = {"command": cmd, "returncode": rc, "wall_s": round(wall, 2), "peak_host_rss_mib": round(rss_kib / 1024, 1),
           "gpu_mib_before": before,
           "peak_gpu_mib": (peak[0] - before) if (peak[0] is not None and before is not None) else None,
           "fit_seconds": _find_fit_seconds(a.artifact)}
    Path(a.out_json).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return rc


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quick")
    q.add_argument("--stages", required=True)
    q.add_argument("--versions", required=True)
    q.add_argument("--bench", required=True, nargs="+")
    q.add_argument("--out", required=True)
    q.add_argument("--budget", type=int, default=0)
    q.add_argument("--elapsed", type=int, default=0)
    m = sub.add_parser("miic")
    m.add_argument("--stages", required=True)
    m.add_argument("--versions", required=True)
    m.add_argument("--fit", required=True)
    m.add_argument("--images", type=int, required=True)
    m.add_argument("--weights", default="")
    m.add_argument("--out", required=True)
    me = sub.add_parser("measure")
    me.add_argument("--out-json", required=True)
    me.add_argument("--artifact", default=None, help="folder searched for a 'fit_seconds' JSON entry afterwards")
    me.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    return {"quick": cmd_quick, "miic": cmd_miic, "measure": cmd_measure}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
