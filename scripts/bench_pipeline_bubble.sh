#!/usr/bin/env bash
# Pipeline bubble: each stage's measured idle share of the step (time blocked
# waiting for a neighbour's activations or gradients, as `train` logs it in
# "pipeline_idle") against the ideal 1F1B bubble (PP - 1) / (m + PP - 1), for
# PP = 2, 4, 8 and m micro-batches a step.
#
#   scripts/bench_pipeline_bubble.sh            results in bench_out/bubble_summary.json
#
# One thread a rank. With more ranks than cores (8 ranks on a 2-core
# workstation) ranks also wait for a core, which the idle share counts too.
# The summary: scripts/bench_py/pipeline_bubble_summary.py.
#
# Env: MT_BUILD_DIR (build), MT_BENCH_SKIP_BUILD=1 to reuse an existing build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench_common.sh

bench_build "${MT_BUILD_DIR:-build}" moetrain
[[ -s "$out/bubble_corpus.bin" ]] || "$bin" prepare-data --input /usr/share/common-licenses --output-prefix "$out/bubble_corpus"

export OMP_NUM_THREADS=1
# 8 layers of the bench model's width: 4, 2 or 1 a stage; micro-batches of 1.
model="--num-layers 8 --hidden-size 256 --num-attention-heads 8 --num-query-groups 1 --ffn-hidden-size 512
       --num-experts 8 --moe-router-topk 2 --seq-length 256 --micro-batch-size 1 --lr-warmup-samples 0
       --threads 1 --train-iters 12 --log-interval 4"
echo "load before: $(uptime)"
for pp in 2 4 8; do
    bench_mpirun "$pp"
    for m in 4 8 16; do
        f="$out/bubble_pp${pp}_m${m}.jsonl"
        rm -f "$f"
        # shellcheck disable=SC2086
        "${mpirun_cmd[@]}" "$bin" train $model --pp "$pp" --global-batch-size "$m" --data-path "$out/bubble_corpus" \
            --metrics-file "$f" > "$out/bubble_pp${pp}_m${m}.log" 2>&1
        echo "PP=$pp m=$m done"
    done
done
echo "load after: $(uptime)"

"$py" scripts/bench_py/pipeline_bubble_summary.py "$out"
