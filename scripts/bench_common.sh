# Shared by the benchmark scripts (scripts/bench_*.sh), which source it.

# The top-level C headers of /usr/include in a fixed order, the code part of
# the benchmark corpora: fills the array `headers`.
bench_headers() {
    headers=()
    while IFS= read -r -d '' f; do headers+=("$f"); done \
        < <(find /usr/include -maxdepth 1 -type f -name '*.h' -print0 | LC_ALL=C sort -z)
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

# Builds moetrain in $1 (unless MT_BENCH_SKIP_BUILD=1) and sets `bin` to it.
bench_build_moetrain() {
    if [[ "${MT_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
        MT_BUILD_TARGETS="moetrain" bash scripts/build.sh "$1"
    fi
    bin="$1/moetrain"
    [[ -x "$bin" ]] || { echo "bench: error: no moetrain binary in $1" >&2; exit 1; }
}
