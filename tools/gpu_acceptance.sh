#!/usr/bin/env bash
# One-command GPU acceptance run for a session that has an NVIDIA GPU (issue 9 item 6).
#
#   tools/gpu_acceptance.sh          quick stage, fits one 10-minute device call (GPU_ACCEPT_STAGES picks a subset):
#       detect the GPU's compute capability -> build edgead._C for it -> pytest -m cuda ->
#       compute-sanitizer memcheck / racecheck / synccheck / initcheck on tools/gpu_sanitize.py ->
#       GPU benchmarks with their baselines (bench -m cuda) -> bench/results/gpu-<device>-<date>.{json,md}
#       -> PASS/FAIL summary (exit 0 only when every stage that ran passed).
#   tools/gpu_acceptance.sh miic     second stage (its own call): edgead make-data writes a MIIC-sized
#       split (23,888 train/good images), then edgead train fits PatchCore on all of it (val fraction 0)
#       on the GPU, recording fit time and peak host / GPU memory -> bench/results/gpu-<device>-<date>-miic.{json,md}.
#       Same budget; make-data resumes when re-run on the same machine (MIIC_DATA keeps the folder).
#
# Needs: nvidia-smi, nvcc, cmake, ninja, pybind11 (scikit-build-core for pip builds), torch with CUDA;
# CuPy and compute-sanitizer optional (stages are skipped and reported as SKIP without them).
# No internet is needed. Every stage is time-boxed with `timeout`; the whole quick stage keeps to
# GPU_ACCEPT_BUDGET seconds (default 560). Outputs (logs, junit, raw benchmark json) go to
# GPU_ACCEPT_OUT (default build/gpu-acceptance); the results for the repo go to bench/results/.
# Without a GPU it exits 2 with a message and changes nothing.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
MODE="${1:-quick}"
case "$MODE" in
  quick|miic) ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  *) echo "usage: tools/gpu_acceptance.sh [quick|miic]" >&2; exit 64 ;;
esac

PY="${PYTHON:-python3}"
BUDGET="${GPU_ACCEPT_BUDGET:-560}"
OUT="${GPU_ACCEPT_OUT:-$ROOT/build/gpu-acceptance}"
T0=$(date +%s)
export PYTHONPATH="$ROOT/python${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

# ---------------------------------------------------------------------------------------------- GPU
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_acceptance: no NVIDIA GPU here (nvidia-smi not found); this script only runs on a GPU machine." >&2
  exit 2
fi
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' \r')
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1 | sed 's/^ *//; s/ *$//')
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' ')
if ! [[ "$CAP" =~ ^[0-9]+\.[0-9]+$ ]]; then
  echo "gpu_acceptance: nvidia-smi lists no usable GPU (compute_cap='$CAP'); nothing to do." >&2
  exit 2
fi
ARCH="${CAP/./}"
DEVICE_SLUG=$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed 's/nvidia//; s/[^a-z0-9]\+/-/g; s/^-//; s/-$//')
DATE=$(date -u +%Y-%m-%d)
mkdir -p "$OUT" bench/results
STAGES="$OUT/stages.tsv"
: >"$STAGES"
echo "gpu_acceptance: $GPU_NAME (sm_$ARCH, driver $DRIVER), mode $MODE, budget ${BUDGET}s, logs in $OUT"

elapsed() { echo $(( $(date +%s) - T0 )); }
# stage NAME LIMIT_S CMD...: runs CMD under `timeout`, never longer than what is left of the budget
# (keeping 20 s for the report); records NAME, PASS/FAIL/TIMEOUT/SKIP, seconds, log path.
stage() {
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - $(elapsed) - 20 ))
  local log="$OUT/$name.log"
  if [ "$left" -lt 15 ]; then
    printf '%s\tSKIP\t0\tout of time budget\n' "$name" >>"$STAGES"
    echo "== $name: SKIP (out of time budget)"
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s): $*"
  local s rc
  s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - s )) status=PASS
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=TIMEOUT
  elif [ $rc -eq 77 ]; then status=SKIP
  elif [ $rc -ne 0 ]; then status=FAIL; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$dt" "$log" >>"$STAGES"
  echo "   $status in ${dt}s (rc $rc); last lines:"
  tail -n 4 "$log" | sed 's/^/   | /'
  return 0
}
# GPU_ACCEPT_STAGES: comma-separated subset of pytest_cuda,sanitize,bench_kernels,bench_models (default
# all; the build always runs) -- for a second call inside one session's device time.
WANT="${GPU_ACCEPT_STAGES:-pytest_cuda,sanitize,bench_kernels,bench_models}"
want() { [[ ",$WANT," == *",$1,"* ]]; }
skip() { printf '%s\tSKIP\t0\t%s\n' "$1" "$2" >>"$STAGES"; echo "== $1: SKIP ($2)"; }
failed() { awk -F'\t' -v n="$1" '$1 == n && $2 != "PASS" {f = 1} END {exit !f}' "$STAGES"; }

