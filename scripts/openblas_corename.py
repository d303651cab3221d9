#!/usr/bin/python3
"""Prints the name of the kernel set (core) OpenBLAS picks on this CPU when
left alone, e.g. "Haswell", from the OpenMP build of libopenblas; fails if
that library is missing. For scripts/test_blas_kernels.sh.

    scripts/openblas_corename.py
"""

import ctypes


def main():
    lib = ctypes.CDLL("/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0")
    lib.openblas_get_corename.restype = ctypes.c_char_p
    print(lib.openblas_get_corename().decode())


if __name__ == "__main__":
    main()
