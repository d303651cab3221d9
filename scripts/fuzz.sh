#!/usr/bin/env bash
# Build the libFuzzer targets (fuzz/) with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, and run each for a while on its seed corpus.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
#
#   --seconds N  how long each target runs (default 600; CI runs 20)
#   --jobs J     parallel fuzzing processes a target (default 1)
#   TARGET       fuzz_indexed_dataset, fuzz_checkpoint_reader, fuzz_config_file,
#                fuzz_tokenizer_files (default: all four)
#
# Env: MT_FUZZ_BUILD_DIR (default build-fuzz), MT_BUILD_SKIP=1 to use the
# existing build, MT_FUZZ_OPT (default -O1, the sanitizers' usual level;
# scripts/test.sh builds its short runs at -O0, which compiles 40% faster).
# The working corpus grows under BUILD/corpus/TARGET (besides the
# committed seeds in fuzz/corpus/TARGET); a crash, hang or sanitizer report leaves its input in
# BUILD/artifacts/ and makes the script exit non-zero, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
jobs=1
targets=()
while (( $# > 0 )); do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        fuzz_*) targets+=("$1"); shift ;;
        *) echo "fuzz.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
(( ${#targets[@]} > 0 )) || targets=(fuzz_indexed_dataset fuzz_checkpoint_reader fuzz_config_file fuzz_tokenizer_files)

build_dir="${MT_FUZZ_BUILD_DIR:-build-fuzz}"
if ! command -v clang++ >/dev/null 2>&1; then
    echo "fuzz.sh: clang++ not found (scripts/install_deps.sh installs clang)" >&2
    exit 1
fi
if [[ "${MT_BUILD_SKIP:-0}" != 1 ]]; then
    opt="${MT_FUZZ_OPT:--O1}"
    CC=clang CXX=clang++ cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Fuzz \
        -DCMAKE_C_FLAGS_FUZZ="$opt" -DCMAKE_CXX_FLAGS_FUZZ="$opt" \
        -DMOETRAIN_BUILD_TESTS=OFF -DMOETRAIN_BUILD_BENCH=OFF -DMOETRAIN_BUILD_FUZZERS=ON >/dev/null
    cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}"
fi

# Open MPI's start-up allocations live as long as the process (fuzz/lsan.supp).
export LSAN_OPTIONS="suppressions=$PWD/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
mkdir -p "$build_dir/artifacts"
root=$PWD
build=$(realpath "$build_dir")
# The targets run side by side, each for the whole time and in its own
# directory (-jobs writes a log a worker in the current one), so that the
# four short runs of scripts/test.sh take 20 s, not 80.
fuzz_target() {
    local t=$1
    mkdir -p "$build/corpus/$t" "$build/run/$t"  # new inputs go to corpus; fuzz/corpus/TARGET, read too, stays as committed
    # -timeout: an input taking 10 s is a hang; -rss_limit_mb: one using
    # 2 GB is a runaway allocation.
    local parallel=()
    if (( jobs > 1 )); then parallel=(-jobs="$jobs" -workers="$jobs"); fi
    cd "$build/run/$t"
    "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 "${parallel[@]}" \
        -print_final_stats=1 -artifact_prefix="$build/artifacts/$t-" "$build/corpus/$t" "$root/fuzz/corpus/$t" \
        >"$build/$t.log" 2>&1
}
pids=()
for t in "${targets[@]}"; do
    echo "fuzz.sh: $t for ${seconds} s (corpus $build/corpus/$t, log $build/$t.log)"
    rm -rf "$build/run/$t"
    fuzz_target "$t" &
    pids+=($!)
done
status=0
for i in "${!targets[@]}"; do
    t=${targets[$i]}
    if wait "${pids[$i]}"; then ok=1; else ok=0; fi
    logs=("$build/$t.log")
    for worker_log in "$build/run/$t"/fuzz-*.log; do [[ -e "$worker_log" ]] && logs+=("$worker_log"); done
    if (( ok )); then
        echo "fuzz.sh: $t:"
        grep -hE "^(stat::number_of_executed_units|stat::peak_rss_mb|Done)" "${logs[@]}" | sed 's/^/    /' || true
    else
        status=1
        echo "fuzz.sh: $t FOUND A PROBLEM:" >&2
        found=$(grep -hE "ERROR|SUMMARY|Test unit written" "${logs[@]}" | head -10 || true)
        echo "${found:-$(tail -n 5 "$build/$t.log")}" | sed 's/^/    /' >&2
    fi
done
exit "$status"
