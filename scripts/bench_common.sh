# shellcheck shell=bash
# Shared by the benchmark scripts (scripts/bench_*.sh), which source it from
# the repository root. The functions that set variables set them for the
# calling script. The benchmarks' Python lives in scripts/bench_py/.

# shellcheck disable=SC2034  # py and out are for the scripts that source this file
{
    # The benchmarks' Python: Debian's, which has torch (install_deps.sh --torch).
    py=/usr/bin/python3
    # Where every benchmark writes its logs and summaries.
    out=bench_out
}
mkdir -p "$out"

# die MESSAGE...: the error, named after the calling script, and exit 1.
die() { echo "${0##*/}: error: $*" >&2; exit 1; }

# bench_positive NAME VALUE: dies unless VALUE is a positive integer.
bench_positive() {
    [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer, got '$2'"
}

# bench_threads [THREADS]: sets `threads` to THREADS, else nproc.
bench_threads() {
    threads="${1:-$(nproc)}"
    bench_positive THREADS "$threads"
}

# bench_threads_per_rank RANKS [THREADS]: sets `threads` to THREADS, else
# the machine's cores shared by RANKS ranks (at least 1).
bench_threads_per_rank() {
    local share=$(( $(nproc) / $1 ))
    bench_threads "${2:-$(( share > 0 ? share : 1 ))}"
}

# bench_rounds DEFAULT: sets `rounds` from MT_BENCH_ROUNDS (else DEFAULT),
# the interleaved rounds whose median the summary reports.
bench_rounds() {
    rounds="${MT_BENCH_ROUNDS:-$1}"
    bench_positive MT_BENCH_ROUNDS "$rounds"
}

# bench_steps: sets `steps` (MT_BENCH_STEPS, 20) and `log_interval`
# (MT_BENCH_LOG_INTERVAL, 5) of the training runs. The first interval is
# warm-up, so at least one more must follow.
bench_steps() {
    steps="${MT_BENCH_STEPS:-20}"
    log_interval="${MT_BENCH_LOG_INTERVAL:-5}"
    bench_positive MT_BENCH_STEPS "$steps"
    bench_positive MT_BENCH_LOG_INTERVAL "$log_interval"
    (( steps >= 2 * log_interval )) \
        || die "MT_BENCH_STEPS ($steps) must be >= 2 x MT_BENCH_LOG_INTERVAL ($log_interval)"
}

# bench_build BUILD_DIR TARGET... [-- CMAKE_ARG...]: builds the targets in
# BUILD_DIR with scripts/build.sh, configured with the CMAKE_ARGs (and the
# benchmarks on when a target is one), unless MT_BENCH_SKIP_BUILD=1; then
# checks each binary is there: moetrain in BUILD_DIR, the benchmarks in
# BUILD_DIR/bench. Sets `build_dir` to BUILD_DIR and `bin` to moetrain's.
bench_build() {
    local targets=() cmake_args=() t
    build_dir=$1
    shift
    while (( $# > 0 )) && [[ "$1" != -- ]]; do targets+=("$1"); shift; done
    if (( $# > 0 )); then shift; cmake_args=("$@"); fi
    for t in "${targets[@]}"; do
        [[ "$t" == moetrain ]] || { cmake_args+=(-DMOETRAIN_BUILD_BENCH=ON); break; }
    done
    if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
        MT_BUILD_TARGETS="${targets[*]}" bash scripts/build.sh "$build_dir" "${cmake_args[@]}"
    fi
    bin="$build_dir/moetrain"
    [[ -x "$bin" ]] || die "no moetrain binary in $build_dir"
    for t in "${targets[@]}"; do
        [[ "$t" == moetrain || -x "$build_dir/bench/$t" ]] \
            || die "no $build_dir/bench/$t (configure with -DMOETRAIN_BUILD_BENCH=ON)"
    done
}

# bench_mpirun NP [MPIRUN_ARG...]: sets `mpirun_cmd`, NP ranks as the docs
# start them: no binding (a rank may use any core), more ranks than cores
# allowed, shared memory without the single-copy mechanism (unavailable in
# containers), and as root when root.
bench_mpirun() {
    mpirun_cmd=(mpirun -np "$1" --bind-to none --oversubscribe --mca btl_vader_single_copy_mechanism none "${@:2}")
    [[ "$(id -u)" != 0 ]] || mpirun_cmd+=(--allow-run-as-root)
}

# The top-level C headers of /usr/include in a fixed order, the code part of
# the benchmark corpora: fills the array `headers`.
bench_headers() {
    headers=()
    while IFS= read -r -d '' f; do headers+=("$f"); done \
        < <(find /usr/include -maxdepth 1 -type f -name '*.h' -print0 | LC_ALL=C sort -z)
}

# bench_corpus PREFIX: one token store of /usr/share/common-licenses and the
# headers of bench_headers, for configs/bench.toml.
bench_corpus() {
    bench_headers
    echo "bench: token store from /usr/share/common-licenses + ${#headers[@]} headers of /usr/include"
    "$bin" prepare-data --input /usr/share/common-licenses "${headers[@]}" --output-prefix "$1"
}

# bench_text_code_stores PREFIX: PREFIX_text (the licenses) and PREFIX_code
# (the headers), the two sources configs/workstation-moe.toml blends.
bench_text_code_stores() {
    bench_headers
    "$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$1_text" > /dev/null
    "$bin" prepare-data --input "${headers[@]}" --output-prefix "$1_code" > /dev/null
}

# bench_logged LOG WHAT COMMAND...: runs COMMAND into LOG; if it fails, the
# log's tail and an error naming WHAT.
bench_logged() {
    local log=$1 what=$2
    shift 2
    "$@" > "$log" 2>&1 || { tail -20 "$log" >&2; die "$what failed (log: $log)"; }
}

# Other processes on the machine slow every figure: wait, for at most
# MT_BENCH_LOAD_WAIT_S seconds (default: the first argument, else 300), for
# the 1-minute load average to drop below MT_BENCH_MAX_LOAD (0.5). Sets
# `waited` (seconds) and `load_before` (uptime) for the summaries.
bench_wait_for_quiet_machine() {
    local max_load="${MT_BENCH_MAX_LOAD:-0.5}" load_wait="${MT_BENCH_LOAD_WAIT_S:-${1:-300}}"
    local load1
    waited=0
    load1=$(cut -d ' ' -f 1 /proc/loadavg)
    while awk -v l="$load1" -v m="$max_load" 'BEGIN { exit !(l > m) }' && (( waited < load_wait )); do
        (( waited == 0 )) && echo "bench: load $load1 > $max_load; waiting up to ${load_wait}s for it to settle"
        sleep 10
        waited=$((waited + 10))
        load1=$(cut -d ' ' -f 1 /proc/loadavg)
    done
    (( waited > 0 )) && echo "bench: waited ${waited}s, load now $load1"
    load_before=$(uptime)
    echo "bench: load before: $load_before"
}

# bench_cpu_model: sets `cpu_model`, lscpu's model name, for the summaries.
bench_cpu_model() {
    cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
}
