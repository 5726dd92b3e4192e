#!/usr/bin/env python3
"""Mutation check for the cudaemu equivalence suite (run by hand or weekly, not in every CI run).

Injects typical CUDA kernel bugs, one per build, into a temporary copy of csrc/ (never the worktree's
files), rebuilds the suite against the copy (only the mutated kernel file recompiles), runs the affected
op's cases under the forward and the random schedule in strict mode, and prints a table bug -> caught/missed.
Exit status 0 when every mutation was caught.

    nice -n 10 python3 tools/mutation_check.py [--only SUBSTRING] [--keep]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (id, file under csrc, old text (must occur exactly once), new text, suite group, description)
MUTATIONS = [
    ("knn-drop-sync", "knn/knn_cuda.cu",
     "        Bs[kk][r] = bv;\n      }\n      __syncthreads();\n#pragma unroll\n      for (int kk = 0; kk < BK; ++kk) {",
     "        Bs[kk][r] = bv;\n      }\n#pragma unroll\n      for (int kk = 0; kk < BK; ++kk) {",
     "knn", "drop the __syncthreads between the shared tile loads and their use (SIMT tile)"),
    ("knn-norm-shfl-offset", "knn/knn_cuda.cu",
     "  for (int o = 16; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);\n  if (lane == 0) out[warp] = s;",
     "  for (int o = 8; o > 0; o /= 2) s += __shfl_down_sync(0xffffffffu, s, o);\n  if (lane == 0) out[warp] = s;",
     "knn", "row-norm warp reduction starts at offset 8 instead of 16"),
    ("knn-wmma-ldm", "knn/knn_cuda.cu",
     "wmma::load_matrix_sync(b0, &Bs[wc][kk], KBP);", "wmma::load_matrix_sync(b0, &Bs[wc][kk], KB);",
     "knn", "WMMA ldm of the bank fragment = KB instead of the padded KBP"),
    ("knn-wmma-ptr", "knn/knn_cuda.cu",
     "wmma::load_matrix_sync(b1, &Bs[wc + 16][kk], KBP);", "wmma::load_matrix_sync(b1, &Bs[wc][kk], KBP);",
     "knn", "WMMA second bank fragment loaded from the first one's rows"),
    ("knn-smem-short", "knn/knn_cuda.cu",
     "const size_t smem = (sizeof(float) + sizeof(int)) * BQ * k;",
     "const size_t smem = (sizeof(float) + sizeof(int)) * BQ * k - sizeof(int);",
     "knn", "dynamic shared memory for the top-k lists one int short"),
    ("knn-fold-tie", "knn/knn_cuda.cu", "      sh0 += y < od0;", "      sh0 += y <= od0;",
     "knn", "top-k fold: a tied candidate displaces the older (lower-index) entry"),
    ("knn-gemm-carry", "knn/knn_cuda.cu", "    if (!first && qrow < q_end) {", "    if (false && qrow < q_end) {",
     "knn", "GEMM path: every chunk restarts the top-k lists instead of carrying them over"),
    ("knn-gemm-ldg", "knn/knn_cuda.cu", "G[(qrow - q_base) * ldg + col]", "G[(qrow - q_base) * Mc + col]",
     "knn", "GEMM path: the fold reads G with the chunk's width instead of its leading dimension"),
    ("knn-gemm-given-norms", "knn/knn_cuda.cu", "        bad_b |= !isfinite(b) || (!isfinite(g) && isfinite(a));",
     "        bad_b |= !isfinite(b);", "fixes", "GEMM path: a NaN bank row behind clean precomputed norms goes unreported"),
    ("coreset-vec-tie", "coreset/coreset_cuda.cu", "      if (i < N) {\n        const float m = fminf(mind[i], acc[r]);\n        if (sub == 0) mind[i] = m;\n        if (m > bv) {",
     "      if (i < N) {\n        const float m = fminf(mind[i], acc[r]);\n        if (sub == 0) mind[i] = m;\n        if (m >= bv) {",
     "coreset", "vectorised step: a tie replaces the lane's lower-index candidate"),
    ("coreset-vec-butterfly", "coreset/coreset_cuda.cu", "for (int o = LPR / 2; o > 0; o /= 2) acc[r]",
     "for (int o = LPR / 4; o > 0; o /= 2) acc[r]", "coreset", "vectorised step: the row sum skips half of its lanes"),
    ("knn-merge-lane-stride", "knn/knn_cuda.cu",
     "  for (int s = lane; s < splits; s += 32) {\n    if (heads[s] >= k) continue;",
     "  for (int s = lane; s < splits; s += 16) {\n    if (heads[s] >= k) continue;",
     "knn", "split merge: lanes scan splits with stride 16 (two lanes own one split)"),
    ("knn-finish-sync", "knn/knn_cuda.cu",
     "      }\n    }\n  }\n  __syncthreads();\n  for (int j = warp; j < k; j += nwarps) {",
     "      }\n    }\n  }\n  for (int j = warp; j < k; j += nwarps) {",
     "knn", "finish kernel: no barrier between the merge (warp 0) and the other warps reading sel_i"),
    ("coreset-argmax-sync", "coreset/coreset_cuda.cu",
     "      si[threadIdx.x] = si[threadIdx.x + w];\n    }\n    __syncthreads();",
     "      si[threadIdx.x] = si[threadIdx.x + w];\n    }",
     "coreset", "block arg-max tree without its per-level __syncthreads"),
    ("coreset-barrier-in-branch", "coreset/coreset_cuda.cu",
     "      si[threadIdx.x] = si[threadIdx.x + w];\n    }\n    __syncthreads();",
     "      si[threadIdx.x] = si[threadIdx.x + w];\n      __syncthreads();\n    }",
     "coreset", "block arg-max barrier moved inside the if (threadIdx.x < w ...) branch"),
    ("coreset-tie-break", "coreset/coreset_cuda.cu",
     "return va > vb || (va == vb && ia < ib);", "return va > vb || (va == vb && ia > ib);",
     "coreset", "arg-max tie-break keeps the highest index"),
    ("coreset-ticket-reset", "coreset/coreset_cuda.cu", "    *ticket = 0u;", "    /* ticket not reset */",
     "coreset", "last-block ticket not reset for the next step"),
    ("coreset-row-shfl", "coreset/coreset_cuda.cu",
     "for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);",
     "for (int o = 16; o > 1; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);",
     "coreset", "row-distance butterfly stops one step early (offset 1 missing)"),
    ("msgms-halo-short", "msgms/msgms_cuda.cu",
     "for (int i = threadIdx.x; i < (kGmsTile + 2) * (kGmsTile + 2); i += blockDim.x) {",
     "for (int i = threadIdx.x; i < (kGmsTile + 1) * (kGmsTile + 2); i += blockDim.x) {",
     "msgms", "GMS tile halo loaded one row short"),
    ("msgms-smem-short", "msgms/msgms_cuda.cu",
     "const size_t smem = sizeof(float) * (size_t)((kBoxTH + 2 * R) * (kBoxTW + 2 * R) + (kBoxTH + 2 * R) * kBoxTW);",
     "const size_t smem = sizeof(float) * (size_t)((kBoxTH + 2 * R) * (kBoxTW + 2 * R) + (kBoxTH + 2 * R - 1) * kBoxTW);",
     "msgms", "box-filter dynamic shared memory one row short"),
    ("msgms-drop-sync", "msgms/msgms_cuda.cu",
     "        sy[ly][lx] = load_f(yi, (long long)Y * w + X);\n      }\n      __syncthreads();",
     "        sy[ly][lx] = load_f(yi, (long long)Y * w + X);\n      }",
     "msgms", "no barrier between the halo load and the gradients"),
    ("softmask-shfl-offset", "softmask/softmask_cuda.cu", "  for (int o = 16; o > 0; o >>= 1) {",
     "  for (int o = 8; o > 0; o >>= 1) {", "softmask", "min/max butterfly starts at offset 8"),
    ("softmask-vec-cond", "softmask/softmask_cuda.cu", "const bool vec = (Ws % 4 == 0)",
     "const bool vec = (Ws % 2 == 0)", "softmask", "4-wide path taken when rows are only even (groups cross rows)"),
    ("pro-uf-neighbour", "pro/pro_cuda.cu", "    if (x + 1 < W && m[i - W + 1]) unite(L, i, i - W + 1);\n", "",
     "pro", "union-find misses the north-east neighbour"),
    ("pro-doublebuffer", "pro/pro_cuda.cu", "const Key* skeys = dkeys.Current();", "const Key* skeys = keys_a.p;",
     "pro", "reads the sorted keys from the DoubleBuffer's original half"),
    ("pro-match-popc", "pro/pro_cuda.cu", "static_cast<unsigned int>(__popc(peers))",
     "static_cast<unsigned int>(__popc(ballot))", "pro", "region size counts the ballot instead of the match peers"),
    ("pro-inclusive-scan", "pro/pro_cuda.cu",
     "EDGEAD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.p, bytes, is_root.p, rid.p, n, st));",
     "EDGEAD_CUDA_CHECK(cub::DeviceScan::InclusiveSum(tmp.p, bytes, is_root.p, rid.p, n, st));",
     "pro", "region ids from an inclusive instead of an exclusive scan"),
]

SCHEDULES = ["forward", "random:20261126"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def suite(build, group):
    """(caught, first diagnostic line)."""
    for sched in SCHEDULES:
        env = dict(os.environ, CUDAEMU_SCHEDULE=sched, CUDAEMU_STRICT="1", CUDAEMU_TIMEOUT_S="60",
                   OMP_NUM_THREADS="1")
        try:
            r = run([os.path.join(build, "cudaemu_suite"), group], env=env, timeout=900)
        except subprocess.TimeoutExpired:
            return True, f"{sched}: suite timed out"
        if r.returncode != 0:
            out = (r.stdout + r.stderr).splitlines()
            why = next((l for l in out if l.startswith("FAIL") or "cudaemu error" in l or "ERROR: AddressSanitizer" in l
                        or "runtime error" in l), out[-1] if out else "")
            return True, f"{sched} (exit {r.returncode}): {why.strip()[:150]}"
    return False, ""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated texts: run mutations whose id contains one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="edgead-mutation-")
    csrc = os.path.join(tmp, "csrc")
    shutil.copytree(os.path.join(REPO, "csrc"), csrc)
    build = os.path.join(tmp, "build")
    t0 = time.monotonic()
    r = run(["cmake", "-S", os.path.join(REPO, "tests", "cudaemu"), "-B", build, f"-DCUDAEMU_CSRC={csrc}",
             f"-DPython3_EXECUTABLE={sys.executable}"])
    if r.returncode:
        sys.exit(r.stdout + r.stderr)
    r = run(["cmake", "--build", build, "-j2", "--target", "cudaemu_suite"])
    if r.returncode:
        sys.exit("baseline build failed:\n" + r.stdout[-4000:] + r.stderr[-4000:])
    groups = sorted({m[4] for m in MUTATIONS})
    for g in groups:
        caught, why = suite(build, g)
        if caught:
            sys.exit(f"baseline suite fails for {g}: {why}")
    print(f"baseline: build + suite green ({time.monotonic() - t0:.0f} s)", flush=True)

    rows = []
    for mid, rel, old, new, group, desc in MUTATIONS:
        if args.only and not any(t and t in mid for t in args.only.split(",")):
            continue
        path = os.path.join(csrc, rel)
        pristine = open(path).read()
        if pristine.count(old) != 1:
            rows.append((mid, desc, "SKIPPED", f"pattern found {pristine.count(old)} times (source changed?)"))
            print(f"{mid}: skipped", flush=True)
            continue
        t1 = time.monotonic()
        try:
            with open(path, "w") as f:
                f.write(pristine.replace(old, new))
            b = run(["cmake", "--build", build, "-j2", "--target", "cudaemu_suite"])
            if b.returncode:
                caught, why = True, "does not compile"
            else:
                caught, why = suite(build, group)
        finally:
            with open(path, "w") as f:
                f.write(pristine)
            os.utime(path, None)
        rows.append((mid, desc, "caught" if caught else "MISSED", why))
        print(f"{mid}: {'caught' if caught else 'MISSED'} ({time.monotonic() - t1:.0f} s) {why}", flush=True)
    # Restore the pristine build so a --keep'd tree is usable.
    run(["cmake", "--build", build, "-j2", "--target", "cudaemu_suite"])

    print("\n| bug | injected | result | first report |\n|---|---|---|---|")
    for mid, desc, res, why in rows:
        print(f"| {mid} | {desc} | {res} | {why.replace('|', '/')} |")
    n_caught = sum(r[2] == "caught" for r in rows)
    print(f"\n{n_caught} of {len(rows)} injected bugs caught ({time.monotonic() - t0:.0f} s in all)")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept", tmp)
    return 0 if n_caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
