#!/usr/bin/env bash
# The numerically sensitive tests (MT_NUMERICAL_TESTS in scripts/test_env.sh)
# under each kernel set this CPU can run, at 1 and 2 threads a rank, and a
# table of pass/fail per cell. A kernel set names an OpenBLAS core
# (OPENBLAS_CORETYPE, float64 products) and caps oneDNN at that core's
# instructions (ONEDNN_MAX_CPU_ISA, float32 products). A bound tuned to one
# machine's rounding fails here (docs/testing.md).
#
#   scripts/test_blas_kernels.sh [--kernels LIST] [--threads LIST]
#
#   --kernels  comma-separated OPENBLAS_CORETYPE values; "default" leaves both
#              unset (the libraries' own choice); "second" is one set other
#              than the default that this CPU runs (what CI adds). Default:
#              default and every one of Sandybridge, Haswell, Zen, SkylakeX,
#              Cooperlake that the CPU runs.
#   --threads  comma-separated threads a rank (default 1,2).
# Env: MT_BUILD_DIR (default build; built first if it has no moetrain).
# Logs go to BUILD/blas_kernels/. Exits non-zero if any cell failed.
set -euo pipefail
cd "$(dirname "$0")/.."

build_dir="${MT_BUILD_DIR:-build}"
kernels_arg=""
threads_arg="1,2"
while (( $# > 0 )); do
    case "$1" in
        --kernels) kernels_arg="$2"; shift 2 ;;
        --threads) threads_arg="$2"; shift 2 ;;
        -h|--help) sed -n '2,16s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "test_blas_kernels.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if [[ ! -x "$build_dir/moetrain" ]]; then
    MT_BUILD_TARGETS="" bash scripts/build.sh "$build_dir"
fi
source scripts/test_env.sh

# What the CPU runs: OpenBLAS's kernels for a core need its instructions.
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() {
    local f
    for f in "$@"; do [[ "$cpu_flags" == *" $f "* ]] || return 1; done
}
runnable=()
has avx && runnable+=(Sandybridge)
has avx2 fma && runnable+=(Haswell Zen)
has avx512f avx512bw avx512dq avx512vl && runnable+=(SkylakeX)
has avx512f avx512bw avx512dq avx512vl avx512_bf16 && runnable+=(Cooperlake)

# The oneDNN instruction set of each OpenBLAS core.
declare -A onednn_isa=([Sandybridge]=AVX [Haswell]=AVX2 [Zen]=AVX2 [SkylakeX]=AVX512_CORE
                       [Cooperlake]=AVX512_CORE_BF16)

# The kernels OpenBLAS picks here when left alone.
default_core=$(python3 scripts/openblas_corename.py 2>/dev/null || echo unknown)

kernels=()
if [[ -z "$kernels_arg" ]]; then
    kernels=(default "${runnable[@]}")
else
    IFS=, read -r -a asked <<< "$kernels_arg"
    for k in "${asked[@]}"; do
        if [[ "$k" == second ]]; then
            # The first runnable set that is not the default's own.
            second=""
            for r in "${runnable[@]}"; do
                if [[ "${r,,}" != "${default_core,,}" ]]; then second="$r"; break; fi
            done
            if [[ -z "$second" ]]; then
                echo "test_blas_kernels.sh: this CPU runs no kernel set but its default ($default_core)" >&2
                exit 1
            fi
            kernels+=("$second")
        else
            kernels+=("$k")
        fi
    done
fi
IFS=, read -r -a thread_counts <<< "$threads_arg"

log_dir="$build_dir/blas_kernels"
mkdir -p "$log_dir"
echo "test_blas_kernels: CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "test_blas_kernels: OpenBLAS default kernels here: $default_core; kernel sets: ${kernels[*]}; threads: ${thread_counts[*]}"

declare -A result
failed=0
for k in "${kernels[@]}"; do
    for t in "${thread_counts[@]}"; do
        log="$log_dir/${k}_${t}threads.log"
        coretype=()
        [[ "$k" != default ]] && coretype=(OPENBLAS_CORETYPE="$k" ONEDNN_MAX_CPU_ISA="${onednn_isa[$k]:-ALL}")
        echo "test_blas_kernels: kernels $k, $t thread(s) a rank -> $log"
        start=$SECONDS
        # Passive OpenMP waits: several ranks of several threads share 2 cores.
        if (cd "$build_dir" && env "${coretype[@]}" MT_TEST_THREADS="$t" OMP_WAIT_POLICY=PASSIVE \
                ctest -j2 --timeout 900 --output-on-failure -R "$MT_NUMERICAL_TESTS") > "$log" 2>&1; then
            verdict="pass"
        else
            verdict="FAIL"
            failed=1
            grep -E "^\s*[0-9]+ - " "$log" | sed 's/^/    failed: /' || true
        fi
        summary=$(grep -E "tests passed, [0-9]+ tests failed" "$log" | tail -1 || true)
        result["$k,$t"]="$verdict ($summary, $((SECONDS - start)) s)"
        echo "    $verdict: $summary"
    done
done

echo
echo "| OPENBLAS_CORETYPE | ONEDNN_MAX_CPU_ISA | threads a rank | result |"
echo "|---|---|---:|---|"
for k in "${kernels[@]}"; do
    for t in "${thread_counts[@]}"; do
        name="$k"
        isa="${onednn_isa[$k]:-}"
        [[ "$k" == default ]] && name="unset ($default_core)" && isa="unset"
        echo "| $name | $isa | $t | ${result["$k,$t"]} |"
    done
done
exit "$failed"
