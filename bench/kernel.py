"""rnnkit's GEMM kernel on its own (bench/gemm_peak.cpp around rnnkit/csrc/gemm.h): its ISA and
GFLOP/s, built with the extension's -march (``RNNKIT_MARCH``, native by default) into
bench/.build/ with the system C++ compiler, loaded with ctypes. Not part of the package.

    python bench/kernel.py                  # GFLOP/s on 1 and 2 threads, n = 256, 512, 1024
    RNNKIT_MARCH=x86-64-v2 python bench/kernel.py
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(HERE), "rnnkit", "csrc")
SOURCE = os.path.join(HERE, "gemm_peak.cpp")


def march() -> str:
    return os.environ.get("RNNKIT_MARCH", "native").strip() or "native"


def load() -> ctypes.CDLL:
    """Build (once per source and -march) and load the kernel library."""
    digest = hashlib.sha256(march().encode())
    for path in [SOURCE] + sorted(os.path.join(CSRC, f) for f in os.listdir(CSRC) if f.endswith(".h")):
        with open(path, "rb") as f:
            digest.update(f.read())
    out = os.path.join(HERE, ".build", f"gemm_peak_{digest.hexdigest()[:12]}.so")
    if not os.path.exists(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [os.environ.get("CXX", "g++"), "-O3", f"-march={march()}", "-std=c++17", "-fPIC", "-shared",
               "-pthread", f"-I{CSRC}", SOURCE, "-o", out + ".tmp"]
        subprocess.run(cmd, check=True)
        os.replace(out + ".tmp", out)
    lib = ctypes.CDLL(out)
    lib.rnnkit_gemm_peak.restype = ctypes.c_double
    lib.rnnkit_gemm_peak.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.rnnkit_isa.restype = ctypes.c_char_p
    return lib


def isa() -> str:
    return load().rnnkit_isa().decode()


def peak(threads: int, sizes=(256, 512), tries: int = 3) -> float:
    """Best GFLOP/s of the kernel, one (n, n) float32 product per thread."""
    lib, best = load(), 0.0
    for n in sizes:
        for _ in range(tries):
            best = max(best, lib.rnnkit_gemm_peak(n, max(1, int(2e9 / (2 * n ** 3))), threads))
    return best


def main() -> int:
    print(f"rnnkit GEMM kernel, -march={march()}: {isa()}")
    for threads in (1, 2):
        for n in (256, 512, 1024):
            print(f"  {threads} thread(s), n = {n}: {peak(threads, sizes=(n,)):.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
