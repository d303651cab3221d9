#!/usr/bin/env bash
# MoE design benchmark (issue 33), two parts on the same data (the text and
# code stores configs/workstation-moe.toml blends, from files on the machine):
#   - fine-grained experts: training tokens/s of 64 SwiGLU experts of width
#     128, top-6, against 8 of width 384, top-2: the same active expert
#     width (6 x 128 = 2 x 384 = 768), otherwise the workstation-moe shape
#     (configs/workstation-moe.toml: 4 MoE layers, d 256, 8 heads, 1 kv head,
#     S 256, micro-batch 4, global batch 16, aux loss 1e-2);
#     MT_BENCH_ROUNDS (3) interleaved rounds, each run skipping its first log
#     interval as warm-up; median tokens/s of each and the ratio fine /
#     coarse, with each run's parameters as moetrain prints them ("N total,
#     M active per token": the active sizes differ only by the router);
#   - balancing: the DeepSeek-style workstation model
#     (configs/workstation-deepseek.toml: sigmoid scores, 16 experts top-4)
#     trained three times for MT_BENCH_BALANCE_STEPS steps (log interval 10)
#     with the same seed and data, (a) with an aux loss (aux_loss, coefficient
#     1e-2, no expert bias) and aux-loss-free (expert bias, load-balancing
#     type none) at (b) DeepSeek-V3's rate 1e-3 and (c) 1e-2; for each, the final loss (the mean of the
#     last 3 logged) and each MoE layer's worst expert's load over the mean
#     (its routed tokens over the layer's mean, summed over the last 50
#     steps), and its max over layers; plus the heat maps of the experts'
#     load of the runs on one colour scale and the bias of runs (b) and (c).
# The throughput runs go first, on a quiet machine; the balancing runs are
# not timed. A run shorter than 80 steps warms the learning rate up over a
# quarter of its samples instead of the configs' 320 (the throughput runs
# do not warm up: it does not change a step's work).
#
#   scripts/bench_moe_designs.sh [THREADS]       THREADS defaults to nproc
#
# Prints a table and writes bench_out/moe_designs.json and
# bench_out/moe_designs_balance.png (everything lands in bench_out/moe_designs_*;
# the summary is scripts/bench_py/moe_designs_summary.py).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_ROUNDS (3), MT_BENCH_STEPS (20, steps of a throughput run),
# MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped), MT_BENCH_BALANCE_STEPS
# (300, a multiple of 10), MT_BENCH_MAX_LOAD (0.5) and MT_BENCH_LOAD_WAIT_S
# (300) as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads "${1:-}"
bench_rounds 3
bench_steps
balance_steps="${MT_BENCH_BALANCE_STEPS:-300}"
bench_positive MT_BENCH_BALANCE_STEPS "$balance_steps"
balance_log_interval=10
balance_window=50   # the steps at the end whose load the summary reports
(( balance_steps % balance_log_interval == 0 )) \
    || die "MT_BENCH_BALANCE_STEPS ($balance_steps) must be a multiple of the log interval $balance_log_interval"
global_batch=16     # both configs'
warmup_samples=$(( balance_steps * global_batch / 4 < 320 ? balance_steps * global_batch / 4 : 320 ))

echo "bench: $threads threads; fine-grained: $rounds rounds of $steps steps (first $log_interval skipped);" \
     "balancing: $balance_steps steps, lr warm-up $warmup_samples samples"

bench_build "${MT_BUILD_DIR:-build}" moetrain

rm -f "$out"/moe_designs_*.log "$out"/moe_designs_*.jsonl "$out"/moe_designs.json "$out"/moe_designs_balance.png
bench_text_code_stores "$out/moe_designs"
data=(--data-path "text=$out/moe_designs_text" "code=$out/moe_designs_code")

# --- fine-grained against coarse experts, timed -------------------------------
common=("$bin" train --config configs/workstation-moe.toml "${data[@]}" --swiglu --lr-warmup-samples 0
        --save-interval 0 --train-iters "$steps" --log-interval "$log_interval" --threads "$threads")
declare -A cmds=(
    [fine]="${common[*]} --num-experts 64 --moe-router-topk 6 --moe-ffn-hidden-size 128"
    [coarse]="${common[*]} --num-experts 8 --moe-router-topk 2 --moe-ffn-hidden-size 384"
)
bench_wait_for_quiet_machine 300
for (( r = 1; r <= rounds; r++ )); do
    for name in fine coarse; do
        log="$out/moe_designs_${name}_$r.log"
        echo "bench: round $r/$rounds: $name: ${cmds[$name]}"
        # shellcheck disable=SC2086  # a command line built above
        bench_logged "$log" "$name run $r" ${cmds[$name]} --metrics-file "$out/moe_designs_${name}_$r.jsonl"
        grep -E '^(parameters|step)' "$log" | sed 's/^/    /'
    done
done
load_after=$(uptime)
echo "bench: load after: $load_after"

# --- balancing: aux loss against expert bias, same seed and data ---------------
# The config turns the expert bias on; the aux-loss run turns it off with
# --moe-router-enable-expert-bias=false (the command line wins).
balance=("$bin" train --config configs/workstation-deepseek.toml "${data[@]}" --lr-warmup-samples "$warmup_samples"
         --save-interval 0 --train-iters "$balance_steps" --log-interval "$balance_log_interval" --threads "$threads")
declare -A balance_cmds=(
    [aux]="${balance[*]} --moe-router-enable-expert-bias=false --moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff 1e-2"
    [bias]="${balance[*]} --moe-router-enable-expert-bias --moe-router-bias-update-rate 1e-3 --moe-router-load-balancing-type none"
    [bias_fast]="${balance[*]} --moe-router-enable-expert-bias --moe-router-bias-update-rate 1e-2 --moe-router-load-balancing-type none"
)
for name in aux bias bias_fast; do
    log="$out/moe_designs_balance_$name.log"
    echo "bench: balancing: $name: ${balance_cmds[$name]}"
    # shellcheck disable=SC2086  # a command line built above
    bench_logged "$log" "balancing run $name" ${balance_cmds[$name]} --metrics-file "$out/moe_designs_balance_$name.jsonl"
    grep -E '^(parameters|step)' "$log" | sed -n '1p;$p' | sed 's/^/    /'
done

# --- summary ------------------------------------------------------------------
bench_cpu_model
"$py" scripts/bench_py/moe_designs_summary.py "$out" "$rounds" "$threads" "$log_interval" "$balance_log_interval" \
    "$balance_window" "$load_before" "$load_after" "$waited" "$cpu_model" "$(nproc)" \
    "${cmds[fine]}" "${cmds[coarse]}" "${balance_cmds[aux]}" "${balance_cmds[bias]}" "${balance_cmds[bias_fast]}"
