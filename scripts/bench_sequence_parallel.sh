#!/usr/bin/env bash
# Sequence parallelism's memory: the workstation model
# (configs/workstation-moe.toml) at TP 2, one micro-batch of S tokens, with
# and without --sequence-parallel, two steps each.
#
#   scripts/bench_sequence_parallel.sh [THREADS]   THREADS a rank, default nproc / 2
#
# For each S in MT_BENCH_SEQ_LENGTHS (2048 8192) and each setting:
#   - the start-up memory line of rank 0: one micro-batch's activations and
#     the model's work space, in bytes (Transformer::activation_bytes,
#     workspace_bytes: every device buffer, counted);
#   - the peak resident memory of the largest rank (getrusage of mpirun's
#     children, scripts/bench_py/peak_rss.py);
#   - tokens/s of the second step, and the bytes and share of time of the
#     TP collectives (tp_allreduce_bytes, tp_sp_bytes of its metrics record).
# Prints a table and writes bench_out/sequence_parallel.json
# (scripts/bench_py/sequence_parallel_summary.py).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_SEQ_LENGTHS (space-separated), MT_BENCH_MAX_LOAD and
# MT_BENCH_LOAD_WAIT_S as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads_per_rank 2 "${1:-}"
read -r -a seq_lengths <<< "${MT_BENCH_SEQ_LENGTHS:-2048 8192}"
config=configs/workstation-moe.toml

bench_build "${MT_BUILD_DIR:-build}" moetrain
bench_mpirun 2

rm -f "$out"/sequence_parallel_*.log "$out"/sequence_parallel_*.jsonl "$out"/sequence_parallel.json
bench_text_code_stores "$out/sp"

bench_wait_for_quiet_machine 300

names=()
# One measured run: name, sequence length, extra flags.
run_case() {
    local name="$1" seq="$2"
    shift 2
    names+=("$name")
    local flags=(--config "$config" --data-path "text=$out/sp_text" "code=$out/sp_code" --tp 2
                 --seq-length "$seq" --micro-batch-size 1 --global-batch-size 1 --train-iters 2
                 --lr-warmup-samples 0 --log-interval 1 --save-interval 0 --threads "$threads"
                 --metrics-file "$out/sequence_parallel_$name.jsonl" "$@")
    echo "bench: $name: ${mpirun_cmd[*]} $bin train ${flags[*]}"
    "$py" scripts/bench_py/peak_rss.py "$out/sequence_parallel_$name.log" "${mpirun_cmd[@]}" "$bin" train "${flags[@]}" \
        || { tail -20 "$out/sequence_parallel_$name.log" >&2; die "$name failed (log: $out/sequence_parallel_$name.log)"; }
    grep -E '^memory rank 0|^peak_rss' "$out/sequence_parallel_$name.log" | sed 's/^/    /'
}

for seq in "${seq_lengths[@]}"; do
    run_case "S${seq}_tp2" "$seq"
    run_case "S${seq}_tp2_sp" "$seq" --sequence-parallel
done

bench_cpu_model
"$py" scripts/bench_py/sequence_parallel_summary.py "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" "${names[@]}"
