#!/usr/bin/env bash
# Training-throughput benchmark: moetrain in float32 and bf16 on
# configs/bench.toml against the machine's matrix-product peak in each
# precision and against PyTorch eager, all in one run.
#
#   scripts/bench_throughput.sh [THREADS]        THREADS defaults to nproc
#
# Steps, all with the same thread count:
#   1. build moetrain and bench_matmul_libraries (scripts/build.sh, build dir MT_BUILD_DIR=build);
#   2. make a token store from /usr/share/common-licenses + /usr/include/*.h;
#   3. bench_matmul_libraries: GFLOP/s of OpenBLAS and oneDNN on every product
#      of the bench step and a 2048^3 square, in float32 and bf16; the best in
#      each precision is that precision's peak;
#   4. MT_BENCH_ROUNDS (2) interleaved rounds of the five training runs:
#        moetrain float32, moetrain --bf16,
#        PyTorch float32 as installed,
#        PyTorch float32 tuned (OPENBLAS_NUM_THREADS=1: OpenBLAS does not
#          start its own threads beside PyTorch's),
#        PyTorch bf16 (torch.autocast, tuned likewise);
#      each moetrain run skips its first log interval as warm-up,
#      bench_torch.py runs as many measured steps after --warmup 1; the
#      median over rounds is reported.
# Prints a table and writes bench_out/summary.json (everything lands in bench_out/;
# the summary is scripts/bench_py/throughput_summary.py).
#
# Env: MT_BUILD_DIR (build), MT_BENCH_ROUNDS (2), MT_BENCH_STEPS (20, train
# steps of a moetrain run), MT_BENCH_LOG_INTERVAL (5, also the warm-up skipped),
# MT_BENCH_SKIP_BUILD=1 to reuse an existing build, MT_BENCH_MAX_LOAD (0.5) and
# MT_BENCH_LOAD_WAIT_S (300): before measuring, wait up to that long for the
# 1-minute load average to fall below MT_BENCH_MAX_LOAD (our own build included).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads "${1:-}"
bench_rounds 2
bench_steps
config=configs/bench.toml
torch_steps=$(( steps - log_interval ))   # as many measured steps as moetrain's later intervals

echo "bench: $threads threads, $rounds rounds, moetrain $steps steps (first $log_interval skipped), torch $torch_steps steps + 1 warm-up"

# --- dependencies and build ---------------------------------------------------
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "bench: PyTorch missing for $py; installing python3-torch"
    bash scripts/install_deps.sh --torch
fi
bench_build "${MT_BUILD_DIR:-build}" moetrain bench_matmul_libraries
bench_matmul="$build_dir/bench/bench_matmul_libraries"

# --- token store ----------------------------------------------------------------
rm -f "$out"/metrics_*.jsonl "$out"/train_*.log "$out"/torch_*.json "$out"/torch_*.log \
      "$out"/matmul.json "$out"/summary.json
bench_corpus "$out/corpus"

# Other processes on the machine slow every figure below: wait (bounded) for
# the load, our own build's included, to settle, then record it.
bench_wait_for_quiet_machine 300

# --- (a) matrix-product peaks ------------------------------------------------------
echo "bench: matrix products ($bench_matmul --threads $threads --reps 10)"
"$bench_matmul" --threads "$threads" --reps 10 --json "$out/matmul.json" | sed 's/^/    /'

# --- (b) interleaved training runs ---------------------------------------------------
train_cmd=("$bin" train --config "$config" --data-path "$out/corpus" --threads "$threads"
    --train-iters "$steps" --log-interval "$log_interval")
torch_cmd=("$py" scripts/pytorch_reference/bench_torch.py --threads "$threads" --steps "$torch_steps" --warmup 1)
# name, environment, command
runs=(
    "moetrain_fp32||${train_cmd[*]}"
    "moetrain_bf16||${train_cmd[*]} --bf16"
    "torch_fp32||${torch_cmd[*]}"
    "torch_fp32_tuned|OPENBLAS_NUM_THREADS=1|${torch_cmd[*]}"
    "torch_bf16_tuned|OPENBLAS_NUM_THREADS=1|${torch_cmd[*]} --bf16"
)
for (( r = 1; r <= rounds; r++ )); do
    for run in "${runs[@]}"; do
        IFS='|' read -r name env_vars cmd <<< "$run"
        log="$out/${name}_$r.log"
        echo "bench: round $r/$rounds: $name: ${env_vars:+$env_vars }$cmd"
        if [[ "$name" == moetrain_* ]]; then
            # shellcheck disable=SC2086  # cmd is a word list built above
            bench_logged "$log" "$name run $r" env $env_vars $cmd --metrics-file "$out/metrics_${name}_$r.jsonl"
            grep '^step' "$log" | sed 's/^/    /'
        else
            # shellcheck disable=SC2086
            bench_logged "$log" "$name run $r" env $env_vars $cmd
            tail -n 1 "$log" > "$out/${name}_$r.json"
            sed 's/^/    /' "$out/${name}_$r.json"
        fi
    done
done

load_after=$(uptime)
echo "bench: load after: $load_after"

# --- summary ----------------------------------------------------------------------
torch_pkg=$(dpkg-query -W -f='${Version}' python3-torch 2>/dev/null || echo unknown)
bench_cpu_model
"$py" scripts/bench_py/throughput_summary.py "$out" "$rounds" "$threads" "$log_interval" "$load_before" \
    "$load_after" "$waited" "$torch_pkg" "$cpu_model" "$(nproc)" "${train_cmd[*]}" "${torch_cmd[*]}"
