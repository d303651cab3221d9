#!/usr/bin/env bash
# Tensor-parallel benchmark: tokens/s of configs/bench.toml at TP=1
# and TP=2, and the time the TP=2 run spends in its all-reduces against plain
# MPI_Allreduce calls of the same sizes, all in one run.
#
#   scripts/bench_tensor_parallel.sh
#
# Steps:
#   1. build moetrain and bench_allreduce (scripts/build.sh, build dir
#      MT_BUILD_DIR=build-tp, tests off);
#   2. make a token store from /usr/share/common-licenses + /usr/include/*.h
#      (as scripts/bench_throughput.sh does) in bench_out/tp_corpus;
#   3. wait (bounded) for the 1-minute load average to drop below MT_BENCH_MAX_LOAD;
#   4. MT_BENCH_ROUNDS (3) interleaved rounds of
#        (a) TP=1, one process, --threads 2, then TP=1, --threads 1;
#        (b) TP=2: mpirun -np 2, --tp 2 --threads 1 (2 ranks x 1 thread);
#        (c) mpirun -np 2 bench_allreduce with the element counts the TP=2 run
#            all-reduces (derived below from the config), warm (the buffers
#            stay in cache between calls, the usual micro-benchmark) and cold
#            (--flush-mib 64: each rank writes 64 MiB, twice the L3, before
#            each call, as a training step's products evict MPI's buffers);
#      each training run skips its first log interval as warm-up;
#   5. from the per-step call counts (scripts/bench_py/tensor_parallel_plan.py),
#      the time plain MPI_Allreduce takes for one step's all-reduces, against
#      the measured tp_allreduce_s per step.
# Prints a table and writes bench_out/tp_summary.json (files: bench_out/tp_*;
# the summary is scripts/bench_py/tensor_parallel_summary.py).
#
# Env: MT_BUILD_DIR (build-tp), MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_SKIP_BUILD=1 to
# reuse an existing build, MT_BENCH_MAX_LOAD (0.5), MT_BENCH_LOAD_WAIT_S (600),
# MT_BENCH_ALLREDUCE_REPS (500 timed repetitions per size after 50 warm-up;
# the cold pass does a fifth of both), MT_BENCH_FLUSH_MIB (64, the cold pass).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_rounds 3
bench_steps
ar_reps="${MT_BENCH_ALLREDUCE_REPS:-500}"
flush_mib="${MT_BENCH_FLUSH_MIB:-64}"
config=configs/bench.toml

# --- build ---------------------------------------------------------------------------
bench_build "${MT_BUILD_DIR:-build-tp}" moetrain bench_allreduce -- -DMOETRAIN_BUILD_TESTS=OFF
bench_ar="$build_dir/bench/bench_allreduce"
bench_mpirun 2

# --- token store -------------------------------------------------------------------
rm -f "$out"/tp_metrics_*.jsonl "$out"/tp_*.log "$out"/tp_allreduce_*.json "$out"/tp_summary.json
bench_corpus "$out/tp_corpus"

# --- element counts of the TP=2 all-reduces, from the config -------------------------------
plan_json=$("$py" scripts/bench_py/tensor_parallel_plan.py "$config" 2)
echo "$plan_json" > "$out/tp_allreduce_plan.json"
read -r -a ar_counts < <("$py" -c 'import json,sys; print(" ".join(str(e["count"]) for e in json.load(sys.stdin)["per_step"]))' <<< "$plan_json")
echo "bench: TP=2 all-reduce element counts: ${ar_counts[*]} (calls per step in $out/tp_allreduce_plan.json)"

# --- wait for a quiet machine ------------------------------------------------------------
bench_wait_for_quiet_machine 600

# --- interleaved rounds -----------------------------------------------------------------------
common=(train --config "$config" --data-path "$out/tp_corpus" --train-iters "$steps" --log-interval "$log_interval")
tp1t2_cmd=("$bin" "${common[@]}" --threads 2)
tp1t1_cmd=("$bin" "${common[@]}" --threads 1)
tp2_cmd=("${mpirun_cmd[@]}" "$bin" "${common[@]}" --tp 2 --threads 1)
ar_cmd=("${mpirun_cmd[@]}" "$bench_ar" --reps "$ar_reps" --warmup 50 "${ar_counts[@]}")
cold_reps=$(( ar_reps / 5 > 20 ? ar_reps / 5 : 20 ))
ar_cold_cmd=("${mpirun_cmd[@]}" "$bench_ar" --reps "$cold_reps" --warmup 10 --flush-mib "$flush_mib" "${ar_counts[@]}")
echo "bench: tp1_t2:    ${tp1t2_cmd[*]} --metrics-file $out/tp_metrics_tp1_t2_R.jsonl"
echo "bench: tp1_t1:    ${tp1t1_cmd[*]} --metrics-file $out/tp_metrics_tp1_t1_R.jsonl"
echo "bench: tp2:       ${tp2_cmd[*]} --metrics-file $out/tp_metrics_tp2_R.jsonl"
echo "bench: allreduce: ${ar_cmd[*]}"
echo "bench: cold:      ${ar_cold_cmd[*]}"

run_train() {  # NAME ROUND CMD...
    local name=$1 r=$2; shift 2
    echo "bench: round $r/$rounds: $name"
    bench_logged "$out/tp_${name}_$r.log" "$name run $r" "$@" --metrics-file "$out/tp_metrics_${name}_$r.jsonl"
    grep '^step' "$out/tp_${name}_$r.log" | sed 's/^/    /'
}
for (( r = 1; r <= rounds; r++ )); do
    run_train tp1_t2 "$r" "${tp1t2_cmd[@]}"
    run_train tp1_t1 "$r" "${tp1t1_cmd[@]}"
    run_train tp2 "$r" "${tp2_cmd[@]}"
    for kind in warm cold; do
        echo "bench: round $r/$rounds: bench_allreduce ($kind)"
        if [[ $kind == warm ]]; then cmd=("${ar_cmd[@]}"); else cmd=("${ar_cold_cmd[@]}"); fi
        "${cmd[@]}" > "$out/tp_allreduce_${kind}_$r.json" 2> "$out/tp_allreduce_${kind}_$r.log" \
            || { cat "$out/tp_allreduce_${kind}_$r.log" >&2; die "bench_allreduce ($kind) run $r failed"; }
        sed 's/^/    /' "$out/tp_allreduce_${kind}_$r.json"
    done
done

load_after=$(uptime)
echo "bench: load after: $load_after"

# --- summary ------------------------------------------------------------------------------
bench_cpu_model
"$py" scripts/bench_py/tensor_parallel_summary.py "$out" "$rounds" "$log_interval" "$load_before" "$load_after" \
    "$waited" "$cpu_model" "$(nproc)" "${tp1t2_cmd[*]}" "${tp1t1_cmd[*]}" "${tp2_cmd[*]}" "${ar_cmd[*]}" \
    "${ar_cold_cmd[*]}"
