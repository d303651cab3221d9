#!/usr/bin/env bash
# Expert-parallel benchmark, all in one run on configs/bench.toml (E = 8,
# top-2, d = 256, micro-batch 4 x S 256 = 1024 tokens), 2 ranks, 1 thread a rank:
#   - the bytes one MoE layer's all-to-alls send a micro-batch, measured by
#     ExpertDispatch under balanced routing (bench_expert_dispatch), against
#     `moetrain plan`'s count for the same layout (they must be equal to the byte);
#   - that layer's dispatch time (counts, rows out, outputs back, dy out, dx
#     back, with the gathers and scatters around them) against plain
#     MPI_Alltoallv calls moving the same bytes (the ratio);
#   - step time at EP = 1 and EP = 2 (DP = 2 both: the same samples, routing
#     and products; EP 2 adds the all-to-alls and halves each rank's
#     experts), and the all-to-all bytes a step of the EP = 2 run (the
#     router's real imbalance) against the planner's balanced count.
#
#   scripts/bench_expert_parallel.sh
#
# Env: MT_BUILD_DIR (build), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1,
# MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (300).
# Writes bench_out/ep_summary.json and prints a table (files: bench_out/ep_*;
# the summary is scripts/bench_py/expert_parallel_summary.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_rounds 3
bench_steps
config=configs/bench.toml

bench_build "${MT_BUILD_DIR:-build}" moetrain bench_expert_dispatch
bench_ed="$build_dir/bench/bench_expert_dispatch"
bench_mpirun 2 -x OMP_NUM_THREADS=1

rm -f "$out"/ep_*.jsonl "$out"/ep_*.log "$out"/ep_dispatch_*.json "$out"/ep_plan.json "$out"/ep_summary.json
bench_corpus "$out/ep_corpus" > /dev/null

# The planner's figures for the EP = 2 run, and the layer shape they are for.
"$bin" plan --config "$config" --num-gpus 2 --ep 2 --json > "$out/ep_plan.json"
read -r tokens width experts topk < <("$py" scripts/bench_py/expert_parallel_shape.py "$out/ep_plan.json")

common=(train --config "$config" --data-path "$out/ep_corpus" --train-iters "$steps" --log-interval "$log_interval" --threads 1)
declare -A cmds=(
    [ep1]="${mpirun_cmd[*]} $bin ${common[*]}"
    [ep2]="${mpirun_cmd[*]} $bin ${common[*]} --ep 2"
)
dispatch_cmd="${mpirun_cmd[*]} $bench_ed --reps 20 --warmup 3 $tokens $width $experts $topk"
bench_wait_for_quiet_machine 300
for (( r = 1; r <= rounds; r++ )); do
    for name in ep1 ep2; do
        echo "bench: round $r/$rounds: $name: ${cmds[$name]}"
        # shellcheck disable=SC2086  # a command line built above
        bench_logged "$out/ep_${name}_$r.log" "$name run $r" ${cmds[$name]} --metrics-file "$out/ep_${name}_$r.jsonl"
        grep '^step' "$out/ep_${name}_$r.log" | tail -1 | sed 's/^/    /'
    done
    echo "bench: round $r/$rounds: $dispatch_cmd"
    $dispatch_cmd > "$out/ep_dispatch_$r.json" || die "bench_expert_dispatch failed"
    sed 's/^/    /' "$out/ep_dispatch_$r.json"
done
load_after=$(uptime)

"$py" scripts/bench_py/expert_parallel_summary.py "$out" "$rounds" "$log_interval" "$load_before" "$load_after" \
    "$(nproc)" "${cmds[ep1]}" "${cmds[ep2]}" "$dispatch_cmd"
[[ "$("$py" -c "import json; print(json.load(open('$out/ep_summary.json'))['layer_bytes_equal'])")" == True ]] \
    || die "the measured all-to-all bytes differ from the planner's"
