#!/usr/bin/env bash
# Generation benchmark: the workstation model (configs/workstation-moe.toml,
# multi-query attention, 8 experts top-2, context 256) after a few training
# steps, continuing prompts of mixed lengths (8 to 160 bytes) with mixed
# output lengths (8 to 96 tokens), greedily, on one rank:
#   - for each B of MAX_BATCHES, continuous batching of up to B sequences
#     (a finished sequence's slot takes the next prompt at the next step)
#     and static batching of B (the next prompts wait for the whole batch);
#   - the cache with one sequence at a time;
#   - no cache: each token from the full forward pass over its prefix.
# Each is timed by generate itself ("generated N tokens ... in S s"), in the
# same run, after one untimed warm-up; the table gives generated tokens/s,
# the ratios to static batching of the same B and to no cache, and checks
# that every mode produced the same completions. Writes
# bench_out/generate.json (scripts/bench_py/generate_summary.py; the prompts
# come from scripts/bench_py/generate_prompts.py).
#
#   scripts/bench_generate.sh [THREADS] [MAX_BATCHES]    defaults: nproc, "4 16"
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing
# build, MT_BENCH_PROMPTS (128), MT_BENCH_MAX_LOAD and MT_BENCH_LOAD_WAIT_S
# as in scripts/bench_common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_threads "${1:-}"
read -r -a batches <<< "${2:-4 16}"
for b in "${batches[@]}"; do bench_positive MAX_BATCHES "$b"; done
prompts="${MT_BENCH_PROMPTS:-128}"
config=configs/workstation-moe.toml

bench_build "${MT_BUILD_DIR:-build}" moetrain

rm -rf "$out"/generate_* "$out/generate.json"
bench_text_code_stores "$out/generate"
echo "bench: training the model for 20 steps"
bench_logged "$out/generate_train.log" "training" \
    "$bin" train --config "$config" --data-path "text=$out/generate_text" "code=$out/generate_code" --train-iters 20 \
    --lr-warmup-samples 16 --save "$out/generate_ckpt" --save-interval 20 --threads "$threads"

# Prompts: pieces of the licenses' text, of mixed lengths, each with its own output length.
"$py" scripts/bench_py/generate_prompts.py "$prompts" > "$out/generate_prompts.jsonl"

bench_wait_for_quiet_machine 300

declare -A mode_flags=([one_at_a_time]="--max-batch 1" [no_cache]="--no-kv-cache")
modes=()
for b in "${batches[@]}"; do
    mode_flags[continuous_$b]="--max-batch $b"
    mode_flags[static_$b]="--max-batch $b --batching static"
    modes+=("continuous_$b" "static_$b")
done
modes+=(one_at_a_time no_cache)
run_mode() {
    local name="$1" log="$2"
    # shellcheck disable=SC2086  # a flag list
    bench_logged "$log" "generate ($name)" "$bin" generate --load "$out/generate_ckpt" \
        --prompts "$out/generate_prompts.jsonl" --temperature 0 --threads "$threads" ${mode_flags[$name]}
    grep '^generated' "$log" | sed "s/^/    $name: /"
}
echo "bench: warm-up"
run_mode "${modes[0]}" "$out/generate_warmup.log" > /dev/null
for m in "${modes[@]}"; do run_mode "$m" "$out/generate_$m.log"; done

bench_cpu_model
"$py" scripts/bench_py/generate_summary.py "$out" "$threads" "$cpu_model" "$load_before" "$(uptime)" "${modes[@]}"
