#!/usr/bin/env bash
# ZeRO-1 data-parallel benchmark, all in one run on configs/bench.toml:
#   - step time at DP=1 and DP=2 (1 thread a rank), against the ideal DP=2
#     step (half the DP=1 step: each replica does half the micro-batches);
#   - how much of the gradient reduce-scatter the bucketed overlap hides: the
#     share of its bytes already reduced when the backward pass ends, and the
#     time the DP=2 run waits for the rest, with buckets (--ddp-bucket-size,
#     default) against one bucket sent when the backward pass is over;
#   - bus bandwidth of the run's reduce-scatter and all-gather (GradSync,
#     bench_grad_sync) against one plain MPI_Reduce_scatter_block /
#     MPI_Allgather of the same buffer, and of the all-gather inside the run.
#
#   scripts/bench_data_parallel.sh
#
# Env: MT_BUILD_DIR (build-dp), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1,
# MT_BENCH_BUCKET (1000000, the default --ddp-bucket-size), MT_BENCH_MAX_LOAD (0.5),
# MT_BENCH_LOAD_WAIT_S (300).
# Writes bench_out/dp_summary.json and prints a table (files: bench_out/dp_*;
# the summary is scripts/bench_py/data_parallel_summary.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_rounds 3
bench_steps
bucket="${MT_BENCH_BUCKET:-1000000}"
config=configs/bench.toml

bench_build "${MT_BUILD_DIR:-build-dp}" moetrain bench_grad_sync -- -DMOETRAIN_BUILD_TESTS=OFF
bench_gs="$build_dir/bench/bench_grad_sync"
bench_mpirun 2

rm -f "$out"/dp_*.jsonl "$out"/dp_*.log "$out"/dp_grad_sync_*.json "$out"/dp_summary.json
bench_corpus "$out/dp_corpus" > /dev/null

common=(train --config "$config" --data-path "$out/dp_corpus" --train-iters "$steps" --log-interval "$log_interval" --threads 1)
declare -A cmds=(
    [dp1]="$bin ${common[*]}"
    [dp2]="${mpirun_cmd[*]} $bin ${common[*]} --ddp-bucket-size $bucket"
    [dp2_one_bucket]="${mpirun_cmd[*]} $bin ${common[*]} --ddp-bucket-size 1000000000"
)
bench_wait_for_quiet_machine 300
count=""
for (( r = 1; r <= rounds; r++ )); do
    for name in dp1 dp2 dp2_one_bucket; do
        echo "bench: round $r/$rounds: $name: ${cmds[$name]}"
        # shellcheck disable=SC2086  # a command line built above
        bench_logged "$out/dp_${name}_$r.log" "$name run $r" ${cmds[$name]} --metrics-file "$out/dp_${name}_$r.jsonl"
        grep '^step' "$out/dp_${name}_$r.log" | tail -1 | sed 's/^/    /'
    done
    # One replica's flat buffer, as the DP=2 run reports it.
    count=$(sed -n 's/^memory rank 0 .*: \([0-9]*\) parameters,.*/\1/p' "$out/dp_dp2_$r.log")
    [[ -n "$count" ]] || die "no memory line in $out/dp_dp2_$r.log"
    echo "bench: round $r/$rounds: bench_grad_sync $count $bucket"
    "${mpirun_cmd[@]}" "$bench_gs" --reps 20 --warmup 3 "$count" "$bucket" > "$out/dp_grad_sync_$r.json"
    sed 's/^/    /' "$out/dp_grad_sync_$r.json"
done
load_after=$(uptime)

"$py" scripts/bench_py/data_parallel_summary.py "$out" "$rounds" "$log_interval" "$load_before" "$load_after" \
    "$(nproc)" "${cmds[dp1]}" "${cmds[dp2]}" "${cmds[dp2_one_bucket]}" "$bench_gs --reps 20 --warmup 3 $count $bucket"
