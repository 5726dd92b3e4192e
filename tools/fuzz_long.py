#!/usr/bin/env python3
"""Long fuzzing run of edgead.ops (and the file readers): the hypothesis tests of tests/test_fuzz_ops.py and
tests/test_fuzz_io.py with many more examples and a random seed, then a count of calls per op.

    nice -n 10 python3 tools/fuzz_long.py                  # >= 10,000 examples per op family
    python3 tools/fuzz_long.py --examples 500 --io-examples 100

Every op family (knn incl. knn_bank_sq_norms, coreset, msgms_map, softmask_apply, pro_curve/aupro) gets
--examples examples split over its tests (each example is one or two calls); a failure prints hypothesis's
falsifying example and the script exits 1. The file-reader tests get --io-examples each.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=10_000, help="examples per op family, split over its tests (default 10000)")
    ap.add_argument("--io-examples", type=int, default=1_000, help="examples per file-reader test (default 1000)")
    ap.add_argument("--seed-random", action="store_true", default=True, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    env = dict(os.environ, EDGEAD_FUZZ_RANDOM="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    code = r'''
import collections, sys, time, pytest
sys.path.insert(0, "tests")
import test_fuzz_ops as F
tests = [n for n in dir(F) if n.startswith("test_fuzz_") and callable(getattr(F, n)) and hasattr(getattr(F, n), "hypothesis")]
failed = []
import math, os
from hypothesis import given, settings
from hypothesis import strategies as st
total = int(os.environ["EDGEAD_FUZZ_EXAMPLES"])
family = lambda n: n[len("test_fuzz_"):].split("_")[0]
sizes = collections.Counter(family(n) for n in tests)
for n in tests:
    t = time.time()
    per_test = math.ceil(total / sizes[family(n)])  # the family's total split over its tests
    inner = getattr(F, n).hypothesis.inner_test
    fn = settings(F.FUZZ, max_examples=per_test)(given(st.data())(inner))
    try:
        fn()
        status = "ok"
    except BaseException as e:
        status = "FAILED"
        failed.append(n)
        import traceback
        print(f"--- {n} failed:\n" + "".join(traceback.format_exception(e))[-8000:], flush=True)
    print(f"{n}: {status}, {per_test} examples in {time.time() - t:.0f} s; calls so far {sum(F.COUNTS.values())}", flush=True)
per_op = collections.defaultdict(lambda: collections.Counter())
for (op, kind), c in F.COUNTS.items():
    per_op[op][kind] += c
print("calls per op (accepted = compared with ops_reference, rejected = TypeError/ValueError naming the argument):")
for op, c in sorted(per_op.items()):
    print(f"  {op:20s} {sum(c.values()):7d}  accepted {c['accepted']:7d}  rejected {c['rejected']:7d}")
sys.exit(1 if failed else 0)
'''
    t0 = time.time()
    r1 = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, EDGEAD_FUZZ_EXAMPLES=str(args.examples)))
    r2 = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                         "--hypothesis-show-statistics", "tests/test_fuzz_io.py", "-k", "test_fuzz_"],
                        cwd=ROOT, env=dict(env, EDGEAD_FUZZ_EXAMPLES=str(args.io_examples)))
    print(f"fuzz_long: {time.time() - t0:.0f} s, ops {'ok' if r1.returncode == 0 else 'FAILED'}, "
          f"io {'ok' if r2.returncode == 0 else 'FAILED'}")
    return 0 if r1.returncode == 0 and r2.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
