#!/usr/bin/env bash
# Install dependencies, build everything and run the whole test suite with ctest.
#
#   scripts/test.sh [extra ctest args...]     e.g. scripts/test.sh -R Philox
#
# Env: MT_BUILD_DIR   build directory (default build)
# Multi-rank tests start mpirun with more ranks than cores, also as root (CI).
# Exits with ctest's status.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${MT_BUILD_DIR:-build}"
start=$SECONDS

echo "==== [1/3] Dependencies (apt packages) ===="
bash scripts/install_deps.sh

echo
echo "==== [2/3] Build all targets ($build_dir, Release) ===="
MT_BUILD_TARGETS="" bash scripts/build.sh "$build_dir"

echo
echo "==== [3/3] Tests (ctest) ===="
# Let tests run mpirun as root and with more ranks than cores.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# With two ranks or fewer OpenMPI pins each rank to one core; don't, so that
# ranks and their threads share the machine's cores freely.
export OMPI_MCA_hwloc_base_binding_policy="${OMPI_MCA_hwloc_base_binding_policy:-none}"
# Containers often forbid the cross-memory attach OpenMPI uses by default.
export OMPI_MCA_btl_vader_single_copy_mechanism="${OMPI_MCA_btl_vader_single_copy_mechanism:-none}"

status=0
(cd "$build_dir" && ctest --output-on-failure -j2 --timeout 600 "$@") || status=$?

elapsed=$((SECONDS - start))
echo
if (( status == 0 )); then
    echo "test.sh: all tests passed; total time $((elapsed / 60)) min $((elapsed % 60)) s"
else
    echo "test.sh: ctest FAILED (exit status $status); total time $((elapsed / 60)) min $((elapsed % 60)) s"
fi
exit "$status"
