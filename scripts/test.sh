#!/usr/bin/env bash
# Install dependencies, build everything and run the whole test suite with
# ctest, then the numerical tests once more under a second OpenBLAS kernel
# set (scripts/test_blas_kernels.sh --kernels second), then each libFuzzer
# target for 20 s on its seed corpus (scripts/fuzz.sh).
#
#   scripts/test.sh [extra ctest args...]     e.g. scripts/test.sh -R Philox
#                                             (with arguments: ctest alone)
#
# Env: MT_BUILD_DIR   build directory (default build)
# Multi-rank tests start mpirun with more ranks than cores, also as root (CI).
# Exits with ctest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${MT_BUILD_DIR:-build}"
start=$SECONDS

echo "==== [1/5] Dependencies (apt packages) ===="
# PyTorch too: the Inspect.Torch* tests load checkpoints with it.
bash scripts/install_deps.sh --torch

echo
echo "==== [2/5] Build all targets ($build_dir, Release) ===="
MT_BUILD_TARGETS="" bash scripts/build.sh "$build_dir"

echo
echo "==== [3/5] Tests (ctest) ===="
source scripts/test_env.sh

status=0
(cd "$build_dir" && ctest --output-on-failure -j2 --timeout 600 "$@") || status=$?

# The numerical tests once more under another BLAS kernel set than this
# machine's own, so that no bound tuned to one machine's rounding passes.
if (( status == 0 )) && [[ $# -eq 0 ]]; then
    echo
    echo "==== [4/5] Numerical tests under a second BLAS kernel set ===="
    MT_BUILD_DIR="$build_dir" bash scripts/test_blas_kernels.sh --kernels second --threads 1 || status=$?
fi

# The readers of users' files under AddressSanitizer and UBSan: a crash,
# hang or sanitizer report on the seed corpus or what 20 s grow from it.
if (( status == 0 )) && [[ $# -eq 0 ]]; then
    echo
    echo "==== [5/5] Fuzzers, 20 s each (${build_dir}-fuzz-O0, clang) ===="
    MT_FUZZ_BUILD_DIR="${build_dir}-fuzz-O0" MT_FUZZ_OPT=-O0 bash scripts/fuzz.sh --seconds 20 || status=$?
fi

elapsed=$((SECONDS - start))
echo
if (( status == 0 )); then
    echo "test.sh: all tests passed; total time $((elapsed / 60)) min $((elapsed % 60)) s"
else
    echo "test.sh: FAILED (exit status $status; the failing stage is above); total time $((elapsed / 60)) min $((elapsed % 60)) s"
fi
exit "$status"
