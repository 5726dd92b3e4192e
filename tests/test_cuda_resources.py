"""Compile-time resource report of every CUDA kernel (issue 9 item 5): registers, static shared memory
and spills per kernel for sm_75 (Turing), sm_87 (Jetson Orin) and sm_90 (Hopper), from
``nvcc --resource-usage`` (ptxas). Runs wherever nvcc is installed (CI has it, no GPU needed); skipped
only when nvcc is absent.

Fails on:
- any register spill (spill stores/loads or a local stack frame) in the hot kernels (csrc/knn, csrc/coreset);
- static + declared dynamic shared memory over the architecture's per-block limit, or over the 48 KiB
  default for a kernel whose host code does not opt in with cudaFuncSetAttribute;
- more than 255 registers, or a kernel with dynamic shared memory missing from DYNAMIC_SMEM below.

The table is printed (``pytest -rA`` shows it) and written to ``<pytest basetemp>/cuda_resources.md``
(and to ``$EDGEAD_TEST_ARTIFACTS/cuda_resources.md`` when that variable names a directory).

Cost: device code only (``nvcc -cubin``: no host compilation), every .cu x 3 architectures (18
compiles), at most 2 nvcc processes at a time, once per pytest session (session fixture); the ptxas
output is also cached in $TMPDIR/edgead-cuda-resources/<hash of csrc CUDA sources, nvcc version,
flags>, so a rerun without CUDA source changes costs ~0 s. Measured cold on the shared 2-core
development machine (8 agents, heavily loaded): 211 s wall, ~66 s CPU; warm cache: ~1 s.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
ARCHS = ("75", "87", "90")
HOT_DIRS = ("knn", "coreset")  # spills fail here
# Largest shared memory per block with the opt-in attribute (CUDA programming guide, table 21).
SMEM_OPTIN_LIMIT = {"75": 64 * 1024, "87": 163 * 1024, "90": 227 * 1024}
SMEM_DEFAULT_LIMIT = 48 * 1024
# Largest dynamic shared memory the host code requests per kernel (bytes), by a pattern matched
# against the demangled kernel name, and whether the host opts in above 48 KiB (cudaFuncSetAttribute).
# Keep in step with the launch code when a kernel gains or changes `extern __shared__`.
DYNAMIC_SMEM = {
    # csrc/knn/knn_cuda.cu: (sizeof(float) + sizeof(int)) * BQ * k, BQ = 64, k <= 64; opt-in set.
    r"knn_tile_kernel<": (8 * 64 * 64, True),
    r"knn_tile_wmma_kernel\(": (8 * 64 * 64, True),
    # knn finish: (8 + 4) * k + 4 * splits + 16, k <= 64, splits <= 256.
    r"knn_finish_kernel<": (12 * 64 + 4 * 256 + 16, False),
    # csrc/msgms/msgms_cuda.cu combine_box: 4 * ((16 + 2R)(32 + 2R) + (16 + 2R) * 32), R <= 31 (63 box).
    r"combine_box_kernel\(": (4 * ((16 + 62) * (32 + 62) + (16 + 62) * 32), False),
}
MAX_JOBS = 2


def _kernel_files():
    return sorted(CSRC.rglob("*.cu"))


def _cache_key(arch: str) -> str:
    """Hash of every CUDA source/header, nvcc's version and the flags: a changed input recompiles."""
    h = hashlib.sha256()
    h.update(subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.encode())
    h.update(" ".join(FLAGS + [arch]).encode())
    for p in sorted(CSRC.rglob("*")):
        if p.suffix in (".cu", ".cuh", ".h"):
            h.update(str(p.relative_to(CSRC)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:20]


FLAGS = ["-cubin", "-std=c++17", "-O3", "--expt-relaxed-constexpr"]


def _compile(cu: Path, arch: str, outdir: Path, cache: Path | None) -> str:
    cached = cache / f"{cu.parent.name}_{cu.stem}_sm{arch}.txt" if cache else None
    if cached and cached.is_file():
        return cached.read_text()
    out = outdir / f"{cu.parent.name}_{cu.stem}_sm{arch}.cubin"
    cmd = ["nvcc", *FLAGS, f"-I{CSRC}", f"-gencode=arch=compute_{arch},code=sm_{arch}", "--resource-usage", str(cu),
           "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"nvcc failed for {cu.relative_to(ROOT)} sm_{arch}:\n{proc.stderr[-4000:]}")
    text = proc.stdout + proc.stderr
    if cached:
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(cached)
    return text


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for 'sm_(\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_resource_usage(text: str):
    """ptxas --resource-usage output -> list of dicts (mangled name, arch, regs, smem, stack, spills)."""
    rows, cur = [], None
    for line in text.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {"mangled": m.group(1), "arch": m.group(2), "regs": 0, "smem": 0, "stack": 0,
                   "spill_st": 0, "spill_ld": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _PROPS.search(line)
        if m:
            cur["stack"], cur["spill_st"], cur["spill_ld"] = map(int, m.groups())
        m = _USED.search(line)
        if m:
            cur["regs"] = int(m.group(1))
            s = _SMEM.search(line)
            cur["smem"] = int(s.group(1)) if s else 0
    return rows


def _demangle(names):
    tool = shutil.which("cu++filt") or shutil.which("c++filt")
    if not tool or not names:
        return {n: n for n in names}
    proc = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True)
    out = proc.stdout.splitlines()
    if proc.returncode != 0 or len(out) != len(names):
        return {n: n for n in names}
    return {n: re.sub(r"CUB_\d+_SM_\d+::", "", d.replace("(anonymous namespace)::", "")) for n, d in zip(names, out)}


def _short(name: str) -> str:
    return re.sub(r"\(.*", "", name) + ("(...)" if "(" in name else "")


@pytest.fixture(scope="session")
def resource_table(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not found: the CUDA resource report needs the CUDA toolkit")
    outdir = tmp_path_factory.mktemp("cuda_resources")
    caches = {}
    for arch in ARCHS:
        try:  # reused across sessions on the same machine while no CUDA source changes
            caches[arch] = Path(tempfile.gettempdir()) / "edgead-cuda-resources" / _cache_key(arch)
            caches[arch].mkdir(parents=True, exist_ok=True)
        except OSError:
            caches[arch] = None
    jobs = [(cu, arch) for cu in _kernel_files() for arch in ARCHS]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=MAX_JOBS) as pool:
        texts = list(pool.map(lambda j: _compile(j[0], j[1], outdir, caches[j[1]]), jobs))
    seconds = time.perf_counter() - t0
    rows = []
    for (cu, arch), text in zip(jobs, texts):
        for r in parse_resource_usage(text):
            r["file"] = str(cu.relative_to(ROOT))
            rows.append(r)
    names = _demangle(sorted({r["mangled"] for r in rows}))
    for r in rows:
        r["name"] = names[r["mangled"]]
        r["dyn"], r["optin"] = 0, False
        for pat, (dyn, optin) in DYNAMIC_SMEM.items():
            if re.search(pat, r["name"]):
                r["dyn"], r["optin"] = dyn, optin
    rows.sort(key=lambda r: (r["file"], r["name"], r["arch"]))
    lines = [f"CUDA kernel resources (nvcc --resource-usage, {len(jobs)} compiles, {seconds:.0f} s, "
             f"{MAX_JOBS} jobs)", "",
             "| file | kernel | sm | regs | static smem | max dyn smem | stack | spill st/ld |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {_short(r['name'])} | {r['arch']} | {r['regs']} | {r['smem']} | {r['dyn']} | "
                     f"{r['stack']} | {r['spill_st']}/{r['spill_ld']} |")
    report = "\n".join(lines) + "\n"
    (outdir / "cuda_resources.md").write_text(report)
    art = os.environ.get("EDGEAD_TEST_ARTIFACTS")
    if art and Path(art).is_dir():
        (Path(art) / "cuda_resources.md").write_text(report)
    print("\n" + report)
    return rows, report


def test_parser_reads_ptxas_output():
    # The parser itself is tested on a fixed ptxas excerpt so that a format change cannot turn the
    # resource checks into no-ops.
    text = (
        "ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_87'\n"
        "ptxas info    : Function properties for _Z3fooPf\n"
        "    16 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n"
        "ptxas info    : Used 48 registers, used 1 barriers, 24960 bytes smem, 440 bytes cmem[0]\n"
        "ptxas info    : Compiling entry function '_Z3barv' for 'sm_87'\n"
        "ptxas info    : Function properties for _Z3barv\n"
        "    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
        "ptxas info    : Used 8 registers, used 0 barriers, 384 bytes cmem[0]\n")
    rows = parse_resource_usage(text)
    assert [(r["mangled"], r["arch"], r["regs"], r["smem"], r["stack"], r["spill_st"], r["spill_ld"]) for r in rows] == [
        ("_Z3fooPf", "87", 48, 24960, 16, 12, 16), ("_Z3barv", "87", 8, 0, 0, 0, 0)]


def test_every_kernel_reported(resource_table):
    rows, _ = resource_table
    for cu in _kernel_files():
        src = cu.read_text()
        if "__global__" not in src:
            continue
        for arch in ARCHS:
            assert any(r["file"] == str(cu.relative_to(ROOT)) and r["arch"] == arch for r in rows), \
                f"no kernel of {cu.relative_to(ROOT)} reported for sm_{arch}"
        if "extern __shared__" in src:
            mine = [r for r in rows if r["file"] == str(cu.relative_to(ROOT))]
            assert any(r["dyn"] > 0 for r in mine), \
                f"{cu.relative_to(ROOT)} declares dynamic shared memory: add its kernel to DYNAMIC_SMEM"


@pytest.mark.parametrize("arch", ARCHS)
def test_no_spills_in_hot_kernels(resource_table, arch):
    rows, _ = resource_table
    bad = [f"{r['file']} {_short(r['name'])}: {r['spill_st']} B spill stores, {r['spill_ld']} B spill loads, "
           f"{r['stack']} B stack" for r in rows if r["arch"] == arch
           and any(f"csrc/{d}/" in r["file"] for d in HOT_DIRS) and (r["spill_st"] or r["spill_ld"] or r["stack"])]
    assert not bad, f"register spills on sm_{arch}:\n" + "\n".join(bad)


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_memory_and_registers_within_limits(resource_table, arch):
    rows, _ = resource_table
    bad = []
    for r in rows:
        if r["arch"] != arch:
            continue
        total = r["smem"] + r["dyn"]
        limit = SMEM_OPTIN_LIMIT[arch] if r["optin"] else SMEM_DEFAULT_LIMIT
        if r["smem"] > SMEM_DEFAULT_LIMIT or total > limit:
            bad.append(f"{r['file']} {_short(r['name'])}: static {r['smem']} + dynamic {r['dyn']} = {total} B "
                       f"> {limit} B")
        if r["regs"] > 255:
            bad.append(f"{r['file']} {_short(r['name'])}: {r['regs']} registers > 255")
    assert not bad, f"sm_{arch}:\n" + "\n".join(bad)