# ---------------------------------------------------------------------------------------------- build
# shellcheck disable=SC2329  # run through `bash -c build` (export -f)
build() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 4)
  mkdir -p build
  if [ -f build/dev/CMakeCache.txt ] && ! grep -q "^EDGEAD_CUDA_ARCHS:STRING=$ARCH\$" build/dev/CMakeCache.txt; then
    echo "build/dev was configured for another architecture or without CUDA: reconfiguring for sm_$ARCH"
  fi
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
    -DEDGEAD_CUDA=ON -DEDGEAD_CUDA_ARCHS="$ARCH" -DSKBUILD_PROJECT_VERSION=0.1.0-dev || return 1
  cmake --build build/dev -j"$jobs" || return 1
  EDGEAD_CUDA=ON EDGEAD_CUDA_ARCHS="$ARCH" tools/devbuild.sh || return 1  # copies _C*.so next to the sources
  "$PY" - <<'EOF'
import edgead, sys
print("edgead", edgead.__file__, edgead.build_info())
if not edgead.cuda_available():
    sys.exit("edgead built, but CUDA is not usable: " + edgead.cuda_status())
EOF
}
export -f build
export PY ARCH

versions_json() {
  "$PY" - "$GPU_NAME" "$CAP" "$DRIVER" <<'EOF'
import json, os, platform, subprocess, sys
v = {"device": sys.argv[1], "compute_capability": sys.argv[2], "driver": sys.argv[3],
     "python": platform.python_version()}
for mod in ("torch", "cupy", "numpy", "onnxruntime", "edgead"):
    try:
        m = __import__(mod)
        v[mod] = getattr(m, "__version__", "?")
        if mod == "torch":
            v["torch_cuda"] = m.version.cuda
    except Exception as e:  # noqa: BLE001
        v[mod] = f"not importable: {type(e).__name__}"
for tool, args in (("nvcc", ["--version"]), ("compute-sanitizer", ["--version"])):
    try:
        out = subprocess.run([tool] + args, capture_output=True, text=True, timeout=20).stdout.strip().splitlines()
        v[tool] = out[-1] if out else "?"
    except Exception:  # noqa: BLE001
        v[tool] = "absent"
try:
    from edgead import ops
    v["cublas"] = ops.cublas_status()  # what the knn GEMM path loads (after torch: found by soname)
except Exception as e:  # noqa: BLE001
    v["cublas"] = f"? {type(e).__name__}"
try:
    # The device tool's copy of the tree carries git metadata from the session's start: pass
    # EDGEAD_COMMIT=$(git rev-parse --short HEAD) from the machine that sent it.
    v["commit"] = os.environ.get("EDGEAD_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except Exception:  # noqa: BLE001
    v["commit"] = "?"
print(json.dumps(v))
EOF
}

# ---------------------------------------------------------------------------------------------- quick
if [ "$MODE" = quick ]; then
  stage build 240 bash -c build
  if failed build; then
    skip pytest_cuda "build failed"
  else
    # Correctness stages (cuda tests, the four sanitizers) run side by side: none of them is timed,
    # and together they fit in the time one of them takes. Benchmarks then run alone on the GPU.
    want pytest_cuda && stage pytest_cuda 240 "$PY" -m pytest -m cuda -q -p no:cacheprovider tests --junitxml="$OUT/pytest-cuda.xml" &
    if ! want sanitize; then
      :
    elif command -v compute-sanitizer >/dev/null 2>&1; then
      for tool in memcheck racecheck synccheck initcheck; do
        extra=()
        # memcheck: --show-backtrace device. A host backtrace includes Python frames, and compute-sanitizer
        # keeps every frame it recorded at an allocation alive, with the arrays in its locals, so every array
        # the workload made was still allocated at exit and listed as a leak (H200 runs 1-3: 69-98 records
        # with CuPy; H100, 2026-11-26: 98 with CuPy and 98 with torch). Device backtraces only (H200, same
        # day): 0 records with either, reference counts unchanged (tools/probe_memcheck_leak.py). To see where
        # a real leak was allocated, rerun it by hand with --show-backtrace yes and ignore live frames' arrays.
        [ "$tool" = memcheck ] && extra=(--leak-check full --show-backtrace device)
        # initcheck: knn's GEMM path in fp32 only (it cannot see cuBLAS's fp16 stores on Hopper: run 2/3 notes)
        [ "$tool" = initcheck ] && export GPU_SANITIZE_GEMM_DTYPES=float32 || export GPU_SANITIZE_GEMM_DTYPES=float32,float16
        stage "sanitize_$tool" 150 compute-sanitizer --tool "$tool" "${extra[@]}" --error-exitcode 99 \
          --target-processes application-only "$PY" tools/gpu_sanitize.py &
      done
    else
      skip sanitize "compute-sanitizer not found"
    fi
    wait
    # Two benchmark stages, each with its own json (a stage killed by its limit writes none): the kernels
    # with targets first, then the end-to-end rows and the 10^8-pixel AUPRO.
    BENCH_ARGS=(-m cuda --benchmark-only -q -p no:cacheprovider --benchmark-group-by=group --benchmark-max-time=0.5
                --benchmark-min-rounds=3)
    want bench_kernels && stage bench_kernels 150 "$PY" -m pytest "${BENCH_ARGS[@]}" --benchmark-json="$OUT/bench-kernels.json" \
      bench/test_bench_knn.py bench/test_bench_coreset.py bench/test_bench_msgms.py bench/test_bench_softmask.py
    want bench_models && stage bench_models 200 "$PY" -m pytest "${BENCH_ARGS[@]}" --benchmark-json="$OUT/bench-models.json" \
      bench/test_bench_patchcore.py bench/test_bench_runtime.py bench/test_bench_efficientad.py \
      bench/test_bench_fader.py bench/test_bench_pro.py
  fi
  versions_json >"$OUT/versions.json" 2>/dev/null || echo '{}' >"$OUT/versions.json"
  "$PY" tools/gpu_report.py quick --stages "$STAGES" --versions "$OUT/versions.json" \
    --bench "$OUT/bench-kernels.json" "$OUT/bench-models.json" --out "bench/results/gpu-$DEVICE_SLUG-$DATE" --budget "$BUDGET" \
    --elapsed "$(elapsed)"
  exit $?
fi

# ---------------------------------------------------------------------------------------------- miic
N_IMAGES="${MIIC_IMAGES:-23888}"
DATA="${MIIC_DATA:-$OUT/miic}"
ART="$OUT/miic-patchcore"
if ! "$PY" -c "import edgead, sys; sys.exit(0 if edgead.cuda_available() else 1)" 2>/dev/null; then
  stage build 300 bash -c build
fi
stage make_data 300 "$PY" -m edgead make-data "$DATA" --n-images "$N_IMAGES" --size 256 --workers "$(nproc)" --no-progress
# Backbone weights: EDGEAD_WEIGHTS, else the shared MobileNetV2 file if the checkout has it; without
# either the fit uses a random backbone (no internet): fit time and memory are the same, the
# artifact's scores are meaningless (recorded in the report).
RECIPE=models/patchcore_mobilenet_v2.yaml
WEIGHTS="${EDGEAD_WEIGHTS:-}"
for w in shared/weights/mobilenet_v2_imagenet.safetensors ../shared/weights/mobilenet_v2_imagenet.safetensors; do
  [ -z "$WEIGHTS" ] && [ -f "$w" ] && WEIGHTS=$w
done
WARGS=()
if [ -n "$WEIGHTS" ]; then
  WARGS=(--weights "$WEIGHTS")
else
  RECIPE="$OUT/patchcore_random_backbone.yaml"
  sed 's/^\(  weights:\).*/\1 null\n  allow_random: true/' models/patchcore_mobilenet_v2.yaml >"$RECIPE"
fi
rm -rf "$ART"
CARGS=()
[ -n "${MIIC_CORESET_RATIO:-}" ] && CARGS=(--coreset-ratio "$MIIC_CORESET_RATIO")
stage fit_patchcore 420 "$PY" tools/gpu_report.py measure --out-json "$OUT/miic-fit.json" --artifact "$ART" -- \
  "$PY" -m edgead train "$RECIPE" "$DATA" "$ART" --val-fraction 0 --device cuda --quiet "${WARGS[@]}" "${CARGS[@]}"
versions_json >"$OUT/versions.json" 2>/dev/null || echo '{}' >"$OUT/versions.json"
"$PY" tools/gpu_report.py miic --stages "$STAGES" --versions "$OUT/versions.json" --fit "$OUT/miic-fit.json" \
  --images "$N_IMAGES" --weights "${WEIGHTS:-random backbone (no weights file)}" \
  --out "bench/results/gpu-$DEVICE_SLUG-$DATE-miic"
exit $?
