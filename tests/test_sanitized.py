"""The CPU kernels under AddressSanitizer + UndefinedBehaviorSanitizer.

Builds edgead._C once with EDGEAD_SANITIZE=ON, EDGEAD_CUDA=OFF into build/sanitize (incremental: later
runs only relink what changed), puts it next to a copy of the edgead package that is being tested, and
runs the op tests and the op fuzz tests against it in a subprocess with the ASan runtime preloaded.
Passes only with 0 sanitizer reports (ASan and UBSan both halt on the first error; leak detection is
off: CPython's own allocations are reported as leaks).

Cost in CI (2 cores): one -O1 build of the extension (~1-2 min) and the op + fuzz tests at ~2x.
"""
import glob
import os
import shutil
import subprocess
import sys

import pytest

import edgead

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(REPO, "build", "sanitize")
OP_TESTS = ["test_knn.py", "test_coreset.py", "test_msgms.py", "test_softmask.py", "test_pro.py", "test_fuzz_ops.py"]
REPORT_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"optional build tool '{name}' is not installed")
    return path


def _asan_runtime():
    """LD_PRELOAD value: the ASan runtime, and libstdc++ right after it (python is not linked against
    libstdc++, so without it ASan's __cxa_throw interceptor finds no real __cxa_throw and aborts on the
    first C++ exception: "CHECK failed: asan_interceptors.cpp ... real___cxa_throw")."""
    _tool("gcc")

    def lib(name):
        p = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        return os.path.realpath(p) if os.path.isabs(p) and os.path.exists(p) else None

    asan, stdcxx = lib("libasan.so"), lib("libstdc++.so")
    if asan is None:
        pytest.skip("the compiler has no AddressSanitizer runtime (libasan.so)")
    return " ".join(p for p in (asan, stdcxx) if p)


def _build():
    cmake = _tool("cmake")
    try:
        import pybind11
    except ImportError:
        pytest.skip("optional build dependency pybind11 is not installed")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    if not os.path.isfile(os.path.join(BUILD, "CMakeCache.txt")):
        subprocess.run([cmake, "-S", REPO, "-B", BUILD, *gen, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", "-DEDGEAD_CUDA=OFF", "-DEDGEAD_SANITIZE=ON",
                        f"-DPython_EXECUTABLE={sys.executable}", "-DSKBUILD_PROJECT_VERSION=0.1.0-sanitize"],
                       check=True, capture_output=True, text=True)
    r = subprocess.run([cmake, "--build", BUILD, "-j", str(os.cpu_count() or 2)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    so = glob.glob(os.path.join(BUILD, "_C*.so"))
    assert len(so) == 1, so
    return so[0]


@pytest.fixture(scope="module")
def sanitized_package(tmp_path_factory):
    """A copy of the edgead package under test whose _C is the sanitized build."""
    lib = _asan_runtime()
    so = _build()
    root = tmp_path_factory.mktemp("sanitized")
    src = os.path.dirname(os.path.abspath(edgead.__file__))
    shutil.copytree(src, root / "edgead", ignore=shutil.ignore_patterns("_C*.so", "__pycache__"))
    shutil.copy2(so, root / "edgead" / os.path.basename(so))
    return str(root), lib


def test_op_and_fuzz_tests_clean_under_asan_ubsan(sanitized_package, tmp_path):
    root, lib = sanitized_package
    env = dict(os.environ)
    logs = str(tmp_path / "san")  # reports go to files: pytest's fd capture would swallow a halting report
    env.update(
        PYTHONPATH=os.pathsep.join([root, env.get("PYTHONPATH", "")]),
        LD_PRELOAD=lib,
        ASAN_OPTIONS=f"detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:log_path={logs}",
        UBSAN_OPTIONS=f"halt_on_error=1:print_stacktrace=1:exitcode=87:log_path={logs}",
        EDGEAD_FUZZ_EXAMPLES=env.get("EDGEAD_SANITIZE_FUZZ_EXAMPLES", "30"),
        OMP_NUM_THREADS="2",
    )
    here = os.path.dirname(os.path.abspath(__file__))
    check = "import edgead, edgead._C as c; print(c.__file__)"
    r = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().startswith(root), r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-v", "-x", "-p", "no:cacheprovider", "-W", "ignore",
                        *[os.path.join(here, t) for t in OP_TESTS]],
                       env=env, capture_output=True, text=True, timeout=1800, cwd=REPO)
    out = r.stdout + r.stderr
    for f in sorted(glob.glob(logs + "*")):
        with open(f, errors="replace") as fh:
            out += f"\n--- {os.path.basename(f)}\n" + fh.read()
    reports = [ln for ln in out.splitlines() if any(m in ln for m in REPORT_MARKERS)]
    assert not reports, "\n".join(reports[:20]) + "\n" + out[-12000:]
    assert r.returncode == 0, out[-6000:]
