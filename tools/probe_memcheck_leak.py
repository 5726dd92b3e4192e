#!/usr/bin/env python3
"""Probe for the memcheck --leak-check records of GPU runs 1-3 (bench/results/gpu-h200-2026-11-26-run3.md):
every CuPy array tools/gpu_sanitize.py made was still allocated when the CUDA context went down.

Is that an edgead reference leak on the CUDA-array path, or CuPy / the sanitizer? Three measurements,
each independent of compute-sanitizer's own report:
  - reference counts of the input CuPy arrays before and after each edgead op (a leaked reference
    shows as +1 per call);
  - device memory free (cudaMemGetInfo) before the workload and after it returned, with CuPy's pools
    switched off, on a large bank (bank_rows below) so that a leak is far above the driver's granularity;
  - mode 'control' makes the same inputs with CuPy alone (no edgead call) and checks with
    cudaPointerGetAttributes that a deleted array's memory is unregistered, so that running both modes under `compute-sanitizer --tool memcheck --leak-check full` separates the two causes.

    python tools/probe_memcheck_leak.py control|edgead [bank_rows]
bank_rows (default 1048576 = 256 MiB, far above edgead's 64 MiB scratch-pool reserve, so a leaked bank
shows in the free-memory delta); under compute-sanitizer pass a small one (3000).
Prints one line per measurement and 'probe: leaked_mib=<x>' at the end; exit 0 unless a refcount grew
(then it prints who holds the new references).

Answer (H100 / H200, 2026-11-26, bench/results/gpu-h100-80gb-hbm3-2026-11-26.md): run plainly, no
reference count grows and the 256 MiB bank is returned (free memory differs by edgead's scratch-pool
reserve and loaded modules only). Under memcheck with host backtraces (the default), the new references
are Python *frames* (knn, empty_like_device, the caller): compute-sanitizer keeps the frames of every
recorded host backtrace alive, and with them their locals. With --show-backtrace device the counts stay
put and tools/gpu_sanitize.py reports 0 leaks with CuPy and with torch. The records are the sanitizer's,
not an edgead leak.
"""
import gc
import sys

import numpy as np

import cupy as xp

MODE = sys.argv[1] if len(sys.argv) > 1 else "edgead"
if MODE not in ("control", "edgead"):
    sys.exit("usage: probe_memcheck_leak.py control|edgead [bank_rows]")
ROWS = int(sys.argv[2]) if len(sys.argv) > 2 else 1048576
xp.cuda.set_allocator(None)
xp.cuda.set_pinned_memory_allocator(None)


def free_mib():
    xp.cuda.runtime.deviceSynchronize()
    gc.collect()
    return xp.cuda.runtime.memGetInfo()[0] / 2**20


def main():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((70, 64)).astype(np.float32)
    b = rng.standard_normal((ROWS, 64)).astype(np.float32)
    grew = []
    dq, db = xp.asarray(q), xp.asarray(b)
    if MODE == "control":
        s = float((dq.sum() + db.sum()).get())
        print("control: cupy-only sum", s)
        # Does CuPy hand a dead array's memory back? The pointer's attributes after `del` say (type 0 =
        # unregistered: freed; 2 = still device memory).
        ptr = db.data.ptr
        print("control: bank pointer type while alive:", xp.cuda.runtime.pointerGetAttributes(ptr).type)
        del db
        gc.collect()
        xp.cuda.runtime.deviceSynchronize()
        try:
            print("control: bank pointer type after del:", xp.cuda.runtime.pointerGetAttributes(ptr).type)
        except Exception as e:  # noqa: BLE001 - a freed pointer may also raise
            print("control: bank pointer after del raises", type(e).__name__, e)
        return grew
    from edgead import ops

    def watch(name, fn, *arrays):
        before = [sys.getrefcount(a) for a in arrays]
        out = fn()
        after = [sys.getrefcount(a) for a in arrays]
        print(f"{name}: refcounts before {before} after {after}")
        if after != before:
            grew.append(name)
            for a, n0, n1 in zip(arrays, before, after):
                if n1 != n0:  # who holds the new references (frames: which function)
                    refs = [type(r).__name__ + (f":{r.f_code.co_name}@{r.f_code.co_filename.rsplit('/', 1)[-1]}"
                                                if hasattr(r, "f_code") else "") for r in gc.get_referrers(a)]
                    print(f"    referrers of a {a.shape} array: {refs}")
        return out

    import os
    for path in ("fused", "gemm"):
        os.environ["EDGEAD_KNN_CUDA_PATH"] = path
        d, i = watch(f"knn {path}", lambda: ops.knn(dq, db, 8), dq, db)
        del d, i
    norms = watch("knn_bank_sq_norms", lambda: ops.knn_bank_sq_norms(db), db)
    watch("knn with norms", lambda: ops.knn(dq, db, 3, bank_sq_norms=norms), dq, db, norms)
    bad = xp.asarray(q)
    bad[0, 0] = xp.nan

    def raises():
        try:
            ops.knn(bad, db, 1)
        except ValueError:
            return None
        return "no error"

    watch("knn NaN (error path)", raises, bad, db)
    x = xp.asarray(b[:min(ROWS, 20000), :32].copy())
    watch("coreset", lambda: ops.coreset(x, 40, start=3), x)
    img = xp.asarray(rng.random((2, 3, 64, 48)).astype(np.float32))
    watch("msgms_map", lambda: ops.msgms_map(img, img), img)
    maps = xp.asarray(rng.random((3, 32, 32)).astype(np.float32))
    masks = xp.zeros((3, 32, 32), xp.uint8)
    masks[0, 4:10, 4:12] = 1
    watch("aupro", lambda: ops.aupro(maps, masks), maps, masks)
    return grew


if __name__ == "__main__":
    f0 = free_mib()
    grew = main()
    if MODE == "edgead":
        from edgead import ops
        ops._C().cublas_release()
    f1 = free_mib()
    print(f"probe: mode={MODE} free before {f0:.1f} MiB, after {f1:.1f} MiB, leaked_mib={f0 - f1:.1f}")
    if grew:
        print("probe: reference counts grew in:", ", ".join(grew))
        sys.exit(1)
