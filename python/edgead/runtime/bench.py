"""`edgead bench`: per-stage latency (pre, network, post, total; p50 / p99) per model, backend and batch size.

``bench_artifacts(artifacts, backends="all", batch_sizes=(1, 32), iterations=50, warmup=3, device=None,
precision=None, threads=None, image_size=None, out=".")`` -- artifacts: one path or a list; backends:
"all", a name or a list; out: a directory, or a ``.json`` path whose ``.md`` sibling gets the table;
threads: CPU threads per backend.

Each iteration calls ``detector(images)`` on ``batch`` synthetic uint8 RGB images of ``image_size``
(default: the model's input size, so "pre" is conversion + normalisation only; pass the camera's
size to include the resize). Stage times come from the Detector's timing hooks; "total" is the wall
time of the call (pre + network + post + resize back to the image size).

Outputs: pytest-benchmark-compatible JSON (one benchmark per model/backend/batch/stage, ``stats``
in seconds, p99 in ``extra_info``) and a Markdown table that records the device, library versions
and the date. Torch is imported only when the torch backend is benchmarked.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from edgead.runtime import backends as _backends

STAGES = ("pre", "network", "post", "total")

__all__ = ["bench_artifacts", "run_bench", "environment", "write_json", "write_markdown"]


def _stats(samples: Sequence[float]) -> Dict[str, Any]:
    a = np.asarray(samples, dtype=np.float64)
    q1, med, q3 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    iqr = q3 - q1
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    inside = a[(a >= lo) & (a <= hi)]
    return {
        "min": float(a.min()), "max": float(a.max()), "mean": mean, "stddev": std, "rounds": int(a.size),
        "median": med, "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": int(((a < lo) | (a > hi)).sum()),
        "stddev_outliers": int((np.abs(a - mean) > std).sum()) if std > 0 else 0,
        "outliers": f"{int((np.abs(a - mean) > std).sum()) if std > 0 else 0};{int(((a < lo) | (a > hi)).sum())}",
        "ld15iqr": float(inside.min()) if inside.size else float(a.min()),
        "hd15iqr": float(inside.max()) if inside.size else float(a.max()),
        "ops": 1.0 / mean if mean > 0 else 0.0, "total": float(a.sum()), "iterations": 1,
        "p99": float(np.percentile(a, 99)),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> Dict[str, Any]:
    """Device and versions for the report; torch/tensorrt versions only when already imported (never imports torch)."""
    env: Dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
    }
    import edgead

    env["edgead"] = edgead.__version__
    try:
        bi = edgead.build_info()
        env["edgead_cuda_build"] = bi.get("cuda_version") or bi.get("cuda")
    except Exception:
        pass
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except Exception:
        env["onnxruntime"] = None
    trt = sys.modules.get("tensorrt")
    env["tensorrt"] = getattr(trt, "__version__", None)
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
    if _backends.cuda_device_count() > 0:
        try:
            info = _backends.cuda_device_info(0)
            env["gpu"] = f"{info['name']} (sm_{info['compute_capability'].replace('.', '')})"
        except Exception as e:
            env["gpu"] = f"unknown ({e})"
    else:
        env["gpu"] = None
    return env


def run_bench(
    artifact_dir: str,
    backend: str,
    batch_sizes: Sequence[int] = (1, 32),
    iterations: int = 50,
    warmup: int = 3,
    device: Optional[str] = None,
    precision: Optional[str] = None,
    image_size: Optional[Sequence[int]] = None,
    seed: int = 0,
    **load_kwargs,
) -> List[Dict[str, Any]]:
    """Benchmark one artifact on one backend; returns one record per batch size with per-stage samples (s)."""
    from edgead.runtime.detector import Detector

    if iterations < 1:
        raise ValueError(f"run_bench: argument 'iterations' expected >= 1, got {iterations}")
    det = Detector.load(artifact_dir, backend=backend, device=device, precision=precision, **load_kwargs)
    h, w = tuple(image_size) if image_size else det.preprocessing.size
    rng = np.random.default_rng(seed)
    acc: Dict[str, float] = {}

    def hook(stage, seconds, n):
        acc[stage] = acc.get(stage, 0.0) + seconds

    det.add_timing_hook(hook)
    records = []
    try:
        for b in batch_sizes:
            images = rng.integers(0, 256, size=(int(b), int(h), int(w), 3), dtype=np.uint8)
            for _ in range(warmup):
                det(images)
            samples: Dict[str, List[float]] = {s: [] for s in STAGES}
            for _ in range(iterations):
                acc.clear()
                t0 = time.perf_counter()
                det(images)
                total = time.perf_counter() - t0
                for s in ("pre", "network", "post"):
                    samples[s].append(acc.get(s, 0.0))
                samples["total"].append(total)
            d = det.describe()
            records.append({
                "model": det.model_type, "artifact": os.path.abspath(artifact_dir), "backend": d["backend"],
                "device": d["device"], "precision": d["precision"], "batch": int(b), "image_size": [int(h), int(w)],
                "input_size": list(det.preprocessing.size), "iterations": iterations, "warmup": warmup,
                "threads": load_kwargs.get("threads"), "samples": samples, "describe": {k: v for k, v in d.items() if isinstance(v, (str, int, float, list, type(None)))},
            })
    finally:
        det.close()
    return records


def _name(r: Dict[str, Any], stage: str) -> str:
    return f"{r['model']}-{r['backend']}-{r['device']}-{r['precision']}-b{r['batch']}-{stage}"


def write_json(records: List[Dict[str, Any]], path: str, env: Dict[str, Any]) -> str:
    """pytest-benchmark-compatible JSON (`pytest-benchmark compare` reads it)."""
    benchmarks = []
    for r in records:
        for stage in STAGES:
            st = _stats(r["samples"][stage])
            p99 = st.pop("p99")
            benchmarks.append({
                "group": f"{r['model']} batch {r['batch']}",
                "name": f"runtime[{_name(r, stage)}]",
                "fullname": f"edgead.runtime.bench::runtime[{_name(r, stage)}]",
                "params": {"model": r["model"], "backend": r["backend"], "device": r["device"],
                           "precision": r["precision"], "batch": r["batch"], "stage": stage},
                "param": _name(r, stage),
                "extra_info": {"p99": p99, "p50": st["median"], "per_image_s": st["median"] / r["batch"],
                               "image_size": r["image_size"], "input_size": r["input_size"],
                               "artifact": r["artifact"], **{f"backend_{k}": v for k, v in r["describe"].items()
                                                             if k not in ("backend", "device", "precision")}},
                "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": r["iterations"],
                            "max_time": None, "min_time": None, "warmup": r["warmup"]},
                "stats": st,
            })
    machine = {
        "node": platform.node(), "processor": env.get("cpu"), "machine": platform.machine(),
        "python_compiler": platform.python_compiler(), "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(), "release": platform.release(), "system": platform.system(),
        "cpu": {"brand_raw": env.get("cpu"), "count": env.get("cpu_count")}, "gpu": env.get("gpu"),
        "edgead_environment": env,
    }
    doc = {"machine_info": machine, "commit_info": _commit_info(), "benchmarks": benchmarks,
           "datetime": env["date"], "version": "5.2.3"}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    return path


def _commit_info() -> Dict[str, Any]:
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        cid = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", here, "status", "--porcelain"], capture_output=True, text=True,
                                    timeout=10).stdout.strip())
        return {"id": cid or None, "dirty": dirty, "project": "edgead"}
    except Exception:
        return {"id": None, "dirty": None, "project": "edgead"}


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def write_markdown(records: List[Dict[str, Any]], path: str, env: Dict[str, Any], command: Optional[str] = None) -> str:
    lines = ["# edgead runtime latency", ""]
    lines.append(f"- date: {env['date']}")
    lines.append(f"- device: CPU {env.get('cpu')} ({env.get('cpu_count')} logical cores)"
                 + (f"; GPU {env['gpu']}" if env.get("gpu") else "; no GPU"))
    vers = [f"edgead {env.get('edgead')}", f"numpy {env.get('numpy')}", f"onnxruntime {env.get('onnxruntime')}",
            f"tensorrt {env.get('tensorrt') or 'not used'}"]
    if env.get("torch"):
        vers.append(f"torch {env['torch']} (CUDA {env.get('torch_cuda')})")
    vers.append(f"edgead._C CUDA build {env.get('edgead_cuda_build')}")
    lines.append("- versions: " + ", ".join(vers))
    lines.append(f"- python {env.get('python')} on {env.get('platform')}")
    threads = sorted({str(r.get("threads") or "default") for r in records})
    lines.append(f"- CPU threads per backend: {', '.join(threads)}")
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", "Milliseconds per call (p50 / p99); `per image` = total p50 / batch.", "",
              "| model | backend | device | precision | batch | pre | network | post | total | per image | images/s |",
              "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        cells = []
        for s in STAGES:
            a = np.asarray(r["samples"][s])
            cells.append(f"{_ms(np.percentile(a, 50))} / {_ms(np.percentile(a, 99))}")
        tot = float(np.percentile(r["samples"]["total"], 50))
        lines.append(f"| {r['model']} | {r['backend']} | {r['device']} | {r['precision']} | {r['batch']} | "
                     + " | ".join(cells) + f" | {_ms(tot / r['batch'])} | {r['batch'] / tot:.1f} |")
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def _as_list(v, default) -> list:
    if v is None:
        return list(default)
    if isinstance(v, str):
        return [p for p in v.replace(",", " ").split() if p]
    if isinstance(v, (list, tuple)):
        out = []
        for p in v:
            out += _as_list(p, []) if isinstance(p, str) else [p]
        return out
    return [v]


def bench_artifacts(artifacts: Union[str, Sequence[str]], backends: Union[str, Sequence[str]] = "all",
                    batch_sizes: Sequence[int] = (1, 32), iterations: int = 50, warmup: int = 3,
                    device: Optional[str] = None, precision: Optional[str] = None, threads: Optional[int] = None,
                    image_size: Optional[Sequence[int]] = None, out: str = ".", command: Optional[str] = None) -> int:
    """`edgead bench`: see the module docstring. Prints the Markdown table; returns 0 (1 if every run failed)."""
    artifacts = _as_list(artifacts, [])
    if not artifacts:
        raise ValueError("edgead bench: give at least one artifact directory")
    requested = _as_list(backends, ["all"])
    if "all" in requested:
        names = list(_backends.available_backends(device))
    else:
        names = requested
        for n in names:
            if n not in _backends.BACKENDS and n != "auto":
                raise ValueError(f"edgead bench: --backend expected 'all' or names from {_backends.BACKENDS}, got {n!r}")
    batch_sizes = list(batch_sizes)
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1 for b in batch_sizes):
        raise ValueError(f"edgead bench: --batch-sizes expected ints >= 1, got {batch_sizes}")
    for arg, v, lo in (("iterations", iterations, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"edgead bench: --{arg} expected an int >= {lo}, got {v!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"edgead bench: --threads expected an int >= 1, got {threads!r}")
    load_kwargs = {"threads": int(threads)} if threads else {}
    if image_size is not None:
        image_size = [int(v) for v in image_size]
        image_size = image_size * 2 if len(image_size) == 1 else image_size
    out = out or "."
    if out.endswith(".json"):
        json_path, md_path = out, out[:-5] + ".md"
    else:
        os.makedirs(out, exist_ok=True)
        json_path, md_path = os.path.join(out, "bench_runtime.json"), os.path.join(out, "bench_runtime.md")

    records, failures = [], []
    for art in artifacts:
        for name in names:
            try:
                records += run_bench(art, name, batch_sizes=batch_sizes, iterations=int(iterations), warmup=int(warmup),
                                     device=device, precision=precision, image_size=image_size, **load_kwargs)
            except Exception as e:  # one backend failing must not lose the others' numbers
                failures.append(f"{art} on {name}: {type(e).__name__}: {e}")
                print(f"edgead bench: skipped {name} for {art}: {type(e).__name__}: {e}", file=sys.stderr)
    env = environment()
    if records:
        write_json(records, json_path, env)
        write_markdown(records, md_path, env, command=command)
        if failures:
            with open(md_path, "a") as f:
                f.write("\nNot measured:\n\n" + "\n".join(f"- {m}" for m in failures) + "\n")
        with open(md_path) as f:
            print(f.read())
        print(f"written: {json_path}, {md_path}")
    return 0 if records else 1
