#!/usr/bin/env python3
"""Small workload for compute-sanitizer (tools/gpu_acceptance.sh): every edgead CUDA op once or twice on
tiny inputs, including the error paths (NaN/inf -> ValueError) and the resumable coreset, so that
memcheck / racecheck / synccheck / initcheck runs stay short. Uses CuPy when importable (lighter
under the sanitizer than torch's CUDA initialisation), else torch. Exit 0 when every call behaved;
sanitizer findings are reported by compute-sanitizer itself (--error-exitcode).

memcheck runs with --leak-check full (and --show-backtrace device: tools/gpu_acceptance.sh says why),
which reports every device/pinned allocation still held when the CUDA context is torn down at exit. CuPy's (and torch's) caching allocators keep freed blocks cached until
the process ends, so the first GPU run (H200, 2026-11-26) counted 69 "leaks", all CuPy pool blocks
(cudaMalloc 61, cudaHostAlloc 8), none from edgead. The workload therefore runs inside main() so that
every array is dropped when it returns; then the device is synchronised, gc.collect() breaks cycles
(exception tracebacks hold frames) and the caching pools are emptied before exit (release_cached()).
edgead's own scratch memory (csrc/common/cuda_scratch.cuh) needs nothing here: every buffer is
cudaFreeAsync'd at the end of its call, and its private cudaMemPool only keeps freed memory mapped
(release threshold 64 MiB); memcheck's leak check counts unfreed allocations, not a pool's reserve,
and run 1 reported none from edgead.
"""
import gc
import itertools
import os
import sys

import numpy as np

import edgead
from edgead import ops

if not edgead.cuda_available():
    print("gpu_sanitize: edgead has no usable CUDA device:", edgead.cuda_status())
    sys.exit(77)

# GPU_SANITIZE_BACKEND=cupy|torch (default: CuPy when importable; torch also when CuPy is missing).
# memcheck's leak check runs with --show-backtrace device (tools/gpu_acceptance.sh explains why): then
# both backends report 0 leaks (H200, 2026-11-26; torch with PYTORCH_NO_CUDA_MEMORY_CACHING=1).
BACKEND = os.environ.get("GPU_SANITIZE_BACKEND", "cupy")
if BACKEND not in ("cupy", "torch"):
    sys.exit(f"gpu_sanitize: GPU_SANITIZE_BACKEND expected cupy or torch, got {BACKEND!r}")
try:
    if BACKEND != "cupy":
        raise ImportError("torch requested")
    import cupy as xp

    def dev(a):
        return xp.asarray(a)

    def host(a):
        return xp.asnumpy(a)

    # No CuPy pools at all: every array's memory goes back with cudaFree when the array dies, so whatever
    # memcheck --leak-check still lists at exit is memory somebody still references (run 2 showed CuPy's
    # pool keeping blocks despite free_all_blocks).
    xp.cuda.set_allocator(None)
    xp.cuda.set_pinned_memory_allocator(None)

    def release_cached():
        """Synchronise, then hand CuPy's cached device and pinned blocks back to the driver."""
        xp.cuda.runtime.deviceSynchronize()
        gc.collect()
        # CuPy keeps the pinned staging buffer of each async host->device copy alive in a watch list until
        # the next pinned allocation checks its event; a 0-byte allocation runs that check (allocates nothing)
        try:
            xp.cuda.alloc_pinned_memory(0)
        except Exception as e:  # best effort: a leak report is noise, not a failure of the workload
            print(f"gpu_sanitize: could not flush CuPy's pinned-memory watch list: {e}")
        xp.get_default_memory_pool().free_all_blocks()
        xp.get_default_pinned_memory_pool().free_all_blocks()
        xp.cuda.runtime.deviceSynchronize()
except ImportError:
    import torch

    def dev(a):
        return torch.from_numpy(np.ascontiguousarray(a)).cuda()

    def host(a):
        return a.cpu().numpy()

    def release_cached():
        """Synchronise, then hand torch's cached blocks back to the driver."""
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()


