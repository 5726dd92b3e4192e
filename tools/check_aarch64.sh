#!/usr/bin/env bash
# Syntax-checks every csrc/**/*.cpp for aarch64 (NVIDIA Jetson) with a cross compiler, so x86-only
# code (immintrin.h, target("avx...") attributes, __builtin_cpu_supports, _mm*_ intrinsics) that is
# not behind `#if defined(__x86_64__) || defined(__i386__)` is caught on an x86 dev machine.
# Compiles with OpenMP on (EDGEAD_WITH_OPENMP), hidden visibility (as pybind11) and the CMake warning flags; CUDA code is not checked.
# Skips (exit 0) with a message when the cross compiler is absent:
#   apt-get install g++-aarch64-linux-gnu
#   CXX_AARCH64=<compiler> overrides the compiler; STRICT=1 also turns warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."

CXX_AARCH64="${CXX_AARCH64:-aarch64-linux-gnu-g++}"
if ! command -v "$CXX_AARCH64" >/dev/null 2>&1; then
  echo "check_aarch64: SKIP: cross compiler '$CXX_AARCH64' not found (apt-get install g++-aarch64-linux-gnu)"
  exit 0
fi

PY_INC="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
PYBIND11_INC="$(python3 -c 'import pybind11; print(pybind11.get_include())')"
FLAGS=(-std=c++17 -O2 -fopenmp -fsyntax-only -DEDGEAD_WITH_OPENMP=1 -DEDGEAD_VERSION='"check"'
       -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter -Icsrc -I"$PY_INC" -I"$PYBIND11_INC")
if [ "${STRICT:-0}" = "1" ]; then FLAGS+=(-Werror); fi

fail=0
n=0
while IFS= read -r src; do
  n=$((n + 1))
  if "$CXX_AARCH64" "${FLAGS[@]}" "$src"; then
    echo "ok   $src"
  else
    echo "FAIL $src"
    fail=$((fail + 1))
  fi
done < <(find csrc -name '*.cpp' | sort)

echo "check_aarch64: $CXX_AARCH64 ($("$CXX_AARCH64" -dumpmachine)): $((n - fail))/$n sources ok"
[ "$fail" -eq 0 ]
