#!/usr/bin/env bash
# Configure and build moetrain (Release) with CMake.
#
#   scripts/build.sh [BUILD_DIR] [extra cmake configure args...]
#
# BUILD_DIR defaults to "build" (relative to the repository root). Extra
# arguments go to the configure step, e.g. -DMOETRAIN_BUILD_BENCH=OFF.
# Env MT_BUILD_TARGETS: space-separated targets to build instead of everything,
# e.g. MT_BUILD_TARGETS=moetrain scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${1:-build}"
if (( $# > 0 )); then shift; fi

jobs=$(nproc 2>/dev/null || echo 2)

echo "build: configuring $build_dir (Release)"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@"

target_args=()
if [[ -n "${MT_BUILD_TARGETS:-}" ]]; then
    read -r -a targets <<< "$MT_BUILD_TARGETS"
    target_args=(--target "${targets[@]}")
    echo "build: building ${targets[*]} with $jobs jobs"
else
    echo "build: building all targets with $jobs jobs"
fi
cmake --build "$build_dir" -j "$jobs" "${target_args[@]}"
