#!/usr/bin/env bash
# Long-context benchmark: one training step of the workstation model
# (configs/workstation-moe.toml) at growing sequence lengths, micro-batch 1,
# without and with full activation recompute.
#
#   scripts/bench_long_context.sh [THREADS]      THREADS defaults to nproc
#
# For each S in MT_BENCH_SEQ_LENGTHS (2048 8192 32768) and each recompute
# setting (none; full, uniform, 1 layer a group), one `moetrain train` of
# two steps (the first creates the products' primitives and is not timed):
#   - peak resident memory of the process (getrusage, ru_maxrss);
#   - `moetrain plan` of the same flags: its total for the rank (weights,
#     gradients, optimizer, activations, backward workspace) against the
#     measured peak less the process's own footprint (libraries, MPI,
#     oneDNN, the data index: what the planner does not model), measured in
#     the same run as the peak of a run at S = 64 less its plan;
#   - tokens/s of the second step (its metrics record);
#   - attention's share of the second step (--profile).
# Prints a table and writes bench_out/long_context.json
# (scripts/bench_py/long_context_summary.py).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_SEQ_LENGTHS (space-separated), MT_BENCH_MAX_LOAD and
# MT_BENCH_LOAD_WAIT_S as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads "${1:-}"
read -r -a seq_lengths <<< "${MT_BENCH_SEQ_LENGTHS:-2048 8192 32768}"
config=configs/workstation-moe.toml

bench_build "${MT_BUILD_DIR:-build}" moetrain

# The config's two sources, text and code, from files on the machine.
rm -f "$out"/long_context_*.log "$out"/long_context_*.jsonl "$out"/long_context_*.plan.json "$out"/long_context.json
bench_text_code_stores "$out/lc"

bench_wait_for_quiet_machine 300

declare -A recompute_flags=(
    [none]=""
    [full]="--recompute-granularity full --recompute-method uniform --recompute-num-layers 1"
)
names=()
# One measured run: name, sequence length, recompute setting.
run_case() {
    local name="$1" seq="$2" recompute="$3"
    names+=("$name")
    # shellcheck disable=SC2206  # a flag list
    local flags=(--config "$config" --data-path "text=$out/lc_text" "code=$out/lc_code"
                 --seq-length "$seq" --micro-batch-size 1 --global-batch-size 1 --train-iters 2
                 --lr-warmup-samples 0 ${recompute_flags[$recompute]})
    echo "bench: $name: $bin train ${flags[*]} --threads $threads --profile"
    "$bin" plan "${flags[@]}" --json > "$out/long_context_$name.plan.json" || die "moetrain plan failed for $name"
    # The peak resident memory of the child, in KiB, on the log's last line.
    "$py" scripts/bench_py/peak_rss.py "$out/long_context_$name.log" "$bin" train "${flags[@]}" \
          --threads "$threads" --profile --log-interval 1 --save-interval 0 \
          --metrics-file "$out/long_context_$name.jsonl" \
        || { tail -20 "$out/long_context_$name.log" >&2; die "$name failed (log: $out/long_context_$name.log)"; }
    grep -E '^step|attention|^peak_rss' "$out/long_context_$name.log" | sed 's/^/    /'
}

run_case baseline 64 none
for seq in "${seq_lengths[@]}"; do
    for recompute in none full; do
        run_case "S${seq}_${recompute}" "$seq" "$recompute"
    done
done

bench_cpu_model
"$py" scripts/bench_py/long_context_summary.py "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" "${names[@]}"
