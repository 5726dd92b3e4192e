#!/usr/bin/env bash
# Incremental developer build of edgead._C into build/dev, copied next to the sources (python/edgead/).
# Serialised with flock so several shells can call it. Use with PYTHONPATH=python (or a .pth file).
#   EDGEAD_CUDA=OFF|ON|AUTO   EDGEAD_CUDA_ARCHS="90"  (one arch keeps developer builds fast)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
exec 9>build/.devbuild.lock
flock 9
ARCHS="${EDGEAD_CUDA_ARCHS:-90}"
if [ ! -f build/dev/build.ninja ]; then
  cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -Dpybind11_DIR="$(python3 -m pybind11 --cmakedir)" \
    -DEDGEAD_CUDA="${EDGEAD_CUDA:-AUTO}" -DEDGEAD_CUDA_ARCHS="$ARCHS" \
    -DSKBUILD_PROJECT_VERSION=0.1.0-dev >/dev/null
fi
cmake --build build/dev -j2
# Replace atomically: overwriting a loaded .so in place crashes running processes.
for so in build/dev/_C*.so; do
  cp -f "$so" "python/edgead/.$(basename "$so").tmp"
  mv -f "python/edgead/.$(basename "$so").tmp" "python/edgead/$(basename "$so")"
done
