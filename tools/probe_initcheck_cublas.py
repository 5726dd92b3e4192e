#!/usr/bin/env python3
"""Probe for compute-sanitizer initcheck (GPU session, run by hand or by gpu_acceptance.sh):

    compute-sanitizer --tool initcheck --print-limit 3 python3 tools/probe_initcheck_cublas.py DTYPE

torch (not edgead) writes a product into an uninitialised buffer with cuBLAS and reads it back with an
elementwise kernel. If initcheck reports "Uninitialized __global__ memory read" for that read, it does not
see cuBLAS's stores on this GPU (Hopper kernels store through the tensor memory accelerator), and the same
report for edgead's knn fold kernel, which reads cuBLAS's output, is that false positive. DTYPE: float32|float16.
"""
import sys

import torch

dt = getattr(torch, sys.argv[1] if len(sys.argv) > 1 else "float32")
a = torch.randn(784, 1536, device="cuda", dtype=dt)
b = torch.randn(4096, 1536, device="cuda", dtype=dt)
c = torch.empty(784, 4096, device="cuda", dtype=dt)
torch.mm(a, b.T, out=c)
d = c + 1  # the read initcheck judges
torch.cuda.synchronize()
print("probe:", sys.argv[1:] or ["float32"], float(d.float().abs().mean()))