def main():
    """Every op once or twice; returns the list of misbehaviours (empty when all is well)."""
    rng = np.random.default_rng(0)
    failures = []

    def expect_error(fn, what):
        try:
            fn()
        except ValueError:
            return
        failures.append(f"{what}: no ValueError")

    # knn: both CUDA paths (fused tile kernels; cuBLAS + fold in several chunks), both dtypes (fp16 =
    # tensor-core kernel), k = 1 and 64 (second list slot), bank > one split.
    os.environ["EDGEAD_KNN_GEMM_BYTES"] = "65536"
    # GPU_SANITIZE_GEMM_DTYPES (default both): gpu_acceptance.sh's initcheck run keeps float32 only, since
    # initcheck does not see the stores of cuBLAS's fp16 Hopper kernels (tools/probe_initcheck_cublas.py) and
    # would flag every read of the product as uninitialised.
    gemm_dtypes = os.environ.get("GPU_SANITIZE_GEMM_DTYPES", "float32,float16").split(",")
    for path, dtype in itertools.product(("fused", "gemm"), (np.float32, np.float16)):
        if path == "gemm" and np.dtype(dtype).name not in gemm_dtypes:
            continue
        os.environ["EDGEAD_KNN_CUDA_PATH"] = path
        if path == "gemm" and not ops.cublas_status().startswith(("libcublas", "/")):
            failures.append(f"knn gemm path: cuBLAS not loaded: {ops.cublas_status()}")
            continue
        q = rng.standard_normal((70, 40)).astype(dtype)
        b = rng.standard_normal((3000, 40)).astype(dtype)
        for k in (1, 64):
            d, i = ops.knn(dev(q), dev(b), k)
            dc, ic = ops.knn(q, b, k)
            if not (host(i)[:, 0] == ic[:, 0]).mean() > 0.95:
                failures.append(f"knn {dtype.__name__} k={k}: nearest neighbours differ from the CPU")
        norms = ops.knn_bank_sq_norms(dev(b))
        ops.knn(dev(q), dev(b), 3, bank_sq_norms=norms)
        bad = b.copy()
        bad[2999, 3] = np.nan
        expect_error(lambda: ops.knn(dev(q), dev(bad), 1), "knn NaN bank")

    os.environ.pop("EDGEAD_KNN_CUDA_PATH")
    # coreset: one call and the resumable selector; NaN input (fp32 D=32: 16-byte-vector step kernel).
    for dtype in (np.float32, np.float16):
        x = rng.standard_normal((2000, 32)).astype(dtype)
        idx = host(ops.coreset(dev(x), 40, start=3))
        sel = ops.CoresetSelector(dev(x), 40, start=3)
        while not sel.done:
            sel.step(9)
        if not (host(sel.indices) == idx).all():
            failures.append(f"coreset {dtype.__name__}: selector differs from coreset")
        x[5, 5] = np.inf
        expect_error(lambda: ops.coreset(dev(x), 4), "coreset inf")

    # msgms: batch 2, colour, fp32 and fp16.
    for dtype in (np.float32, np.float16):
        img = rng.random((2, 3, 64, 48)).astype(dtype)
        rec = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(dtype)
        ops.msgms_map(dev(img), dev(rec))

    # softmask: vectorised and scalar paths, in place; NaN prediction.
    p = rng.random((2, 16, 16)).astype(np.float32)
    for shape in ((2, 8, 32, 32), (2, 3, 13, 30)):
        f = dev(rng.standard_normal(shape).astype(np.float32))
        ops.softmask_apply(dev(p), f, out=f)
    pb = p.copy()
    pb[1, 2, 3] = np.nan
    expect_error(lambda: ops.softmask_apply(dev(pb), dev(rng.standard_normal((2, 4, 16, 16)).astype(np.float32))),
                 "softmask NaN")

    # pro: AUPRO on small maps with two regions.
    maps = rng.random((3, 32, 32)).astype(np.float32)
    masks = np.zeros((3, 32, 32), np.uint8)
    masks[0, 4:10, 4:12] = 1
    masks[2, 20:30, 2:6] = 1
    a_gpu = ops.aupro(dev(maps), dev(masks))
    a_cpu = ops.aupro(maps, masks)
    if abs(a_gpu - a_cpu) > 1e-6:
        failures.append(f"aupro cuda {a_gpu} != cpu {a_cpu}")
    return failures


if __name__ == "__main__":
    failures = main()  # every CUDA array main() made is unreachable from here on
    ops._C().cublas_release()  # the knn GEMM path keeps its cuBLAS handle (and workspace) for the process
    release_cached()
    if failures:
        print("gpu_sanitize: FAIL\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("gpu_sanitize: all ops ran")
